package health

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
)

type countCtl struct{ n atomic.Int64 }

func (c *countCtl) Exec([]string) error  { c.n.Add(1); return nil }
func (c *countCtl) Restore(string) error { c.n.Add(1); return nil }

// BenchmarkCheckLoop1000 runs 1,000 real servers' checkers at delay_loop
// 1 s against local listeners in a namespace and reports, per second of
// checking, the CPU the process used (checkers and listeners together),
// the checks run, allocations per check and the heap. Each iteration is
// one second.
func BenchmarkCheckLoop1000(b *testing.B) {
	if err := lab.RequireRoot(); err != nil {
		b.Skipf("skipping: %v", err)
	}
	for _, kind := range []Kind{TCP, HTTP} {
		b.Run(kind.String(), func(b *testing.B) { benchCheckLoop(b, kind, 1000) })
	}
}

func benchCheckLoop(b *testing.B, kind Kind, n int) {
	ns, err := lab.NewNS("hcb" + lab.RandomSuffix())
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Delete()
	ip := netip.MustParseAddr("198.18.8.1")
	if err := lab.HostAddr(ns, "lo", ip, true); err != nil {
		b.Fatal(err)
	}
	env, err := ns.Env()
	if err != nil {
		b.Fatal(err)
	}
	defer env.Close()
	var lns []net.Listener
	err = ns.Do(func() error {
		for i := 0; i < n; i++ {
			l, err := net.Listen("tcp4", fmt.Sprintf("%s:%d", ip, 20000+i))
			if err != nil {
				return err
			}
			lns = append(lns, l)
		}
		return nil
	})
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range lns {
		go func(l net.Listener) {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				if kind == HTTP {
					go func() {
						buf := make([]byte, 512)
						c.SetDeadline(time.Now().Add(2 * time.Second))
						c.Read(buf)
						io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
						c.Close()
					}()
					continue
				}
				c.Close()
			}
		}(l)
	}
	svc := Service{Name: "bench", Quorum: 1, Pos: "bench",
		Configs: []ipvs.ServiceConfig{{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("198.18.0.100"), Port: 80}, Sched: "rr", Netmask: 0xffffffff}}}
	for i := 0; i < n; i++ {
		target := netip.AddrPortFrom(ip, uint16(20000+i))
		c := Check{Kind: kind, Target: target, Pos: "bench",
			Timing: Timing{DelayLoop: time.Second, DelayBeforeRetry: time.Second, ConnectTimeout: time.Second, Warmup: time.Second, Retry: 1, Rise: 1}}
		if kind == HTTP {
			c.URLs = []URL{{Path: "/"}}
			c.Protocol = "1.0"
		}
		svc.Reals = append(svc.Reals, Real{Dest: ipvs.DestConfig{Addr: ip, Port: uint16(20000 + i), Method: ipvs.MethodMasq, Weight: 1}, Checks: []Check{c}, Pos: "bench"})
	}
	ctl := &countCtl{}
	e := New(ctl, Options{Env: env, Logf: func(string, ...any) {}})
	defer e.Close()
	if err := e.Load([]Service{svc}); err != nil {
		b.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond) // past the warmup spread
	checks := func() (c, f uint64) {
		for _, s := range e.States() {
			c += s.Checks
			f += s.Failures
		}
		return
	}
	var ru0, ru1 syscall.Rusage
	var ms0, ms1 runtime.MemStats
	c0, f0 := checks()
	runtime.ReadMemStats(&ms0)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		time.Sleep(time.Second)
	}
	b.StopTimer()
	el := time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	runtime.ReadMemStats(&ms1)
	c1, f1 := checks()
	cpu := time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()+ru1.Stime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	nchecks := float64(c1 - c0)
	b.ReportMetric(100*cpu.Seconds()/el.Seconds(), "cpu-%")
	b.ReportMetric(nchecks/el.Seconds(), "checks/s")
	b.ReportMetric(float64(f1-f0), "failed")
	if nchecks > 0 {
		b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/nchecks, "allocs/check")
		b.ReportMetric(float64(cpu.Microseconds())/nchecks, "cpu-µs/check")
	}
	b.ReportMetric(float64(ms1.HeapInuse)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
}
