package control

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/trace"
)

// traceServer is a control server over a director that never runs (no
// interfaces, no root needed): the trace op only attaches a tracer, and
// the test plays the data path by feeding that tracer.
type traceServer struct {
	srv  *Server
	d    *director.Director
	sock string
	mu   sync.Mutex
	last *trace.Tracer
}

func startTraceServer(t *testing.T) *traceServer {
	t.Helper()
	ts := &traceServer{d: &director.Director{}}
	old := newTracer
	newTracer = func(c trace.Config) *trace.Tracer {
		tr := trace.New(c)
		ts.mu.Lock()
		ts.last = tr
		ts.mu.Unlock()
		return tr
	}
	t.Cleanup(func() { newTracer = old })
	ts.srv = NewServer(ts.d)
	ts.sock = filepath.Join(t.TempDir(), "golvs.sock")
	if err := ts.srv.Listen(ts.sock); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go ts.srv.Serve(ctx)
	t.Cleanup(cancel)
	return ts
}

func (ts *traceServer) tracer() *trace.Tracer {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.last
}

// attached reports whether a trace is attached, by trying to attach one.
func (ts *traceServer) attached() bool {
	probe := trace.New(trace.Config{Buffer: 1})
	if err := ts.d.SetTracer(probe); err != nil {
		return true
	}
	ts.d.ClearTracer(probe)
	return false
}

func (ts *traceServer) waitDetached(t *testing.T) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if !ts.attached() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatal("the trace is still attached after the client left")
}

// emit plays the data path: one forwarded frame through the tracer.
func emit(tr *trace.Tracer, seq byte, size int) bool {
	e := tr.Want(6, [4]byte{198, 18, 0, 10}, [4]byte{198, 18, 0, 100}, 40000, 80)
	if e == nil {
		return false
	}
	frame := make([]byte, size)
	frame[0] = seq
	e.InIf, e.OutIf, e.Dir, e.Lookup, e.Verdict = "ext0", "int0", "request", "hit", "forwarded"
	e.SetBefore(frame)
	e.SetAfter(frame)
	tr.Emit(e)
	return true
}

func TestTraceStream(t *testing.T) {
	ts := startTraceServer(t)
	cl, err := Dial(ts.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var opened *TraceLine
	var events []*trace.Event
	var sawDropped, sawEnd bool
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = cl.Trace(ctx, "tcp client 198.18.0.0/24", TraceOptions{Sample: 1, Rate: 1000},
		func(l *TraceLine) error {
			opened = l
			tr := ts.tracer()
			for i := 1; i <= 3; i++ {
				if !emit(tr, byte(i), 100) {
					t.Errorf("event %d not wanted", i)
				}
			}
			return nil
		},
		func(l *TraceLine) error {
			switch {
			case l.Event != nil:
				events = append(events, l.Event)
				if len(events) == 3 {
					return ErrTraceStop
				}
			case l.Dropped != nil:
				sawDropped = true
				sawEnd = sawEnd || l.End
			default:
				t.Errorf("unexpected line %+v", l)
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if opened == nil || !opened.OK || opened.Filter != "tcp client 198.18.0.0/24" {
		t.Fatalf("opening line %+v", opened)
	}
	if len(events) != 3 {
		t.Fatalf("got %d events, want 3", len(events))
	}
	for i, e := range events {
		if e.Seq != uint64(i+1) || len(e.Before) != 100 || e.Before[0] != byte(i+1) || e.InIf != "ext0" || e.Verdict != "forwarded" {
			t.Errorf("event %d: %+v", i, e)
		}
	}
	if !sawDropped || !sawEnd {
		t.Errorf("dropped line %v, end line %v; want both", sawDropped, sawEnd)
	}
	ts.waitDetached(t)
}

func TestTraceErrors(t *testing.T) {
	ts := startTraceServer(t)
	cases := []struct {
		name   string
		req    string
		want   string
		status int
	}{
		{"bad-filter", `{"v":1,"op":"trace","text":"tcp client nowhere"}`, `client "nowhere" is not an IPv4 or IPv6 address or prefix`, 2},
		{"bad-word", `{"v":1,"op":"trace","text":"sctp"}`, `unknown word "sctp"`, 2},
		{"bad-arg", `{"v":1,"op":"trace","args":["--sample","x"]}`, `--sample "x" is not a number`, 2},
		{"unknown-arg", `{"v":1,"op":"trace","args":["--fast","1"]}`, `unknown argument "--fast"`, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := rawTrace(t, ts.sock, c.req)
			if l.OK || !strings.Contains(l.Error, c.want) || l.Status != c.status {
				t.Fatalf("got %+v, want error containing %q, status %d", l, c.want, c.status)
			}
			if strings.Count(l.Error, "\n") != 0 {
				t.Fatalf("error is not one line: %q", l.Error)
			}
		})
	}
	t.Run("busy", func(t *testing.T) {
		c1, err := Dial(ts.sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c1.Close()
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			errc <- c1.Trace(ctx, "", TraceOptions{}, func(*TraceLine) error {
				l := rawTrace(t, ts.sock, `{"v":1,"op":"trace"}`)
				if l.OK || l.Error != director.ErrTraceBusy.Error() || l.Status != 1 {
					t.Errorf("second trace: got %+v, want a busy error", l)
				}
				cancel()
				return nil
			}, func(*TraceLine) error { return nil })
		}()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		ts.waitDetached(t)
	})
	// Other ops on the same socket are unaffected.
	cl, err := Dial(ts.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rep, err := cl.Do(&Request{Op: "nosuch"})
	if err != nil || rep.OK || !strings.Contains(rep.Error, "unknown operation") {
		t.Fatalf("got %+v, %v", rep, err)
	}
}

// rawTrace sends one request line and reads one line back.
func rawTrace(t *testing.T, sock, req string) *TraceLine {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(req + "\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	var l TraceLine
	if err := json.Unmarshal(line, &l); err != nil {
		t.Fatal(err)
	}
	return &l
}

// A client that stops reading never blocks the data path: Emit returns at
// once and counts what it cannot queue, and the server cuts the client off
// after the write timeout and detaches the trace.
func TestTraceSlowClient(t *testing.T) {
	old := traceWriteTimeout
	traceWriteTimeout = 200 * time.Millisecond
	t.Cleanup(func() { traceWriteTimeout = old })
	ts := startTraceServer(t)
	c, err := net.Dial("unix", ts.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(`{"v":1,"op":"trace","args":["--rate","1000000","--buffer","64"]}` + "\n")); err != nil {
		t.Fatal(err)
	}
	var tr *trace.Tracer
	for i := 0; i < 200 && tr == nil; i++ {
		time.Sleep(10 * time.Millisecond)
		tr = ts.tracer()
	}
	if tr == nil {
		t.Fatal("no tracer made")
	}
	// Never read: the socket buffers fill, the writer stalls, the queue
	// fills, and Emit drops. No call may take long.
	start := time.Now()
	for i := 0; i < 20000; i++ {
		t0 := time.Now()
		emit(tr, byte(i), trace.MaxFrame)
		if d := time.Since(t0); d > 50*time.Millisecond {
			t.Fatalf("Want/Emit took %v with a stuck client", d)
		}
		if !ts.attached() {
			break
		}
		if time.Since(start) > 10*time.Second {
			break
		}
	}
	if tr.Dropped() == 0 {
		t.Errorf("nothing dropped with a client that does not read")
	}
	ts.waitDetached(t)
}
