package metrics

import (
	"strings"
	"testing"

	"github.com/golvs/golvs/bgp"
)

// TestBGPSeries: the speaker's status becomes golvs_bgp_* series that the
// Prometheus text parser reads back with their types and labels.
func TestBGPSeries(t *testing.T) {
	st := &bgp.Status{ASN: 65001, RouterID: "198.18.0.1", DataPath: "running", Announcements: 3, Withdrawals: 1,
		Peers: []bgp.PeerStatus{
			{Addr: "198.18.0.254", ASN: 65000, State: "established", Established: 2, MsgsIn: 40, MsgsOut: 41},
			{Addr: "198.18.0.253", ASN: 65000, State: "active", LastError: "connect: refused"},
		},
		Routes: []bgp.RouteStatus{
			{Prefix: "198.18.0.100/32", Announced: true},
			{Prefix: "198.18.0.101/32", Reason: "TCP 198.18.0.101:80: quorum lost"},
			{Prefix: "198.18.0.102/32", Announced: true, GracefulShutdown: true},
		}}
	c := New(newFake(), nil)
	c.SetBGP(func() *bgp.Status { return st })
	fams := scrape(t, serve(t, c), "http://golvs/metrics")
	find := func(name string, labels map[string]string) (float64, string) {
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
			return value(m), f.GetType().String()
		}
		t.Fatalf("%s%v missing", name, labels)
		return 0, ""
	}
	good := map[string]string{"peer": "198.18.0.254", "peer_asn": "65000"}
	bad := map[string]string{"peer": "198.18.0.253", "peer_asn": "65000"}
	for _, c := range []struct {
		name   string
		labels map[string]string
		typ    string
		want   float64
	}{
		{"golvs_bgp_peer_up", good, "GAUGE", 1},
		{"golvs_bgp_peer_up", bad, "GAUGE", 0},
		{"golvs_bgp_peer_state", good, "GAUGE", 6}, // BGP4-MIB established
		{"golvs_bgp_peer_state", bad, "GAUGE", 3},  // active
		{"golvs_bgp_peer_established_total", good, "COUNTER", 2},
		{"golvs_bgp_peer_messages_received_total", good, "COUNTER", 40},
		{"golvs_bgp_peer_messages_sent_total", good, "COUNTER", 41},
		{"golvs_bgp_route_announced", map[string]string{"prefix": "198.18.0.100/32"}, "GAUGE", 1},
		{"golvs_bgp_route_announced", map[string]string{"prefix": "198.18.0.101/32"}, "GAUGE", 0},
		{"golvs_bgp_route_graceful_shutdown", map[string]string{"prefix": "198.18.0.102/32"}, "GAUGE", 1},
		{"golvs_bgp_route_graceful_shutdown", map[string]string{"prefix": "198.18.0.100/32"}, "GAUGE", 0},
		{"golvs_bgp_announcements_total", nil, "COUNTER", 3},
		{"golvs_bgp_withdrawals_total", nil, "COUNTER", 1},
		{"golvs_bgp_data_path_up", nil, "GAUGE", 1},
	} {
		got, typ := find(c.name, c.labels)
		if got != c.want || typ != c.typ {
			t.Errorf("%s%v = %v (%s), want %v (%s)", c.name, c.labels, got, typ, c.want, c.typ)
		}
	}
	// Without SetBGP there is no golvs_bgp_ series.
	for name := range scrape(t, serve(t, New(newFake(), nil)), "http://golvs/metrics") {
		if strings.HasPrefix(name, "golvs_bgp_") {
			t.Errorf("%s without a BGP speaker", name)
		}
	}
}
