package bench

import (
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCPUTicks reads /proc/stat's idle, iowait and steal columns for the
// chosen CPUs only, from a sample in the format proc(5) gives (user nice
// system idle iowait irq softirq steal guest guest_nice).
func TestCPUTicks(t *testing.T) {
	stat := "cpu  517016 53949 156535 845725 1350 0 37391 607 0 0\n" +
		"cpu0 257535 26601 80061 423202 269 5 18589 302 0 0\n" +
		"cpu1 259480 27348 76474 422523 1080 7 18802 305 0 0\n" +
		"intr 1 2 3\n"
	if got, n := idleTicks(stat, []int{1}); got != 422523+1080+305 || n != 1 {
		t.Errorf("cpu1: %d from %d CPUs", got, n)
	}
	if got, n := idleTicks(stat, []int{0, 1}); got != 423202+269+302+422523+1080+305 || n != 2 {
		t.Errorf("cpu0,1: %d from %d CPUs", got, n)
	}
	if got, n := idleTicks(stat, []int{2}); got != 0 || n != 0 {
		t.Errorf("cpu2 (absent): %d from %d CPUs", got, n)
	}
	for _, bad := range []string{"", "cpu1 1 2 3", "cpux 1 2 3 4 5 6 7 8", "cpu1 a b c d e f g h", "cpu1 1 2 3 x 5 6 7 8"} {
		if got, n := idleTicks(bad, []int{1}); got != 0 || n != 0 {
			t.Errorf("%q: %d from %d CPUs", bad, got, n)
		}
	}
}

// TestCPUTicksLive checks the columns on this host's own /proc/stat: a
// thread pinned to a CPU and spinning keeps that CPU from idling, so the
// wall time less its idle time over an interval is close to the interval.
func TestCPUTicksLive(t *testing.T) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Skipf("no /proc/stat: %v", err)
	}
	cpu := runtime.NumCPU() - 1
	if _, n := idleTicks(string(b), []int{cpu}); n != 1 {
		t.Skipf("/proc/stat has no cpu%d line", cpu)
	}
	var stop atomic.Bool
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var set unix.CPUSet
		set.Set(cpu)
		ready <- unix.SchedSetaffinity(0, &set)
		for n := 0; !stop.Load(); n++ { // spin: keep the CPU busy
			spun = n
		}
	}()
	if err := <-ready; err != nil {
		stop.Store(true)
		t.Skipf("sched_setaffinity: %v", err)
	}
	r := &dpRun{pl: &placement{name: placeSplit, dirCPUs: []int{cpu}}}
	t0, a := time.Now(), r.dirCPU()
	if !a.ok {
		stop.Store(true)
		t.Fatalf("no reading of cpu%d", cpu)
	}
	time.Sleep(500 * time.Millisecond)
	got, el := r.cpuSince(a), time.Since(t0)
	stop.Store(true)
	if got > el+20*time.Millisecond || got < el/4 { // a tick of slack at each end
		t.Errorf("cpu%d busy %v in %v with a thread spinning on it", cpu, got, el)
	}
}

// spun keeps TestCPUTicksLive's spinning loop from being optimised away.
var spun int

func FuzzCPUTicks(f *testing.F) {
	f.Add("cpu1 259480 27348 76474 422523 1080 7 18802 305 0 0\n")
	f.Fuzz(func(t *testing.T, stat string) {
		if _, n := idleTicks(stat, []int{0, 1, 2}); n > 3 {
			t.Fatalf("found %d CPUs of 3", n)
		}
	})
}
