package netio

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Group waits on several rings at once (one worker serving several
// interfaces).
//
// A worker that finds nothing ready sleeps in poll(), and the kernel wakes
// it for the next frame, at any load. No timer stands between a frame and
// its worker: a moderation nap (waiting a little under dense traffic so
// that frames gather) was measured and removed, because a request made one
// connection at a time looks dense for a few frames (SYN-ACK, then the
// client's ACK) and then paid the nap on its next crossing, while under
// flood a worker finds frames waiting without sleeping anyway.
//
// The goroutine of a worker runs on its own locked thread and never blocks
// in Go, so the Go scheduler sees it run without a break: after 10 ms of
// that, the runtime's monitor preempts it, and it does so just after a
// frame woke the worker from a long sleep (the monitor is woken with it),
// and a SYN after 50 ms of quiet took 208-483 us to cross on a 2-vCPU VM
// (80-136 us with the yields). So a worker yields (runtime.Gosched) before
// it sleeps whenever yieldEvery has passed since its last yield, and
// sleeps for at most yieldEvery: the yield happens while it is idle, and
// the monitor never finds it overdue. Its cost is a wake-up and a yield
// every yieldEvery on an idle worker: about 1.5% of a CPU on that VM.
// (Yielding unlocked, which is cheaper, was tried: the scheduler then
// often hands the goroutine to another thread, which loses its pinning.)
//
// With Spin set, a worker that has just had frames keeps looking at its
// rings for up to Spin before it sleeps: a frame that comes within that
// window is taken microseconds sooner, with no wake-up, at the price of a
// CPU kept busy for Spin after each burst of traffic.
type Group struct {
	Rings   []*Ring
	Spin    time.Duration
	pfds    []unix.PollFd
	last    time.Time // when the worker last finished with frames
	hot     bool      // the last Wait returned with frames ready
	yielded time.Time // when the worker last yielded
}

// yieldEvery is how long a Group's goroutine runs (or sleeps) at most
// between two yields, well inside the Go runtime's 10 ms preemption limit
// (sysmon's forcePreemptNS).
const yieldEvery = 4 * time.Millisecond

// NewGroup makes a group of rings.
func NewGroup(rings []*Ring) *Group {
	g := &Group{Rings: rings}
	for _, r := range rings {
		for _, s := range r.socks {
			g.pfds = append(g.pfds, unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN | unix.POLLERR})
		}
	}
	return g
}

func (g *Group) ready() bool {
	for _, r := range g.Rings {
		if r.ready() {
			return true
		}
	}
	return false
}

// Wait returns when one of the rings has frames ready, or after timeout
// (at most yieldEvery).
func (g *Group) Wait(timeout time.Duration) {
	if g.ready() {
		g.hot = true
		return
	}
	if g.Spin > 0 && g.hot {
		// The worker has just handled frames: the spin window starts now.
		g.last = time.Now()
	}
	g.hot = false
	if g.Spin > 0 && !g.last.IsZero() {
		end := g.last.Add(g.Spin)
		for i := 0; ; i++ {
			if g.ready() {
				g.hot = true
				return
			}
			// The clock is read once in 64 looks (a look is a few
			// loads; the clock some tens of ns).
			if i&63 == 63 && time.Now().After(end) {
				break
			}
		}
	}
	if time.Since(g.yielded) >= yieldEvery {
		runtime.Gosched()
		g.yielded = time.Now()
		if g.ready() {
			g.hot = true
			return
		}
	}
	for i := range g.pfds {
		g.pfds[i].Revents = 0
	}
	_, _ = unix.Poll(g.pfds, int(min(timeout, yieldEvery)/time.Millisecond))
	g.hot = g.ready()
}
