package sched

import (
	"sync"

	"github.com/golvs/golvs/ipvs"
)

func init() {
	Register("rr", func(ipvs.Semantics) Scheduler { return &RR{cur: -1} })
	Register("wrr", func(ipvs.Semantics) Scheduler { return &WRR{cl: -1} })
}

// RR is round robin (spec §2.1, ip_vs_rr.c). It keeps its own copy of the
// dest list and a cursor at the last pick (-1 is the list head, "before
// the first dest"). A pick walks forward from the cursor and wraps once:
// O(1) amortised while dests are eligible, O(n) when it has to skip
// overloaded or quiesced ones — the kernel's walk, step for step.
type RR struct {
	mu    sync.Mutex
	dests []*ipvs.Dest
	cur   int
}

// Name implements Scheduler.
func (*RR) Name() string { return "rr" }

// Init implements Scheduler: the cursor starts at the head.
func (s *RR) Init(svc *Service) error {
	s.mu.Lock()
	s.dests, s.cur = cloneDests(svc.Dests), -1
	s.mu.Unlock()
	return nil
}

// relist takes the new list and puts the cursor back on dest cd (the head
// if cd is nil or gone).
func (s *RR) relist(svc *Service, cd *ipvs.Dest) {
	s.dests = cloneDests(svc.Dests)
	s.cur = -1
	if cd != nil {
		s.cur = indexOf(s.dests, cd)
	}
}

func (s *RR) cursor() *ipvs.Dest {
	if s.cur < 0 || s.cur >= len(s.dests) {
		return nil
	}
	return s.dests[s.cur]
}

// AddDest implements Scheduler: the cursor stays on its dest; the new dest
// sits at the head and is reached when the walk wraps.
func (s *RR) AddDest(svc *Service, _ *ipvs.Dest) error {
	s.mu.Lock()
	s.relist(svc, s.cursor())
	s.mu.Unlock()
	return nil
}

// DelDest implements Scheduler: if the cursor is on the deleted dest it
// moves to the previous entry (the head if there is none), as
// ip_vs_rr_del_dest does with p->next->prev.
func (s *RR) DelDest(svc *Service, d *ipvs.Dest) error {
	s.mu.Lock()
	cd := s.cursor()
	if cd == d {
		cd = nil
		if s.cur > 0 {
			cd = s.dests[s.cur-1]
		}
	}
	s.relist(svc, cd)
	s.mu.Unlock()
	return nil
}

// UpdDest implements Scheduler: nothing moves.
func (s *RR) UpdDest(svc *Service, _ *ipvs.Dest) error {
	s.mu.Lock()
	s.relist(svc, s.cursor())
	s.mu.Unlock()
	return nil
}

// Schedule implements Scheduler.
func (s *RR) Schedule(_ *Service, _ *Packet) *ipvs.Dest {
	s.mu.Lock()
	i := s.next()
	var d *ipvs.Dest
	if i >= 0 {
		s.cur = i
		d = s.dests[i]
	}
	s.mu.Unlock()
	return d
}

// next returns the index the next pick takes, or -1, without moving the
// cursor: from the entry after the cursor to the end, then, if the cursor
// was not the head, from the start up to and including the cursor.
func (s *RR) next() int {
	last := s.cur
	for i := last + 1; i < len(s.dests); i++ {
		if d := s.dests[i]; !overloaded(d) && d.Weight() > 0 {
			return i
		}
	}
	for i := 0; i <= last && i < len(s.dests); i++ {
		if d := s.dests[i]; !overloaded(d) && d.Weight() > 0 {
			return i
		}
	}
	return -1
}

// WRR is weighted round robin (spec §2.2, ip_vs_wrr.c): passes over the
// list with a current weight cw that steps down by the gcd of the weights
// from mw (max − (gcd − 1)) to 1; a pass picks every dest with w ≥ cw.
// The state (cl, cw, mw, di) and the restart rule on every dest change are
// the kernel's, so the sequence of picks is the kernel's. A pick is O(1)
// amortised when the weights are close (about n·mw/Σw steps), and O(n)
// when a heavy dest makes passes that pick nothing else — the kernel's
// cost too.
type WRR struct {
	mu    sync.Mutex
	dests []*ipvs.Dest
	cl    int   // index of the last pick, -1 = the list head
	cw    int64 // current weight
	mw    int64 // max weight − (di − 1)
	di    int64 // gcd of the weights > 0, 1 if none
}

// Name implements Scheduler.
func (*WRR) Name() string { return "wrr" }

func (s *WRR) weights() (di, mw int64) {
	var g, mx int64
	for _, d := range s.dests {
		w := int64(d.Weight())
		if w > 0 {
			if g > 0 {
				g = gcd(w, g)
			} else {
				g = w
			}
		}
		if w > mx {
			mx = w
		}
	}
	if g == 0 {
		g = 1
	}
	return g, mx - (g - 1)
}

// Init implements Scheduler (ip_vs_wrr_init_svc): cl = head, cw = mw.
func (s *WRR) Init(svc *Service) error {
	s.mu.Lock()
	s.dests, s.cl = cloneDests(svc.Dests), -1
	s.di, s.mw = s.weights()
	s.cw = s.mw
	s.mu.Unlock()
	return nil
}

// changed is ip_vs_wrr_dest_changed: cl back to the head, di and mw
// recomputed, cw clamped or realigned to the new gcd.
func (s *WRR) changed(svc *Service) {
	s.mu.Lock()
	s.dests, s.cl = cloneDests(svc.Dests), -1
	s.di, s.mw = s.weights()
	if s.cw > s.mw || s.cw == 0 {
		s.cw = s.mw
	} else if s.di > 1 {
		s.cw = (s.cw/s.di)*s.di + 1
	}
	s.mu.Unlock()
}

// AddDest implements Scheduler.
func (s *WRR) AddDest(svc *Service, _ *ipvs.Dest) error { s.changed(svc); return nil }

// DelDest implements Scheduler.
func (s *WRR) DelDest(svc *Service, _ *ipvs.Dest) error { s.changed(svc); return nil }

// UpdDest implements Scheduler.
func (s *WRR) UpdDest(svc *Service, _ *ipvs.Dest) error { s.changed(svc); return nil }

// Schedule implements Scheduler.
func (s *WRR) Schedule(_ *Service, _ *Packet) *ipvs.Dest {
	s.mu.Lock()
	st := wrrState{cl: s.cl, cw: s.cw}
	i := st.pick(s.dests, s.mw, s.di)
	s.cl, s.cw = st.cl, st.cw
	var d *ipvs.Dest
	if i >= 0 {
		d = s.dests[i]
	}
	s.mu.Unlock()
	return d
}

// wrrState is the part of the state a pick changes, so that Explain can
// run a pick on a copy.
type wrrState struct {
	cl int
	cw int64
}

// pick is ip_vs_wrr_schedule. It returns the index picked, or -1 with cl
// left where the kernel leaves it (unchanged when mw is 0, at the head or
// at the stop marker when every dest was tried).
func (st *wrrState) pick(dests []*ipvs.Dest, mw, di int64) int {
	if mw == 0 {
		return -1
	}
	last := st.cl
	stop := -2 // no stop marker
	lastPass, restarted := false, false
	i := st.cl
	for {
		for i++; i < len(dests); i++ {
			d := dests[i]
			if !overloaded(d) && int64(d.Weight()) >= st.cw {
				st.cl = i
				return i
			}
			if i == stop {
				st.cl = i
				return -1
			}
		}
		st.cw -= di
		if st.cw <= 0 {
			st.cw = mw
			if lastPass || last == -1 {
				st.cl = -1
				return -1
			}
			restarted = true
		}
		lastPass = st.cw <= di
		if lastPass && restarted && last != -1 {
			stop = last
		}
		i = -1
	}
}
