package director

import (
	"net/netip"
	"testing"

	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// TestRouterDrops: frames a router drops on input are dropped before any
// lookup, counted by cause, and create no connection: another host's
// MAC, Ethernet broadcast and multicast, a VLAN tag, martian sources and
// destinations, a bad header checksum. (The old code forwarded every one
// of them to the real server, creating a conn for each.)
func TestRouterDrops(t *testing.T) {
	syn := func(src, dst netip.Addr) *netio.Frame {
		return frame(t, ifExt, cliMAC, extMAC, src, dst, 6, 40000, 80, 0x02, nil)
	}
	with := func(f *netio.Frame, mut func(f *netio.Frame)) *netio.Frame { mut(f); return f }
	a := netip.MustParseAddr
	cases := []struct {
		name string
		f    *netio.Frame
		cnt  int
	}{
		{"another host's MAC", with(syn(cip, vip), func(f *netio.Frame) { f.PktType = netio.PacketOtherHost }), CntOtherHost},
		{"ethernet broadcast", with(syn(cip, vip), func(f *netio.Frame) { f.PktType = netio.PacketBroadcast }), CntBroadcast},
		{"ethernet multicast", with(syn(cip, vip), func(f *netio.Frame) { f.PktType = netio.PacketMulticast }), CntMulticast},
		{"vlan 5", with(syn(cip, vip), func(f *netio.Frame) { f.VLANValid, f.VLANTCI = true, 5 }), CntVLAN},
		{"vlan 4095 priority 7", with(syn(cip, vip), func(f *netio.Frame) { f.VLANValid, f.VLANTCI = true, 0xefff }), CntVLAN},
		{"source 0.0.0.0", syn(a("0.0.0.0"), vip), CntMartianSrc},
		{"source 0.1.2.3", syn(a("0.1.2.3"), vip), CntMartianSrc},
		{"source loopback", syn(a("127.0.0.1"), vip), CntMartianSrc},
		{"source multicast", syn(a("224.0.0.251"), vip), CntMartianSrc},
		{"source class D top", syn(a("239.255.255.255"), vip), CntMartianSrc},
		{"source limited broadcast", syn(a("255.255.255.255"), vip), CntMartianSrc},
		{"source the VIP", syn(vip, vip), CntMartianSrc},
		{"source the director", syn(a("198.18.0.1"), vip), CntMartianSrc},
		{"source the subnet broadcast", syn(a("198.18.0.255"), vip), CntMartianSrc},
		{"destination loopback", syn(cip, a("127.0.0.1")), CntMartianDst},
		{"destination 0.0.0.0", syn(cip, a("0.0.0.0")), CntMartianDst},
		{"destination multicast", syn(cip, a("224.0.0.1")), CntMartianDst},
		{"bad header checksum", with(syn(cip, vip), func(f *netio.Frame) { f.Data[14+10] ^= 0x40 }), int(packet.ReasonBadIPCsum) - 1},
		{"source route", withSourceRoute(t, syn(cip, vip)), int(packet.ReasonBadIPOpts) - 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, w, ext, in := testDirector(t, true)
			d.addOwn([]netip.Prefix{netip.MustParsePrefix("198.18.0.1/24"), netip.MustParsePrefix("198.19.0.1/24")})
			before := d.Drops.Get()
			w.handle(c.f)
			after := d.Drops.Get()
			for i := range after {
				want := before[i]
				if i == c.cnt {
					want++
				}
				if after[i] != want {
					t.Fatalf("counter %s: got %d, want %d", CounterNames[i], after[i], want)
				}
			}
			if len(ext.frames)+len(in.frames) != 0 {
				t.Fatalf("forwarded %d frames", len(ext.frames)+len(in.frames))
			}
			if d.CT.Len() != 0 {
				t.Fatalf("created %d connection entries", d.CT.Len())
			}
		})
	}
	// Controls: a VID-0 priority tag is the untagged network's, and the
	// same SYN untampered goes through.
	for _, f := range []*netio.Frame{with(syn(cip, vip), func(f *netio.Frame) { f.VLANValid, f.VLANTCI = true, 0xe000 }), syn(cip, vip)} {
		_, w, _, in := testDirector(t, true)
		w.handle(f)
		if len(in.frames) != 1 {
			t.Fatalf("a valid SYN (vlan %v %#x) was not forwarded", f.VLANValid, f.VLANTCI)
		}
	}
}

// withSourceRoute inserts a loose source route option (LSRR) into a
// frame, lengths and header checksum fixed.
func withSourceRoute(t *testing.T, f *netio.Frame) *netio.Frame {
	opt := []byte{131, 7, 4, 198, 19, 0, 99, 1}
	b := make([]byte, netio.VnetHdrLen+len(f.Data)+len(opt))
	copy(b[netio.VnetHdrLen:], f.Data[:34])
	copy(b[netio.VnetHdrLen+34:], opt)
	copy(b[netio.VnetHdrLen+34+len(opt):], f.Data[34:])
	data := b[netio.VnetHdrLen:]
	h := packet.IPv4(data[14:])
	h[0] = 0x47
	tot := h.TotalLen() + len(opt)
	h[2], h[3] = byte(tot>>8), byte(tot)
	h.SetChecksum(0)
	h.SetChecksum(h.HeaderChecksum())
	return &netio.Frame{Data: data, Vnet: b[:netio.VnetHdrLen], IfIndex: f.IfIndex}
}

// TestARPFromAnotherHost: an ARP request not addressed to the director's
// MAC (seen on veth or in promiscuous mode) is dropped as the kernel's
// arp_rcv drops it: not answered, not learnt.
func TestARPFromAnotherHost(t *testing.T) {
	d, w, ext, _ := testDirector(t, true)
	req := make([]byte, netio.VnetHdrLen+60)
	buildARPReq(req[netio.VnetHdrLen:], cliMAC, cip, vip)
	w.handle(&netio.Frame{Data: req[netio.VnetHdrLen:], Vnet: req[:netio.VnetHdrLen], IfIndex: ifExt, PktType: netio.PacketOtherHost})
	if len(ext.frames) != 0 || d.Drops[CntOtherHost].Load() != 1 {
		t.Fatalf("answered %d, other-host %d", len(ext.frames), d.Drops[CntOtherHost].Load())
	}
	// Broadcast requests are what ARP is: answered.
	w.handle(&netio.Frame{Data: req[netio.VnetHdrLen:], Vnet: req[:netio.VnetHdrLen], IfIndex: ifExt, PktType: netio.PacketBroadcast})
	if len(ext.frames) != 1 || d.Drops[CntARPAnswered].Load() != 1 {
		t.Fatalf("a broadcast ARP request for the VIP: answered %d", len(ext.frames))
	}
}
