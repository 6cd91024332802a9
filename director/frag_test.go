package director

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/ip4defrag"
	"github.com/gopacket/gopacket/layers"

	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// clearDF clears a frame's DF bit, header checksum fixed (a datagram the
// kernel reassembled for golvs carries no DF).
func clearDF(f *netio.Frame) *netio.Frame {
	h := packet.IPv4(f.Data[packet.EthLen:])
	old := binary.BigEndian.Uint16(h[6:])
	binary.BigEndian.PutUint16(h[6:], old&^0x4000)
	h.SetChecksum(packet.Update16(h.Checksum(), old, old&^0x4000))
	return f
}

// partialCsum turns a frame's complete L4 checksum into an offload
// request (virtio NEEDS_CSUM, the field holding the pseudo-header sum), as
// a locally generated or GRO'd frame comes.
func partialCsum(f *netio.Frame) *netio.Frame {
	var p packet.Parsed
	packet.Decode(f.Data, &p)
	off := 16
	if p.Proto == 17 {
		off = 6
	}
	binary.BigEndian.PutUint16(f.Data[p.L4+off:], packet.Fold(packet.PseudoSum4(p.Src, p.Dst, p.Proto, p.End-p.L4)))
	f.Vnet[0] = netio.VnetNeedsCsum
	binary.LittleEndian.PutUint16(f.Vnet[6:], uint16(p.L4))
	binary.LittleEndian.PutUint16(f.Vnet[8:], uint16(off))
	return f
}

func payloadOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13 + i>>8)
	}
	return b
}

// reassemble checks frames sent on one interface as fragments of one
// datagram (each within mtu, no offload asked of the device; inside a
// tunnel when gue >= 0) and returns it reassembled by gopacket's
// ip4defrag, an implementation independent of golvs's.
func reassemble(t *testing.T, frames [][]byte, mtu int, tunnel bool, gue uint16) *layers.IPv4 {
	t.Helper()
	if len(frames) < 2 {
		t.Fatalf("%d frames, want fragments", len(frames))
	}
	df := ip4defrag.NewIPv4Defragmenter()
	var whole *layers.IPv4
	for i, b := range frames {
		if !bytes.Equal(b[:netio.VnetHdrLen], make([]byte, netio.VnetHdrLen)) {
			t.Fatalf("fragment %d asks the device for offloads: virtio header % x", i, b[:netio.VnetHdrLen])
		}
		ip := b[netio.VnetHdrLen+packet.EthLen:]
		if packet.IPv4(ip).TotalLen() > mtu {
			t.Fatalf("frame %d: %d bytes over the MTU %d", i, packet.IPv4(ip).TotalLen(), mtu)
		}
		if tunnel {
			inner, ok := forward.Decap(ip, gue)
			if !ok {
				t.Fatalf("frame %d is not a tunnel packet", i)
			}
			ip = inner
		}
		if packet.Fold(packet.Sum(ip[:packet.IPv4(ip).IHL()], 0)) != 0xffff {
			t.Fatalf("fragment %d: bad header checksum", i)
		}
		p := gopacket.NewPacket(append([]byte(nil), ip...), layers.LayerTypeIPv4, gopacket.Default)
		l, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if l == nil {
			t.Fatalf("fragment %d does not decode", i)
		}
		out, err := df.DefragIPv4(l)
		if err != nil {
			t.Fatalf("fragment %d: %v", i, err)
		}
		if out != nil {
			whole = out
		}
	}
	if whole == nil {
		t.Fatal("the fragments do not make a whole datagram")
	}
	var src, dst [4]byte
	copy(src[:], whole.SrcIP.To4())
	copy(dst[:], whole.DstIP.To4())
	off := 16
	if whole.Protocol == layers.IPProtocolUDP {
		off = 6
	}
	if c := packet.L4Checksum(src, dst, uint8(whole.Protocol), whole.Payload); c != binary.BigEndian.Uint16(whole.Payload[off:]) {
		t.Fatalf("reassembled L4 checksum %#04x, recomputed %#04x", binary.BigEndian.Uint16(whole.Payload[off:]), c)
	}
	return whole
}

// TestFragmentsForwarded: a datagram longer than the egress MTU (the
// kernel hands golvs reassembled datagrams), DF clear, leaves as
// fragments that reassemble to the rewritten datagram in every mode and
// direction; the service counts it once, with its whole length. (The old
// code queued it whole: the kernel refuses such a frame with EMSGSIZE,
// while the service counted it as forwarded.)
func TestFragmentsForwarded(t *testing.T) {
	lip := netip.MustParseAddr("198.19.0.200")
	for _, size := range []int{3000, 9000} {
		pay := payloadOf(size - 28)
		t.Run("nat-udp-"+itoa(size), func(t *testing.T) {
			d, w, ext, in := testDirector(t, true)
			w.handle(clearDF(frame(t, ifExt, cliMAC, extMAC, cip, vip, 17, 40000, 53, 0, pay)))
			whole := reassemble(t, in.frames, 1500, false, 0)
			if !whole.DstIP.Equal(rip.AsSlice()) || !bytes.Equal(whole.Payload[8:], pay) {
				t.Fatalf("reassembled %s -> %s, payload equal %v", whole.SrcIP, whole.DstIP, bytes.Equal(whole.Payload[8:], pay))
			}
			w.st.flush()
			sv := d.Snapshot().List[1]
			if sv.Stats.InPkts.Load() != 1 || sv.Stats.InBytes.Load() != uint64(size) {
				t.Fatalf("service counted %d packets, %d bytes; want 1, %d", sv.Stats.InPkts.Load(), sv.Stats.InBytes.Load(), size)
			}
			mc := d.ModeCounters()
			if mc[MCntFragmented] != 1 || mc[MCntFragsSent] != uint64(len(in.frames)) {
				t.Fatalf("fragmented %d, fragments %d (sent %d)", mc[MCntFragmented], mc[MCntFragsSent], len(in.frames))
			}
			// The real server's reply, as big, back to the client.
			w.handle(clearDF(frame(t, ifInt, rsMAC, intMAC, rip, cip, 17, 53, 40000, 0, pay)))
			back := reassemble(t, ext.frames, 1500, false, 0)
			if !back.SrcIP.Equal(vip.AsSlice()) || !back.DstIP.Equal(cip.AsSlice()) || !bytes.Equal(back.Payload[8:], pay) {
				t.Fatalf("reply reassembled %s -> %s", back.SrcIP, back.DstIP)
			}
		})
		t.Run("nat-offloaded-checksum-"+itoa(size), func(t *testing.T) {
			_, w, _, in := testDirector(t, true)
			w.handle(partialCsum(clearDF(frame(t, ifExt, cliMAC, extMAC, cip, vip, 17, 40000, 53, 0, pay))))
			reassemble(t, in.frames, 1500, false, 0)
		})
		for _, c := range modeCases {
			t.Run(c.name+"-"+itoa(size), func(t *testing.T) {
				d, w, ext, in := modeDirector(t, c.m, c.gue)
				w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x02, nil))
				in.frames = nil
				w.handle(clearDF(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x10, pay)))
				whole := reassemble(t, in.frames, 1500, c.m == ipvs.MethodTunnel, map[bool]uint16{true: 6080}[c.gue])
				want := vip
				if c.m == ipvs.MethodFullNAT {
					want = rip
				}
				if !whole.DstIP.Equal(want.AsSlice()) || !bytes.Equal(whole.Payload[20:], pay) {
					t.Fatalf("reassembled %s -> %s, payload equal %v", whole.SrcIP, whole.DstIP, bytes.Equal(whole.Payload[20:], pay))
				}
				if c.m == ipvs.MethodTunnel && len(in.frames) != forward.Fragments(ipProbe(40+len(pay)), 1500-tunOH(c.gue)) {
					t.Fatalf("%d tunnel packets", len(in.frames))
				}
				if c.m != ipvs.MethodFullNAT {
					return
				}
				lport := binary.BigEndian.Uint16(whole.Payload[0:])
				w.handle(clearDF(frame(t, ifInt, rsMAC, intMAC, rip, lip, 6, 80, lport, 0x10, pay)))
				back := reassemble(t, ext.frames, 1500, false, 0)
				if !back.SrcIP.Equal(vip.AsSlice()) || !back.DstIP.Equal(cip.AsSlice()) {
					t.Fatalf("reply reassembled %s -> %s (drops %v)", back.SrcIP, back.DstIP, d.Drops.Get())
				}
			})
		}
	}
}

func tunOH(gue bool) int {
	if gue {
		return forward.GUEOverhead
	}
	return forward.IPIPOverhead
}

// ipProbe is an IPv4 header announcing a datagram of total bytes, enough
// for forward.Fragments.
func ipProbe(total int) []byte {
	b := make([]byte, 20)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(total))
	return b
}

// TestTooBigWithDF: DF set and over the egress MTU: dropped (too-big) and
// answered with fragmentation-needed announcing the MTU (less the tunnel
// overhead for TUN), from the VIP, in every mode; a real server's reply
// too big for the client's link is answered to the real server, from the
// director.
func TestTooBigWithDF(t *testing.T) {
	pay := payloadOf(2000)
	check := func(t *testing.T, d *Director, out [][]byte, mtu uint16, from, to netip.Addr) {
		t.Helper()
		if len(out) != 1 {
			t.Fatalf("%d frames back, want the ICMP error (drops %v)", len(out), d.Drops.Get())
		}
		p := decodeOut(t, out[0])
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		ic, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		if ic == nil || ic.TypeCode != layers.CreateICMPv4TypeCode(3, 4) || ic.Seq != mtu || !ip.SrcIP.Equal(from.AsSlice()) || !ip.DstIP.Equal(to.AsSlice()) {
			t.Fatalf("got %v from %s to %s, want frag-needed mtu %d from %s to %s", ic, ip.SrcIP, ip.DstIP, mtu, from, to)
		}
		if d.Drops[CntTooBig].Load() != 1 || d.ModeCounters()[MCntFragNeeded] != 1 {
			t.Fatalf("too-big %d, frag-needed-sent %d", d.Drops[CntTooBig].Load(), d.ModeCounters()[MCntFragNeeded])
		}
	}
	t.Run("nat", func(t *testing.T) {
		d, w, ext, in := testDirector(t, true)
		w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 17, 40000, 53, 0, pay))
		if len(in.frames) != 0 {
			t.Fatal("forwarded")
		}
		check(t, d, ext.frames, 1500, vip, cip)
	})
	t.Run("nat-reply", func(t *testing.T) {
		d, w, ext, in := testDirector(t, true)
		d.addOwn([]netip.Prefix{netip.MustParsePrefix("198.19.0.1/24")})
		w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 17, 40000, 53, 0, []byte("q")))
		d.SetLinkMTU(ifExt, 1400)
		in.frames = nil
		w.handle(frame(t, ifInt, rsMAC, intMAC, rip, cip, 17, 53, 40000, 0, payloadOf(1400)))
		if len(ext.frames) != 0 {
			t.Fatal("forwarded")
		}
		// No neighbour table here: the source falls back to the VIP.
		check(t, d, in.frames, 1400, vip, rip)
	})
	for _, c := range modeCases {
		t.Run(c.name, func(t *testing.T) {
			d, w, ext, in := modeDirector(t, c.m, c.gue)
			w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x02, nil))
			in.frames = nil
			w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x10, pay))
			if len(in.frames) != 0 {
				t.Fatal("forwarded")
			}
			mtu := 1500
			if c.m == ipvs.MethodTunnel {
				mtu -= tunOH(c.gue)
			}
			check(t, d, ext.frames, uint16(mtu), vip, cip)
		})
	}
}

// TestICMPRateLimited: a flood of SYNs to a service with no real server
// gets port unreachable within the token bucket (burst, then the rate),
// the rest counted; the answers are queued with the batch, never flushed
// one by one. (The old code answered every SYN, with a flush each.)
func TestICMPRateLimited(t *testing.T) {
	d := newCore(Config{Workers: 1, ICMPMsgsPerSec: 100, ICMPMsgsBurst: 10})
	d.ifMAC[ifExt] = extMAC
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	w := d.newWorker()
	ext := &fakeTx{}
	w.setTx(ifExt, ext)
	w.snap = d.snap.Load()
	const n = 1000
	start := time.Now()
	f := frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 1, 80, 0x02, nil)
	orig := append([]byte(nil), f.Vnet[:netio.VnetHdrLen+len(f.Data)]...)
	for i := 0; i < n; i++ {
		copy(f.Vnet[:len(orig)], orig)
		f.Data[14+20], f.Data[14+21] = byte(i>>8), byte(i)
		w.handle(f)
	}
	elapsed := time.Since(start)
	sent, limited := d.ModeCounters()[MCntUnreachSent], d.ModeCounters()[MCntICMPLimited]
	if d.Drops[CntNoDest].Load() != n || sent+limited != n || uint64(ext.n) != sent {
		t.Fatalf("no-dest %d, sent %d (queued %d), limited %d: want %d in all", d.Drops[CntNoDest].Load(), sent, ext.n, limited, n)
	}
	most := 10 + uint64(100*elapsed.Seconds()) + 1
	if sent < 10 || sent > most {
		t.Fatalf("%d port unreachables in %v, want 10..%d", sent, elapsed, most)
	}
	if ext.flushes != 0 {
		t.Fatalf("%d flushes while handling the batch, want none", ext.flushes)
	}
	// Refilled at the rate: after 100 ms, about 10 more.
	time.Sleep(100 * time.Millisecond)
	for i := 0; i < 50; i++ {
		copy(f.Vnet[:len(orig)], orig)
		f.Data[14+20], f.Data[14+21] = byte(i>>8), 0xf0
		w.handle(f)
	}
	if got := d.ModeCounters()[MCntUnreachSent] - sent; got < 5 {
		t.Fatalf("%d sent after a 100 ms pause at 100/s, want about 10", got)
	}
}

// TestICMPLimiterConcurrent: workers sharing the bucket never take more
// than the burst plus the rate over the time they ran (run with -race).
func TestICMPLimiterConcurrent(t *testing.T) {
	var l icmpLimiter
	l.init(1000, 50)
	start := time.Now()
	done := make(chan uint64)
	for g := 0; g < 4; g++ {
		go func() {
			var n uint64
			for time.Since(start) < 300*time.Millisecond {
				if l.allow() {
					n++
				}
			}
			done <- n
		}()
	}
	var total uint64
	for g := 0; g < 4; g++ {
		total += <-done
	}
	el := time.Since(start)
	if most := 50 + uint64(1000*el.Seconds()) + 4; total > most {
		t.Fatalf("%d tokens in %v, at most %d allowed", total, el, most)
	}
	if total < 50 {
		t.Fatalf("%d tokens, want at least the burst", total)
	}
	var none icmpLimiter
	none.init(-1, 0)
	if none.allow() {
		t.Fatal("a negative rate sent an ICMP error")
	}
}

// TestFragmentPathDoesNotAllocate: cutting a 9 KB datagram into six
// fragments in the worker's arena allocates nothing.
func TestFragmentPathDoesNotAllocate(t *testing.T) {
	_, w, _, in := testDirector(t, false)
	f := clearDF(frame(t, ifExt, cliMAC, extMAC, cip, vip, 17, 40000, 53, 0, payloadOf(9000)))
	orig := append([]byte(nil), f.Vnet[:netio.VnetHdrLen+len(f.Data)]...)
	w.handle(f)
	before := in.n
	allocs := testing.AllocsPerRun(200, func() {
		copy(f.Vnet[:len(orig)], orig)
		w.handle(f)
	})
	if allocs != 0 {
		t.Fatalf("the fragment path allocates %.1f times per datagram", allocs)
	}
	if in.n-before < 200*6 {
		t.Fatalf("%d fragments for 200+ datagrams", in.n-before)
	}
}
