package director

import (
	"sync"

	"github.com/golvs/golvs/ipvs"
)

// estimators keeps IPVS's rate estimator for every service's and dest's
// counters, run every 2 seconds by housekeeping (spec §8.2).
type estimators struct {
	mu  sync.Mutex
	est map[*ipvs.Stats]*ipvs.Estimator
}

func (e *estimators) update(s *Snapshot, extra ...*ipvs.Stats) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.est == nil {
		e.est = map[*ipvs.Stats]*ipvs.Estimator{}
	}
	live := map[*ipvs.Stats]bool{}
	run := func(st *ipvs.Stats) {
		live[st] = true
		x := e.est[st]
		if x == nil {
			x = &ipvs.Estimator{}
			x.Reset(st.Snapshot())
			e.est[st] = x
			return
		}
		x.Update(st.Snapshot())
	}
	for _, sv := range s.List {
		run(sv.Stats)
		for _, d := range sv.Dests {
			run(&d.Stats)
		}
	}
	for _, st := range extra {
		run(st)
	}
	for k := range e.est {
		if !live[k] {
			delete(e.est, k)
		}
	}
}

// Rates returns the estimated rates of a counter set (cps, inpps, outpps,
// inbps, outbps).
func (d *Director) Rates(st *ipvs.Stats) (r [5]uint64) {
	d.est.mu.Lock()
	defer d.est.mu.Unlock()
	if x := d.est.est[st]; x != nil {
		r[0], r[1], r[2], r[3], r[4] = x.Rates()
	}
	return
}

// Zero zeroes the counters and rates of one service and its dests, or of
// every service and the director-wide totals when k is nil (ipvsadm -Z,
// as ip_vs_zero_all).
func (d *Director) Zero(k *ipvs.ServiceKey) {
	d.est.mu.Lock()
	defer d.est.mu.Unlock()
	if k == nil {
		d.Total.Zero()
		if x := d.est.est[&d.Total]; x != nil {
			x.Reset(d.Total.Snapshot())
		}
	}
	for _, sv := range d.snap.Load().List {
		if k != nil && sv.Config.ServiceKey != *k {
			continue
		}
		sets := []*ipvs.Stats{sv.Stats}
		for _, dd := range sv.Dests {
			sets = append(sets, &dd.Stats)
		}
		for _, st := range sets {
			st.Zero()
			if x := d.est.est[st]; x != nil {
				x.Reset(st.Snapshot())
			}
		}
	}
}
