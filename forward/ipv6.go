package forward

import (
	"encoding/binary"

	"github.com/golvs/golvs/packet"
)

// The IPv6 rewriters. IPv6 has no header checksum: an address change
// touches only the L4 checksum, through the pseudo header (RFC 8200 8.1),
// and the hop limit is decremented without one. TCP, UDP and ICMPv6 all
// cover the pseudo header. A UDP checksum of 0 is not allowed over IPv6
// (RFC 8200 8.1); IPVS's udp_dnat_handler/udp_snat_handler compute a
// full checksum for such a datagram, and so does golvs (rare: no IPv6
// stack sends one).

// HopLimitExpired reports whether forwarding the IPv6 frame would take
// its hop limit to zero.
func HopLimitExpired(frame []byte, p *packet.Parsed) bool {
	return packet.IPv6(frame[p.L3:]).HopLimit() <= 1
}

// DecHopLimit decrements the hop limit as a router does.
func DecHopLimit(frame []byte, p *packet.Parsed) {
	packet.IPv6(frame[p.L3:]).DecHopLimit()
}

// DNAT6 rewrites the destination address and port of an IPv6 frame
// (VIP:vport -> RIP:rport) and fixes the L4 checksum. p is updated.
func DNAT6(frame []byte, p *packet.Parsed, dst [16]byte, dport uint16, cs Csum) {
	old := p.Dst6
	packet.IPv6(frame[p.L3:]).SetDst(dst)
	p.Dst6 = dst
	fixL46(frame, p, cs, &old, &dst, p.DPort, dport, 2)
	p.DPort = dport
}

// SNAT6 rewrites the source address and port of an IPv6 frame (RIP:rport
// -> VIP:vport on a NAT reply) and fixes the L4 checksum. p is updated.
func SNAT6(frame []byte, p *packet.Parsed, src [16]byte, sport uint16, cs Csum) {
	old := p.Src6
	packet.IPv6(frame[p.L3:]).SetSrc(src)
	p.Src6 = src
	fixL46(frame, p, cs, &old, &src, p.SPort, sport, 0)
	p.SPort = sport
}

// FullNATIn6 is FullNATIn for IPv6: CIP:cport -> LIP:lport as source,
// VIP:vport -> RIP:rport as destination.
func FullNATIn6(frame []byte, p *packet.Parsed, lip [16]byte, lport uint16, rip [16]byte, rport uint16, cs Csum) {
	SNAT6(frame, p, lip, lport, cs)
	DNAT6(frame, p, rip, rport, cs)
}

// FullNATOut6 reverses FullNATIn6 on a reply.
func FullNATOut6(frame []byte, p *packet.Parsed, vip [16]byte, vport uint16, cip [16]byte, cport uint16, cs Csum) {
	SNAT6(frame, p, vip, vport, cs)
	DNAT6(frame, p, cip, cport, cs)
}

// l4CsumOff is the offset of the checksum field in a TCP, UDP or ICMPv6
// header (-1: none golvs rewrites).
func l4CsumOff(proto uint8) int {
	switch proto {
	case packet.NHTCP:
		return 16
	case packet.NHUDP:
		return 6
	case packet.NHICMPv6:
		return 2
	}
	return -1
}

// fixL46 updates the L4 checksum for an address change (old -> new in the
// pseudo header) and a port change, and writes the new port at portOff (0
// source, 2 destination; ICMPv6 has none).
func fixL46(frame []byte, p *packet.Parsed, cs Csum, old, new *[16]byte, oldP, newP uint16, portOff int) {
	l4 := frame[p.L4:p.End]
	off := l4CsumOff(p.Proto)
	if off < 0 {
		return
	}
	if p.Proto != packet.NHICMPv6 {
		binary.BigEndian.PutUint16(l4[portOff:], newP)
	}
	c := binary.BigEndian.Uint16(l4[off:])
	switch {
	case cs == CsumPartial:
		// The pseudo-header sum only: ports are not in it.
		c = packet.UpdatePartial128(c, old, new)
	case p.Proto == packet.NHUDP && c == 0:
		// Not allowed over IPv6: computed in full, as IPVS does.
		u := l4[:binary.BigEndian.Uint16(l4[4:])]
		c = packet.L4Checksum6(&p.Src6, &p.Dst6, packet.NHUDP, u)
	default:
		c = packet.Update128(c, old, new)
		if p.Proto != packet.NHICMPv6 {
			c = packet.Update16(c, oldP, newP)
		}
		if p.Proto == packet.NHUDP && c == 0 {
			c = 0xffff
		}
	}
	binary.BigEndian.PutUint16(l4[off:], c)
}

// TOA for IPv6 (spec §5.5: Alibaba's IPv6 variant, as the toa modules of
// its descendants read it):
//
//	0      1      2        4                         20
//	| 253  |  20  | cport  | client IPv6 address     |
//
// (DPVS writes kind 254 with length 20 for the same payload; golvs follows
// the spec.)
const (
	TOA6Kind = 253
	TOA6Len  = 20
)

// TOA6Fits reports whether a TOA6 option can go into this IPv6 packet: a
// TCP SYN without ACK whose options grow to at most 40 bytes and whose
// packet stays within mtu.
func TOA6Fits(frame []byte, p *packet.Parsed, mtu int) bool {
	if p.Proto != packet.NHTCP || p.Flags&(packet.TCPSyn|packet.TCPAck) != packet.TCPSyn {
		return false
	}
	doff := int(frame[p.L4+12]>>4) * 4
	return doff+TOA6Len <= 60 && p.End-p.L3+TOA6Len <= mtu
}

// InsertTOA6 is InsertTOA for IPv6: buf holds TOA6Len free bytes and then
// the frame p describes; the headers in front of the option move
// TOA6Len bytes towards the start. The payload length, data offset and
// TCP checksum are fixed (no IP header checksum in IPv6). The caller
// checked TOA6Fits.
func InsertTOA6(buf []byte, p *packet.Parsed, cip [16]byte, cport uint16, cs Csum) {
	fixed := p.L4 + packet.TCPMinLen
	copy(buf[:fixed], buf[TOA6Len:TOA6Len+fixed])
	opt := buf[fixed : fixed+TOA6Len]
	opt[0], opt[1] = TOA6Kind, TOA6Len
	binary.BigEndian.PutUint16(opt[2:], cport)
	copy(opt[4:], cip[:])
	ip := packet.IPv6(buf[p.L3:])
	ip.SetPayloadLen(ip.PayloadLen() + TOA6Len)
	tcp := buf[p.L4:]
	oldW := binary.BigEndian.Uint16(tcp[12:])
	newW := oldW + uint16(TOA6Len/4)<<12
	binary.BigEndian.PutUint16(tcp[12:], newW)
	c := binary.BigEndian.Uint16(tcp[16:])
	oldL := uint16(p.End - p.L4) // the upper-layer length in the pseudo header
	if cs == CsumPartial {
		c = packet.Fold(uint32(c) + TOA6Len)
	} else {
		c = packet.Update16(c, oldW, newW)
		c = packet.Update16(c, oldL, oldL+TOA6Len)
		for i := 0; i < TOA6Len; i += 2 {
			c = packet.Update16(c, 0, binary.BigEndian.Uint16(opt[i:]))
		}
	}
	binary.BigEndian.PutUint16(tcp[16:], c)
	p.End += TOA6Len
}

// FindTOA6 returns the client address of an IPv6 TOA option in a TCP
// header, as a real server's toa module reads it.
func FindTOA6(tcp []byte) (cip [16]byte, cport uint16, ok bool) {
	if len(tcp) < packet.TCPMinLen {
		return
	}
	doff := int(tcp[12]>>4) * 4
	if doff > len(tcp) || doff < packet.TCPMinLen {
		return
	}
	o := tcp[packet.TCPMinLen:doff]
	for len(o) > 0 {
		switch o[0] {
		case 0:
			return
		case 1:
			o = o[1:]
			continue
		}
		if len(o) < 2 || int(o[1]) < 2 || int(o[1]) > len(o) {
			return
		}
		if o[0] == TOA6Kind && o[1] == TOA6Len {
			copy(cip[:], o[4:20])
			return cip, binary.BigEndian.Uint16(o[2:]), true
		}
		o = o[o[1]:]
	}
	return
}

// TCPSegments6 returns how many segments of at most mss payload bytes a
// TCP/IPv6 packet (ip: from its IPv6 header; l4 the offset of its TCP
// header in ip) splits into.
func TCPSegments6(ip []byte, l4, mss int) int {
	doff := int(ip[l4+12]>>4) * 4
	pl := packet.IP6Len + packet.IPv6(ip).PayloadLen() - l4 - doff
	if pl <= 0 || mss <= 0 {
		return 1
	}
	return (pl + mss - 1) / mss
}

// TCPSegment6 is TCPSegment for IPv6: segment i of a GSO TCP/IPv6 packet
// (its extension headers copied into each), checksum computed in full.
func TCPSegment6(dst, ip []byte, l4, mss, i int) int {
	doff := int(ip[l4+12]>>4) * 4
	hl := l4 + doff
	pay := ip[hl : packet.IP6Len+packet.IPv6(ip).PayloadLen()]
	lo := i * mss
	hi := min(lo+mss, len(pay))
	last := hi == len(pay)
	n := hl + hi - lo
	copy(dst[:hl], ip[:hl])
	copy(dst[hl:n], pay[lo:hi])
	packet.IPv6(dst).SetPayloadLen(n - packet.IP6Len)
	t := dst[l4:n]
	binary.BigEndian.PutUint32(t[4:], binary.BigEndian.Uint32(t[4:])+uint32(lo))
	if !last {
		t[13] &^= packet.TCPFin | packet.TCPPsh
	}
	if i > 0 {
		t[13] &^= 0x80 // CWR
	}
	src, d := packet.IPv6(dst).Src(), packet.IPv6(dst).Dst()
	binary.BigEndian.PutUint16(t[16:], 0)
	binary.BigEndian.PutUint16(t[16:], packet.L4Checksum6(&src, &d, packet.NHTCP, t))
	return n
}
