package sched

import (
	"fmt"
	"testing"
	"time"

	"github.com/golvs/golvs/ipvs"
)

// BenchmarkSchedule runs every scheduler with 2, 16, 256 and 1024 dests
// ("wlc/16"). Packets cycle over 1024 sources and 256 destination
// addresses, so lblc/lblcr picks are cache hits after the warm-up.
func BenchmarkSchedule(b *testing.B) {
	for _, name := range allNames {
		if name == "none" {
			continue
		}
		for _, n := range []int{2, 16, 256, 1024} {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				s, svc, pk := benchSetup(b, name, n, 0)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					s.Schedule(svc, &pk[i&(len(pk)-1)])
				}
			})
		}
	}
}

// BenchmarkSemantics compares a pick's cost under the two semantics for
// the schedulers whose arithmetic they change ("wlc/classic"), 16 dests.
func BenchmarkSemantics(b *testing.B) {
	for _, name := range []string{"lc", "wlc", "twos", "lblc", "lblcr"} {
		for _, sem := range []ipvs.Semantics{ipvs.Current, ipvs.Classic} {
			b.Run(name+"/"+sem.String(), func(b *testing.B) {
				s, svc, pk := benchSetupSem(b, name, 16, 0, sem)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					s.Schedule(svc, &pk[i&(len(pk)-1)])
				}
			})
		}
	}
}

// BenchmarkCatchUp is the lblc pick that runs the GC timer after a long
// idle time, with 20000 entries made over the last 40 minutes before it:
// the missed periods cost their counter arithmetic plus the sweeps that
// remove entries, not one sweep per minute.
func BenchmarkCatchUp(b *testing.B) {
	for _, idle := range []time.Duration{2 * time.Hour, 30 * 24 * time.Hour, 365 * 24 * time.Hour} {
		for _, sem := range []ipvs.Semantics{ipvs.Current, ipvs.Classic} {
			b.Run(fmt.Sprintf("%s/%s", idle, sem), func(b *testing.B) {
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					clk := newFake()
					s := NewLBLC(CacheOptions{Now: clk.now, Semantics: sem})
					svc := &Service{Key: testKey, Dests: []*ipvs.Dest{destNSem(0, 1, sem), destNSem(1, 1, sem)}}
					s.Init(svc)
					p := &Packet{}
					for k := 0; k < 20000; k++ {
						if k%500 == 0 {
							clk.advance(time.Minute)
						}
						p.Dst = ipN(k)
						s.Schedule(svc, p)
					}
					clk.advance(idle)
					p.Dst = ipN(1 << 20)
					b.StartTimer()
					s.Schedule(svc, p)
				}
			})
		}
	}
}
