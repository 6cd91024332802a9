package vrrp

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/golvs/golvs/packet"
)

var (
	srcA = netip.MustParseAddr("198.18.0.2")
	srcB = netip.MustParseAddr("198.18.0.3")
	vip  = netip.MustParseAddr("198.18.0.100")
	gw   = netip.MustParseAddr("198.19.0.1")
)

// onesSum is a slow reference of the Internet checksum (RFC 1071), kept
// apart from package packet's: the oracle the codec is checked against.
func onesSum(b []byte) uint16 {
	var s uint32
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		s += w
		for s > 0xffff {
			s = s&0xffff + s>>16
		}
	}
	return ^uint16(s)
}

func TestEncodeLayout(t *testing.T) {
	// Version 2, VRID 51, priority 150, two addresses, PASS "secret",
	// 1 s: every field at RFC 3768's offset, checksum from the oracle.
	m := Message{Version: 2, VRID: 51, Priority: 150, Interval: 100, Addrs: []netip.Addr{vip, gw}, AuthType: AuthPass, Auth: PassAuth("secret")}
	b := m.AppendPacket(nil, srcA, MulticastGroup, 7)
	if len(b) != 20+8+8+8 {
		t.Fatalf("length %d, want 44", len(b))
	}
	ip := b[:20]
	want := []byte{0x45, 0xc0, 0, 44, 0, 7, 0, 0, 255, 112}
	if diff := cmp.Diff(want, ip[:10]); diff != "" {
		t.Fatalf("IP header (-want +got):\n%s", diff)
	}
	if onesSum(ip) != 0 {
		t.Fatalf("IP header checksum does not verify")
	}
	v := b[20:]
	wantV := []byte{0x21, 51, 150, 2, AuthPass, 1}
	if diff := cmp.Diff(wantV, v[:6]); diff != "" {
		t.Fatalf("VRRP header (-want +got):\n%s", diff)
	}
	if got := netip.AddrFrom4([4]byte(v[8:12])); got != vip {
		t.Fatalf("first address %s", got)
	}
	if string(v[16:24]) != "secret\x00\x00" {
		t.Fatalf("auth data %q", v[16:24])
	}
	if onesSum(v) != 0 {
		t.Fatalf("v2 checksum does not verify over the VRRP message")
	}

	// Version 3: centiseconds in 12 bits, no auth, pseudo-header in the sum.
	m3 := Message{Version: 3, VRID: 51, Priority: 100, Interval: 50, Addrs: []netip.Addr{vip}}
	b3 := m3.AppendPacket(nil, srcB, MulticastGroup, 1)
	v3 := b3[20:]
	if len(v3) != 12 || v3[0] != 0x31 || binary.BigEndian.Uint16(v3[4:]) != 50 {
		t.Fatalf("v3 message % x", v3)
	}
	ph := append(append(append([]byte{}, b3[12:20]...), 0, 112), 0, byte(len(v3)))
	if onesSum(append(ph, v3...)) != 0 {
		t.Fatalf("v3 checksum does not verify with the pseudo-header")
	}
	if onesSum(v3) == 0 {
		t.Fatalf("v3 checksum verifies without the pseudo-header: it is not included")
	}
}

func TestDecodeGopacket(t *testing.T) {
	// gopacket's VRRPv2 layer, an independent decoder, reads golvs's
	// version 2 packets the same way.
	m := Message{Version: 2, VRID: 7, Priority: 200, Interval: 300, Addrs: []netip.Addr{vip, gw}}
	b := m.AppendPacket(nil, srcA, MulticastGroup, 9)
	pk := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Default)
	l, ok := pk.Layer(layers.LayerTypeVRRP).(*layers.VRRPv2)
	if !ok {
		t.Fatalf("gopacket found no VRRP layer: %v", pk)
	}
	if l.Version != 2 || l.VirtualRtrID != 7 || l.Priority != 200 || l.CountIPAddr != 2 || l.AdverInt != 3 || l.AuthType != 0 {
		t.Fatalf("gopacket read %+v", l)
	}
	if len(l.IPAddress) != 2 || !l.IPAddress[0].Equal(vip.AsSlice()) || !l.IPAddress[1].Equal(gw.AsSlice()) {
		t.Fatalf("gopacket addresses %v", l.IPAddress)
	}
	ipl := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ipl.TTL != 255 || ipl.TOS != 0xc0 || !ipl.DstIP.Equal(MulticastGroup.AsSlice()) {
		t.Fatalf("IP header %+v", ipl)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, m := range []Message{
		{Version: 2, VRID: 1, Priority: 255, Interval: 100, Addrs: []netip.Addr{vip}},
		{Version: 2, VRID: 255, Priority: 1, Interval: 25500, Addrs: []netip.Addr{vip, gw}, AuthType: AuthPass, Auth: PassAuth("12345678")},
		{Version: 3, VRID: 9, Priority: 0, Interval: 4095, Addrs: nil},
		{Version: 3, VRID: 9, Priority: 120, Interval: 1, Addrs: []netip.Addr{gw, vip}},
	} {
		b := m.AppendPacket(nil, srcA, srcB, 3)
		var a Advert
		if err := Decode(b, &a); err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		got := Message{Version: a.Version, VRID: a.VRID, Priority: a.Priority, Interval: a.Interval, Addrs: a.Addrs, AuthType: a.AuthType, Auth: a.Auth}
		if len(got.Addrs) == 0 {
			got.Addrs = nil
		}
		if diff := cmp.Diff(m, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
			t.Fatalf("round trip (-sent +decoded):\n%s", diff)
		}
		if a.Src != srcA || a.Dst != srcB || a.TTL != 255 {
			t.Fatalf("envelope %v %v %d", a.Src, a.Dst, a.TTL)
		}
	}
}

// mutate returns a copy of a valid packet changed by f, with both
// checksums recomputed unless keepSum.
func mutate(t *testing.T, b []byte, f func(b []byte), fixSum bool) []byte {
	t.Helper()
	c := append([]byte(nil), b...)
	f(c)
	if fixSum {
		c[10], c[11] = 0, 0
		binary.BigEndian.PutUint16(c[10:], onesSum(c[:20]))
		v := c[20:]
		v[6], v[7] = 0, 0
		sum := onesSum(v)
		if v[0]>>4 == 3 {
			ph := append(append(append([]byte{}, c[12:20]...), 0, 112), byte(len(v)>>8), byte(len(v)))
			sum = onesSum(append(ph, v...))
		}
		binary.BigEndian.PutUint16(v[6:], sum)
	}
	return c
}

func TestDecodeDrops(t *testing.T) {
	v2 := (&Message{Version: 2, VRID: 51, Priority: 100, Interval: 100, Addrs: []netip.Addr{vip}, AuthType: AuthPass, Auth: PassAuth("pw")}).AppendPacket(nil, srcA, MulticastGroup, 1)
	v3 := (&Message{Version: 3, VRID: 51, Priority: 100, Interval: 100, Addrs: []netip.Addr{vip}}).AppendPacket(nil, srcA, MulticastGroup, 1)
	cases := []struct {
		name string
		pkt  []byte
		want Reason
	}{
		{"empty", nil, DropShort},
		{"ip-only", v2[:20], DropLength},
		{"ipv6", mutate(t, v2, func(b []byte) { b[0] = 0x65 }, false), DropIP},
		{"ihl-too-big", mutate(t, v2, func(b []byte) { b[0] = 0x4f }, false), DropIP},
		{"ihl-too-small", mutate(t, v2, func(b []byte) { b[0] = 0x44 }, false), DropIP},
		{"total-length", mutate(t, v2, func(b []byte) { b[3]++ }, false), DropLength},
		{"fragment", mutate(t, v2, func(b []byte) { b[6] = 0x20 }, false), DropIP},
		{"protocol", mutate(t, v2, func(b []byte) { b[9] = 17 }, false), DropProto},
		{"ah", mutate(t, v2, func(b []byte) { b[9] = ProtoAH }, false), DropProto},
		{"version-1", mutate(t, v2, func(b []byte) { b[20] = 0x11 }, true), DropVersion},
		{"version-4", mutate(t, v3, func(b []byte) { b[20] = 0x41 }, true), DropVersion},
		{"type", mutate(t, v2, func(b []byte) { b[20] = 0x22 }, true), DropType},
		{"count-too-big", mutate(t, v2, func(b []byte) { b[23] = 2 }, true), DropLength},
		{"count-zero", mutate(t, v3, func(b []byte) { b[23] = 0 }, true), DropLength},
		{"v2-checksum", mutate(t, v2, func(b []byte) { b[26] ^= 1 }, false), DropChecksum},
		{"v2-payload-flip", mutate(t, v2, func(b []byte) { b[len(b)-1] ^= 0x40 }, false), DropChecksum},
		{"v3-checksum", mutate(t, v3, func(b []byte) { b[27] ^= 0x80 }, false), DropChecksum},
		// A v3 checksum without the pseudo-header (an old bug) does not
		// verify: the source address is in the sum.
		{"v3-other-source", mutate(t, v3, func(b []byte) {
			b[15]++
			binary.BigEndian.PutUint16(b[10:], 0)
			binary.BigEndian.PutUint16(b[10:], onesSum(b[:20]))
		}, false), DropChecksum},
		{"v3-other-dst", mutate(t, v3, func(b []byte) {
			b[19] = 19
			binary.BigEndian.PutUint16(b[10:], 0)
			binary.BigEndian.PutUint16(b[10:], onesSum(b[:20]))
		}, false), DropChecksum},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var a Advert
			err := Decode(c.pkt, &a)
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("reason %v (%v), want %v", got, err, c.want)
			}
			if !errors.Is(err, ErrDrop) {
				t.Fatalf("%v does not wrap ErrDrop", err)
			}
			if a.VRID != 0 || a.Priority != 0 || len(a.Addrs) != 0 {
				t.Fatalf("a refused packet left fields set: %+v", a)
			}
		})
	}
}

func TestAcceptDrops(t *testing.T) {
	in := Instance{Name: "VI_1", Interface: "ext0", VRID: 51, Addrs: []VAddr{{Addr: vip}, {Addr: gw, Dev: "int0"}}, AuthPass: "pw"}.withDefaults()
	in3 := Instance{Name: "VI_3", Interface: "ext0", VRID: 51, Version: 3, Interval: 500 * time.Millisecond, Addrs: []VAddr{{Addr: vip}}}.withDefaults()
	uni := Instance{Name: "VI_U", Interface: "ext0", VRID: 51, Version: 3, Addrs: []VAddr{{Addr: vip}}, UnicastPeers: []netip.Addr{srcB}}.withDefaults()
	good := Message{Version: 2, VRID: 51, Priority: 100, Interval: 100, Addrs: []netip.Addr{gw, vip}, AuthType: AuthPass, Auth: PassAuth("pw")}
	dec := func(m Message, src netip.Addr, ttl uint8) *Advert {
		b := m.AppendPacket(nil, src, MulticastGroup, 1)
		var a Advert
		if err := Decode(b, &a); err != nil {
			t.Fatal(err)
		}
		a.TTL = ttl
		return &a
	}
	with := func(f func(m *Message)) Message {
		m := good
		m.Addrs = append([]netip.Addr(nil), good.Addrs...)
		f(&m)
		return m
	}
	cases := []struct {
		name string
		in   *Instance
		a    *Advert
		want Reason
	}{
		{"good", &in, dec(good, srcB, 255), DropNone},
		{"ttl-254", &in, dec(good, srcB, 254), DropTTL},
		{"ttl-1", &in, dec(good, srcB, 1), DropTTL},
		{"v3-to-v2", &in, dec(with(func(m *Message) { m.Version = 3 }), srcB, 255), DropVersion},
		{"v2-to-v3", &in3, dec(with(func(m *Message) { m.Addrs = []netip.Addr{vip}; m.AuthType = 0; m.Auth = [8]byte{} }), srcB, 255), DropVersion},
		{"no-auth", &in, dec(with(func(m *Message) { m.AuthType = AuthNone; m.Auth = [8]byte{} }), srcB, 255), DropAuthType},
		{"ah", &in, dec(with(func(m *Message) { m.AuthType = AuthAH }), srcB, 255), DropAuthType},
		{"wrong-pass", &in, dec(with(func(m *Message) { m.Auth = PassAuth("pW") }), srcB, 255), DropAuth},
		{"interval", &in, dec(with(func(m *Message) { m.Interval = 200 }), srcB, 255), DropInterval},
		{"count", &in, dec(with(func(m *Message) { m.Addrs = m.Addrs[:1] }), srcB, 255), DropAddrCount},
		{"list", &in, dec(with(func(m *Message) { m.Addrs[0] = srcA }), srcB, 255), DropAddrList},
		// Version 3 takes the master's interval (no interval check).
		{"v3-interval-learned", &in3, dec(Message{Version: 3, VRID: 51, Priority: 100, Interval: 300, Addrs: []netip.Addr{vip}}, srcB, 255), DropNone},
		// Unicast: no TTL check (keepalived), but the source must be a peer.
		{"unicast-ttl", &uni, dec(Message{Version: 3, VRID: 51, Priority: 100, Interval: 100, Addrs: []netip.Addr{vip}}, srcB, 64), DropNone},
		{"unicast-stranger", &uni, dec(Message{Version: 3, VRID: 51, Priority: 100, Interval: 100, Addrs: []netip.Addr{vip}}, srcA, 255), DropPeer},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.in.accept(c.a, netip.Addr{})
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("reason %v (%v), want %v", got, err, c.want)
			}
		})
	}
	// vrrp_skip_check_adv_addr: the known master's list is not checked,
	// a new master's is.
	skip := in
	skip.SkipCheckAdvAddr = true
	bad := dec(with(func(m *Message) { m.Addrs[0] = srcA }), srcB, 255)
	if err := skip.accept(bad, srcB); err != nil {
		t.Fatalf("skip_check_adv_addr, known master: %v", err)
	}
	if ReasonOf(skip.accept(bad, srcA)) != DropAddrList {
		t.Fatalf("skip_check_adv_addr, new master: list not checked")
	}
}

func TestPassAuth(t *testing.T) {
	if PassAuth("abc") != [8]byte{'a', 'b', 'c'} || PassAuth("123456789") != [8]byte{'1', '2', '3', '4', '5', '6', '7', '8'} {
		t.Fatal("password not zero-padded or truncated to 8 bytes")
	}
}

func TestGARPFrame(t *testing.T) {
	// keepalived's gratuitous ARP (vrrp_arp.c), field by field, read back
	// by gopacket.
	var b [60]byte
	mac := [6]byte{2, 0, 0x5e, 0, 0xd1, 1}
	n := packet.BuildGARP(b[:], mac, vip.As4())
	pk := gopacket.NewPacket(b[:n], layers.LayerTypeEthernet, gopacket.Default)
	eth := pk.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	arp, ok := pk.Layer(layers.LayerTypeARP).(*layers.ARP)
	if !ok {
		t.Fatalf("no ARP layer: %v", pk)
	}
	bcast := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if string(eth.DstMAC) != string(bcast) || string(eth.SrcMAC) != string(mac[:]) {
		t.Fatalf("ethernet %v -> %v", eth.SrcMAC, eth.DstMAC)
	}
	if arp.Operation != layers.ARPRequest || string(arp.SourceHwAddress) != string(mac[:]) ||
		!netip.AddrFrom4([4]byte(arp.SourceProtAddress)).IsValid() || netip.AddrFrom4([4]byte(arp.SourceProtAddress)) != vip ||
		netip.AddrFrom4([4]byte(arp.DstProtAddress)) != vip || string(arp.DstHwAddress) != string(bcast) {
		t.Fatalf("ARP %+v", arp)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add((&Message{Version: 2, VRID: 51, Priority: 100, Interval: 100, Addrs: []netip.Addr{vip}, AuthType: AuthPass, Auth: PassAuth("pw")}).AppendPacket(nil, srcA, MulticastGroup, 1))
	f.Add((&Message{Version: 3, VRID: 5, Priority: 255, Interval: 7, Addrs: []netip.Addr{vip, gw}}).AppendPacket(nil, srcB, MulticastGroup, 2))
	f.Add([]byte{0x46, 0, 0, 24, 0, 0, 0, 0, 255, 112})
	f.Fuzz(func(t *testing.T, b []byte) {
		var a Advert
		err := Decode(b, &a)
		if err != nil {
			if ReasonOf(err) == DropNone {
				t.Fatalf("error without a reason: %v", err)
			}
			if a.VRID != 0 || len(a.Addrs) != 0 {
				t.Fatalf("refused packet left fields: %+v", a)
			}
			return
		}
		// Accepted: the message re-encodes to the same VRRP bytes (the
		// reserved bits of version 3 excepted) and its checksums verify
		// by the slow oracle.
		ihl := int(b[0]&0xf) * 4
		v := b[ihl:]
		if a.Version == 2 && onesSum(v) != 0 {
			t.Fatalf("accepted a v2 packet whose checksum fails the oracle")
		}
		m := Message{Version: a.Version, VRID: a.VRID, Priority: a.Priority, Interval: a.Interval, Addrs: a.Addrs, AuthType: a.AuthType, Auth: a.Auth}
		if a.Version == 2 && a.Interval/100 != uint16(v[5]) {
			t.Fatalf("interval %d from byte %d", a.Interval, v[5])
		}
		re := m.AppendVRRP(nil, a.Src, a.Dst)
		if len(re) != len(v) {
			t.Fatalf("re-encoded %d bytes, packet had %d", len(re), len(v))
		}
		if a.Version == 2 || v[4]&0xf0 == 0 {
			if string(re) != string(v) {
				t.Fatalf("re-encoded\n% x\nreceived\n% x", re, v)
			}
		}
	})
}
