package sched

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/golvs/golvs/ipvs"
)

// TestRR covers spec §2.1: newest first, the cursor rules on add and
// delete, and skipping of quiesced and overloaded dests.
func TestRR(t *testing.T) {
	tests := []struct {
		name string
		run  func(h *harness) string
		want string
	}{
		{"C,B,A", func(h *harness) string {
			h.init()
			h.add(h.mk("A", 1))
			h.add(h.mk("B", 1))
			h.add(h.mk("C", 1))
			return h.picks(7, nil)
		}, "C B A C B A C"},
		{"add does not move the cursor", func(h *harness) string {
			h.init()
			h.add(h.mk("A", 1))
			h.add(h.mk("B", 1))
			h.add(h.mk("C", 1))
			s := h.picks(2, nil) // C B
			h.add(h.mk("D", 1))
			return s + " | " + h.picks(5, nil)
		}, "C B | A D C B A"},
		{"delete under the cursor moves it back", func(h *harness) string {
			a, b, c := h.mk("A", 1), h.mk("B", 1), h.mk("C", 1)
			h.init()
			h.add(a)
			h.add(b)
			h.add(c)
			s := h.picks(2, nil) // C B, cursor on B
			h.del(b)             // cursor -> C
			return s + " | " + h.picks(3, nil)
		}, "C B | A C A"},
		{"delete the first under the cursor goes to the head", func(h *harness) string {
			a, b, c := h.mk("A", 1), h.mk("B", 1), h.mk("C", 1)
			h.init()
			h.add(a)
			h.add(b)
			h.add(c)
			s := h.picks(1, nil) // C
			h.del(c)
			return s + " | " + h.picks(3, nil)
		}, "C | B A B"},
		{"delete elsewhere keeps the cursor", func(h *harness) string {
			a, b, c := h.mk("A", 1), h.mk("B", 1), h.mk("C", 1)
			h.init()
			h.add(a)
			h.add(b)
			h.add(c)
			s := h.picks(1, nil) // C
			h.del(a)
			return s + " | " + h.picks(3, nil)
		}, "C | B C B"},
		{"weight 0 and overload skipped", func(h *harness) string {
			a, b, c := h.mk("A", 1), h.mk("B", 0), h.mk("C", 1)
			h.preset(a, b, c)
			h.init()
			s := h.picks(3, nil)
			c.SetOverloaded(true)
			s += " | " + h.picks(2, nil)
			a.SetOverloaded(true)
			return s + " | " + h.picks(1, nil)
		}, "C A C | A A | -"},
		{"empty", func(h *harness) string { h.init(); return h.picks(1, nil) }, "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.run(newHarness(t, "rr")); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestWRRTable is the table of spec §2.2, both start states.
func TestWRRTable(t *testing.T) {
	tests := []struct {
		name        string
		weights     []int32 // A, B, C... in the order added
		incremental bool
		di, mw, cw  int64
		want        string
	}{
		{"2,1 incremental", []int32{2, 1}, true, 1, 2, 1, "B A A B A A B A A"},
		{"2,1 fresh", []int32{2, 1}, false, 1, 2, 2, "A B A A B A A B A"},
		{"4,3,2 incremental", []int32{4, 3, 2}, true, 1, 4, 1, "C B A A B A C B A C B A A B A C B A C B A"},
		{"4,3,2 fresh", []int32{4, 3, 2}, false, 1, 4, 4, "A B A C B A C B A A B A C B A C B A"},
		{"2,4 incremental", []int32{2, 4}, true, 2, 3, 1, "B A B B A B B A"},
		{"2,4 fresh", []int32{2, 4}, false, 2, 3, 3, "B B A B B A B B A"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, "wrr")
			var ds []*ipvs.Dest
			for i, w := range tt.weights {
				ds = append(ds, h.mk(string(rune('A'+i)), w))
			}
			if tt.incremental {
				h.init()
				for _, d := range ds {
					h.add(d)
				}
			} else {
				h.preset(ds...)
				h.init()
			}
			w := h.s.(*WRR)
			if w.di != tt.di || w.mw != tt.mw || w.cw != tt.cw {
				t.Errorf("state di=%d mw=%d cw=%d, want di=%d mw=%d cw=%d", w.di, w.mw, w.cw, tt.di, tt.mw, tt.cw)
			}
			n := len(strings.Fields(tt.want))
			if got := h.picks(n, nil); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestWRRChanges covers dest_changed (cl back to the head, cw realigned
// to the gcd) and the all-overloaded stop.
func TestWRRChanges(t *testing.T) {
	h := newHarness(t, "wrr")
	a, b := h.mk("A", 4), h.mk("B", 2)
	h.preset(a, b) // [B, A], di=2, mw=3, cw=3
	h.init()
	if got := h.picks(2, nil); got != "A B" {
		t.Fatalf("got %q, want %q", got, "A B")
	}
	w := h.s.(*WRR)
	if w.cw != 1 || w.cl != 0 {
		t.Fatalf("cw=%d cl=%d, want cw=1 cl=0", w.cw, w.cl)
	}
	h.setWeight(b, 6) // di=2, mw=5: cw=1 is not > mw, di>1: cw=(1/2)*2+1=1; cl = head
	if w.cl != -1 || w.cw != 1 || w.mw != 5 || w.di != 2 {
		t.Fatalf("after update cl=%d cw=%d mw=%d di=%d, want -1 1 5 2", w.cl, w.cw, w.mw, w.di)
	}
	// cw=1: B A; then cw=5: B; cw=3: B A; cw=1: B
	if got := h.picks(6, nil); got != "B A B B A B" {
		t.Errorf("got %q, want %q", got, "B A B B A B")
	}
	h.setWeight(a, 3) // weights 3, 6: di=3, mw=4, cw realigned to (cw/3)*3+1
	if w.di != 3 || w.mw != 4 {
		t.Errorf("di=%d mw=%d, want 3 4", w.di, w.mw)
	}
	a.SetOverloaded(true)
	b.SetOverloaded(true)
	if got := h.picks(2, nil); got != "- -" {
		t.Errorf("all overloaded: got %q, want %q", got, "- -")
	}
	if w.cl != -1 {
		t.Errorf("cl=%d after the stop, want the head", w.cl)
	}
	b.SetOverloaded(false)
	if got := h.picks(3, nil); got != "B B B" {
		t.Errorf("got %q, want %q", got, "B B B")
	}
	// weight 0 never satisfies w >= cw
	h2 := newHarness(t, "wrr")
	h2.preset(h2.mk("A", 0), h2.mk("B", 0))
	h2.init()
	if got := h2.picks(1, nil); got != "-" {
		t.Errorf("all weight 0: got %q, want -", got)
	}
}

// TestLeastFamily: cases written with classic's overhead
// (act·256 + inact); the 2026 rules have their own tests (semantics_test.go).
func TestLeastFamily(t *testing.T) {
	type dd struct {
		name       string
		w          int32
		act, inact int32
		ovl        bool
	}
	tests := []struct {
		name  string
		sched string
		dests []dd // in list order
		want  string
	}{
		{"wlc §2.4 example", "wlc", []dd{{"A", 1, 1, 0, false}, {"B", 3, 2, 10, false}}, "B"},
		{"wlc tie first", "wlc", []dd{{"A", 1, 1, 0, false}, {"B", 1, 1, 0, false}}, "A"},
		{"wlc seed skips w=0 and OVL", "wlc", []dd{{"A", 0, 0, 0, false}, {"B", 5, 0, 0, true}, {"C", 1, 9, 9, false}}, "C"},
		{"wlc later w=0 cannot win", "wlc", []dd{{"A", 1, 5, 0, false}, {"B", 0, 0, 0, false}}, "A"},
		{"wlc none", "wlc", []dd{{"A", 0, 0, 0, false}}, "-"},
		{"wlc counts inactive", "wlc", []dd{{"A", 1, 1, 0, false}, {"B", 1, 0, 300, false}}, "A"},
		{"sed ignores inactive", "sed", []dd{{"A", 1, 1, 0, false}, {"B", 1, 0, 300, false}}, "B"},
		{"wlc: idle light dest", "wlc", []dd{{"A", 1, 0, 0, false}, {"B", 10, 1, 0, false}}, "A"},
		{"sed: weight wins over idle", "sed", []dd{{"A", 1, 0, 0, false}, {"B", 10, 1, 0, false}}, "B"},
		{"sed tie first", "sed", []dd{{"A", 2, 1, 0, false}, {"B", 2, 1, 0, false}}, "A"},
		{"nq idle first", "nq", []dd{{"A", 10, 5, 0, false}, {"B", 1, 0, 50, false}, {"C", 1, 0, 0, false}}, "B"},
		{"sed same case", "sed", []dd{{"A", 10, 5, 0, false}, {"B", 1, 0, 50, false}, {"C", 1, 0, 0, false}}, "A"},
		{"nq idle but OVL skipped", "nq", []dd{{"A", 10, 5, 0, false}, {"B", 1, 0, 0, true}}, "A"},
		{"nq idle but w=0 skipped", "nq", []dd{{"A", 10, 5, 0, false}, {"B", 0, 0, 0, false}}, "A"},
		{"nq sed rule", "nq", []dd{{"A", 1, 3, 0, false}, {"B", 4, 4, 0, false}}, "B"},
		{"lc min overhead", "lc", []dd{{"A", 100, 2, 0, false}, {"B", 1, 1, 200, false}}, "B"},
		{"lc tie first", "lc", []dd{{"A", 1, 1, 0, false}, {"B", 9, 0, 256, false}}, "A"},
		{"lc skips w=0 and OVL", "lc", []dd{{"A", 0, 0, 0, false}, {"B", 1, 0, 0, true}, {"C", 1, 7, 0, false}}, "C"},
		{"fo highest weight", "fo", []dd{{"A", 5, 0, 0, false}, {"B", 10, 99, 0, false}, {"C", 10, 0, 0, false}}, "B"},
		{"fo skips OVL", "fo", []dd{{"A", 5, 0, 0, false}, {"B", 10, 0, 0, true}, {"C", 10, 0, 0, false}}, "C"},
		{"fo never w=0", "fo", []dd{{"A", 0, 0, 0, false}}, "-"},
		{"ovf act > w skipped, act == w ok", "ovf", []dd{{"A", 2, 3, 0, false}, {"B", 1, 1, 0, false}}, "B"},
		{"ovf highest weight first", "ovf", []dd{{"A", 3, 0, 0, false}, {"B", 3, 0, 0, false}, {"C", 2, 0, 0, false}}, "A"},
		{"ovf none", "ovf", []dd{{"A", 1, 2, 0, false}, {"B", 0, 0, 0, false}, {"C", 5, 0, 0, true}}, "-"},
		{"none", "none", []dd{{"A", 1, 0, 0, false}}, "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarnessSem(t, tt.sched, ipvs.Classic)
			var ds []*ipvs.Dest
			for _, x := range tt.dests {
				d := h.mk(x.name, x.w)
				counters(d, x.act, x.inact)
				d.SetOverloaded(x.ovl)
				ds = append(ds, d)
			}
			h.snapshot(ds) // list order as given
			h.init()
			if got := h.picks(1, nil); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// TestTwos drives twos with a scripted random source.
func TestTwos(t *testing.T) {
	tests := []struct {
		name   string
		draws  []uint32
		wantN  []uint32 // the n passed to below
		counts [][2]int32
		want   string
	}{
		// [A w=1, B w=3]: T=4, draws from [0,4]
		{"r=0 is A's extra ticket; B less loaded", []uint32{0, 4}, []uint32{5, 5}, [][2]int32{{1, 0}, {0, 0}}, "B"},
		{"choice1 wins ties", []uint32{0, 4}, []uint32{5, 5}, [][2]int32{{0, 0}, {0, 0}}, "A"},
		{"choice2 more loaded per weight", []uint32{2, 1}, []uint32{5, 5}, [][2]int32{{1, 0}, {2, 0}}, "B"},
		{"choice2 wins", []uint32{2, 1}, []uint32{5, 5}, [][2]int32{{0, 0}, {2, 0}}, "A"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ns []uint32
			i := 0
			s := NewTwos(func(n uint32) uint32 { ns = append(ns, n); v := tt.draws[i]; i++; return v })
			h := withSched(t, s)
			a, b := h.mk("A", 1), h.mk("B", 3)
			counters(a, tt.counts[0][0], tt.counts[0][1])
			counters(b, tt.counts[1][0], tt.counts[1][1])
			h.snapshot([]*ipvs.Dest{a, b})
			h.init()
			if got := h.picks(1, nil); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
			if len(ns) != 2 || ns[0] != tt.wantN[0] || ns[1] != tt.wantN[1] {
				t.Errorf("draw bounds %v, want %v", ns, tt.wantN)
			}
		})
	}
	// none eligible: no draw at all
	h := withSched(t, NewTwos(func(uint32) uint32 { t.Error("drew with no eligible dest"); return 0 }))
	d := h.mk("A", 0)
	h.snapshot([]*ipvs.Dest{d})
	if got := h.picks(1, nil); got != "-" {
		t.Errorf("got %s, want -", got)
	}
	// seeded twos is deterministic
	seq := func() string {
		h := withSched(t, NewTwosSeeded(42))
		var ds []*ipvs.Dest
		for i := 0; i < 5; i++ {
			ds = append(ds, h.mk(string(rune('A'+i)), int32(i+1)))
		}
		h.snapshot(ds)
		return h.picks(20, nil)
	}
	if a, b := seq(), seq(); a != b {
		t.Errorf("seeded twos not deterministic: %q vs %q", a, b)
	}
}

// TestSHTable covers the bucket filling examples of spec §2.10.
func TestSHTable(t *testing.T) {
	tests := []struct {
		name    string
		names   []string // list order
		weights []int32
		prefix  string
		counts  []int
	}{
		{"[B w=2, A w=1]", []string{"B", "A"}, []int32{2, 1}, "B B A B B A", []int{171, 85}},
		{"[B w=0, A w=1]", []string{"B", "A"}, []int32{0, 1}, "B A B A B A", []int{128, 128}},
		{"[C w=3, B w=0, A w=2]", []string{"C", "B", "A"}, []int32{3, 0, 2}, "C C C B A A C C C B A A", []int{129, 43, 84}},
		{"empty", nil, nil, "- - - - - -", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, "sh")
			var ds []*ipvs.Dest
			for i, w := range tt.weights {
				ds = append(ds, h.mk(tt.names[i], w))
			}
			h.snapshot(ds)
			h.init()
			tab := h.s.(*SH).tab.Load()
			var got []string
			for i := 0; i < len(strings.Fields(tt.prefix)); i++ {
				got = append(got, h.name(tab[i]))
			}
			if g := strings.Join(got, " "); g != tt.prefix {
				t.Errorf("buckets %q, want %q", g, tt.prefix)
			}
			for i, d := range ds {
				n := 0
				for _, x := range tab {
					if x == d {
						n++
					}
				}
				if n != tt.counts[i] {
					t.Errorf("%s holds %d buckets, want %d", h.name(d), n, tt.counts[i])
				}
			}
		})
	}
}

// TestSHSchedule checks the lookup: the §2.10 buckets through Schedule,
// sh-port, inverse packets, weight 0 and OVL, and sh-fallback probing.
func TestSHSchedule(t *testing.T) {
	h := newHarness(t, "sh")
	var ds []*ipvs.Dest
	for i := 0; i < 256; i++ { // one dest per bucket: bucket i = ds[i]
		ds = append(ds, h.mk(string(rune(0x100+i)), 1))
	}
	h.snapshot(ds)
	h.init()
	bucketOf := func(p *Packet) int {
		d := h.s.Schedule(h.svc, p)
		for i, x := range ds {
			if x == d {
				return i
			}
		}
		return -1
	}
	tests := []struct {
		name  string
		flags uint32
		p     *Packet
		want  int
	}{
		{"10.1.1.1", 0, pkt("10.1.1.1"), 118},
		{"172.16.5.4", 0, pkt("172.16.5.4"), 138},
		{"192.168.1.100", 0, pkt("192.168.1.100"), 89},
		{"port ignored without sh-port", 0, pkt("10.1.1.1"), 118},
		{"sh-port", ipvs.SvcSched2, pkt("10.1.1.1"), 26},
		{"sh-port on ICMP uses 0", ipvs.SvcSched2, &Packet{Proto: 1, Src: netip.MustParseAddr("10.1.1.1"), SrcPort: 40000}, 118},
		{"inverse uses dst and dport", ipvs.SvcSched2, &Packet{Proto: ipvs.ProtoUDP, Inverse: true, Src: netip.MustParseAddr("1.2.3.4"), SrcPort: 53, Dst: netip.MustParseAddr("10.1.1.1"), DstPort: 40000}, 26},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.svc.Flags = tt.flags
			if got := bucketOf(tt.p); got != tt.want {
				t.Errorf("bucket %d, want %d", got, tt.want)
			}
		})
	}

	t.Run("fallback", func(t *testing.T) {
		h := newHarness(t, "sh")
		a, b := h.mk("A", 1), h.mk("B", 1)
		h.snapshot([]*ipvs.Dest{b, a}) // even buckets B, odd A
		h.init()
		p := pkt("10.1.1.1") // bucket 118: B
		if got := h.picks(1, p); got != "B" {
			t.Fatalf("got %s, want B", got)
		}
		h.setWeight(b, 0) // B still holds one bucket in two
		if got := h.picks(1, p); got != "-" {
			t.Errorf("quiesced without fallback: got %s, want -", got)
		}
		h.svc.Flags = ipvs.SvcSched1
		// probes: (0+2·118)&255 = 236 (B, even), then 237 (A)
		if got := h.picks(1, p); got != "A" {
			t.Errorf("fallback: got %s, want A", got)
		}
		var dec Decision
		h.s.(Explainer).Explain(h.svc, p, &dec)
		if dec.Bucket != 118 || dec.Probes != 2 || dec.Dest != a {
			t.Errorf("explain: bucket %d probes %d dest %s, want 118 2 A", dec.Bucket, dec.Probes, h.name(dec.Dest))
		}
		a.SetOverloaded(true)
		if got := h.picks(1, p); got != "-" {
			t.Errorf("all unavailable: got %s, want -", got)
		}
	})
}

func TestDH(t *testing.T) {
	h := newHarness(t, "dh")
	a, b, c := h.mk("A", 1), h.mk("B", 5), h.mk("C", 1)
	h.init()
	h.add(a)
	h.add(b)
	h.add(c) // [C, B, A]; bucket i -> list[i%3]
	tab := h.s.(*DH).tab.Load()
	for i, want := range []*ipvs.Dest{c, b, a, c, b, a} {
		if tab[i] != want {
			t.Errorf("bucket %d = %s, want %s", i, h.name(tab[i]), h.name(want))
		}
	}
	// 10.1.1.1 -> 118 -> 118%3 = 1 -> B; the source is ignored
	p := pktTo("10.1.1.1")
	if got := h.picks(1, p); got != "B" {
		t.Errorf("got %s, want B", got)
	}
	p.Src = netip.MustParseAddr("8.8.8.8")
	p.Inverse = true
	if got := h.picks(1, p); got != "B" {
		t.Errorf("other source / inverse: got %s, want B", got)
	}
	// 172.16.5.4 -> 138 -> 0 -> C
	if got := h.picks(1, pktTo("172.16.5.4")); got != "C" {
		t.Errorf("got %s, want C", got)
	}
	b.SetOverloaded(true)
	if got := h.picks(1, p); got != "-" {
		t.Errorf("OVL: got %s, want -", got)
	}
	b.SetOverloaded(false)
	b.Unlink() // not AVAILABLE (in the trash), table not rebuilt
	if got := h.picks(1, p); got != "-" {
		t.Errorf("not available: got %s, want -", got)
	}
	b.Update(b.Config())
	h.setWeight(b, 0) // no upd callback: table unchanged, but w=0 fails
	if h.s.(*DH).tab.Load() != tab {
		t.Error("UpdDest rebuilt the table; dh has no update callback")
	}
	if got := h.picks(1, p); got != "-" {
		t.Errorf("w=0: got %s, want -", got)
	}
}

// TestMHVectors is spec §2.14's service: R1..R3 = 192.168.0.2..4:80,
// weight 1, added R1, R2, R3.
func TestMHVectors(t *testing.T) {
	for _, mode := range []string{"incremental", "fresh"} {
		t.Run(mode, func(t *testing.T) {
			h := newHarness(t, "mh")
			r1, r2, r3 := h.mk("R1", 1), h.mk("R2", 1), h.mk("R3", 1)
			if mode == "incremental" {
				h.init()
				h.add(r1)
				h.add(r2)
				h.add(r3)
			} else {
				h.preset(r1, r2, r3)
				h.init()
			}
			slots := h.s.(*MH).Slots()
			if len(slots) != 4093 {
				t.Fatalf("table size %d, want 4093", len(slots))
			}
			count := map[*ipvs.Dest]int{}
			for _, d := range slots {
				count[d]++
			}
			if count[r1] != 1364 || count[r2] != 1364 || count[r3] != 1365 {
				t.Errorf("split %d/%d/%d, want 1364/1364/1365", count[r1], count[r2], count[r3])
			}
			var first []string
			for _, d := range slots[:10] {
				first = append(first, h.name(d))
			}
			if got, want := strings.Join(first, " "), "R1 R3 R1 R3 R2 R2 R1 R2 R3 R2"; got != want {
				t.Errorf("slots 0..9 %q, want %q", got, want)
			}
			for _, c := range []struct{ src, want string }{{"10.1.1.1", "R3"}, {"192.168.1.100", "R2"}, {"10.0.0.7", "R1"}} {
				if got := h.picks(1, pkt(c.src)); got != c.want {
					t.Errorf("%s -> %s, want %s", c.src, got, c.want)
				}
			}
			var dec Decision
			h.s.(Explainer).Explain(h.svc, pkt("10.1.1.1"), &dec)
			if dec.Bucket != 3744 || dec.Dest != r3 {
				t.Errorf("explain 10.1.1.1: slot %d dest %s, want 3744 R3", dec.Bucket, h.name(dec.Dest))
			}
		})
	}
}

// TestMHChanges: removal, quiescing (slots kept, lookups fail or fall
// back), weight-0 adds (no slots), weights and the too-many-dests rule.
func TestMHChanges(t *testing.T) {
	h := newHarness(t, "mh")
	r1, r2, r3 := h.mk("R1", 1), h.mk("R2", 1), h.mk("R3", 1)
	h.preset(r1, r2, r3)
	h.init()
	m := h.s.(*MH)
	before := m.Slots()

	h.del(r2)
	after := m.Slots()
	moved, kept := 0, 0
	count := map[*ipvs.Dest]int{}
	for i := range after {
		count[after[i]]++
		if before[i] == r2 {
			continue
		}
		if after[i] != before[i] {
			moved++
		} else {
			kept++
		}
	}
	if count[r2] != 0 || count[r1]+count[r3] != 4093 || abs(count[r1]-count[r3]) > 1 {
		t.Errorf("after removing R2: R1 %d R3 %d R2 %d", count[r1], count[r3], count[r2])
	}
	t.Logf("removing R2 of 3: %d of %d slots of R1/R3 changed owner (%.2f%%)", moved, moved+kept, 100*float64(moved)/float64(moved+kept))
	if got := h.picks(1, pkt("10.1.1.1")); got != "R3" {
		t.Errorf("10.1.1.1 after removing R2 -> %s, want R3 (its slot kept its owner)", got)
	}
	if got := h.picks(1, pkt("192.168.1.100")); got == "R2" || got == "-" {
		t.Errorf("192.168.1.100 after removing R2 -> %s, want R1 or R3", got)
	}

	// Quiesce R3: it keeps its slots (last_weight), lookups landing there fail.
	h.setWeight(r3, 0)
	n3 := 0
	for _, d := range m.Slots() {
		if d == r3 {
			n3++
		}
	}
	if n3 != count[r3] {
		t.Errorf("quiesced R3 holds %d slots, want %d (kept)", n3, count[r3])
	}
	if got := h.picks(1, pkt("10.1.1.1")); got != "-" {
		t.Errorf("quiesced without fallback: got %s, want -", got)
	}
	h.svc.Flags = ipvs.SvcSched1
	if got := h.picks(1, pkt("10.1.1.1")); got != "R1" {
		t.Errorf("quiesced with mh-fallback: got %s, want R1", got)
	}
	r1.SetOverloaded(true)
	if got := h.picks(1, pkt("10.1.1.1")); got != "-" {
		t.Errorf("all unavailable with fallback: got %s, want -", got)
	}
	r1.SetOverloaded(false)

	// A dest added with weight 0 gets no slots.
	z := h.mk("Z", 0)
	h.add(z)
	for _, d := range m.Slots() {
		if d == z {
			t.Fatal("dest added with weight 0 holds a slot")
		}
	}

	// Weights: 1 and 3 -> turns 1 and 3: shares 1/4 and 3/4.
	h2 := newHarness(t, "mh")
	a, b := h2.mk("A", 10), h2.mk("B", 30)
	h2.preset(a, b)
	h2.init()
	mm := h2.s.(*MH)
	if mm.gcd != 10 || mm.rshift != 0 {
		t.Errorf("gcd %d rshift %d, want 10 0", mm.gcd, mm.rshift)
	}
	cnt := map[*ipvs.Dest]int{}
	for _, d := range mm.Slots() {
		cnt[d]++
	}
	if cnt[a] != 1023 || cnt[b] != 3070 {
		t.Errorf("weights 10/30: %d/%d slots, want 1023/3070", cnt[a], cnt[b])
	}
	// rshift: max/gcd = 1000 has 10 bits, TAB_BITS 6 -> shift 4.
	h2.setWeight(a, 1)
	h2.setWeight(b, 1000)
	if mm.rshift != 4 {
		t.Errorf("rshift %d, want 4", mm.rshift)
	}

	// More dests than slots: Init fails, AddDest keeps the old table.
	small, err := NewMH(8)
	if err != nil {
		t.Fatal(err)
	}
	h3 := withSched(t, small)
	var many []*ipvs.Dest
	for i := 0; i < 252; i++ {
		many = append(many, destN(i, 1))
	}
	h3.preset(many...)
	if err := small.Init(h3.svc); err == nil {
		t.Error("Init with 252 dests and M=251 succeeded, want an error")
	}
	h3.snapshot(many[:251])
	if err := small.Init(h3.svc); err != nil {
		t.Fatalf("Init with 251 dests: %v", err)
	}
	old := small.tab.Load()
	h3.add(destN(999, 1))
	if small.tab.Load() != old {
		t.Error("AddDest past the table size replaced the table")
	}
	if _, err := NewMH(7); err == nil || !strings.Contains(err.Error(), "8..17") {
		t.Errorf("NewMH(7) error %v, want one naming 8..17", err)
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// fakeClock is an injectable clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newFake() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func TestLBLC(t *testing.T) {
	clk := newFake()
	s := NewLBLC(CacheOptions{Now: clk.now, Expiration: 10 * time.Minute})
	h := withSched(t, s)
	a, b := h.mk("A", 1), h.mk("B", 1)
	h.snapshot([]*ipvs.Dest{a, b})
	h.init()
	x := pktTo("10.1.1.1")
	if got := h.picks(1, x); got != "A" { // wlc, first wins the tie
		t.Fatalf("first pick %s, want A", got)
	}
	counters(a, 1, 50) // wlc would now pick B; the cache keeps A (act 1 = w)
	if got := h.picks(1, x); got != "A" {
		t.Errorf("cached: got %s, want A", got)
	}
	a.SetOverloaded(true) // OVERLOAD is not consulted for the cached dest
	if got := h.picks(1, x); got != "A" {
		t.Errorf("cached with OVERLOAD: got %s, want A", got)
	}
	a.SetOverloaded(false)
	counters(a, 2, 0) // act > w, and B has act·2 < w: overloaded, move to B
	if got := h.picks(1, x); got != "B" {
		t.Errorf("overloaded: got %s, want B", got)
	}
	counters(a, 0, 0)
	if got := h.picks(1, x); got != "B" {
		t.Errorf("entry moved to B: got %s, want B", got)
	}
	// act > w but no dest below half its weight: not overloaded
	counters(b, 3, 0)
	counters(a, 1, 0)
	if got := h.picks(1, x); got != "B" {
		t.Errorf("no half-loaded dest: got %s, want B", got)
	}
	var dec Decision
	s.Explain(h.svc, x, &dec)
	if !dec.CacheHit || len(dec.Cached) != 1 || dec.Cached[0] != b || dec.Dest != b {
		t.Errorf("explain: hit %v cached %v dest %s", dec.CacheHit, dec.Cached, h.name(dec.Dest))
	}
	s.Explain(h.svc, pktTo("10.2.2.2"), &dec)
	if dec.CacheHit || s.Len() != 1 {
		t.Errorf("explain of a miss: hit %v, entries %d; want false, 1 (explain creates nothing)", dec.CacheHit, s.Len())
	}
	// deleted dest: not AVAILABLE, reschedule
	counters(a, 0, 0)
	counters(b, 0, 0)
	h.del(b)
	if got := h.picks(1, x); got != "A" {
		t.Errorf("after deleting B: got %s, want A", got)
	}

	// Expiry: the full check runs at the 30th timer run (30 min) and
	// drops entries idle >= the expiration (10 min).
	y := pktTo("10.3.3.3")
	clk.advance(29 * time.Minute)
	h.picks(1, y)
	if s.Len() != 2 {
		t.Fatalf("at 29 min: %d entries, want 2", s.Len())
	}
	clk.advance(time.Minute)
	h.picks(1, pktTo("10.4.4.4")) // 30 min: x idle 30 min goes, y (1 min) stays
	if s.Len() != 2 {
		t.Errorf("after the full check: %d entries, want 2 (y and the new one)", s.Len())
	}
	s.Explain(h.svc, x, &dec)
	if dec.CacheHit {
		t.Error("x survived the full check")
	}
}

func TestLBLCLimits(t *testing.T) {
	t.Run("cap", func(t *testing.T) {
		s := NewLBLC(CacheOptions{Now: newFake().now, MaxEntries: 4})
		h := withSched(t, s)
		h.snapshot([]*ipvs.Dest{h.mk("A", 1)})
		h.init()
		for i := 0; i < 6; i++ {
			if got := h.picks(1, &Packet{Dst: ipN(i)}); got != "A" {
				t.Errorf("pick %d: %s, want A (used even without an entry)", i, got)
			}
		}
		if s.Len() != 4 {
			t.Errorf("%d entries, want 4", s.Len())
		}
	})
	t.Run("default cap", func(t *testing.T) {
		// current: 24576 (max_size·3/2); classic: none
		for _, c := range []struct {
			sem  ipvs.Semantics
			want int
		}{{ipvs.Current, 24576}, {ipvs.Classic, 24586}} {
			s := NewLBLC(CacheOptions{Now: newFake().now, Semantics: c.sem})
			h := withSched(t, s)
			h.snapshot([]*ipvs.Dest{h.mk("A", 1)})
			h.init()
			for i := 0; i < 24586; i++ {
				s.Schedule(h.svc, &Packet{Dst: ipN(i)})
			}
			if s.Len() != c.want {
				t.Errorf("%s: %d entries, want %d", c.sem, s.Len(), c.want)
			}
		}
	})
	t.Run("partial gc", func(t *testing.T) {
		clk := newFake()
		s := NewLBLC(CacheOptions{Now: clk.now, MaxEntries: -1})
		h := withSched(t, s)
		h.snapshot([]*ipvs.Dest{h.mk("A", 1)})
		h.init()
		n := LBLCMaxEntries + 300
		for i := 0; i < n; i++ {
			s.Schedule(h.svc, &Packet{Dst: ipN(i)})
		}
		clk.advance(5 * time.Minute)
		s.Schedule(h.svc, &Packet{Dst: ipN(0)}) // timer runs, nothing idle 6 min
		if s.Len() != n {
			t.Fatalf("at 5 min: %d entries, want %d", s.Len(), n)
		}
		clk.advance(time.Minute)
		s.Schedule(h.svc, &Packet{Dst: ipN(0)}) // goal = 300·4/3 = 400, whole buckets
		removed := n - s.Len()
		if removed < 400 || removed > 400+64 {
			t.Errorf("partial GC removed %d entries, want 400 and the rest of the last bucket", removed)
		}
		s.Explain(h.svc, &Packet{Dst: ipN(0)}, new(Decision))
	})
}

func TestLBLCR(t *testing.T) {
	clk := newFake()
	s := NewLBLCR(CacheOptions{Now: clk.now, Expiration: time.Hour})
	h := withSched(t, s)
	a, b, c := h.mk("A", 1), h.mk("B", 1), h.mk("C", 4)
	h.snapshot([]*ipvs.Dest{a, b, c})
	h.init()
	x := pktTo("10.1.1.1")
	set := func() string {
		var dec Decision
		s.Explain(h.svc, x, &dec)
		var n []string
		for _, d := range dec.Cached {
			n = append(n, h.name(d))
		}
		return strings.Join(n, ",")
	}
	if got := h.picks(1, x); got != "A" {
		t.Fatalf("first: %s, want A", got)
	}
	counters(a, 2, 0) // act > w; C has 0·2 < 4: add by wlc (C: 0·1 vs B 0... B first tie? B oh 0 w1, C oh 0 w4: 0 > 0 false -> B)
	if got := h.picks(1, x); got != "B" {
		t.Errorf("overloaded A: got %s, want B", got)
	}
	if got := set(); got != "B,A" {
		t.Errorf("set %q, want B,A (new members at the head)", got)
	}
	counters(b, 1, 0)
	// set_min over {B, A}: B oh 256·1 vs A 512 -> B; B not overloaded
	if got := h.picks(1, x); got != "B" {
		t.Errorf("got %s, want B", got)
	}
	// after the expiration since lastmod, the most loaded member (A) goes;
	// the entry is used every 10 minutes, so the GC keeps it
	for i := 0; i < 6; i++ {
		clk.advance(10 * time.Minute)
		if got := h.picks(1, x); got != "B" {
			t.Errorf("got %s, want B", got)
		}
		if got := set(); got != "B,A" {
			t.Errorf("set %q at %d min, want B,A", got, 10*(i+1))
		}
	}
	clk.advance(time.Second)
	if got := h.picks(1, x); got != "B" {
		t.Errorf("got %s, want B", got)
	}
	if got := set(); got != "B" {
		t.Errorf("set %q after expiry, want B", got)
	}
	// set_min skips OVL; all OVL -> nil -> wlc over the service
	b.SetOverloaded(true)
	counters(c, 0, 0)
	if got := h.picks(1, x); got != "C" {
		t.Errorf("member OVL: got %s, want C", got)
	}
	if got := set(); got != "C,B" {
		t.Errorf("set %q, want C,B", got)
	}
	// duplicates are not added
	b.SetOverloaded(false)
	counters(c, 9, 0)
	counters(b, 0, 0)
	counters(a, 0, 0)
	if got := h.picks(1, x); got != "B" {
		t.Errorf("got %s, want B", got)
	}
	if got := set(); got != "C,B" {
		t.Errorf("set %q, want C,B", got)
	}
	// unavailable members are never the minimum
	counters(c, 0, 0)
	h.del(b)
	if got := h.picks(1, x); got != "C" {
		t.Errorf("after deleting B: got %s, want C", got)
	}
}

// TestNone: the name exists and every pick fails.
func TestNone(t *testing.T) {
	h := newHarness(t, "none")
	h.init()
	h.add(h.mk("A", 1))
	if got := h.picks(2, nil); got != "- -" {
		t.Errorf("got %q, want %q", got, "- -")
	}
}

// TestWRRRealign: on a change with gcd > 1, cw becomes (cw/di)·di + 1.
func TestWRRRealign(t *testing.T) {
	h := newHarness(t, "wrr")
	a, b := h.mk("A", 1), h.mk("B", 3)
	h.preset(a, b) // [B, A], di=1, mw=3, cw=3
	h.init()
	if got := h.picks(2, nil); got != "B B" { // cw=3: B; cw=2: B
		t.Fatalf("got %q, want %q", got, "B B")
	}
	w := h.s.(*WRR)
	h.setWeight(a, 2) // di=1: cw stays 2
	if w.cw != 2 {
		t.Fatalf("cw=%d, want 2", w.cw)
	}
	h.setWeight(b, 4) // weights 4,2: di=2, mw=3, cw=(2/2)·2+1=3
	if w.cw != 3 || w.di != 2 || w.mw != 3 {
		t.Fatalf("cw=%d di=%d mw=%d, want 3 2 3", w.cw, w.di, w.mw)
	}
	if got := h.picks(3, nil); got != "B B A" { // cw=3: B; cw=1: B A
		t.Errorf("got %q, want %q", got, "B B A")
	}
}

// TestLBLCRSetTies: set_min and set_max both keep the earlier member on
// ties, so with equal loads the newest member serves and is also the one
// dropped.
func TestLBLCRSetTies(t *testing.T) {
	clk := newFake()
	s := NewLBLCR(CacheOptions{Now: clk.now, Expiration: time.Hour})
	h := withSched(t, s)
	a, b := h.mk("A", 1), h.mk("B", 1)
	h.snapshot([]*ipvs.Dest{a, b})
	h.init()
	x := pktTo("10.1.1.1")
	h.picks(1, x) // {A}
	counters(a, 2, 0)
	if got := h.picks(1, x); got != "B" { // A overloaded: {B, A}
		t.Fatalf("got %s, want B", got)
	}
	counters(a, 1, 0)
	counters(b, 1, 0)
	for i := 0; i < 6; i++ {
		clk.advance(10 * time.Minute)
		if got := h.picks(1, x); got != "B" {
			t.Fatalf("got %s, want B (set_min tie: first member)", got)
		}
	}
	clk.advance(time.Second)
	if got := h.picks(1, x); got != "B" {
		t.Errorf("got %s, want B (chosen before the drop)", got)
	}
	var dec Decision
	s.Explain(h.svc, x, &dec)
	if len(dec.Cached) != 1 || dec.Cached[0] != a {
		t.Errorf("set after the drop %v, want [A] (set_max tie: first member goes)", dec.Cached)
	}
}
