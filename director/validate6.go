package director

import (
	"net/netip"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// IPv6 input validation, as the kernel's ip6_rcv_core and ip6_forward
// check before a packet is routed (validate.go does IPv4), each cause
// counted under the same counters as IPv4's:
//
//   - IPv6 in an Ethernet broadcast or multicast (l2-broadcast,
//     l2-multicast); Neighbour Discovery, which is multicast, is handled
//     before (nd6.go);
//   - martian source (martian-source): unspecified ::, loopback ::1,
//     multicast, IPv4-mapped, link-local (never forwarded off its link),
//     a VIP, a FULLNAT local address or one of the director's addresses;
//     martian destination (martian-dest): the same ranges;
//   - hop limit <= 1 (ttl-expired) where golvs forwards as a router hop
//     (NAT and FULLNAT decrement it; DR and TUN, like IPVS, do not),
//     checked before a connection is created or moved.
//
// Malformed or refused extension-header chains were dropped by
// packet.Decode (bad-ip6-ext).

// addOwn6 records the director's IPv6 addresses.
func (d *Director) addOwn6(addrs []netip.Prefix) {
	for _, p := range addrs {
		if p.Addr().Is6() {
			d.own6 = append(d.own6, p.Addr().As16())
		}
	}
}

// validIPv6 applies the routing checks to a decoded IPv6 frame.
func (w *Worker) validIPv6(f *netio.Frame) bool {
	p := &w.p
	switch f.PktType {
	case netio.PacketBroadcast:
		w.count(CntBroadcast)
		return false
	case netio.PacketMulticast:
		w.count(CntMulticast)
		return false
	}
	if w.martianSrc6(&p.Src6) {
		w.count(CntMartianSrc)
		return false
	}
	if packet.MartianDest6(p.Dst6) {
		w.count(CntMartianDst)
		return false
	}
	return true
}

// martianSrc6 reports an IPv6 source no packet from the wire may have.
func (w *Worker) martianSrc6(a *[16]byte) bool {
	if packet.MartianSource6(*a) || w.isVIPSrc6(a) || w.d.isLocalAddr6(a) {
		return true
	}
	for i := range w.d.own6 {
		if w.d.own6[i] == *a {
			return true
		}
	}
	return false
}

// isVIPSrc6 reports one of the snapshot's IPv6 VIPs (the scan of a few,
// or the map of many, as isVIPSrc).
func (w *Worker) isVIPSrc6(a *[16]byte) bool {
	s := w.snap
	if w.vip6Snap != s {
		w.vip6Snap = s
		w.vip6List = w.vip6List[:0]
		if len(s.vips6) <= maxVIPScan {
			for v := range s.vips6 {
				w.vip6List = append(w.vip6List, v)
			}
		}
	}
	if len(s.vips6) > maxVIPScan {
		return s.vips6[*a]
	}
	for i := range w.vip6List {
		if w.vip6List[i] == *a {
			return true
		}
	}
	return false
}

// hopDrops6 is ttlDrops for IPv6: a client packet with hop limit <= 1 to
// service sv is dropped when its conn (peeked) is NAT or FULLNAT, or it
// has none and the service could give it one.
func (w *Worker) hopDrops6(sv *Service, k *conntrack.Key) bool {
	if w.d.CT.Peek6(k, &w.x6.a6, false, &w.hit) {
		return decrementsTTL(w.hit.Method)
	}
	for _, d := range sv.Dests {
		if decrementsTTL(d.Method()) {
			return true
		}
	}
	return false
}
