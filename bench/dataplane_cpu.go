package bench

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The director's CPU cost per forwarded frame, measured in the split
// placement: the time the director's CPUs were not idle. In that
// placement they hold nothing but the director: its forwarding threads
// (golvs's workers, the netio ceiling's loop, netsniff-ng) are pinned
// there, the kernel's receive processing of ext0 is moved there with RPS
// (all of a kernel forwarder's work), and the bench's other threads, the
// lan bridge and the receivers are on other CPUs. Anything else the host
// ran there would count too.
//
// Busy time is the wall time less what /proc/stat calls idle, iowait and
// steal. Its busy columns (user, system, irq, softirq) are not used: they
// are sampled by the tick, and a CPU that sleeps between bursts has no
// tick (NO_HZ), so the softirq work an interrupt brings it from idle, a
// kernel forwarder's whole job, is in no column at all, while the idle
// column is kept from timestamps at each sleep and wake-up.
//
// Until 2026-12-04 it was the bench's threads' utime+stime plus the irq
// and softirq ticks of those CPUs. Besides missing the softirq work done
// from idle, with tick-based accounting (no CONFIG_IRQ_TIME_ACCOUNTING,
// as on the VMs here) a tick that lands in a softirq is charged to the
// CPU's softirq column *and* to the stime of whatever thread it
// interrupted, so every softirq that ran on top of a golvs worker (the
// receive processing the RPS interrupts bring, the receivers' stacks its
// transmit runs) was counted twice: golvs rows reached 1.4-1.6
// CPU-seconds a second on one CPU. An external forwarder's threads
// (netsniff-ng) were not counted at all.

// clkTck is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clkTck = 100

// idleTicks sums, from the text of /proc/stat, the idle, iowait and steal
// ticks of the CPUs in cpus, and says how many of them it found (each
// once).
func idleTicks(stat string, cpus []int) (ticks uint64, found int) {
	var seen []int
	for _, line := range strings.Split(stat, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		c, err := strconv.Atoi(f[0][3:])
		if err != nil || !slices.Contains(cpus, c) || slices.Contains(seen, c) {
			continue
		}
		var n uint64
		ok := true
		for _, i := range []int{4, 5, 8} { // idle, iowait, steal
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				ok = false
				break
			}
			n += v
		}
		if ok {
			ticks += n
			found++
			seen = append(seen, c)
		}
	}
	return ticks, found
}

// cpuClock is the origin of dirCPU's wall time.
var cpuClock = time.Now()

// cpuMark is a reading of the director's CPU time (see above): the wall
// time since cpuClock on each of its CPUs less their idle time, so only
// differences mean anything; ok is false when there was no reading (the
// placement is not split, or /proc/stat could not be read or lacks a
// director CPU).
type cpuMark struct {
	d  time.Duration
	ok bool
}

// dirCPU reads the director's CPU time.
func (r *dpRun) dirCPU() cpuMark {
	if r.pl == nil || r.pl.name != placeSplit {
		return cpuMark{}
	}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuMark{}
	}
	idle, found := idleTicks(string(b), r.pl.dirCPUs)
	if found != len(r.pl.dirCPUs) {
		return cpuMark{}
	}
	return cpuMark{d: time.Since(cpuClock)*time.Duration(found) - time.Duration(idle)*time.Second/clkTck, ok: true}
}

// cpuSince returns the director's CPU time from m to now; 0 when either
// reading failed.
func (r *dpRun) cpuSince(m cpuMark) time.Duration {
	if n := r.dirCPU(); m.ok && n.ok {
		return n.d - m.d
	}
	return 0
}
