package forward

import (
	"encoding/binary"

	"github.com/golvs/golvs/packet"
)

// ICMPv6 errors (RFC 4443), as golvs relays and sends them:
//
//	| Ethernet | IPv6 (outer) | type code csum | 4 bytes (unused / MTU / pointer) | IPv6 (quoted) | its extension headers | 8+ bytes of its L4 |
//
// As for ICMP, an error about a connection golvs forwards is rewritten
// like the connection's packets, the quoted header included (the quoted
// L4 checksum left alone), and the ICMPv6 checksum, which covers the
// outer pseudo header, is recomputed over the message.

// Embedded6 is the packet quoted by an ICMPv6 error.
type Embedded6 struct {
	Off          int // offset of the quoted IPv6 header in the frame
	L4           int // offset of its L4 header
	Proto        uint8
	Src, Dst     [16]byte
	SPort, DPort uint16
}

// icmp6MinQuote is the quoted packet's least: its IPv6 header and 8 bytes.
const icmp6MinQuote = packet.IP6Len + 8

// ParseICMPv6Error reports whether a decoded ICMPv6 frame is an error
// (destination unreachable, packet too big, time exceeded, parameter
// problem) quoting a TCP or UDP packet with its ports, and fills e. The
// quoted extension headers are walked as the quoted packet's own would
// be (the quote may be cut short); an error quoting a fragment other
// than the first is ignored, as current kernels do (spec 2026 D12).
func ParseICMPv6Error(frame []byte, p *packet.Parsed, e *Embedded6) bool {
	if p.Proto != packet.NHICMPv6 || p.End-p.L4 < icmpHdrLen+icmp6MinQuote {
		return false
	}
	switch frame[p.L4] {
	case packet.ICMPv6DestUnreach, packet.ICMPv6PacketTooBig, packet.ICMPv6TimeExceeded, packet.ICMPv6ParamProblem:
	default:
		return false
	}
	in := frame[p.L4+icmpHdrLen : p.End]
	if in[0]>>4 != 6 {
		return false
	}
	nh, off := in[6], packet.IP6Len
	for i := 0; ; i++ {
		if i > packet.MaxExtHeaders {
			return false
		}
		switch nh {
		case packet.NHHopByHop, packet.NHDestOpts, packet.NHRouting:
			if off+8 > len(in) {
				return false
			}
			nh, off = in[off], off+(int(in[off+1])+1)*8
			continue
		case packet.NHFragment:
			if off+packet.FragHLen > len(in) || binary.BigEndian.Uint16(in[off+2:])&^7 != 0 {
				return false // not the first fragment: no ports
			}
			nh, off = in[off], off+packet.FragHLen
			continue
		case packet.NHTCP, packet.NHUDP:
		default:
			return false
		}
		break
	}
	if off+8 > len(in) {
		return false
	}
	e.Proto = nh
	e.Off = p.L4 + icmpHdrLen
	e.L4 = e.Off + off
	copy(e.Src[:], in[8:24])
	copy(e.Dst[:], in[24:40])
	e.SPort = binary.BigEndian.Uint16(in[off:])
	e.DPort = binary.BigEndian.Uint16(in[off+2:])
	return true
}

// ICMPv6ChecksumOK reports whether a decoded ICMPv6 message's checksum is
// right (current IPVS drops NAT-related ICMPv6 errors whose checksum is
// wrong, spec 2026 D11).
func ICMPv6ChecksumOK(frame []byte, p *packet.Parsed) bool {
	m := frame[p.L4:p.End]
	return packet.Fold(packet.Sum(m, packet.PseudoSum6(&p.Src6, &p.Dst6, packet.NHICMPv6, len(m)))) == 0xffff
}

// RewriteEmbedded6 sets the quoted packet's addresses and ports and
// recomputes the ICMPv6 checksum (over the outer addresses p holds).
func RewriteEmbedded6(frame []byte, p *packet.Parsed, e *Embedded6, src [16]byte, sport uint16, dst [16]byte, dport uint16) {
	in := packet.IPv6(frame[e.Off:])
	in.SetSrc(src)
	in.SetDst(dst)
	binary.BigEndian.PutUint16(frame[e.L4:], sport)
	binary.BigEndian.PutUint16(frame[e.L4+2:], dport)
	e.Src, e.Dst, e.SPort, e.DPort = src, dst, sport, dport
	FixICMPv6Checksum(frame, p)
}

// FixICMPv6Checksum recomputes an ICMPv6 checksum from scratch.
func FixICMPv6Checksum(frame []byte, p *packet.Parsed) {
	m := frame[p.L4:p.End]
	m[2], m[3] = 0, 0
	binary.BigEndian.PutUint16(m[2:], ^packet.Fold(packet.Sum(m, packet.PseudoSum6(&p.Src6, &p.Dst6, packet.NHICMPv6, len(m)))))
}

// SetOuter6 rewrites the outer addresses of an ICMPv6 frame (the caller
// then recomputes the checksum, RewriteEmbedded6 does). p is updated.
func SetOuter6(frame []byte, p *packet.Parsed, src, dst [16]byte) {
	ip := packet.IPv6(frame[p.L3:])
	ip.SetSrc(src)
	ip.SetDst(dst)
	p.Src6, p.Dst6 = src, dst
}

// MinMTU6 is IPv6's minimum link MTU (RFC 8200 5): every link carries
// 1280 bytes, a Packet Too Big never announces less, and an ICMPv6 error
// quotes as much of the packet as fits in it.
const MinMTU6 = 1280

// ICMPv6ErrorMax is the longest frame BuildICMPv6Error writes.
const ICMPv6ErrorMax = packet.EthLen + MinMTU6

// BuildICMPv6Error writes into buf (at least ICMPv6ErrorMax bytes) an
// Ethernet frame carrying an ICMPv6 error of typ/code with its 4-byte
// parameter (the MTU of a Packet Too Big, the pointer of a parameter
// problem) from src to the sender of orig (an IPv6 packet), quoting as
// much of orig as keeps the message within the minimum MTU (RFC 4443
// 2.4), and returns the frame's length.
func BuildICMPv6Error(buf []byte, orig []byte, src [16]byte, typ, code uint8, param uint32, srcMAC, dstMAC [6]byte) int {
	q := min(len(orig), MinMTU6-packet.IP6Len-icmpHdrLen)
	n := packet.EthLen + packet.IP6Len + icmpHdrLen + q
	e := packet.Eth(buf)
	e.SetMACs(srcMAC, dstMAC)
	e.SetType(packet.EtherTypeIP6)
	ip := packet.IPv6(buf[packet.EthLen : packet.EthLen+packet.IP6Len])
	binary.BigEndian.PutUint32(ip[0:], 6<<28)
	ip.SetPayloadLen(icmpHdrLen + q)
	ip[6], ip[7] = packet.NHICMPv6, 64
	dst := packet.IPv6(orig).Src()
	ip.SetSrc(src)
	ip.SetDst(dst)
	m := buf[packet.EthLen+packet.IP6Len : n]
	m[0], m[1], m[2], m[3] = typ, code, 0, 0
	binary.BigEndian.PutUint32(m[4:], param)
	copy(m[icmpHdrLen:], orig[:q])
	binary.BigEndian.PutUint16(m[2:], ^packet.Fold(packet.Sum(m, packet.PseudoSum6(&src, &dst, packet.NHICMPv6, len(m)))))
	return n
}

// ICMPv6 codes golvs sends.
const (
	ICMPv6PortUnreach = 4 // destination unreachable: port unreachable (IPVS's ip_vs_leave, spec §1.6)
)
