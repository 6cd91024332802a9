package sched

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/golvs/golvs/ipvs"
)

// Tests of this file pin defects that golvs had in both semantics (issue
// 13); each failed on the code before the fix.

// lblcTimerModel is a brute-force transcription of the kernel's lblc/lblcr
// GC timer (ip_vs_lblc_check_expire, ip_vs_lblc_full_check): it runs every
// 60 s period one by one, whatever the idle time, over its own copy of
// the entries (address -> lastuse) hashed with its own hash_32. It shares
// no code with the scheduler.
type lblcTimerModel struct {
	expire  int64
	entries int // the kernel's tbl->entries
	counter int
	rover   int
	next    int64
	last    map[netip.Addr]int64
	bucket  [1024]map[netip.Addr]bool
}

func newTimerModel(expire time.Duration) *lblcTimerModel {
	m := &lblcTimerModel{expire: int64(expire), counter: 1, next: int64(time.Minute), last: map[netip.Addr]int64{}}
	for i := range m.bucket {
		m.bucket[i] = map[netip.Addr]bool{}
	}
	return m
}

func modelBucket(a netip.Addr) int {
	var x uint32
	if a.Is4() {
		b := a.As4()
		x = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	}
	return int((x * 0x61C88647) >> (32 - 10))
}

func (m *lblcTimerModel) advance(now int64) {
	for m.next <= now {
		m.run(m.next)
		m.next += int64(time.Minute)
	}
}

func (m *lblcTimerModel) sweep(bucket int, now, idle int64) int {
	n := 0
	for a := range m.bucket[bucket] {
		if now >= m.last[a]+idle {
			delete(m.last, a)
			delete(m.bucket[bucket], a)
			m.entries--
			n++
		}
	}
	return n
}

func (m *lblcTimerModel) run(now int64) {
	const maxSize = 16384
	if m.counter%30 == 0 {
		j := m.rover
		for i := 0; i < 1024; i++ {
			j = (j + 1) & 1023
			m.sweep(j, now, m.expire)
		}
		m.rover = j
		m.counter = 1
		return
	}
	if m.entries <= maxSize {
		m.counter++
		return
	}
	goal := (m.entries - maxSize) * 4 / 3
	if goal > maxSize/2 {
		goal = maxSize / 2
	}
	j := m.rover
	for i := 0; i < 1024; i++ {
		j = (j + 1) & 1023
		goal -= m.sweep(j, now, int64(6*time.Minute))
		if goal <= 0 {
			break
		}
	}
	m.rover = j
}

// use is a pick of address a at now that hits or creates its entry.
func (m *lblcTimerModel) use(a netip.Addr, now int64) {
	m.advance(now)
	if _, ok := m.last[a]; !ok {
		m.entries++
		m.bucket[modelBucket(a)][a] = true
	}
	m.last[a] = now
}

// TestLBLCTimerCatchUp replays random pick sequences with idle gaps of up
// to 9 hours into lblc and lblcr and into the model above, and compares
// which addresses are cached after every pick. Before the fix, a gap of
// more than an hour ran only the last 60 periods and lost the counter of
// the others, so full checks fell at other times than the kernel's.
func TestLBLCTimerCatchUp(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 17))
	for iter := 0; iter < 60; iter++ {
		expire := time.Duration(5+r.IntN(180)) * time.Minute
		clk := newFake()
		base := clk.t
		var s Scheduler
		var cached func(a netip.Addr) bool
		sem := ipvs.Semantics(iter / 2 % 2)
		if iter%2 == 0 {
			l := NewLBLC(CacheOptions{Now: clk.now, Expiration: expire, Semantics: sem})
			s = l
			cached = func(a netip.Addr) bool {
				var d Decision
				l.Explain(nil, &Packet{Dst: a}, &d)
				return d.CacheHit
			}
		} else {
			l := NewLBLCR(CacheOptions{Now: clk.now, Expiration: expire, Semantics: sem})
			s = l
			cached = func(a netip.Addr) bool {
				var d Decision
				l.Explain(nil, &Packet{Dst: a}, &d)
				return d.CacheHit
			}
		}
		h := withSched(t, s)
		h.sem = sem
		h.snapshot([]*ipvs.Dest{h.mk("A", 1)})
		h.init()
		m := newTimerModel(expire)
		addrs := make([]netip.Addr, 12)
		for i := range addrs {
			addrs[i] = ipN(1000*iter + i)
		}
		for step := 0; step < 40; step++ {
			var gap time.Duration
			switch r.IntN(4) {
			case 0:
				gap = time.Duration(r.IntN(120)) * time.Second
			case 1:
				gap = time.Duration(r.IntN(90)) * time.Minute
			default:
				gap = time.Duration(61+r.IntN(480))*time.Minute + time.Duration(r.IntN(60))*time.Second
			}
			clk.advance(gap)
			now := int64(clk.t.Sub(base))
			a := addrs[r.IntN(len(addrs))]
			if got := h.name(s.Schedule(h.svc, &Packet{Dst: a})); got != "A" {
				t.Fatalf("iter %d step %d: picked %s", iter, step, got)
			}
			m.use(a, now)
			for _, x := range addrs {
				_, want := m.last[x]
				if got := cached(x); got != want {
					t.Fatalf("iter %d (%s, expiration %s) step %d at %s: %s cached %v, kernel model %v",
						iter, s.Name(), expire, step, time.Duration(now), x, got, want)
				}
			}
		}
	}
}

// TestLBLCTimerCatchUpGC: the same comparison with more than max_size
// entries, so that the partial GC (entries idle >= 6 min, bucket by
// bucket from the rover, until goal) runs in the missed periods too.
// Entries are made over 40 minutes, then picks come after idle gaps of
// 1 to 9 hours; after each, the number of entries and a sample of
// addresses are compared with the model.
func TestLBLCTimerCatchUpGC(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 23))
	for iter := 0; iter < 2; iter++ {
		clk := newFake()
		base := clk.t
		expire := 24 * time.Hour
		if iter%2 == 1 {
			expire = 2 * time.Hour
		}
		s := NewLBLC(CacheOptions{Now: clk.now, Expiration: expire, Semantics: ipvs.Classic})
		h := withSched(t, s)
		h.sem = ipvs.Classic
		h.snapshot([]*ipvs.Dest{h.mk("A", 1)})
		h.init()
		m := newTimerModel(expire)
		var addrs []netip.Addr
		pick := func(a netip.Addr) {
			now := int64(clk.t.Sub(base))
			s.Schedule(h.svc, &Packet{Dst: a})
			m.use(a, now)
		}
		next := 0
		burst := func(n int) { // n new entries over about 2 minutes
			for k := 0; k < n; k++ {
				if k%100 == 0 {
					clk.advance(time.Duration(r.IntN(1500)) * time.Millisecond)
				}
				a := ipN(0x0a000000 + next*7)
				next++
				addrs = append(addrs, a)
				pick(a)
			}
		}
		burst(17500)
		for step := 0; step < 16; step++ {
			if step%4 == 3 {
				burst(3000) // above max_size again
			}
			if r.IntN(2) == 0 {
				clk.advance(time.Duration(2+r.IntN(20))*time.Minute + time.Duration(r.IntN(60))*time.Second)
			} else {
				clk.advance(time.Duration(60+r.IntN(480)) * time.Minute)
			}
			pick(addrs[r.IntN(len(addrs))])
			if s.Len() != len(m.last) || s.Counter() != m.entries {
				t.Fatalf("iter %d step %d: %d entries (counter %d), model %d (%d)", iter, step, s.Len(), s.Counter(), len(m.last), m.entries)
			}
			for j := 0; j < 200; j++ {
				a := addrs[r.IntN(len(addrs))]
				var d Decision
				s.Explain(nil, &Packet{Dst: a}, &d)
				if _, want := m.last[a]; d.CacheHit != want {
					t.Fatalf("iter %d step %d: %s cached %v, model %v", iter, step, a, d.CacheHit, want)
				}
			}
		}
	}
}

// TestLBLCTimerCatchUpExample is the literal case: an entry made at t=0,
// lblc_expiration 80 min, idle 75 min, then one pick of another address.
// The kernel's full checks run at 30, 60, 90 min: at 95 min the entry is
// gone. Before the fix golvs ran only minutes 16..75 on the late pick (full
// checks at 45 and 75 min, then at 105): the entry was still cached at 95.
func TestLBLCTimerCatchUpExample(t *testing.T) {
	clk := newFake()
	s := NewLBLC(CacheOptions{Now: clk.now, Expiration: 80 * time.Minute})
	h := withSched(t, s)
	h.snapshot([]*ipvs.Dest{h.mk("A", 1)})
	h.init()
	x, y := pktTo("10.1.1.1"), pktTo("10.2.2.2")
	h.picks(1, x)
	clk.advance(75 * time.Minute)
	h.picks(1, y)
	clk.advance(20 * time.Minute)
	h.picks(1, y)
	var d Decision
	s.Explain(h.svc, x, &d)
	if d.CacheHit {
		t.Errorf("at 95 min the entry made at 0 is still cached; the kernel's full check at 90 min dropped it")
	}
}

// TestTwosWrap: the kernel multiplies weight by overhead in 32-bit ints.
// With weight 65535 and an overhead of 32769 (act 128, inact 1, classic)
// the product wraps negative, and twos keeps the loaded choice1. golvs
// computed in 64 bits and took the idle choice2.
func TestTwosWrap(t *testing.T) {
	draws := []uint32{0, 131070} // choice1 = A (first), choice2 = B (last)
	i := 0
	s := NewTwos(func(n uint32) uint32 { v := draws[i%2]; i++; return v })
	h := withSched(t, s)
	a, b := h.mk("A", 65535), h.mk("B", 65535)
	counters(a, 128, 1)
	h.snapshot([]*ipvs.Dest{a, b})
	h.init()
	if got := h.picks(1, nil); got != "A" {
		t.Errorf("got %s, want A: 65535·32769 wraps to a negative int in the kernel", got)
	}
	// below the wrap, the idle server wins as usual
	counters(a, 127, 0)
	if got := h.picks(1, nil); got != "B" {
		t.Errorf("no wrap: got %s, want B", got)
	}
}
