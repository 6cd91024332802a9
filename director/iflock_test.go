package director

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// The interface locks: a second director on an interface is refused with
// the holder's pid; a successor notes the locks it cannot take and takes
// them once the holder lets go; every file is gone once the last holder
// closes.
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
	if len(succ.files) != 0 || len(succ.pending) != 2 {
		t.Fatalf("a successor beside the first holds %d locks, %d pending; want 0 and 2", len(succ.files), len(succ.pending))
	}
	if err := succ.take(); !errors.Is(err, ErrInterfaceBusy) || len(succ.pending) != 2 {
		t.Fatalf("a successor taking with the first still there: %v, %d pending", err, len(succ.pending))
	}
	if _, err := lockInterfaces(dir, names, index, false); !errors.Is(err, ErrInterfaceBusy) {
		t.Fatalf("with the first still there: %v", err)
	}
	first.Close()
	// Once the first is gone the successor has both locks, and a third
	// director is refused.
	if err := succ.take(); err != nil || len(succ.files) != 2 || len(succ.pending) != 0 {
		t.Fatalf("the successor after the first let go: %v, %d held, %d pending", err, len(succ.files), len(succ.pending))
	}
	for _, n := range names {
		if _, err := lockInterfaces(dir, []string{n}, index, false); !errors.Is(err, ErrInterfaceBusy) {
			t.Fatalf("a third director took %s from the successor: %v", n, err)
		}
	}
	succ.Close()
	if files, _ := filepath.Glob(filepath.Join(dir, "*.lock")); len(files) != 0 {
		t.Fatalf("lock files left: %v", files)
	}
	again, err := lockInterfaces(dir, names, index, false)
	if err != nil {
		t.Fatalf("after everyone left: %v", err)
	}
	again.Close()
}

// Many would-be directors lock and let go of one interface at once, half
// of them sweeping the directory first as a start does: never two holders at a
// time, though each holder removes the file as it lets go, a sweeper
// removes a free one, and the next makes a new one.
func TestInterfaceLocksExclusive(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "net1-if2.lock")
	var holders, max, taken atomic.Int32
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				if g%2 == 0 {
					sweep(dir)
				}
				f, err := tryLock(path)
				if errors.Is(err, unix.EWOULDBLOCK) {
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
				release(f)
			}
		}()
	}
	wg.Wait()
	if max.Load() != 1 || taken.Load() == 0 {
		t.Fatalf("at most %d holders at once (want 1), %d locks taken", max.Load(), taken.Load())
	}
}

// The race the holder's removal of its file opens, played step by step: a
// director opens the file; the holder removes it and lets go; a third
// opens the path, making a new file; then the director locks what it
// opened, a file no longer at the path. It must let that one go and lock
// the file at the path, or the third would hold that one too.
func TestInterfaceLockRemovedUnderneath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "net1-if2.lock")
	holder, err := tryLock(path)
	if err != nil {
		t.Fatal(err)
	}
	opened, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	release(holder)
	third, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	got, err := lockOpened(path, opened)
	if err != nil {
		t.Fatal(err)
	}
	defer release(got)
	var a, b unix.Stat_t
	if err := unix.Fstat(int(got.Fd()), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(path, &b); err != nil || a.Ino != b.Ino {
		t.Fatalf("the lock is on inode %d, the file at the path is %d (%v)", a.Ino, b.Ino, err)
	}
	if f, err := lockOpened(path, third); !errors.Is(err, unix.EWOULDBLOCK) {
		if f != nil {
			release(f)
		}
		t.Fatalf("the third director beside the new holder: %v, want EWOULDBLOCK", err)
	}
}

// A start removes the lock files nobody holds (a golvs killed with
// SIGKILL leaves its files behind), and keeps the held ones.
func TestInterfaceLocksSweep(t *testing.T) {
	dir := t.TempDir()
	live, err := lockInterfaces(dir, []string{"ext0"}, map[string]int{"ext0": 2}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	// Killed holders: their files stay, their locks go with them.
	for _, n := range []string{"net1-if5.lock", "net2-if2.lock"} {
		f, err := tryLock(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	other := filepath.Join(dir, "other.txt") // not a lock file: left alone
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	next, err := lockInterfaces(dir, []string{"int0"}, map[string]int{"int0": 3}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	slices.Sort(names)
	want := []string{live.files[0].Name(), next.files[0].Name(), other}
	for i := range want {
		want[i] = filepath.Base(want[i])
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("files after a start: %v, want %v (the held locks and the foreign file)", names, want)
	}
}
