package director

import (
	"sync"
	"sync/atomic"
	"testing"

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
