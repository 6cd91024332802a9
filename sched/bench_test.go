package sched

import (
	"fmt"
	"testing"
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
