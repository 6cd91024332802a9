package sched

import (
	"sync"
	"sync/atomic"

	"github.com/golvs/golvs/ipvs"
)

// Table sizes of sh and dh: CONFIG_IP_VS_SH_TAB_BITS and IP_VS_DH_TAB_BITS,
// both 8 by default.
const (
	shTabBits = 8
	shTabSize = 1 << shTabBits
	shTabMask = shTabSize - 1
)

func init() {
	Register("sh", func(ipvs.Semantics) Scheduler { return &SH{} })
	Register("dh", func(ipvs.Semantics) Scheduler { return &DH{} })
}

// bucketTable is an immutable sh/dh table. A rebuild makes a new one and
// swaps it in, so Schedule reads it without a lock: one hash and one load,
// O(1) (O(256) probes at most with sh-fallback).
type bucketTable [shTabSize]*ipvs.Dest

// SH is source hashing (spec §2.10, ip_vs_sh.c).
type SH struct {
	mu  sync.Mutex // serialises rebuilds
	tab atomic.Pointer[bucketTable]
}

// Name implements Scheduler.
func (*SH) Name() string { return "sh" }

// reassign is ip_vs_sh_reassign: walk the buckets while cycling through
// the dests in list order, giving each max(w, 1) consecutive buckets.
func (s *SH) reassign(svc *Service) {
	s.mu.Lock()
	t := new(bucketTable)
	if n := len(svc.Dests); n > 0 {
		j, count := 0, int32(0)
		for i := range t {
			d := svc.Dests[j]
			t[i] = d
			count++
			if count >= d.Weight() {
				j = (j + 1) % n
				count = 0
			}
		}
	}
	s.tab.Store(t)
	s.mu.Unlock()
}

// Init implements Scheduler.
func (s *SH) Init(svc *Service) error { s.reassign(svc); return nil }

// AddDest implements Scheduler.
func (s *SH) AddDest(svc *Service, _ *ipvs.Dest) error { s.reassign(svc); return nil }

// DelDest implements Scheduler.
func (s *SH) DelDest(svc *Service, _ *ipvs.Dest) error { s.reassign(svc); return nil }

// UpdDest implements Scheduler.
func (s *SH) UpdDest(svc *Service, _ *ipvs.Dest) error { s.reassign(svc); return nil }

// shUnavailable is sh's and mh's is_unavailable: w ≤ 0 or OVL. AVAILABLE
// is not consulted by current kernels.
func shUnavailable(d *ipvs.Dest) bool { return d.Weight() <= 0 || overloaded(d) }

// shBucket is ip_vs_sh_hashkey.
func shBucket(addr uint32, port uint16, offset uint32) uint32 {
	return (offset + hash32(uint32(port)+addr, shTabBits)) & shTabMask
}

// Schedule implements Scheduler.
func (s *SH) Schedule(svc *Service, p *Packet) *ipvs.Dest {
	d, _, _ := s.lookup(svc, p)
	return d
}

// lookup returns the dest, the first bucket and the number of fallback
// probes made.
func (s *SH) lookup(svc *Service, p *Packet) (*ipvs.Dest, int, int) {
	t := s.tab.Load()
	if t == nil {
		return nil, -1, 0
	}
	addr, port := hashSource(p, svc.Flags&ipvs.SvcSched2 != 0)
	ihash := shBucket(addr, port, 0)
	d := t[ihash]
	if svc.Flags&ipvs.SvcSched1 == 0 {
		if d == nil || shUnavailable(d) {
			return nil, int(ihash), 0
		}
		return d, int(ihash), 0
	}
	if d == nil {
		return nil, int(ihash), 0
	}
	if !shUnavailable(d) {
		return d, int(ihash), 0
	}
	for off := uint32(0); off < shTabSize; off++ {
		roff := (off + ihash) % shTabSize
		d = t[shBucket(addr, port, roff)]
		if d == nil {
			return nil, int(ihash), int(off) + 1
		}
		if !shUnavailable(d) {
			return d, int(ihash), int(off) + 1
		}
	}
	return nil, int(ihash), shTabSize
}

// DH is destination hashing (spec §2.11, ip_vs_dh.c). Bucket i holds the
// dest at position i mod n; weights are ignored, and, as in the kernel,
// an update of a dest does not rebuild the table.
type DH struct {
	mu  sync.Mutex
	tab atomic.Pointer[bucketTable]
}

// Name implements Scheduler.
func (*DH) Name() string { return "dh" }

func (s *DH) reassign(svc *Service) {
	s.mu.Lock()
	t := new(bucketTable)
	if n := len(svc.Dests); n > 0 {
		for i := range t {
			t[i] = svc.Dests[i%n]
		}
	}
	s.tab.Store(t)
	s.mu.Unlock()
}

// Init implements Scheduler.
func (s *DH) Init(svc *Service) error { s.reassign(svc); return nil }

// AddDest implements Scheduler.
func (s *DH) AddDest(svc *Service, _ *ipvs.Dest) error { s.reassign(svc); return nil }

// DelDest implements Scheduler.
func (s *DH) DelDest(svc *Service, _ *ipvs.Dest) error { s.reassign(svc); return nil }

// UpdDest implements Scheduler: dh has no upd_dest callback.
func (s *DH) UpdDest(*Service, *ipvs.Dest) error { return nil }

func dhBucket(p *Packet) uint32 { return hash32(fold(p.Dst), shTabBits) }

// Schedule implements Scheduler: the packet's destination address, no
// port, no fallback; the dest must be AVAILABLE, w > 0 and not OVL.
func (s *DH) Schedule(_ *Service, p *Packet) *ipvs.Dest {
	t := s.tab.Load()
	if t == nil {
		return nil
	}
	d := t[dhBucket(p)]
	if d == nil || !d.Available() || d.Weight() <= 0 || overloaded(d) {
		return nil
	}
	return d
}
