package main

import (
	"net/netip"
	"testing"

	"github.com/golvs/golvs/bgp"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/metrics"
)

type quorums []metrics.QuorumHealth

func (q quorums) RealServers() []metrics.RealServerHealth { return nil }
func (q quorums) Quorums() []metrics.QuorumHealth         { return q }

// TestQuorumWithdraws: a service whose quorum the health checks report
// lost has its VIP withdrawn even with real servers of weight > 0 (its
// sorry server), and one they report up is announced.
func TestQuorumWithdraws(t *testing.T) {
	k := func(a string) ipvs.ServiceKey {
		return ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr(a), Port: 80}
	}
	svc := func(key ipvs.ServiceKey) *director.Service {
		d := ipvs.NewDest(key, ipvs.DestConfig{Addr: netip.MustParseAddr("198.18.0.11"), Port: 80, Weight: 1})
		return &director.Service{Config: ipvs.ServiceConfig{ServiceKey: key}, Dests: []*ipvs.Dest{d}}
	}
	h := quorums{{Service: k("198.18.0.100"), Up: false, Sorry: true}, {Service: k("198.18.0.101"), Up: true}}
	vips := bgp.VIPsOf([]*director.Service{svc(k("198.18.0.100")), svc(k("198.18.0.101")), svc(k("198.18.0.102"))}, quorumFunc(h))
	want := map[string]bool{"198.18.0.100": false, "198.18.0.101": true, "198.18.0.102": true}
	for _, v := range vips {
		if v.Up != want[v.Addr.String()] {
			t.Errorf("%s up=%v (%s), want %v", v.Addr, v.Up, v.Why, want[v.Addr.String()])
		}
	}
	if quorumFunc(nil) != nil {
		t.Error("a quorum function without health checks")
	}
}
