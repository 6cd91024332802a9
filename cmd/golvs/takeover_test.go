package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/netio"
)

// daemonProc is a `golvs run` started in the lab's director namespace.
type daemonProc struct {
	cmd  *exec.Cmd
	done chan error
}

func startRun(t *testing.T, topo *lab.Topology, bin, logPath string, extra ...string) *daemonProc {
	t.Helper()
	args := append([]string{"run", "-i", lab.DirExt + ":arp", "-i", lab.DirInt, "--fix-host", "--workers", "2", "-q", "--control", os.Getenv("GOLVS_SOCKET")}, extra...)
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	p := &daemonProc{cmd: exec.Command(bin, args...), done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = log, log
	// Started from a thread inside the namespace, the daemon lives there.
	if err := topo.Director.Do(p.cmd.Start); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	return p
}

func (p *daemonProc) wait(t *testing.T, what string) {
	t.Helper()
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: still running after 60 s", what)
	}
}

// status asks the daemon on GOLVS_SOCKET for its status.
func status() (*control.Reply, error) {
	cl, err := control.Dial(control.SocketPath())
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	return cl.Do(&control.Request{Op: "status"})
}

// waitDaemon waits until a daemon other than notPID answers, with every
// real server resolved, and returns its pid.
func waitDaemon(t *testing.T, notPID int, logPath string) int {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		rep, err := status()
		if err == nil && rep.OK && rep.PID != notPID && rep.Resolved {
			return rep.PID
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("no daemon (other than pid %d) ready: %v %+v\n%s", notPID, err, rep, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func admOut(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := control.AdmMain(args, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("golvs adm %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
	}
	return out.String()
}

// A binary upgrade under load: long-lived connections open through the
// VIP and a request loop running while `golvs run --takeover` (a newer
// binary) replaces the running daemon, and again while SIGUSR2 makes that
// one start the binary now on disk. No connection breaks, no request
// fails, and the table, configuration and counters carry over.
func TestTakeoverUpgradeUnderLoad(t *testing.T) {
	testutil.RequireNetns(t)
	dir := t.TempDir()
	oldBin := buildGolvs(t)
	newBin := filepath.Join(dir, "golvs-new")
	if out, err := exec.Command("go", "build", "-ldflags", "-X main.Version=9.9.9-upgrade", "-o", newBin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	topo, rules := httpEchoLab(t, dir)
	ds := newDaemons(t, topo, dir)
	old := ds.start(oldBin, "--rules", rules)
	pid := ds.ready(0)
	var conns []*testutil.EchoConn
	for i := 0; i < 8; i++ {
		conns = append(conns, testutil.DialEcho(t, topo.Client, netip.AddrPortFrom(lab.VIP, 7)))
	}
	loop := testutil.StartRequests(topo.Client, netip.AddrPortFrom(lab.VIP, 80), 2)
	loop.WaitOK(20)
	saved := admOut(t, "-S", "-n")
	checkDropTables(t, topo, "the first daemon", 80, 7)

	// 0. A second daemon (no --takeover) on the same interfaces is
	// refused, and the first serves on with its drop rule.
	second := ds.start(oldBin, "--rules", rules, "--control", filepath.Join(dir, "second.sock"))
	select {
	case err := <-second.done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("a second daemon on the same interfaces: %v, want exit status 1", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a second daemon on the same interfaces still runs after 30 s")
	}
	if !strings.Contains(ds.logText(), "interface served by another golvs: "+lab.DirExt+" (pid "+fmt.Sprint(pid)) {
		t.Fatalf("the second daemon did not say why it stopped:\n%s", ds.logText())
	}
	checkDropTables(t, topo, "after the second daemon was refused", 80, 7)
	loop.WaitOK(loop.OK.Load() + 20)

	// 1. golvs run --takeover with the new binary.
	next := ds.start(newBin, "--takeover")
	old.wait(t, "the old daemon after the takeover")
	newPID := ds.ready(pid)
	if newPID != next.cmd.Process.Pid {
		t.Fatalf("pid %d answers, want the new daemon %d", newPID, next.cmd.Process.Pid)
	}
	testutil.CheckEcho(t, conns, 5*time.Second, "after --takeover")
	checkDropTables(t, topo, "after --takeover", 80, 7)
	checkLocks(t, newPID, "after --takeover")
	// The successor's rule follows its services.
	admOut(t, "-A", "-t", lab.VIP.String()+":8081", "-s", "rr")
	checkDropTables(t, topo, "a service added after --takeover", 80, 7, 8081)
	admOut(t, "-D", "-t", lab.VIP.String()+":8081")
	checkDropTables(t, topo, "the service deleted", 80, 7)
	if got := admOut(t, "-S", "-n"); got != saved {
		t.Fatalf("configuration after the takeover:\n%s\nwant\n%s", got, saved)
	}
	if c := admOut(t, "-L", "-n", "-c"); strings.Count(c, lab.VIP.String()+":7") < len(conns) {
		t.Fatalf("the echo conns are not in the new daemon's table:\n%s", c)
	}
	stats := admOut(t, "-L", "-n", "--stats", "-t", lab.VIP.String()+":7")
	if f := serviceLine(stats); len(f) < 3 || f[2] != fmt.Sprint(len(conns)) {
		t.Fatalf("the echo service's counters did not carry over (want %d conns):\n%s", len(conns), stats)
	}
	loop.WaitOK(loop.OK.Load() + 20)

	// 2. SIGUSR2: the daemon starts the binary now at its own path (an
	// upgrade in place: the file is replaced under it).
	tmp := newBin + ".tmp"
	if b, err := os.ReadFile(oldBin); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, newBin); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(newPID, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	next.wait(t, "the daemon after SIGUSR2")
	ds.ready(newPID)
	testutil.CheckEcho(t, conns, 5*time.Second, "after SIGUSR2")
	checkDropTables(t, topo, "after SIGUSR2", 80, 7)
	if got := admOut(t, "-S", "-n"); got != saved {
		t.Fatalf("configuration after SIGUSR2:\n%s\nwant\n%s", got, saved)
	}
	loop.WaitOK(loop.OK.Load() + 20)
	loop.End(t)
	b := ds.logText()
	for _, l := range strings.Split(b, "\n") {
		if strings.Contains(l, "took over") {
			t.Log(l)
		}
	}
	if n := strings.Count(b, "took over from pid"); n != 2 {
		t.Fatalf("%d takeovers logged, want 2:\n%s", n, b)
	}
}

// httpEchoLab builds a NAT lab with two real servers, each serving HTTP
// on port 80 and a line echo on port 7 (both stop at the test's end),
// and writes rules for the two VIP services (rr, NAT) into dir.
func httpEchoLab(t *testing.T, dir string) (*lab.Topology, string) {
	t.Helper()
	topo := testutil.NATLab(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for i, ns := range topo.RS {
		if _, err := lab.Serve(ctx, ns, fmt.Sprintf("rs%d", i+1), []int{80}, nil); err != nil {
			t.Fatal(err)
		}
		testutil.EchoServe(t, ctx, ns, lab.RIP(i+1).String(), 7)
	}
	rules := filepath.Join(dir, "rules")
	text := ""
	for _, port := range []string{"80", "7"} {
		text += "-A -t " + lab.VIP.String() + ":" + port + " -s rr\n"
		for i := range topo.RS {
			text += "-a -t " + lab.VIP.String() + ":" + port + " -r " + lab.RIP(i+1).String() + ":" + port + " -m\n"
		}
	}
	if err := os.WriteFile(rules, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return topo, rules
}

// daemons are a test's `golvs run` processes in a lab's director: one
// control socket (GOLVS_SOCKET, set for the test) and one log in dir.
// Every daemon started or adopted is stopped when the test ends: SIGTERM,
// up to 5 s each to restore the host before the namespace goes, then
// SIGKILL; on failure the log is printed.
type daemons struct {
	t    *testing.T
	topo *lab.Topology
	log  string
	pids []int
}

func newDaemons(t *testing.T, topo *lab.Topology, dir string) *daemons {
	t.Setenv("GOLVS_SOCKET", filepath.Join(dir, "golvs.sock"))
	ds := &daemons{t: t, topo: topo, log: filepath.Join(dir, "daemon.log")}
	t.Cleanup(func() {
		for _, pid := range ds.pids {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
		for _, pid := range ds.pids {
			for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
				time.Sleep(50 * time.Millisecond)
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", ds.logText())
		}
	})
	return ds
}

// start starts `golvs run` from bin with the lab's interfaces and extra.
func (ds *daemons) start(bin string, extra ...string) *daemonProc {
	ds.t.Helper()
	p := startRun(ds.t, ds.topo, bin, ds.log, extra...)
	ds.pids = append(ds.pids, p.cmd.Process.Pid)
	return p
}

// ready waits until a daemon other than notPID answers with every real
// server resolved, adopts it (a daemon a SIGUSR2 started is nobody's
// child here) and returns its pid.
func (ds *daemons) ready(notPID int) int {
	ds.t.Helper()
	pid := waitDaemon(ds.t, notPID, ds.log)
	if !slices.Contains(ds.pids, pid) {
		ds.pids = append(ds.pids, pid)
	}
	return pid
}

// logText returns what the daemons logged so far.
func (ds *daemons) logText() string {
	b, _ := os.ReadFile(ds.log)
	return string(b)
}

// serviceLine returns the fields of the first service line of a listing.
func serviceLine(listing string) []string {
	for _, l := range strings.Split(listing, "\n") {
		if f := strings.Fields(l); len(f) > 0 && (f[0] == "TCP" || f[0] == "UDP") {
			return f
		}
	}
	return nil
}

// checkDropTables waits up to 5 s for the director namespace to hold the
// drop-rule table of each of the lab's director interfaces, with rules in
// its ingress chain and the VIP's TCP ports (the services) in its dst3
// set: a successor takes its predecessor's tables once that one is gone,
// and keeps them in step with the services from then on.
func checkDropTables(t *testing.T, topo *lab.Topology, when string, ports ...int) {
	t.Helper()
	var want []string
	for _, p := range ports {
		want = append(want, fmt.Sprintf("%s:%d", lab.VIP, p))
	}
	slices.Sort(want)
	var last string
	for deadline := time.Now().Add(5 * time.Second); ; {
		last = ""
		err := topo.Director.Do(func() error {
			c, err := nftables.New()
			if err != nil {
				return err
			}
			for _, ifn := range []string{lab.DirExt, lab.DirInt} {
				tab := &nftables.Table{Name: netio.DropTableName(ifn), Family: nftables.TableFamilyNetdev}
				rules, err := c.GetRules(tab, &nftables.Chain{Name: "ingress", Table: tab})
				if err != nil || len(rules) == 0 {
					last += fmt.Sprintf(" %s: %d rules (%v)", tab.Name, len(rules), err)
					continue
				}
				set, err := c.GetSetByName(tab, "dst3")
				if err != nil {
					return err
				}
				els, err := c.GetSetElements(set)
				if err != nil {
					return err
				}
				var got []string
				for _, e := range els {
					// address, protocol, port: each padded to 4 bytes
					got = append(got, fmt.Sprintf("%s:%d", net.IP(e.Key[:4]), int(e.Key[8])<<8|int(e.Key[9])))
				}
				slices.Sort(got)
				if !slices.Equal(got, want) {
					last += fmt.Sprintf(" %s drops %v, want %v", tab.Name, got, want)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if last == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: drop rule:%s", when, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkLocks waits up to 5 s for pid to hold the lock of both of the lab
// director's interfaces (a successor takes its predecessor's once that
// one is gone): two lock files naming it.
func checkLocks(t *testing.T, pid int, when string) {
	t.Helper()
	var n int
	for deadline := time.Now().Add(5 * time.Second); ; {
		files, _ := filepath.Glob(filepath.Join(director.DefaultLockDir, "*.lock"))
		n = 0
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == fmt.Sprint(pid) {
				n++
			}
		}
		if n == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: pid %d holds %d interface locks, want 2", when, pid, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
