package sched

import (
	"strings"

	"github.com/golvs/golvs/ipvs"
)

// Decision records what a scheduler would decide for a packet and the
// inputs it would decide on, for traces. It is filled only by Explain,
// never on the Schedule path.
type Decision struct {
	Sched string
	// Dest is the dest the next Schedule would return (nil: none), as far
	// as it can be known: twos draws at random and leaves it nil.
	Dest *ipvs.Dest
	// Bucket is the sh/dh bucket or mh slot hashed to; -1 otherwise.
	Bucket int
	// Probes counts sh-fallback/mh-fallback probes after the first bucket.
	Probes int
	// CacheHit tells whether lblc/lblcr had an entry for the address;
	// Cached holds the entry's dest (lblc) or set (lblcr).
	CacheHit bool
	Cached   []*ipvs.Dest
	// Dests are the service's dests in list order with the values the
	// scheduler reads; Overhead is by the scheduler's formula.
	Dests []DestState
	// Formula is the overhead formula the scheduler used, for those that
	// compare overheads (lc, wlc, lblc, lblcr, twos: by the dests'
	// semantics; sed, nq: active + 1); empty for the others.
	Formula string
	// Note says anything the fields cannot (e.g. "random").
	Note string
}

// OverheadFormula says how ip_vs_dest_conn_overhead is computed in a
// semantics (spec §1.3), in the words traces print.
func OverheadFormula(sem ipvs.Semantics) string {
	if sem == ipvs.Classic {
		return "overhead = active*256 + inactive"
	}
	return "overhead = active*257 + inactive (= active*256 + total)"
}

// SedFormula is the overhead of sed and nq.
const SedFormula = "overhead = active + 1 (inactive ignored)"

// DestState is one dest's scheduling inputs at the time of Explain.
type DestState struct {
	Dest       *ipvs.Dest
	Weight     int32
	Active     int32
	Inactive   int32
	Overhead   int64
	Overloaded bool
	Available  bool
}

// Explainer is implemented by every scheduler of this package. Explain
// fills d for the packet without changing the scheduler's state (no
// cursor moves, no cache entry is created or touched). It may allocate.
type Explainer interface {
	Explain(svc *Service, p *Packet, d *Decision)
}

func fillDests(d *Decision, name string, dests []*ipvs.Dest, sedStyle bool) {
	*d = Decision{Sched: name, Bucket: -1, Dests: d.Dests[:0], Cached: d.Cached[:0]}
	switch {
	case sedStyle:
		d.Formula = SedFormula
	case len(dests) == 0:
	case name == "lc", name == "wlc", name == "lblc", name == "lblcr", name == "twos":
		d.Formula = OverheadFormula(dests[0].Semantics())
	}
	for _, x := range dests {
		oh := int64(x.Overhead())
		if sedStyle {
			oh = sedOverhead(x)
		}
		d.Dests = append(d.Dests, DestState{
			Dest: x, Weight: x.Weight(), Active: x.ActiveConns(), Inactive: x.InactConns(),
			Overhead: oh, Overloaded: overloaded(x), Available: x.Available(),
		})
	}
}

// Explain implements Explainer.
func (s none) Explain(svc *Service, _ *Packet, d *Decision) {
	fillDests(d, "none", svc.Dests, false)
	d.Note = "no scheduler: every pick fails"
}

// Explain implements Explainer.
func (s lc) Explain(svc *Service, p *Packet, d *Decision) {
	fillDests(d, s.Name(), svc.Dests, false)
	d.Dest = s.Schedule(svc, p)
}

// Explain implements Explainer.
func (s wlc) Explain(svc *Service, p *Packet, d *Decision) {
	fillDests(d, s.Name(), svc.Dests, false)
	d.Dest = s.Schedule(svc, p)
}

// Explain implements Explainer.
func (s sed) Explain(svc *Service, p *Packet, d *Decision) {
	fillDests(d, s.Name(), svc.Dests, true)
	d.Dest = s.Schedule(svc, p)
}

// Explain implements Explainer.
func (s nq) Explain(svc *Service, p *Packet, d *Decision) {
	fillDests(d, s.Name(), svc.Dests, true)
	d.Dest = s.Schedule(svc, p)
}

// Explain implements Explainer.
func (s fo) Explain(svc *Service, p *Packet, d *Decision) {
	fillDests(d, s.Name(), svc.Dests, false)
	d.Dest = s.Schedule(svc, p)
}

// Explain implements Explainer.
func (s ovf) Explain(svc *Service, p *Packet, d *Decision) {
	fillDests(d, s.Name(), svc.Dests, false)
	d.Dest = s.Schedule(svc, p)
}

// Explain implements Explainer. The note names the dests whose
// weight·overhead products wrap in the kernel's 32-bit ints now (a kernel
// quirk twos reproduces: past the wrap a loaded server can win).
func (s *Twos) Explain(svc *Service, _ *Packet, d *Decision) {
	fillDests(d, s.Name(), svc.Dests, false)
	d.Note = "random: two weighted draws, the lower overhead/weight wins; weight*overhead is a 32-bit int, as in the kernel"
	var maxW int64
	for _, x := range svc.Dests {
		if w := int64(x.Weight()); w > maxW && !overloaded(x) {
			maxW = w
		}
	}
	var wrap []string
	for _, x := range svc.Dests {
		if x.Weight() > 0 && !overloaded(x) && maxW*int64(int32(x.Overhead())) > 1<<31-1 {
			wrap = append(wrap, x.Addr.String())
		}
	}
	if len(wrap) > 0 {
		d.Note += "; it wraps past 2^31 (a kernel quirk golvs keeps: the more loaded server can win) for " + strings.Join(wrap, " ")
	}
}

// Explain implements Explainer.
func (s *RR) Explain(_ *Service, _ *Packet, d *Decision) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fillDests(d, s.Name(), s.dests, false)
	if i := s.next(); i >= 0 {
		d.Dest = s.dests[i]
	}
}

// Explain implements Explainer.
func (s *WRR) Explain(_ *Service, _ *Packet, d *Decision) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fillDests(d, s.Name(), s.dests, false)
	st := wrrState{cl: s.cl, cw: s.cw}
	if i := st.pick(s.dests, s.mw, s.di); i >= 0 {
		d.Dest = s.dests[i]
	}
}

// Explain implements Explainer.
func (s *SH) Explain(svc *Service, p *Packet, d *Decision) {
	fillDests(d, s.Name(), svc.Dests, false)
	d.Dest, d.Bucket, d.Probes = s.lookup(svc, p)
}

// Explain implements Explainer.
func (s *DH) Explain(svc *Service, p *Packet, d *Decision) {
	fillDests(d, s.Name(), svc.Dests, false)
	d.Bucket = int(dhBucket(p))
	d.Dest = s.Schedule(svc, p)
}

// Explain implements Explainer.
func (s *MH) Explain(svc *Service, p *Packet, d *Decision) {
	fillDests(d, s.Name(), svc.Dests, false)
	d.Dest, d.Bucket, d.Probes = s.lookup(svc, p)
}

// Explain implements Explainer. It does not refresh the entry's lastuse.
func (s *LBLC) Explain(_ *Service, p *Packet, d *Decision) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fillDests(d, s.Name(), s.dests, false)
	if e := s.t.get(p.Dst); e != nil {
		d.CacheHit = true
		d.Cached = append(d.Cached, e.dest)
		if x := e.dest; x.Available() && x.Weight() > 0 && !lblcOverloaded(x, s.dests) {
			d.Dest = x
			return
		}
	}
	d.Dest = wlcPick(s.dests)
}

// Explain implements Explainer. It neither refreshes the entry nor drops
// the set's most loaded member.
func (s *LBLCR) Explain(_ *Service, p *Packet, d *Decision) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fillDests(d, s.Name(), s.dests, false)
	if e := s.t.get(p.Dst); e != nil {
		d.CacheHit = true
		d.Cached = append(d.Cached, e.set...)
		if x := setMin(e.set); x != nil && !lblcOverloaded(x, s.dests) {
			d.Dest = x
			return
		}
	}
	d.Dest = wlcPick(s.dests)
}
