package director

import (
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/sched"
)

// svcKey is the packed key of a protocol service in a snapshot.
type svcKey struct {
	addr  [4]byte
	port  uint16
	proto uint8
}

// Service is one virtual service in a snapshot. Everything but the
// pointed-to runtime objects (scheduler, stats, dests) is immutable.
type Service struct {
	Name   string             // as listings and traces name it: "TCP 198.18.0.100:80 rr"
	Config ipvs.ServiceConfig // Dests field unused; see Dests
	Sched  sched.Scheduler
	View   *sched.Service
	Stats  *ipvs.Stats
	Dests  []*ipvs.Dest // kernel list order
}

// Snapshot is an immutable view of the service table, published with one
// atomic pointer swap: workers load it once per batch and never see a torn
// configuration.
type Snapshot struct {
	Gen      uint64
	services svcTable
	port0    svcTable // port-zero (persistent, all ports) services by addr+proto
	vips     map[[4]byte]bool
	List     []*Service // every service, in creation order
	marks    []markRule // firewall-mark classification, in order
	fwm      map[uint32]*Service
	Marks    []ipvs.MarkRule
	// Model is the configuration this snapshot was built from (read
	// only: Director.Model returns a copy to edit).
	Model Model
	snap6 // IPv6 services, VIPs and mark rules (snapshot6.go)
}

// markRule is a MarkRule compiled for the packet path.
type markRule struct {
	mark      uint32
	proto     uint8
	net, mask uint32
	ports     []ipvs.PortRange
}

func (r *markRule) match(proto uint8, dst uint32, port uint16) bool {
	if r.proto != 0 && r.proto != proto || dst&r.mask != r.net {
		return false
	}
	if len(r.ports) == 0 {
		return true
	}
	for _, p := range r.ports {
		if port >= p.Lo && port <= p.Hi {
			return true
		}
	}
	return false
}

// lookup finds the service of a packet as ip_vs_service_find does (spec
// §4.7): a firewall-mark service first (golvs classifies the mark itself),
// then the exact protocol/address/port, then a port-zero service.
func (s *Snapshot) lookup(proto uint8, addr [4]byte, port uint16) *Service {
	if len(s.marks) != 0 {
		dst := be32(addr)
		for i := range s.marks {
			if r := &s.marks[i]; r.match(proto, dst, port) {
				if sv := s.fwm[r.mark]; sv != nil {
					return sv
				}
				break // the first matching rule sets the mark
			}
		}
	}
	if sv := s.services.get(packSvc(addr, port, proto)); sv != nil {
		return sv
	}
	if s.port0.n != 0 {
		return s.port0.get(packSvc(addr, 0, proto))
	}
	return nil
}

// IsVIP reports whether addr is the address of some service, or inside
// a mark rule's destination that feeds a firewall-mark service.
func (s *Snapshot) IsVIP(addr [4]byte) bool {
	if s.vips[addr] {
		return true
	}
	a := be32(addr)
	for i := range s.marks {
		if r := &s.marks[i]; a&r.mask == r.net && s.fwm[r.mark] != nil {
			return true
		}
	}
	return false
}

// packSvc packs a service key into a word: addr<<24 | port<<8 | proto.
// Zero is never a valid key (the address of a service is never 0.0.0.0).
func packSvc(addr [4]byte, port uint16, proto uint8) uint64 {
	return uint64(be32(addr))<<24 | uint64(port)<<8 | uint64(proto)
}

// svcTable is an immutable open-addressing table of services keyed by a
// packed word, built with each snapshot: one multiply and usually one
// probe, cheaper than a map on the per-packet path.
type svcTable struct {
	keys  []uint64
	vals  []*Service
	shift uint
	n     int
}

func newSvcTable(m map[svcKey]*Service) svcTable {
	size, shift := 8, uint(61)
	for size < 2*len(m) {
		size <<= 1
		shift--
	}
	t := svcTable{keys: make([]uint64, size), vals: make([]*Service, size), shift: shift, n: len(m)}
	for k, v := range m {
		key := packSvc(k.addr, k.port, k.proto)
		i := (key * 0x9E3779B97F4A7C15) >> t.shift
		for t.keys[i] != 0 {
			i = (i + 1) & uint64(size-1)
		}
		t.keys[i], t.vals[i] = key, v
	}
	return t
}

func (t *svcTable) get(key uint64) *Service {
	if t.n == 0 {
		return nil
	}
	mask := uint64(len(t.keys) - 1)
	for i := (key * 0x9E3779B97F4A7C15) >> t.shift; ; i = (i + 1) & mask {
		switch t.keys[i] {
		case key:
			return t.vals[i]
		case 0:
			return nil
		}
	}
}
