package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/ipvsadm"
	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/vrrp"
)

var (
	haBinOnce sync.Once
	haBin     string
	haBinErr  error
)

// haGolvs builds the binary once for the HA tests.
func haGolvs(t *testing.T) string {
	t.Helper()
	haBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "golvs-ha")
		if err != nil {
			haBinErr = err
			return
		}
		haBin = filepath.Join(dir, "golvs")
		if out, err := exec.Command("go", "build", "-o", haBin, ".").CombinedOutput(); err != nil {
			haBinErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if haBinErr != nil {
		t.Fatal(haBinErr)
	}
	return haBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if haBin != "" {
		os.RemoveAll(filepath.Dir(haBin))
	}
	os.Exit(code)
}

func TestRunVRRPBadInput(t *testing.T) {
	bin := haGolvs(t)
	sock := filepath.Join(t.TempDir(), "s")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no vrid", []string{"--vrrp-interface", "lo", "--vrrp-vip", "198.18.0.100"}, "needs --vrrp-vrid"},
		{"no vip", []string{"--vrrp-interface", "lo", "--vrrp-vrid", "5"}, "at least one --vrrp-vip"},
		{"vrid range", []string{"--vrrp-interface", "lo", "--vrrp-vrid", "256", "--vrrp-vip", "198.18.0.100"}, "virtual router id 256 out of range"},
		{"priority range", []string{"--vrrp-interface", "lo", "--vrrp-vrid", "5", "--vrrp-priority", "0", "--vrrp-vip", "198.18.0.100"}, "--vrrp-priority 0 out of range"},
		{"v3 auth", []string{"--vrrp-interface", "lo", "--vrrp-vrid", "5", "--vrrp-version", "3", "--vrrp-auth-pass", "x", "--vrrp-vip", "198.18.0.100"}, "version 3 has no authentication"},
		{"v2 fraction", []string{"--vrrp-interface", "lo", "--vrrp-vrid", "5", "--vrrp-advert-int", "0.5", "--vrrp-vip", "198.18.0.100"}, "whole seconds"},
		{"long pass", []string{"--vrrp-interface", "lo", "--vrrp-vrid", "5", "--vrrp-auth-pass", "123456789", "--vrrp-vip", "198.18.0.100"}, "auth_pass is 9 characters"},
		{"ipv6 vip", []string{"--vrrp-interface", "lo", "--vrrp-vrid", "5", "--vrrp-vip", "2001:db8::1"}, "not IPv4"},
		{"bad vip", []string{"--vrrp-interface", "lo", "--vrrp-vrid", "5", "--vrrp-vip", "198.18.0.100/int0"}, "not ADDR or ADDR:IFACE"},
		{"bad state", []string{"--vrrp-interface", "lo", "--vrrp-vrid", "5", "--vrrp-vip", "198.18.0.100", "--vrrp-state", "leader"}, "master or backup"},
		{"flags without interface", []string{"--vrrp-vrid", "5"}, "without --vrrp-interface"},
		{"nopreempt and delay", []string{"--vrrp-interface", "lo", "--vrrp-vrid", "5", "--vrrp-vip", "198.18.0.100", "--vrrp-nopreempt", "--vrrp-preempt-delay", "5s"}, "nopreempt and preempt_delay"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"run", "-i", "lo", "--control", sock}, c.args...)
			out, err := exec.Command(bin, args...).CombinedOutput()
			if err == nil {
				t.Fatalf("golvs %v succeeded:\n%s", args, out)
			}
			if !strings.Contains(string(out), c.want) {
				t.Fatalf("output %q does not mention %q", out, c.want)
			}
			if strings.Count(strings.TrimSpace(string(out)), "\n") > 1 {
				t.Fatalf("more than a one-line error:\n%s", out)
			}
		})
	}
}

// TestLabHA is the failover: 500 long-lived connections through
// the master (a request every 100 ms each) and a new-connection loop;
// SIGKILL the master; the backup takes over within 3 x advert_int + 1 s
// and new connections succeed again within that time; the old master
// returns and, with preemption (after preempt_delay, the time connection
// sync needs to refill its table), takes the VIPs back.
func TestLabHA(t *testing.T) {
	testutil.RequireNetns(t)
	bin := haGolvs(t)
	suffix := lab.RandomSuffix()
	args := []string{"lab", "ha", "--suffix", suffix, "--fail", "master", "--conns", "500", "--return", "--preempt-delay", "6s", "--hold", "10s", "--json"}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("golvs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, n := range lab.HANames(suffix, 2) {
		if _, err := os.Stat("/var/run/netns/" + n); err == nil {
			t.Errorf("namespace %s left behind", n)
		}
	}
	var r struct {
		TakeoverMs     int64  `json:"takeover_ms"`
		Established    int    `json:"established"`
		Survived       int    `json:"survived"`
		NewAttempted   int    `json:"new_attempted"`
		NewFailed      int    `json:"new_failed"`
		NewRecoveredMs int64  `json:"new_recovered_ms"`
		NewFailedAfter int    `json:"new_failed_after_recovery"`
		LastNewFailMs  int64  `json:"last_new_failure_ms"`
		NewFailNote    string `json:"new_failure"`
		Moved          int    `json:"moved"`
		Sync           bool   `json:"sync"`
		SyncNote       string `json:"sync_note"`
		Return         struct {
			State       string `json:"state"`
			AfterMs     int64  `json:"after_ms"`
			Established int    `json:"established"`
			Survived    int    `json:"survived"`
			NewFailed   int    `json:"new_failed"`
		} `json:"return"`
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		t.Fatalf("last line is not the JSON result: %v\n%s", err, out)
	}
	t.Logf("result: %s", lines[len(lines)-1])
	limit := int64(3*1000 + 1000) // 3 x advert_int + 1 s
	if r.TakeoverMs <= 0 || r.TakeoverMs > limit {
		t.Errorf("takeover after %d ms, want within %d", r.TakeoverMs, limit)
	}
	if r.NewRecoveredMs < 0 || r.NewRecoveredMs > limit {
		t.Errorf("new connections succeeded again after %d ms, want within %d", r.NewRecoveredMs, limit)
	}
	if r.NewAttempted == 0 || r.NewFailedAfter != 0 {
		t.Errorf("new connections: %d attempted, %d failed after the first success (the last started %d ms after the kill; %s)", r.NewAttempted, r.NewFailedAfter, r.LastNewFailMs, r.NewFailNote)
	}
	if r.Moved != 0 {
		t.Errorf("%d connections were answered by another real server", r.Moved)
	}
	if r.Return.State != "MASTER" || r.Return.AfterMs < 6000 {
		t.Errorf("returning master (preempt, 6 s delay): %s after %d ms, want MASTER after the delay", r.Return.State, r.Return.AfterMs)
	}
	if r.Return.NewFailed > 0 && r.Sync {
		t.Errorf("%d new connections failed while the old master took the VIPs back", r.Return.NewFailed)
	}
	if r.Established != 500 {
		t.Fatalf("established %d, want 500", r.Established)
	}
	if !r.Sync {
		t.Fatalf("the lab ran without connection sync, so established connections cannot survive: %s", r.SyncNote)
	}
	if r.Survived*100 < r.Established*99 {
		t.Errorf("%d of %d established connections survived the failover, want at least 99%%", r.Survived, r.Established)
	}
	if r.Return.Survived*100 < r.Return.Established*99 {
		t.Errorf("%d of %d established connections survived the old master's return, want at least 99%%", r.Return.Survived, r.Return.Established)
	}
}

// proc is a process started in a lab namespace, killed at cleanup.
type proc struct {
	cmd *exec.Cmd
	log string
}

func startIn(t *testing.T, ns *lab.NS, logPath string, name string, args ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := exec.Command(name, args...)
	c.Stdout, c.Stderr = f, f
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // no Pdeathsig: the starting thread ends at once
	if err := ns.Do(c.Start); err != nil {
		t.Fatalf("starting %s in %s: %v", name, ns.Name, err)
	}
	p := &proc{cmd: c, log: logPath}
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		_, _ = p.cmd.Process.Wait()
	}
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// haDirector starts `golvs run` with VRRP in director n (1 or 2) of an
// HA lab and waits for its control socket.
func haDirector(t *testing.T, topo *lab.HATopology, dir string, n int, extra ...string) (*proc, string) {
	t.Helper()
	bin := haGolvs(t)
	rules := filepath.Join(dir, "rules")
	if _, err := os.Stat(rules); err != nil {
		text := fmt.Sprintf("-A -t %s:80 -s rr\n-a -t %s:80 -r %s:80 -m -w 1\n-a -t %s:80 -r %s:80 -m -w 1\n", lab.VIP, lab.VIP, lab.RIP(1), lab.VIP, lab.RIP(2))
		if err := os.WriteFile(rules, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, fmt.Sprintf("dir%d.sock", n))
	args := []string{"run", "-i", lab.DirExt + ":arp", "-i", lab.DirInt, "--fix-host", "--rules", rules, "--control", sock, "--workers", "1"}
	if len(extra) == 0 || extra[0] != "--keepalived-conf" {
		args = append(args, "--vrrp-interface", lab.DirExt, "--vrrp-vip", lab.VIP.String(), "--vrrp-vip", lab.HAGatewayIP.String()+":"+lab.DirInt)
	}
	args = append(args, extra...)
	p := startIn(t, topo.Directors[n-1], filepath.Join(dir, fmt.Sprintf("dir%d.log", n)), bin, args...)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := haStatus(sock); err == nil {
			return p, sock
		}
		if time.Now().After(deadline) || p.cmd.ProcessState != nil {
			t.Fatalf("director %d did not start:\n%s", n, p.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func haStatus(sock string) (*vrrp.Status, error) {
	cl, err := control.Dial(sock)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	rep, err := cl.Do(&control.Request{Op: "vrrp"})
	if err != nil {
		return nil, err
	}
	if !rep.OK || rep.VRRP == nil || len(rep.VRRP.Instances) != 1 {
		return nil, fmt.Errorf("vrrp op: %q", rep.Error)
	}
	return rep.VRRP, nil
}

// waitForLog is waitFor with a process's log in the failure.
func waitForLog(t *testing.T, what string, timeout time.Duration, cond func() bool, p *proc) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not after %v; log:\n%s", what, timeout, p.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor polls cond every 50 ms until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not after %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

func stateOf(sock string) string {
	st, err := haStatus(sock)
	if err != nil {
		return "down"
	}
	return st.Instances[0].State
}

// TestHANopreemptAndSplitBrain: a returning higher-priority director with
// nopreempt stays backup; a partition of the directors' link makes both
// master without disturbing either's table; when it heals, the one with
// the lower priority yields, and the real servers' gateway follows.
func TestHANopreemptAndSplitBrain(t *testing.T) {
	testutil.RequireNetns(t)
	t.Parallel() // waits on VRRP timers, as TestKeepalivedInterop does
	topo, err := lab.BuildHA(lab.Options{Suffix: lab.RandomSuffix(), RealServers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(topo.Close)
	dir := t.TempDir()
	ctx, cancel := contextWithCancel()
	defer cancel()
	for i, rs := range topo.RS {
		if _, err := lab.Serve(ctx, rs, fmt.Sprintf("rs%d", i+1), []int{80}, nil); err != nil {
			t.Fatal(err)
		}
	}
	vrrpArgs := []string{"--vrrp-vrid", "52", "--vrrp-nopreempt", "--vrrp-auth-pass", "s3cret"}
	d1, sock1 := haDirector(t, topo, dir, 1, append([]string{"--vrrp-priority", "150"}, vrrpArgs...)...)
	waitFor(t, "dir1 MASTER", 10*time.Second, func() bool { return stateOf(sock1) == "MASTER" })
	_, sock2 := haDirector(t, topo, dir, 2, append([]string{"--vrrp-priority", "100"}, vrrpArgs...)...)
	waitFor(t, "dir2 BACKUP", 10*time.Second, func() bool { return stateOf(sock2) == "BACKUP" })

	// Kill dir1: dir2 takes over; dir1 returns with nopreempt and stays
	// backup although its priority is higher.
	d1.kill()
	waitFor(t, "dir2 MASTER after dir1 died", 6*time.Second, func() bool { return stateOf(sock2) == "MASTER" })
	d1, sock1 = haDirector(t, topo, dir, 1, append([]string{"--vrrp-priority", "150"}, vrrpArgs...)...)
	waitFor(t, "returned dir1 BACKUP", 10*time.Second, func() bool { return stateOf(sock1) == "BACKUP" })
	// Its down timer (3 x 1 s + skew) would have made it preempt by now.
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if s := stateOf(sock1); s != "BACKUP" {
			t.Fatalf("nopreempt dir1 went %s while dir2 was master", s)
		}
	}
	if s := stateOf(sock2); s != "MASTER" {
		t.Fatalf("dir2 is %s, want MASTER", s)
	}
	tables := func() [2]string {
		var out [2]string
		for i, sock := range []string{sock1, sock2} {
			cl, err := control.Dial(sock)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := cl.Do(&control.Request{Op: "list"})
			cl.Close()
			if err != nil || !rep.OK {
				t.Fatalf("list: %v %v", err, rep)
			}
			var b strings.Builder
			if err := ipvsadm.NewLister(ipvsadm.FmtNumeric).WriteSave(&b, rep.Services, true); err != nil {
				t.Fatal(err)
			}
			out[i] = b.String()
		}
		return out
	}
	before := tables()

	// Partition: both masters (split brain); each table unchanged.
	if err := topo.Partition(true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "split brain (both MASTER)", 8*time.Second, func() bool { return stateOf(sock1) == "MASTER" && stateOf(sock2) == "MASTER" })
	// Both claim the VIP and the gateway now: the client's and the real
	// servers' ARP caches may point at different directors, so requests
	// may fail (the nature of a split brain), but neither table changes.
	_, _ = lab.Get(topo.Client, netip.AddrPortFrom(lab.VIP, 80), 2, time.Second)
	if got := tables(); got != before {
		t.Fatalf("tables changed during the split brain:\nbefore %q\nafter  %q", before, got)
	}
	// Heal: the lower priority (dir2) yields; dir1, master again, keeps it.
	if err := topo.Partition(false); err != nil {
		t.Fatal(err)
	}
	healed := waitFor(t, "one master after the partition healed", 5*time.Second, func() bool { return stateOf(sock1) == "MASTER" && stateOf(sock2) == "BACKUP" })
	t.Logf("healed in %v", healed)
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if stateOf(sock1) != "MASTER" || stateOf(sock2) != "BACKUP" {
			t.Fatalf("flapped after healing: dir1 %s, dir2 %s", stateOf(sock1), stateOf(sock2))
		}
	}
	if got := tables(); got != before {
		t.Fatalf("tables changed by the split brain:\nbefore %q\nafter  %q", before, got)
	}
	// The client and the real servers reach the master again (the
	// gratuitous ARPs of the "forcing new election" moved them).
	if rs, err := lab.Get(topo.Client, netip.AddrPortFrom(lab.VIP, 80), 4, 5*time.Second); err != nil {
		t.Fatal(err)
	} else {
		for _, r := range rs {
			if r.Err != nil {
				t.Fatalf("request after healing: %v", r.Err)
			}
		}
	}
	st, _ := haStatus(sock1)
	if d := st.Instances[0].Drops; d["auth"]+d["checksum"]+d["ttl"]+d["version"] != 0 {
		t.Fatalf("golvs dropped adverts of golvs: %v", d)
	}
	// The operator's view and knob: golvs adm --vrrp, --vrrp-priority.
	adm := func(sock string, args ...string) string {
		c := exec.Command(haGolvs(t), append([]string{"adm"}, args...)...)
		c.Env = append(os.Environ(), "GOLVS_SOCKET="+sock)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("golvs adm %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := adm(sock1, "--vrrp"); !strings.Contains(out, "VRRP instance VI_1 (vrid 52, version 2, interface ext0): MASTER") ||
		!strings.Contains(out, "master 198.18.0.2 (this director), priority 150") || !strings.Contains(out, "golvs serves: yes (master)") {
		t.Fatalf("golvs adm --vrrp on the master:\n%s", out)
	}
	if out := adm(sock2, "--vrrp-priority", "120"); !strings.Contains(out, "BACKUP") || !strings.Contains(out, "priority 120 (configured 100)") ||
		!strings.Contains(out, "golvs serves: no") {
		t.Fatalf("golvs adm --vrrp-priority 120 on the backup:\n%s", out)
	}
	_ = d1
}

// kaAddrs lists the IPv4 addresses on a link in a namespace.
func kaAddrs(t *testing.T, ns *lab.NS, dev string) []netip.Addr {
	h, err := netlink.NewHandleAt(ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	as, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, a := range as {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			out = append(out, ip)
		}
	}
	return out
}

func holds(addrs []netip.Addr, a netip.Addr) bool {
	for _, x := range addrs {
		if x == a {
			return true
		}
	}
	return false
}

// keepalivedConf is a VRRP-only keepalived.conf for director 2 of the HA lab.
func keepalivedConf(version, prio int, auth string) string {
	a := ""
	if auth != "" {
		a = fmt.Sprintf("    authentication {\n        auth_type PASS\n        auth_pass %s\n    }\n", auth)
	}
	return fmt.Sprintf(`global_defs {
    router_id golvs-interop
    vrrp_version %d
}
vrrp_instance VI_1 {
    state BACKUP
    interface ext0
    virtual_router_id 53
    priority %d
    advert_int 1
%s    virtual_ipaddress {
        %s/24 dev ext0
        %s/24 dev int0
    }
}
`, version, prio, a, lab.VIP, lab.HAGatewayIP)
}

func startKeepalived(t *testing.T, topo *lab.HATopology, conf string) *proc {
	t.Helper()
	ka, err := exec.LookPath("keepalived")
	if err != nil {
		t.Skip("skipping: keepalived is not installed (.ci/run installs Debian's keepalived)")
	}
	// A directory of its own each time: a killed keepalived's pid files
	// (its VRRP child may linger) must not stop the next one.
	dir := t.TempDir()
	path := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startIn(t, topo.Directors[1], filepath.Join(dir, "keepalived.log"), "stdbuf", "-oL", "-eL", ka, "--dont-fork", "--log-console", "--log-detail", "--vrrp", "--no-syslog",
		"-f", path, "-p", filepath.Join(dir, "ka.pid"), "-r", filepath.Join(dir, "ka-vrrp.pid"))
	time.Sleep(200 * time.Millisecond)
	if p.cmd.ProcessState != nil {
		t.Fatalf("keepalived exited:\n%s", p.logText())
	}
	return p
}

// TestKeepalivedInterop: golvs and a real keepalived (Debian's) are the
// two VRRP routers of one virtual router: they elect the higher priority,
// and each takes over when the other dies. keepalived's state is read
// from its kernel (a keepalived master puts the VIP on its interface);
// golvs must drop none of keepalived's adverts.
func TestKeepalivedInterop(t *testing.T) {
	testutil.RequireNetns(t)
	t.Parallel()
	if _, err := exec.LookPath("keepalived"); err != nil {
		t.Skip("skipping: keepalived is not installed (.ci/run installs Debian's keepalived)")
	}
	for _, v := range []struct {
		version int
		auth    string
	}{{2, "s3cret"}, {3, ""}} {
		t.Run(fmt.Sprintf("v%d", v.version), func(t *testing.T) {
			t.Parallel() // mostly waiting for timers: the versions side by side
			topo, err := lab.BuildHA(lab.Options{Suffix: lab.RandomSuffix(), RealServers: 2})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(topo.Close)
			dir := t.TempDir()
			golvsArgs := func(prio int) []string {
				if v.version == 3 {
					// golvs reads the same vrrp_instance block keepalived
					// runs (keepalived.conf as golvs's configuration).
					path := filepath.Join(dir, fmt.Sprintf("golvs-%d.conf", prio))
					if err := os.WriteFile(path, []byte(keepalivedConf(v.version, prio, v.auth)), 0o600); err != nil {
						t.Fatal(err)
					}
					return []string{"--keepalived-conf", path}
				}
				a := []string{"--vrrp-vrid", "53", "--vrrp-priority", fmt.Sprint(prio), "--vrrp-version", fmt.Sprint(v.version)}
				if v.auth != "" {
					a = append(a, "--vrrp-auth-pass", v.auth)
				}
				return a
			}
			kaMaster := func() bool { return holds(kaAddrs(t, topo.Directors[1], lab.DirExt), lab.VIP) }

			// golvs 150 against keepalived 100: golvs is master.
			ka := startKeepalived(t, topo, keepalivedConf(v.version, 100, v.auth))
			g, sock := haDirector(t, topo, dir, 1, golvsArgs(150)...)
			waitFor(t, "golvs MASTER", 10*time.Second, func() bool { return stateOf(sock) == "MASTER" })
			// keepalived heard it: it stays backup (no VIP) for a while.
			for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
				if kaMaster() {
					t.Fatalf("keepalived (priority 100) took the VIP from golvs (150):\n%s", ka.logText())
				}
			}
			st, _ := haStatus(sock)
			if st.Instances[0].Master != lab.HADirExtIP(1).String() {
				t.Fatalf("golvs sees master %s", st.Instances[0].Master)
			}
			// golvs dies: keepalived takes over.
			g.kill()
			took := waitFor(t, "keepalived MASTER after golvs died", 6*time.Second, kaMaster)
			t.Logf("keepalived took over %v after golvs was killed", took)
			// golvs returns (preempt): it takes the VIPs back, keepalived yields.
			_, sock = haDirector(t, topo, dir, 1, golvsArgs(150)...)
			waitFor(t, "golvs MASTER again", 10*time.Second, func() bool { return stateOf(sock) == "MASTER" })
			waitFor(t, "keepalived yields", 5*time.Second, func() bool { return !kaMaster() })
			st, _ = haStatus(sock)
			in := st.Instances[0]
			if in.Received == 0 {
				t.Fatalf("golvs received no adverts from keepalived")
			}
			if len(in.Drops) != 0 || len(st.Drops) != 0 {
				t.Fatalf("golvs dropped keepalived's adverts: %v %v", in.Drops, st.Drops)
			}

			// keepalived 200 against golvs 150: keepalived preempts...
			ka.kill()
			ka = startKeepalived(t, topo, keepalivedConf(v.version, 200, v.auth))
			waitForLog(t, "keepalived (200) MASTER", 10*time.Second, kaMaster, ka)
			waitFor(t, "golvs BACKUP", 5*time.Second, func() bool { return stateOf(sock) == "BACKUP" })
			st, _ = haStatus(sock)
			if st.Instances[0].Master != lab.HADirExtIP(2).String() || st.Instances[0].MasterPrio != 200 {
				t.Fatalf("golvs sees master %s/%d, want keepalived's %s/200", st.Instances[0].Master, st.Instances[0].MasterPrio, lab.HADirExtIP(2))
			}
			// ...and when it dies, golvs takes over.
			ka.kill()
			took = waitFor(t, "golvs MASTER after keepalived died", 6*time.Second, func() bool { return stateOf(sock) == "MASTER" })
			t.Logf("golvs took over %v after keepalived was killed", took)
			st, _ = haStatus(sock)
			if len(st.Instances[0].Drops) != 0 {
				t.Fatalf("golvs dropped keepalived's adverts: %v", st.Instances[0].Drops)
			}
		})
	}
}

// TestKeepalivedAdvertsDecode: adverts captured from keepalived itself
// (v2 with a password, v3 with its pseudo-header checksum) pass golvs's
// decoder and checks field by field.
func TestKeepalivedAdvertsDecode(t *testing.T) {
	testutil.RequireNetns(t)
	if _, err := exec.LookPath("keepalived"); err != nil {
		t.Skip("skipping: keepalived is not installed (.ci/run installs Debian's keepalived)")
	}
	topo, err := lab.BuildHA(lab.Options{Suffix: lab.RandomSuffix(), RealServers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(topo.Close)
	for _, v := range []struct {
		version int
		auth    string
	}{{2, "kapass"}, {3, ""}} {
		conf := strings.Replace(keepalivedConf(v.version, 120, v.auth), "state BACKUP", "state MASTER", 1)
		ka := startKeepalived(t, topo, conf)
		var pc net.PacketConn
		if err := topo.Directors[0].Do(func() error {
			var err error
			pc, err = net.ListenPacket("ip4:112", "0.0.0.0")
			if err != nil {
				return err
			}
			l, _ := net.InterfaceByName(lab.DirExt)
			return joinGroup(pc, l)
		}); err != nil {
			t.Fatal(err)
		}
		raw, err := readRawIP(pc, 6*time.Second)
		pc.Close()
		ka.kill()
		if err != nil {
			t.Fatalf("v%d: no advert from keepalived: %v\n%s", v.version, err, ka.logText())
		}
		var a vrrp.Advert
		if err := vrrp.Decode(raw, &a); err != nil {
			t.Fatalf("v%d: keepalived's advert refused: %v\n% x", v.version, err, raw)
		}
		want := []netip.Addr{lab.VIP, lab.HAGatewayIP}
		if int(a.Version) != v.version || a.VRID != 53 || a.Priority != 120 || a.Interval != 100 || a.TTL != 255 ||
			a.Src != lab.HADirExtIP(2) || a.Dst != vrrp.MulticastGroup || len(a.Addrs) != 2 || a.Addrs[0] != want[0] || a.Addrs[1] != want[1] {
			t.Fatalf("v%d: decoded %+v", v.version, a)
		}
		in := vrrp.Instance{Name: "VI_1", Interface: "ext0", VRID: 53, Version: v.version, AuthPass: v.auth, Addrs: []vrrp.VAddr{{Addr: lab.VIP}, {Addr: lab.HAGatewayIP}}}
		if err := vrrp.CheckAdvert(&in, &a); err != nil {
			t.Fatalf("v%d: keepalived's advert fails golvs's checks: %v", v.version, err)
		}
	}
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

func joinGroup(pc net.PacketConn, ifi *net.Interface) error {
	if ifi == nil {
		return fmt.Errorf("no interface")
	}
	return ipv4.NewPacketConn(pc).JoinGroup(ifi, &net.IPAddr{IP: vrrp.MulticastGroup.AsSlice()})
}

// readRawIP reads one packet, IP header included, from a raw socket.
func readRawIP(pc net.PacketConn, timeout time.Duration) ([]byte, error) {
	rc, err := pc.(*net.IPConn).SyscallConn()
	if err != nil {
		return nil, err
	}
	_ = pc.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	return buf[:n], nil
}

// TestSyncDaemonFollowsVRRP: keepalived.conf's lvs_sync_daemon gives each
// director a sync daemon whose role follows VRRP, as keepalived's does:
// the master's sends, the backup's receives, and they swap on failover.
func TestSyncDaemonFollowsVRRP(t *testing.T) {
	testutil.RequireNetns(t)
	t.Parallel()
	topo, err := lab.BuildHA(lab.Options{Suffix: lab.RandomSuffix(), RealServers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(topo.Close)
	dir := t.TempDir()
	conf := func(prio int) string {
		path := filepath.Join(dir, fmt.Sprintf("k%d.conf", prio))
		text := strings.Replace(keepalivedConf(2, prio, "sync"), "global_defs {", "global_defs {\n    lvs_sync_daemon int0 VI_1 id 9", 1)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	daemons := func(sock string) string {
		c := exec.Command(haGolvs(t), "adm", "-L", "--daemon")
		c.Env = append(os.Environ(), "GOLVS_SOCKET="+sock)
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("golvs adm -L --daemon: %v\n%s", err, out)
		}
		return string(out)
	}
	d1, sock1 := haDirector(t, topo, dir, 1, "--keepalived-conf", conf(150))
	waitFor(t, "director1 MASTER", 10*time.Second, func() bool { return stateOf(sock1) == "MASTER" })
	_, sock2 := haDirector(t, topo, dir, 2, "--keepalived-conf", conf(100))
	waitFor(t, "director2 BACKUP", 10*time.Second, func() bool { return stateOf(sock2) == "BACKUP" })
	role := func(sock string) string {
		out := daemons(sock)
		switch {
		case strings.Contains(out, "master sync daemon (mcast=int0, syncid=9") && !strings.Contains(out, "backup sync daemon"):
			return "master"
		case strings.Contains(out, "backup sync daemon (mcast=int0, syncid=9") && !strings.Contains(out, "master sync daemon"):
			return "backup"
		}
		return out
	}
	waitFor(t, "sync roles master/backup", 5*time.Second, func() bool { return role(sock1) == "master" && role(sock2) == "backup" })
	d1.kill()
	waitFor(t, "director2 MASTER", 6*time.Second, func() bool { return stateOf(sock2) == "MASTER" })
	waitFor(t, "director2's daemon turns master", 3*time.Second, func() bool { return role(sock2) == "master" })
}

// TestTakeoverKeepsVRRPAndSync: a graceful restart (SIGUSR2) of the VRRP
// master of a pair running connection sync does not fight either: the
// old daemon stops without resigning and hands its sync daemon and its
// MASTER state to the new one, which resumes as master at once with the
// sync master running; the backup never takes over (no priority 0, no
// Master_Down_Interval expiry) and keeps its backup daemon; requests
// through the VIP carry on.
func TestTakeoverKeepsVRRPAndSync(t *testing.T) {
	testutil.RequireNetns(t)
	t.Parallel()
	topo, err := lab.BuildHA(lab.Options{Suffix: lab.RandomSuffix(), RealServers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(topo.Close)
	dir := t.TempDir()
	ctx, cancel := contextWithCancel()
	defer cancel()
	for i, rs := range topo.RS {
		if _, err := lab.Serve(ctx, rs, fmt.Sprintf("rs%d", i+1), []int{80}, nil); err != nil {
			t.Fatal(err)
		}
	}
	conf := func(prio int) string {
		path := filepath.Join(dir, fmt.Sprintf("k%d.conf", prio))
		text := strings.Replace(keepalivedConf(2, prio, "tk"), "global_defs {", "global_defs {\n    lvs_sync_daemon int0 VI_1 id 9", 1)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	role := func(sock string) string {
		c := exec.Command(haGolvs(t), "adm", "-L", "--daemon")
		c.Env = append(os.Environ(), "GOLVS_SOCKET="+sock)
		out, _ := c.CombinedOutput()
		switch s := string(out); {
		case strings.Contains(s, "master sync daemon (mcast=int0, syncid=9") && !strings.Contains(s, "backup sync daemon"):
			return "master"
		case strings.Contains(s, "backup sync daemon (mcast=int0, syncid=9") && !strings.Contains(s, "master sync daemon"):
			return "backup"
		default:
			return s
		}
	}
	pidOf := func(sock string) int {
		cl, err := control.Dial(sock)
		if err != nil {
			return 0
		}
		defer cl.Close()
		rep, err := cl.Do(&control.Request{Op: "status"})
		if err != nil || !rep.OK {
			return 0
		}
		return rep.PID
	}
	d1, sock1 := haDirector(t, topo, dir, 1, "--keepalived-conf", conf(150))
	waitFor(t, "director1 MASTER", 10*time.Second, func() bool { return stateOf(sock1) == "MASTER" })
	_, sock2 := haDirector(t, topo, dir, 2, "--keepalived-conf", conf(100))
	waitFor(t, "director2 BACKUP", 10*time.Second, func() bool { return stateOf(sock2) == "BACKUP" })
	waitFor(t, "sync roles master/backup", 5*time.Second, func() bool { return role(sock1) == "master" && role(sock2) == "backup" })
	loop := testutil.StartRequests(topo.Client, netip.AddrPortFrom(lab.VIP, 80), 2)
	loop.WaitOK(20)

	old := d1.cmd.Process.Pid
	if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	// The successor answers (same socket, another pid) as master with
	// its sync master running; meanwhile, and for longer than the
	// backup's Master_Down_Interval (3 x 1 s + skew) after, the backup
	// stays backup.
	deadline := time.Now().Add(30 * time.Second)
	var resumed time.Time
	for resumed.IsZero() || time.Since(resumed) < 4*time.Second {
		if s := stateOf(sock2); s != "BACKUP" {
			t.Fatalf("director2 went %s during director1's graceful restart; director1's log:\n%s", s, d1.logText())
		}
		if resumed.IsZero() {
			if p := pidOf(sock1); p != 0 && p != old && stateOf(sock1) == "MASTER" && role(sock1) == "master" {
				resumed = time.Now()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("director1's successor not master with a sync master after 30 s; log:\n%s", d1.logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := role(sock2); r != "backup" {
		t.Fatalf("director2's sync daemon: %s", r)
	}
	st, err := haStatus(sock2)
	if err != nil {
		t.Fatal(err)
	}
	if in := st.Instances[0]; in.BecameMaster != 0 || in.PrioZeroRecv != 0 {
		t.Fatalf("director2 saw %d priority-0 adverts and became master %d times", in.PrioZeroRecv, in.BecameMaster)
	}
	loop.WaitOK(loop.OK.Load() + 20)
	loop.End(t)
	log := d1.logText()
	for _, want := range []string{"took over from pid", "no priority 0", "resuming as MASTER", "sync daemons stopped for the new process"} {
		if !strings.Contains(log, want) {
			t.Fatalf("director1's log does not say %q:\n%s", want, log)
		}
	}
}
