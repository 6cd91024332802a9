package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/labcmd"
	"github.com/golvs/golvs/sched"
)

// buildGolvs builds the binary once per test run.
func buildGolvs(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "golvs")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// bodies returns the response lines of a lab run (not comments, not the
// table).
func bodies(out string) []string {
	var b []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "rs") || strings.HasPrefix(l, "error") {
			b = append(b, l)
		}
	}
	return b
}

func TestLabNAT(t *testing.T) {
	testutil.RequireNetns(t)
	bin := buildGolvs(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		// rr: list order is newest first (rs2, rs1), so rs2 leads.
		{"rr", []string{"--scheduler", "rr", "--requests", "10"}, "rs2 rs1 rs2 rs1 rs2 rs1 rs2 rs1 rs2 rs1"},
		// wrr 2,1 built incrementally: di=1, mw=2, cw starts at 1, the
		// cycle B,A,A of spec §2.2.
		{"wrr", []string{"--scheduler", "wrr", "--weights", "2,1", "--requests", "9"}, "rs2 rs1 rs1 rs2 rs1 rs1 rs2 rs1 rs1"},
		{"dr", []string{"--scheduler", "rr", "--requests", "4"}, "rs2 rs1 rs2 rs1"},
		{"tun", []string{"--scheduler", "rr", "--requests", "4"}, "rs2 rs1 rs2 rs1"},
		{"fullnat", []string{"--scheduler", "rr", "--requests", "4"}, "rs2 rs1 rs2 rs1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			suffix := lab.RandomSuffix()
			mode := "nat"
			switch c.name {
			case "dr", "tun", "fullnat":
				mode = c.name
			}
			args := append([]string{"lab", mode, "--suffix", suffix}, c.args...)
			cmd := exec.Command(bin, args...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("golvs %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			got := strings.Join(bodies(string(out)), " ")
			if got != c.want {
				t.Fatalf("responses %q, want %q\n%s", got, c.want, out)
			}
			if !strings.Contains(string(out), "IP Virtual Server version 1.2.1 (size=4096)") {
				t.Fatalf("no service table in output:\n%s", out)
			}
			// Everything it made is gone.
			for _, n := range append(lab.Names(suffix, 2), "router"+suffix, "rslan"+suffix) {
				if _, err := os.Stat("/var/run/netns/" + n); err == nil {
					t.Fatalf("namespace %s left behind", n)
				}
			}
		})
	}
}

func TestRunBadInput(t *testing.T) {
	bin := buildGolvs(t)
	badRules := filepath.Join(t.TempDir(), "rules")
	if err := os.WriteFile(badRules, []byte("-A -t 198.18.0.100:80 -s rr\n-a -t 198.18.0.100:80 -r 198.19.0.11:80 -m -w 99999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no interface", []string{"run"}, "no interface given"},
		{"missing interface", []string{"run", "-i", "nosuchif0", "--control", filepath.Join(t.TempDir(), "s")}, `no such interface: "nosuchif0"`},
		{"bad workers", []string{"run", "-i", "lo", "--workers", "-1"}, "--workers -1 out of range"},
		{"bad icmp rate", []string{"run", "-i", "lo", "--icmp-msgs-per-sec", "-5"}, "--icmp-msgs-per-sec -5 out of range"},
		{"bad icmp burst", []string{"run", "-i", "lo", "--icmp-msgs-burst", "0"}, "--icmp-msgs-burst 0 out of range"},
		{"status extra argument", []string{"adm", "--status", "--verbose"}, `unexpected argument "--verbose"`},
		{"busy-poll past its limit", []string{"run", "-i", "lo", "--busy-poll", "11ms"}, "--busy-poll 11ms out of range (0..10ms)"},
		{"negative busy-poll", []string{"run", "-i", "lo", "--busy-poll", "-1us"}, "--busy-poll -1µs out of range"},
		{"bad fanout", []string{"run", "-i", "lo", "--fanout", "rr"}, `fanout mode "rr" (allowed: cpu, next, hash)`},
		{"fanout next unpinned", []string{"run", "-i", "lo", "--fanout", "next", "--no-pin"}, "--fanout next pins each worker one CPU on, and --no-pin turns pinning off"},
		{"bad proc interval", []string{"run", "-i", "lo", "--proc-dir", t.TempDir(), "--proc-interval", "1ms"}, "--proc-interval 1ms out of range"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"lab bad weights", []string{"lab", "nat", "--weights", "2,x"}, `"x" is not a weight`},
		{"bad rules line", []string{"run", "-i", "lo", "--rules", badRules, "--control", filepath.Join(t.TempDir(), "s")}, "line 2"},
		{"lab bad scheduler", []string{"lab", "nat", "--scheduler", "fastest"}, "fastest"},
		{"bad drop_entry", []string{"run", "-i", "lo", "--drop-entry", "4"}, "drop_entry 4 (allowed 0 off, 1 automatic, 2 engaged, 3 always)"},
		{"bad secure_tcp", []string{"run", "-i", "lo", "--secure-tcp", "-1"}, "secure_tcp -1"},
		{"amemthresh past the table", []string{"run", "-i", "lo", "--conn-max", "1000", "--amemthresh", "2000"}, "amemthresh 2000 (allowed 0..1000"},
		{"bad am_droprate", []string{"run", "-i", "lo", "--am-droprate", "-3"}, "am_droprate -3"},
		{"bgp asn 0", []string{"run", "-i", "lo", "--bgp-asn", "0", "--bgp-router-id", "198.18.0.1", "--bgp-peer", "198.18.0.254:65000"}, `--bgp-asn: bgp: bad AS number "0": AS 0 is reserved`},
		{"bgp as_trans", []string{"run", "-i", "lo", "--bgp-asn", "23456", "--bgp-router-id", "198.18.0.1", "--bgp-peer", "198.18.0.254"}, "AS_TRANS"},
		{"bgp asn text", []string{"run", "-i", "lo", "--bgp-asn", "AS65001", "--bgp-router-id", "198.18.0.1", "--bgp-peer", "198.18.0.254"}, `bad AS number "AS65001": not a number`},
		{"bgp no router id", []string{"run", "-i", "lo", "--bgp-asn", "65001", "--bgp-peer", "198.18.0.254:65000"}, "--bgp-router-id is missing"},
		{"bgp router id 0", []string{"run", "-i", "lo", "--bgp-asn", "65001", "--bgp-router-id", "0.0.0.0", "--bgp-peer", "198.18.0.254"}, "must not be 0.0.0.0"},
		{"bgp router id v6", []string{"run", "-i", "lo", "--bgp-asn", "65001", "--bgp-router-id", "2001:db8::1", "--bgp-peer", "198.18.0.254"}, "IPv4 address"},
		{"bgp no peer", []string{"run", "-i", "lo", "--bgp-asn", "65001", "--bgp-router-id", "198.18.0.1"}, "no --bgp-peer"},
		{"bgp bad peer", []string{"run", "-i", "lo", "--bgp-asn", "65001", "--bgp-router-id", "198.18.0.1", "--bgp-peer", "router1:65000"}, `"router1" is not an IP address`},
		{"bgp peer asn", []string{"run", "-i", "lo", "--bgp-asn", "65001", "--bgp-router-id", "198.18.0.1", "--bgp-peer", "198.18.0.254:65535"}, "RFC 7300"},
		{"bgp peer without asn", []string{"run", "-i", "lo", "--bgp-peer", "198.18.0.254"}, "need --bgp-asn"},
		{"bgp hold time", []string{"run", "-i", "lo", "--bgp-asn", "65001", "--bgp-router-id", "198.18.0.1", "--bgp-peer", "198.18.0.254", "--bgp-hold-time", "1s"}, "3s..65535s"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := exec.Command(bin, c.args...).CombinedOutput()
			if err == nil {
				t.Fatalf("golvs %v succeeded:\n%s", c.args, out)
			}
			if !strings.Contains(string(out), c.want) {
				t.Fatalf("output %q does not mention %q", out, c.want)
			}
			if strings.Count(strings.TrimSpace(string(out)), "\n") > 2 {
				t.Fatalf("more than a short error:\n%s", out)
			}
		})
	}
}

// buildShared builds the binary into a directory other users can enter
// (t.TempDir's parents are private), for running it as another user.
func buildShared(t *testing.T) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "golvs-shared")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "golvs")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir, bin
}

// Without privileges, golvs run says so in one line.
func TestRunWithoutPrivileges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to run golvs as another user")
	}
	dir, bin := buildShared(t)
	cmd := exec.Command(bin, "run", "-i", "lo", "--control", filepath.Join(dir, "s"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("unprivileged golvs run started: %s", out)
	}
	if !strings.Contains(string(out), "permission denied") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Fatalf("want one line saying permission denied, got %q", out)
	}
}

// A client without permission on the control socket gets one clear line
// naming the socket.
func TestAdmPermissionDenied(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to run a client as another user")
	}
	dir, bin := buildShared(t)
	sock := filepath.Join(dir, "golvs.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.Chmod(sock, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "adm", "-L", "-n")
	cmd.Env = append(os.Environ(), "GOLVS_SOCKET="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("unprivileged adm succeeded: %s", out)
	}
	if !strings.Contains(string(out), "permission denied") || !strings.Contains(string(out), sock) {
		t.Fatalf("output %q does not say permission denied on %s", out, sock)
	}
	// And with no daemon at all: a clear line too.
	cmd = exec.Command(bin, "adm", "-L", "-n")
	cmd.Env = append(os.Environ(), "GOLVS_SOCKET="+filepath.Join(dir, "none.sock"))
	out, _ = cmd.CombinedOutput()
	if !strings.Contains(string(out), "no golvs director is running") {
		t.Fatalf("no daemon: %q", out)
	}
}

// Each mistake lab shows the failure, then the fix working.
func TestMistakeLabs(t *testing.T) {
	testutil.RequireNetns(t)
	bin := buildGolvs(t)
	cases := []struct {
		lab             string
		failure, fixed  string
		fixedAfterFixed string
	}{
		{"nat-wrong-gateway", "error: ", "THE FIX", "rs2\nrs1"},
		{"dr-no-arp-ignore", "(a real server!)", "THE FIX", "<- the director (golvs)\nrs2\nrs1"},
		{"tun-no-pmtu", "upload: FAILED", "THE FIX", "upload: 1048576 bytes arrived"},
	}
	for _, c := range cases {
		t.Run(c.lab, func(t *testing.T) {
			out, err := exec.Command(bin, "lab", c.lab, "--requests", "2", "--suffix", lab.RandomSuffix()).CombinedOutput()
			if err != nil {
				t.Fatalf("golvs lab %s: %v\n%s", c.lab, err, out)
			}
			s := string(out)
			i := strings.Index(s, c.fixed)
			if i < 0 {
				t.Fatalf("no fix shown:\n%s", s)
			}
			before, after := s[:i], s[i:]
			if !strings.Contains(before, c.failure) {
				t.Fatalf("the failure (%q) is not shown before the fix:\n%s", c.failure, s)
			}
			if !strings.Contains(after, c.fixedAfterFixed) || strings.Contains(after, c.failure) {
				t.Fatalf("after the fix, want %q and no %q:\n%s", c.fixedAfterFixed, c.failure, s)
			}
		})
	}
}

// --explain prints who is who, the path, and the live trace of the
// requests with the scheduler's reasoning.
func TestLabExplain(t *testing.T) {
	testutil.RequireNetns(t)
	bin := buildGolvs(t)
	out, err := exec.Command(bin, "lab", "nat", "--explain", "--requests", "1", "--scheduler", "wlc", "--suffix", lab.RandomSuffix()).CombinedOutput()
	if err != nil {
		t.Fatalf("golvs lab nat --explain: %v\n%s", err, out)
	}
	for _, want := range []string{
		"## Who is who", "VIP      198.18.0.100", "## One request and its reply (NAT)",
		"conn     miss: new connection", "sched    wlc", "chosen", "verdict  forwarded out int0",
		"int0 reply TCP 198.19.0.1", "verdict  forwarded out ext0",
	} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("explain output lacks %q:\n%s", want, out)
		}
	}
}

// golvs lab nat --scheduler S works for every scheduler, through the real
// data path: rr and wrr alternate, wlc spreads, sh and mh keep the one
// client on one real server, none refuses every connection.
func TestLabEveryScheduler(t *testing.T) {
	testutil.RequireNetns(t)
	bin := buildGolvs(t)
	for _, s := range sched.Names() {
		t.Run(s, func(t *testing.T) {
			out, err := exec.Command(bin, "lab", "nat", "--scheduler", s, "--requests", "6", "--suffix", lab.RandomSuffix()).CombinedOutput()
			if err != nil {
				t.Fatalf("golvs lab nat --scheduler %s: %v\n%s", s, err, out)
			}
			seen := map[string]int{}
			for _, b := range bodies(string(out)) {
				seen[b]++
			}
			switch s {
			case "none":
				if seen["rs1"]+seen["rs2"] != 0 {
					t.Fatalf("none scheduled connections: %v", seen)
				}
				return
			case "sh", "mh", "dh", "fo", "sed", "nq", "ovf", "lblc", "lblcr":
				// One client (sh, mh) or one VIP (dh, lblc, lblcr) hashes
				// to one server; fo and ovf pick the first of equal
				// weights; sed and nq see both servers idle between
				// sequential requests (closed conns are inactive) and
				// pick the first in list order each time.
				if len(seen) != 1 || seen["rs1"]+seen["rs2"] != 6 {
					t.Fatalf("%s spread the requests over %v", s, seen)
				}
			case "rr", "wrr", "wlc", "lc":
				// wlc and lc count the closed (inactive) conns, so they
				// alternate too.
				if seen["rs1"] != 3 || seen["rs2"] != 3 {
					t.Fatalf("%s: %v, want 3 and 3", s, seen)
				}
			default: // twos: random, every request answered
				if seen["rs1"]+seen["rs2"] != 6 {
					t.Fatalf("%s: %v, want 6 answers", s, seen)
				}
			}
		})
	}
}

// golvs lab nat --check: the lab's director health-checks its real
// servers from a keepalived.conf; golvs lab fail/heal stop and restart a
// real server's service and print the director's reaction as it happens.
func TestLabCheckFailHeal(t *testing.T) {
	testutil.RequireNetns(t)
	bin := buildGolvs(t)
	for _, c := range []struct {
		check   string
		inhibit bool
	}{{"http", false}, {"tcp", true}} {
		t.Run(c.check, func(t *testing.T) {
			suffix := lab.RandomSuffix()
			dir := labcmd.StateDir + suffix
			t.Cleanup(func() { cleanupKeptLab(t, dir) })
			args := []string{"lab", "nat", "--check", c.check, "--keep", "--suffix", suffix, "--requests", "4"}
			if c.inhibit {
				args = append(args, "--inhibit")
			}
			out, err := exec.Command(bin, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("golvs %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			if got := strings.Join(bodies(string(out)), " "); got != "rs2 rs1 rs2 rs1" {
				t.Fatalf("responses %q\n%s", got, out)
			}
			if !strings.Contains(string(out), "sorry_server 198.19.0.13 80") {
				t.Fatalf("no sorry server in the configuration:\n%s", out)
			}
			out, err = exec.Command(bin, "lab", "fail", "rs1", "--suffix", suffix).CombinedOutput()
			if err != nil {
				t.Fatalf("golvs lab fail: %v\n%s", err, out)
			}
			want := "Removing service 198.19.0.11:80 from VS"
			row := "-> 198.19.0.11:80"
			if c.inhibit {
				want = "Disabling service 198.19.0.11:80 of VS"
			}
			if !strings.Contains(string(out), want) {
				t.Fatalf("golvs lab fail: no %q:\n%s", want, out)
			}
			if c.inhibit != strings.Contains(string(out), row) {
				t.Fatalf("golvs lab fail: table (rs1 listed: %v):\n%s", c.inhibit, out)
			}
			if c.inhibit && !strings.Contains(string(out), "  -> 198.19.0.11:80               Masq    0") {
				t.Fatalf("rs1 not at weight 0:\n%s", out)
			}
			out, err = exec.Command(bin, "lab", "heal", "rs1", "--suffix", suffix).CombinedOutput()
			if err != nil {
				t.Fatalf("golvs lab heal: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), "service 198.19.0.11:80") || !strings.Contains(string(out), "  -> 198.19.0.11:80               Masq    1") {
				t.Fatalf("golvs lab heal:\n%s", out)
			}
		})
	}
}

// cleanupKeptLab removes one kept lab by its state file (never `golvs
// lab down`, which removes every lab).
func cleanupKeptLab(t *testing.T, dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return
	}
	var st labcmd.State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Errorf("lab state: %v", err)
		return
	}
	for _, pid := range st.Pids {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Signal(syscall.SIGKILL)
		}
	}
	lab.DeleteByNames(st.Namespaces)
	os.RemoveAll(dir)
}

// SIGHUP re-reads keepalived.conf: a bad file is refused whole with its
// file:line and the running table stays; a changed weight is applied;
// an unchanged file changes nothing.
func TestKeepalivedSIGHUP(t *testing.T) {
	testutil.RequireNetns(t)
	bin := buildGolvs(t)
	suffix := lab.RandomSuffix()
	dir := labcmd.StateDir + suffix
	t.Cleanup(func() { cleanupKeptLab(t, dir) })
	out, err := exec.Command(bin, "lab", "nat", "--check", "tcp", "--keep", "--suffix", suffix, "--requests", "4").CombinedOutput()
	if err != nil {
		t.Fatalf("golvs lab nat: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "state.json"))
	var st labcmd.State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	director := 0
	for _, pid := range st.Pids {
		cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cl), "\x00run\x00") {
			director = pid
		}
	}
	if director == 0 {
		t.Fatal("no director process")
	}
	conf := filepath.Join(dir, "keepalived.conf")
	good, _ := os.ReadFile(conf)
	list := func() string {
		out, err := exec.Command(bin, "adm", "-S", "-n").CombinedOutput()
		if err != nil {
			t.Fatalf("golvs adm: %v\n%s", err, out)
		}
		return string(out)
	}
	os.Setenv("GOLVS_SOCKET", st.Socket)
	defer os.Unsetenv("GOLVS_SOCKET")
	before := list()
	logPath := filepath.Join(dir, "director.log")
	hup := func(text, wantLog string) {
		t.Helper()
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(director, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			l, _ := os.ReadFile(logPath)
			if strings.Count(string(l), wantLog) > 0 {
				os.WriteFile(logPath, nil, 0o600) // the next wait starts afresh
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the director's log:\n%s", wantLog, l)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	bad := strings.Replace(string(good), "lvs_sched rr", "lvs_sched rr\n    lb_knd NAT", 1)
	hup(bad, conf+":4: unknown keyword \"lb_knd\" in virtual_server")
	if got := list(); got != before {
		t.Fatalf("a refused reload changed the table:\n%s\nwas\n%s", got, before)
	}
	hup(string(good), "reloaded")
	if got := list(); got != before {
		t.Fatalf("an unchanged reload changed the table:\n%s\nwas\n%s", got, before)
	}
	hup(strings.Replace(string(good), "weight 1", "weight 4", 1), "reloaded")
	if got := list(); !strings.Contains(got, "-r 198.19.0.11:80 -m -w 4") {
		t.Fatalf("weight change not applied:\n%s", got)
	}
}

// A SIGUSR2 successor gets the daemon's flags less --rules and --rule (it
// runs the configuration it takes over, and refuses them) and --takeover.
func TestTakeoverArgs(t *testing.T) {
	in := []string{"-i", "eth0:arp", "--rules", "/etc/r", "--rule=-A -t 1.2.3.4:80", "-rule", "-a x", "--takeover", "--rules=/x", "-q", "--vrrp-vip", "198.18.0.100"}
	want := []string{"-i", "eth0:arp", "-q", "--vrrp-vip", "198.18.0.100"}
	if got := takeoverArgs(in); !slices.Equal(got, want) {
		t.Fatalf("takeoverArgs(%q) = %q, want %q", in, got, want)
	}
}
