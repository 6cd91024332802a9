package director

import (
	"errors"
	"fmt"

	"github.com/golvs/golvs/trace"
)

// ErrTraceBusy is returned when a trace is already attached.
var ErrTraceBusy = errors.New("director: a trace is already running (one at a time)")

// SetTracer attaches a tracer: from the next batch on, workers hand it the
// frames its filter selects. One tracer at a time.
func (d *Director) SetTracer(t *trace.Tracer) error {
	if !d.tracer.CompareAndSwap(nil, t) {
		return ErrTraceBusy
	}
	return nil
}

// ClearTracer detaches t (if it is the one attached); its dropped events
// stay counted in TraceDropped.
func (d *Director) ClearTracer(t *trace.Tracer) {
	d.traceMu.Lock()
	if d.tracer.CompareAndSwap(t, nil) {
		d.traceDropped += t.Dropped()
	}
	d.traceMu.Unlock()
	t.Close()
}

// TraceDropped returns how many trace events were dropped (rate cap, no
// free event, slow client) by every tracer since the director started. It
// never goes down.
func (d *Director) TraceDropped() uint64 {
	d.traceMu.Lock()
	defer d.traceMu.Unlock()
	n := d.traceDropped
	if t := d.tracer.Load(); t != nil {
		n += t.Dropped()
	}
	return n
}

// IfName returns an interface's name for traces and pcaps.
func (d *Director) IfName(ifindex int) string {
	if d.neigh != nil {
		if l := d.neigh.Link(ifindex); l != nil {
			return l.Name
		}
	}
	if n, ok := d.ifNames[ifindex]; ok {
		return n
	}
	return fmt.Sprintf("if%d", ifindex)
}

// IfNames returns the names of the director's interfaces, by index.
func (d *Director) IfNames() map[int]string {
	out := map[int]string{}
	if d.neigh != nil {
		for i, l := range d.neigh.Links() {
			out[i] = l.Name
		}
	}
	for i, n := range d.ifNames {
		out[i] = n
	}
	return out
}
