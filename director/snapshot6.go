package director

import (
	"encoding/binary"

	"github.com/golvs/golvs/ipvs"
)

// The IPv6 half of a snapshot: services by 16-byte address, VIPs, and
// the mark rules with IPv6 destinations, which feed IPv6 fwmark services
// (-f MARK -6): the kernel finds a fwmark service by the packet's family
// and its mark, so an IPv6 packet never reaches an IPv4 fwmark service,
// nor the reverse.
type snap6 struct {
	services6 svcTable6
	port0_6   svcTable6
	vips6     map[[16]byte]bool
	marks6    []markRule6
	fwm6      map[uint32]*Service
}

// svcKey6 is the key of an IPv6 protocol service.
type svcKey6 struct {
	addr  [16]byte
	port  uint16
	proto uint8
}

// markRule6 is a MarkRule with an IPv6 destination, compiled.
type markRule6 struct {
	mark      uint32
	proto     uint8
	net, mask [2]uint64
	ports     []ipvs.PortRange
}

func (r *markRule6) contains(a *[16]byte) bool {
	return binary.BigEndian.Uint64(a[0:])&r.mask[0] == r.net[0] && binary.BigEndian.Uint64(a[8:])&r.mask[1] == r.net[1]
}

func (r *markRule6) match(proto uint8, dst *[16]byte, port uint16) bool {
	if r.proto != 0 && r.proto != proto || !r.contains(dst) {
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

func compileMarks6(rules []ipvs.MarkRule) []markRule6 {
	var out []markRule6
	for _, r := range rules {
		if !r.Dst.Addr().Is6() {
			continue
		}
		bits := r.Dst.Bits()
		var mask [2]uint64
		for i := range mask {
			n := min(max(bits-64*i, 0), 64)
			if n > 0 {
				mask[i] = ^uint64(0) << (64 - n)
			}
		}
		a := r.Dst.Addr().As16()
		out = append(out, markRule6{mark: r.Mark, proto: r.Proto, ports: r.Ports, mask: mask,
			net: [2]uint64{binary.BigEndian.Uint64(a[0:]) & mask[0], binary.BigEndian.Uint64(a[8:]) & mask[1]}})
	}
	return out
}

// lookup6 is lookup for an IPv6 packet.
func (s *Snapshot) lookup6(proto uint8, addr *[16]byte, port uint16) *Service {
	for i := range s.marks6 {
		if r := &s.marks6[i]; r.match(proto, addr, port) {
			if sv := s.fwm6[r.mark]; sv != nil {
				return sv
			}
			break // the first matching rule sets the mark
		}
	}
	if sv := s.services6.get(svcKey6{*addr, port, proto}); sv != nil {
		return sv
	}
	if s.port0_6.n != 0 {
		return s.port0_6.get(svcKey6{*addr, 0, proto})
	}
	return nil
}

// IsVIP6 reports whether addr is the address of some IPv6 service, or
// inside an IPv6 mark rule's destination that feeds a fwmark service.
func (s *Snapshot) IsVIP6(addr *[16]byte) bool {
	if s.vips6[*addr] {
		return true
	}
	for i := range s.marks6 {
		if r := &s.marks6[i]; r.contains(addr) && s.fwm6[r.mark] != nil {
			return true
		}
	}
	return false
}

// svcTable6 is svcTable for IPv6 keys: an immutable open-addressing
// table, one multiply-fold and usually one probe.
type svcTable6 struct {
	keys  []svcKey6
	vals  []*Service
	shift uint
	n     int
}

func (k *svcKey6) hash() uint64 {
	h := binary.LittleEndian.Uint64(k.addr[0:])*0x9E3779B97F4A7C15 ^ binary.LittleEndian.Uint64(k.addr[8:])
	h = (h ^ uint64(k.port)<<8 ^ uint64(k.proto)) * 0xBF58476D1CE4E5B9
	return h ^ h>>31
}

func newSvcTable6(m map[svcKey6]*Service) svcTable6 {
	size, shift := 8, uint(61)
	for size < 2*len(m) {
		size <<= 1
		shift--
	}
	t := svcTable6{keys: make([]svcKey6, size), vals: make([]*Service, size), shift: shift, n: len(m)}
	for k, v := range m {
		i := (k.hash() * 0x9E3779B97F4A7C15) >> t.shift
		for t.vals[i] != nil {
			i = (i + 1) & uint64(size-1)
		}
		t.keys[i], t.vals[i] = k, v
	}
	return t
}

func (t *svcTable6) get(k svcKey6) *Service {
	if t.n == 0 {
		return nil
	}
	mask := uint64(len(t.keys) - 1)
	for i := (k.hash() * 0x9E3779B97F4A7C15) >> t.shift; ; i = (i + 1) & mask {
		switch {
		case t.vals[i] == nil:
			return nil
		case t.keys[i] == k:
			return t.vals[i]
		}
	}
}
