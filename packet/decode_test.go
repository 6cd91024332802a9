package packet

import (
	"encoding/binary"
	"testing"
)

func tcpFrame() []byte {
	b := make([]byte, 14+20+20+4)
	binary.BigEndian.PutUint16(b[12:], EtherTypeIP4)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 44)
	ip[8] = 64
	ip[9] = 6
	copy(ip[12:], []byte{198, 18, 0, 10})
	copy(ip[16:], []byte{198, 18, 0, 100})
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	tcp[12] = 5 << 4
	tcp[13] = TCPSyn
	return b
}

func TestDecode(t *testing.T) {
	cases := []struct {
		name   string
		mut    func(b []byte) []byte
		kind   Kind
		reason Reason
	}{
		{"tcp", func(b []byte) []byte { return b }, KindIPv4, ReasonNone},
		{"empty", func(b []byte) []byte { return b[:0] }, KindUnknown, ReasonTruncated},
		{"short ethernet", func(b []byte) []byte { return b[:13] }, KindUnknown, ReasonTruncated},
		{"ipv4 under the ipv6 ethertype", func(b []byte) []byte { binary.BigEndian.PutUint16(b[12:], EtherTypeIP6); return b }, KindUnknown, ReasonBadIP},
		{"vlan", func(b []byte) []byte { binary.BigEndian.PutUint16(b[12:], EtherTypeVLN); return b }, KindUnknown, ReasonNotIPv4},
		{"short ip", func(b []byte) []byte { return b[:14+19] }, KindUnknown, ReasonTruncated},
		{"version 5", func(b []byte) []byte { b[14] = 0x55; return b }, KindUnknown, ReasonBadIP},
		{"ihl 4", func(b []byte) []byte { b[14] = 0x44; return b }, KindUnknown, ReasonBadIP},
		{"ihl past total", func(b []byte) []byte { b[14] = 0x4f; return b }, KindUnknown, ReasonBadIP},
		{"total below ihl", func(b []byte) []byte { b[17] = 19; return b }, KindUnknown, ReasonBadIP},
		{"total past frame", func(b []byte) []byte { b[17] = 200; return b }, KindUnknown, ReasonTruncated},
		{"fragment MF", func(b []byte) []byte { b[14+6] = 0x20; return b }, KindUnknown, ReasonFragment},
		{"fragment offset", func(b []byte) []byte { b[14+7] = 1; return b }, KindUnknown, ReasonFragment},
		{"gre", func(b []byte) []byte { b[14+9] = 47; return b }, KindUnknown, ReasonProto},
		{"tcp offset 4", func(b []byte) []byte { b[14+20+12] = 4 << 4; return b }, KindUnknown, ReasonBadL4},
		{"tcp offset past end", func(b []byte) []byte { b[14+20+12] = 15 << 4; return b }, KindUnknown, ReasonBadL4},
		{"short tcp", func(b []byte) []byte { b[17] = 20 + 19; return b }, KindUnknown, ReasonTruncated},
		{"udp", func(b []byte) []byte { b[14+9] = 17; binary.BigEndian.PutUint16(b[14+20+4:], 24); return b }, KindIPv4, ReasonNone},
		{"udp length 7", func(b []byte) []byte { b[14+9] = 17; binary.BigEndian.PutUint16(b[14+20+4:], 7); return b }, KindUnknown, ReasonBadL4},
		{"udp length past end", func(b []byte) []byte { b[14+9] = 17; binary.BigEndian.PutUint16(b[14+20+4:], 400); return b }, KindUnknown, ReasonBadL4},
		{"ip options", func(b []byte) []byte {
			b2 := make([]byte, len(b)+4)
			copy(b2, b[:34])
			copy(b2[38:], b[34:])
			b2[14] = 0x46
			b2[17] = 48
			return b2
		}, KindIPv4, ReasonNone},
		{"ethernet padding", func(b []byte) []byte { return append(b, 0, 0, 0, 0) }, KindIPv4, ReasonNone},
		{"bad header checksum", func(b []byte) []byte { fixIPCsum(b); b[14+10] ^= 1; return b }, KindUnknown, ReasonBadIPCsum},
		{"checksum of a changed ttl", func(b []byte) []byte { fixIPCsum(b); b[14+8]--; return b }, KindUnknown, ReasonBadIPCsum},
		{"options: nop nop nop end", withOpts(1, 1, 1, 0), KindIPv4, ReasonNone},
		{"options: router alert", withOpts(148, 4, 0, 0), KindIPv4, ReasonNone},
		{"options: record route", withOpts(7, 7, 4, 0, 0, 0, 0, 0), KindIPv4, ReasonNone},
		{"options: timestamp", withOpts(68, 8, 5, 0, 0, 0, 0, 0), KindIPv4, ReasonNone},
		{"options: unknown type kept", withOpts(30, 4, 1, 2), KindIPv4, ReasonNone},
		{"options: end then garbage", withOpts(0, 9, 9, 9), KindIPv4, ReasonNone},
		{"options: length 1", withOpts(148, 1, 0, 0), KindUnknown, ReasonBadIPOpts},
		{"options: length past header", withOpts(148, 5, 0, 0), KindUnknown, ReasonBadIPOpts},
		{"options: type with no length", withOpts(1, 1, 1, 148), KindUnknown, ReasonBadIPOpts},
		{"options: loose source route", withOpts(131, 3, 4, 0), KindUnknown, ReasonBadIPOpts},
		{"options: strict source route", withOpts(137, 7, 4, 1, 2, 3, 4, 0), KindUnknown, ReasonBadIPOpts},
		{"options: record route pointer 3", withOpts(7, 3, 3, 0), KindUnknown, ReasonBadIPOpts},
		{"options: timestamp length 3", withOpts(68, 3, 5, 0), KindUnknown, ReasonBadIPOpts},
		{"options: router alert length 3", withOpts(148, 3, 0, 0), KindUnknown, ReasonBadIPOpts},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var p Parsed
			b := c.mut(tcpFrame())
			if c.reason != ReasonBadIPCsum {
				fixIPCsum(b)
			}
			Decode(b, &p)
			if p.Kind != c.kind || p.Reason != c.reason {
				t.Fatalf("got kind %d reason %s, want kind %d reason %s", p.Kind, p.Reason, c.kind, c.reason)
			}
		})
	}
	var p Parsed
	b := tcpFrame()
	fixIPCsum(b)
	Decode(b, &p)
	if p.SPort != 40000 || p.DPort != 80 || p.Flags != TCPSyn || p.Src != [4]byte{198, 18, 0, 10} || p.End != 14+44 {
		t.Fatalf("decoded %+v", p)
	}
}

// fixIPCsum sets the IPv4 header checksum of a frame whose header is
// whole (what a sender does; the cases then break one thing each).
func fixIPCsum(b []byte) {
	if len(b) < 14+20 {
		return
	}
	ihl := int(b[14]&0xf) * 4
	if ihl < 20 || len(b) < 14+ihl {
		return
	}
	h := IPv4(b[14 : 14+ihl])
	h.SetChecksum(0)
	h.SetChecksum(h.HeaderChecksum())
}

// withOpts inserts IPv4 options (padded to 4 bytes with END) after the
// fixed header.
func withOpts(opts ...byte) func(b []byte) []byte {
	return func(b []byte) []byte {
		o := append([]byte(nil), opts...)
		for len(o)%4 != 0 {
			o = append(o, 0)
		}
		b2 := make([]byte, len(b)+len(o))
		copy(b2, b[:34])
		copy(b2[34:], o)
		copy(b2[34+len(o):], b[34:])
		b2[14] = 0x45 + byte(len(o)/4)
		binary.BigEndian.PutUint16(b2[16:], uint16(len(b2)-14))
		return b2
	}
}

func TestMartians(t *testing.T) {
	for _, c := range []struct {
		a    [4]byte
		want bool
	}{
		{[4]byte{0, 0, 0, 0}, true}, {[4]byte{0, 1, 2, 3}, true}, {[4]byte{127, 0, 0, 1}, true}, {[4]byte{127, 255, 0, 9}, true},
		{[4]byte{224, 0, 0, 1}, true}, {[4]byte{239, 255, 255, 250}, true}, {[4]byte{255, 255, 255, 255}, true},
		{[4]byte{198, 18, 0, 10}, false}, {[4]byte{1, 0, 0, 0}, false}, {[4]byte{223, 255, 255, 255}, false},
		{[4]byte{240, 0, 0, 1}, false}, {[4]byte{128, 0, 0, 1}, false},
	} {
		if got := MartianSource(c.a); got != c.want {
			t.Errorf("MartianSource(%v) = %v, want %v", c.a, got, c.want)
		}
	}
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	b := tcpFrame()
	fixIPCsum(b)
	var p Parsed
	if n := testing.AllocsPerRun(1000, func() { Decode(b, &p) }); n != 0 {
		t.Fatalf("Decode allocates %.1f times", n)
	}
}

func TestChecksumVectors(t *testing.T) {
	// RFC 1071's example: the sum of 0001 f203 f4f5 f6f7 is ddf2.
	if got := Fold(Sum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0)); got != 0xddf2 {
		t.Fatalf("sum %#04x, want 0xddf2", got)
	}
	// RFC 1624's example: HC 0xdd2f, field 0x5555 -> 0x3285 gives 0x0000
	// under eqn. 3 (the correct answer, where eqn. 2 gave 0xffff).
	if got := Update16(0xdd2f, 0x5555, 0x3285); got != 0x0000 {
		t.Fatalf("RFC 1624 example: %#04x, want 0x0000", got)
	}
}

func FuzzDecode(f *testing.F) {
	b := tcpFrame()
	fixIPCsum(b)
	f.Add(b, false)
	f.Add(withOpts(7, 7, 4, 0, 0, 0, 0, 0)(tcpFrame()), true)
	f.Add([]byte{}, false)
	f.Add(frame6(NHTCP, tcp6(TCPSyn), ext(NHHopByHop, 0, 0, 1, 4, 0, 0, 0, 0), ext(NHDestOpts, 0, 0, 1, 4, 0, 0, 0, 0)), false)
	f.Add(frame6(NHUDP, udp6(8), frag(0, true, 7)), false)
	f.Add(frame6(NHTCP, tcp6(TCPSyn), ext(NHRouting, 0, 0, 0, 0, 0, 0, 0, 0)), false)
	f.Fuzz(func(t *testing.T, b []byte, fix bool) {
		if fix { // reach past the checksum gate as often as not
			fixIPCsum(b)
		}
		var p Parsed
		Decode(b, &p)
		if p.Kind == KindIPv4 {
			// Every offset the rewriters use must be inside the frame.
			if p.L4 > len(b) || p.End > len(b) || p.L4 > p.End {
				t.Fatalf("offsets out of range: %+v len %d", p, len(b))
			}
			if p.Proto == 6 && p.End-p.L4 < TCPMinLen || p.Proto == 17 && p.End-p.L4 < UDPLen {
				t.Fatalf("short L4 accepted: %+v", p)
			}
		}
		if p.Kind == KindIPv6 {
			if p.L4 > len(b) || p.End > len(b) || p.L4 > p.End || p.L4 < p.L3+IP6Len || p.L4-p.L3-IP6Len != p.ExtLen {
				t.Fatalf("offsets out of range: %+v len %d", p, len(b))
			}
			if p.Proto == 6 && p.End-p.L4 < TCPMinLen || p.Proto == 17 && p.End-p.L4 < UDPLen || p.Proto == NHICMPv6 && p.End-p.L4 < 8 {
				t.Fatalf("short L4 accepted: %+v", p)
			}
			if int(p.Ext) > MaxExtHeaders {
				t.Fatalf("%d extension headers accepted", p.Ext)
			}
		}
		if p.Reason == ReasonFragment && p.FragHdr != 0 {
			if p.FragHdr+FragHLen > p.End || p.End > len(b) || p.FragPrev >= p.FragHdr || p.FragPrev < EthLen {
				t.Fatalf("fragment header out of range: %+v len %d", p, len(b))
			}
		}
		if p.Kind == KindARP && len(b) < EthLen+ARPLen {
			t.Fatalf("short ARP accepted")
		}
	})
}
