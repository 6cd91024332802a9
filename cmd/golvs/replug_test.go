package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/lab"
)

// A served interface removed and made again, as ifdown and ifup of a
// VLAN or a bond do: the kernel gives the new one another index, and the
// running golvs's sockets stay on the old one. golvs notices the new
// interface under the name once it is up, restarts itself as on SIGUSR2,
// and the new process serves it: the connections open before carry on,
// new ones are made, the new process holds the drop rule and the
// interface locks (of the new interface), and its status reports nothing
// unserved. Without the restart, nothing reaches the real servers again.
func TestInterfaceMadeAgain(t *testing.T) {
	testutil.RequireNetns(t)
	dir := t.TempDir()
	bin := buildGolvs(t)
	topo, rules := httpEchoLab(t, dir)
	ds := newDaemons(t, topo, dir)
	ds.start(bin, "--rules", rules)
	pid := ds.ready(0)
	var conns []*testutil.EchoConn
	for i := 0; i < 4; i++ {
		conns = append(conns, testutil.DialEcho(t, topo.Client, netip.AddrPortFrom(lab.VIP, 7)))
	}

	if err := topo.ReplugDirInt(); err != nil {
		t.Fatal(err)
	}
	newPID := ds.ready(pid)
	for deadline := time.Now().Add(30 * time.Second); syscall.Kill(pid, 0) == nil; {
		if time.Now().After(deadline) {
			t.Fatalf("the first daemon (pid %d) still runs 30 s after the new one (pid %d) answered", pid, newPID)
		}
		time.Sleep(50 * time.Millisecond)
	}
	testutil.CheckEcho(t, conns, 10*time.Second, "after "+lab.DirInt+" was made again")
	loop := testutil.StartRequests(topo.Client, netip.AddrPortFrom(lab.VIP, 80), 2)
	loop.WaitOK(20)
	loop.End(t)
	checkDropTables(t, topo, "after the restart", 80, 7)
	checkLocks(t, newPID, "after the restart")
	rep, err := status()
	if err != nil || !rep.OK {
		t.Fatalf("status of the new daemon: %v %+v", err, rep)
	}
	for _, l := range rep.Host {
		if strings.Contains(l, "NOT SERVED") {
			t.Fatalf("the new daemon reports an interface unserved: %s", l)
		}
	}
	log := ds.logText()
	for _, want := range []string{
		"interface " + lab.DirInt + " made again: started", // the host event itself is not logged with -q
		"took over from pid " + fmt.Sprint(pid),
	} {
		if !strings.Contains(log, want) {
			t.Fatalf("the log does not say %q:\n%s", want, log)
		}
	}
}

// A successor started for an interface made again that fails (exits at
// once) is started again after each wait of the retry list, then golvs
// gives up and says so; a new report starts over, and a SIGUSR2's
// successor that fails is not retried.
func TestRestarterRetries(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	r := restarter{exe: "/bin/false", args: []string{"run", "--takeover"}, settle: time.Millisecond,
		retries: []time.Duration{time.Millisecond, 2 * time.Millisecond},
		logf: func(f string, a ...any) {
			mu.Lock()
			lines = append(lines, fmt.Sprintf(f, a...))
			mu.Unlock()
		}}
	count := func(s string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, l := range lines {
			if strings.Contains(l, s) {
				n++
			}
		}
		return n
	}
	waitFor := func(s string, n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); count(s) < n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				got := count(s)
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("%d lines say %q, want %d:\n%s", got, s, n, strings.Join(lines, "\n"))
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sig := make(chan os.Signal, 1)
	replaced := make(chan string, 1)
	go r.run(ctx, sig, replaced)
	replaced <- "int0"
	waitFor("giving up", 1)
	if s, f := count("int0 made again: started"), count("failed: exit status 1"); s != 3 || f != 3 {
		t.Fatalf("%d started, %d failed; want 3 and 3 (the first and two retries)", s, f)
	}
	replaced <- "int0"
	waitFor("giving up", 2)
	if s := count("int0 made again: started"); s != 6 {
		t.Fatalf("a new report started %d in all, want 6", s)
	}
	// A binary that cannot be started is retried the same way.
	r.exe = "/nonexistent/golvs"
	replaced <- "int1"
	waitFor("giving up", 3)
	if s := count("int1 made again: starting /nonexistent/golvs"); s != 3 {
		t.Fatalf("%d starts of a missing binary, want 3", s)
	}
	r.exe = "/bin/false"
	sig <- syscall.SIGUSR2
	waitFor("SIGUSR2: the new process", 1) // it failed
	time.Sleep(50 * time.Millisecond)      // a retry would start within 2 ms
	if s := count("started"); s != 7 {
		t.Fatalf("%d started after a SIGUSR2 whose successor failed, want 7 (no retry)", s)
	}
}
