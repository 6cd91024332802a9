package director

import (
	"testing"

	"github.com/golvs/golvs/ipvs"
)

// The director-wide totals (/proc/net/ip_vs_stats) count every conn and
// packet of every service, keep counting what a deleted service carried,
// and are zeroed by -Z without a service (ip_vs_zero_all) only.
func TestTotals(t *testing.T) {
	d, w, _, _ := testDirector(t, false)
	var wantIn, wantOut uint64
	for i := 0; i < 5; i++ {
		f := frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, uint16(40000+i), 80, 0x02, nil)
		wantIn += ipLen(f.Data)
		w.handle(f)
		r := frame(t, ifInt, rsMAC, intMAC, rip, cip, 6, 8080, uint16(40000+i), 0x12, []byte("hello"))
		wantOut += ipLen(r.Data)
		w.handle(r)
	}
	u := frame(t, ifExt, cliMAC, extMAC, cip, vip, 17, 5353, 53, 0, []byte("q"))
	wantIn += ipLen(u.Data)
	w.handle(u)
	w.st.flush()
	sum := func() (s ipvs.StatsSnapshot) {
		for _, sv := range d.Snapshot().List {
			x := sv.Stats.Snapshot()
			s.Conns += x.Conns
			s.InPkts += x.InPkts
			s.OutPkts += x.OutPkts
			s.InBytes += x.InBytes
			s.OutBytes += x.OutBytes
		}
		return
	}
	want := ipvs.StatsSnapshot{Conns: 6, InPkts: 6, OutPkts: 5, InBytes: wantIn, OutBytes: wantOut}
	if got := d.Total.Snapshot(); got != want {
		t.Fatalf("totals %+v, want %+v (drops %v)", got, want, d.Drops.Get())
	}
	if got := sum(); got != want {
		t.Fatalf("sum over services %+v, want %+v", got, want)
	}
	// Deleting a service leaves the totals alone.
	if err := d.DelService(ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: vip, Port: 53}); err != nil {
		t.Fatal(err)
	}
	if got := d.Total.Snapshot(); got != want {
		t.Fatalf("after deleting a service: totals %+v, want %+v", got, want)
	}
	// -Z of one service does not touch them; -Z of all does.
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}
	d.Zero(&k)
	if got := d.Total.Snapshot(); got != want {
		t.Fatalf("after -Z of one service: totals %+v, want %+v", got, want)
	}
	d.Zero(nil)
	if got := d.Total.Snapshot(); got != (ipvs.StatsSnapshot{}) {
		t.Fatalf("after -Z: totals %+v, want zero", got)
	}
}

// ipLen is the IPv4 total length of an Ethernet frame: what IPVS counts
// as bytes (skb->len at the IP layer), not the frame's padding.
func ipLen(eth []byte) uint64 { return uint64(eth[16])<<8 | uint64(eth[17]) }

func TestCounterSets(t *testing.T) {
	d, _, _, _ := testDirector(t, false)
	d.Drops[CntNoConn].Add(3)
	d.modes.cnt[MCntTOA].Add(2)
	sets := d.CounterSets()
	seen := map[string]bool{}
	for _, s := range sets {
		if seen[s.Name] {
			t.Fatalf("set %q twice", s.Name)
		}
		seen[s.Name] = true
		if len(s.Names) != len(s.Values) || s.Label == "" || s.Help == "" {
			t.Fatalf("set %q: %d names, %d values, label %q", s.Name, len(s.Names), len(s.Values), s.Label)
		}
	}
	get := func(set, name string) uint64 {
		for _, s := range sets {
			for i, n := range s.Names {
				if s.Name == set && n == name {
					return s.Values[i]
				}
			}
		}
		t.Fatalf("no counter %s/%s", set, name)
		return 0
	}
	if get("drops", "no-conn") != 3 || get("mode_events", "toa-inserted") != 2 {
		t.Fatalf("counter sets %+v", sets)
	}
	// Every drop counter is in the drops set, in CounterNames order.
	if len(sets[0].Names) != NumCounters {
		t.Fatalf("drops set has %d counters, want %d", len(sets[0].Names), NumCounters)
	}
}
