package packet

import (
	"math/rand/v2"
	"testing"
)

// refSum is RFC 1071's loop as written there: 16-bit big-endian words
// from the start, an odd last byte padded with a zero byte, the carries
// folded back at the end.
func refSum(b []byte, s uint32) uint16 {
	acc := uint64(s)
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint64(b[i])<<8 | uint64(b[i+1])
	}
	if len(b)%2 == 1 {
		acc += uint64(b[len(b)-1]) << 8
	}
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

// TestHeaderOKModel checks HeaderOK against RFC 1071's loop: a header
// verifies exactly when the loop sums it to 0xffff. Random 20- to
// 60-byte headers with their checksum set right, then with one bit
// flipped, or one 16-bit word swapped with its neighbour's (which a
// one's complement sum cannot see), plus the headers that sum to 0x0000
// (all zeros) and to 0xffff with every carry (all 0xff).
func TestHeaderOKModel(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 20000; round++ {
		n := 20 + 4*r.IntN(11)
		if round%2 == 0 {
			n = 20
		}
		h := make([]byte, n)
		for i := range h {
			h[i] = byte(r.Uint32())
		}
		switch round % 7 {
		case 0:
			clear(h)
		case 1:
			for i := range h {
				h[i] = 0xff
			}
		default:
			h[10], h[11] = 0, 0
			c := ^refSum(h, 0)
			h[10], h[11] = byte(c>>8), byte(c)
			switch round % 7 {
			case 3:
				h[r.IntN(n)] ^= 1 << r.IntN(8)
			case 4:
				i := 2 * r.IntN(n/2-1)
				h[i], h[i+1], h[i+2], h[i+3] = h[i+2], h[i+3], h[i], h[i+1]
			}
		}
		if got, want := HeaderOK(h), refSum(h, 0) == 0xffff; got != want {
			t.Fatalf("round %d, %d bytes % x: HeaderOK %v, RFC 1071 loop says %v", round, n, h, got, want)
		}
	}
}

// TestSumModel checks Sum against refSum on random data of every length
// up to 300 bytes, with random running sums, and on the inputs where
// carries pile up (all 0xff) or the sum is zero, where ones' complement
// has two zeros and a checksum check compares against one of them.
func TestSumModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 300)
	for n := 0; n <= len(buf); n++ {
		for round := 0; round < 20; round++ {
			b := buf[:n]
			switch round {
			case 0:
				clear(b)
			case 1:
				for i := range b {
					b[i] = 0xff
				}
			default:
				for i := range b {
					b[i] = byte(r.Uint32())
				}
			}
			for _, s := range []uint32{0, 0xffff, 0xffffffff, r.Uint32()} {
				if got, want := Fold(Sum(b, s)), refSum(b, s); got != want {
					t.Fatalf("len %d round %d s %#x: Fold(Sum) = %#04x, RFC 1071 loop %#04x", n, round, s, got, want)
				}
			}
		}
	}
	// A valid header sums to 0xffff, never 0x0000: the check in Decode
	// depends on it.
	hdr := []byte{0x45, 0, 0, 0x28, 0, 0, 0x40, 0, 0x40, 6, 0, 0, 198, 18, 0, 1, 198, 19, 0, 2}
	c := ^Fold(Sum(hdr, 0))
	hdr[10], hdr[11] = byte(c>>8), byte(c)
	if got := Fold(Sum(hdr, 0)); got != 0xffff {
		t.Fatalf("a header with its checksum sums to %#04x, want 0xffff", got)
	}
}

// Sum is chained: a sum over two pieces (split at an even offset) is the
// sum over the whole.
func TestSumChained(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, 257)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	for cut := 0; cut <= len(b); cut += 2 {
		if got, want := Fold(Sum(b[cut:], Sum(b[:cut], 0))), Fold(Sum(b, 0)); got != want {
			t.Fatalf("cut %d: %#04x, whole %#04x", cut, got, want)
		}
	}
}

func BenchmarkSumHeader(b *testing.B) {
	hdr := []byte{0x45, 0, 0, 0x28, 0, 0, 0x40, 0, 0x40, 6, 0, 0, 198, 18, 0, 1, 198, 19, 0, 2}
	var s uint16
	for i := 0; i < b.N; i++ {
		s += Fold(Sum(hdr, uint32(i)))
	}
	sink16 = s
}

func BenchmarkSum1500(b *testing.B) {
	buf := make([]byte, 1500)
	b.SetBytes(1500)
	var s uint16
	for i := 0; i < b.N; i++ {
		s += Fold(Sum(buf, uint32(i)))
	}
	sink16 = s
}

var sink16 uint16

// TestFold checks the two-step fold against the loop over every carry
// pattern that matters: the full 32-bit range sampled, and its edges.
func TestFold(t *testing.T) {
	loop := func(s uint32) uint16 {
		for s>>16 != 0 {
			s = s&0xffff + s>>16
		}
		return uint16(s)
	}
	r := rand.New(rand.NewPCG(7, 8))
	for _, s := range []uint32{0, 0xffff, 0x10000, 0x1fffe, 0x1ffff, 0xfffeffff, 0xffff0000, 0xffffffff} {
		if got, want := Fold(s), loop(s); got != want {
			t.Fatalf("Fold(%#x) = %#x, want %#x", s, got, want)
		}
	}
	for range 1 << 20 {
		s := r.Uint32()
		if got, want := Fold(s), loop(s); got != want {
			t.Fatalf("Fold(%#x) = %#x, want %#x", s, got, want)
		}
	}
}

// TestUpdateAddrPort: the combined update equals a full recomputation of
// a TCP checksum after the address and port change (RFC 1624's update is
// only right if it agrees with recomputing).
func TestUpdateAddrPort(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	seg := make([]byte, 40)
	for round := range 20000 {
		for i := range seg {
			seg[i] = byte(r.Uint32())
		}
		var src, dst, nd [4]byte
		for i := range 4 {
			src[i], dst[i], nd[i] = byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())
		}
		if round%7 == 0 {
			nd = dst // no address change
		}
		full := func(d [4]byte) uint16 {
			seg[16], seg[17] = 0, 0
			return ^Fold(Sum(seg, PseudoSum4(src, d, 6, len(seg))))
		}
		c := full(dst)
		oldP := uint16(seg[2])<<8 | uint16(seg[3])
		newP := uint16(r.Uint32())
		seg[2], seg[3] = byte(newP>>8), byte(newP)
		want := full(nd)
		got := UpdateAddrPort(c, uint32(dst[0])<<24|uint32(dst[1])<<16|uint32(dst[2])<<8|uint32(dst[3]),
			uint32(nd[0])<<24|uint32(nd[1])<<16|uint32(nd[2])<<8|uint32(nd[3]), oldP, newP)
		// 0x0000 and 0xffff are the same checksum (ones' complement).
		if got != want && !(got|want == 0xffff && got&want == 0) {
			t.Fatalf("round %d: updated %#04x, recomputed %#04x", round, got, want)
		}
	}
}

// TestDecTTL: after DecTTL the header still checks (sums to 0xffff) and
// its checksum is exactly the recomputed one, over random headers and
// every TTL from 2 to 255.
func TestDecTTL(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	h := make(IPv4, 20)
	edge := 0
	for round := 0; round < 20000 || edge == 0; round++ {
		for i := range h {
			h[i] = byte(r.Uint32())
		}
		h[0] = 0x45
		h[8] = byte(2 + round%254)
		h.SetChecksum(h.HeaderChecksum())
		if h.Checksum() == 0xfeff {
			edge++ // the case an RFC 1141 update without the kernel's carry gets wrong (0xffff)
		} else if round >= 20000 {
			continue
		}
		ttl := h[8]
		h.DecTTL()
		if h[8] != ttl-1 {
			t.Fatalf("TTL %d became %d", ttl, h[8])
		}
		if s := Fold(Sum(h, 0)); s != 0xffff {
			t.Fatalf("round %d: header sums to %#04x after DecTTL, want 0xffff", round, s)
		}
		if got, want := h.Checksum(), h.HeaderChecksum(); got != want {
			t.Fatalf("round %d: checksum %#04x, recomputed %#04x", round, got, want)
		}
	}
}

// TestDecTTLZero: a TTL of 0 (which no caller forwards) is left as it
// is, checksum and all.
func TestDecTTLZero(t *testing.T) {
	h := IPv4{0x45, 0, 0, 0x28, 0, 0, 0x40, 0, 0, 6, 0, 0, 198, 18, 0, 1, 198, 19, 0, 2}
	h.SetChecksum(h.HeaderChecksum())
	before := append(IPv4(nil), h...)
	h.DecTTL()
	if string(h) != string(before) {
		t.Fatalf("DecTTL changed a TTL-0 header: % x, was % x", h, before)
	}
}
