package director

import "github.com/golvs/golvs/netio"

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
			dst = append(dst, netio.Match{Proto: sv.Config.Proto, Addr: sv.Config.Addr.As4(), Port: sv.Config.Port})
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
			src = append(src, netio.Match{Proto: proto, Addr: dd.Addr.As4(), Port: port})
		}
	}
	mdst, msrc := d.modeFilter(s)
	return append(dst, mdst...), append(src, msrc...)
}
