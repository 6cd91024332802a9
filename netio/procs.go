package netio

import (
	"runtime"
	"sync"
)

// A worker runs on a locked thread and holds a P (the Go runtime's right
// to run Go code) whenever it runs; while it sleeps in poll() the runtime
// may hand that P to another goroutine, and the worker woken by a frame
// then waits for a P to come free before it can take the frame, while
// the other goroutines wait for the Ps the workers hold. With as many
// workers as Ps (golvs run's default: one per CPU, and GOMAXPROCS is the
// CPUs) nothing is left over. It showed where the director shares its
// process with busy goroutines: `golvs bench dataplane` then ran its real
// servers (lab.Serve) in its own process, and with two workers on a
// 2-vCPU VM one connection at a time made 171-410 req/s (p50 2.6-6.7
// ms), against 5,846-6,967 with a P per worker. A lone `golvs run`
// measured level within noise either way (its other goroutines are
// mostly idle). So Director.Run adds a P per worker for as long as its
// workers run, and every other loop that waits on packet sockets in a
// process it may share does the same (rstun's decapsulator; the bench's
// generator, receivers and netio ceiling): the kernel, not the Go
// scheduler, then decides who gets a CPU.
var procs struct {
	mu       sync.Mutex
	base     int // GOMAXPROCS before the first reservation
	reserved int // Ps added for every running loop
}

// ReserveProcs raises GOMAXPROCS by n and returns what lowers it again
// (once). Reservations held at once (Directors' workers, decapsulators,
// the bench's own loops) add up; the last release restores what
// GOMAXPROCS was before the first.
func ReserveProcs(n int) (before, now int, release func()) {
	procs.mu.Lock()
	defer procs.mu.Unlock()
	if procs.reserved == 0 {
		procs.base = runtime.GOMAXPROCS(0)
	}
	before = procs.base + procs.reserved
	procs.reserved += n
	now = procs.base + procs.reserved
	runtime.GOMAXPROCS(now)
	return before, now, sync.OnceFunc(func() {
		procs.mu.Lock()
		defer procs.mu.Unlock()
		procs.reserved -= n
		runtime.GOMAXPROCS(procs.base + procs.reserved)
	})
}
