package health

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/lab"
)

var srvIP = netip.MustParseAddr("198.18.7.1")

// checkLab is a namespace with real servers for every checker type on
// 198.18.7.1, and an Env that checks from inside it.
type checkLab struct {
	env    *lab.NSEnv
	ca     string // PEM file of the CA that signed the TLS server
	digest string // MD5 of /ok's body
}

func newCheckLab(t *testing.T) *checkLab {
	t.Helper()
	testutil.RequireNetns(t)
	ns, err := lab.NewNS("hc" + lab.RandomSuffix())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Delete)
	if err := lab.HostAddr(ns, "lo", srvIP, true); err != nil {
		t.Fatal(err)
	}
	env, err := ns.Env()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	cl := &checkLab{env: env}
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello\n")) })
	mux.HandleFunc("/503", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	mux.HandleFunc("/vhost", func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "www.example" {
			w.WriteHeader(404)
		}
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	sum := md5.Sum([]byte("hello\n"))
	cl.digest = hex.EncodeToString(sum[:])
	caPEM, cert := testCert(t)
	cl.ca = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(cl.ca, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	var ln, tln net.Listener
	var pc, silent net.PacketConn
	err = ns.Do(func() error {
		var err error
		if ln, err = net.Listen("tcp4", "198.18.7.1:80"); err != nil {
			return err
		}
		if tln, err = tls.Listen("tcp4", "198.18.7.1:443", &tls.Config{Certificates: []tls.Certificate{cert}}); err != nil {
			return err
		}
		if pc, err = net.ListenPacket("udp4", "198.18.7.1:53"); err != nil {
			return err
		}
		silent, err = net.ListenPacket("udp4", "198.18.7.1:5353")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	go hs.Serve(tln)
	ds := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, m *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(m)
		if m.Question[0].Name != "example.org." {
			r.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(r)
	})}
	go ds.ActivateAndServe()
	t.Cleanup(func() { hs.Close(); ds.Shutdown(); silent.Close() })
	return cl
}

// testCert makes a CA and a server certificate for 198.18.7.1 and
// www.example signed by it.
func testCert(t *testing.T) ([]byte, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "golvs test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "www.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"www.example"}, IPAddresses: []net.IP{srvIP.AsSlice()},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// Every checker type against a real server of its kind: the cases that
// pass, and each way to fail with its reason, all bounded by the timeout.
func TestProbes(t *testing.T) {
	cl := newCheckLab(t)
	at := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(srvIP, port) }
	url := func(path string) []URL { return []URL{{Path: path}} }
	otherCA := filepath.Join(t.TempDir(), "other.pem")
	other, _ := testCert(t)
	os.WriteFile(otherCA, other, 0o600)
	cases := []struct {
		name string
		c    Check
		ok   bool
		why  string
	}{
		{"tcp up", Check{Kind: TCP, Target: at(80)}, true, ""},
		{"tcp refused", Check{Kind: TCP, Target: at(81)}, false, "connection refused"},
		{"tcp bindto", Check{Kind: TCP, Target: at(80), Bind: netip.AddrPortFrom(srvIP, 0)}, true, ""},
		{"tcp bindto foreign", Check{Kind: TCP, Target: at(80), Bind: netip.AddrPortFrom(netip.MustParseAddr("198.18.9.9"), 0)}, false, "bindto"},
		{"http 200", Check{Kind: HTTP, Target: at(80), URLs: url("/ok")}, true, ""},
		{"http digest", Check{Kind: HTTP, Target: at(80), URLs: []URL{{Path: "/ok", Digest: cl.digest}}}, true, ""},
		{"http digest wrong", Check{Kind: HTTP, Target: at(80), URLs: []URL{{Path: "/ok", Digest: strings.Repeat("0", 32)}}}, false, "digest " + cl.digest},
		{"http 503", Check{Kind: HTTP, Target: at(80), URLs: url("/503")}, false, "HTTP status 503"},
		{"http 503 allowed", Check{Kind: HTTP, Target: at(80), URLs: []URL{{Path: "/503", Status: []StatusRange{{200, 299}, {503, 503}}}}}, true, ""},
		{"http 404", Check{Kind: HTTP, Target: at(80), URLs: url("/none")}, false, "HTTP status 404"},
		{"http vhost", Check{Kind: HTTP, Target: at(80), URLs: []URL{{Path: "/vhost", VirtualHost: "www.example"}}}, true, ""},
		{"http no vhost", Check{Kind: HTTP, Target: at(80), URLs: url("/vhost")}, false, "HTTP status 404"},
		{"http all urls", Check{Kind: HTTP, Target: at(80), URLs: []URL{{Path: "/ok"}, {Path: "/503"}}}, false, "/503: HTTP status 503"},
		{"http 1.1", Check{Kind: HTTP, Target: at(80), URLs: url("/ok"), Protocol: "1.1"}, true, ""},
		{"http hangs", Check{Kind: HTTP, Target: at(80), URLs: url("/slow")}, false, "timeout"},
		{"ssl no verify", Check{Kind: SSL, Target: at(443), URLs: url("/ok")}, true, ""},
		{"ssl verify", Check{Kind: SSL, Target: at(443), URLs: url("/ok"), TLS: &TLS{CA: cl.ca}}, true, ""},
		{"ssl verify sni", Check{Kind: SSL, Target: at(443), URLs: []URL{{Path: "/vhost", VirtualHost: "www.example"}}, TLS: &TLS{CA: cl.ca, SNI: true}}, true, ""},
		{"ssl wrong CA", Check{Kind: SSL, Target: at(443), URLs: url("/ok"), TLS: &TLS{CA: otherCA}}, false, "TLS: tls: failed to verify certificate"},
		{"ssl to plain http", Check{Kind: SSL, Target: at(80), URLs: url("/ok")}, false, "TLS:"},
		{"dns soa", Check{Kind: DNS, Target: at(53), QType: dns.TypeSOA, QName: "example.org"}, true, ""},
		{"dns nxdomain", Check{Kind: DNS, Target: at(53), QType: dns.TypeA, QName: "nx.example"}, false, "rcode NXDOMAIN"},
		{"dns refused port", Check{Kind: DNS, Target: at(54), QType: dns.TypeSOA, QName: "."}, false, "connection refused"},
		{"dns silent", Check{Kind: DNS, Target: at(5353), QType: dns.TypeSOA, QName: "."}, false, "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := newProber(&tc.c, cl.env)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			r := p.probe(t.Context(), 400*time.Millisecond)
			if el := time.Since(start); el > 5*time.Second {
				t.Errorf("probe took %v with a 400ms timeout", el)
			}
			if r.ok != tc.ok || !strings.Contains(r.reason, tc.why) {
				t.Fatalf("got ok=%v reason %q, want ok=%v reason containing %q", r.ok, r.reason, tc.ok, tc.why)
			}
		})
	}
}
