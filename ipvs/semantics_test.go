package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/golvs/golvs/lab"
)

// The worked examples of ../shared/ipvs-spec-2026.md D2, D3, D4 and D7 (and
// spec §1.2), replayed under both semantics with the numbers the spec
// gives. They are the independent oracle: the spec's authors produced
// them from a model of the kernel code (D2.3 says so), not from golvs.

var bothSems = []Semantics{Current, Classic}

func testDest(sem Semantics, u, l uint32) *Dest {
	return sem.NewDest(ServiceKey{}, DestConfig{Addr: netip.MustParseAddr("198.19.0.11"), Weight: 1, UThreshold: u, LThreshold: l})
}

func binds(d *Dest, n int) {
	for i := 0; i < n; i++ {
		d.Bind(false)
	}
}

func unbinds(d *Dest, n int) {
	for i := 0; i < n; i++ {
		d.Unbind(false, false)
	}
}

func edit(d *Dest, u, l uint32) {
	c := d.Config()
	c.UThreshold, c.LThreshold = u, l
	d.Update(c)
}

// step is one row of D2.3: run op, then expect total and the flag in each
// semantics.
type step struct {
	what             string
	op               func(d *Dest)
	total            int32
	classic, current bool
}

func runSteps(t *testing.T, name string, steps []step) {
	t.Helper()
	for _, sem := range bothSems {
		d := testDest(sem, 0, 0)
		for _, s := range steps {
			s.op(d)
			want := s.current
			if sem == Classic {
				want = s.classic
			}
			if d.TotalConns() != s.total || d.Overloaded() != want {
				t.Errorf("%s %s, %s: total %d OVL %v, want total %d OVL %v", name, sem, s.what, d.TotalConns(), d.Overloaded(), s.total, want)
			}
		}
	}
}

// TestOverloadD23 is the table of D2.3 (T1-T6), with spec §1.2's test
// cases (a)-(d) among them.
func TestOverloadD23(t *testing.T) {
	runSteps(t, "T1", []step{
		{"-x 10; 10 binds; 1 unbind", func(d *Dest) { edit(d, 10, 0); binds(d, 10); unbinds(d, 1) }, 9, true, true},
		{"edit -x 12 (total in the new band [9,12))", func(d *Dest) { edit(d, 12, 0) }, 9, false, true},
		{"1 unbind", func(d *Dest) { unbinds(d, 1) }, 8, false, false},
	})
	runSteps(t, "T2", []step{
		{"10 binds, no thresholds; edit -x 5", func(d *Dest) { binds(d, 10); edit(d, 5, 0) }, 10, false, true},
		{"1 bind", func(d *Dest) { binds(d, 1) }, 11, true, true},
	})
	runSteps(t, "T3", []step{
		{"-x 10; 15 binds; edit -x 12", func(d *Dest) { edit(d, 10, 0); binds(d, 15); edit(d, 12, 0) }, 15, false, true},
		{"1 bind", func(d *Dest) { binds(d, 1) }, 16, true, true},
	})
	runSteps(t, "T4", []step{
		{"-x 10; 10 binds; 2 unbinds", func(d *Dest) { edit(d, 10, 0); binds(d, 10); unbinds(d, 2) }, 8, true, true},
		{"edit -x 10 -y 9 (l raised above total)", func(d *Dest) { edit(d, 10, 9) }, 8, true, false},
		{"1 unbind", func(d *Dest) { unbinds(d, 1) }, 7, false, false},
	})
	runSteps(t, "T5", []step{
		{"as T3 up to the edit", func(d *Dest) { edit(d, 10, 0); binds(d, 15); edit(d, 12, 0) }, 15, false, true},
		{"a template is bound", func(d *Dest) { d.Bind(true) }, 15, true, true},
	})
	runSteps(t, "T6", []step{
		{"-x 20; 10 binds; edit -x 5 (u lowered below total)", func(d *Dest) { edit(d, 20, 0); binds(d, 10); edit(d, 5, 0) }, 10, false, true},
		{"5 unbinds", func(d *Dest) { unbinds(d, 5) }, 5, false, true},
		{"1 unbind", func(d *Dest) { unbinds(d, 1) }, 4, false, true},
		{"1 unbind (l_val = 4: 4 -> 3)", func(d *Dest) { unbinds(d, 1) }, 3, false, false},
	})
	// spec §1.2 (d): after (b) (= T2's edit) in classic, binding a
	// template also sets the flag; current set it at the edit already.
	runSteps(t, "§1.2(d)", []step{
		{"10 conns, no thresholds, then -e -x 5", func(d *Dest) { binds(d, 10); edit(d, 5, 0) }, 10, false, true},
		{"a template is bound", func(d *Dest) { d.Bind(true) }, 10, true, true},
		{"the template is unbound (total 10 >= 3/4 u)", func(d *Dest) { d.Unbind(true, false) }, 10, true, true},
	})
	// Edits that do not change -x/-y behave the same (D2.3): a
	// weight-only edit inside the hysteresis band keeps the flag.
	runSteps(t, "weight-only edit", []step{
		{"-x 10; 10 binds; 1 unbind", func(d *Dest) { edit(d, 10, 0); binds(d, 10); unbinds(d, 1) }, 9, true, true},
		{"-e -w 5 -x 10", func(d *Dest) { c := d.Config(); c.Weight = 5; d.Update(c) }, 9, true, true},
		{"-e without -x (ipvsadm sends 0)", func(d *Dest) { edit(d, 0, 0) }, 9, false, false},
	})
}

// TestOverloadDefaultLower is D2.1's table of the default lower mark, and
// its model check: for every u in 1..2999 both semantics clear the flag at
// the same total, u - u/4 - 1 = ceil(3u/4) - 1, walking down from u.
func TestOverloadDefaultLower(t *testing.T) {
	table := map[uint32]int32{1: 0, 2: 1, 3: 2, 4: 2, 5: 3, 8: 5, 10: 7, 100: 74}
	clearedAt := func(sem Semantics, u uint32) int32 {
		d := testDest(sem, u, 0)
		binds(d, int(u))
		if !d.Overloaded() {
			t.Fatalf("%s u=%d: not overloaded at total u", sem, u)
		}
		for d.Overloaded() {
			if d.TotalConns() == 0 {
				t.Fatalf("%s u=%d: still overloaded at total 0", sem, u)
			}
			unbinds(d, 1)
		}
		return d.TotalConns()
	}
	for u, want := range table {
		for _, sem := range bothSems {
			if got := clearedAt(sem, u); got != want {
				t.Errorf("%s u=%d: cleared at total %d, want %d", sem, u, got, want)
			}
		}
	}
	// The model check: set by a bind that reaches u, then (to keep it
	// linear) the counters moved straight to just above the expected
	// mark, and the last unbinds walked one by one.
	walk := func(sem Semantics, u uint32, want int32) int32 {
		d := testDest(sem, u, 0)
		d.SetCounters(0, int32(u)-1, 0)
		d.Bind(false)
		if !d.Overloaded() {
			t.Fatalf("%s u=%d: not overloaded at total u", sem, u)
		}
		if from := want + 3; from < int32(u) {
			d.SetCounters(0, from, 0)
		}
		for d.Overloaded() && d.TotalConns() > 0 {
			unbinds(d, 1)
		}
		return d.TotalConns()
	}
	for u := uint32(1); u < 3000; u++ {
		want := int32(u-u>>2) - 1
		c, n := walk(Classic, u, want), walk(Current, u, want)
		if c != want || n != want {
			t.Fatalf("u=%d: classic clears at %d, current at %d, want both %d", u, c, n, want)
		}
	}
}

// TestOverloadArithmetic: the thresholds' arithmetic is the kernel's 32-bit
// one. Classic clears when uint32(total*4) < uint32(u*3), both wrapping
// (D2.2, "The only arithmetic difference is overflow"); current compares
// total with l_val = u - u>>2 exactly. With u = 2^31-1 (accepted by the
// model; ipvsadm's maximum), u*3 wraps to 2147483645: classic keeps the
// flag at total 536870912 (2^31 is not below it) and, because total*4
// wraps too, clears at 1200000000 (4.8e9 mod 2^32 = 505032704), where
// current keeps it; current clears when total goes from l_val =
// 1610612736 to 1610612735. (The spec's prose, "classic clears only below
// total 536870912", leaves out the wrap of total*4; the C expressions
// decide here.)
func TestOverloadArithmetic(t *testing.T) {
	const u = 1<<31 - 1
	cases := []struct {
		from             int32 // total before the unbind
		classic, current bool  // OVL after it
	}{
		{536870913, true, true},
		{536870912, false, true},
		{1200000001, false, true},
		{1610612737, true, true},
		{1610612736, false, false},
	}
	for _, c := range cases {
		for _, sem := range bothSems {
			d := testDest(sem, u, 0)
			d.SetCounters(0, c.from, 0)
			d.SetOverloaded(true)
			d.Unbind(false, false)
			want := c.current
			if sem == Classic {
				want = c.classic
			}
			if d.Overloaded() != want {
				t.Errorf("%s u=2^31-1, unbind from %d: OVL %v, want %v", sem, c.from, d.Overloaded(), want)
			}
		}
	}
	// The C expressions themselves, for the record.
	uu, tot := uint32(u), int32(1200000000)
	if uu*3 != 2147483645 || uint32(tot*4) != 505032704 {
		t.Fatal("32-bit arithmetic")
	}
}

// TestThresholdCheckD3: netlink NEWDEST with U_THRESH 2147483648 and
// L_THRESH 0: classic accepts it, current answers EINVAL; l > u stays
// ERANGE even when u is also too large (the ERANGE check comes first).
func TestThresholdCheckD3(t *testing.T) {
	if err := Classic.CheckDestThresholds(2147483648, 0); err != nil {
		t.Errorf("classic: %v, want accepted", err)
	}
	err := Current.CheckDestThresholds(2147483648, 0)
	if err == nil || !strings.HasPrefix(err.Error(), EINVALText) || !errors.Is(err, ErrInvalid) {
		t.Errorf("current: %v, want %q...", err, EINVALText)
	}
	for _, sem := range bothSems {
		err := sem.CheckDestThresholds(2147483648, 2147483649)
		if err == nil || !strings.HasPrefix(err.Error(), "Numerical result out of range") {
			t.Errorf("%s, l > u > INT_MAX: %v, want ERANGE", sem, err)
		}
		if err := sem.CheckDestThresholds(2147483647, 10); err != nil {
			t.Errorf("%s, u = INT_MAX: %v", sem, err)
		}
	}
}

// TestAvailabilityD4: AVAILABLE and OVERLOAD are independent states in
// both semantics (D4: no test may expect a difference); a removed dest
// keeps its OVERLOAD, a revived one is AVAILABLE again.
func TestAvailabilityD4(t *testing.T) {
	for _, sem := range bothSems {
		d := testDest(sem, 2, 0)
		binds(d, 2)
		d.Unlink()
		if d.Available() || !d.Overloaded() {
			t.Errorf("%s: after unlink available %v overloaded %v, want false true", sem, d.Available(), d.Overloaded())
		}
		d.Revive(d.Config())
		if !d.Available() || !d.Overloaded() {
			t.Errorf("%s: after revive (same thresholds) available %v overloaded %v, want true true", sem, d.Available(), d.Overloaded())
		}
	}
}

// TestInactiveD7: InActConn is max(total - active, 0): the same numbers
// in both semantics for a sequential history, never negative.
func TestInactiveD7(t *testing.T) {
	for _, sem := range bothSems {
		d := testDest(sem, 0, 0)
		binds(d, 5)           // 5 inactive
		d.SetActive(true)     // SYN_RECV: 1 active, 4 inactive
		d.SetActive(true)     // 2 active, 3 inactive
		d.SetActive(false)    // FIN: 1 active, 4 inactive
		d.Unbind(false, true) // the active one ends
		d.Unbind(false, false)
		if d.ActiveConns() != 0 || d.InactConns() != 3 || d.TotalConns() != 3 {
			t.Errorf("%s: active %d inactive %d total %d, want 0 3 3", sem, d.ActiveConns(), d.InactConns(), d.TotalConns())
		}
		d.SetCounters(2, 0, 0)
		d.SetActive(true) // a transient read: 3 active of 2 total
		if d.InactConns() != 0 {
			t.Errorf("%s: inactive %d with active above total, want 0 (clamped)", sem, d.InactConns())
		}
	}
}

// TestOverheadD1: the overhead formula (spec §1.3) on the dest model.
func TestOverheadD1(t *testing.T) {
	for _, c := range []struct {
		act, inact       int32
		classic, current uint32
	}{{1, 0, 256, 257}, {0, 256, 256, 256}, {2, 0, 512, 514}, {1, 50, 306, 307}, {4, 0, 1024, 1028}} {
		for _, sem := range bothSems {
			d := testDest(sem, 0, 0)
			d.SetCounters(c.act, c.inact, 3)
			want := c.current
			if sem == Classic {
				want = c.classic
			}
			if got := d.Overhead(); got != want {
				t.Errorf("%s act %d inact %d: overhead %d, want %d", sem, c.act, c.inact, got, want)
			}
		}
	}
}

// TestLastWeight: spec §1.4 - last_weight is set on add (even to 0) and
// on every edit with weight != 0.
func TestLastWeight(t *testing.T) {
	for _, sem := range bothSems {
		d := sem.NewDest(ServiceKey{}, DestConfig{Addr: netip.MustParseAddr("198.19.0.11"), Weight: 0})
		if d.LastWeight() != 0 {
			t.Errorf("%s: added with weight 0: last_weight %d", sem, d.LastWeight())
		}
		d.Update(DestConfig{Weight: 4})
		d.Update(DestConfig{Weight: 0})
		if d.LastWeight() != 4 {
			t.Errorf("%s: edited to 0: last_weight %d, want 4", sem, d.LastWeight())
		}
		d.Revive(DestConfig{Weight: 0})
		if d.LastWeight() != 0 {
			t.Errorf("%s: revived with weight 0: last_weight %d, want 0", sem, d.LastWeight())
		}
	}
}

// TestOverloadConcurrent: binds and unbinds from many goroutines, with
// state changes in between, end with the counters the sequence implies
// and, in current semantics, the flag the edge rule gives once quiet.
func TestOverloadConcurrent(t *testing.T) {
	for _, sem := range bothSems {
		d := testDest(sem, 100, 50)
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 2000; i++ {
					d.Bind(false)
					d.SetActive(true)
					if i%3 == 0 {
						d.Bind(true)
						d.Unbind(true, false)
					}
					d.Unbind(false, true)
				}
			}()
		}
		binds(d, 120) // a burst that stays: total 120 >= u
		wg.Wait()
		if d.ActiveConns() != 0 || d.TotalConns() != 120 || d.PersistConns() != 0 {
			t.Fatalf("%s: active %d total %d persist %d, want 0 120 0", sem, d.ActiveConns(), d.TotalConns(), d.PersistConns())
		}
		// Drain below l = 50 one by one: the flag must be clear at the
		// end whatever it was during the race (classic: level rule on
		// each unbind; current: crossing l_val clears).
		d.SetOverloaded(true)
		unbinds(d, 71)
		if d.Overloaded() {
			t.Errorf("%s: overloaded at total %d, below l = 50", sem, d.TotalConns())
		}
	}
}

// TestCheckDestAddr: the kernel's address rule for a new dest.
func TestCheckDestAddr(t *testing.T) {
	own := netip.MustParseAddr("fe80::1234")
	owns := func(a netip.Addr) bool { return a == own }
	for _, c := range []struct {
		addr string
		ok   bool
	}{
		{"198.19.0.11", true}, {"127.0.0.1", true}, {"0.0.0.7", false}, {"224.0.0.1", false}, {"255.255.255.255", false},
		{"2001:db8::2", true}, {"::1", true}, {"::198.19.0.11", true}, {"fec0::1", true}, {"fc00::1", true},
		{"::", false}, {"ff02::1", false}, {"fe80::1", false}, {"febf::1", false}, {"fe80::1234", true}, {"fe80::1234%eth0", true},
		{"::ffff:198.19.0.11", false}, {"fec0::1", true},
	} {
		err := CheckDestAddr(netip.MustParseAddr(c.addr), owns)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v, want ok %v", c.addr, err, c.ok)
		}
		if err != nil && (!strings.HasPrefix(err.Error(), EINVALText) || !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: %q, want EINVAL's words", c.addr, err)
		}
	}
	if CheckDestAddr(netip.MustParseAddr("fe80::1234"), nil) == nil {
		t.Error("fe80::1234 accepted with no host address")
	}
}

// TestHostOwnsLinkLocal: in a namespace whose loopback holds fe80::1234,
// HostOwns finds it (the kernel's exception for a link-local dest the
// host owns) and not another link-local address, nor a v4-mapped form of
// an IPv4 address the host has.
func TestHostOwnsLinkLocal(t *testing.T) {
	if err := lab.RequireRoot(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	ns, err := lab.NewNS("golvs-sem-" + lab.RandomSuffix())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Delete()
	err = ns.Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		for _, a := range []string{"fe80::1234/64", "198.18.0.77/32"} {
			ad, _ := netlink.ParseAddr(a)
			if err := netlink.AddrAdd(lo, ad); err != nil {
				return fmt.Errorf("adding %s: %w", a, err)
			}
		}
		for _, c := range []struct {
			addr string
			own  bool
		}{{"fe80::1234", true}, {"fe80::99", false}, {"198.18.0.77", true}, {"::ffff:198.18.0.77", false}} {
			if got := HostOwns(netip.MustParseAddr(c.addr)); got != c.own {
				t.Errorf("HostOwns(%s) = %v, want %v", c.addr, got, c.own)
			}
		}
		if err := CheckDestAddr(netip.MustParseAddr("fe80::1234"), HostOwns); err != nil {
			t.Errorf("owned link-local: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Skipf("skipping: cannot set up the namespace's addresses (IPv6 disabled?): %v", err)
	}
}

// FuzzSemantics: any name parses to a semantics whose name it is, or
// fails naming the allowed values; any address passes or fails the
// kernel's dest check without panicking, and a failure is EINVAL.
func FuzzSemantics(f *testing.F) {
	for _, s := range []string{"current", "classic", "", "Classic", "current\x00"} {
		f.Add(s, []byte{0xfe, 0x80, 15: 1})
	}
	f.Fuzz(func(t *testing.T, name string, addr []byte) {
		sem, err := ParseSemantics(name)
		if err == nil && sem.String() != name {
			t.Fatalf("ParseSemantics(%q) = %s", name, sem)
		}
		if err != nil && (!errors.Is(err, ErrSemantics) || !strings.Contains(err.Error(), "current, classic")) {
			t.Fatalf("ParseSemantics(%q): %v", name, err)
		}
		if a, ok := netip.AddrFromSlice(addr); ok {
			if err := CheckDestAddr(a, HostOwns); err != nil && !strings.HasPrefix(err.Error(), EINVALText) {
				t.Fatalf("CheckDestAddr(%s): %v", a, err)
			}
		}
	})
}
