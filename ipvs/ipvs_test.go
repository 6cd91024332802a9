package ipvs

import (
	"errors"
	"net/netip"
	"testing"
)

// The spec's worked example (§8.2): a steady 100 conn/s from zero.
func TestEstimatorWorkedExample(t *testing.T) {
	var e Estimator
	var s StatsSnapshot
	want := []uint64{25, 44, 58, 68, 76, 82, 87, 90, 92, 94, 96, 97}
	for i, w := range want {
		s.Conns += 200
		e.Update(s)
		if cps, _, _, _, _ := e.Rates(); cps != w {
			t.Fatalf("run %d: cps %d, want %d", i+1, cps, w)
		}
	}
	for i, w := range []uint64{73, 54, 41, 31, 23} {
		e.Update(s)
		if cps, _, _, _, _ := e.Rates(); cps != w {
			t.Fatalf("idle run %d: cps %d, want %d", i+1, cps, w)
		}
	}
	var b Estimator
	var bs StatsSnapshot
	for i, w := range []uint64{250000, 437500, 578125, 683594, 762695} {
		bs.InBytes += 2000000
		b.Update(bs)
		if _, _, _, bps, _ := b.Rates(); bps != w {
			t.Fatalf("bytes run %d: %d, want %d", i+1, bps, w)
		}
	}
}

// Thresholds (spec §1.2): OVERLOAD set at u, cleared below l, or below
// 3/4 of u when l is 0.
func TestOverloadThresholds(t *testing.T) {
	d := NewDest(ServiceKey{}, DestConfig{Addr: netip.MustParseAddr("198.19.0.11"), Weight: 1, UThreshold: 4})
	for i := 0; i < 4; i++ {
		if d.Overloaded() {
			t.Fatalf("overloaded after %d conns, u=4", i)
		}
		d.Bind(false)
	}
	if !d.Overloaded() {
		t.Fatal("not overloaded at u=4")
	}
	d.Unbind(false, false) // 3: 3*4 < 4*3 is false
	if !d.Overloaded() {
		t.Fatal("cleared at 3 of u=4 (needs total*4 < u*3)")
	}
	d.Unbind(false, false) // 2
	if d.Overloaded() {
		t.Fatal("still overloaded at 2 of u=4")
	}
	if err := CheckThresholds(0, 10); !errors.Is(err, ErrInvalid) {
		t.Fatalf("l > u accepted: %v", err)
	}
	if err := CheckWeight(-1, MaxWeight); err == nil || err.Error() != "illegal weight specified: -1 (allowed: 0..2147483647)" {
		t.Fatalf("weight -1: %v", err)
	}
}
