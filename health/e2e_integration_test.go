package health_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/health"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/keepalived"
	"github.com/golvs/golvs/lab"
)

// rig is a NAT lab with an in-process director, its control plane and a
// health engine checking from the director's namespace: the whole chain
// keepalived.conf -> checkers -> control plane -> data plane.
type rig struct {
	t    *testing.T
	topo *lab.Topology
	srv  *control.Server
	eng  *health.Engine
	rs   []*rsService
	logs chan string
}

// rsService is a real server's service, which a test stops and starts.
type rsService struct {
	t    *testing.T
	ns   *lab.NS
	name string
	kind string // "http", "ssl", "dns"
	mu   sync.Mutex
	http *lab.Server
	tls  net.Listener
	dns  *dns.Server
}

func (s *rsService) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	switch s.kind {
	case "dns":
		var pc net.PacketConn
		err = s.ns.Do(func() error { pc, err = net.ListenPacket("udp4", ":53"); return err })
		if err == nil {
			name := s.name
			s.dns = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, m *dns.Msg) {
				r := new(dns.Msg)
				r.SetReply(m)
				t, _ := dns.NewRR(m.Question[0].Name + " 0 IN TXT " + name)
				r.Answer = append(r.Answer, t)
				w.WriteMsg(r)
			})}
			go s.dns.ActivateAndServe()
		}
	default:
		s.http, err = lab.Serve(context.Background(), s.ns, s.name, []int{80}, nil)
		if err == nil && s.kind == "ssl" {
			cert := selfSigned(s.t)
			err = s.ns.Do(func() error {
				s.tls, err = tls.Listen("tcp4", ":443", &tls.Config{Certificates: []tls.Certificate{cert}})
				return err
			})
			if err == nil {
				name := s.name
				go (&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, name) }), ReadHeaderTimeout: 5 * time.Second}).Serve(s.tls)
			}
		}
	}
	if err != nil {
		s.t.Fatalf("starting %s: %v", s.name, err)
	}
}

// stop closes the listeners; connections in progress go on.
func (s *rsService) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.http != nil {
		s.http.Close()
	}
	if s.tls != nil {
		s.tls.Close()
	}
	if s.dns != nil {
		s.dns.Shutdown()
	}
}

func newRig(t *testing.T, kind, conf string) *rig {
	t.Helper()
	topo := testutil.NATLab(t, 3)
	r := &rig{t: t, topo: topo, logs: make(chan string, 1024)}
	for i, ns := range topo.RS {
		s := &rsService{t: t, ns: ns, name: fmt.Sprintf("rs%d", i+1), kind: kind}
		s.start()
		t.Cleanup(s.stop)
		r.rs = append(r.rs, s)
	}
	var d *director.Director
	err := topo.Director.Do(func() error {
		var err error
		d, err = director.New(director.Config{
			Interfaces: []director.Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}},
			Workers:    1, FixHost: true,
			Conntrack: conntrack.Config{Tick: 100 * time.Millisecond},
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	r.srv = control.NewServer(d)
	env, err := topo.Director.Env()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	cfg, err := keepalived.Parse("e2e.conf", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	r.eng = health.New(r.srv, health.Options{Env: env, Logf: func(f string, a ...any) {
		select {
		case r.logs <- fmt.Sprintf(f, a...):
		default:
		}
	}})
	t.Cleanup(r.eng.Close)
	if err := r.eng.Load(cfg.Services); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	if err := d.WaitResolved(wctx); err != nil {
		t.Fatal(err)
	}
	return r
}

// dests returns the real servers of the first service: address -> weight.
func (r *rig) dests() map[netip.Addr]int32 {
	rep := r.srv.Handle(&control.Request{Op: "list"})
	out := map[netip.Addr]int32{}
	if len(rep.Services) == 0 {
		return out
	}
	for _, d := range rep.Services[0].Dests {
		out[d.Config.Addr] = d.Config.Weight
	}
	return out
}

func (r *rig) waitFor(what string, cond func(map[netip.Addr]int32) bool) time.Time {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if cond(r.dests()) {
			return time.Now()
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for: %s (table %v)", what, r.dests())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ask sends n requests through the VIP and returns who answered each
// ("" and the error for a failure).
func (r *rig) ask(kind string, n int) ([]string, []error) {
	r.t.Helper()
	var who []string
	var errs []error
	if kind == "dns" {
		err := r.topo.Client.Do(func() error {
			c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
			for i := 0; i < n; i++ {
				m := new(dns.Msg)
				m.SetQuestion("golvs.test.", dns.TypeTXT)
				in, _, err := c.Exchange(m, lab.VIP.String()+":53")
				if err != nil || len(in.Answer) == 0 {
					who, errs = append(who, ""), append(errs, fmt.Errorf("dns: %v", err))
					continue
				}
				who = append(who, strings.Join(in.Answer[0].(*dns.TXT).Txt, ""))
			}
			return nil
		})
		if err != nil {
			r.t.Fatal(err)
		}
		return who, errs
	}
	resp, err := lab.Get(r.topo.Client, netip.AddrPortFrom(lab.VIP, 80), n, 3*time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, x := range resp {
		if x.Err != nil {
			who, errs = append(who, ""), append(errs, x.Err)
			continue
		}
		who = append(who, x.Body)
	}
	return who, errs
}

func count(who []string) map[string]int {
	m := map[string]int{}
	for _, w := range who {
		m[w]++
	}
	return m
}

const (
	delayLoop      = 200 * time.Millisecond
	connectTimeout = 300 * time.Millisecond
	retry          = 1
	beforeRetry    = 100 * time.Millisecond
)

func e2eConf(proto string, port int, check string) string {
	return fmt.Sprintf(`virtual_server %s %d {
    delay_loop 0.2
    lb_algo rr
    lb_kind NAT
    protocol %s
    connect_timeout 0.3
    retry 1
    delay_before_retry 0.1
    warmup 0
    rise 2
    real_server %s %d {
        %s
    }
    real_server %s %d {
        %s
    }
}
`, lab.VIP, port, proto, lab.RIP(1), port, check, lab.RIP(2), port, check)
}

// For every checker type: a real server whose service stops leaves the
// table within delay_loop x (retry+1) plus the timeouts (bounded here
// generously), no request fails after that, and it returns after rise
// good checks.
func TestE2EFailover(t *testing.T) {
	cases := []struct {
		name, kind, proto string
		port              int
		check             string
	}{
		{"TCP_CHECK", "http", "TCP", 80, "TCP_CHECK { }"},
		{"HTTP_GET", "http", "TCP", 80, "HTTP_GET {\n url {\n path /\n status_code 200\n }\n }"},
		{"SSL_GET", "ssl", "TCP", 80, "SSL_GET { connect_port 443\n url { path / } }"},
		{"MISC_CHECK", "http", "TCP", 80, "MISC_CHECK { misc_path \"/bin/bash -c 'exec 3<>/dev/tcp/%s/80'\"\n misc_timeout 1 }"},
		{"DNS_CHECK", "dns", "UDP", 53, "DNS_CHECK { type TXT\n name golvs.test }"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conf := e2eConf(tc.proto, tc.port, tc.check)
			if tc.name == "MISC_CHECK" {
				conf = strings.Replace(strings.Replace(conf, "%s", lab.RIP(1).String(), 1), "%s", lab.RIP(2).String(), 1)
			}
			r := newRig(t, tc.kind, conf)
			rs1, rs2 := lab.RIP(1), lab.RIP(2)
			r.waitFor("both real servers", func(d map[netip.Addr]int32) bool { return d[rs1] == 1 && d[rs2] == 1 })
			who, errs := r.ask(tc.kind, 6)
			if len(errs) > 0 || count(who)["rs1"] == 0 || count(who)["rs2"] == 0 {
				t.Fatalf("before: %v %v", who, errs)
			}
			stopped := time.Now()
			r.rs[0].stop()
			out := r.waitFor("rs1 out of the table", func(d map[netip.Addr]int32) bool { _, ok := d[rs1]; return !ok })
			bound := (retry+1)*(delayLoop+connectTimeout) + retry*beforeRetry
			if took := out.Sub(stopped); took > bound+5*time.Second {
				t.Errorf("rs1 left %v after its service stopped (bound %v)", took, bound)
			} else {
				t.Logf("rs1 left %v after its service stopped (delay_loop x (retry+1) + timeouts = %v)", took, bound)
			}
			who, errs = r.ask(tc.kind, 20)
			if len(errs) > 0 || count(who)["rs2"] != 20 {
				t.Fatalf("after rs1 left: %d failed (%v), answers %v", len(errs), errs, count(who))
			}
			r.rs[0].start()
			r.waitFor("rs1 back", func(d map[netip.Addr]int32) bool { return d[rs1] == 1 })
			var st health.CheckState
			for _, s := range r.eng.States() {
				if s.Real.Addr() == rs1 {
					st = s
				}
			}
			if !st.Up || st.Failures < retry+1 {
				t.Fatalf("rs1 state %+v", st)
			}
			who, errs = r.ask(tc.kind, 6)
			if len(errs) > 0 || count(who)["rs1"] == 0 {
				t.Fatalf("after rs1 returned: %v %v", who, errs)
			}
		})
	}
}

// Quorum lost: every request is answered by the sorry server; quorum
// back: the sorry server leaves.
func TestE2EQuorumSorry(t *testing.T) {
	conf := strings.Replace(e2eConf("TCP", 80, "HTTP_GET { url { path / } }"), "    rise 2\n",
		fmt.Sprintf("    rise 2\n    quorum 2\n    sorry_server %s 80\n", lab.RIP(3)), 1)
	r := newRig(t, "http", conf)
	rs1, sorry := lab.RIP(1), lab.RIP(3)
	r.waitFor("real servers, no sorry server", func(d map[netip.Addr]int32) bool { _, s := d[sorry]; return len(d) == 2 && !s })
	r.rs[0].stop()
	r.waitFor("only the sorry server", func(d map[netip.Addr]int32) bool { return len(d) == 1 && d[sorry] == 1 })
	who, errs := r.ask("http", 10)
	if len(errs) > 0 || count(who)["rs3"] != 10 {
		t.Fatalf("quorum lost: %v %v", count(who), errs)
	}
	r.rs[0].start()
	r.waitFor("sorry server gone", func(d map[netip.Addr]int32) bool { _, s := d[sorry]; return len(d) == 2 && !s && d[rs1] == 1 })
	who, errs = r.ask("http", 10)
	if len(errs) > 0 || count(who)["rs3"] != 0 || count(who)["rs1"] == 0 {
		t.Fatalf("quorum back: %v %v", count(who), errs)
	}
}

// inhibit_on_failure: the failed server stays listed at weight 0, new
// connections go elsewhere and its connections in progress finish.
func TestE2EInhibit(t *testing.T) {
	conf := strings.Replace(e2eConf("TCP", 80, "TCP_CHECK { }"), "    rise 2\n", "    rise 2\n    inhibit_on_failure\n", 1)
	r := newRig(t, "http", conf)
	rs1 := lab.RIP(1)
	r.waitFor("both real servers", func(d map[netip.Addr]int32) bool { return len(d) == 2 })
	// Four slow requests in progress, two on each server (rr), then
	// rs1's service stops taking new connections.
	r.rs[0].http.SetDelay(2 * time.Second)
	r.rs[1].http.SetDelay(2 * time.Second)
	var slow []lab.Response
	done := make(chan struct{})
	go func() {
		defer close(done)
		slow, _ = lab.GetParallel(r.topo.Client, netip.AddrPortFrom(lab.VIP, 80), 4, 4, 10*time.Second)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for r.rs[0].http.Seen()[lab.CIP]+r.rs[1].http.Seen()[lab.CIP] < 4 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	r.rs[1].http.SetDelay(0)
	r.rs[0].stop()
	r.waitFor("rs1 listed at weight 0", func(d map[netip.Addr]int32) bool { w, ok := d[rs1]; return ok && w == 0 })
	who, errs := r.ask("http", 10)
	if len(errs) > 0 || count(who)["rs2"] != 10 {
		t.Fatalf("while rs1 is inhibited: %v %v", count(who), errs)
	}
	<-done
	n := 0
	for _, x := range slow {
		if x.Err != nil {
			t.Fatalf("a connection in progress failed: %v", x.Err)
		}
		if x.Body == "rs1" {
			n++
		}
	}
	if n == 0 {
		t.Fatalf("no connection in progress on rs1: %+v", slow)
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rs"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
