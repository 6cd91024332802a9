package sched

import (
	"strings"
	"testing"
	"time"

	"github.com/golvs/golvs/ipvs"
)

// The scheduling worked examples of ../shared/ipvs-spec-2026.md (D1, D2.3
// S1-S3, D5, D6) and of ipvs-spec.md §1.2, §1.3, §2.3, §2.4, §2.9, §2.12,
// §2.13, replayed under both semantics with the spec's literal expected
// picks (the spec's authors derived them from a model of the kernel code).

// TestOverheadD1 is D1's table.
func TestOverheadD1Picks(t *testing.T) {
	type dd struct {
		name       string
		w          int32
		act, inact int32
	}
	tests := []struct {
		name             string
		sched            string
		dests            []dd // list order
		classic, current string
	}{
		{"lc: 256/256 tie vs 257/256", "lc", []dd{{"A", 1, 1, 0}, {"B", 1, 0, 256}}, "A", "B"},
		{"lc: 512 < 513 vs 514 > 513", "lc", []dd{{"A", 1, 2, 0}, {"B", 1, 0, 513}}, "A", "B"},
		{"wlc: 512 < 513 vs 514 > 513", "wlc", []dd{{"A", 1, 2, 0}, {"B", 1, 0, 513}}, "A", "B"},
		{"wlc: 1024 vs 1026, 1028 > 1026", "wlc", []dd{{"A", 2, 4, 0}, {"B", 1, 0, 513}}, "A", "B"},
		{"wlc §2.4 example (same pick, other numbers)", "wlc", []dd{{"A", 1, 1, 0}, {"B", 3, 2, 10}}, "B", "B"},
		// sed and nq use act+1: unaffected
		{"sed unaffected", "sed", []dd{{"A", 1, 1, 0}, {"B", 1, 0, 256}}, "B", "B"},
		{"nq unaffected", "nq", []dd{{"A", 1, 1, 0}, {"B", 1, 1, 256}}, "A", "A"},
	}
	for _, tt := range tests {
		bothSemantics(t, func(t *testing.T, sem ipvs.Semantics) {
			h := newHarnessSem(t, tt.sched, sem)
			var ds []*ipvs.Dest
			for _, x := range tt.dests {
				d := h.mk(x.name, x.w)
				counters(d, x.act, x.inact)
				ds = append(ds, d)
			}
			h.snapshot(ds)
			h.init()
			want := tt.current
			if sem == ipvs.Classic {
				want = tt.classic
			}
			if got := h.picks(1, nil); got != want {
				t.Errorf("%s: got %s, want %s", tt.name, got, want)
			}
		})
	}
}

// TestTwosD1: choice1 = A (act 1), choice2 = B (inact 256), equal
// weights: classic 256 > 256 is false (A); current 257 > 256 (B).
func TestTwosD1(t *testing.T) {
	bothSemantics(t, func(t *testing.T, sem ipvs.Semantics) {
		draws := []uint32{0, 2} // [A w1, B w1], T = 2: r1 = 0 -> A, r2 = 2 -> B
		i := 0
		s := NewTwos(func(n uint32) uint32 { v := draws[i%2]; i++; return v })
		h := withSched(t, s)
		h.sem = sem
		a, b := h.mk("A", 1), h.mk("B", 1)
		counters(a, 1, 0)
		counters(b, 0, 256)
		h.snapshot([]*ipvs.Dest{a, b})
		h.init()
		want := map[ipvs.Semantics]string{ipvs.Classic: "A", ipvs.Current: "B"}[sem]
		if got := h.picks(1, nil); got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	})
}

// TestLBLCRSetMaxD1: set [B, A], weights 1, A act 1, B inact 256: when the
// set expires set_max removes B in classic (tie, first wins) and A in
// current (257 > 256).
func TestLBLCRSetMaxD1(t *testing.T) {
	bothSemantics(t, func(t *testing.T, sem ipvs.Semantics) {
		clk := newFake()
		s := NewLBLCR(CacheOptions{Now: clk.now, Expiration: time.Hour, Semantics: sem})
		h := withSched(t, s)
		h.sem = sem
		a, b := h.mk("A", 1), h.mk("B", 1)
		h.snapshot([]*ipvs.Dest{a, b})
		h.init()
		x := pktTo("10.1.1.1")
		h.picks(1, x) // {A}
		counters(a, 2, 0)
		if got := h.picks(1, x); got != "B" { // A overloaded: B joins at the head
			t.Fatalf("got %s, want B", got)
		}
		counters(a, 1, 0)
		counters(b, 0, 256)
		for i := 0; i < 6; i++ { // used every 10 min: the GC keeps it
			clk.advance(10 * time.Minute)
			h.picks(1, x)
		}
		clk.advance(time.Second)
		h.picks(1, x) // now > lastmod + 1 h: set_max goes
		var dec Decision
		s.Explain(h.svc, x, &dec)
		left := map[ipvs.Semantics]*ipvs.Dest{ipvs.Classic: a, ipvs.Current: b}[sem]
		if len(dec.Cached) != 1 || dec.Cached[0] != left {
			var n []string
			for _, d := range dec.Cached {
				n = append(n, h.name(d))
			}
			t.Errorf("set after expiry [%s], want [%s]", strings.Join(n, " "), h.name(left))
		}
	})
}

// binder binds inactive (UDP) conns to the dest each pick returns, as the
// D2.3 scheduling examples do.
func bindPicks(h *harness, n int) string {
	out := make([]string, n)
	for i := range out {
		d := h.s.Schedule(h.svc, nil)
		out[i] = h.name(d)
		if d != nil {
			d.Bind(false)
		}
	}
	return strings.Join(out, " ")
}

// TestOverloadSchedD23 is D2.3's scheduling table (S1-S3; S1 is also spec
// §1.2's wlc example): add A then B (list [B, A]), w = 1, inactive conns,
// each pick binds a conn to its dest.
func TestOverloadSchedD23(t *testing.T) {
	edit := func(d *ipvs.Dest, u, l uint32) {
		c := d.Config()
		c.UThreshold, c.LThreshold = u, l
		d.Update(c)
	}
	tests := []struct {
		name             string
		setup            func(a, b *ipvs.Dest)
		picks            int
		classic, current string
	}{
		{"S1: A -x 10 reached 10, fell to 9; B 20; edit A -x 12", func(a, b *ipvs.Dest) {
			edit(a, 10, 0)
			for i := 0; i < 10; i++ {
				a.Bind(false)
			}
			a.Unbind(false, false)
			edit(a, 12, 0)
		}, 5, "A A A B B", "B B B B B"},
		{"S2: A 10, no thresholds; B 20; edit A -x 5", func(a, b *ipvs.Dest) {
			for i := 0; i < 10; i++ {
				a.Bind(false)
			}
			edit(a, 5, 0)
		}, 3, "A B B", "B B B"},
		{"S3: A -x 10 reached 10, fell to 8; B 20; edit A -x 10 -y 9", func(a, b *ipvs.Dest) {
			edit(a, 10, 0)
			for i := 0; i < 10; i++ {
				a.Bind(false)
			}
			a.Unbind(false, false)
			a.Unbind(false, false)
			edit(a, 10, 9)
		}, 3, "B B B", "A A B"},
	}
	for _, tt := range tests {
		bothSemantics(t, func(t *testing.T, sem ipvs.Semantics) {
			h := newHarnessSem(t, "wlc", sem)
			a, b := h.mk("A", 1), h.mk("B", 1)
			h.preset(a, b)
			h.init()
			for i := 0; i < 20; i++ {
				b.Bind(false)
			}
			tt.setup(a, b)
			want := tt.current
			if sem == ipvs.Classic {
				want = tt.classic
			}
			if got := bindPicks(h, tt.picks); got != want {
				t.Errorf("%s: got %q, want %q", tt.name, got, want)
			}
		})
	}
}

// TestLBLCCapD5 is D5's worked example (and spec §2.12's): A w=100 then B
// w=100 (list [B, A]); 24576 distinct addresses fill the cache with B;
// then B act=1: a new address goes to A by wlc, and classic caches it,
// current does not; then A act=1, B act=0: classic keeps A from the cache,
// current picks afresh (B, overhead 0 against A's 257).
func TestLBLCCapD5(t *testing.T) {
	bothSemantics(t, func(t *testing.T, sem ipvs.Semantics) {
		s := NewLBLC(CacheOptions{Now: newFake().now, Semantics: sem})
		h := withSched(t, s)
		h.sem = sem
		a := h.mk("A", 100)
		b := h.mk("B", 100)
		h.preset(a, b)
		h.init()
		for k := 0; k < 24576; k++ {
			if d := s.Schedule(h.svc, &Packet{Dst: ipN(0x0b000000 + k)}); d != b {
				t.Fatalf("fill %d: %s, want B", k, h.name(d))
			}
		}
		if s.Len() != 24576 {
			t.Fatalf("%d entries after the fill, want 24576", s.Len())
		}
		y := pktTo("12.0.0.1")
		counters(b, 1, 0)
		counters(a, 0, 0)
		if got := h.picks(1, y); got != "A" {
			t.Errorf("step 1: got %s, want A (wlc)", got)
		}
		wantLen := map[ipvs.Semantics]int{ipvs.Classic: 24577, ipvs.Current: 24576}[sem]
		if s.Len() != wantLen {
			t.Errorf("step 1: %d entries, want %d", s.Len(), wantLen)
		}
		if want := uint64(24577 - wantLen); s.NotCached() != want {
			t.Errorf("step 1: %d picks not cached, want %d", s.NotCached(), want)
		}
		counters(a, 1, 0)
		counters(b, 0, 0)
		want := map[ipvs.Semantics]string{ipvs.Classic: "A", ipvs.Current: "B"}[sem]
		if got := h.picks(1, y); got != want {
			t.Errorf("step 2: got %s, want %s", got, want)
		}
		// At the cap a replaced entry still works: delete, then create.
		if sem == ipvs.Current {
			x := &Packet{Dst: ipN(0x0b000000)} // cached -> B
			counters(b, 101, 0)                // act > w and A is below half: overloaded
			counters(a, 0, 0)
			if got := h.picks(1, x); got != "A" {
				t.Fatalf("replace at the cap: got %s, want A", got)
			}
			counters(b, 0, 0)
			counters(a, 1, 0)
			if got := h.picks(1, x); got != "A" || s.Len() != 24576 {
				t.Errorf("replaced entry at the cap: got %s with %d entries, want A (cached) and 24576", got, s.Len())
			}
		}
	})
}

// TestLBLCCounterD6 is D6's worked example: list [B, A], w=1; X cached on
// B at t=0, then 16385 replacements alternating A and B (X -> A at the
// end); classic's counter is 1 + 16385 = 16386, current's 1. With all
// counters 0 until t=420 s, classic's partial GC evicts X at 360 s
// (idle 6 min) while current keeps it; at 420 s with A act=1, classic
// picks B by wlc, current the cached A. Spec §2.12's short form: 1
// address, 16385 replacements, 7 minutes idle.
func TestLBLCCounterD6(t *testing.T) {
	bothSemantics(t, func(t *testing.T, sem ipvs.Semantics) {
		clk := newFake()
		s := NewLBLC(CacheOptions{Now: clk.now, Semantics: sem})
		h := withSched(t, s)
		h.sem = sem
		a := h.mk("A", 1)
		b := h.mk("B", 1)
		h.preset(a, b)
		h.init()
		x := pktTo("10.1.1.1")
		if got := h.picks(1, x); got != "B" {
			t.Fatalf("first pick %s, want B", got)
		}
		for round := 1; round <= 16385; round++ {
			want := "A"
			if round%2 == 1 {
				counters(b, 2, 0)
				counters(a, 0, 0)
			} else {
				counters(a, 2, 0)
				counters(b, 0, 0)
				want = "B"
			}
			if got := h.picks(1, x); got != want {
				t.Fatalf("round %d: got %s, want %s", round, got, want)
			}
		}
		wantCounter := map[ipvs.Semantics]int{ipvs.Classic: 16386, ipvs.Current: 1}[sem]
		if s.Len() != 1 || s.Counter() != wantCounter {
			t.Errorf("after 16385 replacements: %d entries, counter %d; want 1 and %d", s.Len(), s.Counter(), wantCounter)
		}
		counters(a, 0, 0)
		counters(b, 0, 0)
		clk.advance(420 * time.Second)
		counters(a, 1, 0)
		want := map[ipvs.Semantics]string{ipvs.Classic: "B", ipvs.Current: "A"}[sem]
		if got := h.picks(1, x); got != want {
			t.Errorf("at 420 s: got %s, want %s", got, want)
		}
		if sem == ipvs.Classic && s.Counter() != 16386 {
			// X evicted at 360 s (16385), then re-created at 420 s
			t.Errorf("classic counter %d at 420 s, want 16386", s.Counter())
		}
	})
}

// TestExplainFormula: explanations of the least-connection family say
// which overhead formula they used.
func TestExplainFormula(t *testing.T) {
	bothSemantics(t, func(t *testing.T, sem ipvs.Semantics) {
		for _, name := range []string{"lc", "wlc", "lblc", "lblcr", "twos", "sed", "nq", "rr"} {
			h := newHarnessSem(t, name, sem)
			a := h.mk("A", 1)
			counters(a, 1, 2)
			h.snapshot([]*ipvs.Dest{a})
			h.init()
			var d Decision
			h.s.(Explainer).Explain(h.svc, pktTo("10.0.0.9"), &d)
			want := OverheadFormula(sem)
			switch name {
			case "sed", "nq":
				want = SedFormula
			case "rr":
				want = ""
			}
			if d.Formula != want {
				t.Errorf("%s: formula %q, want %q", name, d.Formula, want)
			}
			oh := map[ipvs.Semantics]int64{ipvs.Classic: 258, ipvs.Current: 259}[sem]
			if name == "sed" || name == "nq" {
				oh = 2
			}
			if d.Dests[0].Overhead != oh {
				t.Errorf("%s: overhead %d, want %d", name, d.Dests[0].Overhead, oh)
			}
		}
		// twos says when its 32-bit products wrap
		h := withSched(t, NewTwosSeeded(1))
		h.sem = sem
		a, b := h.mk("A", 65535), h.mk("B", 65535)
		counters(a, 200, 0)
		h.snapshot([]*ipvs.Dest{a, b})
		var d Decision
		h.s.(Explainer).Explain(h.svc, nil, &d)
		if !strings.Contains(d.Note, "kernel quirk") || !strings.Contains(d.Note, a.Addr.String()) || strings.Contains(d.Note, " "+b.Addr.String()) {
			t.Errorf("twos note %q: want the wrap named for A only", d.Note)
		}
	})
}

// TestCacheBounds: the caps each semantics gets by default, and the count
// of picks that found the cache at its cap (served, not cached).
func TestCacheBounds(t *testing.T) {
	for _, c := range []struct {
		o    CacheOptions
		want int
	}{
		{CacheOptions{}, 24576},
		{CacheOptions{Semantics: ipvs.Classic}, LBLCMemoryBound},
		{CacheOptions{Semantics: ipvs.Classic, MaxEntries: -1}, int(^uint(0) >> 1)},
		{CacheOptions{MaxEntries: 7}, 7},
	} {
		if got := maxEntries(c.o); got != c.want {
			t.Errorf("%+v: cap %d, want %d", c.o, got, c.want)
		}
	}
	for _, name := range []string{"lblc", "lblcr"} {
		o := CacheOptions{Now: newFake().now, MaxEntries: 3, Semantics: ipvs.Classic}
		var s Scheduler = NewLBLC(o)
		if name == "lblcr" {
			s = NewLBLCR(o)
		}
		h := withSched(t, s)
		h.snapshot([]*ipvs.Dest{h.mk("A", 1)})
		h.init()
		for i := 0; i < 5; i++ {
			if got := h.picks(1, &Packet{Dst: ipN(i)}); got != "A" {
				t.Fatalf("%s pick %d: %s", name, i, got)
			}
		}
		h.picks(1, &Packet{Dst: ipN(0)}) // a hit: nothing to count
		if n := s.(CacheCounter).NotCached(); n != 2 {
			t.Errorf("%s: %d not cached, want 2", name, n)
		}
	}
}
