package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/lab"
)

// TestTakeoverKeepsHealth: a takeover of a daemon whose services come from
// keepalived.conf keeps the health checks' verdicts: a real server its
// checker found down is not put back in the pool by the new process (as
// a fresh start would until its checker failed again), and one that is
// up is not taken out (a fresh start does that with alpha until its
// checker passes).
func TestTakeoverKeepsHealth(t *testing.T) {
	testutil.RequireNetns(t)
	dir := t.TempDir()
	bin := buildGolvs(t)
	topo := testutil.NATLab(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// Only rs1 serves port 80: rs2's checker fails.
	if _, err := lab.Serve(ctx, topo.RS[0], "rs1", []int{80}, nil); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "keepalived.conf")
	text := fmt.Sprintf("virtual_server %s 80 {\n    delay_loop 1\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n    alpha\n", lab.VIP)
	for i := range 2 {
		text += fmt.Sprintf(`    real_server %s 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 3
            retry 1
            delay_before_retry 1
        }
    }
`, lab.RIP(i+1))
	}
	text += "}\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	ds := newDaemons(t, topo, dir)
	old := ds.start(bin, "--keepalived-conf", conf)
	pid := ds.ready(0)
	rs1, rs2 := lab.RIP(1).String()+":80", lab.RIP(2).String()+":80"
	deadline := time.Now().Add(30 * time.Second)
	for {
		l := admOut(t, "-L", "-n")
		if strings.Contains(l, rs1) && !strings.Contains(l, rs2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the checkers did not settle (rs1 up, rs2 down) within 30 s:\n%s", l)
		}
		time.Sleep(100 * time.Millisecond)
	}
	saved := admOut(t, "-S", "-n")

	next := ds.start(bin, "--takeover", "--keepalived-conf", conf)
	old.wait(t, "the old daemon after the takeover")
	if p := ds.ready(pid); p != next.cmd.Process.Pid {
		t.Fatalf("pid %d answers, want the new daemon %d", p, next.cmd.Process.Pid)
	}
	// From the first listing on, and for longer than a fresh checker
	// takes to change its mind (alpha: one pass; rs2: one failure).
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if got := admOut(t, "-S", "-n"); got != saved {
			t.Fatalf("after the takeover the pool changed:\n%s\nwant (as the old daemon's checkers left it)\n%s", got, saved)
		}
	}
	if b := ds.logText(); strings.Contains(b, "rejected") {
		t.Fatalf("the new daemon refused keepalived.conf:\n%s", b)
	}
}
