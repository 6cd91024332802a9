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
	services map[svcKey]*Service
	port0    map[svcKey]*Service // port-zero (persistent, all ports) services by addr+proto
	vips     map[[4]byte]bool
	List     []*Service // every service, in creation order
	marks    []markRule // firewall-mark classification, in order
	fwm      map[uint32]*Service
	Marks    []ipvs.MarkRule
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
	if sv := s.services[svcKey{addr, port, proto}]; sv != nil {
		return sv
	}
	if len(s.port0) != 0 {
		return s.port0[svcKey{addr, 0, proto}]
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
