package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/golvs/golvs/lab"
)

func TestProxyConfigs(t *testing.T) {
	vip := netip.MustParseAddrPort("198.18.0.100:80")
	rss := []netip.AddrPort{netip.MustParseAddrPort("198.19.0.11:80"), netip.MustParseAddrPort("198.19.0.12:80")}
	h := haproxyConfig(vip, rss)
	for _, want := range []string{"mode tcp", "bind 198.18.0.100:80", "balance roundrobin",
		"server rs1 198.19.0.11:80", "server rs2 198.19.0.12:80", "timeout connect"} {
		if !strings.Contains(h, want) {
			t.Errorf("haproxy config lacks %q:\n%s", want, h)
		}
	}
	n := nginxConfig("/tmp/x", "/usr/lib/nginx/modules/ngx_stream_module.so", vip, rss)
	for _, want := range []string{"load_module /usr/lib/nginx/modules/ngx_stream_module.so;", "pid /tmp/x/nginx.pid;",
		"error_log /tmp/x/error.log", "stream {", "listen 198.18.0.100:80;", "server 198.19.0.11:80;",
		"server 198.19.0.12:80;", "proxy_pass golvsbench_rs;"} {
		if !strings.Contains(n, want) {
			t.Errorf("nginx config lacks %q:\n%s", want, n)
		}
	}
	if strings.Contains(n, "daemon") {
		t.Errorf("nginx config sets daemon (the command line does):\n%s", n)
	}
	if strings.Count(n, "{") != strings.Count(n, "}") {
		t.Errorf("nginx config braces do not balance:\n%s", n)
	}
	if n := nginxConfig("/tmp/x", "", vip, rss); strings.Contains(n, "load_module") {
		t.Errorf("built-in stream module loaded:\n%s", n)
	}
}

func TestStreamModuleFrom(t *testing.T) {
	has := func(p string) bool { return p == "/usr/lib/nginx/modules/ngx_stream_module.so" }
	none := func(string) bool { return false }
	if m, err := streamModuleFrom("configure arguments: --with-stream --with-http_ssl_module", none); err != nil || m != "" {
		t.Errorf("built in: %q, %v", m, err)
	}
	if m, err := streamModuleFrom("configure arguments: --modules-path=/usr/lib/nginx/modules --with-stream=dynamic", has); err != nil || m != "/usr/lib/nginx/modules/ngx_stream_module.so" {
		t.Errorf("dynamic: %q, %v", m, err)
	}
	if _, err := streamModuleFrom("configure arguments: --with-stream=dynamic", none); err == nil {
		t.Error("dynamic without the module file: no error")
	}
	if _, err := streamModuleFrom("configure arguments: --with-http_ssl_module", has); err == nil {
		t.Error("no stream module: no error")
	}
}

// TestPeersSkipped: a missing peer is a skip naming the package, never an
// error, and a present one is found.
func TestPeersSkipped(t *testing.T) {
	missing := peerFinder{
		look:        func(string) (string, error) { return "", errors.New("not found") },
		nginxStream: func(string) (string, error) { t.Fatal("nginx probed though missing"); return "", nil },
	}
	found, _, skips := missing.find()
	if len(found) != 0 {
		t.Errorf("found %v", found)
	}
	want := map[string]string{
		peerNFT: "apt-get install nftables", peerNetsniff: "apt-get install netsniff-ng",
		peerHAProxy: "apt-get install haproxy", peerNginx: "apt-get install nginx libnginx-mod-stream",
	}
	if len(skips) != len(want) {
		t.Fatalf("skips %v", skips)
	}
	for _, s := range skips {
		if !strings.Contains(s.Reason, want[s.Name]) || !strings.Contains(s.Reason, "not installed") {
			t.Errorf("%s: reason %q lacks %q", s.Name, s.Reason, want[s.Name])
		}
	}

	noModule := peerFinder{
		look:        func(b string) (string, error) { return "/usr/sbin/" + b, nil },
		nginxStream: func(string) (string, error) { return "", errors.New("nginx's stream module is not installed") },
	}
	found, _, skips = noModule.find()
	if len(found) != 3 || found[peerHAProxy] != "/usr/sbin/haproxy" || found[peerNginx] != "" {
		t.Errorf("found %v", found)
	}
	if len(skips) != 1 || skips[0].Name != peerNginx || !strings.Contains(skips[0].Reason, "libnginx-mod-stream") {
		t.Errorf("skips %v", skips)
	}

	all := peerFinder{
		look:        func(b string) (string, error) { return "/usr/sbin/" + b, nil },
		nginxStream: func(string) (string, error) { return "/m/ngx_stream_module.so", nil },
	}
	found, module, skips := all.find()
	if len(found) != 4 || len(skips) != 0 || module != "/m/ngx_stream_module.so" {
		t.Errorf("found %v, module %q, skips %v", found, module, skips)
	}
	r := &dpRun{rep: &DataplaneReport{}}
	refs := r.references(all)
	var names []string
	for _, ref := range refs {
		names = append(names, ref.name)
	}
	if got := strings.Join(names, ","); got != "generator-sink,kernel-forward,netio-ceiling,xdp-ceiling,nft-dnat,netsniff-ng" {
		t.Errorf("references %s", got)
	}
	if got := strings.Join(r.proxies(), ","); got != "haproxy-tcp,nginx-stream" {
		t.Errorf("proxies %s", got)
	}
}

// TestParseWrk reads the totals line of wrkScript among wrk's own output
// (as wrk 4.1 prints it) and refuses broken ones.
func TestParseWrk(t *testing.T) {
	out := `Running 2s test @ http://198.18.0.100:80/
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   112.35us   40.12us   2.31ms   95.10%
    Req/Sec     7.81k   312.45     8.30k    71.43%
  15543 requests in 2.00s, 1.33MB read
golvs-wrk requests=15543 duration_us=2000412 errors=3 p50_us=104 p99_us=287
Requests/sec:   7769.99
Transfer/sec:    680.57KB
`
	w, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if w.Requests != 15543 || w.Errors != 3 || w.Duration != 2000412*time.Microsecond || w.P50us != 104 || w.P99us != 287 {
		t.Fatalf("parsed %+v", w)
	}
	for _, bad := range []string{
		"",
		"golvs-wrk requests=1 duration_us=1 errors=0 p50_us=1",           // incomplete
		"golvs-wrk requests=1 duration_us=0 errors=0 p50_us=1 p99_us=1",  // no time
		"golvs-wrk requests=-1 duration_us=1 errors=0 p50_us=1 p99_us=1", // negative
		"golvs-wrk requests=1 duration_us=1 errors=0 p50_us=1 p99_us=1 x=2",
		"golvs-wrk requests 1",
	} {
		if _, err := parseWrk(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzParseWrk(f *testing.F) {
	f.Add("golvs-wrk requests=15543 duration_us=2000412 errors=3 p50_us=104 p99_us=287\n")
	f.Add("Running 2s test\ngolvs-wrk requests=1 duration_us=1 errors=0 p50_us=1 p99_us=1")
	f.Fuzz(func(t *testing.T, s string) {
		w, err := parseWrk(s)
		if err == nil && w.Duration <= 0 {
			t.Fatalf("accepted %q with duration %s", s, w.Duration)
		}
	})
}

// TestRealServerNginx starts a real server as the bench does, nginx in a
// namespace of its own, and asks it for its name and for the stream's
// bulk answer (Fetch checks the body against Content-Length); stopping it
// must end nginx. Without nginx, golvs's lab server stands in and the
// report says so once.
func TestRealServerNginx(t *testing.T) {
	cfg := rsNginxConfig("/tmp/d", "/tmp/root", "rs3", []int{80, 8080})
	for _, want := range []string{"worker_processes 1;", "pid /tmp/d/nginx.pid;", "listen 80 ", "listen 8080 ",
		`return 200 "rs3\n";`, "location /bytes/", "root /tmp/root;", "client_body_temp_path /tmp/d/client_body;"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("real server config lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Count(cfg, "{") != strings.Count(cfg, "}") {
		t.Errorf("real server config braces do not balance:\n%s", cfg)
	}
	if err := lab.RequireRoot(); err != nil {
		t.Skipf("skipping the servers' runs: %v", err)
	}
	ns, err := lab.NewNS("golvs-rs-" + lab.RandomSuffix())
	if err != nil {
		t.Skipf("skipping the servers' runs: no network namespace: %v", err)
	}
	defer ns.Delete()
	// Without nginx: golvs's lab server in this process, said once.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &dpRun{c: DataplaneConfig{StreamBytes: 3 << 20}, rep: &DataplaneReport{}}
	for _, port := range []int{9001, 9002} {
		if _, err := r.serveRS(ctx, ns, "rs4", netip.Addr{}, []int{port}); err != nil {
			t.Fatal(err)
		}
		resp, _, err := lab.GetPath(ns, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)), "/", 5*time.Second)
		if err != nil || resp.Err != nil || resp.Body != "rs4" {
			t.Errorf("stand-in on %d: %+v, %v; want the body rs4", port, resp, err)
		}
	}
	if len(r.rep.Notes) != 1 || !strings.Contains(r.rep.Notes[0], "nginx is not installed") {
		t.Errorf("stand-in notes %q, want one saying nginx is missing", r.rep.Notes)
	}
	ngx, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("skipping the nginx run: nginx is not installed (apt-get install nginx-light)")
	}
	r = &dpRun{c: DataplaneConfig{StreamBytes: 3 << 20}, rep: &DataplaneReport{}, rsNginx: ngx}
	defer func() { os.RemoveAll(r.rsRootDir) }()
	stop, err := r.serveRS(context.Background(), ns, "rs3", netip.Addr{}, []int{8080})
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort("127.0.0.1:8080")
	resp, _, err := lab.GetPath(ns, addr, "/", 5*time.Second)
	if err != nil || resp.Err != nil || resp.Body != "rs3" {
		t.Errorf("/: %+v, %v; want the body rs3", resp, err)
	}
	for _, n := range []int{streamWarmup, 3 << 20} {
		if got, _, err := lab.Fetch(ns, addr, fmt.Sprintf("/bytes/%d", n), 5*time.Second); err != nil || got != int64(n) {
			t.Errorf("/bytes/%d: %d bytes, %v", n, got, err)
		}
	}
	if got, _, err := lab.Fetch(ns, addr, "/bytes/5", 5*time.Second); err == nil {
		t.Errorf("/bytes/5 (no such answer): %d bytes, no error", got)
	}
	if len(r.rep.Notes) != 0 {
		t.Errorf("notes with nginx installed: %q", r.rep.Notes)
	}
	stop()
	err = ns.Do(func() error {
		c, err := net.DialTimeout("tcp4", addr.String(), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Error("nginx still listening after stop")
	}
}

func TestParseCurl(t *testing.T) {
	n, secs, err := parseCurl("golvs-curl 200 1073741824 0.512345\n")
	if err != nil || n != 1073741824 || secs != 0.512345 {
		t.Errorf("good line: %d, %v, %v", n, secs, err)
	}
	for _, c := range []struct{ out, want string }{
		{"golvs-curl 404 153 0.001\n", `status "404"`},
		{"golvs-curl 200 -5 0.1\n", `bad size "-5"`},
		{"golvs-curl 200 10 0\n", `bad time "0"`},
		{"golvs-curl 200 10 NaN\n", `bad time "NaN"`},
		{"golvs-curl 200 10\n", "bad totals"},
		{"curl: (7) Failed to connect\n", "printed no totals"},
	} {
		if _, _, err := parseCurl(c.out); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error with %q", c.out, err, c.want)
		}
	}
}

// FuzzParseCurl: whatever curl printed, an accepted line gives a length
// of zero or more and a time within the bound.
func FuzzParseCurl(f *testing.F) {
	f.Add("golvs-curl 200 1073741824 0.512345\n")
	f.Add("golvs-curl 000 0 0.000\n")
	f.Fuzz(func(t *testing.T, s string) {
		n, secs, err := parseCurl(s)
		if err == nil && (n < 0 || !(secs > 0) || secs > 2*streamTimeout.Seconds()) {
			t.Fatalf("accepted %q as %d bytes in %v s", s, n, secs)
		}
	})
}
