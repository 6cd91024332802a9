// Package forward holds golvs's rewriters: the header changes each IPVS
// forwarding method makes to a frame on its way through the director
// (NAT here; DR, TUN and FULLNAT beside it), with checksums updated
// incrementally (RFC 1624).
//
// A rewriter is handed only frames that packet.Decode fully validated and
// rewrites them in place. It never allocates, never fails half-way (every
// check happens before the first byte changes) and never recomputes a
// checksum from scratch on the hot path.
package forward

import (
	"github.com/golvs/golvs/packet"
)

// Csum says what the L4 checksum field of a frame holds.
type Csum uint8

const (
	// CsumFull: the field holds the complete checksum (or 0 for a UDP
	// datagram sent without one).
	CsumFull Csum = iota
	// CsumPartial: the frame came with a checksum offload request
	// (virtio NEEDS_CSUM); the field holds the pseudo-header sum, and
	// the device completes it on transmit. Only pseudo-header changes
	// (addresses) are folded into it; port changes are not.
	CsumPartial
)

// MAC rewrites the Ethernet addresses, as every method does.
func MAC(frame []byte, src, dst [6]byte) {
	packet.Eth(frame).SetMACs(src, dst)
}

// TTLExpired reports whether forwarding the frame would take its TTL to
// zero; a router drops such a packet (and may answer ICMP time exceeded).
func TTLExpired(frame []byte, p *packet.Parsed) bool {
	return packet.IPv4(frame[p.L3:]).TTL() <= 1
}

// DecTTL decrements the TTL as a router does, updating the header checksum.
func DecTTL(frame []byte, p *packet.Parsed) {
	packet.IPv4(frame[p.L3:]).DecTTL()
}

// DNAT rewrites the destination address and port (VIP:vport -> RIP:rport)
// and fixes the IPv4 and L4 checksums. p is updated to the new values.
func DNAT(frame []byte, p *packet.Parsed, dst [4]byte, dport uint16, cs Csum) {
	ip := packet.IPv4(frame[p.L3:])
	l4 := frame[p.L4:p.End]
	oldA := be32(p.Dst)
	newA := be32(dst)
	ip.SetDstWithChecksum(dst)
	fixL4(l4, p.Proto, cs, oldA, newA, p.DPort, dport)
	if p.Proto != 1 {
		packet.L4(l4).SetDstPortRaw(dport)
	}
	p.Dst = dst
	p.DPort = dport
}

// SNAT rewrites the source address and port (RIP:rport -> VIP:vport on a
// NAT reply) and fixes the checksums. p is updated to the new values.
func SNAT(frame []byte, p *packet.Parsed, src [4]byte, sport uint16, cs Csum) {
	ip := packet.IPv4(frame[p.L3:])
	l4 := frame[p.L4:p.End]
	oldA := be32(p.Src)
	newA := be32(src)
	ip.SetSrcWithChecksum(src)
	fixL4(l4, p.Proto, cs, oldA, newA, p.SPort, sport)
	if p.Proto != 1 {
		packet.L4(l4).SetSrcPortRaw(sport)
	}
	p.Src = src
	p.SPort = sport
}

// fixL4 updates the TCP or UDP checksum for an address change (part of the
// pseudo header) and a port change.
func fixL4(l4 []byte, proto uint8, cs Csum, oldA, newA uint32, oldP, newP uint16) {
	var off int
	switch proto {
	case 6:
		off = 16
	case 17:
		off = 6
	default:
		return
	}
	c := uint16(l4[off])<<8 | uint16(l4[off+1])
	if cs == CsumPartial {
		c = packet.UpdatePartial32(c, oldA, newA)
	} else {
		if proto == 17 && c == 0 {
			return // UDP without a checksum stays without one
		}
		c = packet.UpdateAddrPort(c, oldA, newA, oldP, newP)
		if proto == 17 && c == 0 {
			c = 0xffff
		}
	}
	l4[off], l4[off+1] = byte(c>>8), byte(c)
}

func be32(a [4]byte) uint32 {
	return uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
}
