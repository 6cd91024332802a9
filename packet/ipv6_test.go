package packet

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	cip6 = [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 15: 0x10}
	vip6 = [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 14: 0x01, 15: 0x00}
)

// ext is an extension header: its kind (as the previous header names it)
// and its bytes after the next-header byte, which frame6 fills in.
type extHdr struct {
	kind uint8
	body []byte
}

func ext(kind uint8, body ...byte) extHdr { return extHdr{kind, body} }

// frag is a fragment header with an offset in bytes and MF.
func frag(off int, more bool, id uint32) extHdr {
	b := make([]byte, 7)
	fo := uint16(off)
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(b[1:], fo)
	binary.BigEndian.PutUint32(b[3:], id)
	return extHdr{NHFragment, b}
}

func tcp6(flags uint8) []byte {
	t := make([]byte, 24)
	binary.BigEndian.PutUint16(t[0:], 40000)
	binary.BigEndian.PutUint16(t[2:], 80)
	binary.BigEndian.PutUint32(t[4:], 0x00100000) // the D10 example's sequence number
	t[12] = 5 << 4
	t[13] = flags
	return t
}

func udp6(n int) []byte {
	u := make([]byte, 8+n)
	binary.BigEndian.PutUint16(u[0:], 40000)
	binary.BigEndian.PutUint16(u[2:], 53)
	binary.BigEndian.PutUint16(u[4:], uint16(8+n))
	return u
}

// frame6 builds an Ethernet/IPv6 frame: the extension headers in order,
// then the upper-layer bytes of protocol proto (checksum left as is).
func frame6(proto uint8, l4 []byte, exts ...extHdr) []byte {
	b := make([]byte, EthLen+IP6Len)
	binary.BigEndian.PutUint16(b[12:], EtherTypeIP6)
	ip := b[EthLen:]
	ip[0] = 0x60
	ip[ip6Hop] = 64
	copy(ip[ip6Src:], cip6[:])
	copy(ip[ip6Dst:], vip6[:])
	prev := EthLen + ip6Next
	for _, e := range exts {
		b[prev] = e.kind
		prev = len(b)
		b = append(b, 0)
		b = append(b, e.body...)
	}
	b[prev] = proto
	b = append(b, l4...)
	binary.BigEndian.PutUint16(b[EthLen+ip6PLen:], uint16(len(b)-EthLen-IP6Len))
	return b
}

func TestDecode6(t *testing.T) {
	pad6 := []byte{0, 1, 4, 0, 0, 0, 0} // an 8-byte header's options: PadN of 6
	cases := []struct {
		name   string
		b      []byte
		kind   Kind
		reason Reason
		l4     int // expected L4 offset from the IPv6 header (KindIPv6)
	}{
		{"tcp", frame6(NHTCP, tcp6(TCPSyn)), KindIPv6, ReasonNone, 40},
		{"udp", frame6(NHUDP, udp6(4)), KindIPv6, ReasonNone, 40},
		{"icmpv6", frame6(NHICMPv6, make([]byte, 8)), KindIPv6, ReasonNone, 40},
		{"short icmpv6", frame6(NHICMPv6, make([]byte, 7)), KindUnknown, ReasonTruncated, 0},
		{"hop-by-hop", frame6(NHTCP, tcp6(TCPSyn), ext(NHHopByHop, pad6...)), KindIPv6, ReasonNone, 48},
		{"hop-by-hop router alert", frame6(NHTCP, tcp6(TCPSyn), ext(NHHopByHop, 0, 5, 2, 0, 0, 1, 0)), KindIPv6, ReasonNone, 48},
		{"hop-by-hop not first", frame6(NHTCP, tcp6(TCPSyn), ext(NHDestOpts, pad6...), ext(NHHopByHop, pad6...)), KindUnknown, ReasonBadIP6Ext, 0},
		{"hop-by-hop jumbo option", frame6(NHTCP, tcp6(TCPSyn), ext(NHHopByHop, 0, 0xc2, 4, 0, 0, 0x10, 0)), KindUnknown, ReasonBadIP6Ext, 0},
		{"hop-by-hop unknown discard option", frame6(NHTCP, tcp6(TCPSyn), ext(NHHopByHop, 0, 0x7f, 4, 0, 0, 0, 0)), KindUnknown, ReasonBadIP6Ext, 0},
		{"hop-by-hop unknown skip option", frame6(NHTCP, tcp6(TCPSyn), ext(NHHopByHop, 0, 0x1e, 4, 0, 0, 0, 0)), KindIPv6, ReasonNone, 48},
		{"padding over 7 bytes", frame6(NHTCP, tcp6(TCPSyn), ext(NHHopByHop, 1, 1, 4, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0)), KindUnknown, ReasonBadIP6Ext, 0},
		{"non-zero PadN", frame6(NHTCP, tcp6(TCPSyn), ext(NHDestOpts, 0, 1, 4, 0, 9, 0, 0)), KindUnknown, ReasonBadIP6Ext, 0},
		{"option past its header", frame6(NHTCP, tcp6(TCPSyn), ext(NHDestOpts, 0, 0x1e, 9, 0, 0, 0, 0)), KindUnknown, ReasonBadIP6Ext, 0},
		{"nine options", frame6(NHTCP, tcp6(TCPSyn), ext(NHDestOpts, 2, 0x1e, 0, 0x1e, 0, 0x1e, 0, 0x1e, 0, 0x1e, 0, 0x1e, 0, 0x1e, 0, 0x1e, 0, 0x1e, 0, 0, 0, 0)), KindUnknown, ReasonBadIP6Ext, 0},
		// D10's example: an 8-byte destination-options header; the TCP
		// flags are read at the parsed offset, 48 + 13.
		{"destination options (D10)", frame6(NHTCP, tcp6(TCPSyn), ext(NHDestOpts, pad6...)), KindIPv6, ReasonNone, 48},
		{"routing, no segments left", frame6(NHTCP, tcp6(TCPSyn), ext(NHRouting, 0, 4, 0, 0, 0, 0, 0)), KindIPv6, ReasonNone, 48},
		{"routing with segments left", frame6(NHTCP, tcp6(TCPSyn), ext(NHRouting, 2, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)), KindUnknown, ReasonBadIP6Ext, 0},
		{"atomic fragment", frame6(NHTCP, tcp6(TCPSyn), frag(0, false, 9)), KindIPv6, ReasonNone, 48},
		{"first fragment", frame6(NHUDP, udp6(16), frag(0, true, 9)), KindUnknown, ReasonFragment, 0},
		{"later fragment", frame6(NHUDP, make([]byte, 16), frag(1232, false, 9)), KindUnknown, ReasonFragment, 0},
		{"fragment after options", frame6(NHUDP, make([]byte, 16), ext(NHHopByHop, pad6...), frag(8, true, 9)), KindUnknown, ReasonFragment, 0},
		{"all kinds", frame6(NHUDP, udp6(4), ext(NHHopByHop, pad6...), ext(NHDestOpts, pad6...), ext(NHRouting, 0, 4, 0, 0, 0, 0, 0), frag(0, false, 1), ext(NHDestOpts, pad6...)), KindIPv6, ReasonNone, 40 + 8*5},
		{"eight destination options", frame6(NHTCP, tcp6(TCPSyn), ext(NHDestOpts, pad6...), ext(NHDestOpts, pad6...), ext(NHDestOpts, pad6...), ext(NHDestOpts, pad6...), ext(NHDestOpts, pad6...), ext(NHDestOpts, pad6...), ext(NHDestOpts, pad6...), ext(NHDestOpts, pad6...)), KindIPv6, ReasonNone, 40 + 64},
		{"nine destination options", frame6(NHTCP, tcp6(TCPSyn), ext(NHDestOpts, pad6...), ext(NHDestOpts, pad6...), ext(NHDestOpts, pad6...), ext(NHDestOpts, pad6...), ext(NHDestOpts, pad6...), ext(NHDestOpts, pad6...), ext(NHDestOpts, pad6...), ext(NHDestOpts, pad6...), ext(NHDestOpts, pad6...)), KindUnknown, ReasonBadIP6Ext, 0},
		{"esp", frame6(NHESP, make([]byte, 16)), KindUnknown, ReasonProto, 0},
		{"ah", frame6(NHTCP, tcp6(TCPSyn), ext(NHAH, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)), KindUnknown, ReasonProto, 0},
		{"no next header", frame6(NHNone, make([]byte, 8)), KindUnknown, ReasonProto, 0},
		{"ipv6 in ipv6", frame6(NHIPv6, make([]byte, 40)), KindUnknown, ReasonProto, 0},
		{"tcp offset 4", func() []byte { b := frame6(NHTCP, tcp6(TCPSyn)); b[EthLen+40+12] = 4 << 4; return b }(), KindUnknown, ReasonBadL4, 0},
		{"udp length past end", func() []byte { b := frame6(NHUDP, udp6(4)); b[EthLen+40+5] = 99; return b }(), KindUnknown, ReasonBadL4, 0},
		{"short tcp", frame6(NHTCP, tcp6(TCPSyn)[:19]), KindUnknown, ReasonTruncated, 0},
		{"version 4", func() []byte { b := frame6(NHTCP, tcp6(TCPSyn)); b[EthLen] = 0x40; return b }(), KindUnknown, ReasonBadIP, 0},
		{"payload length 0", func() []byte { b := frame6(NHTCP, tcp6(TCPSyn)); b[EthLen+4], b[EthLen+5] = 0, 0; return b }(), KindUnknown, ReasonBadIP, 0},
		{"payload past frame", func() []byte { b := frame6(NHTCP, tcp6(TCPSyn)); b[EthLen+5]++; return b }(), KindUnknown, ReasonTruncated, 0},
		{"short header", frame6(NHTCP, tcp6(TCPSyn))[:EthLen+39], KindUnknown, ReasonTruncated, 0},
		{"extension header past payload", func() []byte {
			b := frame6(NHTCP, tcp6(TCPSyn), ext(NHDestOpts, pad6...))
			b[EthLen+40+1] = 9 // 80 bytes: past the 32-byte payload
			return b
		}(), KindUnknown, ReasonTruncated, 0},
		{"extension header cut short", func() []byte {
			return frame6(NHDestOpts, make([]byte, 4))
		}(), KindUnknown, ReasonTruncated, 0},
		{"padding after the payload", append(frame6(NHTCP, tcp6(TCPSyn)), 0, 0, 0, 0, 0, 0), KindIPv6, ReasonNone, 40},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var p Parsed
			Decode(c.b, &p)
			if p.Kind != c.kind || p.Reason != c.reason {
				t.Fatalf("got kind %d reason %s, want %d %s", p.Kind, p.Reason, c.kind, c.reason)
			}
			if c.kind != KindIPv6 {
				return
			}
			if p.L4-p.L3 != c.l4 {
				t.Fatalf("L4 at %d, want %d", p.L4-p.L3, c.l4)
			}
			if p.Src6 != cip6 || p.Dst6 != vip6 {
				t.Fatalf("addresses %x -> %x", p.Src6, p.Dst6)
			}
			if p.Proto == NHTCP && (p.Flags != TCPSyn || p.SPort != 40000 || p.DPort != 80) {
				t.Fatalf("TCP read wrong: flags %#x ports %d %d", p.Flags, p.SPort, p.DPort)
			}
			if p.End != len(c.b) && c.name != "padding after the payload" {
				t.Fatalf("end %d, frame %d", p.End, len(c.b))
			}
		})
	}
}

func TestDecode6Fragment(t *testing.T) {
	b := frame6(NHUDP, make([]byte, 24), ext(NHHopByHop, 0, 1, 4, 0, 0, 0, 0), frag(1448, true, 0xdeadbeef))
	var p Parsed
	Decode(b, &p)
	if p.Reason != ReasonFragment || p.FragHdr != EthLen+48 || p.FragPrev != EthLen+40 || p.FragOff != 1448 || !p.FragMore || p.FragID != 0xdeadbeef || p.FragProto != NHUDP {
		t.Fatalf("fragment read as %+v", p.V6)
	}
	if p.Src6 != cip6 || p.Dst6 != vip6 || p.End != len(b) {
		t.Fatalf("addresses or end wrong: %+v", p)
	}
}

// TestDecode6LongChains: chains of every length up to far past the limit,
// of every kind, never panic, walk at most MaxExtHeaders headers and are
// refused past it (a "loop" of next-header values cannot make the walk
// revisit a header: each one moves the offset forward).
func TestDecode6LongChains(t *testing.T) {
	for _, kind := range []uint8{NHDestOpts, NHRouting, NHHopByHop} {
		for n := 0; n < 40; n++ {
			var exts []extHdr
			for i := 0; i < n; i++ {
				if kind == NHRouting {
					exts = append(exts, ext(kind, 0, 4, 0, 0, 0, 0, 0))
				} else {
					exts = append(exts, ext(kind, 0, 1, 4, 0, 0, 0, 0))
				}
			}
			var p Parsed
			Decode(frame6(NHTCP, tcp6(TCPSyn), exts...), &p)
			want := n <= MaxExtHeaders && (kind != NHHopByHop || n <= 1)
			if (p.Kind == KindIPv6) != want {
				t.Fatalf("%d headers of %d: kind %d reason %s", n, kind, p.Kind, p.Reason)
			}
		}
	}
}

func TestExtChain(t *testing.T) {
	b := frame6(NHTCP, tcp6(TCPSyn), ext(NHHopByHop, 0, 1, 4, 0, 0, 0, 0), ext(NHRouting, 0, 4, 0, 0, 0, 0, 0), frag(0, false, 1))
	hs, proto, ok := ExtChain(b[EthLen:])
	if !ok || proto != NHTCP || len(hs) != 3 || hs[0].Proto != NHHopByHop || hs[1].Proto != NHRouting || hs[2].Proto != NHFragment || hs[2].Off != 56 || hs[2].Len != 8 {
		t.Fatalf("chain %+v proto %d ok %v", hs, proto, ok)
	}
}

func TestMartians6(t *testing.T) {
	for _, c := range []struct {
		a    string
		want bool
	}{
		{"::", true}, {"::1", true}, {"ff02::1", true}, {"ff0e::5", true}, {"::ffff:198.18.0.10", true},
		{"fe80::1", true}, {"febf::1", true}, {"2001:db8:18::10", false}, {"fec0::1", false},
		{"::2", false}, {"64:ff9b::198.18.0.1", false},
	} {
		a := net.ParseIP(c.a)
		if got := MartianSource6([16]byte(a.To16())); got != c.want {
			t.Errorf("MartianSource6(%s) = %v, want %v", c.a, got, c.want)
		}
	}
}

func TestDecode6DoesNotAllocate(t *testing.T) {
	b := frame6(NHTCP, tcp6(TCPAck), ext(NHDestOpts, 0, 1, 4, 0, 0, 0, 0))
	var p Parsed
	if n := testing.AllocsPerRun(1000, func() { Decode(b, &p) }); n != 0 {
		t.Fatalf("Decode allocates %.1f times", n)
	}
}

// TestChecksum6 checks L4Checksum6 against gopacket's IPv6 TCP and UDP
// checksums, and Update128 (an address change) against a full recompute,
// over thousands of fixed-seed random packets.
func TestChecksum6(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	for i := 0; i < 4000; i++ {
		var src, dst, nsrc [16]byte
		for j := range src {
			src[j], dst[j], nsrc[j] = byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())
		}
		pay := make([]byte, r.IntN(300))
		for j := range pay {
			pay[j] = byte(r.Uint32())
		}
		ip := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: src[:], DstIP: dst[:]}
		var l4 gopacket.SerializableLayer
		proto := uint8(NHTCP)
		if i%2 == 1 {
			proto = NHUDP
			u := &layers.UDP{SrcPort: layers.UDPPort(r.Uint32()), DstPort: layers.UDPPort(r.Uint32())}
			_ = u.SetNetworkLayerForChecksum(ip)
			l4 = u
		} else {
			tc := &layers.TCP{SrcPort: layers.TCPPort(r.Uint32()), DstPort: layers.TCPPort(r.Uint32()), Seq: r.Uint32(), ACK: true, Window: 512}
			_ = tc.SetNetworkLayerForChecksum(ip)
			l4 = tc
		}
		ip.NextHeader = layers.IPProtocol(proto)
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, l4, gopacket.Payload(pay)); err != nil {
			t.Fatal(err)
		}
		seg := buf.Bytes()[IP6Len:]
		off := 16
		if proto == NHUDP {
			off = 6
		}
		want := binary.BigEndian.Uint16(seg[off:])
		if got := L4Checksum6(&src, &dst, proto, seg); got != want {
			t.Fatalf("packet %d: checksum %#04x, gopacket %#04x", i, got, want)
		}
		inc := Update128(want, &src, &nsrc)
		if proto == NHUDP && inc == 0 {
			inc = 0xffff
		}
		if full := L4Checksum6(&nsrc, &dst, proto, seg); inc != full && !(proto == NHTCP && inc == 0xffff && full == 0) {
			t.Fatalf("packet %d: incremental %#04x, full %#04x", i, inc, full)
		}
	}
}

func TestNeighborDiscovery(t *testing.T) {
	mac := [6]byte{2, 0, 0x5e, 0, 0xd1, 1}
	cmac := [6]byte{2, 0, 0x5e, 0, 0x0c, 10}
	// An NS from the client for the VIP, as gopacket builds it.
	eth := &layers.Ethernet{SrcMAC: cmac[:], DstMAC: net.HardwareAddr{0x33, 0x33, 0xff, 0, 1, 0}, EthernetType: layers.EthernetTypeIPv6}
	sn := SolicitedNode(vip6)
	ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6, SrcIP: cip6[:], DstIP: sn[:]}
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(ICMPv6NS, 0)}
	_ = ic.SetNetworkLayerForChecksum(ip)
	ns := &layers.ICMPv6NeighborSolicitation{TargetAddress: vip6[:], Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptSourceAddress, Data: cmac[:]}}}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, ic, ns); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	var p Parsed
	Decode(b, &p)
	var got NS
	if !ParseNS(b, &p, &got) || got.Target != vip6 || !got.HasLL || got.SrcLL != cmac || got.DAD {
		t.Fatalf("NS parsed as %+v (kind %d reason %s)", got, p.Kind, p.Reason)
	}
	if MulticastMAC(sn) != [6]byte{0x33, 0x33, 0xff, 0, 1, 0} {
		t.Fatalf("solicited-node MAC %x", MulticastMAC(sn))
	}
	for _, bad := range []func([]byte){
		func(b []byte) { b[EthLen+7] = 64 },      // hop limit
		func(b []byte) { b[len(b)-1] ^= 1 },      // checksum
		func(b []byte) { b[EthLen+40+1] = 1 },    // code
		func(b []byte) { b[EthLen+40+8] = 0xff }, // multicast target (checksum off too)
		func(b []byte) { b[EthLen+40+24+1] = 0 }, // zero-length option
		func(b []byte) { b[EthLen+40+24+1] = 2 }, // option past the message
	} {
		c := append([]byte(nil), b...)
		bad(c)
		var p Parsed
		Decode(c, &p)
		if ParseNS(c, &p, &got) {
			t.Fatalf("a bad NS was accepted")
		}
	}
	// The answer decodes with gopacket, checksum and all.
	na := make([]byte, NALen)
	n := BuildNA(na, mac, cmac, cip6, vip6, true)
	pk := gopacket.NewPacket(na[:n], layers.LayerTypeEthernet, gopacket.Default)
	adv, ok := pk.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	if !ok {
		t.Fatalf("NA does not decode: %v", pk)
	}
	if !adv.TargetAddress.Equal(vip6[:]) || !adv.Solicited() || !adv.Override() || adv.Router() || len(adv.Options) != 1 || string(adv.Options[0].Data) != string(mac[:]) {
		t.Fatalf("NA %+v", adv)
	}
	ip6 := pk.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	if ip6.HopLimit != 255 || !ip6.SrcIP.Equal(vip6[:]) || !ip6.DstIP.Equal(cip6[:]) {
		t.Fatalf("NA header %+v", ip6)
	}
	ic6 := pk.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	want := ic6.Checksum
	c2 := *ic6
	_ = c2.SetNetworkLayerForChecksum(ip6)
	sb := gopacket.NewSerializeBuffer()
	_ = gopacket.SerializeLayers(sb, gopacket.SerializeOptions{ComputeChecksums: true}, &c2, gopacket.Payload(ic6.Payload))
	if c2.Checksum != want {
		t.Fatalf("NA checksum %#04x, gopacket %#04x", want, c2.Checksum)
	}
}
