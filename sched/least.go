package sched

import (
	"math/rand/v2"
	"sync"

	"github.com/golvs/golvs/ipvs"
)

// The schedulers in this file keep no state and walk the whole dest list
// on every pick, O(n) in the number of dests, exactly as their kernel
// counterparts do (ip_vs_{lc,wlc,sed,nq,fo,ovf,twos}.c). The overhead is
// the dest's (ipvs.Dest.Overhead: 256 or 257 per active conn, by the
// director's semantics), an int in the kernel; products of overheads and
// weights are computed in 64 bits where the kernel casts to __s64 (wlc,
// sed, nq, lblc, lblcr) and in wrapping 32-bit ints where it does not
// (twos: a kernel quirk, reproduced on purpose).

func init() {
	Register("none", func(ipvs.Semantics) Scheduler { return none{} })
	Register("lc", func(ipvs.Semantics) Scheduler { return lc{} })
	Register("wlc", func(ipvs.Semantics) Scheduler { return wlc{} })
	Register("sed", func(ipvs.Semantics) Scheduler { return sed{} })
	Register("nq", func(ipvs.Semantics) Scheduler { return nq{} })
	Register("fo", func(ipvs.Semantics) Scheduler { return fo{} })
	Register("ovf", func(ipvs.Semantics) Scheduler { return ovf{} })
	Register("twos", func(ipvs.Semantics) Scheduler { return NewTwos(nil) })
}

// none is the kernel's "no scheduler" (spec §1.5): the name is accepted,
// listings show it, and every pick fails.
type none struct{ stateless }

func (none) Name() string                          { return "none" }
func (none) Schedule(*Service, *Packet) *ipvs.Dest { return nil }

// lc: least connection (spec §2.3). Minimum overhead, compared unsigned;
// a later dest must be strictly smaller, so the first in the list wins ties.
type lc struct{ stateless }

func (lc) Name() string { return "lc" }

func (lc) Schedule(svc *Service, _ *Packet) *ipvs.Dest {
	var least *ipvs.Dest
	var loh uint32
	for _, d := range svc.Dests {
		if overloaded(d) || d.Weight() == 0 {
			continue
		}
		if doh := d.Overhead(); least == nil || doh < loh {
			least, loh = d, doh
		}
	}
	return least
}

// wlc: weighted least connection (spec §2.4), ipvsadm's default.
type wlc struct{ stateless }

func (wlc) Name() string { return "wlc" }

func (wlc) Schedule(svc *Service, _ *Packet) *ipvs.Dest { return wlcPick(svc.Dests) }

// wlcPick is __ip_vs_wlc_schedule, shared with lblc and lblcr: the seed is
// the first dest with !OVL && w > 0; later dests skip only OVL and win if
// loh·w(d) > doh·w(least).
func wlcPick(dests []*ipvs.Dest) *ipvs.Dest {
	var least *ipvs.Dest
	var loh int64
	i := 0
	for ; i < len(dests); i++ {
		d := dests[i]
		if !overloaded(d) && d.Weight() > 0 {
			least, loh = d, overhead(d)
			break
		}
	}
	if least == nil {
		return nil
	}
	lw := int64(least.Weight())
	for i++; i < len(dests); i++ {
		d := dests[i]
		if overloaded(d) {
			continue
		}
		doh := overhead(d)
		w := int64(d.Weight())
		if loh*w > doh*lw {
			least, loh, lw = d, doh, w
		}
	}
	return least
}

// overhead is ip_vs_dest_conn_overhead as the kernel's int, widened the
// way its (__s64) casts widen it.
func overhead(d *ipvs.Dest) int64 { return int64(int32(d.Overhead())) }

// sedOverhead is ip_vs_sed_dest_overhead (and nq's): active + 1.
func sedOverhead(d *ipvs.Dest) int64 { return int64(d.ActiveConns()) + 1 }

// sed: shortest expected delay (spec §2.5): wlc's shape with act+1.
type sed struct{ stateless }

func (sed) Name() string { return "sed" }

func (sed) Schedule(svc *Service, _ *Packet) *ipvs.Dest {
	dests := svc.Dests
	var least *ipvs.Dest
	var loh int64
	i := 0
	for ; i < len(dests); i++ {
		d := dests[i]
		if !overloaded(d) && d.Weight() > 0 {
			least, loh = d, sedOverhead(d)
			break
		}
	}
	if least == nil {
		return nil
	}
	lw := int64(least.Weight())
	for i++; i < len(dests); i++ {
		d := dests[i]
		if overloaded(d) {
			continue
		}
		doh := sedOverhead(d)
		w := int64(d.Weight())
		if loh*w > doh*lw {
			least, loh, lw = d, doh, w
		}
	}
	return least
}

// nq: never queue (spec §2.6). The first idle eligible dest wins at once;
// otherwise sed's rule.
type nq struct{ stateless }

func (nq) Name() string { return "nq" }

func (nq) Schedule(svc *Service, _ *Packet) *ipvs.Dest {
	var least *ipvs.Dest
	var loh, lw int64
	for _, d := range svc.Dests {
		w := int64(d.Weight())
		if overloaded(d) || w == 0 {
			continue
		}
		act := d.ActiveConns()
		if act == 0 {
			return d
		}
		doh := int64(act) + 1
		if least == nil || loh*w > doh*lw {
			least, loh, lw = d, doh, w
		}
	}
	return least
}

// fo: weighted failover (spec §2.7). Highest weight among !OVL, strictly
// greater than the running best, which starts at 0.
type fo struct{ stateless }

func (fo) Name() string { return "fo" }

func (fo) Schedule(svc *Service, _ *Packet) *ipvs.Dest {
	var h *ipvs.Dest
	var hw int32
	for _, d := range svc.Dests {
		if w := d.Weight(); !overloaded(d) && w > hw {
			h, hw = d, w
		}
	}
	return h
}

// ovf: weighted overflow (spec §2.8). Skip OVL, act > w and w == 0; the
// highest weight wins, the first on ties.
type ovf struct{ stateless }

func (ovf) Name() string { return "ovf" }

func (ovf) Schedule(svc *Service, _ *Packet) *ipvs.Dest {
	var h *ipvs.Dest
	var hw int32
	for _, d := range svc.Dests {
		w := d.Weight()
		if overloaded(d) || d.ActiveConns() > w || w == 0 {
			continue
		}
		if h == nil || w > hw {
			h, hw = d, w
		}
	}
	return h
}

// Twos is the power-of-two-choices scheduler (spec §2.9, Linux 6.2+).
// Its random source is injectable so that tests can fix the draws.
type Twos struct {
	stateless
	below func(n uint32) uint32
}

// NewTwos returns a twos scheduler whose draws come from below(n), which
// must return a uniform value in [0, n) and be safe for concurrent use
// (Schedule runs on many workers). nil means math/rand/v2's Uint32N, the
// counterpart of the kernel's get_random_u32_below.
func NewTwos(below func(n uint32) uint32) *Twos {
	if below == nil {
		below = rand.Uint32N
	}
	return &Twos{below: below}
}

// NewTwosSeeded returns a twos scheduler drawing from a PCG generator with
// the given seed, behind a mutex: deterministic for tests and simulations.
func NewTwosSeeded(seed uint64) *Twos {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return NewTwos(func(n uint32) uint32 {
		mu.Lock()
		v := r.Uint32N(n)
		mu.Unlock()
		return v
	})
}

// Name implements Scheduler.
func (*Twos) Name() string { return "twos" }

// Schedule implements Scheduler: two weighted draws from [0, T], the one
// with the lower overhead/weight wins, choice1 on ties. The arithmetic is
// the kernel's: ints that wrap at 32 bits. In particular weight·overhead
// wraps once it reaches 2^31 (weight 65535 with about 128 active conns),
// and then the more loaded server can win: a kernel quirk that golvs
// reproduces because it promises the kernel's choices.
func (t *Twos) Schedule(svc *Service, _ *Packet) *ipvs.Dest {
	var choice1, choice2 *ipvs.Dest
	var total int32
	for _, d := range svc.Dests {
		if !overloaded(d) {
			if w := d.Weight(); w > 0 {
				total += w
				choice1 = d
			}
		}
	}
	if choice1 == nil {
		return nil
	}
	// get_random_u32_below(total_weight + 1); a sum that wrapped to
	// -1 would ask for a draw below 0, which no source can give: draw 0.
	var r1, r2 int32
	if n := uint32(total + 1); n != 0 {
		r1, r2 = int32(t.below(n)), int32(t.below(n))
	}
	var w1, w2 int32 = -1, -1
	var oh1, oh2 int32
	for _, d := range svc.Dests {
		if overloaded(d) {
			continue
		}
		w := d.Weight()
		if w <= 0 {
			continue
		}
		r1 -= w
		r2 -= w
		if r1 <= 0 && w1 == -1 {
			choice1, w1, oh1 = d, w, int32(d.Overhead())
		}
		if r2 <= 0 && w2 == -1 {
			choice2, w2, oh2 = d, w, int32(d.Overhead())
		}
		if w1 != -1 && w2 != -1 {
			break
		}
	}
	if choice2 != nil && w2*oh1 > w1*oh2 {
		return choice2
	}
	return choice1
}
