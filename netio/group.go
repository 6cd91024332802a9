package netio

import (
	"time"

	"golang.org/x/sys/unix"
)

// Group waits on several rings at once (one worker serving several
// interfaces).
//
// A worker that finds nothing ready sleeps in poll(), and the kernel wakes
// it for the next frame: the lowest latency, but a wake-up per frame when
// frames come one at a time, which costs the kernel's receive path and
// the worker a few microseconds each. So, as NAPI does for interrupts, a
// Group moderates its wake-ups under load: after a run of rounds that each
// found frames waiting (traffic is dense), it naps for Nap instead of
// sleeping on the sockets, lets frames gather, and takes them in one
// batch; the first round that finds nothing after a nap goes back to
// poll(). Sparse traffic (a request, then its answer) is never delayed;
// dense traffic waits at most Nap, while it saves a wake-up per frame.
//
// With Spin set, a worker that has just had frames keeps looking at its
// rings for up to Spin before it sleeps: a frame that comes within that
// window is taken microseconds sooner, with no wake-up, at the price of a
// CPU kept busy for Spin after each burst of traffic.
type Group struct {
	Rings  []*Ring
	Spin   time.Duration
	Nap    time.Duration
	pfds   []unix.PollFd
	last   time.Time // when the worker last finished with frames
	hot    bool      // the last Wait returned with frames ready
	dense  int       // consecutive Waits that found frames without sleeping
	napped bool      // the last Wait napped
}

// DefaultNap is a Group's nap under dense traffic.
const DefaultNap = 20 * time.Microsecond

// NewGroup makes a group of rings.
func NewGroup(rings []*Ring) *Group {
	g := &Group{Rings: rings, Nap: DefaultNap}
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

// Wait returns when one of the rings has frames ready, or after timeout.
func (g *Group) Wait(timeout time.Duration) {
	if g.ready() {
		g.hot = true
		g.dense++
		return
	}
	if g.Nap > 0 && (g.dense >= 2 || g.napped && g.hot) {
		// Dense traffic: let frames gather without a wake-up each.
		g.napped = true
		g.dense = 0
		ts := unix.NsecToTimespec(int64(g.Nap))
		_ = unix.Nanosleep(&ts, nil)
		if g.ready() {
			g.hot = true
			return
		}
	}
	g.napped = false
	g.dense = 0
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
	for i := range g.pfds {
		g.pfds[i].Revents = 0
	}
	_, _ = unix.Poll(g.pfds, int(timeout/time.Millisecond))
	g.hot = g.ready()
}
