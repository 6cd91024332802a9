package forward

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/golvs/golvs/packet"
)

// TestFullNATAndTOAMatchFullRecompute rewrites fixed-seed random packets
// both ways with FULLNAT, inserts TOA into TCP SYNs with room for it, and
// compares every checksum with a recompute from scratch.
func TestFullNATAndTOAMatchFullRecompute(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var p packet.Parsed
	for i := 0; i < 5000; i++ {
		proto := uint8(6)
		if i%3 == 2 {
			proto = 17
		}
		b := randomFrame(r, proto, false)
		if proto == 6 {
			b[14+int(b[14]&0xf)*4+13] = packet.TCPSyn
			fullChecksums(b, int(b[14]&0xf)*4, proto, false)
		}
		packet.Decode(b, &p)
		if p.Kind != packet.KindIPv4 {
			t.Fatalf("frame %d does not decode: %v", i, p.Reason)
		}
		FullNATIn(b, &p, [4]byte{198, 19, 0, 200}, 5000+uint16(i), [4]byte{198, 19, 0, 11}, 8080, CsumFull)
		if proto == 6 && TOAFits(b, &p, 1500) {
			buf := make([]byte, TOALen+len(b))
			copy(buf[TOALen:], b)
			InsertTOA(buf, &p, [4]byte{198, 18, 0, 10}, 40000, CsumFull)
			b = buf[:p.End]
			c, port, ok := FindTOA(b[p.L4:])
			if !ok || c != [4]byte{198, 18, 0, 10} || port != 40000 {
				t.Fatalf("frame %d: TOA not found after insert", i)
			}
		}
		want := append([]byte(nil), b...)
		fullChecksums(want, p.L4-p.L3, proto, false)
		gi, gl := checksumsOf(b, &p)
		wi, wl := checksumsOf(want, &p)
		if gi != wi || gl != wl {
			t.Fatalf("frame %d: checksums ip %#x l4 %#x, recomputed %#x %#x", i, gi, gl, wi, wl)
		}
	}
}

func TestEncapDecapRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 1000; i++ {
		b := randomFrame(r, 6, false)
		var p packet.Parsed
		packet.Decode(b, &p)
		inner := b[p.L3:p.End]
		for _, gue := range []bool{false, true} {
			tn := Tunnel{Src: [4]byte{198, 19, 0, 1}, Dst: [4]byte{198, 19, 1, 11}, ID: uint16(i), GUE: gue, SPort: GUESourcePort(&p), DPort: 6080}
			out := make([]byte, packet.EthLen+tn.Overhead()+len(inner))
			copy(out[packet.EthLen+tn.Overhead():], inner)
			Encap(out, len(inner), &tn)
			oh := packet.IPv4(out[packet.EthLen:])
			if oh.HeaderChecksum() != oh.Checksum() {
				t.Fatalf("outer header checksum")
			}
			if oh.DF() != packet.IPv4(inner).DF() {
				t.Fatalf("DF not copied")
			}
			got, ok := Decap(out[packet.EthLen:], 6080)
			if !ok || string(got) != string(inner) {
				t.Fatalf("round trip (gue %v) lost the inner packet", gue)
			}
		}
	}
}

func TestBuildFragNeeded(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	b := randomFrame(r, 6, false)
	var p packet.Parsed
	packet.Decode(b, &p)
	buf := make([]byte, 700)
	n := BuildFragNeeded(buf, b[p.L3:p.End], [4]byte{198, 18, 0, 1}, 1480, [6]byte{2}, [6]byte{4})
	var q packet.Parsed
	packet.Decode(buf[:n], &q)
	if q.Kind != packet.KindIPv4 || q.Proto != 1 || q.Dst != p.Src {
		t.Fatalf("frag-needed does not decode or goes to %v", q.Dst)
	}
	if packet.Fold(packet.Sum(buf[q.L4:q.End], 0)) != 0xffff {
		t.Fatalf("bad ICMP checksum")
	}
	if binary.BigEndian.Uint16(buf[q.L4+6:]) != 1480 {
		t.Fatalf("MTU field")
	}
	var e Embedded
	if !ParseICMPError(buf[:n], &q, &e) || e.Src != p.Src || e.SPort != p.SPort {
		t.Fatalf("quoted packet not found")
	}
}

func BenchmarkRewriters(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	f := randomFrame(r, 6, false)
	var p packet.Parsed
	packet.Decode(f, &p)
	orig := append([]byte(nil), f...)
	b.Run("dr", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			DR(f, [6]byte{1}, [6]byte{2})
		}
	})
	b.Run("tun-ipip", func(b *testing.B) {
		out := make([]byte, packet.EthLen+GUEOverhead+len(f))
		inner := f[p.L3:p.End]
		tn := Tunnel{Src: [4]byte{1, 2, 3, 4}, Dst: [4]byte{5, 6, 7, 8}}
		copy(out[packet.EthLen+IPIPOverhead:], inner)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			Encap(out, len(inner), &tn)
		}
	})
	b.Run("tun-gue", func(b *testing.B) {
		out := make([]byte, packet.EthLen+GUEOverhead+len(f))
		inner := f[p.L3:p.End]
		tn := Tunnel{Src: [4]byte{1, 2, 3, 4}, Dst: [4]byte{5, 6, 7, 8}, GUE: true, DPort: 6080}
		copy(out[packet.EthLen+GUEOverhead:], inner)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			tn.SPort = GUESourcePort(&p)
			Encap(out, len(inner), &tn)
		}
	})
	b.Run("fullnat-in", func(b *testing.B) {
		b.ReportAllocs()
		q := p
		for i := 0; i < b.N; i++ {
			FullNATIn(f, &q, [4]byte{198, 19, 0, 200}, 5000, [4]byte{198, 19, 0, 11}, 80, CsumFull)
		}
	})
	b.Run("toa-insert", func(b *testing.B) {
		buf := make([]byte, TOALen+len(orig))
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			copy(buf[TOALen:], orig)
			q := p
			InsertTOA(buf, &q, [4]byte{198, 18, 0, 10}, 40000, CsumFull)
		}
	})
}
