// Package ratelog keeps repeated log lines from flooding a log: a line is
// passed at most Burst times per Interval, the repeats are counted, and one
// "suppressed K similar messages" line reports them when the interval
// ends. golvs's housekeeping logs through it (a real server with no route
// is retried twice a second, for ever); it is never used per packet.
//
// Lines are grouped by a key: the formatted text itself (Logf), or a key
// the caller chooses (Keyf). The key table is bounded: when it is full,
// finished intervals are swept first, and a line whose key still finds no
// room shares one overflow key, so memory stays bounded whatever is logged.
package ratelog

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Config sets a Limiter up. Zero values take the defaults.
type Config struct {
	Burst    int           // lines per key per interval (default 1)
	Interval time.Duration // default one minute
	MaxKeys  int           // keys remembered at once (default 1024)
	// Now is the clock (tests pass a fake one); nil: time.Now.
	Now func() time.Time
}

// Defaults.
const (
	DefaultBurst    = 1
	DefaultInterval = time.Minute
	DefaultMaxKeys  = 1024
	maxKeyLen       = 160 // longer keys are cut: a key is never a big string
)

// overflowKey groups the lines whose own key found no room.
const overflowKey = "\x00other messages"

// Limiter rate-limits log lines. It is safe for concurrent use.
type Limiter struct {
	out func(format string, args ...any)
	c   Config

	mu   sync.Mutex
	keys map[string]*window

	suppressed atomic.Uint64
	overflowed atomic.Uint64
}

type window struct {
	start   time.Time
	passed  int
	dropped int
}

// New returns a limiter writing to out (nil: lines are only counted).
func New(out func(format string, args ...any), c Config) *Limiter {
	if c.Burst <= 0 {
		c.Burst = DefaultBurst
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.MaxKeys <= 0 {
		c.MaxKeys = DefaultMaxKeys
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &Limiter{out: out, c: c, keys: map[string]*window{}}
}

// Logf logs a line, keyed by its text: identical lines are limited.
func (l *Limiter) Logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.emit(msg, msg)
}

// Keyf logs a line keyed by key: lines that differ in detail but share the
// key (one real server's resolution errors) are limited together.
func (l *Limiter) Keyf(key, format string, args ...any) {
	l.emit(key, fmt.Sprintf(format, args...))
}

// Suppressed returns how many lines were held back so far.
func (l *Limiter) Suppressed() uint64 { return l.suppressed.Load() }

// Overflowed returns how many lines found the key table full and were
// limited under the shared overflow key.
func (l *Limiter) Overflowed() uint64 { return l.overflowed.Load() }

// Keys returns how many keys are remembered now.
func (l *Limiter) Keys() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

func (l *Limiter) emit(key, msg string) {
	if len(key) > maxKeyLen {
		key = key[:maxKeyLen]
	}
	now := l.c.Now()
	var lines []string
	l.mu.Lock()
	w := l.keys[key]
	if w == nil {
		if len(l.keys) >= l.c.MaxKeys {
			lines = l.sweepLocked(now, lines)
		}
		if len(l.keys) >= l.c.MaxKeys {
			// Full of live keys: share the overflow key (one slot
			// beyond MaxKeys is kept for it).
			l.overflowed.Add(1)
			key = overflowKey
			w = l.keys[key]
		}
		if w == nil {
			w = &window{start: now}
			l.keys[key] = w
		}
	}
	if now.Sub(w.start) >= l.c.Interval {
		lines = appendSummary(lines, key, w.dropped, now.Sub(w.start))
		*w = window{start: now}
	}
	if w.passed < l.c.Burst {
		w.passed++
		lines = append(lines, msg)
	} else {
		w.dropped++
		l.suppressed.Add(1)
	}
	l.mu.Unlock()
	l.write(lines)
}

// Flush reports the repeats of every finished interval and forgets its
// key. Call it now and then (golvs's housekeeping does, every second), so
// a summary appears even when the repeats stop.
func (l *Limiter) Flush() {
	now := l.c.Now()
	l.mu.Lock()
	lines := l.sweepLocked(now, nil)
	l.mu.Unlock()
	l.write(lines)
}

func (l *Limiter) sweepLocked(now time.Time, lines []string) []string {
	for k, w := range l.keys {
		if d := now.Sub(w.start); d >= l.c.Interval {
			lines = appendSummary(lines, k, w.dropped, d)
			delete(l.keys, k)
		}
	}
	return lines
}

func appendSummary(lines []string, key string, n int, over time.Duration) []string {
	if n == 0 {
		return lines
	}
	what := fmt.Sprintf("%q", key)
	if key == overflowKey {
		what = "other messages (too many distinct ones to tell apart)"
	}
	s := "s"
	if n == 1 {
		s = ""
	}
	return append(lines, fmt.Sprintf("log: suppressed %d similar message%s in the last %s: %s", n, s, over.Round(time.Second), what))
}

func (l *Limiter) write(lines []string) {
	if l.out == nil {
		return
	}
	for _, s := range lines {
		l.out("%s", s)
	}
}
