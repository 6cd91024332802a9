package packet

import (
	"encoding/binary"
	"math/bits"
)

// Sum adds b to the ones'-complement running sum s (not folded).
//
// It adds 8 bytes a step, little-endian with the carry chained
// (ADC), and swaps the folded result into network order at the end: a
// ones'-complement sum is the same whichever byte order it is taken in,
// up to that swap (RFC 1071 §2(B)). Bytes are paired from the start of
// b, as RFC 1071 pairs them, so an odd trailing byte is the high byte of
// its word. An IPv4 header without options (the header check is on
// every packet) is five 32-bit adds with no carry chain.
func Sum(b []byte, s uint32) uint32 {
	if len(b) == 20 {
		// An IPv4 header without options: five 32-bit words, whose sum
		// cannot overflow 64 bits, so no carry chain.
		acc := uint64(binary.LittleEndian.Uint32(b)) + uint64(binary.LittleEndian.Uint32(b[4:])) +
			uint64(binary.LittleEndian.Uint32(b[8:])) + uint64(binary.LittleEndian.Uint32(b[12:])) +
			uint64(binary.LittleEndian.Uint32(b[16:]))
		return addSwapped(s, acc)
	}
	var acc, c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[8:]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[16:]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b), c)
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, c = bits.Add64(acc, uint64(binary.LittleEndian.Uint32(b)), c)
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, c = bits.Add64(acc, uint64(binary.LittleEndian.Uint16(b)), c)
		b = b[2:]
	}
	if len(b) == 1 {
		acc, c = bits.Add64(acc, uint64(b[0]), c)
	}
	// End-around carry (a second one only when the first wrapped acc to 0).
	acc, c = bits.Add64(acc, c, 0)
	acc += c
	return addSwapped(s, acc)
}

// HeaderOK reports whether an IPv4 header's checksum verifies: its words
// sum to 0xffff. The sum is read in little-endian words and folded
// without the swap back to network order that Sum does: a one's
// complement sum is the byte swap of itself in the other order (RFC 1071
// §2(B)), and 0xffff swapped is 0xffff.
func HeaderOK(h []byte) bool {
	if len(h) != 20 {
		return Fold(Sum(h, 0)) == 0xffff
	}
	acc := uint64(binary.LittleEndian.Uint32(h)) + uint64(binary.LittleEndian.Uint32(h[4:])) +
		uint64(binary.LittleEndian.Uint32(h[8:])) + uint64(binary.LittleEndian.Uint32(h[12:])) +
		uint64(binary.LittleEndian.Uint32(h[16:]))
	acc = acc&0xffffffff + acc>>32
	acc = acc&0xffffffff + acc>>32
	return Fold(uint32(acc)) == 0xffff
}

// addSwapped folds a little-endian sum to 16 bits, swaps it into network
// order and adds it to the running sum s.
func addSwapped(s uint32, acc uint64) uint32 {
	acc = acc&0xffffffff + acc>>32
	acc = acc&0xffffffff + acc>>32
	f := uint32(Fold(uint32(acc)))
	r := uint64(s) + uint64(f>>8|f&0xff<<8)
	return uint32(r&0xffffffff + r>>32)
}

// Fold folds a 32-bit running sum into 16 bits. Two end-around steps
// always suffice (after the first, s <= 0x1fffe), so it runs without a
// branch.
func Fold(s uint32) uint16 {
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return uint16(s)
}

// Update16 is RFC 1624 eqn. 3: the new checksum HC' of a field changing
// from m to m' is ~(~HC + ~m + m').
func Update16(hc, old, new uint16) uint16 {
	s := uint32(^hc) + uint32(^old) + uint32(new)
	return ^Fold(s)
}

// Update32 is Update16 for a 32-bit field (an IPv4 address).
func Update32(hc uint16, old, new uint32) uint16 {
	s := uint32(^hc) + uint32(^uint16(old>>16)) + uint32(^uint16(old)) + uint32(new>>16) + uint32(uint16(new))
	return ^Fold(s)
}

// UpdateAddrPort is Update32 of an address then Update16 of a port, in
// one fold: a NAT's change to an L4 checksum.
func UpdateAddrPort(hc uint16, oldA, newA uint32, oldP, newP uint16) uint16 {
	s := uint32(^hc) + uint32(^uint16(oldA>>16)) + uint32(^uint16(oldA)) + uint32(newA>>16) + uint32(uint16(newA)) +
		uint32(^oldP) + uint32(newP)
	return ^Fold(s)
}

// UpdatePartial32 updates a partial (offloaded, CHECKSUM_PARTIAL) checksum field
// for a pseudo-header word change. Such a field holds the folded sum of the
// pseudo header, not complemented, and the device completes it later; ports
// and payload are not in it.
func UpdatePartial32(p uint16, old, new uint32) uint16 {
	s := uint32(p) + uint32(^uint16(old>>16)) + uint32(^uint16(old)) + uint32(new>>16) + uint32(uint16(new))
	return Fold(s)
}

// PseudoSum4 is the IPv4 pseudo-header sum for an L4 checksum.
func PseudoSum4(src, dst [4]byte, proto uint8, length int) uint32 {
	s := uint32(binary.BigEndian.Uint16(src[0:])) + uint32(binary.BigEndian.Uint16(src[2:])) +
		uint32(binary.BigEndian.Uint16(dst[0:])) + uint32(binary.BigEndian.Uint16(dst[2:]))
	s += uint32(proto) + uint32(length)
	return s
}

// L4Checksum computes a TCP or UDP checksum from scratch over l4 (with its
// checksum field taken as zero). For UDP a computed 0 is returned as 0xFFFF.
func L4Checksum(src, dst [4]byte, proto uint8, l4 []byte) uint16 {
	off := tcpCsum
	if proto == 17 {
		off = udpCsum
	}
	s := PseudoSum4(src, dst, proto, len(l4))
	s = Sum(l4[:off], s)
	s = Sum(l4[off+2:], s)
	c := ^Fold(s)
	if proto == 17 && c == 0 {
		c = 0xffff
	}
	return c
}
