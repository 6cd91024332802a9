package bench

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// The director's CPU cost per forwarded frame, measured in the split
// placement: the CPU time of this process's threads other than the
// generator's and the receivers' (golvs's workers, the netio ceiling;
// nothing else of the bench runs during a flood), plus the time the
// director's CPUs spent in interrupts and softirqs (the kernel's receive
// processing of ext0, moved there with RPS, and all of a kernel
// forwarder's work). Time other programs take from those CPUs is not in
// it, so unlike a rate it holds on a busy machine: it is what a frame
// costs, not how many frames fit in what was left.

// clkTck is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clkTck = 100

// procTicks sums, from the text of /proc/stat, the irq and softirq ticks
// of the CPUs in cpus.
func procTicks(stat string, cpus []int) uint64 {
	var n uint64
	for _, line := range strings.Split(stat, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		c, err := strconv.Atoi(f[0][3:])
		if err != nil || !containsInt(cpus, c) {
			continue
		}
		for _, i := range []int{6, 7} { // irq, softirq
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err == nil {
				n += v
			}
		}
	}
	return n
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// threadTicks returns utime+stime of a /proc/PID/task/TID/stat line.
func threadTicks(stat string) (uint64, bool) {
	// The command name is in parentheses and may hold spaces: count
	// fields after its closing one. utime and stime are fields 14, 15.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return u + s, true
}

// dirCPU returns the director's CPU time so far (see above); 0 when the
// placement is not split.
func (r *dpRun) dirCPU() time.Duration {
	if r.pl == nil || r.pl.name != placeSplit {
		return 0
	}
	var ticks uint64
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		ticks = procTicks(string(b), r.pl.dirCPUs)
	}
	ents, _ := os.ReadDir("/proc/self/task")
	skip := []string{strconv.Itoa(int(r.gen.tid.Load())), strconv.Itoa(int(r.rx.tid.Load()))}
	for _, e := range ents {
		if e.Name() == skip[0] || e.Name() == skip[1] {
			continue
		}
		b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/stat")
		if err != nil {
			continue // the thread exited
		}
		if t, ok := threadTicks(string(b)); ok {
			ticks += t
		}
	}
	return time.Duration(ticks) * time.Second / clkTck
}
