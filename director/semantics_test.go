package director

import (
	"net/netip"
	"testing"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/sched"
	"github.com/golvs/golvs/trace"
)

// TestReviveWeightZero: a dest deleted and added back (taken from the
// trash) with weight 0 gets last_weight 0, as the kernel's add path sets
// it (__ip_vs_update_dest with add = 1). mh builds its table from
// last_weight, so the revived quiesced dest owns no slot and every lookup
// lands on the other dest; golvs kept the old last_weight, and the
// quiesced dest kept its share of the table (lookups landing there fail).
func TestReviveWeightZero(t *testing.T) {
	d := newCore(Config{Workers: 1, Conntrack: conntrack.Config{Shards: 16}})
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "mh"}); err != nil {
		t.Fatal(err)
	}
	a := ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.0.11"), Port: 80, Method: ipvs.MethodMasq, Weight: 3}
	b := ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.0.12"), Port: 80, Method: ipvs.MethodMasq, Weight: 1}
	for _, c := range []ipvs.DestConfig{a, b} {
		if err := d.AddDest(k, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.DelDest(k, a.Addr, a.Port); err != nil {
		t.Fatal(err)
	}
	a.Weight = 0
	if err := d.AddDest(k, a); err != nil {
		t.Fatal(err)
	}
	sv := d.Snapshot().List[0]
	var da *ipvs.Dest
	for _, x := range sv.Dests {
		if x.Addr == a.Addr {
			da = x
		}
	}
	if da == nil {
		t.Fatal("revived dest not in the service")
	}
	if lw := da.LastWeight(); lw != 0 {
		t.Errorf("revived with weight 0: last_weight %d, want 0", lw)
	}
	mh, ok := sv.Sched.(*sched.MH)
	if !ok {
		t.Fatalf("scheduler %T, want *sched.MH", sv.Sched)
	}
	for i, x := range mh.Slots() {
		if x != nil && x.Addr == a.Addr {
			t.Fatalf("slot %d belongs to the revived weight-0 dest", i)
		}
	}
	// an edit to weight 0 keeps last_weight (the other half of the rule)
	b.Weight = 0
	if err := d.EditDest(k, b); err != nil {
		t.Fatal(err)
	}
	for _, x := range d.Snapshot().List[0].Dests {
		if x.Addr == b.Addr && x.LastWeight() != 1 {
			t.Errorf("edited to weight 0: last_weight %d, want 1 (kept)", x.LastWeight())
		}
	}
}

// TestDirectorSemantics: the director's semantics reaches its dests (the
// overhead rule), its schedulers and its traces (semantics and formula).
func TestDirectorSemantics(t *testing.T) {
	for _, sem := range []ipvs.Semantics{ipvs.Current, ipvs.Classic} {
		d := newCore(Config{Workers: 1, Conntrack: conntrack.Config{Shards: 16}, Semantics: sem})
		d.ifMAC[ifExt], d.ifMAC[ifInt] = extMAC, intMAC
		d.ifARP[ifExt] = true
		d.ifNames = map[int]string{ifExt: "ext0", ifInt: "int0"}
		k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}
		if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "wlc"}); err != nil {
			t.Fatal(err)
		}
		if err := d.AddDest(k, ipvs.DestConfig{Addr: rip, Port: 8080, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
			t.Fatal(err)
		}
		sv := d.Snapshot().List[0]
		dd := sv.Dests[0]
		dd.Next.Store(&ipvs.NextHop{IfIndex: ifInt, SrcMAC: intMAC, DstMAC: rsMAC})
		if dd.Semantics() != sem || d.Semantics() != sem {
			t.Fatalf("%s director: dest semantics %s", sem, dd.Semantics())
		}
		dd.SetCounters(1, 0, 0)
		w := d.newWorker()
		w.setTx(ifExt, &fakeTx{})
		w.setTx(ifInt, &fakeTx{})
		w.snap = d.snap.Load()
		tr := trace.New(trace.Config{})
		if err := d.SetTracer(tr); err != nil {
			t.Fatal(err)
		}
		w.tr = d.tracer.Load()
		w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x02, nil))
		ev := <-tr.Events()
		s := ev.Sched
		if s == nil || s.Semantics != sem.String() || s.Formula != sched.OverheadFormula(sem) {
			t.Fatalf("%s director: trace sched %+v", sem, s)
		}
		want := map[ipvs.Semantics]int64{ipvs.Current: 257, ipvs.Classic: 256}[sem]
		if len(s.Dests) != 1 || s.Dests[0].Overhead != want {
			t.Errorf("%s director: traced overhead %+v, want %d", sem, s.Dests, want)
		}
		d.ClearTracer(tr)
		// u_threshold above 2^31-1: the kernel's rule of the semantics
		err := d.AddDest(k, ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.0.12"), Port: 8080, Method: ipvs.MethodMasq, Weight: 1, UThreshold: 1 << 31})
		if (err == nil) != (sem == ipvs.Classic) {
			t.Errorf("%s director: -x 2^31 gave %v", sem, err)
		}
	}
}

// TestLBLCCacheCounter: picks an lblc service served without a cache
// entry (the current cap of 24576) appear in the director's counter sets.
func TestLBLCCacheCounter(t *testing.T) {
	d := newCore(Config{Workers: 1, Conntrack: conntrack.Config{Shards: 16}})
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "lblc"}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddDest(k, ipvs.DestConfig{Addr: rip, Port: 80, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	sv := d.Snapshot().List[0]
	p := &sched.Packet{Proto: ipvs.ProtoTCP, Src: cip}
	for i := 0; i < 24576+3; i++ {
		p.Dst = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if sv.Sched.Schedule(sv.View, p) == nil {
			t.Fatal("no dest")
		}
	}
	for _, s := range d.CounterSets() {
		if s.Name == "lblc_cache" {
			if len(s.Values) != 1 || s.Values[0] != 3 {
				t.Errorf("lblc_cache %v %v, want not-cached 3", s.Names, s.Values)
			}
			return
		}
	}
	t.Error("no lblc_cache counter set")
}
