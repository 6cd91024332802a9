package director

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The interface locks: a second director on an interface is refused with
// the holder's pid; a successor waits and has the lock once the holder
// lets go; every file is gone once the last holder closes.
func TestInterfaceLocks(t *testing.T) {
	dir := t.TempDir()
	names := []string{"ext0", "int0"}
	index := map[string]int{"ext0": 2, "int0": 3}
	first, err := lockInterfaces(dir, names, index, false)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.lock"))
	if len(files) != 2 {
		t.Fatalf("lock files %v, want one per interface", files)
	}
	for _, f := range files {
		if b, _ := os.ReadFile(f); strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
			t.Fatalf("%s holds %q, want this pid", f, b)
		}
	}
	_, err = lockInterfaces(dir, []string{"int0"}, index, false)
	if !errors.Is(err, ErrInterfaceBusy) || !strings.Contains(err.Error(), "int0 (pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(err.Error(), "--takeover") {
		t.Fatalf("a second director on int0: %v", err)
	}
	// Another interface is free.
	other, err := lockInterfaces(dir, []string{"ext1"}, map[string]int{"ext1": 4}, false)
	if err != nil {
		t.Fatalf("another interface: %v", err)
	}
	other.Close()
	succ, err := lockInterfaces(dir, names, index, true)
	if err != nil {
		t.Fatalf("a successor: %v", err)
	}
	time.Sleep(3 * lockPoll)
	if _, err := lockInterfaces(dir, names, index, false); !errors.Is(err, ErrInterfaceBusy) {
		t.Fatalf("with the first still there: %v", err)
	}
	first.Close()
	// The successor has both locks within a few polls.
	deadline := time.Now().Add(10 * time.Second)
	for {
		time.Sleep(5 * lockPoll)
		_, err := lockInterfaces(dir, names[:1], index, false)
		_, err2 := lockInterfaces(dir, names[1:], index, false)
		if errors.Is(err, ErrInterfaceBusy) && errors.Is(err2, ErrInterfaceBusy) {
			break
		}
		if err == nil || err2 == nil {
			t.Fatalf("a third director took an interface %v after the first let go: %v, %v", 5*lockPoll, err, err2)
		}
		if time.Now().After(deadline) {
			t.Fatal("the successor never took the locks")
		}
	}
	succ.Close()
	time.Sleep(3 * lockPoll) // the waiting goroutines let go
	if files, _ := filepath.Glob(filepath.Join(dir, "*.lock")); len(files) != 0 {
		t.Fatalf("lock files left: %v", files)
	}
	again, err := lockInterfaces(dir, names, index, false)
	if err != nil {
		t.Fatalf("after everyone left: %v", err)
	}
	again.Close()
}

// Many would-be directors lock and let go of one interface at once: never
// two holders at a time, though each holder removes the file as it lets
// go and the next makes a new one.
func TestInterfaceLocksExclusive(t *testing.T) {
	dir := t.TempDir()
	index := map[string]int{"ext0": 2}
	var holders, max, taken atomic.Int32
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				l, err := lockInterfaces(dir, []string{"ext0"}, index, false)
				if errors.Is(err, ErrInterfaceBusy) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				n := holders.Add(1)
				for {
					m := max.Load()
					if n <= m || max.CompareAndSwap(m, n) {
						break
					}
				}
				taken.Add(1)
				holders.Add(-1)
				l.Close()
			}
		}()
	}
	wg.Wait()
	if max.Load() != 1 || taken.Load() == 0 {
		t.Fatalf("at most %d holders at once (want 1), %d locks taken", max.Load(), taken.Load())
	}
}
