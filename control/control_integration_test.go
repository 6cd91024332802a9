package control

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/lab"
)

// daemon is a director plus control socket inside a NAT lab.
type daemon struct {
	topo *lab.Topology
	d    *director.Director
	srv  *Server
}

func startDaemon(t *testing.T, realServers int) *daemon {
	t.Helper()
	return startDaemonOn(t, testutil.NATLab(t, realServers), []int{80})
}

// startDaemonOn starts a daemon in topo, with lab servers on ports; opts
// set the control server's limits before it serves.
func startDaemonOn(t *testing.T, topo *lab.Topology, ports []int, opts ...func(*Server)) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	for i, ns := range topo.RS {
		if _, err := lab.Serve(ctx, ns, fmt.Sprintf("rs%d", i+1), ports, nil); err != nil {
			cancel()
			t.Fatal(err)
		}
	}
	dm := &daemon{topo: topo}
	err := topo.Director.Do(func() error {
		var err error
		dm.d, err = director.New(director.Config{
			Interfaces: []director.Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}},
			Workers:    2, FixHost: true,
			Conntrack: conntrack.Config{Tick: 100 * time.Millisecond},
		})
		return err
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	dm.srv = NewServer(dm.d)
	for _, o := range opts {
		o(dm.srv)
	}
	sock := filepath.Join(t.TempDir(), "golvs.sock")
	if err := dm.srv.Listen(sock); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Setenv("GOLVS_SOCKET", sock)
	done := make(chan struct{})
	go dm.srv.Serve(ctx)
	go func() { defer close(done); _ = dm.d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return dm
}

// adm runs golvs adm with args and returns stdout, failing on an error.
func adm(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := AdmMain(args, strings.NewReader(stdin), &out, &errb); code != 0 {
		t.Fatalf("golvs adm %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
	}
	return out.String()
}

// The seed sequence of a classic tutorial, verbatim, through the daemon.
func TestTutorialSequence(t *testing.T) {
	dm := startDaemon(t, 2)
	vip := lab.VIP.String() + ":80"
	adm(t, "", "-A", "-t", vip, "-s", "rr")
	adm(t, "", "-a", "-t", vip, "-r", lab.RIP(1).String()+":80", "-m")
	adm(t, "", "-a", "-t", vip, "-r", lab.RIP(2).String()+":80", "-m")
	first := adm(t, "", "-L", "-n")
	want := "IP Virtual Server version 1.2.1 (size=4096)\n" +
		"Prot LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
		"TCP  198.18.0.100:80 rr\n" +
		"  -> 198.19.0.11:80               Masq    1      0          0         \n" +
		"  -> 198.19.0.12:80               Masq    1      0          0         \n"
	if first != want {
		t.Fatalf("-L -n:\n%q\nwant\n%q", first, want)
	}
	adm(t, "", "-E", "-t", vip, "-s", "wrr")
	adm(t, "", "-e", "-t", vip, "-r", lab.RIP(1).String()+":80", "-m", "-w", "2")
	before := adm(t, "", "-L", "-n")
	saved := adm(t, "", "-S", "-n")
	wantSave := "-A -t 198.18.0.100:80 -s wrr\n-a -t 198.18.0.100:80 -r 198.19.0.11:80 -m -w 2\n-a -t 198.18.0.100:80 -r 198.19.0.12:80 -m -w 1\n"
	if saved != wantSave {
		t.Fatalf("-S -n:\n%q\nwant\n%q", saved, wantSave)
	}
	adm(t, "", "-C")
	if got := adm(t, "", "-L", "-n"); strings.Contains(got, "TCP") {
		t.Fatalf("-C left services:\n%s", got)
	}
	adm(t, saved, "-R")
	if after := adm(t, "", "-L", "-n"); after != before {
		t.Fatalf("after -R:\n%s\nwant\n%s", after, before)
	}
	// Traffic follows the restored table: wrr 2:1.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := dm.d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := lab.Get(dm.topo.Client, netip.AddrPortFrom(lab.VIP, 80), 9, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, r := range resp {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		n[r.Body]++
	}
	if n["rs1"] != 6 || n["rs2"] != 3 {
		t.Fatalf("wrr 2:1 over 9 requests: %v", n)
	}
	stats := adm(t, "", "-L", "-n", "--stats")
	if !strings.Contains(stats, "TCP  198.18.0.100:80                     9") {
		t.Fatalf("--stats does not count 9 conns:\n%s", stats)
	}
}

// A bad line rejects the whole restore, names the line, and leaves the
// running table untouched; errors carry ipvsadm's words and statuses.
func TestRestoreAtomicAndErrors(t *testing.T) {
	startDaemon(t, 2)
	vip := lab.VIP.String() + ":80"
	adm(t, "", "-A", "-t", vip, "-s", "rr")
	before := adm(t, "", "-L", "-n")
	bad := "-A -t 198.18.0.100:81 -s wlc\n-a -t 198.18.0.100:81 -r 198.19.0.11:80 -m\n-a -t 198.18.0.100:81 -r 198.19.0.11:80 -m -w 70000\n"
	var out, errb bytes.Buffer
	code := AdmMain([]string{"-R"}, strings.NewReader(bad), &out, &errb)
	if code == 0 || !strings.Contains(errb.String(), "line 3") || !strings.Contains(errb.String(), "illegal weight specified") {
		t.Fatalf("bad restore: exit %d, %q", code, errb.String())
	}
	if after := adm(t, "", "-L", "-n"); after != before {
		t.Fatalf("a failed restore changed the table:\n%s", after)
	}
	cases := []struct {
		args   []string
		status int
		msg    string
	}{
		{[]string{"-A", "-t", vip, "-s", "rr"}, 255, "Service already exists"},
		{[]string{"-D", "-t", "198.18.0.100:99"}, 255, "No such service"},
		{[]string{"-a", "-t", "198.18.0.100:99", "-r", "198.19.0.11:80", "-m"}, 255, "Service not defined"},
		{[]string{"-d", "-t", vip, "-r", "198.19.0.99:80"}, 255, "No such destination"},
		{[]string{"-A", "-t", "198.18.0.100:82", "-s", "fastest"}, 255, "Scheduler or persistence engine not found"},
		{[]string{"-a", "-t", vip, "-r", "198.19.0.11:80", "-m", "-y", "10"}, 255, "Numerical result out of range"},
		{[]string{"-n", "-L"}, 255, "Try `ipvsadm -h'"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := AdmMain(c.args, strings.NewReader(""), &out, &errb)
		if code != c.status || !strings.Contains(errb.String(), c.msg) {
			t.Errorf("golvs adm %s: exit %d %q, want %d %q", strings.Join(c.args, " "), code, errb.String(), c.status, c.msg)
		}
	}
}

// Scheduler, weights and real servers change on a live service while a
// client keeps connecting: no connection fails.
func TestLiveChangesLoseNothing(t *testing.T) {
	dm := startDaemon(t, 3)
	vip := lab.VIP.String() + ":80"
	adm(t, "", "-A", "-t", vip, "-s", "rr")
	adm(t, "", "-a", "-t", vip, "-r", lab.RIP(1).String()+":80", "-m")
	adm(t, "", "-a", "-t", vip, "-r", lab.RIP(2).String()+":80", "-m")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := dm.d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	var ok, failed atomic.Int64
	var mu sync.Mutex
	var firstErr error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				rs, err := lab.Get(dm.topo.Client, netip.AddrPortFrom(lab.VIP, 80), 1, 5*time.Second)
				if err == nil && rs[0].Err == nil {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("%v %v", err, rs)
				}
				mu.Unlock()
			}
		}()
	}
	waitFor := func(n int64) {
		deadline := time.Now().Add(30 * time.Second)
		for ok.Load() < n && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	steps := [][]string{
		{"-E", "-t", vip, "-s", "wrr"},
		{"-e", "-t", vip, "-r", lab.RIP(1).String() + ":80", "-m", "-w", "3"},
		{"-a", "-t", vip, "-r", lab.RIP(3).String() + ":80", "-m", "-w", "2"},
		{"-E", "-t", vip, "-s", "wlc"},
		{"-e", "-t", vip, "-r", lab.RIP(2).String() + ":80", "-m", "-w", "0"}, // quiesce rs2
		{"-E", "-t", vip, "-s", "mh"},
	}
	var done int64 = 50
	for _, s := range steps {
		waitFor(done)
		adm(t, "", s...)
		done += 50
	}
	// Drain the quiesced rs2 as an operator would, then remove it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var active int32 = -1
		for _, sv := range dm.d.Snapshot().List {
			for _, d := range sv.Dests {
				if d.Addr == lab.RIP(2) {
					active = d.ActiveConns()
				}
			}
		}
		if active == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	adm(t, "", "-d", "-t", vip, "-r", lab.RIP(2).String()+":80")
	waitFor(done + 50)
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d connections failed during live changes; first: %v", failed.Load(), failed.Load()+ok.Load(), firstErr)
	}
	t.Logf("%d connections, none failed, across %d live changes", ok.Load(), len(steps)+1)
}

// Firewall-mark services fed by golvs's own mark rules: the classic
// "iptables ... -m multiport --dports 80,443 -j MARK --set-mark 1".
func TestFWMarkService(t *testing.T) {
	dm := startDaemonOn(t, testutil.NATLab(t, 2), []int{80, 443})
	adm(t, "", "--add-mark", "-f", "1", "--mark-proto", "tcp", "--mark-dst", lab.VIP.String(), "--mark-ports", "80,443")
	adm(t, "", "-A", "-f", "1", "-s", "rr")
	adm(t, "", "-a", "-f", "1", "-r", lab.RIP(1).String(), "-m")
	adm(t, "", "-a", "-f", "1", "-r", lab.RIP(2).String(), "-m")
	saved := adm(t, "", "-S", "-n")
	want := "--add-mark -f 1 --mark-proto tcp --mark-dst 198.18.0.100/32 --mark-ports 80,443\n" +
		"-A -f 1 -s rr\n-a -f 1 -r 198.19.0.11:0 -m -w 1\n-a -f 1 -r 198.19.0.12:0 -m -w 1\n"
	if saved != want {
		t.Fatalf("-S:\n%s\nwant\n%s", saved, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := dm.d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	for _, port := range []uint16{80, 443} {
		resp, err := lab.Get(dm.topo.Client, netip.AddrPortFrom(lab.VIP, port), 4, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]int{}
		for _, r := range resp {
			if r.Err != nil {
				t.Fatalf("port %d: %v", port, r.Err)
			}
			if r.Remote.Port() != port {
				t.Fatalf("answered from %s", r.Remote)
			}
			n[r.Body]++
		}
		if n["rs1"] != 2 || n["rs2"] != 2 {
			t.Fatalf("port %d: %v, want rr 2/2", port, n)
		}
	}
	// Port 81 carries no mark: nothing answers.
	if rs, _ := lab.Get(dm.topo.Client, netip.AddrPortFrom(lab.VIP, 81), 1, time.Second); rs[0].Err == nil {
		t.Fatal("an unmarked port was balanced")
	}
	adm(t, "", "-C")
	if got := adm(t, "", "-S", "-n"); got != "" {
		t.Fatalf("-C left %q", got)
	}
	adm(t, saved, "-R")
	if got := adm(t, "", "-S", "-n"); got != saved {
		t.Fatalf("-R round trip:\n%s\nwant\n%s", got, saved)
	}
}

// The tutorial sequence over IPv6 (a dual-stack lab): the listing and
// save formats of IPv6 services as ipvsadm prints them (spec §6.5, §6.6:
// [addr]:port, -M as a prefix length, a mask shown only when not 128, an
// IPv6 fwmark service with -6), a restore, and persistent traffic: one
// client network, one real server.
func TestTutorialSequence6(t *testing.T) {
	testutil.RequireNetns(t)
	topo, err := lab.BuildNAT(lab.Options{Suffix: lab.RandomSuffix(), RealServers: 2, IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(topo.Close)
	dm := startDaemonOn(t, topo, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for i, ns := range topo.RS {
		if _, err := lab.Serve6(ctx, ns, fmt.Sprintf("rs%d", i+1), []int{80}, nil); err != nil {
			t.Fatal(err)
		}
	}
	vip := "[2001:db8:18::100]:80"
	adm(t, "", "-A", "-t", vip, "-s", "wrr", "-p", "300", "-M", "64")
	adm(t, "", "-a", "-t", vip, "-r", "[2001:db8:19::11]:80", "-m", "-w", "2")
	adm(t, "", "-a", "-t", vip, "-r", "[2001:db8:19::12]:80", "-m")
	adm(t, "", "-A", "-f", "7", "-6", "-s", "rr")
	adm(t, "", "--add-mark", "-f", "7", "--mark-proto", "tcp", "--mark-dst", "2001:db8:18::200/128", "--mark-ports", "80")
	adm(t, "", "-a", "-f", "7", "-6", "-r", "[2001:db8:19::11]:0", "-m")
	want := "IP Virtual Server version 1.2.1 (size=4096)\n" +
		"Prot LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
		"TCP  [2001:db8:18::100]:80 wrr persistent 300 mask 64\n" +
		"  -> [2001:db8:19::11]:80         Masq    2      0          0         \n" +
		"  -> [2001:db8:19::12]:80         Masq    1      0          0         \n" +
		"FWM  7 IPv6 rr\n" +
		"  -> [2001:db8:19::11]:0          Masq    1      0          0         \n"
	if got := adm(t, "", "-L", "-n"); got != want {
		t.Fatalf("-L -n:\n%q\nwant\n%q", got, want)
	}
	saved := adm(t, "", "-S", "-n")
	for _, line := range []string{
		"-A -t [2001:db8:18::100]:80 -s wrr -p 300 -M 64\n",
		"-a -t [2001:db8:18::100]:80 -r [2001:db8:19::11]:80 -m -w 2\n",
		"-A -f 7 -6 -s rr\n",
		"--add-mark -f 7 --mark-proto tcp --mark-dst 2001:db8:18::200/128 --mark-ports 80\n",
	} {
		if !strings.Contains(saved, line) {
			t.Fatalf("-S -n lacks %q:\n%s", line, saved)
		}
	}
	before := adm(t, "", "-L", "-n")
	adm(t, "", "-C")
	adm(t, saved, "-R")
	if after := adm(t, "", "-L", "-n"); after != before {
		t.Fatalf("after -R:\n%s\nwant\n%s", after, before)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	if err := dm.d.WaitResolved(wctx); err != nil {
		t.Fatal(err)
	}
	resp, err := lab.Get(dm.topo.Client, netip.MustParseAddrPort(vip), 6, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first := ""
	for _, r := range resp {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		if first == "" {
			first = r.Body
		}
		if r.Body != first {
			t.Fatalf("persistence: the client's /64 went to %s and %s", first, r.Body)
		}
	}
	conns := adm(t, "", "-L", "-n", "-c")
	if !strings.Contains(conns, "[2001:db8:18::10]:") || !strings.Contains(conns, "[2001:db8:18::100]:80") || !strings.Contains(conns, "[2001:db8:18::]:0") {
		t.Fatalf("-L -n -c does not list the IPv6 connections and their template:\n%s", conns)
	}
}
