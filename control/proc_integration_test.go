package control

import (
	"bytes"
	"context"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golvs/golvs/lab"
)

// golvs adm --proc prints the kernel's files for a running director; the
// expected text is written by hand from the kernel's format strings (see
// ipvsadm/proc_test.go): 198.18.0.100 is C6120064, the real servers
// 198.19.0.11 and .12 are C613000B and C613000C, the client 198.18.0.10
// is C612000A.
func TestAdmProc(t *testing.T) {
	dm := startDaemon(t, 2)
	vip := lab.VIP.String() + ":80"
	adm(t, "", "-A", "-t", vip, "-s", "rr")
	adm(t, "", "-a", "-t", vip, "-r", lab.RIP(1).String()+":80", "-m")
	adm(t, "", "-a", "-t", vip, "-r", lab.RIP(2).String()+":80", "-m", "-w", "2")
	want := "IP Virtual Server version 1.2.1 (size=4096)\n" +
		"Prot LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n" +
		"TCP  C6120064:0050 rr  \n" +
		"  -> C613000C:0050      Masq    2      0          0         \n" +
		"  -> C613000B:0050      Masq    1      0          0         \n"
	if got := adm(t, "", "--proc", "ip_vs"); got != want {
		t.Fatalf("--proc ip_vs:\n%q\nwant\n%q", got, want)
	}
	wantStats := "   Total Incoming Outgoing         Incoming         Outgoing\n" +
		"   Conns  Packets  Packets            Bytes            Bytes\n" +
		"       0        0        0                0                0\n\n" +
		" Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n" +
		"       0        0        0                0                0\n"
	if got := adm(t, "", "--proc=ip_vs_stats"); got != wantStats {
		t.Fatalf("--proc ip_vs_stats:\n%q\nwant\n%q", got, wantStats)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := dm.d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := lab.Get(dm.topo.Client, netip.AddrPortFrom(lab.VIP, 80), 3, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	conns := adm(t, "", "--proc", "/proc/net/ip_vs_conn")
	lines := strings.Split(strings.TrimSuffix(conns, "\n"), "\n")
	if lines[0] != "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData" || len(lines) != 4 {
		t.Fatalf("--proc ip_vs_conn:\n%s", conns)
	}
	row := regexp.MustCompile(`^TCP C612000A [0-9A-F]{4} C6120064 0050 C613000[BC] 0050 [A-Z_]{4,11} *[ 0-9]{7}$`)
	for _, l := range lines[1:] {
		if !row.MatchString(l) {
			t.Errorf("ip_vs_conn line %q", l)
		}
	}
	// The totals moved: three conns, in hex.
	if got := adm(t, "", "--proc", "ip_vs_stats"); !strings.HasPrefix(strings.Split(got, "\n")[2], "       3 ") {
		t.Errorf("ip_vs_stats after 3 conns:\n%s", got)
	}
	// Bad names are refused with ipvsadm's status for a bad command line.
	var out, errb bytes.Buffer
	if code := AdmMain([]string{"--proc", "ip_vs_conn_sync"}, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "allowed: ip_vs, ip_vs_stats, ip_vs_conn") {
		t.Fatalf("--proc ip_vs_conn_sync: exit %d, %q", code, errb.String())
	}
}
