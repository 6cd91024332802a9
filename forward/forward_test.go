package forward

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/golvs/golvs/packet"
)

// randomFrame builds a valid Ethernet/IPv4/TCP-or-UDP frame with random
// addresses, ports, options and payload, and correct checksums (computed
// from scratch: the slow oracle).
func randomFrame(r *rand.Rand, proto uint8, udpNoCsum bool) []byte {
	ihl := 20
	if r.IntN(4) == 0 {
		ihl += 4 * (1 + r.IntN(10)) // IP options
	}
	l4h := 8
	if proto == 6 {
		l4h = 20 + 4*r.IntN(11)
	}
	pay := r.IntN(1400)
	b := make([]byte, 14+ihl+l4h+pay)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	binary.BigEndian.PutUint16(b[12:], packet.EtherTypeIP4)
	ip := b[14:]
	// Options Decode accepts: an unknown 4-byte option (random data)
	// then NOPs.
	for i := 20; i < ihl; i++ {
		ip[i] = 1
	}
	if ihl > 20 {
		ip[20], ip[21] = 30, 4
	}
	ip[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(ip[2:], uint16(ihl+l4h+pay))
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF, no fragment
	ip[8] = byte(2 + r.IntN(250))
	ip[9] = proto
	l4 := ip[ihl:]
	if proto == 6 {
		l4[12] = byte(l4h/4) << 4
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(l4h+pay))
	}
	fullChecksums(b, ihl, proto, udpNoCsum)
	return b
}

func fullChecksums(b []byte, ihl int, proto uint8, udpNoCsum bool) {
	ip := packet.IPv4(b[14:])
	ip.SetChecksum(0)
	ip.SetChecksum(ip.HeaderChecksum())
	tot := ip.TotalLen()
	l4 := b[14+ihl : 14+tot]
	off := 16
	if proto == 17 {
		off = 6
	}
	binary.BigEndian.PutUint16(l4[off:], 0)
	if proto == 17 && udpNoCsum {
		return
	}
	binary.BigEndian.PutUint16(l4[off:], packet.L4Checksum(ip.Src(), ip.Dst(), proto, l4))
}

func checksumsOf(b []byte, p *packet.Parsed) (ipc, l4c uint16) {
	ipc = packet.IPv4(b[p.L3:]).Checksum()
	off := 16
	if p.Proto == 17 {
		off = 6
	}
	l4c = binary.BigEndian.Uint16(b[p.L4+off:])
	return
}

// TestIncrementalMatchesFullRecompute rewrites thousands of fixed-seed
// random packets with DNAT, SNAT and TTL decrement and compares every
// checksum with a recompute from scratch.
func TestIncrementalMatchesFullRecompute(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5000; i++ {
		proto := uint8(6)
		if i%2 == 1 {
			proto = 17
		}
		noCsum := proto == 17 && i%10 == 1
		b := randomFrame(r, proto, noCsum)
		var p packet.Parsed
		packet.Decode(b, &p)
		if p.Kind != packet.KindIPv4 {
			t.Fatalf("case %d: random frame did not decode: %v", i, p.Reason)
		}
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], r.Uint32())
		port := uint16(r.Uint32())
		if i%3 == 0 {
			SNAT(b, &p, a, port, CsumFull)
		} else {
			DNAT(b, &p, a, port, CsumFull)
		}
		DecTTL(b, &p)
		gotIP, gotL4 := checksumsOf(b, &p)
		ref := append([]byte(nil), b...)
		fullChecksums(ref, p.L4-p.L3, proto, noCsum)
		wantIP, wantL4 := checksumsOf(ref, &p)
		if gotIP != wantIP {
			t.Fatalf("case %d: IPv4 checksum %#04x, full recompute %#04x", i, gotIP, wantIP)
		}
		if noCsum {
			if gotL4 != 0 {
				t.Fatalf("case %d: UDP without checksum got checksum %#04x", i, gotL4)
			}
			continue
		}
		// 0x0000 and 0xFFFF are the same ones'-complement value for TCP;
		// UDP must never carry 0 (it means "no checksum").
		if gotL4 != wantL4 && !(proto == 6 && gotL4^wantL4 == 0xffff) {
			t.Fatalf("case %d proto %d: L4 checksum %#04x, full recompute %#04x", i, proto, gotL4, wantL4)
		}
		if proto == 17 && gotL4 == 0 {
			t.Fatalf("case %d: UDP checksum rewritten to 0", i)
		}
	}
}

// TestUDPComputedZeroBecomesFFFF finds a rewrite whose checksum comes out
// as zero and checks it is sent as 0xFFFF.
func TestUDPComputedZeroBecomesFFFF(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	b := randomFrame(r, 17, false)
	var p packet.Parsed
	packet.Decode(b, &p)
	_, c := checksumsOf(b, &p)
	// Choose a destination address that makes the new sum exactly 0xFFFF
	// (checksum 0): change the low 16 bits of the address by ~c.
	old := p.Dst
	oldLow := binary.BigEndian.Uint16(old[2:])
	// new checksum = ~(~c + ~oldLow + newLow) = 0  <=>  ~c + ~oldLow + newLow = 0xffff
	s := uint32(^c) + uint32(^oldLow)
	s = s&0xffff + s>>16
	newLow := uint16(0xffff - s)
	a := old
	binary.BigEndian.PutUint16(a[2:], newLow)
	DNAT(b, &p, a, p.DPort, CsumFull)
	_, got := checksumsOf(b, &p)
	if got != 0xffff {
		t.Fatalf("checksum %#04x, want 0xFFFF for a computed zero", got)
	}
}

// TestPartialChecksum: an offloaded checksum holds the pseudo-header sum;
// after the rewrite it must equal the pseudo-header sum of the new header,
// so the device's completion comes out right. Ports are not in it.
func TestPartialChecksum(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 1000; i++ {
		proto := uint8(6 + 11*(i%2))
		b := randomFrame(r, proto, false)
		var p packet.Parsed
		packet.Decode(b, &p)
		off := 16
		if proto == 17 {
			off = 6
		}
		l4len := p.End - p.L4
		binary.BigEndian.PutUint16(b[p.L4+off:], packet.Fold(packet.PseudoSum4(p.Src, p.Dst, proto, l4len)))
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], r.Uint32())
		DNAT(b, &p, a, uint16(r.Uint32()), CsumPartial)
		got := binary.BigEndian.Uint16(b[p.L4+off:])
		want := packet.Fold(packet.PseudoSum4(p.Src, a, proto, l4len))
		if got != want && got^want != 0xffff {
			t.Fatalf("case %d: partial checksum %#04x, want %#04x", i, got, want)
		}
	}
}

func BenchmarkNAT(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	f := randomFrame(r, 6, false)
	var p packet.Parsed
	packet.Decode(f, &p)
	a := [4]byte{198, 19, 0, 11}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		DNAT(f, &p, a, 8080, CsumFull)
		DecTTL(f, &p)
		f[14+8] = 64
	}
}

// FuzzRewrite: any frame the decoder accepts can be rewritten both ways
// without a panic, and the header checksum stays valid.
func FuzzRewrite(f *testing.F) {
	r := rand.New(rand.NewPCG(9, 9))
	f.Add(randomFrame(r, 6, false))
	f.Add(randomFrame(r, 17, true))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p packet.Parsed
		packet.Decode(b, &p)
		if p.Kind != packet.KindIPv4 {
			return
		}
		ip := packet.IPv4(b[p.L3:])
		valid := ip.HeaderChecksum() == ip.Checksum()
		DNAT(b, &p, [4]byte{198, 19, 0, 11}, 8080, CsumFull)
		SNAT(b, &p, [4]byte{198, 18, 0, 100}, 80, CsumPartial)
		if !TTLExpired(b, &p) {
			DecTTL(b, &p)
		}
		if valid && ip.HeaderChecksum() != ip.Checksum() && ip.HeaderChecksum()^ip.Checksum() != 0xffff {
			t.Fatalf("header checksum broken by rewrite")
		}
	})
}
