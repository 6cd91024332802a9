package bench

import (
	"math"
	"slices"
	"testing"
)

func near(got, want float64) bool {
	if math.IsNaN(want) {
		return math.IsNaN(got)
	}
	return math.Abs(got-want) < 1e-12
}

func TestMetrics(t *testing.T) {
	tests := []struct {
		name string
		f    func([]float64) float64
		in   []float64
		want float64
	}{
		{"jain equal", Jain, []float64{1, 1, 1, 1}, 1},
		{"jain one holds all", Jain, []float64{1, 0, 0, 0}, 0.25},
		{"jain 1..4", Jain, []float64{1, 2, 3, 4}, 100.0 / 120}, // 10² / (4·30)
		{"jain scale free", Jain, []float64{10, 20, 30, 40}, 100.0 / 120},
		{"jain empty", Jain, nil, math.NaN()},
		{"jain zeros", Jain, []float64{0, 0}, math.NaN()},
		{"cv equal", CV, []float64{3, 3, 3}, 0},
		{"cv textbook", CV, []float64{2, 4, 4, 4, 5, 5, 7, 9}, 0.4}, // mean 5, σ 2
		{"cv one holds all", CV, []float64{1, 0, 0, 0}, math.Sqrt(3)},
		{"cv zero mean", CV, []float64{0, 0}, math.NaN()},
		{"overprovision equal", Overprovision, []float64{5, 5}, 1},
		{"overprovision 1..3", Overprovision, []float64{1, 2, 3}, 1.5},
		{"overprovision one holds all", Overprovision, []float64{1, 0, 0, 0}, 4},
		{"overprovision empty", Overprovision, nil, math.NaN()},
		{"mean", Mean, []float64{1, 2, 3, 6}, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.f(tc.in); !near(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMovedFraction(t *testing.T) {
	before := map[string]int{"a": 0, "b": 1, "c": 2, "d": 3}
	tests := []struct {
		name  string
		after map[string]int
		want  float64
	}{
		{"same", map[string]int{"a": 0, "b": 1, "c": 2, "d": 3}, 0},
		{"one moved", map[string]int{"a": 0, "b": 1, "c": 2, "d": 0}, 0.25},
		{"one moved one missing", map[string]int{"a": 0, "b": 2, "c": 2}, 0.5},
		{"extra keys ignored", map[string]int{"a": 0, "b": 1, "c": 2, "d": 3, "e": 9}, 0},
		{"all moved", map[string]int{"a": 1, "b": 2, "c": 3, "d": 0}, 1},
		{"empty after", nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := MovedFraction(before, tc.after); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	if got := MovedFraction(map[int]int{}, map[int]int{1: 1}); !math.IsNaN(got) {
		t.Errorf("empty before: got %v, want NaN", got)
	}
}

func TestPercentile(t *testing.T) {
	x := []float64{7, 3, 10, 1, 9, 2, 8, 4, 6, 5} // 1..10, shuffled
	orig := slices.Clone(x)
	tests := []struct {
		p, want float64
	}{
		{0, 1}, {10, 1}, {11, 2}, {50, 5}, {90, 9}, {99, 10}, {100, 10},
		{-1, math.NaN()}, {101, math.NaN()}, {math.NaN(), math.NaN()},
	}
	for _, tc := range tests {
		if got := Percentile(x, tc.p); !near(got, tc.want) {
			t.Errorf("Percentile(1..10, %v): got %v, want %v", tc.p, got, tc.want)
		}
	}
	if !slices.Equal(x, orig) {
		t.Errorf("Percentile modified its input: got %v, want %v", x, orig)
	}
	if got := Percentile(nil, 50); !math.IsNaN(got) {
		t.Errorf("Percentile(nil): got %v, want NaN", got)
	}
	if got, want := Percentiles(x, 50, 90, 99), []float64{5, 9, 10}; !slices.Equal(got, want) {
		t.Errorf("Percentiles: got %v, want %v", got, want)
	}
	// 100 values 1..100: p99 is the 99th.
	h := make([]float64, 100)
	for i := range h {
		h[i] = float64(100 - i)
	}
	if got := Percentile(h, 99); got != 99 {
		t.Errorf("Percentile(1..100, 99): got %v, want 99", got)
	}
}

func TestLRU(t *testing.T) {
	l := newLRU(2)
	steps := []struct {
		k   uint32
		hit bool
	}{{1, false}, {2, false}, {1, true}, {3, false}, {2, false}, {1, false}, {3, false}, {1, true}}
	// After 1,2,1: order 1,2; 3 evicts 2; 2 evicts 1; 1 evicts 3; 3 evicts 2; 1 hits.
	for i, s := range steps {
		if got := l.access(s.k); got != s.hit {
			t.Errorf("step %d access(%d): got hit %v, want %v", i, s.k, got, s.hit)
		}
	}
}
