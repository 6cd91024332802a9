package sched

import (
	"net/netip"

	"github.com/golvs/golvs/ipvs"
)

// goldenRatio32 is the multiplier of the kernel's hash_32 (include/linux/hash.h,
// GOLDEN_RATIO_32). Kernels up to the 4.x era used 2654435761 and kept the
// low bits instead (spec §2.10, §9); golvs follows current kernels.
const goldenRatio32 = 0x61C88647

// hash32 is the kernel's hash_32(v, bits): the top bits of v·φ mod 2³².
func hash32(v uint32, bits uint) uint32 { return (v * goldenRatio32) >> (32 - bits) }

// fold returns the address as the kernel's sh, dh, lblc, lblcr and mh hash
// it: an IPv4 address in host order, an IPv6 address as the XOR of its four
// 32-bit words (each read in network order, which is the same as ntohl of
// the XOR). An invalid address folds to 0.
func fold(a netip.Addr) uint32 {
	if a.Is4() {
		b := a.As4()
		return be32(b[:])
	}
	if !a.IsValid() {
		return 0
	}
	b := a.As16()
	return be32(b[0:4]) ^ be32(b[4:8]) ^ be32(b[8:12]) ^ be32(b[12:16])
}

// foldAs is fold of a dest address the way the kernel folds it: by its
// service's family (ip_vs_mh_permutate hashes dest->addr with svc->af),
// which differs from the dest's only for a tunnel dest of the other
// family. An IPv4 service reads an IPv6 dest's first 32-bit word (the
// union's ip member); an IPv6 service folds an IPv4 dest's address with
// the three zero words behind it, which leaves it as it is.
func foldAs(a netip.Addr, svcV6 bool) uint32 {
	if !svcV6 && a.Is6() {
		b := a.As16()
		return be32(b[0:4])
	}
	return fold(a)
}

func be32(b []byte) uint32 {
	_ = b[3]
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// hashSource returns the address and port that sh and mh hash: the source
// address, or the destination for inverse packets; the port only when
// withPort (sh-port, mh-port) and only for TCP, UDP and SCTP, taken from
// the same side as the address (ip_vs_sh_get_port, ip_vs_mh_get_port).
func hashSource(p *Packet, withPort bool) (addr uint32, port uint16) {
	if p.Inverse {
		addr = fold(p.Dst)
	} else {
		addr = fold(p.Src)
	}
	if withPort {
		switch p.Proto {
		case ipvs.ProtoTCP, ipvs.ProtoUDP, ipvs.ProtoSCTP:
			if p.Inverse {
				port = p.DstPort
			} else {
				port = p.SrcPort
			}
		}
	}
	return addr, port
}

// SipHash constants ("somepseudorandomlygeneratedbytes").
const (
	sipC0 = 0x736f6d6570736575
	sipC1 = 0x646f72616e646f6d
	sipC2 = 0x6c7967656e657261
	sipC3 = 0x7465646279746573
)

func rotl(x uint64, b uint) uint64 { return x<<b | x>>(64-b) }

// hsiphash32 is the kernel's hsiphash() of one u32 on a 64-bit,
// little-endian host: SipHash-1-3 (one compression round, three
// finalisation rounds) of the four bytes of v, truncated to 32 bits. On
// 64-bit kernels hsiphash is SipHash-1-3, not HalfSipHash (lib/siphash.c).
func hsiphash32(v uint32, k0, k1 uint64) uint32 {
	v0 := sipC0 ^ k0
	v1 := sipC1 ^ k1
	v2 := sipC2 ^ k0
	v3 := sipC3 ^ k1
	b := uint64(4)<<56 | uint64(v) // length byte on top, le32 of the message below
	v3 ^= b
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0 ^= b
	v2 ^= 0xff
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	return uint32(v0 ^ v1 ^ v2 ^ v3)
}

func sipRound(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = rotl(v1, 13)
	v1 ^= v0
	v0 = rotl(v0, 32)
	v2 += v3
	v3 = rotl(v3, 16)
	v3 ^= v2
	v0 += v3
	v3 = rotl(v3, 21)
	v3 ^= v0
	v2 += v1
	v1 = rotl(v1, 17)
	v1 ^= v2
	v2 = rotl(v2, 32)
	return v0, v1, v2, v3
}

// gcd of two positive ints.
func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
