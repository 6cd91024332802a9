package sched

import (
	"sync"
	"testing"

	"github.com/golvs/golvs/ipvs"
)

// TestConcurrent runs Schedule on several goroutines while the control
// plane adds, updates and deletes dests; run with -race.
func TestConcurrent(t *testing.T) {
	bothSemantics(t, concurrent)
}

func concurrent(t *testing.T, sem ipvs.Semantics) {
	for _, name := range allNames {
		t.Run(name, func(t *testing.T) {
			s, err := NewFor(name, sem)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex // guards svc, as the control plane's snapshot swap would
			svc := &Service{Key: testKey, Flags: ipvs.SvcSched1}
			var ds []*ipvs.Dest
			for i := 0; i < 8; i++ {
				ds = append(ds, destNSem(i, int32(1+i%3), sem))
			}
			svc.Dests = ds
			s.Init(svc)
			load := func() *Service { mu.Lock(); defer mu.Unlock(); return svc }
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					p := &Packet{Proto: ipvs.ProtoTCP}
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						p.Src, p.Dst = ipN(i*g), ipN(i%64)
						s.Schedule(load(), p)
					}
				}(g)
			}
			for i := 0; i < 100; i++ { // per semantics
				d := destNSem(100+i, int32(i%4), sem)
				mu.Lock()
				svc = &Service{Key: testKey, Flags: svc.Flags, Dests: append([]*ipvs.Dest{d}, svc.Dests...)}
				cur := svc
				mu.Unlock()
				s.AddDest(cur, d)
				c := d.Config()
				c.Weight = 3
				d.Update(c)
				s.UpdDest(cur, d)
				mu.Lock()
				svc = &Service{Key: testKey, Flags: svc.Flags, Dests: svc.Dests[1:]}
				cur = svc
				mu.Unlock()
				d.Unlink()
				s.DelDest(cur, d)
			}
			close(stop)
			wg.Wait()
		})
	}
}
