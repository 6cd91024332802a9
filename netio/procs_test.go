package netio

import (
	"runtime"
	"sync"
	"testing"
)

// TestReserveProcs: reservations add up across directors, each release
// gives back its own (once, however often it is called), and the last
// restores GOMAXPROCS as it was.
func TestReserveProcs(t *testing.T) {
	base := runtime.GOMAXPROCS(0)
	b1, n1, r1 := ReserveProcs(2)
	if b1 != base || n1 != base+2 || runtime.GOMAXPROCS(0) != base+2 {
		t.Fatalf("first reservation: %d -> %d, GOMAXPROCS %d; want %d -> %d", b1, n1, runtime.GOMAXPROCS(0), base, base+2)
	}
	b2, n2, r2 := ReserveProcs(3)
	if b2 != base+2 || n2 != base+5 || runtime.GOMAXPROCS(0) != base+5 {
		t.Fatalf("second reservation: %d -> %d, GOMAXPROCS %d; want %d -> %d", b2, n2, runtime.GOMAXPROCS(0), base+2, base+5)
	}
	r1()
	r1()
	if got := runtime.GOMAXPROCS(0); got != base+3 {
		t.Fatalf("after the first release (twice) GOMAXPROCS %d, want %d", got, base+3)
	}
	r2()
	if got := runtime.GOMAXPROCS(0); got != base {
		t.Fatalf("after both releases GOMAXPROCS %d, want %d", got, base)
	}
}

// TestReserveProcsConcurrent: directors starting and stopping at once
// (under -race) leave GOMAXPROCS where it was, and never below the base
// plus what is held.
func TestReserveProcsConcurrent(t *testing.T) {
	base := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for g := 1; g <= 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				_, now, release := ReserveProcs(g)
				if now < base+g {
					t.Errorf("reserved %d: GOMAXPROCS %d, want at least %d", g, now, base+g)
				}
				release()
			}
		}()
	}
	wg.Wait()
	if got := runtime.GOMAXPROCS(0); got != base {
		t.Fatalf("GOMAXPROCS %d after every release, want %d", got, base)
	}
}
