package netio

import (
	"time"

	"golang.org/x/sys/unix"
)

// Group waits on several rings at once (one worker serving several
// interfaces).
type Group struct {
	Rings []*Ring
	pfds  []unix.PollFd
}

// NewGroup makes a group of rings.
func NewGroup(rings []*Ring) *Group {
	g := &Group{Rings: rings, pfds: make([]unix.PollFd, len(rings))}
	for i, r := range rings {
		g.pfds[i] = unix.PollFd{Fd: int32(r.fd), Events: unix.POLLIN | unix.POLLERR}
	}
	return g
}

// Wait blocks until one of the rings has a block ready, or timeout.
func (g *Group) Wait(timeout time.Duration) {
	for _, r := range g.Rings {
		if r.ready() {
			return
		}
	}
	for i := range g.pfds {
		g.pfds[i].Revents = 0
	}
	_, _ = unix.Poll(g.pfds, int(timeout/time.Millisecond))
}

func (r *Ring) ready() bool {
	return loadStatus(r)&unix.TP_STATUS_USER != 0
}

// TryNext returns the ring's next block if one is ready, without waiting.
func (r *Ring) TryNext(b *Block) bool {
	if !r.ready() {
		return false
	}
	ok, _ := r.Next(0, b)
	return ok
}
