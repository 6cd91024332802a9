package director

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
)

// TestCountersConcurrent: workers count in their own cache lines while
// readers sum; every read is at least the previous one and at most what
// was counted, and the final sums are exact.
func TestCountersConcurrent(t *testing.T) {
	d := newCore(Config{Workers: 4})
	const workers, per = 4, 20000
	var ws []*Worker
	for i := 0; i < workers; i++ {
		w := d.newWorker()
		d.workers = append(d.workers, w)
		ws = append(ws, w)
	}
	var done atomic.Bool
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func(i int, w *Worker) {
			defer wg.Done()
			for j := 0; j < per; j++ {
				w.count(CntNoConn)
				w.count((i + j) % NumCounters)
				w.mcount((i + j) % MCntReassembled) // the reassembler keeps its own from there
			}
		}(i, w)
	}
	d.Drops[CntTableFull].Add(5) // outside a worker
	var rg sync.WaitGroup
	for r := 0; r < 2; r++ {
		rg.Add(1)
		go func() {
			defer rg.Done()
			var last uint64
			for !done.Load() {
				v := d.Drops[CntNoConn].Load()
				if v < last || v > 2*workers*per {
					t.Errorf("no-conn read %d after %d (at most %d)", v, last, 2*workers*per)
					return
				}
				last = v
				var m uint64
				for _, x := range d.ModeCounters() {
					m += x
				}
				if m > workers*per {
					t.Errorf("mode counters sum to %d, at most %d", m, workers*per)
					return
				}
			}
		}()
	}
	wg.Wait()
	done.Store(true)
	rg.Wait()
	got := d.Drops.Get()
	var want [NumCounters]uint64
	for i := 0; i < workers; i++ {
		for j := 0; j < per; j++ {
			want[CntNoConn]++
			want[(i+j)%NumCounters]++
		}
	}
	want[CntTableFull] += 5
	if got != want {
		t.Fatalf("counters %v, want %v", got, want)
	}
	var wantM [NumModeCounters]uint64
	for i := 0; i < workers; i++ {
		for j := 0; j < per; j++ {
			wantM[(i+j)%MCntReassembled]++
		}
	}
	if gotM := d.ModeCounters(); gotM != wantM {
		t.Fatalf("mode counters %v, want %v", gotM, wantM)
	}
}

// TestPinPlan: with fanout by CPU, worker k is pinned to a CPU c with
// c mod workers = k, so it runs where its frames were received.
func TestPinPlan(t *testing.T) {
	cases := []struct {
		name    string
		allowed []int
		n       int
		mode    netio.FanoutMode
		want    []int
	}{
		{"all CPUs", []int{0, 1, 2, 3}, 4, netio.FanoutCPU, []int{0, 1, 2, 3}},
		{"a later pair", []int{2, 3}, 2, netio.FanoutCPU, []int{2, 3}},
		{"an odd pair", []int{3, 4}, 2, netio.FanoutCPU, []int{4, 3}},
		{"fewer workers", []int{0, 1, 2, 3}, 2, netio.FanoutCPU, []int{0, 1}},
		{"one worker", []int{0, 1}, 1, netio.FanoutCPU, []int{0}},
		{"no match", []int{0, 2}, 2, netio.FanoutCPU, []int{0, 2}},
		{"hash", []int{5, 6, 7}, 4, netio.FanoutHash, []int{5, 6, 7, 5}},
		// next: the frames of CPU c (worker c mod n) handled on CPU c+1.
		{"next pair", []int{0, 1}, 2, netio.FanoutNext, []int{1, 0}},
		{"next all CPUs", []int{0, 1, 2, 3}, 4, netio.FanoutNext, []int{1, 2, 3, 0}},
		{"next a later pair", []int{2, 3}, 2, netio.FanoutNext, []int{3, 2}},
		{"next one worker", []int{0, 1}, 1, netio.FanoutNext, []int{0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := pinPlan(c.allowed, c.n, c.mode)
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("got %v, want %v", got, c.want)
				}
			}
		})
	}
}

// TestFanoutNextUnpinned: fanout next is a pinning, so with NoPin the
// director refuses to start rather than run as fanout cpu unpinned.
func TestFanoutNextUnpinned(t *testing.T) {
	_, err := New(Config{Interfaces: []Interface{{Name: "lo"}}, Workers: 2, Fanout: netio.FanoutNext, NoPin: true})
	if err == nil || !strings.Contains(err.Error(), "fanout next") {
		t.Fatalf("New with fanout next and no pinning: %v, want an error naming fanout next", err)
	}
}

// BenchmarkDropCounter: a count made by every worker at once, in one
// shared atomic array (golvs before) and in per-worker counters.
func BenchmarkDropCounter(b *testing.B) {
	b.Run("shared", func(b *testing.B) {
		var shared [NumCounters]atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				shared[CntNoConn].Add(1)
			}
		})
	})
	b.Run("per-worker", func(b *testing.B) {
		d := newCore(Config{Workers: 1})
		var mu sync.Mutex
		b.RunParallel(func(pb *testing.PB) {
			mu.Lock()
			w := d.newWorker()
			mu.Unlock()
			for pb.Next() {
				w.count(CntNoConn)
			}
		})
	})
}

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
	d, w, _, _ := testDirector(t, false)
	d.Drops[CntNoConn].Add(3)
	w.mcount(MCntTOA) // each worker counts on its own line; read summed
	w2 := d.newWorker()
	w2.mcount(MCntTOA)
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
