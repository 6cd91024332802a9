package netio

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/golvs/golvs/packet"
)

// openTxPair opens a TxRing of slots slots on a0 and a receive ring on b0
// (IPv4 frames only) in a throwaway namespace, and returns b0's MAC.
func openTxPair(t *testing.T, ns interface{ Do(func() error) error }, slots int) (*TxRing, *Ring, net.HardwareAddr) {
	t.Helper()
	var tx *TxRing
	var ring *Ring
	var mac net.HardwareAddr
	err := ns.Do(func() error {
		var err error
		if ring, err = OpenRing("b0", RingConfig{Filter: ipv4Only(), Frames: 1024, TinyFrames: 8192}); err != nil {
			return err
		}
		ifi, err := net.InterfaceByName("b0")
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr
		tx, err = OpenTxRing("a0", TxRingConfig{Frames: slots})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Close(); ring.Close() })
	return tx, ring, mac
}

// TestTxRing sends many times the ring's slots through a TX ring, by copy
// (Queue) and in place (Slot, Commit), and checks that every frame arrives
// once, whole and in order, and that the counters say so.
func TestTxRing(t *testing.T) {
	ns := vethNS(t, 1500)
	tx, ring, mac := openTxPair(t, ns, 64)
	const n = 2000
	var sizes [n]int
	next := 0
	check := func(f *Frame) {
		var p packet.Parsed
		packet.Decode(f.Data, &p)
		if int(p.SPort) != next {
			t.Fatalf("frame %d arrived at position %d", p.SPort, next)
		}
		if len(f.Data) != sizes[next] {
			t.Fatalf("frame %d: %d bytes, want %d", next, len(f.Data), sizes[next])
		}
		next++
	}
	sent, got := 0, 0
	var b Block
	var f Frame
	for sent < n {
		for k := 0; k < 48 && sent < n; k++ {
			// Sizes of one of the receive ring's sockets: the order
			// across its sockets is not what is tested here.
			size := 100 + sent%1300
			sizes[sent] = size
			fr := tcpFrame(size, mac, uint16(sent))
			if sent%2 == 0 {
				tx.Queue(fr)
			} else {
				s := tx.Slot()
				for s == nil {
					tx.Flush()
					s = tx.Slot()
				}
				tx.Commit(copy(s, fr))
			}
			sent++
		}
		tx.Flush()
		// Keep the receive ring from overflowing: take what arrived.
		for ring.TryNext(&b) {
			for b.Frame(&f) {
				check(&f)
				got++
			}
			b.Release()
		}
	}
	got += drain(t, ring, n-got, check)
	if got != n {
		t.Fatalf("received %d of %d frames", got, n)
	}
	for i := 0; i < 100 && tx.Pending() > 0; i++ {
		tx.Flush()
	}
	if st := tx.Stats(); st.Sent != n || st.Errors != 0 || st.Dropped != 0 {
		t.Fatalf("stats %+v, want %d sent", st, n)
	}
}

// TestTxRingRefusedAndFull: a frame the kernel refuses (a virtio header
// asking for a checksum past its end) is counted and the ring goes on; a
// frame longer than a slot goes out on its own, in order; with the link
// down the ring fills and what does not fit is dropped and counted, never
// blocking, and it drains when the link is back.
func TestTxRingRefusedAndFull(t *testing.T) {
	ns := vethNS(t, 9000)
	tx, ring, mac := openTxPair(t, ns, 32)
	bad := tcpFrame(60, mac, 2)
	bad[0] = VnetNeedsCsum
	binary.LittleEndian.PutUint16(bad[6:], 500) // csum_start past the frame
	binary.LittleEndian.PutUint16(bad[8:], 16)
	tx.Queue(tcpFrame(60, mac, 1))
	tx.Queue(bad)
	tx.Queue(tcpFrame(60, mac, 3))
	tx.Queue(tcpFrame(4000, mac, 4)) // longer than a 2 KiB slot
	tx.Queue(tcpFrame(60, mac, 5))
	tx.Flush()
	var order []uint16
	drain(t, ring, 4, func(f *Frame) {
		var p packet.Parsed
		packet.Decode(f.Data, &p)
		order = append(order, p.SPort)
	})
	if len(order) != 4 || order[0] != 1 || order[1] != 3 || order[2] != 4 || order[3] != 5 {
		t.Fatalf("received %v, want [1 3 4 5]", order)
	}
	if st := tx.Stats(); st.Sent != 4 || st.Errors != 1 || st.Dropped != 0 {
		t.Fatalf("stats %+v, want 4 sent, 1 refused", st)
	}
	setLink := func(up bool) {
		t.Helper()
		err := ns.Do(func() error {
			l, err := netlink.LinkByName("a0")
			if err != nil {
				return err
			}
			if up {
				return netlink.LinkSetUp(l)
			}
			return netlink.LinkSetDown(l)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setLink(false)
	slots := tx.Slots()
	for i := 0; i < slots+10; i++ {
		tx.Queue(tcpFrame(60, mac, uint16(100+i)))
		if i%8 == 7 {
			tx.Flush()
		}
	}
	tx.Flush()
	if st := tx.Stats(); st.Dropped != 10 || tx.Pending() != slots {
		t.Fatalf("link down: stats %+v, pending %d; want 10 dropped, %d waiting", st, tx.Pending(), slots)
	}
	setLink(true)
	tx.Flush()
	got := drain(t, ring, slots, func(*Frame) {})
	if got != slots || tx.Pending() != 0 {
		t.Fatalf("after the link came back: received %d, pending %d; want %d, 0", got, tx.Pending(), slots)
	}
	if st := tx.Stats(); st.Sent != uint64(4+slots) {
		t.Fatalf("stats %+v, want %d sent", st, 4+slots)
	}
}

func TestTxRingConfigErrors(t *testing.T) {
	ns := vethNS(t, 1500)
	for _, c := range []struct {
		cfg  TxRingConfig
		want string
	}{
		{TxRingConfig{FrameSize: 3000}, "slot size 3000"},
		{TxRingConfig{Frames: 3}, "3 slots"},
	} {
		err := ns.Do(func() error { _, err := OpenTxRing("a0", c.cfg); return err })
		if err == nil || !contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want an error naming %q", c.cfg, err, c.want)
		}
	}
	if _, err := OpenTxRing("nosuchif0", TxRingConfig{}); err == nil || !contains(err.Error(), "no such interface") {
		t.Errorf("missing interface: %v", err)
	}
}

// TestTxRingDeviceRefuses: a frame the device drops (longer than the
// peer's MTU: veth answers ENOBUFS and the kernel would offer it again at
// every kick) is dropped and counted, and the frames around it go; with
// the peer down every frame is refused, the ring never wedges or blocks,
// and what is sent plus what is dropped is what was queued.
func TestTxRingDeviceRefuses(t *testing.T) {
	ns := vethNS(t, 9000)
	setMTU := func(dev string, mtu int) {
		t.Helper()
		err := ns.Do(func() error {
			l, err := netlink.LinkByName(dev)
			if err != nil {
				return err
			}
			return netlink.LinkSetMTU(l, mtu)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setMTU("b0", 1500)
	tx, ring, mac := openTxPair(t, ns, 32)
	tx.Queue(tcpFrame(60, mac, 1))
	tx.Queue(tcpFrame(1800, mac, 2)) // fits a slot, not b0
	tx.Queue(tcpFrame(60, mac, 3))
	tx.Queue(tcpFrame(60, mac, 4))
	tx.Flush()
	for i := 0; i < 10 && tx.Pending() > 0; i++ {
		tx.Flush()
	}
	var got []uint16
	drain(t, ring, 3, func(f *Frame) {
		var p packet.Parsed
		packet.Decode(f.Data, &p)
		got = append(got, p.SPort)
	})
	if len(got) != 3 || got[0] != 1 || got[1] != 3 || got[2] != 4 {
		t.Fatalf("received %v, want [1 3 4]", got)
	}
	if st := tx.Stats(); st.Sent != 3 || st.Dropped != 1 || st.Errors != 0 || tx.Pending() != 0 {
		t.Fatalf("stats %+v, pending %d; want 3 sent, 1 dropped", st, tx.Pending())
	}

	setUp := func(up bool) {
		t.Helper()
		err := ns.Do(func() error {
			l, err := netlink.LinkByName("b0")
			if err != nil {
				return err
			}
			if up {
				return netlink.LinkSetUp(l)
			}
			return netlink.LinkSetDown(l)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setUp(false)
	const n = 200
	for i := 0; i < n; i++ {
		tx.Queue(tcpFrame(60, mac, uint16(100+i)))
		if i%16 == 15 {
			tx.Flush()
		}
	}
	tx.Flush()
	setUp(true)
	time.Sleep(100 * time.Millisecond) // the link's carrier
	for i := 0; i < 100 && tx.Pending() > 0; i++ {
		tx.Flush()
	}
	st := tx.Stats()
	if tx.Pending() != 0 || st.Sent+st.Dropped != 4+n {
		t.Fatalf("stats %+v, pending %d: sent and dropped do not add up to the %d queued", st, tx.Pending(), 4+n)
	}
	rcv := drain(t, ring, int(st.Sent)-3, func(*Frame) {})
	if uint64(rcv) != st.Sent-3 {
		t.Fatalf("received %d frames after the peer came back, sent %d", rcv, st.Sent-3)
	}
	t.Logf("peer down then up: %d sent, %d dropped", st.Sent-3, st.Dropped-1)
}
