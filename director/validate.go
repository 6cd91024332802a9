package director

import (
	"net/netip"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// Input validation: what the kernel's receive path checks before a packet
// is routed (netif_receive_skb, ip_rcv_core, ip_route_input_slow,
// ip_forward), golvs checks before it looks anything up, so a frame a
// router drops never creates state and never leaves. In order, each cause
// counted:
//
//   - truncated by the ring (truncated-frame);
//   - 802.1Q-tagged with a VLAN ID (vlan): it belongs to a VLAN device
//     golvs does not serve, and veth and most NICs strip the tag, so
//     forwarding it would move it to the untagged network. A VID-0
//     priority tag is the untagged network's, as in the kernel;
//   - addressed to another host's MAC (other-host: the kernel's
//     PACKET_OTHERHOST, seen in promiscuous mode or on veth);
//   - undecodable headers, bad header checksum or options (packet.Decode's
//     reasons);
//   - IPv4 in an Ethernet broadcast or multicast (l2-broadcast,
//     l2-multicast: ip_forward forwards only PACKET_HOST, and IPVS ignores
//     the rest); ARP requests are broadcasts and go on;
//   - martian source (0/8, 127/8, 224/4, 255.255.255.255, a VIP, a FULLNAT
//     local address, one of the director's addresses or its links'
//     broadcast addresses) or destination (0/8, 127/8, 224/4,
//     255.255.255.255);
//   - TTL expiry (ttl-expired) where golvs forwards as a router hop
//     (NAT and FULLNAT decrement the TTL; DR and TUN, like IPVS, do not),
//     checked before a connection is created or moved.

// addOwn records the director's addresses and their subnets' broadcast
// addresses (the kernel's RTN_LOCAL and RTN_BROADCAST routes).
func (d *Director) addOwn(addrs []netip.Prefix) {
	for _, p := range addrs {
		if !p.Addr().Is4() {
			continue
		}
		a := p.Addr().As4()
		d.own = append(d.own, a)
		if p.Bits() < 31 {
			n := be32(a) | ^uint32(0)>>p.Bits()
			d.own = append(d.own, [4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
		}
	}
}

// martianSrc reports a source address no packet from the wire may have.
func (w *Worker) martianSrc(a [4]byte) bool {
	if packet.MartianSource(a) || w.isVIPSrc(a) || w.d.isLocalAddr(a) {
		return true
	}
	for _, o := range w.d.own {
		if o == a {
			return true
		}
	}
	return false
}

// isVIPSrc reports one of the snapshot's VIPs. A few VIPs are compared
// from a slice the worker rebuilds when the snapshot changes (a scan of a
// handful costs less than hashing the address per packet); many are
// looked up in the snapshot's map.
func (w *Worker) isVIPSrc(a [4]byte) bool {
	if w.vipSnap != w.snap {
		w.vipSnap = w.snap
		w.vipList = w.vipList[:0]
		if len(w.snap.vips) <= maxVIPScan {
			for v := range w.snap.vips {
				w.vipList = append(w.vipList, v)
			}
		}
	}
	if len(w.snap.vips) > maxVIPScan {
		return w.snap.vips[a]
	}
	for _, v := range w.vipList {
		if v == a {
			return true
		}
	}
	return false
}

const maxVIPScan = 16

// validL2 applies the frame-level checks, before decoding.
func (w *Worker) validL2(f *netio.Frame) bool {
	if f.VLANValid && f.VLANTCI&0xfff != 0 {
		w.count(CntVLAN)
		return false
	}
	if f.PktType == netio.PacketOtherHost {
		w.count(CntOtherHost)
		return false
	}
	return true
}

// validIPv4 applies the routing checks to a decoded IPv4 frame.
func (w *Worker) validIPv4(f *netio.Frame) bool {
	p := &w.p
	switch f.PktType {
	case netio.PacketBroadcast:
		w.count(CntBroadcast)
		return false
	case netio.PacketMulticast:
		w.count(CntMulticast)
		return false
	}
	if w.martianSrc(p.Src) {
		w.count(CntMartianSrc)
		return false
	}
	if packet.MartianDest(p.Dst) {
		w.count(CntMartianDst)
		return false
	}
	return true
}

// ttlDrops reports, for a client packet with TTL <= 1 to service sv, that
// golvs must drop it as expired: its conn (peeked, not moved) is a NAT or
// FULLNAT one, or it has none and the service could give it one. A
// service whose real servers are all DR or TUN forwards it, as IPVS does.
func (w *Worker) ttlDrops(sv *Service, k *conntrack.Key) bool {
	if w.d.CT.Peek(k, false, &w.hit) {
		return decrementsTTL(w.hit.Method)
	}
	for _, d := range sv.Dests {
		if decrementsTTL(d.Method()) {
			return true
		}
	}
	return false
}

func decrementsTTL(m ipvs.Method) bool {
	return m == ipvs.MethodMasq || m == ipvs.MethodFullNAT
}
