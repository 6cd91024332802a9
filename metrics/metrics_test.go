package metrics

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
)

// nodeExporterIPVS is node_exporter's IPVS series, copied by hand from its
// collector/ipvs_linux.go (newIPVSCollector): name, type, help and labels
// (fullIpvsBackendLabels, the default --collector.ipvs.backend-labels).
var nodeExporterIPVS = []struct {
	name, typ, help string
	labels          []string
}{
	{"node_ipvs_connections_total", "COUNTER", "The total number of connections made.", nil},
	{"node_ipvs_incoming_packets_total", "COUNTER", "The total number of incoming packets.", nil},
	{"node_ipvs_outgoing_packets_total", "COUNTER", "The total number of outgoing packets.", nil},
	{"node_ipvs_incoming_bytes_total", "COUNTER", "The total amount of incoming data.", nil},
	{"node_ipvs_outgoing_bytes_total", "COUNTER", "The total amount of outgoing data.", nil},
	{"node_ipvs_backend_connections_active", "GAUGE", "The current active connections by local and remote address.",
		[]string{"local_address", "local_port", "remote_address", "remote_port", "proto", "local_mark"}},
	{"node_ipvs_backend_connections_inactive", "GAUGE", "The current inactive connections by local and remote address.",
		[]string{"local_address", "local_port", "remote_address", "remote_port", "proto", "local_mark"}},
	{"node_ipvs_backend_weight", "GAUGE", "The current backend weight by local and remote address.",
		[]string{"local_address", "local_port", "remote_address", "remote_port", "proto", "local_mark"}},
}

// fakeSource is a Source with fixed services and counters that tests (and
// a writer goroutine) change.
type fakeSource struct {
	mu    sync.Mutex
	svcs  []ipvsadm.ListService
	tot   ipvs.StatsSnapshot
	sets  []director.CounterSet
	ct    conntrack.Stats
	limit int
	trace atomic.Uint64
}

func (f *fakeSource) Services() []ipvsadm.ListService {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]ipvsadm.ListService(nil), f.svcs...)
	for i := range out {
		out[i].Dests = append([]ipvsadm.ListDest(nil), out[i].Dests...)
	}
	return out
}
func (f *fakeSource) Totals() (ipvs.StatsSnapshot, ipvsadm.Rate) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tot, ipvsadm.Rate{}
}
func (f *fakeSource) CounterSets() []director.CounterSet {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]director.CounterSet, len(f.sets))
	for i, s := range f.sets {
		s.Values = append([]uint64(nil), s.Values...)
		out[i] = s
	}
	return out
}
func (f *fakeSource) ConnTable() (conntrack.Stats, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ct, f.limit
}
func (f *fakeSource) TraceDropped() uint64 { return f.trace.Load() }

type fakeHealth struct {
	rs []RealServerHealth
	q  []QuorumHealth
}

func (h *fakeHealth) RealServers() []RealServerHealth { return h.rs }
func (h *fakeHealth) Quorums() []QuorumHealth         { return h.q }

func dest(ap string, w int32, act, inact uint32) ipvsadm.ListDest {
	a := netip.MustParseAddrPort(ap)
	return ipvsadm.ListDest{Config: ipvs.DestConfig{Addr: a.Addr(), Port: a.Port(), Method: ipvs.MethodMasq, Weight: w}, Active: act, Inact: inact}
}

func newFake() *fakeSource {
	vip := netip.MustParseAddr("198.18.0.100")
	return &fakeSource{
		svcs: []ipvsadm.ListService{
			{Config: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}, Sched: "rr"},
				Dests: []ipvsadm.ListDest{dest("198.19.0.12:8080", 3, 7, 2), dest("198.19.0.11:8080", 1, 0, 5)}},
			{Config: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: vip, Port: 53}, Sched: "wrr"},
				Dests: []ipvsadm.ListDest{dest("198.19.0.11:53", 0, 0, 1)}},
			{Config: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, FWMark: 100}, Sched: "sh"},
				Dests: []ipvsadm.ListDest{dest("198.19.0.11:0", 2, 4, 4)}},
			{Config: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("2001:db8::1"), Port: 443}, Sched: "wlc"},
				Dests: []ipvsadm.ListDest{dest("[2001:db8:0:0:0:0:0:2]:443", 5, 1, 0), dest("[::ffff:198.19.0.13]:443", 1, 0, 0)}},
		},
		tot: ipvs.StatsSnapshot{Conns: 1000, InPkts: 12345, OutPkts: 6789, InBytes: 1 << 40, OutBytes: 999},
		sets: []director.CounterSet{
			{Name: "drops", Help: "Frames not forwarded.", Label: "cause", Names: []string{"no-conn", "table-full"}, Values: []uint64{3, 0}},
			{Name: "ring_frames", Help: "A set golvs's collector has no code for.", Label: "ring", Names: []string{"ext0", "int0"}, Values: []uint64{10, 20}},
			{Name: "workers_busy", Help: "A gauge set.", Label: "worker", Names: []string{"0"}, Values: []uint64{1}, Gauge: true},
		},
		ct:    conntrack.Stats{Entries: 42, Created: 100, Expired: 58, Dropped: 1, Reused: 2},
		limit: 1 << 20,
	}
}

// pipeListener is an in-memory listener: tests scrape the real HTTP server
// without touching any network.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}
func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }
func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	a, b := net.Pipe()
	select {
	case l.conns <- a:
		return b, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// serve runs the real server for c over an in-memory listener and returns
// a client for it.
func serve(t *testing.T, c *Collector) *http.Client {
	t.Helper()
	reg, err := Registry(c)
	if err != nil {
		t.Fatal(err)
	}
	ln := newPipeListener()
	s := ServeOn(ln, Handler(reg, t.Logf), t.Logf)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &http.Client{Transport: &http.Transport{DialContext: ln.dial}, Timeout: 30 * time.Second}
}

// scrape GETs /metrics and parses it with the Prometheus text parser.
func scrape(t testing.TB, cl *http.Client, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("content type %q", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return fams
}

func labelNames(m *dto.Metric) []string {
	var out []string
	for _, l := range m.GetLabel() {
		out = append(out, l.GetName())
	}
	return out
}

func labelMap(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return -1
}

// checkNodeExporterFamilies checks the IPVS families against node_exporter's
// list: every one present, with its type, help and label names.
func checkNodeExporterFamilies(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	for _, want := range nodeExporterIPVS {
		f := fams[want.name]
		if f == nil {
			t.Errorf("%s missing", want.name)
			continue
		}
		if f.GetType().String() != want.typ || f.GetHelp() != want.help {
			t.Errorf("%s: type %s help %q, want %s %q", want.name, f.GetType(), f.GetHelp(), want.typ, want.help)
		}
		for _, m := range f.GetMetric() {
			// The text format sorts labels by name; compare as sets.
			got, exp := labelNames(m), append([]string(nil), want.labels...)
			sort.Strings(got)
			sort.Strings(exp)
			if strings.Join(got, ",") != strings.Join(exp, ",") {
				t.Errorf("%s: labels %v, want %v", want.name, got, want.labels)
			}
		}
	}
}

// backends returns a family's samples keyed by their six labels.
func backends(f *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, m := range f.GetMetric() {
		l := labelMap(m)
		out[fmt.Sprintf("%s|%s|%s|%s|%s|%s", l["local_address"], l["local_port"], l["remote_address"], l["remote_port"], l["proto"], l["local_mark"])] = value(m)
	}
	return out
}

func TestNodeExporterSeries(t *testing.T) {
	src := newFake()
	fams := scrape(t, serve(t, New(src, nil)), "http://golvs/metrics")
	checkNodeExporterFamilies(t, fams)
	for name, want := range map[string]float64{
		"node_ipvs_connections_total":      1000,
		"node_ipvs_incoming_packets_total": 12345,
		"node_ipvs_outgoing_packets_total": 6789,
		"node_ipvs_incoming_bytes_total":   1 << 40,
		"node_ipvs_outgoing_bytes_total":   999,
	} {
		if got := value(fams[name].GetMetric()[0]); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	// Label values as node_exporter makes them from /proc/net/ip_vs: the
	// addresses through net.IP.String (IPv6 compressed, IPv4-mapped as
	// IPv4), ports in decimal, a fwmark service with no address, port 0,
	// proto FWM and the mark as /proc prints it (%08X).
	want := map[string][3]float64{ // active, inactive, weight
		"198.18.0.100|80|198.19.0.12|8080|TCP|": {7, 2, 3},
		"198.18.0.100|80|198.19.0.11|8080|TCP|": {0, 5, 1},
		"198.18.0.100|53|198.19.0.11|53|UDP|":   {0, 1, 0},
		"|0|198.19.0.11|0|FWM|00000064":         {4, 4, 2},
		"2001:db8::1|443|2001:db8::2|443|TCP|":  {1, 0, 5},
		"2001:db8::1|443|198.19.0.13|443|TCP|":  {0, 0, 1},
	}
	for i, name := range []string{"node_ipvs_backend_connections_active", "node_ipvs_backend_connections_inactive", "node_ipvs_backend_weight"} {
		got := backends(fams[name])
		if len(got) != len(want) {
			t.Errorf("%s: %d series, want %d: %v", name, len(got), len(want), got)
		}
		for k, w := range want {
			if v, ok := got[k]; !ok || v != w[i] {
				t.Errorf("%s{%s} = %v (present %v), want %v", name, k, v, ok, w[i])
			}
		}
	}
}

// Two dests whose labels coincide are summed, as node_exporter does.
func TestNodeExporterSums(t *testing.T) {
	src := newFake()
	// node_exporter started without local_mark (or an address only
	// procfs collapses) can fold series; golvs folds identical label sets:
	// two fwmark services with the same mark cannot exist, but the same
	// dest under an IPv4-mapped and a plain address can.
	src.svcs = []ipvsadm.ListService{{
		Config: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("2001:db8::1"), Port: 80}},
		Dests:  []ipvsadm.ListDest{dest("[::ffff:198.19.0.11]:80", 2, 1, 1), dest("198.19.0.11:80", 3, 2, 2)},
	}}
	fams := scrape(t, serve(t, New(src, nil)), "http://golvs/metrics")
	got := backends(fams["node_ipvs_backend_weight"])
	if len(got) != 1 || got["2001:db8::1|80|198.19.0.11|80|TCP|"] != 5 {
		t.Fatalf("weights %v, want one series of 5", got)
	}
}

func TestGolvsSeries(t *testing.T) {
	src := newFake()
	src.trace.Store(17)
	h := &fakeHealth{
		rs: []RealServerHealth{
			{Service: src.svcs[0].Config.ServiceKey, Dest: netip.MustParseAddrPort("198.19.0.11:8080"), Checker: "HTTP_GET", Up: true, Checks: 10, Failures: 1, CheckTime: 250 * time.Millisecond},
			{Service: src.svcs[2].Config.ServiceKey, Dest: netip.MustParseAddrPort("198.19.0.11:0"), Checker: "TCP_CHECK", Up: false, Checks: 4, Failures: 4, CheckTime: 2 * time.Second},
		},
		q: []QuorumHealth{{Service: src.svcs[0].Config.ServiceKey, Up: false, Weight: 1, Quorum: 3, Sorry: true}},
	}
	fams := scrape(t, serve(t, New(src, h)), "http://golvs/metrics")
	one := func(name string, labels map[string]string) *dto.Metric {
		t.Helper()
		f := fams[name]
		if f == nil {
			t.Fatalf("%s missing", name)
		}
	next:
		for _, m := range f.GetMetric() {
			l := labelMap(m)
			for k, v := range labels {
				if l[k] != v {
					continue next
				}
			}
			return m
		}
		t.Fatalf("%s%v missing", name, labels)
		return nil
	}
	for _, c := range []struct {
		name   string
		typ    string
		labels map[string]string
		want   float64
	}{
		{"golvs_conntrack_entries", "GAUGE", nil, 42},
		{"golvs_conntrack_limit", "GAUGE", nil, 1 << 20},
		{"golvs_conntrack_created_total", "COUNTER", nil, 100},
		{"golvs_conntrack_expired_total", "COUNTER", nil, 58},
		{"golvs_conntrack_refused_total", "COUNTER", nil, 1},
		{"golvs_conntrack_reused_total", "COUNTER", nil, 2},
		{"golvs_trace_events_dropped_total", "COUNTER", nil, 17},
		{"golvs_drops_total", "COUNTER", map[string]string{"cause": "no-conn"}, 3},
		{"golvs_drops_total", "COUNTER", map[string]string{"cause": "table-full"}, 0},
		// Sets the collector has no code for appear by themselves.
		{"golvs_ring_frames_total", "COUNTER", map[string]string{"ring": "int0"}, 20},
		{"golvs_workers_busy", "GAUGE", map[string]string{"worker": "0"}, 1},
		{"golvs_real_server_up", "GAUGE", map[string]string{"remote_address": "198.19.0.11", "remote_port": "8080", "checker": "HTTP_GET", "proto": "TCP", "local_port": "80"}, 1},
		{"golvs_real_server_up", "GAUGE", map[string]string{"proto": "FWM", "local_mark": "00000064", "checker": "TCP_CHECK"}, 0},
		{"golvs_check_failures_total", "COUNTER", map[string]string{"checker": "TCP_CHECK"}, 4},
		{"golvs_quorum_up", "GAUGE", map[string]string{"local_address": "198.18.0.100", "local_port": "80", "proto": "TCP", "local_mark": ""}, 0},
		{"golvs_quorum_weight", "GAUGE", nil, 1},
		{"golvs_quorum_threshold", "GAUGE", nil, 3},
		{"golvs_sorry_server_active", "GAUGE", nil, 1},
	} {
		m := one(c.name, c.labels)
		if typ := fams[c.name].GetType().String(); typ != c.typ {
			t.Errorf("%s: type %s, want %s", c.name, typ, c.typ)
		}
		if got := value(m); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	s := one("golvs_check_duration_seconds", map[string]string{"checker": "HTTP_GET"}).GetSummary()
	if s.GetSampleCount() != 10 || s.GetSampleSum() != 0.25 {
		t.Errorf("check duration count %d sum %v, want 10, 0.25", s.GetSampleCount(), s.GetSampleSum())
	}
	// Every golvs series has help text and sits under the golvs_ prefix;
	// the rest are node_exporter's, the Go runtime's, the process's and the
	// handler's own.
	for name, f := range fams {
		if f.GetHelp() == "" {
			t.Errorf("%s has no help", name)
		}
		ok := false
		for _, p := range []string{"golvs_", "node_ipvs_", "go_", "process_", "promhttp_"} {
			ok = ok || strings.HasPrefix(name, p)
		}
		if !ok {
			t.Errorf("unexpected family %s", name)
		}
	}
	// Without a health source there are no checker series.
	fams = scrape(t, serve(t, New(src, nil)), "http://golvs/metrics")
	for name := range fams {
		if strings.HasPrefix(name, "golvs_real_server") || strings.HasPrefix(name, "golvs_quorum") {
			t.Errorf("%s without a health source", name)
		}
	}
}

// Scrapes run while the counters move: every scrape parses, counters
// never go down, and scrapes beyond MaxRequestsInFlight are answered 503;
// the handler counts every one.
func TestConcurrentScrapes(t *testing.T) {
	src := newFake()
	cl := serve(t, New(src, nil))
	stop := make(chan struct{})
	writer := make(chan struct{})
	go func() {
		defer close(writer)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			src.mu.Lock()
			src.tot.Conns++
			src.tot.InPkts += 3
			src.sets[0].Values[0]++
			src.svcs[0].Dests[0].Active = uint32(i % 100)
			src.mu.Unlock()
			src.trace.Add(1)
		}
	}()
	const scrapers, each = 8, 20
	var wg sync.WaitGroup
	var busy, ok atomic.Int64
	errs := make(chan error, scrapers)
	for g := 0; g < scrapers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last [3]float64
			for i := 0; i < each; i++ {
				resp, err := cl.Get("http://golvs/metrics")
				if err != nil {
					errs <- err
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable {
					busy.Add(1)
					continue
				}
				p := expfmt.NewTextParser(model.LegacyValidation)
				fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
				if err != nil {
					errs <- err
					return
				}
				ok.Add(1)
				cur := [3]float64{
					value(fams["node_ipvs_connections_total"].GetMetric()[0]),
					value(fams["golvs_trace_events_dropped_total"].GetMetric()[0]),
					value(fams["golvs_drops_total"].GetMetric()[0]),
				}
				for k := range cur {
					if cur[k] < last[k] {
						errs <- fmt.Errorf("counter %d went down: %v after %v", k, cur[k], last[k])
						return
					}
				}
				last = cur
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-writer
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if ok.Load() == 0 {
		t.Fatal("no scrape succeeded")
	}
	fams := scrape(t, cl, "http://golvs/metrics")
	var n, refused float64
	for _, m := range fams["promhttp_metric_handler_requests_total"].GetMetric() {
		n += value(m)
		if labelMap(m)["code"] == "503" {
			refused = value(m)
		}
	}
	if n < scrapers*each || refused != float64(busy.Load()) {
		t.Errorf("handler counted %v scrapes (%v refused), want %d (%d refused)", n, refused, scrapers*each, busy.Load())
	}
	t.Logf("%d scrapes answered, %d refused (over %d in flight)", ok.Load(), busy.Load(), MaxRequestsInFlight)
}

// BenchmarkScrape measures one scrape's collection and encoding for 100
// services of 10 real servers each (the HTTP transport aside).
func BenchmarkScrape(b *testing.B) {
	src := newFake()
	src.svcs = nil
	for s := 0; s < 100; s++ {
		ls := ipvsadm.ListService{Config: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.AddrFrom4([4]byte{198, 18, 1, byte(s)}), Port: 80}, Sched: "rr"}}
		for d := 0; d < 10; d++ {
			ls.Dests = append(ls.Dests, dest(fmt.Sprintf("198.19.%d.%d:80", s, d+1), 1, 5, 7))
		}
		src.svcs = append(src.svcs, ls)
	}
	reg, err := Registry(New(src, nil))
	if err != nil {
		b.Fatal(err)
	}
	h := Handler(reg, nil)
	req, _ := http.NewRequest("GET", Path, nil)
	b.ReportAllocs()
	for b.Loop() {
		w := &discardWriter{h: http.Header{}}
		h.ServeHTTP(w, req)
		if w.code != 0 && w.code != 200 {
			b.Fatalf("status %d", w.code)
		}
	}
}

type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(c int)           { w.code = c }
