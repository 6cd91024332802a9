package packet

import "encoding/binary"

// Sum adds b to the ones'-complement running sum s (not folded).
func Sum(b []byte, s uint32) uint32 {
	n := len(b)
	i := 0
	var acc uint64 = uint64(s)
	for ; i+8 <= n; i += 8 {
		acc += uint64(binary.BigEndian.Uint32(b[i:])) + uint64(binary.BigEndian.Uint32(b[i+4:]))
	}
	for ; i+2 <= n; i += 2 {
		acc += uint64(binary.BigEndian.Uint16(b[i:]))
	}
	if i < n {
		acc += uint64(b[i]) << 8
	}
	for acc>>32 != 0 {
		acc = acc&0xffffffff + acc>>32
	}
	return uint32(acc)
}

// Fold folds a 32-bit running sum into 16 bits.
func Fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
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
