package bench

import (
	"math"
	"slices"
)

// Jain returns Jain's fairness index of x: (Σx)² / (n·Σx²). It is 1 when
// every value is equal and 1/n when one value holds everything. It is NaN
// for an empty slice or when every value is 0 (there is no load to judge).
func Jain(x []float64) float64 {
	var s, s2 float64
	for _, v := range x {
		s += v
		s2 += v * v
	}
	if len(x) == 0 || s2 == 0 {
		return math.NaN()
	}
	return s * s / (float64(len(x)) * s2)
}

// Mean returns the arithmetic mean of x (NaN when x is empty).
func Mean(x []float64) float64 {
	if len(x) == 0 {
		return math.NaN()
	}
	var s float64
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}

// CV returns the coefficient of variation of x: the population standard
// deviation over the mean. It is 0 when every value is equal and NaN when
// the mean is 0 or x is empty.
func CV(x []float64) float64 {
	m := Mean(x)
	if math.IsNaN(m) || m == 0 {
		return math.NaN()
	}
	var ss float64
	for _, v := range x {
		ss += (v - m) * (v - m)
	}
	return math.Sqrt(ss/float64(len(x))) / m
}

// Overprovision returns the overprovision factor of the Maglev paper: the
// largest load over the mean load, i.e. how much more capacity than the
// average every server needs so that the busiest is not overloaded. It is
// 1 for a perfect balance and NaN when the mean is 0 or x is empty.
func Overprovision(x []float64) float64 {
	m := Mean(x)
	if math.IsNaN(m) || m == 0 {
		return math.NaN()
	}
	return slices.Max(x) / m
}

// MovedFraction returns the fraction of the keys of before whose value is
// different in after (a key missing from after counts as moved). It is
// NaN when before is empty.
func MovedFraction[K, V comparable](before, after map[K]V) float64 {
	if len(before) == 0 {
		return math.NaN()
	}
	moved := 0
	for k, v := range before {
		if w, ok := after[k]; !ok || w != v {
			moved++
		}
	}
	return float64(moved) / float64(len(before))
}

// Percentile returns the p-th percentile (0 ≤ p ≤ 100) of x by the
// nearest-rank method: the smallest value such that at least p% of the
// values are at or below it (p = 0 gives the minimum). x is not modified.
// It is NaN when x is empty or p is out of range.
func Percentile(x []float64, p float64) float64 {
	if len(x) == 0 || !(p >= 0 && p <= 100) {
		return math.NaN()
	}
	s := slices.Clone(x)
	slices.Sort(s)
	return percentileSorted(s, p)
}

// Percentiles is Percentile for several p at once, sorting one copy of x.
func Percentiles(x []float64, ps ...float64) []float64 {
	out := make([]float64, len(ps))
	s := slices.Clone(x)
	slices.Sort(s)
	for i, p := range ps {
		if len(s) == 0 || !(p >= 0 && p <= 100) {
			out[i] = math.NaN()
			continue
		}
		out[i] = percentileSorted(s, p)
	}
	return out
}

func percentileSorted(s []float64, p float64) float64 {
	r := int(math.Ceil(p * float64(len(s)) / 100))
	if r < 1 {
		r = 1
	}
	if r > len(s) {
		r = len(s)
	}
	return s[r-1]
}
