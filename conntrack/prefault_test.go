//go:build linux && !race

package conntrack

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// A table's indices and wheel are backed when it is made: its first
// connections, each landing on a random slot of two indices, take no page
// faults there. In one shard of a million entries the indices span some
// 3,300 pages, and 10,000 inserts into unbacked ones took 2,067-2,341
// faults, on the packet path; what is left is the entries' own memory,
// 40 chunks allocated as the table fills (277 faults). Not under the
// race detector, whose shadow memory faults on every first write.
func TestIndexPrefaulted(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tb := New(Config{MaxEntries: 1 << 20, Shards: 1})
	d := testDest()
	const n = 10000
	var ru0, ru1 unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru0); err != nil {
		t.Skipf("getrusage: %v", err)
	}
	for i := 0; i < n; i++ {
		k := key(i)
		if _, err := tb.Create(&NewConn{In: k, Dest: d}, syn, nil); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
	}
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru1); err != nil {
		t.Fatal(err)
	}
	if f := ru1.Minflt - ru0.Minflt; f > 1000 {
		t.Errorf("%d page faults for %d new connections in a fresh table", f, n)
	} else {
		t.Logf("%d page faults for %d new connections", f, n)
	}
}
