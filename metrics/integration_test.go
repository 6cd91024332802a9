package metrics

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/procfs"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
	"github.com/golvs/golvs/lab"
)

// monitored is a NAT lab with a director, its control server, and the
// metrics endpoint listening on the director namespace's loopback.
type monitored struct {
	topo   *lab.Topology
	d      *director.Director
	srv    *control.Server
	client *http.Client // dials inside the director namespace
	url    string
	ctx    context.Context
}

func startMonitored(t *testing.T) *monitored {
	t.Helper()
	topo := testutil.NATLab(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	m := &monitored{topo: topo, ctx: ctx}
	for i, ns := range topo.RS {
		if _, err := lab.Serve(ctx, ns, fmt.Sprintf("rs%d", i+1), []int{80, 8080}, []int{53}); err != nil {
			cancel()
			t.Fatal(err)
		}
	}
	var ln net.Listener
	err := topo.Director.Do(func() error {
		var err error
		m.d, err = director.New(director.Config{
			Interfaces: []director.Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}},
			Workers:    2, FixHost: true,
			Conntrack: conntrack.Config{Tick: 100 * time.Millisecond, MaxEntries: 4096},
		})
		if err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	m.srv = control.NewServer(m.d)
	reg, err := Registry(New(m.srv, nil))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ms := ServeOn(ln, Handler(reg, t.Logf), t.Logf)
	m.url = "http://" + ln.Addr().String() + Path
	m.client = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: nsDialer(topo.Director)}}
	done := make(chan struct{})
	served := make(chan struct{})
	go func() { defer close(done); _ = m.d.Run(ctx) }()
	go func() { defer close(served); _ = ms.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done; <-served })
	return m
}

// nsDialer dials TCP from inside ns.
func nsDialer(ns *lab.NS) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// reading is what the director says of itself, outside the metrics path:
// the values every exporter must agree with.
type reading struct {
	tot     ipvs.StatsSnapshot
	svcSum  ipvs.StatsSnapshot
	dests   map[string][3]float64 // node_exporter backend labels -> active, inactive, weight
	drops   [director.NumCounters]uint64
	entries int64
}

func read(d *director.Director) reading {
	r := reading{tot: d.Total.Snapshot(), dests: map[string][3]float64{}, drops: d.Drops.Get(), entries: d.CT.Stats().Entries}
	for _, sv := range d.Snapshot().List {
		x := sv.Stats.Snapshot()
		r.svcSum.Conns += x.Conns
		r.svcSum.InPkts += x.InPkts
		r.svcSum.OutPkts += x.OutPkts
		r.svcSum.InBytes += x.InBytes
		r.svcSum.OutBytes += x.OutBytes
		for _, dd := range sv.Dests {
			key := strings.Join(BackendLabels(sv.Config.ServiceKey, netip.AddrPortFrom(dd.Addr, dd.Port)), "|")
			r.dests[key] = [3]float64{float64(dd.ActiveConns()), float64(dd.InactConns()), float64(dd.Weight())}
		}
	}
	return r
}

func backendKey(l map[string]string) string {
	return strings.Join([]string{l["local_address"], l["local_port"], l["remote_address"], l["remote_port"], l["proto"], l["local_mark"]}, "|")
}

// writeProcRoot writes the three files into root/net as --proc-dir does.
func writeProcRoot(t *testing.T, srv *control.Server, root string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range ipvsadm.ProcFiles {
		f, err := os.Create(filepath.Join(root, "net", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.WriteProc(f, name); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

// After real traffic through the director (TCP and UDP NAT services and a
// fwmark service), /metrics parsed by the Prometheus text parser carries
// node_exporter's IPVS families with golvs's own counters; the /proc files
// parsed by prometheus/procfs carry the same numbers; and node_exporter
// itself, pointed at the files with --path.procfs, exports exactly the
// node_ipvs_* families golvs serves.
func TestMetricsAndProcAfterTraffic(t *testing.T) {
	m := startMonitored(t)
	vip := lab.VIP.String()
	rules := fmt.Sprintf(`-A -t %[1]s:80 -s rr
-a -t %[1]s:80 -r %[2]s:80 -m -w 1
-a -t %[1]s:80 -r %[3]s:80 -m -w 3
-A -u %[1]s:53 -s rr
-a -u %[1]s:53 -r %[2]s:53 -m -w 1
-a -u %[1]s:53 -r %[3]s:53 -m -w 1
--add-mark -f 7 --mark-proto tcp --mark-dst %[1]s --mark-ports 8080
-A -f 7 -s wrr
-a -f 7 -r %[2]s:8080 -m -w 2
`, vip, lab.RIP(1), lab.RIP(2))
	if err := m.srv.Restore(rules); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(m.ctx, 20*time.Second)
	defer cancel()
	if err := m.d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := lab.GetParallel(m.topo.Client, netip.AddrPortFrom(lab.VIP, 80), 120, 4, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range resp {
		if r.Err != nil {
			t.Fatalf("request %d: %v", i, r.Err)
		}
	}
	if resp, err = lab.Get(m.topo.Client, netip.AddrPortFrom(lab.VIP, 8080), 6, 10*time.Second); err != nil || resp[5].Err != nil {
		t.Fatalf("fwmark service: %v %v", err, resp)
	}
	for i := 0; i < 4; i++ {
		if _, _, err := lab.UDPAsk(m.topo.Client, netip.AddrPortFrom(lab.VIP, 53), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	root := t.TempDir()
	writeProcRoot(t, m.srv, root)
	ne := startNodeExporter(t, m, root)
	// The traffic's last packets (FINs, ACKs) may still be crossing: take
	// a reading, export, read again, and judge only a round where nothing
	// moved in between. The conns' timeouts are minutes, so such a round
	// comes as soon as the packets stop.
	var before reading
	var fams, neFams map[string]*dto.MetricFamily
	var stats procfs.IPVSStats
	var backends []procfs.IPVSBackendStatus
	for round := 0; ; round++ {
		if round == 100 {
			t.Fatal("the director's counters never stood still for one scrape")
		}
		before = read(m.d)
		writeProcRoot(t, m.srv, root)
		fams = scrape(t, m.client, m.url)
		if ne != "" {
			neFams = scrape(t, m.client, ne)
		}
		fs, err := procfs.NewFS(root)
		if err != nil {
			t.Fatal(err)
		}
		if stats, err = fs.IPVSStats(); err != nil {
			t.Fatalf("procfs IPVSStats: %v", err)
		}
		if backends, err = fs.IPVSBackendStatus(); err != nil {
			t.Fatalf("procfs IPVSBackendStatus: %v", err)
		}
		if reflect.DeepEqual(before, read(m.d)) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if before.tot.Conns < 120+6+4 || before.tot != before.svcSum {
		t.Fatalf("director totals %+v, services' sum %+v: want equal, at least %d conns", before.tot, before.svcSum, 130)
	}

	// /metrics: node_exporter's families, golvs's numbers.
	checkNodeExporterFamilies(t, fams)
	for name, want := range map[string]uint64{
		"node_ipvs_connections_total":      before.tot.Conns,
		"node_ipvs_incoming_packets_total": before.tot.InPkts,
		"node_ipvs_outgoing_packets_total": before.tot.OutPkts,
		"node_ipvs_incoming_bytes_total":   before.tot.InBytes,
		"node_ipvs_outgoing_bytes_total":   before.tot.OutBytes,
	} {
		if got := value(fams[name].GetMetric()[0]); got != float64(want) {
			t.Errorf("%s = %v, director says %d", name, got, want)
		}
	}
	for i, name := range []string{"node_ipvs_backend_connections_active", "node_ipvs_backend_connections_inactive", "node_ipvs_backend_weight"} {
		got := map[string]float64{}
		for _, mt := range fams[name].GetMetric() {
			got[backendKey(labelMap(mt))] = value(mt)
		}
		if len(got) != len(before.dests) || len(got) != 5 {
			t.Errorf("%s: %d series, director has %d dests (want 5)", name, len(got), len(before.dests))
		}
		for k, v := range before.dests {
			if got[k] != v[i] {
				t.Errorf("%s{%s} = %v, director says %v", name, k, got[k], v[i])
			}
		}
	}
	if _, ok := before.dests["|0|"+lab.RIP(1).String()+"|8080|FWM|00000007"]; !ok {
		t.Errorf("no fwmark backend among %v", before.dests)
	}
	for _, mt := range fams["golvs_drops_total"].GetMetric() {
		cause := labelMap(mt)["cause"]
		for i, n := range director.CounterNames {
			if n == cause && value(mt) != float64(before.drops[i]) {
				t.Errorf("golvs_drops_total{cause=%q} = %v, director says %d", cause, value(mt), before.drops[i])
			}
		}
	}
	if n := len(fams["golvs_drops_total"].GetMetric()); n != director.NumCounters {
		t.Errorf("golvs_drops_total has %d causes, director has %d", n, director.NumCounters)
	}
	if got := value(fams["golvs_conntrack_entries"].GetMetric()[0]); got != float64(before.entries) || got == 0 {
		t.Errorf("golvs_conntrack_entries = %v, director says %d", got, before.entries)
	}
	if got := value(fams["golvs_conntrack_limit"].GetMetric()[0]); got != 4096 {
		t.Errorf("golvs_conntrack_limit = %v, want 4096", got)
	}

	// /proc files through prometheus/procfs: the same numbers.
	if want := (procfs.IPVSStats{Connections: before.tot.Conns, IncomingPackets: before.tot.InPkts, OutgoingPackets: before.tot.OutPkts,
		IncomingBytes: before.tot.InBytes, OutgoingBytes: before.tot.OutBytes}); stats != want {
		t.Errorf("procfs ip_vs_stats %+v, director says %+v", stats, want)
	}
	if len(backends) != len(before.dests) {
		t.Errorf("procfs reads %d backends, director has %d", len(backends), len(before.dests))
	}
	for _, b := range backends {
		local := ""
		if b.LocalAddress != nil {
			local = b.LocalAddress.String()
		}
		key := strings.Join([]string{local, fmt.Sprint(b.LocalPort), b.RemoteAddress.String(), fmt.Sprint(b.RemotePort), b.Proto, b.LocalMark}, "|")
		v, ok := before.dests[key]
		if !ok || float64(b.ActiveConn) != v[0] || float64(b.InactConn) != v[1] || float64(b.Weight) != v[2] {
			t.Errorf("procfs backend %s: active %d inactive %d weight %d; director says %v (known %v)", key, b.ActiveConn, b.InactConn, b.Weight, v, ok)
		}
	}
	// ip_vs_conn: one line per entry of the table, under the header.
	b, err := os.ReadFile(filepath.Join(root, "net", "ip_vs_conn"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if lines[0]+"\n" != ipvsadm.ProcConnHeader || int64(len(lines)-1) != before.entries {
		t.Errorf("ip_vs_conn: header %q, %d lines; table holds %d", lines[0], len(lines)-1, before.entries)
	}

	// node_exporter on the files: its node_ipvs_* families are golvs's.
	if ne == "" {
		return
	}
	compared := 0
	for name, want := range neFams {
		if !strings.HasPrefix(name, "node_ipvs_") {
			continue
		}
		compared++
		if got := fams[name]; got == nil || canon(got) != canon(want) {
			t.Errorf("node_exporter's %s:\n%s\ngolvs's:\n%s", name, canon(want), canon(got))
		}
	}
	for _, want := range nodeExporterIPVS {
		if neFams[want.name] == nil {
			t.Errorf("node_exporter did not export %s from golvs's /proc files", want.name)
		}
	}
	t.Logf("node_exporter and golvs agree on %d node_ipvs_* families, e.g.\n%s", compared, canon(neFams["node_ipvs_backend_weight"]))
}

// canon renders a family as sorted text lines for comparison.
func canon(f *dto.MetricFamily) string {
	if f == nil {
		return "<none>"
	}
	lines := []string{fmt.Sprintf("# %s %s %q", f.GetName(), f.GetType(), f.GetHelp())}
	for _, m := range f.GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
		}
		sort.Strings(ls)
		lines = append(lines, fmt.Sprintf("{%s} %v", strings.Join(ls, ","), value(m)))
	}
	sort.Strings(lines[1:])
	return strings.Join(lines, "\n")
}

// startNodeExporter runs Debian's prometheus-node-exporter with only its
// ipvs collector, in the director's namespace, reading the procfs root
// golvs writes; it returns its metrics URL, or "" (that comparison is
// skipped, with a log line) when the package is not installed.
func startNodeExporter(t *testing.T, m *monitored, root string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus-node-exporter")
	if err != nil {
		if bin, err = exec.LookPath("node_exporter"); err != nil {
			t.Log("prometheus-node-exporter is not installed (.ci/run installs it): the comparison with node_exporter is skipped")
			return ""
		}
	}
	var addr string
	var cmd *exec.Cmd
	err = m.topo.Director.Do(func() error {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr = l.Addr().String()
		l.Close()
		// Started from this thread, the process lives in the namespace.
		cmd = exec.Command(bin, "--path.procfs="+root, "--collector.disable-defaults", "--collector.ipvs",
			"--web.listen-address="+addr, "--log.level=warn")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		return cmd.Start()
	})
	if err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	url := "http://" + addr + "/metrics"
	for i := 0; ; i++ {
		resp, err := m.client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return url
			}
		}
		select {
		case <-exited:
			t.Fatalf("%s exited: %v", bin, cmd.ProcessState)
		case <-time.After(100 * time.Millisecond):
		}
		if i == 600 {
			t.Fatalf("%s did not answer on %s within a minute: %v", bin, addr, err)
		}
	}
}

// --proc-dir: the files are there when StartProcDir returns, rewritten
// each period without a torn or temporary file showing, and gone when
// the director stops.
func TestProcDir(t *testing.T) {
	m := startMonitored(t)
	if err := m.srv.Restore(fmt.Sprintf("-A -t %s:80 -s rr\n-a -t %[1]s:80 -r %s:80 -m\n", lab.VIP, lab.RIP(1))); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "golvs-proc")
	ctx, cancel := context.WithCancel(m.ctx)
	defer cancel()
	done, err := m.srv.StartProcDir(ctx, root, 50*time.Millisecond, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := procfs.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := fs.IPVSBackendStatus()
	if err != nil || len(bs) != 1 || bs[0].Weight != 1 || bs[0].RemoteAddress.String() != lab.RIP(1).String() {
		t.Fatalf("backends %+v, %v", bs, err)
	}
	// A change shows up within a few periods; every read in between sees a
	// whole file.
	if err := m.srv.Exec([]string{"-e", "-t", lab.VIP.String() + ":80", "-r", lab.RIP(1).String() + ":80", "-m", "-w", "7"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		bs, err := fs.IPVSBackendStatus()
		if err != nil || len(bs) != 1 {
			t.Fatalf("read %d: %+v, %v", i, bs, err)
		}
		if _, err := fs.IPVSStats(); err != nil {
			t.Fatalf("read %d: ip_vs_stats: %v", i, err)
		}
		if bs[0].Weight == 7 {
			break
		}
		if i == 2000 {
			t.Fatal("the weight change never reached net/ip_vs")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	left, _ := os.ReadDir(filepath.Join(root, "net"))
	if len(left) != 0 {
		t.Fatalf("left behind after stop: %v", left)
	}
}
