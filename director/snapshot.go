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
}

func (s *Snapshot) lookup(proto uint8, addr [4]byte, port uint16) *Service {
	if sv := s.services[svcKey{addr, port, proto}]; sv != nil {
		return sv
	}
	if len(s.port0) != 0 {
		return s.port0[svcKey{addr, 0, proto}]
	}
	return nil
}

// IsVIP reports whether addr is the address of some service.
func (s *Snapshot) IsVIP(addr [4]byte) bool { return s.vips[addr] }
