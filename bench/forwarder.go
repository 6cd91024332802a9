package bench

import (
	"runtime"
	"time"

	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
	"golang.org/x/sys/unix"
)

// ceilingForwarder is golvs's netio (its rings, fanout group, drop rule
// and transmit, waiting as golvs's workers wait, with the same busy-poll
// window) with no per-packet work: it takes each frame from the
// director's client-side ring and sends it unchanged but for its MACs
// out of the server side, to the real servers in turn. No decode, no
// lookup, no rewrite: what it moves is the ceiling AF_PACKET sets for any
// forwarder built on netio, golvs included.
type ceilingForwarder struct {
	in   *netio.Ring
	out  *netio.Tx
	drop *netio.DropRule // golvs's drop rule, for the VIP
	ring netio.RingStats // the ring's counters so far
	src  [6]byte
	dsts [][6]byte
	spin time.Duration // the busy-poll window golvs's rows run with
	Fwd  uint64
}

// run forwards until stop closes, on a thread of its own, whose ID it
// sends on tid first.
func (c *ceilingForwarder) run(stop <-chan struct{}, tid chan<- int) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid <- unix.Gettid()
	var b netio.Block
	var f netio.Frame
	n := len(c.dsts)
	i := 0
	// Waits as golvs's workers do.
	g := netio.NewGroup([]*netio.Ring{c.in})
	g.Spin = c.spin
	for {
		select {
		case <-stop:
			return
		default:
		}
		g.Wait(100 * time.Millisecond)
		// One batch from each of the ring's sockets at most, as golvs.
		for k := c.in.Sockets(); k > 0 && c.in.TryNext(&b); k-- {
			for b.Frame(&f) {
				if len(f.Data) < 14 {
					continue
				}
				packet.Eth(f.Data).SetMACs(c.src, c.dsts[i])
				if i++; i == n {
					i = 0
				}
				c.out.Queue(f.Buf())
				c.Fwd++
			}
			c.out.Flush() // frames point into the block: send before release
			b.Release()
		}
	}
}

// counters are the ceiling's ring and transmit counters, by golvs's
// names. The ring's are read (and reset) here: nothing else reads them.
func (c *ceilingForwarder) counters() map[string]uint64 {
	st, _ := c.in.Stats()
	c.ring.Add(st)
	tx := c.out.Stats()
	return map[string]uint64{"ring-packets": c.ring.Packets, "ring-drops": c.ring.Drops, "tx-dropped": tx.Dropped, "tx-errors": tx.Errors}
}

func (c *ceilingForwarder) close() {
	c.in.Close()
	c.out.Close()
	if c.drop != nil {
		c.drop.Close()
	}
}
