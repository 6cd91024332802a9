package main

import (
	"net/netip"
	"testing"

	"github.com/golvs/golvs/health"
	"github.com/golvs/golvs/keepalived"
)

type nopCtl struct{}

func (nopCtl) Exec([]string) error  { return nil }
func (nopCtl) Restore(string) error { return nil }

// The metrics see one entry per checker and IPVS service, with the real
// server as IPVS lists it there (a DR server without a port takes each
// service's port), and one quorum per IPVS service.
func TestHealthMetrics(t *testing.T) {
	cfg, err := keepalived.Parse("m.conf", []byte(`virtual_server_group g {
    198.18.0.100 80
    198.18.0.101 8080
}
virtual_server group g {
    lb_kind DR
    protocol TCP
    quorum 2
    real_server 198.18.0.11 {
        weight 2
        MISC_CHECK {
            misc_path /bin/true
            delay_loop 60
        }
    }
}
`))
	if err != nil {
		t.Fatal(err)
	}
	e := health.New(nopCtl{}, health.Options{Logf: func(string, ...any) {}})
	defer e.Close()
	if err := e.Load(cfg.Services); err != nil {
		t.Fatal(err)
	}
	h := healthMetrics{e}
	rs := h.RealServers()
	if len(rs) != 2 || rs[0].Dest != netip.MustParseAddrPort("198.18.0.11:80") || rs[1].Dest != netip.MustParseAddrPort("198.18.0.11:8080") ||
		rs[0].Service.Port != 80 || rs[1].Service.Port != 8080 || rs[0].Checker != "MISC_CHECK" || !rs[0].Up {
		t.Fatalf("RealServers() = %+v", rs)
	}
	q := h.Quorums()
	if len(q) != 2 || !q[0].Up || q[0].Weight != 2 || q[0].Quorum != 2 || q[0].Sorry {
		t.Fatalf("Quorums() = %+v", q)
	}
}
