package director

import (
	"net/netip"

	"github.com/golvs/golvs/netio"
)

// filterMatches lists what the kernel filter must pass for a snapshot:
// traffic to each service and to the mark rules' destinations, replies
// from each real server on the port it serves, and ICMP errors about any
// conn (to VIPs, mark destinations and local addresses; from real
// servers). TestKernelFilterCoversConfig checks it against the
// configuration over random configurations.
func (d *Director) filterMatches(s *Snapshot) (dst, src []netio.Match) {
	dst = markMatches(s.Marks)
	for _, sv := range s.List {
		if sv.Config.FWMark == 0 {
			dst = append(dst, addrMatch(sv.Config.Proto, sv.Config.Addr, sv.Config.Port))
		}
		for _, dd := range sv.Dests {
			port := dd.Port
			if port == 0 {
				port = sv.Config.Port
			}
			proto := sv.Config.Proto
			if sv.Config.FWMark != 0 {
				proto = 0 // a mark may cover TCP and UDP
			}
			src = append(src, addrMatch(proto, dd.Addr, port))
		}
	}
	mdst, msrc := d.modeFilter(s)
	return append(dst, mdst...), append(src, msrc...)
}

// addrMatch is a filter entry for one address of either family.
func addrMatch(proto uint8, a netip.Addr, port uint16) netio.Match {
	if a.Is6() {
		return netio.Match{Proto: proto, V6: true, Addr6: a.As16(), Port: port}
	}
	return netio.Match{Proto: proto, Addr: a.As4(), Port: port}
}
