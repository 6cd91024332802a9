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
// rings for a while before it sleeps: a frame that comes within that
// window is taken microseconds sooner, with no wake-up. The window adapts,
// as the kernel's halt polling for KVM guests does (halt_poll_ns): it
// starts at 0, doubles (from spinGrowStart) up to Spin each time the
// worker woke for a frame that came within Spin of the end of traffic (a
// longer look would have caught it without the wake-up), and halves (to 0
// below spinGrowStart) each time it slept longer than Spin (the look was
// spent for nothing). Request and answer a few tens of microseconds apart
// keep it open; traffic that comes a frame every millisecond, or none,
// closes it, and then a worker costs what one without Spin costs.
type Group struct {
	Rings   []*Ring
	Spin    time.Duration // the longest look (0: never look, sleep at once)
	window  time.Duration // the current look, 0..Spin
	pfds    []unix.PollFd
	owners  []*Ring   // the ring of each pfds entry
	last    time.Time // when the worker last finished with frames
	hot     bool      // the last Wait returned with frames ready
	yielded time.Time // when the worker last yielded
}

// spinGrowStart is the first window a closed one opens to.
const spinGrowStart = 5 * time.Microsecond

// adapt moves the look window after a wake-up, given how long the worker
// was without frames (from the end of its last traffic to the wake-up).
func (g *Group) adapt(idle time.Duration) {
	switch {
	case idle <= g.Spin && g.window < g.Spin:
		g.window = min(max(2*g.window, spinGrowStart), g.Spin)
	case idle > g.Spin && g.window > 0:
		if g.window /= 2; g.window < spinGrowStart {
			g.window = 0
		}
	}
}

// Window returns the current look window. Only the goroutine that
// calls Wait may read it (tests do).
func (g *Group) Window() time.Duration { return g.window }

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
			g.owners = append(g.owners, r)
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
		// The worker has just handled frames: its idle time starts now.
		g.last = time.Now()
	}
	g.hot = false
	if g.window > 0 && !g.last.IsZero() {
		end := g.last.Add(g.window)
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
	n, _ := unix.Poll(g.pfds, int(min(timeout, yieldEvery)/time.Millisecond))
	for i := 0; n > 0 && i < len(g.pfds); i++ {
		g.owners[i].takeErrIf(&g.pfds[i])
	}
	g.hot = g.ready()
	if g.Spin > 0 && !g.last.IsZero() {
		// Woken with frames, or by the timeout: that counts only once the
		// worker has been idle longer than Spin (a short timeout says
		// nothing of when the next frame comes).
		if idle := time.Since(g.last); g.hot || idle > g.Spin {
			g.adapt(idle)
		}
	}
}
