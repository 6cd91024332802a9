package forward

import (
	"encoding/binary"

	"github.com/golvs/golvs/packet"
)

// FullNATIn rewrites a client's packet for FULLNAT (spec §5.5): the source
// CIP:cport becomes a local address LIP:lport of the director, and the
// destination VIP:vport becomes RIP:rport, so the real server answers the
// director whatever its routes. p is updated to the new values.
func FullNATIn(frame []byte, p *packet.Parsed, lip [4]byte, lport uint16, rip [4]byte, rport uint16, cs Csum) {
	SNAT(frame, p, lip, lport, cs)
	DNAT(frame, p, rip, rport, cs)
}

// FullNATOut reverses FullNATIn on a reply: RIP:rport -> VIP:vport as
// source, LIP:lport -> CIP:cport as destination.
func FullNATOut(frame []byte, p *packet.Parsed, vip [4]byte, vport uint16, cip [4]byte, cport uint16, cs Csum) {
	SNAT(frame, p, vip, vport, cs)
	DNAT(frame, p, cip, cport, cs)
}

// TOA, the client address as a TCP option (Alibaba LVS, spec §5.5):
//
//	0      1      2        4                8
//	| 254  |  8   | cport  | client IPv4     |
const (
	TOAKind = 254
	TOALen  = 8
)

// TOAFits reports whether a TOA option can go into this packet: a TCP SYN
// (without ACK), whose options grow to at most 40 bytes, and whose IP
// packet stays within mtu.
func TOAFits(frame []byte, p *packet.Parsed, mtu int) bool {
	if p.Proto != 6 || p.Flags&(packet.TCPSyn|packet.TCPAck) != packet.TCPSyn {
		return false
	}
	doff := int(frame[p.L4+12]>>4) * 4
	return doff+TOALen <= 60 && p.End-p.L3+TOALen <= mtu
}

// InsertTOA puts a TOA option carrying cip:cport right after the fixed TCP
// header. buf holds TOALen free bytes and then the frame that p describes
// (so p's offsets are relative to buf[TOALen:]); the headers in front of
// the option move TOALen bytes towards the start, so payload never moves.
// After it returns the frame is buf[:p.End] (p.End grew by TOALen), with
// lengths, data offset and checksums fixed. The caller checked TOAFits.
func InsertTOA(buf []byte, p *packet.Parsed, cip [4]byte, cport uint16, cs Csum) {
	fixed := p.L4 + packet.TCPMinLen
	copy(buf[:fixed], buf[TOALen:TOALen+fixed])
	opt := buf[fixed : fixed+TOALen]
	opt[0], opt[1] = TOAKind, TOALen
	binary.BigEndian.PutUint16(opt[2:], cport)
	copy(opt[4:], cip[:])

	ip := packet.IPv4(buf[p.L3:])
	oldTot := uint16(ip.TotalLen())
	newTot := oldTot + TOALen
	binary.BigEndian.PutUint16(ip[2:], newTot)
	ip.SetChecksum(packet.Update16(ip.Checksum(), oldTot, newTot))

	tcp := buf[p.L4:]
	oldW := binary.BigEndian.Uint16(tcp[12:])
	newW := oldW + uint16(TOALen/4)<<12
	binary.BigEndian.PutUint16(tcp[12:], newW)
	c := binary.BigEndian.Uint16(tcp[16:])
	oldL := oldTot - uint16(p.L4-p.L3)
	if cs == CsumPartial {
		// The field holds the pseudo-header sum: only the length changed.
		c = packet.Fold(uint32(c) + TOALen)
	} else {
		c = packet.Update16(c, oldW, newW)
		c = packet.Update16(c, oldL, oldL+TOALen)
		for i := 0; i < TOALen; i += 2 {
			c = packet.Update16(c, 0, binary.BigEndian.Uint16(opt[i:]))
		}
	}
	binary.BigEndian.PutUint16(tcp[16:], c)
	p.End += TOALen
}

// FindTOA returns the client address of a TOA option in a TCP header, as a
// real server's toa module reads it.
func FindTOA(tcp []byte) (cip [4]byte, cport uint16, ok bool) {
	if len(tcp) < packet.TCPMinLen {
		return
	}
	doff := int(tcp[12]>>4) * 4
	if doff > len(tcp) {
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
		if o[0] == TOAKind && o[1] == TOALen {
			copy(cip[:], o[4:8])
			return cip, binary.BigEndian.Uint16(o[2:]), true
		}
		o = o[o[1]:]
	}
	return
}
