package ratelog

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a fake clock safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }
func newClock() *clock               { c := &clock{}; c.ns.Store(int64(time.Hour)); return c }
func (s *sink) logf(f string, a ...any) {
	s.mu.Lock()
	s.lines = append(s.lines, fmt.Sprintf(f, a...))
	s.mu.Unlock()
}

type sink struct {
	mu    sync.Mutex
	lines []string
}

func (s *sink) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.lines
	s.lines = nil
	return out
}

var summaryRE = regexp.MustCompile(`^log: suppressed (\d+) similar messages? in the last (\S+): (.*)$`)

func TestRepeatsSummarised(t *testing.T) {
	c := newClock()
	var s sink
	l := New(s.logf, Config{Burst: 2, Interval: time.Minute, Now: c.now})
	for i := 0; i < 120; i++ { // twice a second for a minute
		l.Logf("next hop for %s: no route", "198.19.0.11")
		c.add(500 * time.Millisecond)
	}
	got := s.take()
	want := []string{
		"next hop for 198.19.0.11: no route",
		"next hop for 198.19.0.11: no route",
		`log: suppressed 118 similar messages in the last 1m0s: "next hop for 198.19.0.11: no route"`,
		"next hop for 198.19.0.11: no route",
	}
	// The 121st call (after the loop's last step) is the first of the
	// second minute: it reports the first minute's repeats, then passes.
	l.Logf("next hop for %s: no route", "198.19.0.11")
	got = append(got, s.take()...)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if l.Suppressed() != 118 {
		t.Fatalf("suppressed %d, want 118", l.Suppressed())
	}
	// Repeats that stop are reported by Flush once their minute is over.
	l.Logf("next hop for %s: no route", "198.19.0.11")
	l.Logf("next hop for %s: no route", "198.19.0.11")
	l.Flush()
	if got := s.take(); len(got) != 1 {
		t.Fatalf("before the minute ends: %q, want the second line only", got)
	}
	c.add(time.Minute)
	l.Flush()
	if got := s.take(); len(got) != 1 || got[0] != `log: suppressed 1 similar message in the last 1m0s: "next hop for 198.19.0.11: no route"` {
		t.Fatalf("flush: %q", got)
	}
	if l.Keys() != 0 {
		t.Fatalf("%d keys remembered after the flush, want 0", l.Keys())
	}
}

func TestDistinctLinesAndKeys(t *testing.T) {
	c := newClock()
	var s sink
	l := New(s.logf, Config{Now: c.now}) // defaults: one line per key per minute
	l.Logf("host: set %s", "ext0")
	l.Logf("host: set %s", "int0") // same format, other text: passes
	l.Keyf("hop 198.19.0.11", "next hop for 198.19.0.11: %s", "no route")
	l.Keyf("hop 198.19.0.11", "next hop for 198.19.0.11: %s", "leaves through eth9") // same key: held
	l.Keyf("hop 198.19.0.12", "next hop for 198.19.0.12: %s", "no route")
	got := s.take()
	want := []string{"host: set ext0", "host: set int0", "next hop for 198.19.0.11: no route", "next hop for 198.19.0.12: no route"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestBoundedKeys: any number of distinct lines keeps at most MaxKeys keys
// (plus the shared overflow key), and those lines are limited too.
func TestBoundedKeys(t *testing.T) {
	c := newClock()
	var s sink
	l := New(s.logf, Config{MaxKeys: 16, Now: c.now})
	for i := 0; i < 100000; i++ {
		l.Logf("ARP from 198.%d.%d.%d", 18+i>>16, i>>8&255, i&255)
		if l.Keys() > 17 {
			t.Fatalf("%d keys after %d distinct lines, want at most 17", l.Keys(), i+1)
		}
	}
	passed := len(s.take())
	if passed != 17 {
		t.Fatalf("%d lines passed, want 16 keys + 1 overflow line", passed)
	}
	if l.Overflowed() != 100000-16 || l.Suppressed() != 100000-17 {
		t.Fatalf("overflowed %d suppressed %d", l.Overflowed(), l.Suppressed())
	}
	// Once the minute is over, the table makes room again.
	c.add(time.Minute)
	l.Logf("later")
	got := s.take()
	if len(got) < 2 || got[len(got)-1] != "later" || l.Keys() > 17 {
		t.Fatalf("after the interval: %q, %d keys", got, l.Keys())
	}
}

// TestConcurrent logs from several goroutines while the clock moves; every
// call is accounted for exactly once: passed, or suppressed and then
// reported in a summary; and no key passes more than Burst lines in one
// interval.
func TestConcurrent(t *testing.T) {
	c := newClock()
	var s sink
	const burst = 3
	l := New(s.logf, Config{Burst: burst, Interval: time.Second, MaxKeys: 8, Now: c.now})
	const workers, calls = 8, 5000
	var wg sync.WaitGroup
	stop, flusherDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(flusherDone)
		for {
			select {
			case <-stop:
				return
			default:
				c.add(time.Millisecond)
				l.Flush()
			}
		}
	}()
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				l.Logf("line %d", (g*calls+i)%13) // 13 texts over 8 slots: the overflow key works too
			}
		}(g)
	}
	wg.Wait()
	close(stop)
	// The flusher's last Flush may still be writing its summaries: they
	// must be in the sink before it is read.
	<-flusherDone
	c.add(time.Hour)
	l.Flush()
	passed, reported := 0, 0
	for _, line := range s.take() {
		if m := summaryRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			reported += n
			continue
		}
		passed++
	}
	if passed+int(l.Suppressed()) != workers*calls {
		t.Fatalf("passed %d + suppressed %d != %d calls", passed, l.Suppressed(), workers*calls)
	}
	if reported != int(l.Suppressed()) {
		t.Fatalf("summaries report %d, suppressed %d", reported, l.Suppressed())
	}
	if l.Keys() != 0 {
		t.Fatalf("%d keys left after the final flush", l.Keys())
	}
}
