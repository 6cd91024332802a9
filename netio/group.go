package netio

import (
	"time"

	"golang.org/x/sys/unix"
)

// Group waits on several rings at once (one worker serving several
// interfaces).
//
// With Spin set, a worker that has just had frames keeps looking at its
// rings for up to Spin before it sleeps in poll(): a frame that comes
// within that window is taken microseconds sooner, with no wake-up, at the
// price of a CPU kept busy for Spin after each burst of traffic. An idle
// worker (no frame for longer than Spin) sleeps at once.
type Group struct {
	Rings []*Ring
	Spin  time.Duration
	pfds  []unix.PollFd
	last  time.Time // when the worker last finished with frames
	hot   bool      // the last Wait returned with frames ready
}

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

// Wait returns when one of the rings has frames ready, or after timeout.
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
	for i := range g.pfds {
		g.pfds[i].Revents = 0
	}
	_, _ = unix.Poll(g.pfds, int(timeout/time.Millisecond))
	g.hot = g.ready()
}
