package forward

import (
	"encoding/binary"

	"github.com/golvs/golvs/packet"
)

// Tunnel overheads: what each encapsulation adds in front of the inner IP
// packet.
const (
	IPIPOverhead  = packet.IP4MinLen         // outer IPv4
	GUEOverhead   = packet.IP4MinLen + 8 + 4 // outer IPv4, UDP, GUE header
	IP6IPOverhead = packet.IP6Len            // outer IPv6 (ip6ip6, or IPv4 in IPv6)
	GUE6Overhead  = packet.IP6Len + 8 + 4    // outer IPv6, UDP, GUE header
)

// Outer headers written by Encap, in front of an inner IPv4 or IPv6
// packet already in place (IPVS allows an outer header of the other
// family for tunnel dests, spec §5.3):
//
//	IPIP:  | Ethernet 14 | IPv4 20, proto 4 (IPv4 inside) or 41 (IPv6) | inner ... |
//	GUE:   | Ethernet 14 | IPv4 20, proto 17 | UDP 8 | GUE 4 | inner ... |
//	IPv6:  | Ethernet 14 | IPv6 40, next 41 or 4 | inner ... |   (ip6ip6, 4in6)
//	GUE6:  | Ethernet 14 | IPv6 40, next 17 | UDP 8 | GUE 4 | inner ... |
//
// The GUE header is version 0, C=0, Hlen=0, proto/ctype 4 or 41 (the
// inner family), flags 0 (IPVS's --tun-type gue without remote checksum
// offload).

// Tunnel describes the outer header of one encapsulated frame.
type Tunnel struct {
	Src, Dst       [4]byte  // director address -> real server, outer IPv4
	Src6, Dst6     [16]byte // the same, outer IPv6 (Outer6)
	Outer6         bool
	SrcMAC, DstMAC [6]byte
	ID             uint16 // outer IPv4 ID
	GUE            bool
	SPort, DPort   uint16 // GUE only: flow-hash source port, --tun-port
}

// Overhead returns the bytes the tunnel adds.
func (t *Tunnel) Overhead() int {
	switch {
	case t.Outer6 && t.GUE:
		return GUE6Overhead
	case t.Outer6:
		return IP6IPOverhead
	case t.GUE:
		return GUEOverhead
	}
	return IPIPOverhead
}

// Encap writes the Ethernet and outer headers at the start of frame; the
// inner IPv4 or IPv6 packet, innerLen bytes, must already sit at
// frame[EthLen+t.Overhead():]. The inner packet is not changed at all.
// IPVS copies the inner TOS/traffic class to the outer header, and an
// inner IPv4's DF bit to an outer IPv4 header (an inner IPv6 packet is
// never fragmented on the way: DF set); an outer IPv6 header takes an
// inner IPv6's flow label. The UDP checksum of GUE is 0 (--tun-nocsum,
// IPVS's default, also over IPv6 as RFC 6935 allows for tunnels).
func Encap(frame []byte, innerLen int, t *Tunnel) {
	oh := t.Overhead()
	in := frame[packet.EthLen+oh:]
	inner6 := in[0]>>4 == 6
	var tos uint8
	var df bool
	var label uint32
	proto := uint8(4)
	if inner6 {
		tos, df, label, proto = packet.IPv6(in).TrafficClass(), true, packet.IPv6(in).FlowLabel(), packet.NHIPv6
	} else {
		tos, df = in[1], packet.IPv4(in).DF()
	}
	e := packet.Eth(frame)
	e.SetMACs(t.SrcMAC, t.DstMAC)
	var u []byte
	if t.Outer6 {
		e.SetType(packet.EtherTypeIP6)
		ip := packet.IPv6(frame[packet.EthLen : packet.EthLen+packet.IP6Len])
		binary.BigEndian.PutUint32(ip[0:], 6<<28|uint32(tos)<<20|label)
		ip.SetPayloadLen(innerLen + oh - packet.IP6Len)
		ip[6], ip[7] = proto, 64
		if t.GUE {
			ip[6] = packet.NHUDP
		}
		ip.SetSrc(t.Src6)
		ip.SetDst(t.Dst6)
		u = frame[packet.EthLen+packet.IP6Len:]
	} else {
		e.SetType(packet.EtherTypeIP4)
		ip := frame[packet.EthLen : packet.EthLen+packet.IP4MinLen]
		ip[0], ip[1] = 0x45, tos
		binary.BigEndian.PutUint16(ip[2:], uint16(innerLen+oh))
		binary.BigEndian.PutUint16(ip[4:], t.ID)
		var frag uint16
		if df {
			frag = 0x4000
		}
		binary.BigEndian.PutUint16(ip[6:], frag)
		ip[8] = 64
		ip[9] = proto
		if t.GUE {
			ip[9] = 17
		}
		ip[10], ip[11] = 0, 0
		copy(ip[12:16], t.Src[:])
		copy(ip[16:20], t.Dst[:])
		packet.IPv4(ip).SetChecksum(packet.IPv4(ip).HeaderChecksum())
		u = frame[packet.EthLen+packet.IP4MinLen:]
	}
	if t.GUE {
		binary.BigEndian.PutUint16(u[0:], t.SPort)
		binary.BigEndian.PutUint16(u[2:], t.DPort)
		binary.BigEndian.PutUint16(u[4:], uint16(innerLen+12))
		u[6], u[7] = 0, 0
		u[8], u[9], u[10], u[11] = 0, proto, 0, 0
	}
}

// GUESourcePort derives the outer UDP source port from the inner flow, as
// udp_flow_src_port does: stable per flow, spread over the ephemeral range.
func GUESourcePort(p *packet.Parsed) uint16 {
	var a, b uint32
	if p.Kind == packet.KindIPv6 {
		a, b = fold6(&p.Src6), fold6(&p.Dst6)
	} else {
		a, b = be32(p.Src), be32(p.Dst)
	}
	h := a*0x9e3779b1 ^ b*0x85ebca6b ^ (uint32(p.SPort)<<16|uint32(p.DPort))*0xc2b2ae35 ^ uint32(p.Proto)
	h ^= h >> 16
	return uint16(49152 + h%16384)
}

func fold6(a *[16]byte) uint32 {
	return binary.BigEndian.Uint32(a[0:]) ^ binary.BigEndian.Uint32(a[4:]) ^ binary.BigEndian.Uint32(a[8:]) ^ binary.BigEndian.Uint32(a[12:])
}

// Decap finds the inner IPv4 or IPv6 packet of an IPIP, IPv6-in-IPv4,
// ip6ip6, IPv4-in-IPv6 or GUE packet (ip starts at the outer IPv4 or IPv6
// header; an outer IPv6 header must be followed directly by the tunnel
// payload, as golvs sends it). gueport is the UDP port GUE arrives on (0:
// GUE not accepted). ok is false for anything else or anything malformed.
func Decap(ip []byte, gueport uint16) (inner []byte, ok bool) {
	if len(ip) < packet.IP4MinLen {
		return nil, false
	}
	var pl []byte
	var proto uint8
	switch ip[0] >> 4 {
	case 4:
		ihl := int(ip[0]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(ip[2:]))
		if ihl < packet.IP4MinLen || tot < ihl || tot > len(ip) || packet.IPv4(ip).IsFragment() {
			return nil, false
		}
		pl, proto = ip[ihl:tot], ip[9]
	case 6:
		if len(ip) < packet.IP6Len {
			return nil, false
		}
		tot := packet.IP6Len + packet.IPv6(ip).PayloadLen()
		if tot > len(ip) {
			return nil, false
		}
		pl, proto = ip[packet.IP6Len:tot], ip[6]
	default:
		return nil, false
	}
	switch proto {
	case 4, packet.NHIPv6:
	case 17:
		if gueport == 0 || len(pl) < 12 || binary.BigEndian.Uint16(pl[2:]) != gueport {
			return nil, false
		}
		g := pl[8:]
		// version 0, no control message, IPv4 or IPv6 inside
		if g[0]&0xc0 != 0 || g[0]&0x20 != 0 || g[1] != 4 && g[1] != packet.NHIPv6 {
			return nil, false
		}
		hl := 4 + int(g[0]&0x1f)*4
		if len(g) < hl {
			return nil, false
		}
		pl, proto = g[hl:], g[1]
	default:
		return nil, false
	}
	if proto == 4 {
		if len(pl) < packet.IP4MinLen || pl[0]>>4 != 4 {
			return nil, false
		}
		it := int(binary.BigEndian.Uint16(pl[2:]))
		if it < packet.IP4MinLen || it > len(pl) {
			return nil, false
		}
		return pl[:it], true
	}
	if len(pl) < packet.IP6Len || pl[0]>>4 != 6 {
		return nil, false
	}
	it := packet.IP6Len + packet.IPv6(pl).PayloadLen()
	if it > len(pl) {
		return nil, false
	}
	return pl[:it], true
}

// TCPSegments returns how many segments of at most mss payload bytes a
// TCP/IPv4 packet (ip: from its IPv4 header) splits into.
func TCPSegments(ip []byte, mss int) int {
	ihl := int(ip[0]&0xf) * 4
	doff := int(ip[ihl+12]>>4) * 4
	pl := int(binary.BigEndian.Uint16(ip[2:])) - ihl - doff
	if pl <= 0 || mss <= 0 {
		return 1
	}
	return (pl + mss - 1) / mss
}

// TCPSegment writes segment i of a GSO TCP/IPv4 packet (what TSO would
// send: the headers copied, IP ID and sequence number advanced, FIN and
// PSH only on the last segment, CWR only on the first) into dst and
// returns its length. Checksums are computed in full: a tunnel endpoint
// has no offload state to rely on. golvs segments only where it must
// (a GSO frame into a tunnel, which a virtio header cannot describe).
func TCPSegment(dst, ip []byte, mss, i int) int {
	ihl := int(ip[0]&0xf) * 4
	doff := int(ip[ihl+12]>>4) * 4
	hl := ihl + doff
	pay := ip[hl:binary.BigEndian.Uint16(ip[2:])]
	lo := i * mss
	hi := min(lo+mss, len(pay))
	last := hi == len(pay)
	n := hl + hi - lo
	copy(dst[:hl], ip[:hl])
	copy(dst[hl:n], pay[lo:hi])
	h := packet.IPv4(dst)
	binary.BigEndian.PutUint16(dst[2:], uint16(n))
	binary.BigEndian.PutUint16(dst[4:], binary.BigEndian.Uint16(ip[4:])+uint16(i))
	h.SetChecksum(0)
	h.SetChecksum(h.HeaderChecksum())
	t := dst[ihl:n]
	binary.BigEndian.PutUint32(t[4:], binary.BigEndian.Uint32(t[4:])+uint32(lo))
	if !last {
		t[13] &^= packet.TCPFin | packet.TCPPsh
	}
	if i > 0 {
		t[13] &^= 0x80 // CWR
	}
	binary.BigEndian.PutUint16(t[16:], 0)
	binary.BigEndian.PutUint16(t[16:], packet.L4Checksum(h.Src(), h.Dst(), 6, t))
	return n
}
