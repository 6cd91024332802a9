package netio

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"github.com/golvs/golvs/packet"
)

// reasmStats reads the calling thread's namespace's IPv4 reassembly
// counters (ReasmReqds, ReasmOKs) from /proc/net/snmp.
func reasmStats(t *testing.T) (reqds, oks uint64) {
	t.Helper()
	b, err := os.ReadFile("/proc/thread-self/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Ip:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, v := range f {
			n, _ := strconv.ParseUint(v, 10, 64)
			switch names[i] {
			case "ReasmReqds":
				reqds = n
			case "ReasmOKs":
				oks = n
			}
		}
	}
	return
}

// fragmentsOf cuts a UDP datagram of n payload bytes (flow sport -> 53)
// into IPv4 fragments of at most 1500 bytes, each with a virtio header.
func fragmentsOf(dst net.HardwareAddr, n int, sport, id uint16) [][]byte {
	ip := make([]byte, 20+8+n)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[4:], id)
	ip[8], ip[9] = 64, 17
	copy(ip[12:], []byte{198, 18, 0, 10})
	copy(ip[16:], []byte{198, 18, 0, 100})
	binary.BigEndian.PutUint16(ip[20:], sport)
	binary.BigEndian.PutUint16(ip[22:], 53)
	binary.BigEndian.PutUint16(ip[24:], uint16(8+n))
	step := (1500 - 20) &^ 7
	if n+8 <= step { // a datagram that fits goes in two pieces, to be fragments at all
		step = max(8, (n+8)/2&^7)
	}
	var out [][]byte
	for off := 0; off < 8+n; off += step {
		end := min(off+step, 8+n)
		b := make([]byte, VnetHdrLen+14+20+end-off)
		f := b[VnetHdrLen:]
		copy(f[0:6], dst)
		binary.BigEndian.PutUint16(f[12:], packet.EtherTypeIP4)
		h := f[14:]
		copy(h, ip[:20])
		binary.BigEndian.PutUint16(h[2:], uint16(20+end-off))
		fo := uint16(off / 8)
		if end < 8+n {
			fo |= 0x2000
		}
		binary.BigEndian.PutUint16(h[6:], fo)
		packet.IPv4(h[:20]).SetChecksum(packet.IPv4(h[:20]).HeaderChecksum())
		copy(h[20:], ip[20+off:20+end])
		out = append(out, b)
	}
	return out
}

// TestFanoutReassembled: through a fanout group of two workers' version 2
// rings (three sockets each), every frame and every fragmented datagram
// (reassembling to a tiny, an MTU-sized and an aggregate-sized one)
// arrives exactly once, whole, and the kernel completes every datagram it
// starts (ReasmReqds = fragments sent, ReasmOKs = datagrams): with a group
// per socket kind, the first group to see a last fragment took the
// datagram whatever its length, its socket's length test dropped the small
// ones, and the other groups each kept a queue that never completed. In
// hash mode every frame of a flow, both ways, reaches one worker.
func TestFanoutReassembled(t *testing.T) {
	for _, mode := range []FanoutMode{FanoutHash, FanoutCPU} {
		t.Run(mode.String(), func(t *testing.T) { fanoutReassembled(t, mode) })
	}
}

// TestFanoutModes: the modes' names read back, a wrong one is refused
// naming the choices, and next's program in the kernel is cpu's (only
// the workers' pinning differs).
func TestFanoutModes(t *testing.T) {
	for _, m := range []FanoutMode{FanoutCPU, FanoutNext, FanoutHash} {
		if got, err := ParseFanoutMode(m.String()); err != nil || got != m {
			t.Errorf("%s: read back as %v, %v", m, got, err)
		}
	}
	if _, err := ParseFanoutMode("rr"); err == nil || !strings.Contains(err.Error(), "cpu, next, hash") {
		t.Errorf("rr: %v", err)
	}
	cpu := fanoutProgram(FanoutCPU, 3, []int{96, 1888})
	next := fanoutProgram(FanoutNext, 3, []int{96, 1888})
	hash := fanoutProgram(FanoutHash, 3, []int{96, 1888})
	if !reflect.DeepEqual(cpu, next) || reflect.DeepEqual(cpu, hash) {
		t.Errorf("next's program differs from cpu's (or hash's does not)")
	}
}

func fanoutReassembled(t *testing.T, mode FanoutMode) {
	ns := vethNS(t, 1500)
	var rings [2]*Ring
	var tx *Tx
	var dst net.HardwareAddr
	var reqds0, oks0 uint64
	err := ns.Do(func() error {
		fo := NewFanout(mode)
		for i := range rings {
			var err error
			if rings[i], err = OpenRing("b0", RingConfig{Version: 2, Filter: ipv4Only(), Fanout: fo, Frames: 256, TinyFrames: 256, BigFrames: 16}); err != nil {
				return err
			}
		}
		ifi, err := net.InterfaceByName("b0")
		if err != nil {
			return err
		}
		dst = ifi.HardwareAddr
		reqds0, oks0 = reasmStats(t)
		tx, err = OpenTx("a0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rings {
		defer r.Close()
	}
	defer tx.Close()
	want := map[uint16]int{} // by source port: the payload length each must arrive with
	frags := 0
	sizes := []int{20, 200, 1000, 1472, 3000, 9000, 30000}
	for i, n := range sizes {
		sport := uint16(1000 + i)
		for _, b := range fragmentsOf(dst, n, sport, uint16(100+i)) {
			tx.Queue(b)
			frags++
		}
		want[sport] = 20 + 8 + n
	}
	// Whole frames of every kind, and a flow's two directions.
	for i, n := range []int{60, 97, 600, 1514} {
		b := tcpFrame(n, dst, uint16(2000+i))
		tx.Queue(b)
		want[uint16(2000+i)] = n - 14
	}
	flows := 32
	for i := 0; i < flows; i++ {
		fw := tcpFrame(60, dst, uint16(3000+i))
		back := tcpFrame(60, dst, 80)
		f := back[VnetHdrLen:]
		copy(f[14+12:], []byte{198, 18, 0, 100}) // 198.18.0.100:80 -> 198.18.0.10:(3000+i)
		copy(f[14+16:], []byte{198, 18, 0, 10})
		binary.BigEndian.PutUint16(f[14+20:], 80)
		binary.BigEndian.PutUint16(f[14+22:], uint16(3000+i))
		h := packet.IPv4(f[14:34])
		h.SetChecksum(0)
		h.SetChecksum(h.HeaderChecksum())
		tx.Queue(fw)
		tx.Queue(back)
	}
	tx.Flush()
	got := map[uint16]int{}
	worker := map[uint16]map[int]bool{} // flow's client port -> workers seen
	total := len(want) + 2*flows
	seen := 0
	for w, r := range rings {
		seen += drainIdle(t, r, func(f *Frame) {
			if packet.Eth(f.Data).Type() != packet.EtherTypeIP4 {
				return
			}
			ip := packet.IPv4(f.Data[14:])
			l4 := f.Data[14+ip.IHL():]
			sp, dp := binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
			if dp == 80 && sp >= 3000 || sp == 80 {
				c := sp
				if sp == 80 {
					c = dp
				}
				if worker[c] == nil {
					worker[c] = map[int]bool{}
				}
				worker[c][w] = true
				return
			}
			if ip.IsFragment() {
				t.Errorf("a fragment reached the ring: % x", f.Data[:34])
			}
			got[sp]++
			if n := ip.TotalLen(); n != want[sp] {
				t.Errorf("port %d: %d bytes, want %d", sp, n, want[sp])
			}
		})
	}
	if seen < total {
		t.Errorf("%d frames seen, want at least %d", seen, total)
	}
	for sp := range want {
		if got[sp] != 1 {
			t.Errorf("port %d (%d bytes): seen %d times, want once", sp, want[sp], got[sp])
		}
	}
	if len(worker) != flows {
		t.Errorf("%d of %d flows seen", len(worker), flows)
	}
	if mode == FanoutHash {
		spread := map[int]int{}
		for c, ws := range worker {
			if len(ws) != 1 {
				t.Errorf("flow %d reached workers %v: both directions must reach one", c, ws)
			}
			for w := range ws {
				spread[w]++
			}
		}
		if len(spread) != 2 {
			t.Errorf("%d flows all on one worker: %v", flows, spread)
		}
	}
	var reqds, oks uint64
	_ = ns.Do(func() error { reqds, oks = reasmStats(t); return nil })
	if reqds-reqds0 != uint64(frags) || oks-oks0 != uint64(len(sizes)) {
		t.Errorf("kernel reassembly: %d fragments taken (sent %d), %d datagrams completed (want %d)", reqds-reqds0, frags, oks-oks0, len(sizes))
	}
	t.Logf("%s: %d frames seen, %s", mode, seen, fmt.Sprint(got))
}

// drainIdle reads a ring until it has been empty for 300 ms.
func drainIdle(t *testing.T, ring *Ring, fn func(f *Frame)) int {
	t.Helper()
	var b Block
	var f Frame
	got, idle := 0, 0
	for idle < 3 {
		ok, err := ring.Next(100*time.Millisecond, &b)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			idle++
			continue
		}
		idle = 0
		for b.Frame(&f) {
			fn(&f)
			got++
		}
		b.Release()
	}
	return got
}

// fanoutVMPick runs the fanout program of a hash group over the network
// header of a frame (as the kernel does), the extensions it reads (the
// EtherType, the length) replaced by their values for that frame.
func fanoutVMPick(t *testing.T, workers int, ethertype uint16, l3 []byte) int {
	t.Helper()
	prog := fanoutProgram(FanoutHash, workers, nil)
	for i, ins := range prog {
		if e, ok := ins.(bpf.LoadExtension); ok {
			switch e.Num {
			case bpf.ExtProto:
				prog[i] = bpf.LoadConstant{Dst: bpf.RegA, Val: uint32(ethertype)}
			case bpf.ExtLen:
				prog[i] = bpf.LoadConstant{Dst: bpf.RegA, Val: uint32(len(l3))}
			}
		}
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	n, err := vm.Run(l3)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFanoutHash6: in hash mode an IPv6 flow's two directions reach one
// worker, every fragment of a datagram (ports or not) reaches one worker,
// and flows spread over the workers.
func TestFanoutHash6(t *testing.T) {
	const workers = 4
	spread := map[int]int{}
	for i := 0; i < 64; i++ {
		c := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 9: byte(i * 13), 15: 0x10}
		v := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 14: 1}
		fw := ip6Frame(6, c, v, uint16(40000+7*i), 80)[14:]
		back := ip6Frame(6, v, c, 80, uint16(40000+7*i))[14:]
		a, b := fanoutVMPick(t, workers, 0x86dd, fw), fanoutVMPick(t, workers, 0x86dd, back)
		if a != b {
			t.Fatalf("flow %d: worker %d one way, %d the other", i, a, b)
		}
		spread[a]++
		// fragments: a first (ports present after the fragment header)
		// and a later one: addresses alone decide.
		f1 := ip6Frame(44, c, v, 0, 0)[14:]
		f1[40] = 17 // the fragment header's next header
		f2 := ip6Frame(44, c, v, 1234, 5678)[14:]
		if x, y := fanoutVMPick(t, workers, 0x86dd, f1), fanoutVMPick(t, workers, 0x86dd, f2); x != y {
			t.Fatalf("flow %d: fragments on workers %d and %d", i, x, y)
		}
	}
	if len(spread) != workers {
		t.Fatalf("64 flows over %d of %d workers: %v", len(spread), workers, spread)
	}
}
