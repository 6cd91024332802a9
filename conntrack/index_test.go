package conntrack

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// find is the probe of Table.findIn, over references that are their own
// keys: from the hash's home slot to the first empty one.
func (x *index) find(h uint64, ref uint32) bool {
	tag := tagOf(h)
	for i := x.home(h); ; {
		if tg := x.tags[i]; tg == tag && x.slots[i] == ref {
			return true
		} else if tg == 0 {
			return false
		}
		if i++; i == x.size {
			i = 0
		}
	}
}

// TestIndexMatchesModel drives an index with fixed-seed random inserts,
// removals and lookups against a map, under hash functions that spread
// keys, pile them onto a few homes (long clusters, so backward shifts
// move many references) and onto the last slots (probes wrap round). After
// every step: the index finds exactly the model's references, counts
// them, and (checked every 97 steps) every reference is reachable from
// its home without crossing an empty slot.
func TestIndexMatchesModel(t *testing.T) {
	const capacity = 300
	hashes := []struct {
		name string
		h    func(ref uint32) uint64
	}{
		{"spread", func(r uint32) uint64 { s := uint64(r); return splitmix(&s) }},
		{"clustered", func(r uint32) uint64 { return uint64(r%5) * (1 << 32 / 5) << 32 }},
		{"wrapping", func(r uint32) uint64 { return (1<<32 - 1 - uint64(r%3)) << 32 }},
	}
	for _, hf := range hashes {
		t.Run(hf.name, func(t *testing.T) {
			x := newIndex(capacity)
			homeOf := func(r uint32) uint32 { return x.home(hf.h(r)) }
			model := map[uint32]bool{}
			r := rand.New(rand.NewPCG(1, 2))
			for step := range 20000 {
				ref := uint32(1 + r.IntN(2*capacity))
				h := hf.h(ref)
				switch op := r.IntN(3); {
				case op == 0 && !model[ref]:
					ok := x.insert(h, ref)
					if ok != (len(model) < capacity) {
						t.Fatalf("step %d: insert into %d of %d: %v", step, len(model), capacity, ok)
					}
					if ok {
						model[ref] = true
					}
				case op == 1:
					if got := x.remove(h, ref, homeOf); got != model[ref] {
						t.Fatalf("step %d: remove %d: %v, model %v", step, ref, got, model[ref])
					}
					delete(model, ref)
				default:
					if got := x.find(h, ref); got != model[ref] {
						t.Fatalf("step %d: find %d: %v, model %v", step, ref, got, model[ref])
					}
				}
				if step%97 != 0 {
					continue
				}
				if err := checkIndex(&x, homeOf, len(model)); err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
			}
			if err := checkIndex(&x, homeOf, len(model)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// checkIndex: n references, none duplicated, each reachable from its home.
func checkIndex(x *index, homeOf func(uint32) uint32, n int) error {
	seen := map[uint32]bool{}
	for i := range x.size {
		if x.tags[i] == 0 {
			if x.slots[i] != 0 {
				return fmt.Errorf("slot %d: empty tag, reference %d", i, x.slots[i])
			}
			continue
		}
		r := x.slots[i]
		if seen[r] {
			return fmt.Errorf("reference %d twice", r)
		}
		seen[r] = true
		for j := homeOf(r); j != i; j = (j + 1) % x.size {
			if x.tags[j] == 0 {
				return fmt.Errorf("reference %d at slot %d, home %d: empty slot %d between", r, i, homeOf(r), j)
			}
		}
	}
	if len(seen) != n || x.n != n {
		return fmt.Errorf("holds %d (counts %d), model %d", len(seen), x.n, n)
	}
	return nil
}

// An index is sized once, with the load at most 3/4 when full, and maps
// hashes onto every slot.
func TestIndexSizing(t *testing.T) {
	for _, c := range []int{1, 7, 100, 4672, 40710} {
		x := newIndex(c)
		if x.max != c || float64(c)/float64(x.size) > 0.75 {
			t.Fatalf("capacity %d: %d slots", c, x.size)
		}
		if x.home(0) != 0 || x.home(^uint64(0)) != x.size-1 {
			t.Fatalf("capacity %d: homes span %d..%d of %d", c, x.home(0), x.home(^uint64(0)), x.size)
		}
	}
}
