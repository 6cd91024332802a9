package netio

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/packet"
)

// vethNS makes a namespace with a veth pair a0 <-> b0, both up at mtu,
// removed at cleanup.
func vethNS(t *testing.T, mtu int) *lab.NS {
	t.Helper()
	if err := lab.RequireRoot(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	ns, err := lab.NewNS("netio" + lab.RandomSuffix())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Delete)
	err = ns.Do(func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "a0", MTU: mtu}, PeerName: "b0"}); err != nil {
			return err
		}
		// The sender speaks no IPv6 of its own: its duplicate address
		// detection would reach b0 as a Neighbor Solicitation, which
		// golvs's filters take on purpose.
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/a0/disable_ipv6", []byte("1"), 0o644); err != nil {
			return err
		}
		for _, n := range []string{"a0", "b0"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetMTU(l, mtu); err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// ipv4Only is a filter that takes every IPv4 frame (and not the IPv6
// chatter of a link that just came up).
func ipv4Only() []bpf.RawInstruction {
	f, err := bpf.Assemble(append(preamble(false),
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipTrue: 0, SkipFalse: 1},
		bpf.RetConstant{Val: snapAll},
		bpf.RetConstant{Val: 0}))
	if err != nil {
		panic(err)
	}
	return f
}

// openRingTx opens a ring with cfg on b0 and a Tx on a0 in ns, closed
// when the test ends, and returns b0's MAC.
func openRingTx(t *testing.T, ns interface{ Do(func() error) error }, cfg RingConfig) (*Ring, *Tx, net.HardwareAddr) {
	t.Helper()
	var ring *Ring
	if err := ns.Do(func() (err error) { ring, err = OpenRing("b0", cfg); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ring.Close() })
	tx, mac := openPeerTx(t, ns)
	return ring, tx, mac
}

// openPeerTx opens a Tx on a0 in ns, closed when the test ends, and
// returns b0's MAC (where its frames go).
func openPeerTx(t *testing.T, ns interface{ Do(func() error) error }) (*Tx, net.HardwareAddr) {
	t.Helper()
	var tx *Tx
	var mac net.HardwareAddr
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName("b0")
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr
		tx, err = OpenTx("a0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Close() })
	return tx, mac
}

// tcpUDPOnly takes IPv4 and IPv6 TCP and UDP frames (the IPv6 ones with
// the protocol, or destination options, right after the fixed header),
// nothing else.
func tcpUDPOnly() []bpf.RawInstruction {
	f, err := bpf.Assemble(append(preamble(false),
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipTrue: 0, SkipFalse: 2},
		bpf.LoadAbsolute{Off: 14 + 9, Size: 1},
		bpf.Jump{Skip: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x86dd, SkipTrue: 0, SkipFalse: 5},
		bpf.LoadAbsolute{Off: 14 + 6, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 60, SkipTrue: 2, SkipFalse: 0},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6, SkipTrue: 1, SkipFalse: 0},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 17, SkipTrue: 0, SkipFalse: 1},
		bpf.RetConstant{Val: snapAll},
		bpf.RetConstant{Val: 0}))
	if err != nil {
		panic(err)
	}
	return f
}

// tcpFrame is a virtio header and an Ethernet/IPv4/TCP frame of n bytes
// (n >= 54) from 198.18.0.10:sport to 198.18.0.100:80, to dst.
func tcpFrame(n int, dst net.HardwareAddr, sport uint16) []byte {
	b := make([]byte, VnetHdrLen+n)
	f := b[VnetHdrLen:]
	copy(f, ipFrame(6, [4]byte{198, 18, 0, 10}, [4]byte{198, 18, 0, 100}, sport, 80))
	copy(f[0:6], dst)
	binary.BigEndian.PutUint16(f[14+2:], uint16(n-14))
	h := packet.IPv4(f[14:34])
	h.SetChecksum(0)
	h.SetChecksum(h.HeaderChecksum())
	return b
}

// drain reads from ring until want frames arrived or 10 s passed, handing
// each to fn.
func drain(t *testing.T, ring *Ring, want int, fn func(f *Frame)) int {
	t.Helper()
	var b Block
	var f Frame
	got := 0
	deadline := time.Now().Add(10 * time.Second)
	for got < want && time.Now().Before(deadline) {
		ok, err := ring.Next(100*time.Millisecond, &b)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			continue
		}
		for b.Frame(&f) {
			fn(&f)
			got++
		}
		b.Release()
	}
	return got
}

// TestRingAndTx sends frames with a Tx on one end of a veth pair inside a
// throwaway namespace and reads them from a Ring on the other end, in both
// ring versions: the filter is applied, frames come whole with their
// virtio header, headroom and the kernel's packet type.
func TestRingAndTx(t *testing.T) {
	for _, v := range []int{3, 2} {
		t.Run(fmt.Sprintf("tpacket-v%d", v), func(t *testing.T) { ringAndTx(t, v) })
	}
}

func ringAndTx(t *testing.T, version int) {
	ns := vethNS(t, 1500)
	f, err := BuildFilter([]Match{{Proto: 6, Addr: [4]byte{198, 18, 0, 100}, Port: 80}}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	ring, tx, bmac := openRingTx(t, ns, RingConfig{Filter: f, BlockSize: 1 << 16, Blocks: 4, Version: version, Frames: 128})
	const n = 100
	for i := 0; i < n; i++ {
		dst := bmac
		if i%2 == 1 {
			dst = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99} // another host's
		}
		tx.Queue(tcpFrame(60, dst, uint16(1000+i)))
	}
	// One frame the filter must drop.
	other := make([]byte, VnetHdrLen+60)
	copy(other[VnetHdrLen:], ipFrame(6, [4]byte{198, 18, 0, 10}, [4]byte{198, 18, 0, 100}, 999, 81))
	tx.Queue(other)
	tx.Flush()
	if st := tx.Stats(); st.Sent != n+1 || st.Errors != 0 || st.Dropped != 0 {
		t.Fatalf("tx: %+v, want %d sent", st, n+1)
	}
	got := map[uint16]bool{}
	drain(t, ring, n, func(f *Frame) {
		var p packet.Parsed
		packet.Decode(f.Data, &p)
		if p.Kind != packet.KindIPv4 || p.DPort != 80 {
			t.Fatalf("unexpected frame through the filter: %+v", p)
		}
		if len(f.Vnet) != VnetHdrLen || len(f.Buf()) != VnetHdrLen+len(f.Data) {
			t.Fatalf("bad virtio header view")
		}
		wantType := uint8(PacketHost)
		if (p.SPort-1000)%2 == 1 {
			wantType = PacketOtherHost
		}
		if f.PktType != wantType {
			t.Fatalf("frame %d: packet type %d, want %d", p.SPort-1000, f.PktType, wantType)
		}
		if !f.Grow(20) || len(f.Data) != 60+20 {
			t.Fatalf("no headroom for a 20-byte outer header (PACKET_RESERVE)")
		}
		got[p.SPort] = true
	})
	if len(got) != n {
		t.Fatalf("received %d of %d frames", len(got), n)
	}
	st, err := ring.Stats()
	if err != nil || st.Packets != n || st.Drops != 0 {
		t.Fatalf("ring stats %+v, %v; want %d packets, 0 drops", st, err, n)
	}
}

// TestRingV2Split checks the default ring's three sockets: frames up to
// 96 bytes come through the tiny ring, up to the MTU slot's size through
// the MTU ring, longer ones (a GSO aggregate here) whole through the
// aggregate ring, each exactly once and in the order they were sent.
func TestRingV2Split(t *testing.T) {
	ns := vethNS(t, 9000)
	// MTU slots of 2048 bytes on a 9000-byte link: 1888-byte frames at
	// most, the rest goes to the aggregate ring.
	ring, tx, bmac := openRingTx(t, ns, RingConfig{FrameSize: 2048, Frames: 64, Filter: ipv4Only()})
	if s := ring.Describe(); s == "" {
		t.Fatal("no description")
	}
	sizes := []int{60, 1514, 96, 97, 2048 - v2MacRoom, 4000, 60, 2048 - v2MacRoom + 1, 9014, 64, 1000}
	for i, n := range sizes {
		tx.Queue(tcpFrame(n, bmac, uint16(i)))
	}
	tx.Flush()
	if st := tx.Stats(); st.Sent != uint64(len(sizes)) {
		t.Fatalf("tx: %+v", st)
	}
	seen := map[uint16]int{}
	var order []uint16
	drain(t, ring, len(sizes), func(f *Frame) {
		var p packet.Parsed
		packet.Decode(f.Data, &p)
		if p.Kind != packet.KindIPv4 {
			return
		}
		order = append(order, p.SPort)
		if f.Trunc || len(f.Data) != sizes[p.SPort] {
			t.Errorf("frame of %d bytes: got %d bytes, truncated %v", sizes[p.SPort], len(f.Data), f.Trunc)
		}
		seen[p.SPort]++
	})
	for i, n := range sizes {
		if seen[uint16(i)] != 1 {
			t.Errorf("frame of %d bytes seen %d times, want once", n, seen[uint16(i)])
		}
	}
	for i, sp := range order {
		if int(sp) != i {
			t.Fatalf("frames taken in the order %v, want the order sent", order)
		}
	}
}

// TestRingVLAN: a tagged frame's tag, stripped by the receive path,
// reaches the Frame.
func TestRingVLAN(t *testing.T) {
	ns := vethNS(t, 1500)
	var ring *Ring
	var tx *Tx
	err := ns.Do(func() error {
		var err error
		if ring, err = OpenRing("b0", RingConfig{}); err != nil {
			return err
		}
		tx, err = OpenTx("a0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	defer tx.Close()
	plain := tcpFrame(64, net.HardwareAddr{2, 0, 0, 0, 0, 1}, 7)
	tagged := make([]byte, len(plain)+4)
	copy(tagged, plain[:VnetHdrLen+12])
	binary.BigEndian.PutUint16(tagged[VnetHdrLen+12:], packet.EtherTypeVLN)
	binary.BigEndian.PutUint16(tagged[VnetHdrLen+14:], 0x2000|42) // PCP 1, VID 42
	copy(tagged[VnetHdrLen+16:], plain[VnetHdrLen+12:])
	tx.Queue(plain)
	tx.Queue(tagged)
	tx.Flush()
	var vlans []uint16
	ours := 0
	deadline := time.Now().Add(10 * time.Second)
	for ours < 2 && time.Now().Before(deadline) {
		drain(t, ring, 1, func(f *Frame) {
			typ := packet.Eth(f.Data).Type()
			if typ == packet.EtherTypeIP6 {
				return // the link's own IPv6 chatter
			}
			ours++
			if typ != packet.EtherTypeIP4 {
				t.Errorf("frame not untagged: type %#x", typ)
			}
			if f.VLANValid {
				vlans = append(vlans, f.VLANTCI)
			}
		})
	}
	if len(vlans) != 1 || vlans[0] != 0x2000|42 {
		t.Fatalf("VLAN tags seen %#x, want one 0x202a", vlans)
	}
}

// TestRingDrops: frames the ring had no room for show in its statistics.
func TestRingDrops(t *testing.T) {
	ns := vethNS(t, 1500)
	var ring *Ring
	var tx *Tx
	err := ns.Do(func() error {
		var err error
		if ring, err = OpenRing("b0", RingConfig{TinyFrames: 32, Filter: ipv4Only()}); err != nil {
			return err
		}
		tx, err = OpenTx("a0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	defer tx.Close()
	const sent = 200
	for i := 0; i < sent; i++ {
		tx.Queue(tcpFrame(60, net.HardwareAddr{2, 0, 0, 0, 0, 1}, uint16(i)))
	}
	tx.Flush()
	// Nothing read the ring while the frames were offered; now count
	// until the kernel has seen them all.
	var st RingStats
	got := 0
	deadline := time.Now().Add(10 * time.Second)
	for st.Packets < sent && time.Now().Before(deadline) {
		got += drain(t, ring, 1, func(*Frame) {})
		s, err := ring.Stats()
		if err != nil {
			t.Fatal(err)
		}
		st.Add(s)
	}
	got += drain(t, ring, sent-got-int(st.Drops), func(*Frame) {})
	if got > 32 {
		t.Errorf("read %d frames from a ring of 32 that nothing read while they came", got)
	}
	if st.Packets != sent || st.Drops == 0 || uint64(got)+st.Drops != sent {
		t.Fatalf("ring stats %+v with %d frames read, want %d packets, read + dropped = sent", st, got, sent)
	}
}

// TestTxFull: when the device takes nothing (its peer is down, so every
// frame comes back ENOBUFS), a flush does not give up one frame per
// system call: it tries the rest of the batch once more and counts it as
// dropped. A frame the kernel refuses outright (longer than the MTU) is
// counted as an error and the rest of the batch still goes.
func TestTxFull(t *testing.T) {
	ns := vethNS(t, 1500)
	var tx *Tx
	err := ns.Do(func() error {
		var err error
		tx, err = OpenTx("a0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	dst := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	tx.Queue(tcpFrame(60, dst, 1))
	tx.Queue(tcpFrame(3000, dst, 2)) // over the MTU, no GSO request
	tx.Queue(tcpFrame(60, dst, 3))
	tx.Flush()
	if st := tx.Stats(); st.Sent != 2 || st.Errors != 1 || st.Dropped != 0 || st.LastErr == 0 {
		t.Fatalf("tx %+v, want 2 sent and 1 refused", st)
	}
	err = ns.Do(func() error {
		l, err := netlink.LinkByName("b0")
		if err != nil {
			return err
		}
		return netlink.LinkSetDown(l)
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		tx.Queue(tcpFrame(60, dst, uint16(i)))
	}
	tx.Flush()
	if st := tx.Stats(); st.Sent != 2 || st.Errors != 1 || st.Dropped != 100 || tx.Pending() != 0 {
		t.Fatalf("tx %+v (pending %d), want the 100 frames dropped and counted", st, tx.Pending())
	}
}

// TestFanoutMergedTiers: with FanoutCPU every worker's version 2 sockets
// on an interface share one fanout group (one fanout hook per frame) whose
// program picks the worker by CPU and its socket by length. Frames of every tier, sent from
// a thread pinned to each CPU in turn (no RPS: the receive runs there),
// reach exactly the ring of that CPU's worker, whole, once, in order.
func TestFanoutMergedTiers(t *testing.T) {
	ns := vethNS(t, 9000)
	var cpus unix.CPUSet
	if err := unix.SchedGetaffinity(0, &cpus); err != nil {
		t.Fatal(err)
	}
	var allowed []int
	for i := 0; i < 1024 && len(allowed) < 2; i++ {
		if cpus.IsSet(i) {
			allowed = append(allowed, i)
		}
	}
	const workers = 2
	fo := NewFanout(FanoutCPU)
	var rings [workers]*Ring
	err := ns.Do(func() error {
		for w := range rings {
			var err error
			if rings[w], err = OpenRing("b0", RingConfig{FrameSize: 2048, Frames: 64, Filter: ipv4Only(), Fanout: fo}); err != nil {
				return err
			}
		}
		return nil
	})
	for _, r := range rings {
		if r != nil {
			defer r.Close()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	tx, bmac := openPeerTx(t, ns)
	// One group: every socket of both rings reports the same group, of
	// the CBPF kind.
	var group int
	for w, r := range rings {
		for i, s := range r.socks {
			v, err := unix.GetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_FANOUT)
			if err != nil {
				t.Fatal(err)
			}
			if w == 0 && i == 0 {
				group = v & 0xffff
			}
			if v&0xffff != group || (v>>16)&0xff != unix.PACKET_FANOUT_CBPF {
				t.Fatalf("worker %d socket %d: fanout %#x, want group %#x of kind CBPF", w, i, v, group)
			}
		}
	}
	sizes := []int{60, 1514, 96, 97, 2048 - v2MacRoom, 4000, 60, 2048 - v2MacRoom + 1, 9014, 64, 1000}
	for _, cpu := range allowed {
		// Send from a thread on cpu (the test's thread is put back).
		done := make(chan error)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var one unix.CPUSet
			one.Set(cpu)
			if err := unix.SchedSetaffinity(0, &one); err != nil {
				done <- err
				return
			}
			for i, n := range sizes {
				tx.Queue(tcpFrame(n, bmac, uint16(cpu*100+i)))
			}
			tx.Flush()
			done <- nil
		}()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		for w, r := range rings {
			want := 0
			if cpu%workers == w {
				want = len(sizes)
			}
			var order []int
			got := drain(t, r, want, func(f *Frame) {
				var p packet.Parsed
				packet.Decode(f.Data, &p)
				i := int(p.SPort) - cpu*100
				if i < 0 || i >= len(sizes) || f.Trunc || len(f.Data) != sizes[i] {
					t.Errorf("cpu %d, worker %d: frame %d of %d bytes, truncated %v", cpu, w, p.SPort, len(f.Data), f.Trunc)
					return
				}
				order = append(order, i)
			})
			if want == 0 {
				// Nothing may come: give it a moment.
				var b Block
				if ok, _ := r.Next(50*time.Millisecond, &b); ok {
					t.Errorf("cpu %d: worker %d got %d frames, want none", cpu, w, b.Len())
					b.Release()
				}
				continue
			}
			if got != want {
				t.Fatalf("cpu %d: worker %d received %d of %d frames", cpu, w, got, want)
			}
			for k, i := range order {
				if k != i {
					t.Fatalf("cpu %d: order %v", cpu, order)
				}
			}
		}
	}
	if len(allowed) < 2 {
		t.Logf("one CPU: only worker %d's ring was checked", allowed[0]%workers)
	}
}

// TestGroupYields checks that a worker's wait never sleeps longer than
// yieldEvery, however long the timeout it is given, that it yields to the
// Go scheduler before sleeping once yieldEvery has passed (so the
// runtime's monitor never preempts it just after a frame wakes it), and
// that a frame still ends the wait.
func TestGroupYields(t *testing.T) {
	ns := vethNS(t, 1500)
	f, err := BuildFilter([]Match{{Proto: 6, Addr: [4]byte{198, 18, 0, 100}, Port: 80}}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	ring, tx, bmac := openRingTx(t, ns, RingConfig{Filter: f, Version: 2, Frames: 128})
	g := NewGroup([]*Ring{ring})
	type result struct {
		yields int
		ready  bool
	}
	done := make(chan result, 1)
	idle, sent := make(chan struct{}), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var r result
		last := g.yielded
		// An idle ring: each Wait of an hour must come back (in
		// yieldEvery), and the waits must yield.
		for i := 0; i < 5; i++ {
			g.Wait(time.Hour)
			if g.yielded != last {
				r.yields++
				last = g.yielded
			}
		}
		close(idle)
		<-sent
		for i := 0; i < 1000 && !g.ready(); i++ {
			g.Wait(time.Hour)
		}
		r.ready = g.ready()
		done <- r
	}()
	var r result
	select {
	case <-idle:
	case <-time.After(30 * time.Second):
		t.Fatal("Wait(time.Hour) on an idle ring did not come back: it slept past yieldEvery")
	}
	tx.Queue(tcpFrame(60, bmac, 1000))
	tx.Flush()
	close(sent)
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a frame did not end the wait")
	}
	if r.yields < 2 {
		t.Fatalf("%d yields in 5 idle waits of up to %v each; want at least 2", r.yields, yieldEvery)
	}
	if !r.ready {
		t.Fatal("a frame did not end the wait")
	}
}

// TestGroupSpinAdapts runs the look window on a real ring: frames that
// come a few hundred microseconds after the last open it (each wake-up
// was one a long enough look would have saved) until a look outlasts the
// gaps and catches the frames without a wake-up, where it stops growing;
// a quiet ring shuts it again. Spin is 5 ms, ten times the gaps sent, so
// a busy machine's delays do not decide the outcome; only the end states
// are checked.
func TestGroupSpinAdapts(t *testing.T) {
	ns := vethNS(t, 1500)
	f, err := BuildFilter([]Match{{Proto: 6, Addr: [4]byte{198, 18, 0, 100}, Port: 80}}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	ring, tx, bmac := openRingTx(t, ns, RingConfig{Filter: f, Version: 2, Frames: 128})
	const spin = 5 * time.Millisecond
	g := NewGroup([]*Ring{ring})
	g.Spin = spin
	type report struct {
		frames int
		window time.Duration
	}
	if w := g.Window(); w != 0 {
		t.Fatalf("window %s before any traffic, want 0", w)
	}
	reports := make(chan report, 1024)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var b Block
		var fr Frame
		for {
			select {
			case <-stop:
				return
			default:
			}
			g.Wait(time.Hour)
			n := 0
			for ring.TryNext(&b) {
				for b.Frame(&fr) {
					n++
				}
				b.Release()
			}
			select {
			case reports <- report{n, g.Window()}:
			default:
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	next := func(deadline time.Duration, ok func(report) bool) report {
		t.Helper()
		end := time.After(deadline)
		for {
			select {
			case r := <-reports:
				if ok(r) {
					return r
				}
			case <-end:
				t.Fatalf("no report as wanted within %s", deadline)
			}
		}
	}
	// Traffic a frame every 300 us or more: the window opens past that.
	const gap = 300 * time.Microsecond
	var win time.Duration
	for i := 0; i < 60 && win < gap; i++ {
		tx.Queue(tcpFrame(60, bmac, uint16(1000+i)))
		tx.Flush()
		win = next(30*time.Second, func(r report) bool { return r.frames > 0 }).window
		if win > spin {
			t.Fatalf("window %s past Spin %s", win, spin)
		}
		time.Sleep(gap)
	}
	if win < gap {
		t.Fatalf("60 frames %s apart opened the window to %s only", gap, win)
	}
	// Quiet: every wake-up is a timeout long past Spin, and the window
	// halves down to shut.
	next(30*time.Second, func(r report) bool { return r.window == 0 })
}

// TestRingLinkFlap takes the ring's link down and up again: the kernel
// reports ENETDOWN on the ring's sockets, which must be read (and is
// counted in the ring's Stats), or poll() reports it forever and a worker
// never sleeps again; the ring then receives again. Both waits are checked, Group.Wait (the
// workers') and Ring.Next (rs-tun's): after the flap each must sleep out
// its timeout on a quiet ring (a wait that spun returned at once, tens of
// thousands of times in the time allowed here, where sleeping allows 75).
func TestRingLinkFlap(t *testing.T) {
	ns := vethNS(t, 1500)
	ring, tx, bmac := openRingTx(t, ns, RingConfig{Filter: ipv4Only(), Version: 2, Frames: 128})
	// waits counts the returns of wait within 300 ms on a quiet ring.
	waits := func(wait func()) int {
		n := 0
		for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); n++ {
			wait()
		}
		return n
	}
	var b Block
	g := NewGroup([]*Ring{ring})
	for _, c := range []struct {
		name string
		wait func()
	}{
		{"Group.Wait", func() { g.Wait(50 * time.Millisecond) }},
		{"Ring.Next", func() {
			if ok, err := ring.Next(50*time.Millisecond, &b); err != nil {
				t.Fatal(err)
			} else if ok {
				b.Release()
			}
		}},
	} {
		if _, err := ring.Stats(); err != nil { // reset: what follows is this flap's
			t.Fatal(err)
		}
		if err := lab.FlapLink(ns, "b0"); err != nil {
			t.Fatal(err)
		}
		// Group.Wait sleeps 4 ms at most (yieldEvery), Ring.Next the 50
		// ms asked: at most 75 returns in 300 ms.
		if n := waits(c.wait); n > 1000 {
			t.Fatalf("%s: returned %d times in 300 ms after a link flap: it does not sleep", c.name, n)
		}
		st, err := ring.Stats()
		if err != nil || st.Errors == 0 || st.LastErr != unix.ENETDOWN {
			t.Fatalf("%s: ring stats %+v, %v; want ENETDOWN counted", c.name, st, err)
		}
		if st, _ := ring.Stats(); st.Errors != 0 {
			t.Fatalf("%s: errors %d counted again by a second read", c.name, st.Errors)
		}
		tx.Queue(tcpFrame(60, bmac, 4242))
		tx.Flush()
		got := drain(t, ring, 1, func(*Frame) {})
		if got != 1 {
			t.Fatalf("%s: the ring took %d frames after the link came back, want 1", c.name, got)
		}
	}
}
