package netio

import (
	"testing"
	"time"
)

// TestGroupAdapt holds the look window to its rule, step by step: closed
// at first, opened by wake-ups that a longer look would have saved,
// capped at Spin, halved by looks spent for nothing, and shut below
// spinGrowStart.
func TestGroupAdapt(t *testing.T) {
	us := time.Microsecond
	g := &Group{Spin: 50 * us}
	steps := []struct {
		idle time.Duration
		want time.Duration
	}{
		{30 * us, 5 * us},               // woken 30us after traffic: open
		{30 * us, 10 * us},              // again: double
		{8 * us, 20 * us},               // caught by a 20us look would have been: double
		{50 * us, 40 * us},              // at Spin still counts
		{40 * us, 50 * us},              // capped at Spin
		{20 * us, 50 * us},              // full: stays
		{2 * time.Millisecond, 25 * us}, // slept past Spin: halve
		{51 * us, 12500 * time.Nanosecond},
		{5 * time.Millisecond, 6250 * time.Nanosecond},
		{5 * time.Millisecond, 0}, // below spinGrowStart: shut
		{5 * time.Millisecond, 0}, // shut stays shut
		{10 * us, 5 * us},         // and opens again
	}
	for i, s := range steps {
		g.adapt(s.idle)
		if g.Window() != s.want {
			t.Fatalf("step %d (idle %s): window %s, want %s", i, s.idle, g.Window(), s.want)
		}
	}
	// Without Spin the window never opens.
	g = &Group{}
	for range 10 {
		g.adapt(time.Microsecond)
	}
	if g.Window() != 0 {
		t.Fatalf("Spin 0: window %s", g.Window())
	}
}
