package control

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/lab"
)

// soakDuration is how long TestSoak hammers the control plane: 30 s (10 s
// under the race detector, 5 s with -short); GOLVS_SOAK overrides it.
func soakDuration(t *testing.T) time.Duration {
	if v := os.Getenv("GOLVS_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("GOLVS_SOAK=%q: %v", v, err)
		}
		return d
	}
	switch {
	case testing.Short():
		return 5 * time.Second
	case raceEnabled:
		return 10 * time.Second
	}
	return 30 * time.Second
}

func heapBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// The control plane under abuse while clients use the VIP: restores of
// the running table (ipvsadm-restore's -C first), edits, removals and
// re-adds, every kind of listing, bad and over-long requests, control
// characters, and more connections than the daemon accepts, some left
// idle. Not one client request fails, long-lived connections carry on,
// the daemon keeps answering, and its memory stays bounded.
func TestSoak(t *testing.T) {
	dm := echoDaemon(t, 3, func(s *Server) {
		s.MaxConns, s.MaxLine, s.IdleTimeout = 16, 1<<20, time.Second
	})

	vip80 := netip.AddrPortFrom(lab.VIP, 80)
	echo := netip.AddrPortFrom(lab.VIP, 7)
	saved := adm(t, "", "-S", "-n")
	var conns []*testutil.EchoConn
	for i := 0; i < 6; i++ {
		conns = append(conns, testutil.DialEcho(t, dm.topo.Client, echo))
	}
	loop := testutil.StartRequests(dm.topo.Client, vip80, 2)
	loop.WaitOK(10)
	runtime.GC()
	base := heapBytes()
	goroutines := runtime.NumGoroutine()

	deadline := time.Now().Add(soakDuration(t))
	var wg sync.WaitGroup
	var peak atomic.Uint64
	var ops [8]atomic.Int64
	var mu sync.Mutex
	var failures []string
	failf := func(format string, args ...any) {
		mu.Lock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	run := func(i int, every time.Duration, fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				fn()
				ops[i].Add(1)
				time.Sleep(every)
			}
		}()
	}
	admOK := func(stdin string, args ...string) string {
		var out, errb bytes.Buffer
		if code := AdmMain(args, strings.NewReader(stdin), &out, &errb); code != 0 {
			failf("golvs adm %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
		}
		return out.String()
	}
	// Edits race with the restores, which reset the table: ipvsadm's
	// answers for a service or real server that a restore just removed
	// or brought back are expected then; anything else is a failure.
	var raced atomic.Int64
	edit := func(args ...string) {
		var out, errb bytes.Buffer
		code := AdmMain(args, strings.NewReader(""), &out, &errb)
		msg := strings.TrimSpace(errb.String())
		switch {
		case code == 0:
		case code == 255 && (msg == "No such service" || msg == "Service not defined" || msg == "Destination already exists" || msg == "No such destination" || msg == "Service already exists"):
			raced.Add(1)
		default:
			failf("golvs adm %s: exit %d: %s", strings.Join(args, " "), code, msg)
		}
	}
	rs := func(i int) string { return lab.RIP(i).String() }
	run(0, 50*time.Millisecond, func() { admOK("-C\n"+saved, "-R") })
	run(1, 20*time.Millisecond, func() {
		edit("-e", "-t", vip80.String(), "-r", rs(1)+":80", "-m", "-w", "3")
		edit("-e", "-t", vip80.String(), "-r", rs(1)+":80", "-m", "-w", "1")
		// A real server of the echo service leaves and comes back: its
		// connections wait for it in the trash.
		edit("-d", "-t", echo.String(), "-r", rs(3)+":7")
		edit("-a", "-t", echo.String(), "-r", rs(3)+":7", "-m")
		edit("-A", "-t", "198.18.0.100:8080", "-s", "wlc")
		edit("-a", "-t", "198.18.0.100:8080", "-r", rs(2)+":80", "-m")
		edit("-D", "-t", "198.18.0.100:8080")
	})
	run(2, 10*time.Millisecond, func() {
		admOK("", "-L", "-n")
		admOK("", "-L", "-n", "-c")
		admOK("", "-L", "-n", "--stats", "--rate")
		admOK("", "-S", "-n")
		if rep := dm.srv.Handle(&Request{V: Version, Op: "status"}); !rep.OK {
			failf("status: %s", rep.Error)
		}
	})
	bad := [][]byte{
		[]byte("not json\n"),
		[]byte(`{"v":9,"op":"list"}` + "\n"),
		[]byte(`{"v":1,"op":"exec","args":["-A","-t","198.18.0.100:80\u0000x"]}` + "\n"),
		[]byte(`{"v":1,"op":"exec","args":["-a","-t","198.18.0.100:80","-r","198.19.0.11:80","-w","70000"]}` + "\n"),
		[]byte(`{"v":1,"op":"restore","text":"-C\n-A -t 198.18.0.100:80 -s nosuch\n"}` + "\n"),
		append(append([]byte(`{"v":1,"op":"restore","text":"`), bytes.Repeat([]byte("x"), 2<<20)...), '\n'),
		[]byte(`{"v":1,"op":"nosuch"}` + "\n"),
	}
	run(3, 20*time.Millisecond, func() {
		for _, b := range bad {
			rep, err := rawRequest(t, b, 5*time.Second)
			if err == nil && rep.OK {
				failf("bad request %.60q was accepted", b)
			}
			if err != nil && !isRefusal(err) {
				failf("bad request %.60q: %v", b, err)
			}
		}
	})
	var idle []net.Conn // left open: the daemon closes them when idle
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	run(4, 200*time.Millisecond, func() { // more connections than allowed
		var cs []net.Conn
		for i := 0; i < 40; i++ {
			c, err := net.DialTimeout("unix", SocketPath(), time.Second)
			if err != nil {
				break
			}
			cs = append(cs, c)
		}
		time.Sleep(100 * time.Millisecond)
		for i, c := range cs {
			if i == 0 && len(idle) < 20 {
				idle = append(idle, c)
				continue
			}
			c.Close()
		}
	})
	run(5, 500*time.Millisecond, func() {
		for i, e := range conns {
			if name, err := e.Ping(10 * time.Second); err != nil || name != e.Name {
				failf("echo connection %d: %q, %v", i, name, err)
			}
		}
	})
	run(6, 100*time.Millisecond, func() {
		if h := heapBytes(); h > peak.Load() {
			peak.Store(h)
		}
	})
	wg.Wait()
	loop.End(t)
	for _, f := range failures {
		t.Error(f)
	}
	// The daemon still answers, with the table it started with (after one
	// more restore: an edit round cut short by a restore may have left
	// its extra service behind).
	admOK("-C\n"+saved, "-R")
	var got string
	for i := 0; i < 50; i++ { // the idle connections may hold every slot a moment
		var out, errb bytes.Buffer
		if AdmMain([]string{"-S", "-n"}, strings.NewReader(""), &out, &errb) == 0 {
			got = out.String()
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got != saved {
		t.Fatalf("table after the soak:\n%s\nwant\n%s", got, saved)
	}
	st := dm.srv.Handle(&Request{V: Version, Op: "status"})
	t.Logf("%d requests through the VIP; control ops: restores %d, edit rounds %d (%d edits raced a restore), listing rounds %d, bad rounds %d, flood rounds %d; counters %v",
		loop.OK.Load(), ops[0].Load(), ops[1].Load(), raced.Load(), ops[2].Load(), ops[3].Load(), ops[4].Load(), pick(st.Counters, "control-", "trash-"))
	if st.Counters["control-refused-busy"] == 0 || st.Counters["control-line-too-long"] == 0 || st.Counters["control-idle-closed"] == 0 {
		t.Errorf("the flood, the long lines or the idle connections were not cut off: %v", st.Counters)
	}
	// The heap holds garbage until a collection: the bound is loose, but
	// a daemon that kept what it read (the long lines alone are hundreds
	// of MB) or listed in memory would pass it many times over.
	grew := int64(peak.Load()) - int64(base)
	t.Logf("heap objects: %.1f MB at the start, peak %.1f MB", float64(base)/(1<<20), float64(peak.Load())/(1<<20))
	if grew > 128<<20 {
		t.Errorf("the heap grew by %.1f MB during the soak (bound 128 MB)", float64(grew)/(1<<20))
	}
	time.Sleep(2 * time.Second) // idle connections time out
	runtime.GC()
	if after := int64(heapBytes()) - int64(base); after > 16<<20 {
		t.Errorf("the live heap stayed %.1f MB above the start after the soak (bound 16 MB)", float64(after)/(1<<20))
	}
	if n := runtime.NumGoroutine(); n > goroutines+20 {
		t.Errorf("%d goroutines after the soak, %d before", n, goroutines)
	}
}

// isRefusal says whether a request error is the daemon closing an
// over-long request (it answers, then closes: a write may fail first).
func isRefusal(err error) bool {
	s := err.Error()
	return strings.Contains(s, "broken pipe") || strings.Contains(s, "connection reset") || err == io.EOF
}

func pick(m map[string]uint64, prefixes ...string) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) {
				out[k] = v
			}
		}
	}
	return out
}
