// Package metrics is golvs's Prometheus endpoint (`golvs run
// --metrics-listen ADDR`): a collector that reads the director's live
// counters at scrape time, and a bounded HTTP server for /metrics.
//
// The IPVS series carry node_exporter's exact names, help texts, types and
// labels (collector/ipvs_linux.go), with label values formatted as
// node_exporter derives them from /proc/net/ip_vs through
// prometheus/procfs, so dashboards and alerts written for IPVS hosts work
// unchanged. golvs's own series sit beside them under the golvs_ prefix:
// frames not forwarded by cause and every other counter set the director
// exports (director.CounterSets: a new counter there appears here without
// code), the connection table's size and limit, trace events dropped, and,
// when a HealthSource is wired in, each checked real server's state and
// check latency and each service's quorum, and with SetBGP the BGP
// speaker's sessions and routes (golvs_bgp_*).
//
// It never touches the packet path: a scrape takes atomic loads and the
// control plane's listing, and costs the data path nothing per packet.
package metrics

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
)

// Source is what the collector reads at scrape time. control.Server
// implements it.
type Source interface {
	// Services lists the services, dests, counters and rates (as -L).
	Services() []ipvsadm.ListService
	// Totals returns the director-wide counters (/proc/net/ip_vs_stats).
	Totals() (ipvs.StatsSnapshot, ipvsadm.Rate)
	// CounterSets returns the director's counter sets. Their names must
	// not change while the collector lives.
	CounterSets() []director.CounterSet
	// ConnTable returns the connection table's counters and limit.
	ConnTable() (conntrack.Stats, int)
	// TraceDropped returns the trace events dropped since the start.
	TraceDropped() uint64
}

// HealthSource is what the collector reads from the health checkers: the
// health package's checker manager is meant to implement it, and `golvs
// run` passes it as New's second argument (nil until checkers are wired
// in: then there are no checker series). Both methods are called at scrape
// time, from the HTTP server's goroutine: they must return a copy and
// must not block on a check in progress. Labels come from Service and
// Dest as for node_ipvs_backend_*, plus checker.
type HealthSource interface {
	RealServers() []RealServerHealth
	Quorums() []QuorumHealth
}

// RealServerHealth is one checked real server of one service.
type RealServerHealth struct {
	Service ipvs.ServiceKey
	Dest    netip.AddrPort
	Checker string // keepalived's name: TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK, DNS_CHECK
	Up      bool   // in service (passed its checks: rise/fall applied)
	// Checks and Failures count the checks run and those that failed;
	// CheckTime is the time all of them took together (a summary's sum).
	Checks, Failures uint64
	CheckTime        time.Duration
}

// QuorumHealth is one service's quorum state (keepalived's quorum,
// quorum_up/quorum_down).
type QuorumHealth struct {
	Service ipvs.ServiceKey
	Up      bool  // quorum reached: the real servers serve
	Weight  int64 // the sum of the weights of the real servers up
	Quorum  int64 // the sum needed
	Sorry   bool  // the sorry server is in service
}

// node_exporter's IPVS backend labels, in its order.
var ipvsBackendLabels = []string{"local_address", "local_port", "remote_address", "remote_port", "proto", "local_mark"}

// serviceLabels are the service half of them.
var serviceLabels = []string{"local_address", "local_port", "proto", "local_mark"}

type typedDesc struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
}

func (d typedDesc) metric(v float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(d.desc, d.typ, v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(d.desc, err)
	}
	return m
}

func counter(name, help string, labels ...string) typedDesc {
	return typedDesc{prometheus.NewDesc(name, help, labels, nil), prometheus.CounterValue}
}

func gauge(name, help string, labels ...string) typedDesc {
	return typedDesc{prometheus.NewDesc(name, help, labels, nil), prometheus.GaugeValue}
}

type setDesc struct {
	typedDesc
	name string
}

// Collector is the prometheus.Collector over a Source and an optional
// HealthSource.
type Collector struct {
	src    Source
	health HealthSource

	connections, inPkts, outPkts, inBytes, outBytes typedDesc
	backendActive, backendInactive, backendWeight   typedDesc

	ctEntries, ctLimit, ctCreated, ctExpired, ctRefused, ctReused typedDesc
	ctEvicted, ctDropEntry, ctBytes                               typedDesc
	traceDropped                                                  typedDesc
	sets                                                          []setDesc

	rsUp, checkFailures, quorumUp, quorumWeight, quorumNeeded, sorry typedDesc
	checkTime                                                        *prometheus.Desc

	bgp *bgpDescs // golvs_bgp_*, nil without SetBGP (bgp.go)
}

// New returns a collector over src; health may be nil.
func New(src Source, health HealthSource) *Collector {
	c := &Collector{src: src, health: health}
	// node_exporter's collector/ipvs_linux.go, name for name, help for help.
	c.connections = counter("node_ipvs_connections_total", "The total number of connections made.")
	c.inPkts = counter("node_ipvs_incoming_packets_total", "The total number of incoming packets.")
	c.outPkts = counter("node_ipvs_outgoing_packets_total", "The total number of outgoing packets.")
	c.inBytes = counter("node_ipvs_incoming_bytes_total", "The total amount of incoming data.")
	c.outBytes = counter("node_ipvs_outgoing_bytes_total", "The total amount of outgoing data.")
	c.backendActive = gauge("node_ipvs_backend_connections_active", "The current active connections by local and remote address.", ipvsBackendLabels...)
	c.backendInactive = gauge("node_ipvs_backend_connections_inactive", "The current inactive connections by local and remote address.", ipvsBackendLabels...)
	c.backendWeight = gauge("node_ipvs_backend_weight", "The current backend weight by local and remote address.", ipvsBackendLabels...)

	c.ctEntries = gauge("golvs_conntrack_entries", "Entries in the connection table (connections and persistence templates).")
	c.ctLimit = gauge("golvs_conntrack_limit", "The most entries the connection table holds (golvs run --conn-max); at it a new connection replaces a half-open or closing one (golvs_conntrack_evicted_total) or is dropped and counted in golvs_drops_total{cause=\"table-full\"}.")
	c.ctCreated = counter("golvs_conntrack_created_total", "Entries created in the connection table.")
	c.ctExpired = counter("golvs_conntrack_expired_total", "Entries expired from the connection table.")
	c.ctRefused = counter("golvs_conntrack_refused_total", "New connections refused because the connection table was full.")
	c.ctReused = counter("golvs_conntrack_reused_total", "Connections expired early by a new SYN on their tuple (IPVS's conn_reuse_mode).")
	c.ctEvicted = counter("golvs_conntrack_evicted_total", "Half-open or closing connections a new connection replaced because the connection table was full.")
	c.ctDropEntry = counter("golvs_conntrack_drop_entry_total", "Connections dropped by the drop_entry defense.")
	c.ctBytes = gauge("golvs_conntrack_bytes", "Memory the connection table holds (indices and wheels sized by --conn-max, entry chunks following the live entries).")
	c.traceDropped = counter("golvs_trace_events_dropped_total", "Trace events dropped (rate cap, buffer full, slow client) by golvs trace sessions.")
	for _, s := range src.CounterSets() {
		name := "golvs_" + s.Name
		mk := gauge
		if !s.Gauge {
			name += "_total"
			mk = counter
		}
		c.sets = append(c.sets, setDesc{mk(name, s.Help, s.Label), s.Name})
	}

	withChecker := append(append([]string(nil), ipvsBackendLabels...), "checker")
	c.rsUp = gauge("golvs_real_server_up", "Whether the health checker has the real server in service (1) or out of it (0).", withChecker...)
	c.checkTime = prometheus.NewDesc("golvs_check_duration_seconds", "Time the health checks of the real server took.", withChecker, nil)
	c.checkFailures = counter("golvs_check_failures_total", "Health checks of the real server that failed.", withChecker...)
	c.quorumUp = gauge("golvs_quorum_up", "Whether the service has its quorum (1) or is served by its sorry server or nobody (0).", serviceLabels...)
	c.quorumWeight = gauge("golvs_quorum_weight", "The sum of the weights of the service's real servers in service.", serviceLabels...)
	c.quorumNeeded = gauge("golvs_quorum_threshold", "The weight sum the service's quorum needs.", serviceLabels...)
	c.sorry = gauge("golvs_sorry_server_active", "Whether the service's sorry server is in service.", serviceLabels...)
	return c
}

func (c *Collector) descs() []*prometheus.Desc {
	out := []*prometheus.Desc{
		c.connections.desc, c.inPkts.desc, c.outPkts.desc, c.inBytes.desc, c.outBytes.desc,
		c.backendActive.desc, c.backendInactive.desc, c.backendWeight.desc,
		c.ctEntries.desc, c.ctLimit.desc, c.ctCreated.desc, c.ctExpired.desc, c.ctRefused.desc, c.ctReused.desc,
		c.ctEvicted.desc, c.ctDropEntry.desc, c.ctBytes.desc,
		c.traceDropped.desc,
	}
	for _, s := range c.sets {
		out = append(out, s.desc)
	}
	if c.health != nil {
		out = append(out, c.rsUp.desc, c.checkTime, c.checkFailures.desc, c.quorumUp.desc, c.quorumWeight.desc, c.quorumNeeded.desc, c.sorry.desc)
	}
	out = append(out, c.bgp.descs()...)
	return out
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// ServiceLabels returns node_exporter's label values for a service:
// local_address, local_port, proto and local_mark, as procfs reads them
// from /proc/net/ip_vs ("" address, port 0, proto FWM and the mark in
// %08X for a fwmark service).
func ServiceLabels(k ipvs.ServiceKey) (addr, port, proto, mark string) {
	if k.FWMark != 0 {
		return "", "0", "FWM", fmt.Sprintf("%08X", k.FWMark)
	}
	return ipString(k.Addr), strconv.Itoa(int(k.Port)), ipvs.ProtoName(k.Proto), ""
}

// ipString is net.IP's String, which procfs's addresses go through: an
// IPv4-mapped IPv6 address prints as IPv4.
func ipString(a netip.Addr) string { return a.Unmap().String() }

// BackendLabels returns node_exporter's six backend label values in its
// order.
func BackendLabels(k ipvs.ServiceKey, dest netip.AddrPort) []string {
	a, p, proto, mark := ServiceLabels(k)
	return []string{a, p, ipString(dest.Addr()), strconv.Itoa(int(dest.Port())), proto, mark}
}

// Collect implements prometheus.Collector: one reading of the source.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	tot, _ := c.src.Totals()
	ch <- c.connections.metric(float64(tot.Conns))
	ch <- c.inPkts.metric(float64(tot.InPkts))
	ch <- c.outPkts.metric(float64(tot.OutPkts))
	ch <- c.inBytes.metric(float64(tot.InBytes))
	ch <- c.outBytes.metric(float64(tot.OutBytes))

	// node_exporter sums backends whose label values coincide; so do we.
	type sum struct {
		labels                []string
		active, inact, weight float64
	}
	var order []string
	sums := map[string]*sum{}
	for _, s := range c.src.Services() {
		for _, d := range s.Dests {
			lv := BackendLabels(s.Config.ServiceKey, d.Config.AddrPort())
			key := fmt.Sprintf("%q", lv)
			x := sums[key]
			if x == nil {
				x = &sum{labels: lv}
				sums[key] = x
				order = append(order, key)
			}
			x.active += float64(int32(d.Active))
			x.inact += float64(int32(d.Inact))
			x.weight += float64(d.Config.Weight)
		}
	}
	for _, k := range order {
		x := sums[k]
		ch <- c.backendActive.metric(x.active, x.labels...)
		ch <- c.backendInactive.metric(x.inact, x.labels...)
		ch <- c.backendWeight.metric(x.weight, x.labels...)
	}

	st, limit := c.src.ConnTable()
	ch <- c.ctEntries.metric(float64(st.Entries))
	ch <- c.ctLimit.metric(float64(limit))
	ch <- c.ctCreated.metric(float64(st.Created))
	ch <- c.ctExpired.metric(float64(st.Expired))
	ch <- c.ctRefused.metric(float64(st.Dropped))
	ch <- c.ctReused.metric(float64(st.Reused))
	ch <- c.ctEvicted.metric(float64(st.Evicted))
	ch <- c.ctDropEntry.metric(float64(st.DropEntry))
	ch <- c.ctBytes.metric(float64(st.Bytes))
	ch <- c.traceDropped.metric(float64(c.src.TraceDropped()))

	sets := c.src.CounterSets()
	for _, sd := range c.sets {
		for _, s := range sets {
			if s.Name != sd.name {
				continue
			}
			for i, n := range s.Names {
				ch <- sd.metric(float64(s.Values[i]), n)
			}
		}
	}

	c.bgp.collect(ch)
	if c.health == nil {
		return
	}
	for _, r := range c.health.RealServers() {
		lv := append(BackendLabels(r.Service, r.Dest), r.Checker)
		ch <- c.rsUp.metric(b2f(r.Up), lv...)
		ch <- c.checkFailures.metric(float64(r.Failures), lv...)
		m, err := prometheus.NewConstSummary(c.checkTime, r.Checks, r.CheckTime.Seconds(), nil, lv...)
		if err != nil {
			m = prometheus.NewInvalidMetric(c.checkTime, err)
		}
		ch <- m
	}
	for _, q := range c.health.Quorums() {
		a, p, proto, mark := ServiceLabels(q.Service)
		ch <- c.quorumUp.metric(b2f(q.Up), a, p, proto, mark)
		ch <- c.quorumWeight.metric(float64(q.Weight), a, p, proto, mark)
		ch <- c.quorumNeeded.metric(float64(q.Quorum), a, p, proto, mark)
		ch <- c.sorry.metric(b2f(q.Sorry), a, p, proto, mark)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
