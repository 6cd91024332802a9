package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/lab"
)

// xdpTestFrame is an Ethernet frame from src to dst MACs carrying an
// IPv4 UDP datagram to daddr whose payload is seq.
func xdpTestFrame(dstMAC, srcMAC net.HardwareAddr, daddr netip.Addr, seq uint32) []byte {
	f := make([]byte, 14+20+8+4)
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	ip[8], ip[9] = 64, unix.IPPROTO_UDP
	src := netip.MustParseAddr("198.18.0.10").As4()
	copy(ip[12:16], src[:])
	d := daddr.As4()
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[20:], 1234)
	binary.BigEndian.PutUint16(ip[22:], 53)
	binary.BigEndian.PutUint16(ip[24:], 12)
	binary.BigEndian.PutUint32(ip[28:], seq)
	return f
}

// xdpRig opens the AF_XDP reference in a namespace of its own, gen0 ->
// in0 | forwarder | out0 -> sink0, closed and removed at cleanup; it
// skips without root or AF_XDP.
func xdpRig(t testing.TB) (*xdpForwarder, map[string]netlink.Link, *lab.NS) {
	t.Helper()
	if err := lab.RequireRoot(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	if fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW, 0); err != nil {
		t.Skipf("skipping: this kernel has no AF_XDP: %v", err)
	} else {
		unix.Close(fd)
	}
	ns, err := lab.NewNS("xdp" + lab.RandomSuffix())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Delete)
	links := map[string]netlink.Link{}
	err = ns.Do(func() error {
		for _, p := range [][2]string{{"gen0", "in0"}, {"out0", "sink0"}} {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p[0]}, PeerName: p[1]}); err != nil {
				return err
			}
		}
		for _, n := range []string{"gen0", "in0", "out0", "sink0"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
			links[n] = l
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &xdpForwarder{dsts: [][6]byte{{2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2}}}
	copy(f.src[:], links["out0"].Attrs().HardwareAddr)
	err = ns.Do(func() error {
		return f.open(links["in0"].Attrs().Index, links["out0"].Attrs().Index, max(links["in0"].Attrs().NumRxQueues, 1), lab.VIP)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	return f, links, ns
}

// FuzzXDPProgram runs the XDP program (BPF_PROG_TEST_RUN, queue 0, which
// has an XSK) on any frame and checks its choice against a model written
// from the frame formats: redirect exactly the frames of at least 34
// bytes with the IPv4 ethertype whose destination (bytes 30-33) is the
// VIP; pass everything else.
func FuzzXDPProgram(f *testing.F) {
	fw, links, _ := xdpRig(f)
	in, gen := links["in0"].Attrs().HardwareAddr, links["gen0"].Attrs().HardwareAddr
	f.Add(xdpTestFrame(in, gen, lab.VIP, 0))
	f.Add(xdpTestFrame(in, gen, netip.MustParseAddr("198.18.0.101"), 0))
	f.Add(xdpTestFrame(in, gen, lab.VIP, 0)[:34])
	f.Add([]byte{})
	vip := lab.VIP.As4()
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 14 {
			return // the kernel refuses test input shorter than a header
		}
		got, err := fw.prog.Run(&ebpf.RunOptions{Data: frame})
		if err != nil {
			t.Fatalf("test run of % x: %v", frame, err)
		}
		want := uint32(2) // XDP_PASS
		if len(frame) >= 34 && frame[12] == 0x08 && frame[13] == 0 && bytes.Equal(frame[30:34], vip[:]) {
			want = 4 // XDP_REDIRECT
		}
		if got != want {
			t.Fatalf("frame % x: action %d, want %d", frame, got, want)
		}
	})
}

// TestXDPForwarder runs the AF_XDP reference in a namespace of its own
// (see xdpRig): the XDP program's choice for each kind of frame (read
// back through BPF_PROG_TEST_RUN), and frames to the VIP arriving at
// sink0 with the forwarder's MACs (the next real server's in turn),
// payload intact, while frames to another address do not.
func TestXDPForwarder(t *testing.T) {
	f, links, ns := xdpRig(t)
	dsts := f.dsts
	inMAC, genMAC := links["in0"].Attrs().HardwareAddr, links["gen0"].Attrs().HardwareAddr
	other := netip.MustParseAddr("198.18.0.101")
	vipFrame := xdpTestFrame(inMAC, genMAC, lab.VIP, 0)
	arp := append([]byte(nil), vipFrame...)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)
	v6 := append([]byte(nil), vipFrame...)
	binary.BigEndian.PutUint16(v6[12:], 0x86dd)
	// rx_queue_index is 0 in a test run, where the map has an XSK.
	const pass, redirect = 2, 4
	for _, c := range []struct {
		name  string
		frame []byte
		want  uint32
	}{
		{"to the VIP", vipFrame, redirect},
		{"to another address", xdpTestFrame(inMAC, genMAC, other, 0), pass},
		{"ARP", arp, pass},
		{"IPv6 ethertype", v6, pass},
		{"shorter than its IPv4 header", vipFrame[:33], pass},
	} {
		got, err := f.prog.Run(&ebpf.RunOptions{Data: c.frame})
		if err != nil {
			t.Fatalf("%s: test run: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: XDP action %d, want %d", c.name, got, c.want)
		}
	}

	// Receive at sink0, send from gen0.
	var rx, tx int
	err := ns.Do(func() error {
		var err error
		if rx, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(0x0800))); err != nil {
			return err
		}
		if err = unix.Bind(rx, &unix.SockaddrLinklayer{Protocol: htons(0x0800), Ifindex: links["sink0"].Attrs().Index}); err != nil {
			return err
		}
		tx, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rx)
	defer unix.Close(tx)
	if err := unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	tid := make(chan int, 1)
	go func() {
		defer close(done)
		f.run(stop, tid)
	}()
	<-tid
	var once sync.Once
	halt := func() { once.Do(func() { close(stop); <-done }) }
	defer halt()

	const n = 64
	to := &unix.SockaddrLinklayer{Ifindex: links["gen0"].Attrs().Index, Halen: 6}
	for i := uint32(0); i < n; i++ {
		// Each frame to the VIP has one to another address before it,
		// which must not come out.
		for _, fr := range [][]byte{xdpTestFrame(inMAC, genMAC, other, 1000+i), xdpTestFrame(inMAC, genMAC, lab.VIP, i)} {
			if err := unix.Sendto(tx, fr, 0, to); err != nil {
				t.Fatal(err)
			}
		}
	}
	buf := make([]byte, 2048)
	for i := uint32(0); i < n; i++ {
		m, _, err := unix.Recvfrom(rx, buf, 0)
		if errors.Is(err, unix.EAGAIN) {
			halt()
			t.Fatalf("frame %d of %d did not arrive at sink0 (forwarded %d, counters %v)", i, n, f.Fwd, f.counters())
		}
		if err != nil {
			t.Fatal(err)
		}
		got := buf[:m]
		want := xdpTestFrame(dsts[i%2][:], f.src[:], lab.VIP, i)
		if !bytes.Equal(got, want) {
			t.Fatalf("frame %d at sink0:\n got % x\nwant % x", i, got, want)
		}
	}
	// Nothing else: the frames to the other address stayed in in0's
	// kernel.
	_ = unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200_000})
	if m, _, err := unix.Recvfrom(rx, buf, 0); err == nil {
		t.Errorf("sink0 got a frame past the %d forwarded: % x", n, buf[:m])
	}
	halt()
	if f.Fwd != n || f.Drops.Load() != 0 {
		t.Errorf("forwarded %d, dropped %d; want %d and 0", f.Fwd, f.Drops.Load(), n)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
