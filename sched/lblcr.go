package sched

import (
	"sync"

	"github.com/golvs/golvs/ipvs"
)

// LBLCR is locality-based least connection with replication (spec §2.13,
// ip_vs_lblcr.c): each cache entry maps a destination address to a set of
// dests; the least loaded member serves, the most loaded is dropped once
// the set has been stable for the expiration time, and a member above its
// weight while another dest is below half of its own makes wlc add a new
// member. Allocation and cost are as for LBLC; sets keep their backing
// arrays when entries are reused.
type LBLCR struct {
	mu    sync.Mutex
	dests []*ipvs.Dest
	t     cacheTable
}

// NewLBLCR returns an lblcr scheduler with the given options.
func NewLBLCR(o CacheOptions) *LBLCR {
	s := &LBLCR{}
	s.t.init(o)
	return s
}

// Name implements Scheduler.
func (*LBLCR) Name() string { return "lblcr" }

func (s *LBLCR) relist(svc *Service) {
	s.mu.Lock()
	s.dests = cloneDests(svc.Dests)
	s.mu.Unlock()
}

// Init implements Scheduler. The cache starts empty.
func (s *LBLCR) Init(svc *Service) error {
	s.mu.Lock()
	s.t.reset()
	s.mu.Unlock()
	s.relist(svc)
	return nil
}

// AddDest implements Scheduler.
func (s *LBLCR) AddDest(svc *Service, _ *ipvs.Dest) error { s.relist(svc); return nil }

// DelDest implements Scheduler. Sets keep the dest; not AVAILABLE any
// more, it is never the set's minimum.
func (s *LBLCR) DelDest(svc *Service, _ *ipvs.Dest) error { s.relist(svc); return nil }

// UpdDest implements Scheduler.
func (s *LBLCR) UpdDest(svc *Service, _ *ipvs.Dest) error { s.relist(svc); return nil }

// Len returns the number of cache entries.
func (s *LBLCR) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t.live
}

// NotCached implements CacheCounter.
func (s *LBLCR) NotCached() uint64 { return s.t.notCached.Load() }

// setMin is ip_vs_dest_set_min.
func setMin(set []*ipvs.Dest) *ipvs.Dest {
	var least *ipvs.Dest
	var loh, lw int64
	i := 0
	for ; i < len(set); i++ {
		d := set[i]
		if overloaded(d) {
			continue
		}
		if d.Weight() > 0 && d.Available() {
			least, loh, lw = d, overhead(d), int64(d.Weight())
			break
		}
	}
	if least == nil {
		return nil
	}
	for i++; i < len(set); i++ {
		d := set[i]
		if overloaded(d) {
			continue
		}
		doh, w := overhead(d), int64(d.Weight())
		if loh*w > doh*lw && d.Available() {
			least, loh, lw = d, doh, w
		}
	}
	return least
}

// setMax is ip_vs_dest_set_max; it returns an index into set, or -1.
func setMax(set []*ipvs.Dest) int {
	most := -1
	var moh, mw int64
	i := 0
	for ; i < len(set); i++ {
		if w := set[i].Weight(); w > 0 {
			most, moh, mw = i, overhead(set[i]), int64(w)
			break
		}
	}
	if most < 0 {
		return -1
	}
	for i++; i < len(set); i++ {
		d := set[i]
		doh, w := overhead(d), int64(d.Weight())
		if moh*w < doh*mw && w > 0 {
			most, moh, mw = i, doh, w
		}
	}
	return most
}

// insert is ip_vs_dest_set_insert: d goes to the head of the set (unless
// check finds it there already), and lastmod = now.
func (e *cacheEntry) insert(d *ipvs.Dest, check bool, now int64) {
	if check && indexOf(e.set, d) >= 0 {
		return
	}
	e.set = append(e.set, nil)
	copy(e.set[1:], e.set)
	e.set[0] = d
	e.lastmod = now
}

// Schedule implements Scheduler.
func (s *LBLCR) Schedule(_ *Service, p *Packet) *ipvs.Dest {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.t.tick()
	e := s.t.get(p.Dst)
	if e == nil {
		d := wlcPick(s.dests)
		if d == nil {
			return nil
		}
		if e = s.t.add(p.Dst, now); e != nil {
			e.insert(d, false, now)
		}
		return d
	}
	e.lastuse = now
	d := setMin(e.set)
	if len(e.set) > 1 && now > e.lastmod+s.t.clk.expire {
		if m := setMax(e.set); m >= 0 {
			copy(e.set[m:], e.set[m+1:])
			e.set[len(e.set)-1] = nil
			e.set = e.set[:len(e.set)-1]
			e.lastmod = now
		}
	}
	if d != nil && !lblcOverloaded(d, s.dests) {
		return d
	}
	d = wlcPick(s.dests)
	if d == nil {
		return nil
	}
	e.insert(d, true, now)
	return d
}
