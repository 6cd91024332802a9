package bench

import (
	"fmt"
	"math"
	"math/bits"
	"net"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// rxRing is a TPACKET_V3 receive ring that keeps what netio.Frame leaves
// out: the kernel's receive timestamp of each frame. The real servers'
// counters read the arrival time there rather than when the block reaches
// userspace, so the ring's block timeout never counts as latency.
type rxRing struct {
	fd      int
	mem     []byte
	bsize   int
	nblocks int
	cur     int
}

// rxSnap is how much of each frame the counters keep: the stamp sits in
// the first 64 bytes.
const rxSnap = 128

// openRxRing opens a ring on ifname in the calling thread's namespace,
// taking only incoming IPv4 frames, cut to rxSnap bytes.
func openRxRing(ifname string) (*rxRing, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("bench: packet socket on %s: %w", ifname, err)
	}
	r := &rxRing{fd: fd, bsize: 1 << 20, nblocks: 16}
	fail := func(op string, err error) (*rxRing, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("bench: %s on %s: %w", op, ifname, err)
	}
	// Outgoing frames (PACKET_OUTGOING) and non-IPv4 ones are not taken.
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 4, SkipTrue: 3},
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipFalse: 1},
		bpf.RetConstant{Val: rxSnap},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		return fail("filter", err)
	}
	fp := unix.SockFprog{Len: uint16(len(prog)), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
		return fail("SO_ATTACH_FILTER", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return fail("PACKET_VERSION", err)
	}
	req := unix.TpacketReq3{
		Block_size: uint32(r.bsize), Block_nr: uint32(r.nblocks),
		Frame_size: 2048, Frame_nr: uint32(r.bsize / 2048 * r.nblocks), Retire_blk_tov: 2,
	}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fail("PACKET_RX_RING", err)
	}
	r.mem, err = unix.Mmap(fd, 0, r.bsize*r.nblocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail("mmap", err)
	}
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		unix.Munmap(r.mem)
		return fail("interface", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index}); err != nil {
		unix.Munmap(r.mem)
		return fail("bind", err)
	}
	return r, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (r *rxRing) u32(off int) uint32 { return *(*uint32)(unsafe.Pointer(&r.mem[off])) }

func (r *rxRing) status() *uint32 {
	return (*uint32)(unsafe.Pointer(&r.mem[r.cur*r.bsize+8]))
}

// drain hands every frame of the ready blocks to f (the frame's bytes and
// its kernel receive time, CLOCK_REALTIME nanoseconds) and returns whether
// there was one.
func (r *rxRing) drain(f func(b []byte, rt int64)) bool {
	any := false
	for atomic.LoadUint32(r.status())&unix.TP_STATUS_USER != 0 {
		any = true
		base := r.cur * r.bsize
		n := int(r.u32(base + 12))
		off := base + int(r.u32(base+16))
		for i := 0; i < n; i++ {
			sec, nsec := r.u32(off+4), r.u32(off+8)
			snap := int(r.u32(off + 12))
			mac := off + int(*(*uint16)(unsafe.Pointer(&r.mem[off+24])))
			f(r.mem[mac:mac+snap:mac+snap], int64(sec)*1e9+int64(nsec))
			off += int(r.u32(off))
		}
		atomic.StoreUint32(r.status(), unix.TP_STATUS_KERNEL)
		r.cur = (r.cur + 1) % r.nblocks
	}
	return any
}

func (r *rxRing) close() {
	unix.Close(r.fd)
	unix.Munmap(r.mem)
}

// latHist is a log-linear histogram of nanoseconds: exact below 64, then
// 32 buckets per power of two (3% resolution), so percentiles of millions
// of packets need no sorting and a fixed 16 KiB.
type latHist struct {
	b [64 + 58*32]uint64
	n uint64
}

func latBucket(v uint64) int {
	if v < 64 {
		return int(v)
	}
	s := bits.Len64(v) - 6
	return 64 + (s-1)*32 + int(v>>s) - 32
}

// latValue is the middle of bucket i.
func latValue(i int) float64 {
	if i < 64 {
		return float64(i)
	}
	s := (i-64)/32 + 1
	m := (i-64)%32 + 32
	return (float64(m) + 0.5) * float64(uint64(1)<<s)
}

func (h *latHist) add(v uint64) {
	i := latBucket(v)
	if i >= len(h.b) {
		i = len(h.b) - 1
	}
	h.b[i]++
	h.n++
}

// percentile is the nearest-rank percentile (as Percentile), in ns; NaN
// when empty.
func (h *latHist) percentile(p float64) float64 {
	if h.n == 0 {
		return math.NaN()
	}
	rank := uint64(math.Ceil(p / 100 * float64(h.n)))
	rank = max(rank, 1)
	var c uint64
	for i, v := range h.b {
		c += v
		if c >= rank {
			return latValue(i)
		}
	}
	return latValue(len(h.b) - 1)
}

// rxStats is one cell's arrivals.
type rxStats struct {
	Recv  uint64
	PerRS []uint64
	Stale uint64 // frames of an earlier cell
	Hist  latHist
}

// receiver counts the generator's frames arriving at the real servers.
type receiver struct {
	rings []*rxRing
	pfds  []unix.PollFd
	tag   atomic.Uint32
	rtOff int64 // CLOCK_REALTIME - CLOCK_MONOTONIC
	req   chan chan *rxStats
	stop  chan struct{}
	done  chan struct{}
	tid   atomic.Int32
	cur   *rxStats
}

func newReceiver(rings []*rxRing) *receiver {
	var rt, mono unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_REALTIME, &rt)
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono)
	r := &receiver{rings: rings, rtOff: rt.Nano() - mono.Nano(), req: make(chan chan *rxStats),
		stop: make(chan struct{}), done: make(chan struct{})}
	for _, rg := range rings {
		r.pfds = append(r.pfds, unix.PollFd{Fd: int32(rg.fd), Events: unix.POLLIN | unix.POLLERR})
	}
	r.cur = &rxStats{PerRS: make([]uint64, len(rings))}
	return r
}

// run counts until stop; pin is called first on the locked thread.
func (r *receiver) run(pin func()) {
	defer close(r.done)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r.tid.Store(int32(unix.Gettid()))
	if pin != nil {
		pin()
	}
	for {
		select {
		case <-r.stop:
			return
		case c := <-r.req:
			c <- r.cur
			r.cur = &rxStats{PerRS: make([]uint64, len(r.rings))}
			continue
		default:
		}
		got := false
		for i, rg := range r.rings {
			tag := uint16(r.tag.Load())
			st := r.cur
			got = rg.drain(func(b []byte, rt int64) {
				ts, t, ok := stampOf(b)
				if !ok {
					return
				}
				if t != tag {
					st.Stale++
					return
				}
				st.Recv++
				st.PerRS[i]++
				lat := rt - r.rtOff - int64(ts)
				st.Hist.add(uint64(max(lat, 0)))
			}) || got
		}
		if !got {
			for i := range r.pfds {
				r.pfds[i].Revents = 0
			}
			_, _ = unix.Poll(r.pfds, 20)
		}
	}
}

// take returns the counts since the last take and starts new ones for tag.
func (r *receiver) take(tag uint16) *rxStats {
	c := make(chan *rxStats)
	r.req <- c
	st := <-c
	r.tag.Store(uint32(tag))
	return st
}

func (r *receiver) close() {
	close(r.stop)
	<-r.done
	for _, rg := range r.rings {
		rg.close()
	}
}
