package forward

import (
	"encoding/binary"

	"github.com/golvs/golvs/packet"
)

// ICMP errors, as golvs relays and sends them:
//
//	| Ethernet | IPv4 (outer) | type code csum | 4 bytes (unused / MTU) | IPv4 (embedded) | 8+ bytes of its L4 |
//
// An error about a connection golvs forwards is rewritten like the
// connection's own packets, the embedded header included (its L4 checksum
// is left alone, as IPVS leaves it: the embedded segment is truncated and
// no one can verify it), and the ICMP checksum is recomputed over the
// message (errors are small and rare).
const (
	ICMPUnreach     = 3
	ICMPTimeExceed  = 11
	ICMPParamProb   = 12
	ICMPFragNeeded  = 4 // code of ICMPUnreach
	icmpHdrLen      = 8
	fragNeededQuote = 576 - icmpHdrLen - packet.IP4MinLen // RFC 1812: as much as fits 576 bytes
)

// Embedded is the packet quoted by an ICMP error.
type Embedded struct {
	Off          int // offset of the embedded IPv4 header in the frame
	L4           int // offset of its L4 header
	Proto        uint8
	Src, Dst     [4]byte
	SPort, DPort uint16
}

// ParseICMPError reports whether a decoded ICMP frame is an error quoting
// a TCP or UDP packet with at least its ports, and fills e.
func ParseICMPError(frame []byte, p *packet.Parsed, e *Embedded) bool {
	if p.Proto != 1 || p.End-p.L4 < icmpHdrLen+packet.IP4MinLen+8 {
		return false
	}
	switch frame[p.L4] {
	case ICMPUnreach, ICMPTimeExceed, ICMPParamProb, 4:
	default:
		return false
	}
	in := frame[p.L4+icmpHdrLen : p.End]
	ihl := int(in[0]&0xf) * 4
	if in[0]>>4 != 4 || ihl < packet.IP4MinLen || len(in) < ihl+8 {
		return false
	}
	if binary.BigEndian.Uint16(in[6:])&0x1fff != 0 { // not the first fragment: no ports
		return false
	}
	e.Proto = in[9]
	if e.Proto != 6 && e.Proto != 17 {
		return false
	}
	e.Off = p.L4 + icmpHdrLen
	e.L4 = e.Off + ihl
	copy(e.Src[:], in[12:16])
	copy(e.Dst[:], in[16:20])
	e.SPort = binary.BigEndian.Uint16(in[ihl:])
	e.DPort = binary.BigEndian.Uint16(in[ihl+2:])
	return true
}

// RewriteEmbedded sets the embedded packet's addresses and ports (its IP
// header checksum updated) and recomputes the ICMP checksum.
func RewriteEmbedded(frame []byte, p *packet.Parsed, e *Embedded, src [4]byte, sport uint16, dst [4]byte, dport uint16) {
	in := packet.IPv4(frame[e.Off:])
	in.SetSrcWithChecksum(src)
	in.SetDstWithChecksum(dst)
	binary.BigEndian.PutUint16(frame[e.L4:], sport)
	binary.BigEndian.PutUint16(frame[e.L4+2:], dport)
	e.Src, e.Dst, e.SPort, e.DPort = src, dst, sport, dport
	FixICMPChecksum(frame, p)
}

// FixICMPChecksum recomputes the ICMP checksum of a frame from scratch.
func FixICMPChecksum(frame []byte, p *packet.Parsed) {
	m := frame[p.L4:p.End]
	m[2], m[3] = 0, 0
	binary.BigEndian.PutUint16(m[2:], ^packet.Fold(packet.Sum(m, 0)))
}

// SetOuter rewrites the outer addresses of an ICMP frame (no pseudo
// header: only the IP header checksum changes). p is updated.
func SetOuter(frame []byte, p *packet.Parsed, src, dst [4]byte) {
	ip := packet.IPv4(frame[p.L3:])
	ip.SetSrcWithChecksum(src)
	ip.SetDstWithChecksum(dst)
	p.Src, p.Dst = src, dst
}

// BuildFragNeeded writes into buf an Ethernet frame carrying ICMP
// "fragmentation needed" (type 3 code 4) from src to the sender of orig
// (an IPv4 packet), announcing mtu, and quoting orig's header and as much
// of its payload as RFC 1812 allows. It returns the frame length.
func BuildFragNeeded(buf []byte, orig []byte, src [4]byte, mtu uint16, srcMAC, dstMAC [6]byte) int {
	return BuildUnreach(buf, orig, src, ICMPFragNeeded, mtu, srcMAC, dstMAC)
}

// ICMPPortUnreach is the code IPVS answers with when no real server is
// available (spec §1.6).
const ICMPPortUnreach = 3

// BuildUnreach writes an Ethernet frame carrying ICMP destination
// unreachable with code (and, for fragmentation needed, the next-hop MTU)
// from src to the sender of orig (an IPv4 packet), quoting its start, and
// returns the frame's length.
func BuildUnreach(buf []byte, orig []byte, src [4]byte, code uint8, mtu uint16, srcMAC, dstMAC [6]byte) int {
	q := min(len(orig), fragNeededQuote)
	n := packet.EthLen + packet.IP4MinLen + icmpHdrLen + q
	e := packet.Eth(buf)
	e.SetMACs(srcMAC, dstMAC)
	e.SetType(packet.EtherTypeIP4)
	ip := buf[packet.EthLen : packet.EthLen+packet.IP4MinLen]
	ip[0], ip[1] = 0x45, 0xc0 // internetwork control, as the kernel sends errors
	binary.BigEndian.PutUint16(ip[2:], uint16(n-packet.EthLen))
	binary.BigEndian.PutUint16(ip[4:], 0)
	binary.BigEndian.PutUint16(ip[6:], 0)
	ip[8], ip[9] = 64, 1
	ip[10], ip[11] = 0, 0
	copy(ip[12:16], src[:])
	copy(ip[16:20], orig[12:16])
	packet.IPv4(ip).SetChecksum(packet.IPv4(ip).HeaderChecksum())
	m := buf[packet.EthLen+packet.IP4MinLen : n]
	m[0], m[1], m[2], m[3] = ICMPUnreach, code, 0, 0
	binary.BigEndian.PutUint16(m[4:], 0)
	binary.BigEndian.PutUint16(m[6:], mtu)
	copy(m[icmpHdrLen:], orig[:q])
	binary.BigEndian.PutUint16(m[2:], ^packet.Fold(packet.Sum(m, 0)))
	return n
}
