package bench

import (
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket/afpacket"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// rxRing is a real server's counting capture: gopacket's AF_PACKET ring
// (TPACKET_V3), which keeps what netio.Frame leaves out: the kernel's
// receive timestamp of each frame. The real servers' counters read the
// arrival time there rather than when the block reaches userspace, so the
// ring's block timeout never counts as latency.
type rxRing struct {
	tp *afpacket.TPacket
}

// rxSnap is how much of each frame the counters keep: the stamp sits in
// the first 64 bytes.
const rxSnap = 128

// openRxRing opens a ring on ifname in the calling thread's namespace,
// taking only incoming IPv4 and IPv6 frames, cut to rxSnap bytes. Reads never wait
// (the receiver polls its rings in turn).
func openRxRing(ifname string) (*rxRing, error) {
	tp, err := afpacket.NewTPacket(afpacket.OptInterface(ifname), afpacket.OptTPacketVersion(afpacket.TPacketVersion3),
		afpacket.OptFrameSize(2048), afpacket.OptBlockSize(1<<20), afpacket.OptNumBlocks(16),
		afpacket.OptBlockTimeout(2*time.Millisecond), afpacket.OptPollTimeout(0))
	if err != nil {
		return nil, fmt.Errorf("bench: capture on %s: %w", ifname, err)
	}
	// Outgoing frames (PACKET_OUTGOING) and non-IP ones are not taken.
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 4, SkipTrue: 4},
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipTrue: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x86dd, SkipFalse: 1},
		bpf.RetConstant{Val: rxSnap},
		bpf.RetConstant{Val: 0},
	})
	if err == nil {
		err = tp.SetBPF(prog)
	}
	if err != nil {
		tp.Close()
		return nil, fmt.Errorf("bench: capture filter on %s: %w", ifname, err)
	}
	return &rxRing{tp: tp}, nil
}

// drain hands every frame ready in the ring to f (the frame's bytes and
// its kernel receive time, CLOCK_REALTIME nanoseconds) and returns whether
// there was one.
func (r *rxRing) drain(f func(b []byte, rt int64)) bool {
	any := false
	for {
		data, ci, err := r.tp.ZeroCopyReadPacketData()
		if err != nil {
			return any // afpacket.ErrTimeout: nothing more for now
		}
		any = true
		f(data, ci.Timestamp.UnixNano())
	}
}

func (r *rxRing) close() { r.tp.Close() }

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
			// The rings hold seconds of traffic; frames carry their
			// arrival time.
			time.Sleep(time.Millisecond)
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
