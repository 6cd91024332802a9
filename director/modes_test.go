package director

import (
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
)

// modeDirector is testDirector for DR, TUN (IPIP or GUE) or FULLNAT: one
// TCP service VIP:80 -> RIP:80.
func modeDirector(t testing.TB, m ipvs.Method, gue bool) (*Director, *Worker, *fakeTx, *fakeTx) {
	d := newCore(Config{Workers: 1, Conntrack: conntrack.Config{Shards: 16}})
	d.ifMAC[ifExt], d.ifMAC[ifInt] = extMAC, intMAC
	d.SetLinkMTU(ifExt, 1500) // as the kernel's link notifications would
	d.SetLinkMTU(ifInt, 1500)
	if m == ipvs.MethodFullNAT {
		if err := d.SetLocalAddrs([]netip.Addr{netip.MustParseAddr("198.19.0.200")}, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	dc := ipvs.DestConfig{Addr: rip, Port: 80, Method: m, Weight: 1}
	if gue {
		dc.TunType, dc.TunPort = ipvs.TunGUE, 6080
	}
	if err := d.AddDest(k, dc); err != nil {
		t.Fatal(err)
	}
	for _, sv := range d.Snapshot().List {
		for _, dd := range sv.Dests {
			dd.Next.Store(&ipvs.NextHop{IfIndex: ifInt, SrcMAC: intMAC, DstMAC: rsMAC, SrcIP: netip.MustParseAddr("198.19.0.1")})
		}
	}
	w := d.newWorker()
	ext, in := &fakeTx{keep: true}, &fakeTx{keep: true}
	w.setTx(ifExt, ext)
	w.setTx(ifInt, in)
	w.snap = d.snap.Load()
	return d, w, ext, in
}

func TestModesRewrite(t *testing.T) {
	cases := []struct {
		name   string
		m      ipvs.Method
		gue    bool
		check  func(t *testing.T, b []byte)
		outLen int // extra bytes on the SYN
	}{
		{"dr", ipvs.MethodRoute, false, func(t *testing.T, b []byte) {
			p := decodeOut(t, b)
			ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if !ip.DstIP.Equal(vip.AsSlice()) || !ip.SrcIP.Equal(cip.AsSlice()) || ip.TTL != 64 {
				t.Fatalf("DR changed the IP header: %s -> %s ttl %d", ip.SrcIP, ip.DstIP, ip.TTL)
			}
		}, 0},
		{"tun-ipip", ipvs.MethodTunnel, false, func(t *testing.T, b []byte) {
			p := decodeOut(t, b)
			outer := p.Layers()[1].(*layers.IPv4)
			if outer.Protocol != layers.IPProtocolIPv4 || !outer.DstIP.Equal(rip.AsSlice()) || !outer.SrcIP.Equal([]byte{198, 19, 0, 1}) {
				t.Fatalf("outer %s -> %s proto %d", outer.SrcIP, outer.DstIP, outer.Protocol)
			}
			inner, ok := forward.Decap(b[netio.VnetHdrLen+14:], 0)
			if !ok || netip.AddrFrom4([4]byte(inner[16:20])) != vip || inner[8] != 64 {
				t.Fatalf("inner packet changed or missing")
			}
		}, 20},
		{"tun-gue", ipvs.MethodTunnel, true, func(t *testing.T, b []byte) {
			inner, ok := forward.Decap(b[netio.VnetHdrLen+14:], 6080)
			if !ok || netip.AddrFrom4([4]byte(inner[16:20])) != vip {
				t.Fatalf("GUE: inner packet missing")
			}
		}, 32},
		{"fullnat", ipvs.MethodFullNAT, false, func(t *testing.T, b []byte) {
			checkChecksums(t, b)
			p := decodeOut(t, b)
			ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if !ip.SrcIP.Equal([]byte{198, 19, 0, 200}) || !ip.DstIP.Equal(rip.AsSlice()) || tcp.DstPort != 80 {
				t.Fatalf("rewritten to %s:%d -> %s:%d", ip.SrcIP, tcp.SrcPort, ip.DstIP, tcp.DstPort)
			}
			c, port, ok := forward.FindTOA(b[netio.VnetHdrLen+14+20:])
			if !ok || netip.AddrFrom4(c) != cip || port != 40000 {
				t.Fatalf("TOA %v %d %v", c, port, ok)
			}
		}, 8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, w, _, in := modeDirector(t, c.m, c.gue)
			syn := frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x02, nil)
			n := len(syn.Data) // DR sends the frame as it came
			if c.outLen > 0 {  // the others send the IP packet, padding dropped
				n = 14 + (int(syn.Data[16])<<8 | int(syn.Data[17]))
			}
			w.handle(syn)
			if len(in.frames) != 1 {
				t.Fatalf("%d frames to the real server (drops %v)", len(in.frames), d.Drops.Get())
			}
			if got := len(in.frames[0]) - netio.VnetHdrLen; got != n+c.outLen {
				t.Fatalf("frame %d bytes, want %d", got, n+c.outLen)
			}
			c.check(t, in.frames[0])
		})
	}
}

func TestTUNFragNeeded(t *testing.T) {
	d, w, ext, in := modeDirector(t, ipvs.MethodTunnel, false)
	w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x02, nil))
	big := frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x10, make([]byte, 1460))
	w.handle(big)
	if len(in.frames) != 1 || len(ext.frames) != 1 {
		t.Fatalf("frames in %d ext %d, want 1 and 1", len(in.frames), len(ext.frames))
	}
	p := decodeOut(t, ext.frames[0])
	ic := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ic.TypeCode != layers.CreateICMPv4TypeCode(3, 4) || ic.Seq != 1480 {
		t.Fatalf("ICMP %v mtu %d, want frag-needed 1480", ic.TypeCode, ic.Seq)
	}
	if d.ModeCounters()[MCntFragNeeded] != 1 {
		t.Fatalf("counter %v", d.ModeCounters())
	}
}

func TestFullNATReply(t *testing.T) {
	d, w, ext, in := modeDirector(t, ipvs.MethodFullNAT, false)
	w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x02, nil))
	p := decodeOut(t, in.frames[0])
	lport := uint16(p.Layer(layers.LayerTypeTCP).(*layers.TCP).SrcPort)
	rep := frame(t, ifInt, rsMAC, intMAC, rip, netip.MustParseAddr("198.19.0.200"), 6, 80, lport, 0x12, nil)
	w.handle(rep)
	if len(ext.frames) != 1 {
		t.Fatalf("reply not forwarded (drops %v)", d.Drops.Get())
	}
	checkChecksums(t, ext.frames[0])
	q := decodeOut(t, ext.frames[0])
	ip := q.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp := q.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ip.SrcIP.Equal(vip.AsSlice()) || tcp.SrcPort != 80 || !ip.DstIP.Equal(cip.AsSlice()) || tcp.DstPort != 40000 {
		t.Fatalf("reply %s:%d -> %s:%d", ip.SrcIP, tcp.SrcPort, ip.DstIP, tcp.DstPort)
	}
}

// TestFullNATPortStart: each director's first FULLNAT conn takes a
// local port from anywhere in the range, not its low end, so a director
// just started (or taken over) does not reuse the pairs the last one
// began with; after that, ports go up one by one, wrapping at the top.
func TestFullNATPortStart(t *testing.T) {
	first := map[uint16]bool{}
	for range 16 {
		d, w, _, in := modeDirector(t, ipvs.MethodFullNAT, false)
		var ports []uint16
		for i := range 3 {
			w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, uint16(40000+i), 80, 0x02, nil))
			if len(in.frames) != i+1 {
				t.Fatalf("SYN %d not forwarded (drops %v)", i, d.Drops.Get())
			}
			p := decodeOut(t, in.frames[i])
			ports = append(ports, uint16(p.Layer(layers.LayerTypeTCP).(*layers.TCP).SrcPort))
		}
		for i, p := range ports {
			if p < DefaultLocalPortMin {
				t.Fatalf("local port %d below the range", p)
			}
			if i > 0 && p != ports[i-1]+1 && !(ports[i-1] == DefaultLocalPortMax && p == DefaultLocalPortMin) {
				t.Fatalf("local ports %v: want consecutive after the first", ports)
			}
		}
		first[ports[0]] = true
	}
	// 16 starts drawn from 60,536 ports: all at one port has odds of
	// 1 in 60,536^15.
	if len(first) < 2 {
		t.Fatalf("16 directors all began at local port %v", first)
	}
}

// modeEstablished returns a worker with an established flow of method m
// and a frame of it to replay.
func modeEstablished(t testing.TB, m ipvs.Method, gue bool) (*Worker, *netio.Frame, []byte) {
	_, w, ext, in := modeDirector(t, m, gue)
	ext.keep, in.keep = false, false
	w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x02, nil))
	f := frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x10, make([]byte, 18))
	// The original frame, before the rewrite: each iteration replays it.
	orig := append([]byte(nil), f.Vnet[:netio.VnetHdrLen+len(f.Data)]...)
	w.handle(f)
	if in.n != 2 {
		t.Fatalf("%s: the flow's SYN and ACK were not both forwarded (%d)", m, in.n)
	}
	return w, f, orig
}

var modeCases = []struct {
	name string
	m    ipvs.Method
	gue  bool
}{{"dr", ipvs.MethodRoute, false}, {"tun-ipip", ipvs.MethodTunnel, false}, {"tun-gue", ipvs.MethodTunnel, true}, {"fullnat", ipvs.MethodFullNAT, false}}

// TestModesDoNotAllocate: the DR, TUN and FULLNAT established paths (and
// the FULLNAT reply) allocate nothing per packet.
func TestModesDoNotAllocate(t *testing.T) {
	for _, c := range modeCases {
		t.Run(c.name, func(t *testing.T) {
			w, f, orig := modeEstablished(t, c.m, c.gue)
			allocs := testing.AllocsPerRun(1000, func() {
				g := *f
				g.Data = g.Vnet[netio.VnetHdrLen:len(orig)]
				copy(g.Vnet[:len(orig)], orig)
				w.handle(&g)
			})
			if allocs != 0 {
				t.Fatalf("%s path allocates %.1f times per packet", c.name, allocs)
			}
		})
	}
}

func BenchmarkModes(b *testing.B) {
	for _, c := range modeCases {
		b.Run(c.name, func(b *testing.B) {
			w, f, orig := modeEstablished(b, c.m, c.gue)
			in := w.tx[ifInt].(*fakeTx)
			before := in.n
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				g := *f
				g.Data = g.Vnet[netio.VnetHdrLen:len(orig)]
				copy(g.Vnet[:len(orig)], orig)
				w.handle(&g)
			}
			b.StopTimer()
			if in.n-before != b.N {
				b.Fatalf("forwarded %d of %d packets", in.n-before, b.N)
			}
		})
	}
}
