package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/golvs/golvs/trace"
)

// TraceLine is one line of the trace stream (see the package comment):
// the opening line (ok or error, and the director's interfaces), an event,
// or the dropped count.
type TraceLine struct {
	V      int    `json:"v"`
	OK     bool   `json:"ok,omitempty"`
	Error  string `json:"error,omitempty"`
	Status int    `json:"status,omitempty"`
	// Opening line only: the filter as understood and the director's
	// interface names (by ifindex order), for pcap interface blocks.
	Filter     string       `json:"filter,omitempty"`
	Interfaces []string     `json:"interfaces,omitempty"`
	Event      *trace.Event `json:"event,omitempty"`
	// Dropped is the tracer's dropped count so far (rate cap, sampling
	// buffer exhausted, slow consumer); End marks the last line.
	Dropped *uint64 `json:"dropped,omitempty"`
	End     bool    `json:"end,omitempty"`
}

// Trace stream timing. A client that takes more than traceWriteTimeout to
// accept a line is cut off; the tracer drops (and counts) events while it
// is behind, so the director never waits for it.
var (
	traceWriteTimeout = 5 * time.Second
	traceDropEvery    = time.Second
	// newTracer makes the tracer; tests replace it to feed events in.
	newTracer = trace.New
)

// TraceOptions are the trace op's args.
type TraceOptions struct {
	Sample uint32 // keep one matching frame in Sample (0, 1: every one)
	Rate   int    // events per second at most (0: the tracer's default)
	Buffer int    // events waiting for the client at most (0: default)
}

// ParseTraceArgs reads the trace op's args: --sample N, --rate N, --buffer N.
func ParseTraceArgs(args []string) (TraceOptions, error) {
	var o TraceOptions
	for i := 0; i < len(args); i++ {
		name := args[i]
		if i+1 >= len(args) {
			return o, fmt.Errorf("control: trace: %s needs a value", name)
		}
		i++
		n, err := strconv.ParseUint(args[i], 10, 31)
		if err != nil {
			return o, fmt.Errorf("control: trace: %s %q is not a number", name, args[i])
		}
		switch name {
		case "--sample":
			o.Sample = uint32(n)
		case "--rate":
			o.Rate = int(n)
		case "--buffer":
			o.Buffer = int(n)
		default:
			return o, fmt.Errorf("control: trace: unknown argument %q (allowed: --sample N, --rate N, --buffer N)", name)
		}
	}
	return o, nil
}

// trace serves one trace request on c until the client goes away: it owns
// the connection from here on. r is the connection's reader (it may hold
// bytes past the request).
func (s *Server) trace(c net.Conn, r *bufio.Reader, req *Request) {
	fail := func(err error, status int) {
		_ = c.SetWriteDeadline(time.Now().Add(traceWriteTimeout))
		b, _ := json.Marshal(&TraceLine{V: Version, Error: err.Error(), Status: status})
		_, _ = c.Write(append(b, '\n'))
	}
	f, err := trace.ParseFilter(req.Text)
	if err != nil {
		fail(err, 2)
		return
	}
	o, err := ParseTraceArgs(req.Args)
	if err != nil {
		fail(err, 2)
		return
	}
	t := newTracer(trace.Config{Filter: f, Sample: o.Sample, Rate: o.Rate, Buffer: o.Buffer})
	if err := s.D.SetTracer(t); err != nil {
		fail(err, 1) // director.ErrTraceBusy says it plainly
		return
	}
	defer s.D.ClearTracer(t)

	ids := s.D.IfNames()
	idx := make([]int, 0, len(ids))
	for i := range ids {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	open := &TraceLine{V: Version, OK: true, Filter: f.String()}
	for _, i := range idx {
		open.Interfaces = append(open.Interfaces, ids[i])
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The client sends nothing more; its half-close (or close) ends the
	// trace. Anything else it sends is ignored.
	go func() {
		defer cancel()
		_, _ = io.Copy(io.Discard, r)
	}()
	streamTrace(ctx, c, t, open, func() { s.D.ClearTracer(t) })
}

// streamTrace writes the opening line, then each event and, every
// traceDropEvery, the dropped count, until ctx ends or a write fails (a
// client gone, or one not reading for traceWriteTimeout); then, if the
// client is still there, stop detaches the tracer and the events already
// handed over follow, with a last dropped line marked end.
func streamTrace(ctx context.Context, w net.Conn, t *trace.Tracer, open *TraceLine, stop func()) {
	write := func(b []byte, err error) bool {
		if err != nil {
			return true // not this line's reader's fault; skip it
		}
		_ = w.SetWriteDeadline(time.Now().Add(traceWriteTimeout))
		_, err = w.Write(append(b, '\n'))
		return err == nil
	}
	event := func(e *trace.Event) bool {
		b, err := json.Marshal(&TraceLine{V: Version, Event: e})
		t.Release(e) // copied out: the event goes back before the slow part
		return write(b, err)
	}
	dropped := func(end bool) bool {
		n := t.Dropped()
		return write(json.Marshal(&TraceLine{V: Version, Dropped: &n, End: end}))
	}
	if !write(json.Marshal(open)) {
		return
	}
	tick := time.NewTicker(traceDropEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			stop() // closed: no new events, so the drain below ends
			for {
				select {
				case e := <-t.Events():
					if !event(e) {
						return
					}
					continue
				default:
				}
				break
			}
			dropped(true)
			return
		case e := <-t.Events():
			if !event(e) {
				return
			}
		case <-tick.C:
			if !dropped(false) {
				return
			}
		}
	}
}

// ErrTraceStop, returned by a Trace callback, ends the trace politely: the
// client half-closes, and the events already on their way and the final
// dropped count still reach the callback.
var ErrTraceStop = errors.New("control: trace stopped")

// traceDrain is how long a stopping client waits for the end line.
const traceDrain = 3 * time.Second

// Trace runs a trace: filter in ParseFilter's words, o as the op's args.
// open gets the opening line; each gets every later line (events and
// dropped counts) until the daemon ends the stream or ctx ends (then the
// client half-closes and keeps reading, for a few seconds at most, until
// the end line). An error line from the daemon is returned as an error.
func (c *Client) Trace(ctx context.Context, filter string, o TraceOptions, open, each func(*TraceLine) error) error {
	req := &Request{V: Version, Op: "trace", Text: filter}
	if o.Sample != 0 {
		req.Args = append(req.Args, "--sample", strconv.FormatUint(uint64(o.Sample), 10))
	}
	if o.Rate != 0 {
		req.Args = append(req.Args, "--rate", strconv.Itoa(o.Rate))
	}
	if o.Buffer != 0 {
		req.Args = append(req.Args, "--buffer", strconv.Itoa(o.Buffer))
	}
	b, _ := json.Marshal(req)
	_ = c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.c.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("golvs: control socket %s: %w", c.Path, err)
	}
	var first TraceLine
	if err := c.readLine(&first); err != nil {
		return err
	}
	if !first.OK {
		if first.Error == "" {
			first.Error = "the daemon does not support trace (an older golvs?)"
		}
		return errors.New(first.Error)
	}
	if err := open(&first); err != nil {
		return err
	}
	_ = c.c.SetDeadline(time.Time{})

	stopped := make(chan struct{})
	var once sync.Once
	stop := func() {
		once.Do(func() {
			close(stopped)
			if uc, ok := c.c.(interface{ CloseWrite() error }); ok {
				_ = uc.CloseWrite()
			} else {
				_ = c.c.Close()
			}
			_ = c.c.SetReadDeadline(time.Now().Add(traceDrain))
		})
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			stop()
		case <-done:
		}
	}()
	for {
		var l TraceLine
		if err := c.readLine(&l); err != nil {
			select {
			case <-stopped:
				return nil // the end line did not come in time; done anyway
			default:
			}
			return fmt.Errorf("%w (did the director stop?)", err)
		}
		err := each(&l)
		if l.End {
			return nil
		}
		if errors.Is(err, ErrTraceStop) {
			stop()
		} else if err != nil {
			return err
		}
	}
}

func (c *Client) readLine(v any) error {
	line, err := readLine(c.r, maxReplyLine)
	if err != nil {
		return fmt.Errorf("golvs: control socket %s: %w", c.Path, err)
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("golvs: bad reply from %s: %w", c.Path, err)
	}
	return nil
}
