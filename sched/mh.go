package sched

import (
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/golvs/golvs/ipvs"
)

// MHPrimes are the lookup table sizes mh can be built with, indexed by
// CONFIG_IP_VS_MH_TAB_INDEX − 8.
var MHPrimes = [...]uint32{251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071}

// MHDefaultIndex is the Kconfig default of CONFIG_IP_VS_MH_TAB_INDEX:
// M = 4093.
const MHDefaultIndex = 12

// The fixed hsiphash keys of ip_vs_mh.c (generate_hash_secret): both words
// of each key are the same constant.
const (
	mhKey1 = 2654435761
	mhKey2 = 2654446892
)

func init() {
	Register("mh", func(ipvs.Semantics) Scheduler {
		s, _ := NewMH(MHDefaultIndex)
		return s
	})
}

// MH is Maglev hashing (spec §2.14, ip_vs_mh.c). The lookup table is
// immutable once built and swapped in atomically, so Schedule is one
// SipHash and one load, O(1), without a lock (O(M) hashes at most with
// mh-fallback).
type MH struct {
	mu     sync.Mutex // serialises rebuilds and guards the scratch below
	m      uint32     // table size, a prime from MHPrimes
	bits   int        // IP_VS_MH_TAB_BITS = index/2, used for the weight shift
	tab    atomic.Pointer[[]*ipvs.Dest]
	gcd    int64
	rshift uint
	used   []uint64 // populate's bitmap, reused
	setup  []mhSetup
}

type mhSetup struct {
	offset, skip, perm uint32
	turns              int64
}

// NewMH returns an mh scheduler whose table size is MHPrimes[index−8],
// index being CONFIG_IP_VS_MH_TAB_INDEX (8..17; the kernel's default is
// 12, M = 4093).
func NewMH(index int) (*MH, error) {
	if index < 8 || index >= 8+len(MHPrimes) {
		return nil, &ipvs.ValueError{Msg: "sched: mh: invalid table index", Value: fmt.Sprint(index), Allowed: fmt.Sprintf("8..%d (table sizes %v)", 7+len(MHPrimes), MHPrimes)}
	}
	m := MHPrimes[index-8]
	return &MH{m: m, bits: index / 2, used: make([]uint64, (m+63)/64)}, nil
}

// Name implements Scheduler.
func (*MH) Name() string { return "mh" }

// TableSize returns M.
func (s *MH) TableSize() int { return int(s.m) }

// mhHash is ip_vs_mh_hashkey: hsiphash of offset + port + addr, all host
// order, modulo 2³².
func mhHash(addr uint32, port uint16, key uint64, offset uint32) uint32 {
	return hsiphash32(offset+uint32(port)+addr, key, key)
}

// weights are ip_vs_mh_gcd_weight and ip_vs_mh_shift_weight, over
// last_weight.
func (s *MH) weights(dests []*ipvs.Dest) {
	var g, mx int64
	for _, d := range dests {
		w := int64(d.LastWeight())
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
	s.gcd, s.rshift = g, 0
	if g < 1 {
		return
	}
	if shift := bits.Len64(uint64(mx/g)) - s.bits; shift > 0 {
		s.rshift = uint(shift)
	}
}

// reassign is ip_vs_mh_dest_changed / ip_vs_mh_reassign: permutate, then
// populate a fresh table. With more than M dests it fails and leaves the
// table as it was.
func (s *MH) reassign(svc *Service) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dests := svc.Dests
	s.weights(dests)
	if len(dests) > int(s.m) {
		return fmt.Errorf("%w: mh: %d dests, table size %d", ErrTooManyDests, len(dests), s.m)
	}
	t := make([]*ipvs.Dest, s.m)
	if s.gcd < 1 {
		s.tab.Store(&t) // all last_weights 0: empty table
		return nil
	}
	// ip_vs_mh_permutate
	s.setup = s.setup[:0]
	v6 := svc.Key.IsV6()
	for _, d := range dests {
		a, p := foldAs(d.Addr, v6), d.Port
		var st mhSetup
		st.offset = mhHash(a, p, mhKey1, 0) % s.m
		st.skip = mhHash(a, p, mhKey2, 0)%(s.m-1) + 1
		st.perm = st.offset
		lw := int64(d.LastWeight())
		st.turns = (lw / s.gcd) >> s.rshift
		if st.turns == 0 && lw != 0 {
			st.turns = 1
		}
		s.setup = append(s.setup, st)
	}
	// ip_vs_mh_populate
	clear(s.used)
	n, dt := uint32(0), int64(0)
	for n < s.m {
		for j := 0; j < len(dests); {
			ds := &s.setup[j]
			if ds.turns < 1 {
				j++
				continue
			}
			c := ds.perm
			for s.used[c/64]&(1<<(c%64)) != 0 {
				ds.perm += ds.skip
				if ds.perm >= s.m {
					ds.perm -= s.m
				}
				c = ds.perm
			}
			s.used[c/64] |= 1 << (c % 64)
			t[c] = dests[j]
			if n++; n == s.m {
				break
			}
			if dt++; dt >= ds.turns {
				dt = 0
				j++
			}
		}
	}
	s.tab.Store(&t)
	return nil
}

// Init implements Scheduler. It fails, as the kernel's init does, when
// the service has more dests than table slots.
func (s *MH) Init(svc *Service) error { return s.reassign(svc) }

// AddDest implements Scheduler. The kernel ignores add_dest's result, so
// a rebuild that fails (more dests than slots) leaves the old table and
// reports nothing.
func (s *MH) AddDest(svc *Service, _ *ipvs.Dest) error { _ = s.reassign(svc); return nil }

// DelDest implements Scheduler.
func (s *MH) DelDest(svc *Service, _ *ipvs.Dest) error { _ = s.reassign(svc); return nil }

// UpdDest implements Scheduler.
func (s *MH) UpdDest(svc *Service, _ *ipvs.Dest) error { _ = s.reassign(svc); return nil }

// Schedule implements Scheduler.
func (s *MH) Schedule(svc *Service, p *Packet) *ipvs.Dest {
	d, _, _ := s.lookup(svc, p)
	return d
}

// lookup is ip_vs_mh_get / ip_vs_mh_get_fallback; it also returns the
// first slot and the number of fallback probes.
func (s *MH) lookup(svc *Service, p *Packet) (*ipvs.Dest, int, int) {
	tp := s.tab.Load()
	if tp == nil {
		return nil, -1, 0
	}
	t := *tp
	addr, port := hashSource(p, svc.Flags&ipvs.SvcSched2 != 0)
	ihash := mhHash(addr, port, mhKey1, 0) % s.m
	d := t[ihash]
	if d == nil {
		return nil, int(ihash), 0
	}
	if !shUnavailable(d) {
		return d, int(ihash), 0
	}
	if svc.Flags&ipvs.SvcSched1 == 0 {
		return nil, int(ihash), 0
	}
	for off := uint32(0); off < s.m; off++ {
		roff := (off + ihash) % s.m
		d = t[mhHash(addr, port, mhKey1, roff)%s.m]
		if d == nil {
			return nil, int(ihash), int(off) + 1
		}
		if !shUnavailable(d) {
			return d, int(ihash), int(off) + 1
		}
	}
	return nil, int(ihash), int(s.m)
}

// Slots returns a copy of the lookup table (nil entries are empty slots),
// for tests and listings.
func (s *MH) Slots() []*ipvs.Dest {
	tp := s.tab.Load()
	if tp == nil {
		return nil
	}
	return append([]*ipvs.Dest(nil), (*tp)...)
}
