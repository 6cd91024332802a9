package forward

import (
	"encoding/binary"

	"github.com/golvs/golvs/packet"
)

// Tunnel overheads: what each encapsulation adds in front of the inner IP
// packet.
const (
	IPIPOverhead = packet.IP4MinLen         // outer IPv4
	GUEOverhead  = packet.IP4MinLen + 8 + 4 // outer IPv4, UDP, GUE header
)

// Outer headers written by EncapIPIP and EncapGUE, in front of an inner
// IPv4 packet already in place:
//
//	IPIP:  | Ethernet 14 | IPv4 20, proto 4  | inner IPv4 ... |
//	GUE:   | Ethernet 14 | IPv4 20, proto 17 | UDP 8 | GUE 4 | inner IPv4 ... |
//
// The GUE header is version 0, C=0, Hlen=0, proto/ctype 4 (IPv4 inside),
// flags 0 (IPVS's --tun-type gue without remote checksum offload).

// Tunnel describes the outer header of one encapsulated frame.
type Tunnel struct {
	Src, Dst       [4]byte // director address -> real server
	SrcMAC, DstMAC [6]byte
	ID             uint16 // outer IP ID
	GUE            bool
	SPort, DPort   uint16 // GUE only: flow-hash source port, --tun-port
}

// Overhead returns the bytes the tunnel adds.
func (t *Tunnel) Overhead() int {
	if t.GUE {
		return GUEOverhead
	}
	return IPIPOverhead
}

// Encap writes the Ethernet and outer headers at the start of frame; the
// inner IPv4 packet, innerLen bytes, must already sit at
// frame[EthLen+t.Overhead():]. The inner packet is not changed at all
// (IPVS copies its TOS and DF bit to the outer header). The UDP checksum of
// GUE is 0 (--tun-nocsum, IPVS's default).
func Encap(frame []byte, innerLen int, t *Tunnel) {
	oh := t.Overhead()
	inner := packet.IPv4(frame[packet.EthLen+oh:])
	tos, df := inner[1], inner.DF()
	e := packet.Eth(frame)
	e.SetMACs(t.SrcMAC, t.DstMAC)
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
	ip[9] = 4
	if t.GUE {
		ip[9] = 17
	}
	ip[10], ip[11] = 0, 0
	copy(ip[12:16], t.Src[:])
	copy(ip[16:20], t.Dst[:])
	packet.IPv4(ip).SetChecksum(packet.IPv4(ip).HeaderChecksum())
	if t.GUE {
		u := frame[packet.EthLen+packet.IP4MinLen:]
		binary.BigEndian.PutUint16(u[0:], t.SPort)
		binary.BigEndian.PutUint16(u[2:], t.DPort)
		binary.BigEndian.PutUint16(u[4:], uint16(innerLen+12))
		u[6], u[7] = 0, 0
		u[8], u[9], u[10], u[11] = 0, 4, 0, 0
	}
}

// GUESourcePort derives the outer UDP source port from the inner flow, as
// udp_flow_src_port does: stable per flow, spread over the ephemeral range.
func GUESourcePort(p *packet.Parsed) uint16 {
	h := be32(p.Src)*0x9e3779b1 ^ be32(p.Dst)*0x85ebca6b ^ (uint32(p.SPort)<<16|uint32(p.DPort))*0xc2b2ae35 ^ uint32(p.Proto)
	h ^= h >> 16
	return uint16(49152 + h%16384)
}

// Decap finds the inner IPv4 packet of an IPIP or GUE packet (ip starts at
// the outer IPv4 header). gueport is the UDP port GUE arrives on (0: GUE
// not accepted). ok is false for anything else or anything malformed.
func Decap(ip []byte, gueport uint16) (inner []byte, ok bool) {
	if len(ip) < packet.IP4MinLen || ip[0]>>4 != 4 {
		return nil, false
	}
	ihl := int(ip[0]&0xf) * 4
	tot := int(binary.BigEndian.Uint16(ip[2:]))
	if ihl < packet.IP4MinLen || tot < ihl || tot > len(ip) || packet.IPv4(ip).IsFragment() {
		return nil, false
	}
	pl := ip[ihl:tot]
	switch ip[9] {
	case 4:
	case 17:
		if gueport == 0 || len(pl) < 12 || binary.BigEndian.Uint16(pl[2:]) != gueport {
			return nil, false
		}
		g := pl[8:]
		// version 0, no control message, no extension fields, IPv4 inside
		if g[0]&0xc0 != 0 || g[0]&0x20 != 0 || g[1] != 4 {
			return nil, false
		}
		hl := 4 + int(g[0]&0x1f)*4
		if len(g) < hl {
			return nil, false
		}
		pl = g[hl:]
	default:
		return nil, false
	}
	if len(pl) < packet.IP4MinLen || pl[0]>>4 != 4 {
		return nil, false
	}
	it := int(binary.BigEndian.Uint16(pl[2:]))
	if it < packet.IP4MinLen || it > len(pl) {
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
