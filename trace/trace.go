// Package trace lets a person watch packets cross the director: for each
// traced frame, the service it matched, the connection-table lookup and
// state change, the scheduler's decision with its inputs, the rewrite
// (the frame before and after) and where it went.
//
// On the packet path a Tracer only filters, samples, rate-limits and copies
// bytes into preallocated events; decoding and formatting happen in the
// consumer. It must never block or slow the data plane: when the consumer
// is slow, events are dropped and counted. With no tracer attached the
// data path pays one nil check per batch.
package trace

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// MaxFrame is how many bytes of each frame an event keeps.
const MaxFrame = 2048

// DestInfo is one real server as the scheduler saw it.
type DestInfo struct {
	Addr       netip.AddrPort `json:"addr"`
	Weight     int32          `json:"weight"`
	Active     int32          `json:"active"`
	Inactive   int32          `json:"inactive"`
	Overhead   int64          `json:"overhead"`
	Overloaded bool           `json:"overloaded,omitempty"`
	Available  bool           `json:"available"`
}

// SchedInfo is a scheduler's decision with its inputs.
type SchedInfo struct {
	Name string `json:"name"`
	// Semantics is the director's kernel semantics: "current" or
	// "classic" (empty in events from older directors).
	Semantics string `json:"semantics,omitempty"`
	// Formula is the overhead formula the scheduler used (lc, wlc, lblc,
	// lblcr, twos, sed, nq), e.g. "overhead = active*256 + inactive".
	Formula  string         `json:"formula,omitempty"`
	Dests    []DestInfo     `json:"dests,omitempty"`
	Bucket   int            `json:"bucket"` // sh/dh/mh bucket, -1 when none
	Probes   int            `json:"probes,omitempty"`
	CacheHit bool           `json:"cache_hit,omitempty"` // lblc/lblcr
	Cached   []string       `json:"cached,omitempty"`
	Chosen   netip.AddrPort `json:"chosen"`
	Note     string         `json:"note,omitempty"`
}

// Event is one traced frame.
type Event struct {
	Seq      uint64     `json:"seq"`
	Time     time.Time  `json:"time"`
	Worker   int        `json:"worker"`
	InIf     string     `json:"in_if"`
	OutIf    string     `json:"out_if,omitempty"`
	Dir      string     `json:"dir"`               // "request" (client to VIP) or "reply" (real server to client)
	Service  string     `json:"service,omitempty"` // e.g. "TCP 198.18.0.100:80 rr"
	Method   string     `json:"method,omitempty"`  // Masq, Route, Tunnel, FullNat
	Lookup   string     `json:"lookup"`            // hit, miss, reuse, none
	StateOld string     `json:"state_old,omitempty"`
	StateNew string     `json:"state_new,omitempty"`
	Template string     `json:"template,omitempty"` // persistence: "found ..." or "created ..."
	Sched    *SchedInfo `json:"sched,omitempty"`
	Verdict  string     `json:"verdict"` // "forwarded", or "dropped: <reason>"
	Before   []byte     `json:"before"`  // the frame as received (up to MaxFrame bytes)
	After    []byte     `json:"after,omitempty"`
	Len      int        `json:"len"` // the frame's full length as received
	AfterLen int        `json:"after_len,omitempty"`

	before [MaxFrame]byte
	after  [MaxFrame]byte
	sched  SchedInfo
}

// SetBefore copies the received frame into the event.
func (e *Event) SetBefore(b []byte) {
	n := copy(e.before[:], b)
	e.Before = e.before[:n]
	e.Len = len(b)
}

// SetAfter copies the transmitted frame into the event.
func (e *Event) SetAfter(b []byte) {
	n := copy(e.after[:], b)
	e.After = e.after[:n]
	e.AfterLen = len(b)
}

// SchedSlot returns the event's own SchedInfo, reset, for the data path to
// fill (no allocation once its Dests slice has grown).
func (e *Event) SchedSlot() *SchedInfo {
	s := &e.sched
	*s = SchedInfo{Dests: s.Dests[:0], Cached: s.Cached[:0], Bucket: -1}
	e.Sched = s
	return s
}

func (e *Event) reset() {
	*e = Event{Before: nil, After: nil, sched: SchedInfo{Dests: e.sched.Dests[:0], Cached: e.sched.Cached[:0]}}
}

// Config sets a tracer up.
type Config struct {
	Filter Filter
	// Sample keeps one traced frame in Sample (0 or 1: every one).
	Sample uint32
	// Rate caps events per second (0: 1000).
	Rate int
	// Buffer is how many events may wait for the consumer (0: 1024).
	Buffer int
}

// Tracer hands events from the data path to one consumer.
type Tracer struct {
	c       Config
	free    chan *Event
	out     chan *Event
	seq     atomic.Uint64
	seen    atomic.Uint64
	dropped atomic.Uint64
	// token bucket, refilled per second of the coarse clock
	window atomic.Int64
	used   atomic.Int64
	closed atomic.Bool
}

// New creates a tracer with its events preallocated.
func New(c Config) *Tracer {
	if c.Rate <= 0 {
		c.Rate = 1000
	}
	if c.Buffer <= 0 {
		c.Buffer = 1024
	}
	if c.Sample == 0 {
		c.Sample = 1
	}
	t := &Tracer{c: c, free: make(chan *Event, c.Buffer), out: make(chan *Event, c.Buffer)}
	for i := 0; i < c.Buffer; i++ {
		t.free <- &Event{}
	}
	return t
}

// Want reports whether a frame of the connection client -> vip should be
// traced (filter, sampling, rate cap), and returns an event for it. It
// never blocks; when no event is free the frame is counted as dropped.
func (t *Tracer) Want(proto uint8, client, vip [4]byte, cport, vport uint16) *Event {
	if !t.c.Filter.Match(proto, client, vip, cport, vport) {
		return nil
	}
	return t.want()
}

// Want6 is Want for an IPv6 connection.
func (t *Tracer) Want6(proto uint8, client, vip *[16]byte, cport, vport uint16) *Event {
	if !t.c.Filter.Match6(proto, client, vip, cport, vport) {
		return nil
	}
	return t.want()
}

func (t *Tracer) want() *Event {
	if n := t.seen.Add(1); n%uint64(t.c.Sample) != 0 {
		return nil
	}
	now := time.Now() // only for frames that passed the filter and the sampling
	sec := now.Unix()
	if w := t.window.Load(); w != sec && t.window.CompareAndSwap(w, sec) {
		t.used.Store(0)
	}
	if t.used.Add(1) > int64(t.c.Rate) {
		t.dropped.Add(1)
		return nil
	}
	select {
	case e := <-t.free:
		e.reset()
		e.Seq = t.seq.Add(1)
		e.Time = now
		return e
	default:
		t.dropped.Add(1)
		return nil
	}
}

// Emit hands a finished event to the consumer, or drops it (counted) when
// the consumer is behind.
func (t *Tracer) Emit(e *Event) {
	if t.closed.Load() {
		return
	}
	select {
	case t.out <- e:
	default:
		t.dropped.Add(1)
		t.Release(e)
	}
}

// Events is the consumer's side: finished events, to be handed back with
// Release once written out.
func (t *Tracer) Events() <-chan *Event { return t.out }

// Release returns an event to the free list.
func (t *Tracer) Release(e *Event) {
	select {
	case t.free <- e:
	default:
	}
}

// Dropped returns how many events were dropped (rate cap, no free event,
// slow consumer).
func (t *Tracer) Dropped() uint64 { return t.dropped.Load() }

// Close stops the tracer accepting events.
func (t *Tracer) Close() { t.closed.Store(true) }
