package director

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/netio"
)

// helperNSEnv names the namespace TestHelperDirectorProcess runs a
// director in; without it the helper is skipped.
const helperNSEnv = "GOLVS_TEST_HELPER_DIRECTOR_NS"

// TestHelperDirectorProcess is not a test: TestDropRuleAfterKill runs the
// test binary again with only this function, in a lab's director
// namespace, and kills it with SIGKILL. It serves VIP:80 -> rs1:8080 (NAT)
// and prints READY.
func TestHelperDirectorProcess(t *testing.T) {
	name := os.Getenv(helperNSEnv)
	if name == "" {
		t.Skip("helper process of TestDropRuleAfterKill")
	}
	runtime.LockOSThread()
	h, err := netns.GetFromName(name)
	if err == nil {
		err = netns.Set(h)
	}
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	d, err := New(Config{Interfaces: []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}}, Workers: 1, FixHost: true})
	if err == nil {
		k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 80}
		if err = d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err == nil {
			err = d.AddDest(k, ipvs.DestConfig{Addr: lab.RIP(1), Port: 8080, Method: ipvs.MethodMasq, Weight: 1})
		}
	}
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	go func() { _ = d.Run(context.Background()) }()
	fmt.Println("READY")
	select {}
}

// dropTables lists the drop-rule tables in ns with the VIP:port elements
// of their dst3 sets.
func dropTables(t *testing.T, ns *lab.NS) map[string][]string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle)))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyNetdev)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, tb := range ts {
		if !strings.HasPrefix(tb.Name, netio.DropTablePrefix) {
			continue
		}
		out[tb.Name] = nil
		s, err := c.GetSetByName(tb, "dst3")
		if err != nil {
			t.Fatal(err)
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range els {
			if len(e.Key) >= 10 {
				a := netip.AddrFrom4([4]byte(e.Key[:4]))
				out[tb.Name] = append(out[tb.Name], fmt.Sprintf("%s:%d", a, int(e.Key[8])<<8|int(e.Key[9])))
			}
		}
	}
	return out
}

// ipInReceives reads the IPv4 stack's InReceives in ns: every IPv4 packet
// the kernel took past ingress.
func ipInReceives(t *testing.T, ns *lab.NS) uint64 {
	t.Helper()
	var v uint64
	err := ns.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var names []string
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) == 0 || f[0] != "Ip:" {
				continue
			}
			if names == nil {
				names = f
				continue
			}
			for i, n := range names {
				if n == "InReceives" {
					v, err = strconv.ParseUint(f[i], 10, 64)
					return err
				}
			}
		}
		return errors.New("no Ip: InReceives")
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestDropRuleAfterKill: a director killed with SIGKILL leaves its drop
// rule behind; it breaks neither the host's own traffic nor the next
// start, which replaces it; with the rule in place the kernel's IP stack
// sees none of the frames golvs forwards but still gets the host's own
// (a health check's replies from a real server's service port); at a
// clean exit the rule is gone.
func TestDropRuleAfterKill(t *testing.T) {
	topo := testutil.NATLab(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := lab.Serve(ctx, topo.RS[0], "rs1", []int{8080}, nil); err != nil {
		t.Fatal(err)
	}
	rs := netip.AddrPortFrom(lab.RIP(1), 8080)

	// 1. A director in another process, killed with SIGKILL.
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperDirectorProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperNSEnv+"="+topo.Director.Name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l := sc.Text(); l == "READY" || strings.HasPrefix(l, "ERROR") {
				ready <- l
				return
			}
		}
		ready <- "helper exited"
	}()
	select {
	case l := <-ready:
		if l != "READY" {
			t.Fatalf("helper director: %s", l)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("helper director did not start")
	}
	tables := dropTables(t, topo.Director)
	if got := tables["golvs-ext0"]; len(got) != 1 || got[0] != lab.VIP.String()+":80" {
		t.Fatalf("helper's drop rule: %v, want golvs-ext0 and golvs-int0 dropping VIP:80", tables)
	}
	// While it runs, a second director on its interfaces is refused, and
	// leaves its drop rule alone.
	err = topo.Director.Do(func() error {
		_, err := New(Config{Interfaces: []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}}, Workers: 1, FixHost: true})
		return err
	})
	if !errors.Is(err, ErrInterfaceBusy) || !strings.Contains(err.Error(), fmt.Sprintf("(pid %d;", cmd.Process.Pid)) {
		t.Fatalf("a second director beside the helper: %v, want %v naming pid %d", err, ErrInterfaceBusy, cmd.Process.Pid)
	}
	if got := dropTables(t, topo.Director)["golvs-ext0"]; len(got) != 1 {
		t.Fatalf("the helper's drop rule after the second director was refused: %v", got)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if tables = dropTables(t, topo.Director); len(tables) != 2 {
		t.Fatalf("after SIGKILL: tables %v, want the two left behind", tables)
	}
	// The host's own traffic is untouched by the stale rule.
	if resp, err := lab.Get(topo.Director, rs, 1, 5*time.Second); err != nil || resp[0].Err != nil {
		t.Fatalf("the director host's own connection to %s with a stale rule: %v %+v", rs, err, resp)
	}

	// 2. The next start replaces the stale rule with its own.
	var d *Director
	var logMu sync.Mutex // Run logs from its own goroutine
	var logs []string
	err = topo.Director.Do(func() (err error) {
		d, err = New(Config{Interfaces: []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}}, Workers: 1, FixHost: true,
			Conntrack: conntrack.Config{Tick: 100 * time.Millisecond, Shards: 64},
			Logf: func(f string, a ...any) {
				logMu.Lock()
				defer logMu.Unlock()
				logs = append(logs, fmt.Sprintf(f, a...))
			}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	defer stop()
	logMu.Lock()
	startLogs := strings.Join(logs, "\n")
	logMu.Unlock()
	if !strings.Contains(startLogs, "removed nftables table netdev golvs-ext0") {
		t.Errorf("start did not report the stale table: %q", startLogs)
	}
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 81}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddDest(k, ipvs.DestConfig{Addr: lab.RIP(1), Port: 8080, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := d.WaitResolved(wctx); err != nil {
		t.Fatal(err)
	}
	tables = dropTables(t, topo.Director)
	for _, n := range []string{"golvs-ext0", "golvs-int0"} {
		if got := tables[n]; len(got) != 1 || got[0] != lab.VIP.String()+":81" {
			t.Fatalf("after restart: %v, want %s dropping only VIP:81", tables, n)
		}
	}
	// Traffic flows, and none of it reaches the director's IP stack.
	before := ipInReceives(t, topo.Director)
	const n = 50
	resp, err := lab.Get(topo.Client, netip.AddrPortFrom(lab.VIP, 81), n, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range resp {
		if r.Err != nil || r.Body != "rs1" {
			t.Fatalf("request %d through the restarted director: %+v (drops %v)", i, r, d.Drops.Get())
		}
	}
	if got := ipInReceives(t, topo.Director) - before; got > n/10 {
		t.Errorf("the director's IP stack took %d packets during %d forwarded requests, want none (the drop rule)", got, n)
	}
	// The host's own traffic from a real server's service port still
	// reaches the kernel.
	before = ipInReceives(t, topo.Director)
	if resp, err := lab.Get(topo.Director, rs, 3, 5*time.Second); err != nil || resp[0].Err != nil {
		t.Fatalf("a health check from the director to %s with the drop rule in place: %v %+v", rs, err, resp)
	}
	if got := ipInReceives(t, topo.Director) - before; got == 0 {
		t.Error("the health check's replies never reached the director's IP stack")
	}

	// 3. A clean exit removes the rule.
	stop()
	if tables = dropTables(t, topo.Director); len(tables) != 0 {
		t.Fatalf("after a clean exit: tables %v left", tables)
	}
}
