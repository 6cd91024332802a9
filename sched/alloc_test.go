package sched

import (
	"fmt"
	"testing"
	"time"

	"github.com/golvs/golvs/ipvs"
)

// benchSetup builds a scheduler with n dests (weights 1..8, counters
// spread) and a set of packets to schedule; lblc/lblcr caches are warmed
// so that picks are hits.
func benchSetup(tb testing.TB, name string, n int, flags uint32) (Scheduler, *Service, []Packet) {
	return benchSetupSem(tb, name, n, flags, ipvs.Current)
}

func benchSetupSem(tb testing.TB, name string, n int, flags uint32, sem ipvs.Semantics) (Scheduler, *Service, []Packet) {
	tb.Helper()
	s, err := NewFor(name, sem)
	if err != nil {
		tb.Fatal(err)
	}
	var ds []*ipvs.Dest
	for i := 0; i < n; i++ {
		d := destNSem(i, int32(1+i%8), sem)
		d.SetCounters(int32(1+i*7%13), int32(i*31%101), 0) // none idle: nq walks the list
		ds = append(ds, d)
	}
	svc := &Service{Key: testKey, Flags: flags, Dests: ds}
	if err := s.Init(svc); err != nil {
		tb.Fatal(err)
	}
	pk := make([]Packet, 1024)
	for i := range pk {
		pk[i] = Packet{Proto: ipvs.ProtoTCP, Src: ipN(i * 7919), Dst: ipN(i % 256), SrcPort: uint16(1024 + i), DstPort: 80}
	}
	for i := range pk {
		s.Schedule(svc, &pk[i])
	}
	return s, svc, pk
}

var allNames = []string{"none", "rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "lblc", "lblcr", "mh", "fo", "ovf", "twos"}

// TestRegistered: every kernel scheduler (and none) is registered.
func TestRegistered(t *testing.T) {
	for _, n := range allNames {
		s, err := New(n)
		if err != nil {
			t.Errorf("New(%q): %v", n, err)
			continue
		}
		if s.Name() != n {
			t.Errorf("New(%q).Name() = %q", n, s.Name())
		}
		if _, ok := s.(Explainer); !ok {
			t.Errorf("%s does not implement Explainer", n)
		}
	}
	if got, want := len(Names()), len(allNames); got != want {
		t.Errorf("%d registered, want %d: %v", got, want, Names())
	}
}

// TestScheduleAllocs: Schedule allocates nothing, for every scheduler in
// both semantics, including lblc/lblcr cache hits and the sh/mh fallback
// paths.
func TestScheduleAllocs(t *testing.T) {
	bothSemantics(t, scheduleAllocs)
}

func scheduleAllocs(t *testing.T, sem ipvs.Semantics) {
	for _, name := range allNames {
		for _, flags := range []uint32{0, ipvs.SvcSched1 | ipvs.SvcSched2} {
			t.Run(fmt.Sprintf("%s/%#x", name, flags), func(t *testing.T) {
				s, svc, pk := benchSetupSem(t, name, 16, flags, sem)
				if name == "sh" || name == "mh" {
					svc.Dests[3].SetOverloaded(true) // make fallback probe
				}
				i := 0
				allocs := testing.AllocsPerRun(2000, func() {
					s.Schedule(svc, &pk[i%len(pk)])
					i++
				})
				if allocs != 0 {
					t.Errorf("%s: %v allocs/op, want 0", name, allocs)
				}
			})
		}
	}
}

// TestCacheMissAllocs: once the entry pool has grown, lblc/lblcr misses
// that reuse freed entries allocate nothing either.
func TestCacheMissAllocs(t *testing.T) {
	for _, name := range []string{"lblc", "lblcr"} {
		t.Run(name, func(t *testing.T) {
			clk := newFake()
			var s Scheduler
			if name == "lblc" {
				s = NewLBLC(CacheOptions{Now: clk.now, Expiration: time.Minute})
			} else {
				s = NewLBLCR(CacheOptions{Now: clk.now, Expiration: time.Minute})
			}
			var ds []*ipvs.Dest
			for i := 0; i < 8; i++ {
				ds = append(ds, destN(i, 1))
			}
			svc := &Service{Key: testKey, Dests: ds}
			s.Init(svc)
			gen := 0
			fill := func() {
				for i := 0; i < 500; i++ {
					s.Schedule(svc, &Packet{Dst: ipN(gen*1000 + i)})
				}
				gen++
			}
			fill()
			// expire everything (full check at 30 min), then refill with
			// new addresses: all misses, all from the free list
			clk.advance(31 * time.Minute)
			s.Schedule(svc, &Packet{Dst: ipN(999999)})
			i := 0
			p := &Packet{}
			allocs := testing.AllocsPerRun(400, func() {
				p.Dst = ipN(5000 + i)
				s.Schedule(svc, p)
				i++
			})
			if n := s.(interface{ Len() int }).Len(); n < 400 {
				t.Errorf("%d entries after the misses, want >= 400", n)
			}
			if allocs != 0 {
				t.Errorf("miss with free entries: %v allocs/op, want 0", allocs)
			}
		})
	}
}

// TestCatchUpAllocs: the pick that runs the GC timer's missed periods
// after hours of idle time allocates nothing, in both semantics.
func TestCatchUpAllocs(t *testing.T) {
	bothSemantics(t, func(t *testing.T, sem ipvs.Semantics) {
		for _, name := range []string{"lblc", "lblcr"} {
			clk := newFake()
			o := CacheOptions{Now: clk.now, Expiration: 3 * time.Hour, Semantics: sem}
			var s Scheduler = NewLBLC(o)
			if name == "lblcr" {
				s = NewLBLCR(o)
			}
			svc := &Service{Key: testKey, Dests: []*ipvs.Dest{destNSem(0, 1, sem), destNSem(1, 1, sem)}}
			s.Init(svc)
			for i := 0; i < 300; i++ {
				s.Schedule(svc, &Packet{Dst: ipN(i)})
			}
			i := 0
			p := &Packet{}
			allocs := testing.AllocsPerRun(200, func() {
				clk.advance(97 * time.Minute)
				p.Dst = ipN(i % 300)
				s.Schedule(svc, p)
				i++
			})
			if allocs != 0 {
				t.Errorf("%s: %v allocs per catch-up pick, want 0", name, allocs)
			}
		}
	})
}
