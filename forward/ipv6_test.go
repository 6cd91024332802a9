package forward

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/golvs/golvs/packet"
)

func rand16(r *rand.Rand) (a [16]byte) {
	for i := range a {
		a[i] = byte(r.Uint32())
	}
	a[0] = 0x20 // global unicast
	return
}

// randomFrame6 builds a valid Ethernet/IPv6/TCP-or-UDP frame with random
// addresses, ports, extension headers (destination options, a routing
// header with no segments left, an atomic fragment) and payload, and its
// checksum computed from scratch (the slow oracle).
func randomFrame6(r *rand.Rand, proto uint8, payload int) []byte {
	var exts [][]byte
	if r.IntN(3) == 0 {
		n := 1 + r.IntN(3)
		for i := 0; i < n; i++ {
			var h []byte
			switch r.IntN(3) {
			case 0: // destination options: a PadN, or an option to skip
				l := 8 * (1 + r.IntN(2))
				h = make([]byte, l)
				h[1] = byte(l/8 - 1)
				h[2], h[3] = 1, byte(l-4)
				if l > 8 {
					h[2] = 0x1e
				}
			case 1: // routing, no segments left
				h = make([]byte, 8)
				h[2] = 4
			default: // atomic fragment
				h = make([]byte, 8)
				binary.BigEndian.PutUint32(h[4:], r.Uint32())
				exts = append(exts, h)
				continue
			}
			exts = append(exts, h)
		}
	}
	l4h := 8
	if proto == packet.NHTCP {
		l4h = 20 + 4*r.IntN(11)
	}
	if payload < 0 {
		payload = r.IntN(1400)
	}
	ext := 0
	for _, h := range exts {
		ext += len(h)
	}
	b := make([]byte, packet.EthLen+packet.IP6Len+ext+l4h+payload)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	binary.BigEndian.PutUint16(b[12:], packet.EtherTypeIP6)
	ip := b[packet.EthLen:]
	ip[0] = 0x60 | ip[0]&0xf
	packet.IPv6(ip).SetPayloadLen(ext + l4h + payload)
	ip[7] = byte(2 + r.IntN(250))
	src, dst := rand16(r), rand16(r)
	packet.IPv6(ip).SetSrc(src)
	packet.IPv6(ip).SetDst(dst)
	kinds := map[int]uint8{}
	off := packet.IP6Len
	prev := 6
	for _, h := range exts {
		k := uint8(packet.NHDestOpts)
		switch {
		case len(h) == 8 && h[2] == 4:
			k = packet.NHRouting
		case len(h) == 8 && h[1] == 0 && h[2] == 0:
			k = packet.NHFragment
		}
		kinds[off] = k
		ip[prev] = k
		copy(ip[off:], h)
		prev = off
		off += len(h)
	}
	ip[prev] = proto
	l4 := ip[off:]
	if proto == packet.NHTCP {
		l4[12] = byte(l4h/4) << 4
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(l4h+payload))
	}
	full6(b)
	return b
}

// full6 recomputes a decoded IPv6 frame's L4 checksum from scratch.
func full6(b []byte) {
	var p packet.Parsed
	packet.Decode(b, &p)
	if p.Kind != packet.KindIPv6 {
		panic("full6: frame does not decode: " + p.Reason.String())
	}
	off := l4CsumOff(p.Proto)
	l4 := b[p.L4:p.End]
	binary.BigEndian.PutUint16(l4[off:], 0)
	binary.BigEndian.PutUint16(l4[off:], packet.L4Checksum6(&p.Src6, &p.Dst6, p.Proto, l4))
}

func l4csum6(b []byte, p *packet.Parsed) uint16 {
	return binary.BigEndian.Uint16(b[p.L4+l4CsumOff(p.Proto):])
}

// TestIncrementalMatchesFullRecompute6 rewrites thousands of fixed-seed
// random IPv6 packets (with extension headers) with DNAT6, SNAT6, FULLNAT
// both ways and hop-limit decrement, and compares the L4 checksum with a
// recompute from scratch; UDP datagrams sent with checksum 0 come out
// with a full one.
func TestIncrementalMatchesFullRecompute6(t *testing.T) {
	r := rand.New(rand.NewPCG(61, 62))
	for i := 0; i < 6000; i++ {
		proto := uint8(packet.NHTCP)
		if i%2 == 1 {
			proto = packet.NHUDP
		}
		b := randomFrame6(r, proto, -1)
		zero := proto == packet.NHUDP && i%10 == 1
		var p packet.Parsed
		packet.Decode(b, &p)
		if p.Kind != packet.KindIPv6 {
			t.Fatalf("case %d: random frame did not decode: %v", i, p.Reason)
		}
		if zero {
			binary.BigEndian.PutUint16(b[p.L4+6:], 0)
		}
		a, a2 := rand16(r), rand16(r)
		port, port2 := uint16(r.Uint32()), uint16(r.Uint32())
		switch i % 4 {
		case 0:
			SNAT6(b, &p, a, port, CsumFull)
		case 1:
			DNAT6(b, &p, a, port, CsumFull)
		case 2:
			FullNATIn6(b, &p, a, port, a2, port2, CsumFull)
		case 3:
			FullNATOut6(b, &p, a, port, a2, port2, CsumFull)
		}
		DecHopLimit(b, &p)
		got := l4csum6(b, &p)
		ref := append([]byte(nil), b...)
		full6(ref)
		want := l4csum6(ref, &p)
		if got != want && !(proto == packet.NHTCP && got^want == 0xffff) {
			t.Fatalf("case %d proto %d: checksum %#04x, full recompute %#04x", i, proto, got, want)
		}
		if proto == packet.NHUDP && got == 0 {
			t.Fatalf("case %d: UDP checksum 0 over IPv6", i)
		}
		var q packet.Parsed
		packet.Decode(b, &q)
		if q.Src6 != p.Src6 || q.Dst6 != p.Dst6 || q.SPort != p.SPort || q.DPort != p.DPort {
			t.Fatalf("case %d: Parsed not updated with the rewrite", i)
		}
	}
}

// TestPartialChecksum6: an offloaded checksum must equal the new pseudo-
// header sum after an address change.
func TestPartialChecksum6(t *testing.T) {
	r := rand.New(rand.NewPCG(63, 64))
	for i := 0; i < 1000; i++ {
		proto := uint8(packet.NHTCP + 11*(i%2))
		b := randomFrame6(r, proto, -1)
		var p packet.Parsed
		packet.Decode(b, &p)
		l4len := p.End - p.L4
		off := l4CsumOff(proto)
		binary.BigEndian.PutUint16(b[p.L4+off:], packet.Fold(packet.PseudoSum6(&p.Src6, &p.Dst6, proto, l4len)))
		a := rand16(r)
		DNAT6(b, &p, a, uint16(r.Uint32()), CsumPartial)
		got := binary.BigEndian.Uint16(b[p.L4+off:])
		want := packet.Fold(packet.PseudoSum6(&p.Src6, &a, proto, l4len))
		if got != want && got^want != 0xffff {
			t.Fatalf("case %d: partial checksum %#04x, want %#04x", i, got, want)
		}
	}
}

func TestTOA6(t *testing.T) {
	r := rand.New(rand.NewPCG(65, 66))
	cip := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 15: 0x10}
	inserted := 0
	for i := 0; i < 3000; i++ {
		b := randomFrame6(r, packet.NHTCP, -1)
		var p packet.Parsed
		packet.Decode(b, &p)
		b[p.L4+13] = packet.TCPSyn
		// options Decode and FindTOA6 walk: NOPs
		for j := p.L4 + 20; j < p.L4+int(b[p.L4+12]>>4)*4; j++ {
			b[j] = 1
		}
		full6(b)
		packet.Decode(b, &p)
		if !TOA6Fits(b, &p, 1500) {
			continue
		}
		inserted++
		buf := make([]byte, TOA6Len+len(b))
		copy(buf[TOA6Len:], b)
		InsertTOA6(buf, &p, cip, 40000, CsumFull)
		out := buf[:p.End]
		var q packet.Parsed
		packet.Decode(out, &q)
		if q.Kind != packet.KindIPv6 || q.End != len(out) {
			t.Fatalf("frame %d: after TOA6 it does not decode (%s)", i, q.Reason)
		}
		c, port, ok := FindTOA6(out[q.L4:])
		if !ok || c != cip || port != 40000 {
			t.Fatalf("frame %d: TOA6 not found after insert", i)
		}
		want := append([]byte(nil), out...)
		full6(want)
		if g, w := l4csum6(out, &q), l4csum6(want, &q); g != w && g^w != 0xffff {
			t.Fatalf("frame %d: checksum %#04x, recomputed %#04x", i, g, w)
		}
	}
	if inserted < 1000 {
		t.Fatalf("only %d frames had room for TOA6", inserted)
	}
}

// TestEncapDecapRoundTrip6: every family pairing IPVS allows for tunnel
// dests (IPv4 or IPv6 inside IPv4 or IPv6, plain or GUE) decapsulates to
// the untouched inner packet, and gopacket reads the outer headers.
func TestEncapDecapRoundTrip6(t *testing.T) {
	r := rand.New(rand.NewPCG(67, 68))
	for i := 0; i < 400; i++ {
		var b []byte
		if i%2 == 0 {
			b = randomFrame6(r, packet.NHTCP, -1)
		} else {
			b = randomFrame(r, 6, false)
		}
		var p packet.Parsed
		packet.Decode(b, &p)
		inner := b[p.L3:p.End]
		for _, outer6 := range []bool{false, true} {
			for _, gue := range []bool{false, true} {
				tn := Tunnel{Src: [4]byte{198, 19, 0, 1}, Dst: [4]byte{198, 19, 1, 11}, Src6: rand16(r), Dst6: rand16(r), Outer6: outer6, GUE: gue, SPort: GUESourcePort(&p), DPort: 6080}
				out := make([]byte, packet.EthLen+tn.Overhead()+len(inner))
				copy(out[packet.EthLen+tn.Overhead():], inner)
				Encap(out, len(inner), &tn)
				got, ok := Decap(out[packet.EthLen:], 6080)
				if !ok || !bytes.Equal(got, inner) {
					t.Fatalf("case %d (outer6 %v gue %v): round trip lost the inner packet", i, outer6, gue)
				}
				pk := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
				if outer6 {
					o, ok := pk.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
					if !ok || !bytes.Equal(o.SrcIP, tn.Src6[:]) || int(o.Length) != len(out)-packet.EthLen-packet.IP6Len {
						t.Fatalf("case %d: outer IPv6 header wrong: %v", i, pk)
					}
				} else if o, ok := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4); !ok || int(o.Length) != len(out)-packet.EthLen {
					t.Fatalf("case %d: outer IPv4 header wrong", i)
				} else if inner[0]>>4 == 6 && (o.Protocol != 41 && !gue || o.Flags&layers.IPv4DontFragment == 0) {
					t.Fatalf("case %d: IPv6 in IPv4: proto %d flags %v", i, o.Protocol, o.Flags)
				}
			}
		}
	}
}

// TestTCPSegment6: the segments of a GSO TCP/IPv6 packet carry its
// payload in order, each with a correct checksum.
func TestTCPSegment6(t *testing.T) {
	r := rand.New(rand.NewPCG(69, 70))
	b := randomFrame6(r, packet.NHTCP, 9000)
	var p packet.Parsed
	packet.Decode(b, &p)
	ip := b[p.L3:p.End]
	l4 := p.L4 - p.L3
	mss := 1400
	n := TCPSegments6(ip, l4, mss)
	doff := int(ip[l4+12]>>4) * 4
	var got []byte
	for i := 0; i < n; i++ {
		seg := make([]byte, packet.EthLen+l4+doff+mss)
		copy(seg, b[:packet.EthLen])
		m := TCPSegment6(seg[packet.EthLen:], ip, l4, mss, i)
		var q packet.Parsed
		packet.Decode(seg[:packet.EthLen+m], &q)
		if q.Kind != packet.KindIPv6 {
			t.Fatalf("segment %d does not decode: %s", i, q.Reason)
		}
		ref := append([]byte(nil), seg[:packet.EthLen+m]...)
		full6(ref)
		if l4csum6(ref, &q) != l4csum6(seg, &q) {
			t.Fatalf("segment %d: bad checksum", i)
		}
		got = append(got, seg[q.L4+doff:q.End]...)
	}
	if !bytes.Equal(got, ip[l4+doff:]) {
		t.Fatalf("segments do not carry the payload")
	}
}

// fragmentsOf cuts an IPv6 frame into fragments of at most mtu bytes
// with Fragment6 (each an Ethernet frame).
func fragmentsOf(b []byte, p *packet.Parsed, mtu int, id uint32) [][]byte {
	ip := b[p.L3:p.End]
	hlen, prev := packet.IP6Len, 6
	var out [][]byte
	for i, n := 0, Fragments6(ip, hlen, mtu); i < n; i++ {
		f := make([]byte, packet.EthLen+mtu)
		copy(f, b[:packet.EthLen])
		m := Fragment6(f[packet.EthLen:], ip, hlen, prev, mtu, i, id)
		out = append(out, f[:packet.EthLen+m])
	}
	return out
}

// TestFragment6Reassembles: datagrams cut with Fragment6 at random MTUs,
// their fragments shuffled (some twice), come out of Reassembler6 exactly
// as they went in, with the largest fragment's size recorded; gopacket's
// own IPv6 defragmenter agrees with the fragments.
func TestFragment6Reassembles(t *testing.T) {
	r := rand.New(rand.NewPCG(71, 72))
	ra := NewReassembler6(ReasmConfig{})
	now := time.Now()
	for i := 0; i < 300; i++ {
		b := randomFrame6(r, packet.NHUDP, 1600+r.IntN(8000))
		var p packet.Parsed
		packet.Decode(b, &p)
		mtu := 1280 + r.IntN(300)
		frags := fragmentsOf(b, &p, mtu, uint32(i))
		if len(frags) < 2 {
			t.Fatalf("case %d: %d fragments", i, len(frags))
		}
		maxLen := 0
		for _, f := range frags {
			if len(f)-packet.EthLen > mtu {
				t.Fatalf("case %d: fragment of %d bytes over %d", i, len(f)-packet.EthLen, mtu)
			}
			maxLen = max(maxLen, len(f)-packet.EthLen)
		}
		if i%5 == 0 {
			frags = append(frags, frags[r.IntN(len(frags))]) // a duplicate
		}
		r.Shuffle(len(frags), func(a, b int) { frags[a], frags[b] = frags[b], frags[a] })
		var got *Datagram
		for j, f := range frags {
			var q packet.Parsed
			packet.Decode(f, &q)
			if q.Reason != packet.ReasonFragment {
				t.Fatalf("case %d: fragment %d decodes as %s", i, j, q.Reason)
			}
			g, st := ra.Add(f, &q, 2, now)
			switch st {
			case ReasmComplete:
				if got != nil {
					t.Fatalf("case %d: completed twice", i)
				}
				got = g
			case ReasmHeld, ReasmDup:
			default:
				t.Fatalf("case %d: fragment %d: status %d", i, j, st)
			}
		}
		if got == nil {
			t.Fatalf("case %d: never completed", i)
		}
		out := make([]byte, got.Len())
		got.WriteTo(out)
		if !bytes.Equal(out[packet.EthLen:], b[packet.EthLen:p.End]) {
			t.Fatalf("case %d: reassembled datagram differs", i)
		}
		if got.MaxFrag != maxLen || got.HLen != packet.IP6Len || got.Prev != 6 {
			t.Fatalf("case %d: max fragment %d (want %d), hlen %d prev %d", i, got.MaxFrag, maxLen, got.HLen, got.Prev)
		}
		ra.Free(got)
	}
	// Duplicates that came after their datagram was whole start queues
	// of their own, which time out.
	ra.Expire(now.Add(DefaultReasmTimeout))
	if st := ra.Stats(); st.Queues != 0 || st.Bytes != 0 || st.Reassembled != 300 {
		t.Fatalf("left %+v", st)
	}
}

// TestReassembler6Refuses: overlaps drop the datagram (RFC 5722), bad
// lengths and a first fragment without its TCP header are refused,
// unfinished datagrams expire, and memory stays bounded under a flood of
// datagrams that never complete.
func TestReassembler6Refuses(t *testing.T) {
	r := rand.New(rand.NewPCG(73, 74))
	now := time.Now()
	b := randomFrame6(r, packet.NHUDP, 4000)
	var p packet.Parsed
	packet.Decode(b, &p)
	frags := fragmentsOf(b, &p, 1280, 7)
	dec := func(f []byte) *packet.Parsed {
		var q packet.Parsed
		packet.Decode(f, &q)
		return &q
	}
	t.Run("overlap", func(t *testing.T) {
		ra := NewReassembler6(ReasmConfig{})
		ra.Add(frags[0], dec(frags[0]), 2, now)
		o := append([]byte(nil), frags[1]...)
		q := dec(o)
		binary.BigEndian.PutUint16(o[q.FragHdr+2:], uint16(q.FragOff-8)|1) // 8 bytes into the first
		if _, st := ra.Add(o, dec(o), 2, now); st != ReasmOverlap {
			t.Fatalf("overlap: status %d", st)
		}
		if st := ra.Stats(); st.Queues != 0 || st.Bytes != 0 {
			t.Fatalf("overlapped datagram kept: %+v", st)
		}
	})
	t.Run("not a multiple of 8", func(t *testing.T) {
		ra := NewReassembler6(ReasmConfig{})
		o := append([]byte(nil), frags[0][:len(frags[0])-3]...)
		packet.IPv6(o[packet.EthLen:]).SetPayloadLen(len(o) - packet.EthLen - packet.IP6Len)
		if _, st := ra.Add(o, dec(o), 2, now); st != ReasmBad {
			t.Fatalf("status %d", st)
		}
	})
	t.Run("first without its tcp header", func(t *testing.T) {
		ra := NewReassembler6(ReasmConfig{})
		tb := randomFrame6(r, packet.NHTCP, 2000)
		var tp packet.Parsed
		packet.Decode(tb, &tp)
		f := fragmentsOf(tb, &tp, 1280, 9)[0]
		q := dec(f)
		// cut the first fragment to 8 bytes of TCP header
		short := append([]byte(nil), f[:q.FragHdr+packet.FragHLen+8]...)
		packet.IPv6(short[packet.EthLen:]).SetPayloadLen(len(short) - packet.EthLen - packet.IP6Len)
		if _, st := ra.Add(short, dec(short), 2, now); st != ReasmBad {
			t.Fatalf("status %d", st)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		ra := NewReassembler6(ReasmConfig{Timeout: time.Second})
		ra.Add(frags[0], dec(frags[0]), 2, now)
		ra.Expire(now.Add(2 * time.Second))
		if st := ra.Stats(); st.Queues != 0 || st.Timeouts != 1 || st.Bytes != 0 {
			t.Fatalf("after the timeout: %+v", st)
		}
	})
	t.Run("memory bounded", func(t *testing.T) {
		ra := NewReassembler6(ReasmConfig{MaxBytes: 256 << 10})
		for i := 0; i < 5000; i++ {
			f := append([]byte(nil), frags[1]...)
			q := dec(f)
			binary.BigEndian.PutUint32(f[q.FragHdr+4:], uint32(i)) // a new datagram each
			ra.Add(f, dec(f), 2, now)
			if st := ra.Stats(); st.Bytes > 256<<10 {
				t.Fatalf("%d bytes held over a 256 KiB limit", st.Bytes)
			}
		}
		if st := ra.Stats(); st.Evicted == 0 {
			t.Fatalf("nothing evicted: %+v", st)
		}
	})
	t.Run("too many fragments", func(t *testing.T) {
		ra := NewReassembler6(ReasmConfig{})
		big := randomFrame6(r, packet.NHUDP, 60000)
		var bp packet.Parsed
		packet.Decode(big, &bp)
		var last ReasmStatus
		// 8-byte fragments (after the first, which holds the UDP
		// header): the 129th drops the datagram
		ip := big[bp.L3:bp.End]
		for i := 0; i <= MaxReasmFrags; i++ {
			f := make([]byte, packet.EthLen+packet.IP6Len+8+8)
			copy(f, big[:packet.EthLen])
			Fragment6(f[packet.EthLen:], ip, packet.IP6Len, 6, packet.IP6Len+16, i, 11)
			_, last = ra.Add(f, dec(f), 2, now)
		}
		if last != ReasmTooMany {
			t.Fatalf("status %d after %d fragments", last, MaxReasmFrags+1)
		}
	})
}

// TestICMPv6Error builds a Packet Too Big about a packet, checks it with
// gopacket, parses its quote back and rewrites it.
func TestICMPv6Error(t *testing.T) {
	r := rand.New(rand.NewPCG(75, 76))
	orig := randomFrame6(r, packet.NHTCP, 2000)
	var op packet.Parsed
	packet.Decode(orig, &op)
	vip := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 14: 1}
	buf := make([]byte, ICMPv6ErrorMax)
	n := BuildICMPv6Error(buf, orig[op.L3:op.End], vip, packet.ICMPv6PacketTooBig, 0, 1460, [6]byte{2}, [6]byte{4})
	if n != ICMPv6ErrorMax {
		t.Fatalf("error of %d bytes, want the minimum MTU's worth (%d)", n, ICMPv6ErrorMax)
	}
	pk := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
	ic, ok := pk.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	if !ok || ic.TypeCode.Type() != packet.ICMPv6PacketTooBig || binary.BigEndian.Uint32(ic.Payload[:4]) != 1460 {
		t.Fatalf("packet too big: %v", pk)
	}
	var p packet.Parsed
	packet.Decode(buf[:n], &p)
	if p.Kind != packet.KindIPv6 || !ICMPv6ChecksumOK(buf[:n], &p) {
		t.Fatalf("decode %d %s, checksum ok %v", p.Kind, p.Reason, ICMPv6ChecksumOK(buf[:n], &p))
	}
	var e Embedded6
	if !ParseICMPv6Error(buf[:n], &p, &e) || e.Src != op.Src6 || e.Dst != op.Dst6 || e.SPort != op.SPort || e.DPort != op.DPort || e.Proto != packet.NHTCP {
		t.Fatalf("quote parsed as %+v", e)
	}
	ns, nd := rand16(r), rand16(r)
	SetOuter6(buf[:n], &p, ns, nd)
	RewriteEmbedded6(buf[:n], &p, &e, nd, 80, ns, 40000)
	if !ICMPv6ChecksumOK(buf[:n], &p) {
		t.Fatalf("checksum wrong after the rewrite")
	}
	// A quote of a later fragment has no ports: not related to a conn
	// (spec 2026 D12); the first fragment's quote is.
	ub := randomFrame6(r, packet.NHUDP, 3000)
	var up packet.Parsed
	packet.Decode(ub, &up)
	frags := fragmentsOf(ub, &up, 1280, 1)
	for i, fr := range frags[:2] {
		n := BuildICMPv6Error(buf, fr[packet.EthLen:], vip, packet.ICMPv6DestUnreach, ICMPv6PortUnreach, 0, [6]byte{2}, [6]byte{4})
		packet.Decode(buf[:n], &p)
		if got := ParseICMPv6Error(buf[:n], &p, &e); got != (i == 0) {
			t.Fatalf("quote of fragment %d: related %v", i, got)
		}
	}
}

// FuzzReassemble6 feeds arbitrary frames to the reassembler after a valid
// fragment: it never panics, never returns a datagram longer than IPv6
// allows, and its memory stays within bounds.
func FuzzReassemble6(f *testing.F) {
	r := rand.New(rand.NewPCG(77, 78))
	b := randomFrame6(r, packet.NHUDP, 3000)
	var p packet.Parsed
	packet.Decode(b, &p)
	for _, fr := range fragmentsOf(b, &p, 1280, 5) {
		f.Add(fr)
	}
	first := fragmentsOf(b, &p, 1280, 5)[0]
	f.Fuzz(func(t *testing.T, data []byte) {
		ra := NewReassembler6(ReasmConfig{MaxBytes: 64 << 10})
		now := time.Now()
		for _, fr := range [][]byte{first, data, data} {
			var q packet.Parsed
			packet.Decode(fr, &q)
			if q.Reason != packet.ReasonFragment || q.FragHdr == 0 {
				continue
			}
			g, st := ra.Add(fr, &q, 1, now)
			if st == ReasmComplete {
				if g.Len() > packet.EthLen+packet.IP6Len+65535 {
					t.Fatalf("datagram of %d bytes", g.Len())
				}
				out := make([]byte, g.Len())
				g.WriteTo(out)
				ra.Free(g)
			}
			if st := ra.Stats(); st.Bytes > 64<<10+1024 || st.Bytes < 0 {
				t.Fatalf("memory %d", st.Bytes)
			}
		}
	})
}

// FuzzDecap: arbitrary outer packets never panic the decapsulator, and
// what it returns is a whole inner IPv4 or IPv6 packet inside the input.
func FuzzDecap(f *testing.F) {
	r := rand.New(rand.NewPCG(79, 80))
	b := randomFrame6(r, packet.NHTCP, 100)
	var p packet.Parsed
	packet.Decode(b, &p)
	inner := b[p.L3:p.End]
	for _, o6 := range []bool{false, true} {
		tn := Tunnel{Outer6: o6, GUE: o6, DPort: 6080}
		out := make([]byte, packet.EthLen+tn.Overhead()+len(inner))
		copy(out[packet.EthLen+tn.Overhead():], inner)
		Encap(out, len(inner), &tn)
		f.Add(out[packet.EthLen:])
	}
	f.Fuzz(func(t *testing.T, ip []byte) {
		in, ok := Decap(ip, 6080)
		if !ok {
			return
		}
		if len(in) > len(ip) || len(in) < packet.IP4MinLen {
			t.Fatalf("inner of %d bytes from %d", len(in), len(ip))
		}
	})
}
