package control

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/lab"
)

// echoDaemon is startDaemon with a line echo service on port 7 of every
// real server, and the services VIP:80 (HTTP) and VIP:7 (echo), rr over
// every real server, NAT.
func echoDaemon(t *testing.T, realServers int, opts ...func(*Server)) *daemon {
	t.Helper()
	dm := startDaemonOn(t, testutil.NATLab(t, realServers), []int{80}, opts...)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for i, ns := range dm.topo.RS {
		testutil.EchoServe(t, ctx, ns, lab.RIP(i+1).String(), 7)
	}
	rules := ""
	for _, port := range []string{"80", "7"} {
		rules += "-A -t " + lab.VIP.String() + ":" + port + " -s rr\n"
		for i := range dm.topo.RS {
			rules += "-a -t " + lab.VIP.String() + ":" + port + " -r " + lab.RIP(i+1).String() + ":" + port + " -m\n"
		}
	}
	adm(t, rules, "-R")
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	if err := dm.d.WaitResolved(wctx); err != nil {
		t.Fatal(err)
	}
	return dm
}

// ipvsadm-restore's idiom, -C then the saved table, and the same with -D
// then -A/-a: IPVS keeps removed real servers in its trash while
// connections use them and revives them when they come back, so
// established connections live on. A restore of an unchanged table must
// not disturb one connection, with a request loop running throughout.
func TestFlushRestoreKeepsConnections(t *testing.T) {
	dm := echoDaemon(t, 2)
	echo := netip.AddrPortFrom(lab.VIP, 7)
	var conns []*testutil.EchoConn
	for i := 0; i < 8; i++ {
		conns = append(conns, testutil.DialEcho(t, dm.topo.Client, echo))
	}
	loop := testutil.StartRequests(dm.topo.Client, netip.AddrPortFrom(lab.VIP, 80), 2)
	saved := adm(t, "", "-S", "-n")
	before := adm(t, "", "-L", "-n")
	for i := 0; i < 5; i++ {
		loop.WaitOK(loop.OK.Load() + 5)
		adm(t, "-C\n"+saved, "-R")
		testutil.CheckEcho(t, conns, 5*time.Second, "after -C then -R")
	}
	// Counters move with the pings; compare the configuration.
	if after := adm(t, "", "-L", "-n"); configOnly(after) != configOnly(before) {
		t.Fatalf("table after the restores:\n%s\nwant\n%s", after, before)
	}
	// -D then -A/-a as separate commands: the connections stall while
	// the service is gone (as in IPVS, their packets are dropped) and
	// carry on once it is back.
	adm(t, "", "-D", "-t", echo.String())
	adm(t, "", "-A", "-t", echo.String(), "-s", "rr")
	for i := range dm.topo.RS {
		adm(t, "", "-a", "-t", echo.String(), "-r", lab.RIP(i+1).String()+":7", "-m")
	}
	testutil.CheckEcho(t, conns, 10*time.Second, "after -D then -A/-a")
	// And -d then -a of each real server.
	for i := range dm.topo.RS {
		rs := lab.RIP(i+1).String() + ":7"
		adm(t, "", "-d", "-t", echo.String(), "-r", rs)
		adm(t, "", "-a", "-t", echo.String(), "-r", rs, "-m")
	}
	testutil.CheckEcho(t, conns, 10*time.Second, "after -d then -a")
	loop.End(t)
}

// configOnly keeps the service and real server columns of -L -n.
func configOnly(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		if len(f) > 4 {
			f = f[:4]
		}
		out = append(out, strings.Join(f, " "))
	}
	return strings.Join(out, "\n")
}

// A rules file that flushes and then adds mark rules ends with those mark
// rules (they were applied before the flush and lost).
func TestRestoreFlushThenMarks(t *testing.T) {
	startDaemon(t, 2)
	rules := "-C\n" +
		"--add-mark -f 1 --mark-proto tcp --mark-dst 198.18.0.100/32 --mark-ports 80,443\n" +
		"-A -f 1 -s rr\n" +
		"-a -f 1 -r 198.19.0.11:0 -m -w 1\n"
	adm(t, rules, "-R")
	got := adm(t, "", "-S", "-n")
	want := "--add-mark -f 1 --mark-proto tcp --mark-dst 198.18.0.100/32 --mark-ports 80,443\n" +
		"-A -f 1 -s rr\n-a -f 1 -r 198.19.0.11:0 -m -w 1\n"
	if got != want {
		t.Fatalf("-S after the restore:\n%s\nwant\n%s", got, want)
	}
	// A mark rule, then -C in the same file: the flush removes it.
	adm(t, "--add-mark -f 2 --mark-dst 198.18.0.101/32\n-C\n-A -t 198.18.0.100:80 -s rr\n", "-R")
	if got := adm(t, "", "-S", "-n"); got != "-A -t 198.18.0.100:80 -s rr\n" {
		t.Fatalf("-S after mark, -C, -A:\n%s", got)
	}
}
