package netio

import (
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/lab"
)

// TestFrameMeta: the ring reports the kernel's packet type for another
// host's unicast, a broadcast and a multicast, and the 802.1Q tag veth
// strips, through both ring versions.
func TestFrameMeta(t *testing.T) {
	if err := lab.RequireRoot(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	for _, v := range []int{3, 2} {
		t.Run(fmt.Sprintf("tpacket-v%d", v), func(t *testing.T) { frameMeta(t, v) })
	}
}

func frameMeta(t *testing.T, version int) {
	ns, err := lab.NewNS("netio" + lab.RandomSuffix())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Delete)
	var ring *Ring
	var tx *Tx
	var own net.HardwareAddr
	err = ns.Do(func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "a0"}, PeerName: "b0"}); err != nil {
			return err
		}
		for _, n := range []string{"a0", "b0"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if n == "b0" {
				own = l.Attrs().HardwareAddr
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		if ring, err = OpenRing("b0", RingConfig{BlockSize: 1 << 16, Blocks: 4, Version: version, Frames: 128}); err != nil {
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
	type want struct {
		pkt  uint8
		vlan bool
		tci  uint16
	}
	cases := []struct {
		dst  net.HardwareAddr
		tci  uint16 // 0: untagged
		want want
	}{
		{own, 0, want{PacketHost, false, 0}},
		{net.HardwareAddr{2, 0, 0, 0, 0x99, 0x99}, 0, want{PacketOtherHost, false, 0}},
		{net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0, want{PacketBroadcast, false, 0}},
		{net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}, 0, want{PacketMulticast, false, 0}},
		{own, 0x2000 | 42, want{PacketHost, true, 0x2000 | 42}},
		{own, 4094, want{PacketHost, true, 4094}},
	}
	for i, c := range cases {
		fr := ipFrame(17, [4]byte{198, 18, 0, 10}, [4]byte{198, 18, 0, 100}, uint16(2000+i), 53)
		copy(fr[0:6], c.dst)
		if c.tci != 0 {
			tagged := make([]byte, len(fr)+4)
			copy(tagged, fr[:12])
			binary.BigEndian.PutUint16(tagged[12:], unix.ETH_P_8021Q)
			binary.BigEndian.PutUint16(tagged[14:], c.tci)
			copy(tagged[16:], fr[12:])
			fr = tagged
		}
		b := make([]byte, VnetHdrLen+len(fr))
		copy(b[VnetHdrLen:], fr)
		tx.Queue(b)
	}
	tx.Flush()
	got := map[uint16]want{}
	var b Block
	var f Frame
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(cases) && time.Now().Before(deadline) {
		ok, err := ring.Next(100*time.Millisecond, &b)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			continue
		}
		for b.Frame(&f) {
			if len(f.Data) < 14+24 || binary.BigEndian.Uint16(f.Data[12:]) != 0x0800 {
				continue // the tag is never left in the frame
			}
			got[binary.BigEndian.Uint16(f.Data[14+20:])] = want{f.PktType, f.VLANValid, f.VLANTCI}
		}
		b.Release()
	}
	for i, c := range cases {
		if g, ok := got[uint16(2000+i)]; !ok || g != c.want {
			t.Errorf("frame %d to %s tag %#x: got %+v (seen %v), want %+v", i, c.dst, c.tci, g, ok, c.want)
		}
	}
}
