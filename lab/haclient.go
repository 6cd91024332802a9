package lab

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// HAClient is the HA lab's client: long-lived TCP connections through the
// VIP, each sending a request line every interval and reading the
// answer, and a loop opening new connections, all from inside the client
// namespace. It records, from the client's side only, what a failover
// did to them.
type HAClient struct {
	every time.Duration
	conns []*haConn
	stop  atomic.Bool
	wg    sync.WaitGroup
	mark  atomic.Int64 // unix nanos of the failure, 0: not yet

	mu      sync.Mutex
	newRuns []newAttempt
	probeOK []newAttempt // probe connections that succeeded
	newStop chan struct{}
	newWG   sync.WaitGroup
}

type haConn struct {
	c       net.Conn
	server  string // the real server that answered first
	rounds  atomic.Int64
	last    atomic.Int64 // unix nanos of the last answer
	err     atomic.Pointer[error]
	moved   atomic.Bool // answered by another real server (impossible for one TCP connection)
	errWhen atomic.Int64
	resumed atomic.Int64 // unix nanos of the first answer after the mark
}

type newAttempt struct {
	start, end time.Time
	err        error
}

// MaxHAConns bounds the long-lived connections of one client.
const MaxHAConns = 5000

// StartHAClient opens n connections to addr from inside ns, one after
// another on one thread of the namespace (each with a 3 s timeout), and
// starts their request loops.
func StartHAClient(ns *NS, addr netip.AddrPort, n int, every time.Duration) (*HAClient, error) {
	if n < 0 || n > MaxHAConns {
		return nil, fmt.Errorf("lab: %d connections (0..%d)", n, MaxHAConns)
	}
	h := &HAClient{every: every}
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: 3 * time.Second}
		for i := 0; i < n; i++ {
			c, err := d.Dial("tcp4", addr.String())
			if err != nil {
				return fmt.Errorf("lab: connection %d of %d to %s: %w", i+1, n, addr, err)
			}
			h.conns = append(h.conns, &haConn{c: c})
		}
		return nil
	})
	if err != nil {
		for _, c := range h.conns {
			c.c.Close()
		}
		return nil, err
	}
	for i, c := range h.conns {
		h.wg.Add(1)
		go h.loop(c, time.Duration(i)*every/time.Duration(max(n, 1)))
	}
	return h, nil
}

func (h *HAClient) loop(c *haConn, phase time.Duration) {
	defer h.wg.Done()
	time.Sleep(phase) // spread the requests over the interval
	r := bufio.NewReaderSize(c.c, 256)
	t := time.NewTicker(h.every)
	defer t.Stop()
	fail := func(err error) {
		if h.stop.Load() {
			return // the deadline Stop set
		}
		c.err.Store(&err)
		c.errWhen.Store(time.Now().UnixNano())
	}
	for !h.stop.Load() {
		// Long deadlines: during a failover a request waits out TCP's
		// retransmissions (several seconds) and must not be counted lost.
		_ = c.c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.c.Write([]byte("req\n")); err != nil {
			fail(err)
			return
		}
		line, err := r.ReadString('\n')
		if err != nil {
			fail(err)
			return
		}
		name := strings.TrimSpace(line)
		if c.server == "" {
			c.server = name
		} else if name != c.server {
			c.moved.Store(true)
		}
		c.rounds.Add(1)
		now := time.Now().UnixNano()
		if m := h.mark.Load(); m != 0 && c.resumed.Load() == 0 && now > m {
			c.resumed.Store(now)
		}
		c.last.Store(now)
		<-t.C
	}
}

// Ready waits until every connection has made at least rounds round
// trips (bounded by timeout).
func (h *HAClient) Ready(rounds int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		behind := 0
		for _, c := range h.conns {
			if c.rounds.Load() < rounds {
				behind++
			}
			if e := c.err.Load(); e != nil {
				return fmt.Errorf("lab: a connection failed before the test: %w", *e)
			}
		}
		if behind == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: %d of %d connections made fewer than %d round trips in %v", behind, len(h.conns), rounds, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartNew runs the new-connection loop from inside ns: dialers
// goroutines, each opening a connection to addr, sending one request and
// reading the answer within timeout, over and over, a random pause of up
// to pause between attempts (so that an outage, which makes every attempt
// last the whole timeout, does not leave them in step). Every attempt is
// counted. Beside them, probes (as many, with a short timeout, never
// counted as failures) find the moment new connections work again.
func (h *HAClient) StartNew(ns *NS, addr netip.AddrPort, dialers int, timeout, pause time.Duration) {
	h.newStop = make(chan struct{})
	probeTimeout := 250 * time.Millisecond
	for i := 0; i < 2*dialers; i++ {
		probe := i >= dialers
		to := timeout
		if probe {
			to = probeTimeout
		}
		h.newWG.Add(1)
		offset := time.Duration(i%dialers) * (to + pause) / time.Duration(dialers)
		ns.Go(func() {
			defer h.newWG.Done()
			rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
			time.Sleep(offset)
			d := net.Dialer{Timeout: to}
			for {
				select {
				case <-h.newStop:
					return
				default:
				}
				a := newAttempt{start: time.Now()}
				c, err := d.Dial("tcp4", addr.String())
				if err == nil {
					_ = c.SetDeadline(a.start.Add(to))
					_, err = c.Write([]byte("new\n"))
					if err == nil {
						_, err = bufio.NewReader(c).ReadString('\n')
					}
					c.Close()
				}
				a.end, a.err = time.Now(), err
				h.mu.Lock()
				switch {
				case probe && err == nil:
					h.probeOK = append(h.probeOK, a)
					if len(h.probeOK) > 100_000 {
						h.probeOK = h.probeOK[len(h.probeOK)-50_000:]
					}
				case !probe && len(h.newRuns) < 1_000_000:
					h.newRuns = append(h.newRuns, a)
				}
				h.mu.Unlock()
				if pause > 0 {
					time.Sleep(time.Duration(rnd.Int64N(int64(pause) + 1)))
				}
			}
		})
	}
}

// Mark records the moment of a failure (just before it is caused); the
// result counts from the latest mark.
func (h *HAClient) Mark() time.Time {
	now := time.Now()
	h.mark.Store(now.UnixNano())
	for _, c := range h.conns {
		c.resumed.Store(0)
	}
	return now
}

// HAResult is what the client saw of a failure.
type HAResult struct {
	Established int // connections open and answering when the failure came
	Survived    int // of those: answered again after it, never reset or broken
	Reset       int // reset by a peer (a director or real server that did not know them)
	Broken      int // other errors (EOF, timeouts)
	Stalled     int // no error, but no answer since the failure
	Moved       int // answered by another real server (must be 0)
	// New connections started after the failure.
	NewAttempted, NewFailed int
	// NewRecovered: from the failure to the first new connection started
	// after it that completed (-1: none did); NewFailedAfter counts
	// failures that started after that.
	NewRecovered   time.Duration
	NewFailedAfter int
	// LastNewFailure: from the failure to the start of the last failed
	// new connection after the recovery; NewFailureNote: the first's error.
	LastNewFailure time.Duration
	NewFailureNote string
	// LastResume: from the failure to the last surviving connection's
	// first answer after it (TCP's retransmission backoff shows here).
	LastResume time.Duration
}

// Result reads the outcome so far relative to the failure time (Mark).
func (h *HAClient) Result() HAResult {
	mark := h.mark.Load()
	var r HAResult
	r.NewRecovered = -1
	for _, c := range h.conns {
		if c.err.Load() != nil && c.errWhen.Load() < mark {
			continue // gone before this failure
		}
		r.Established++
		if c.moved.Load() {
			r.Moved++
		}
		if e := c.err.Load(); e != nil {
			if errors.Is(*e, syscall.ECONNRESET) {
				r.Reset++
			} else {
				r.Broken++
			}
			continue
		}
		if c.last.Load() > mark {
			r.Survived++
			if d := time.Duration(c.resumed.Load() - mark); d > r.LastResume {
				r.LastResume = d
			}
		} else {
			r.Stalled++
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var recovered int64
	for _, a := range h.newRuns {
		if a.start.UnixNano() < mark {
			continue
		}
		r.NewAttempted++
		if a.err != nil {
			r.NewFailed++
			continue
		}
		if e := a.end.UnixNano(); recovered == 0 || e < recovered {
			recovered = e
		}
	}
	for _, a := range h.probeOK {
		if a.start.UnixNano() < mark {
			continue // under way before the failure
		}
		if e := a.end.UnixNano(); recovered == 0 || e < recovered {
			recovered = e
		}
	}
	if recovered != 0 {
		r.NewRecovered = time.Duration(recovered - mark)
		for _, a := range h.newRuns {
			if a.start.UnixNano() > recovered && a.err != nil {
				r.NewFailedAfter++
				if d := time.Duration(a.start.UnixNano() - mark); d > r.LastNewFailure {
					r.LastNewFailure = d
				}
				if r.NewFailureNote == "" {
					r.NewFailureNote = a.err.Error()
				}
			}
		}
	}
	return r
}

// Stop ends the loops and closes the connections.
func (h *HAClient) Stop() {
	h.stop.Store(true)
	if h.newStop != nil {
		close(h.newStop)
	}
	for _, c := range h.conns {
		_ = c.c.SetDeadline(time.Now())
	}
	h.wg.Wait()
	h.newWG.Wait()
	for _, c := range h.conns {
		c.c.Close()
	}
}
