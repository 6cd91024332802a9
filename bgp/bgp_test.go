package bgp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
)

func TestParseASN(t *testing.T) {
	cases := []struct {
		in   string
		want uint32
		err  string // substring; "" ok
	}{
		{"65001", 65001, ""},
		{"1", 1, ""},
		{"4200000001", 4200000001, ""},
		{"4294967294", 4294967294, ""},
		{"1.10", 65546, ""}, // asdot: 1*65536 + 10
		{"0.65534", 65534, ""},
		{"0", 0, "RFC 7607"},
		{"23456", 0, "AS_TRANS"},
		{"65535", 0, "RFC 7300"},
		{"4294967295", 0, "RFC 7300"},
		{"0.0", 0, "RFC 7607"},
		{"4294967296", 0, "out of range"},
		{"-1", 0, "not a number"},
		{"AS65001", 0, "not a number"},
		{"", 0, "not a number"},
		{"1.65536", 0, "asdot"},
		{"1.", 0, "asdot"},
		{"65001 ", 0, "not a number"},
	}
	for _, c := range cases {
		got, err := ParseASN(c.in)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("ParseASN(%q): %v", c.in, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrBadASN)):
			t.Errorf("ParseASN(%q) = %d, %v; want an ErrBadASN mentioning %q", c.in, got, err, c.err)
		case got != c.want:
			t.Errorf("ParseASN(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestParseRouterID(t *testing.T) {
	for _, ok := range []string{"198.18.0.1", "10.0.0.1", "1.2.3.4"} {
		if a, err := ParseRouterID(ok); err != nil || a.String() != ok {
			t.Errorf("ParseRouterID(%q) = %v, %v", ok, a, err)
		}
	}
	for _, bad := range []string{"0.0.0.0", "255.255.255.255", "224.0.0.5", "2001:db8::1", "198.18.0", "router1", "", "::ffff:198.18.0.1"} {
		if _, err := ParseRouterID(bad); !errors.Is(err, ErrBadRouterID) {
			t.Errorf("ParseRouterID(%q): %v, want ErrBadRouterID", bad, err)
		}
	}
}

func TestParsePeer(t *testing.T) {
	cases := []struct {
		in   string
		want Peer
		err  string
	}{
		{"198.18.0.254", Peer{Addr: netip.MustParseAddr("198.18.0.254")}, ""},
		{"198.18.0.254:65000", Peer{Addr: netip.MustParseAddr("198.18.0.254"), ASN: 65000}, ""},
		{"2001:db8::1", Peer{Addr: netip.MustParseAddr("2001:db8::1")}, ""},
		{"[2001:db8::1]:4200000000", Peer{Addr: netip.MustParseAddr("2001:db8::1"), ASN: 4200000000}, ""},
		{"[2001:db8::1]", Peer{Addr: netip.MustParseAddr("2001:db8::1")}, ""},
		{"::ffff:198.18.0.254", Peer{Addr: netip.MustParseAddr("198.18.0.254")}, ""},
		{"198.18.0.254:", Peer{}, "empty AS number"},
		{"198.18.0.254:0", Peer{}, "RFC 7607"},
		{"198.18.0.254:23456", Peer{}, "AS_TRANS"},
		{"198.18.0.254:x", Peer{}, "not a number"},
		{"router:65000", Peer{}, "not an IP address"},
		{"[2001:db8::1", Peer{}, "no closing ]"},
		{"[2001:db8::1]65000", Peer{}, "]:ASN expected"},
		{"[2001:db8::1]:", Peer{}, "empty AS number"},
		{"0.0.0.0:65000", Peer{}, "cannot be a neighbour"},
		{"224.0.0.1", Peer{}, "cannot be a neighbour"},
		{"fe80::1%eth0", Peer{}, "not an IP address"},
		{"", Peer{}, "not an IP address"},
	}
	for _, c := range cases {
		got, err := ParsePeer(c.in)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("ParsePeer(%q): %v", c.in, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, ErrBadPeer)):
			t.Errorf("ParsePeer(%q) = %+v, %v; want an ErrBadPeer mentioning %q", c.in, got, err, c.err)
		case got != c.want:
			t.Errorf("ParsePeer(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

func FuzzParsePeer(f *testing.F) {
	for _, s := range []string{"198.18.0.254:65000", "[2001:db8::1]:1.10", "2001:db8::1", "1.2.3.4:", "[::1", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePeer(s)
		if err != nil {
			if !errors.Is(err, ErrBadPeer) {
				t.Fatalf("ParsePeer(%q): %v is not an ErrBadPeer", s, err)
			}
			return
		}
		if !p.Addr.IsValid() || p.Addr.Is4In6() || p.Addr.Zone() != "" {
			t.Fatalf("ParsePeer(%q) = %+v: bad address", s, p)
		}
		if p.ASN != 0 {
			// What String writes, ParsePeer reads back.
			q, err := ParsePeer(p.String())
			if err != nil || q != p {
				t.Fatalf("round trip of %q: %+v -> %q -> %+v, %v", s, p, p.String(), q, err)
			}
		}
	})
}

func FuzzParseASN(f *testing.F) {
	for _, s := range []string{"65001", "1.10", "4294967295", "0.0", "23456"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseASN(s)
		if err != nil {
			if !errors.Is(err, ErrBadASN) {
				t.Fatalf("ParseASN(%q): %v is not an ErrBadASN", s, err)
			}
			return
		}
		if _, bad := reservedASN[uint64(a)]; bad {
			t.Fatalf("ParseASN(%q) = reserved %d", s, a)
		}
		if b, err := ParseASN(fmt.Sprint(a)); err != nil || b != a {
			t.Fatalf("ParseASN(%q) = %d, asplain %d reads %d, %v", s, a, a, b, err)
		}
	})
}

func validConfig() Config {
	return Config{ASN: 65001, RouterID: netip.MustParseAddr("198.18.0.1"),
		Peers: []Peer{{Addr: netip.MustParseAddr("198.18.0.254"), ASN: 65000}, {Addr: netip.MustParseAddr("198.18.0.253")}}}
}

func TestValidate(t *testing.T) {
	c := validConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Peers[1].ASN != 65001 || c.HoldTime != DefaultHoldTime || c.ConnectRetry != DefaultConnectRetry {
		t.Fatalf("defaults not filled: %+v", c)
	}
	cases := []struct {
		name string
		edit func(*Config)
		err  string
	}{
		{"no asn", func(c *Config) { c.ASN = 0 }, "--bgp-asn is missing"},
		{"as_trans", func(c *Config) { c.ASN = 23456 }, "AS_TRANS"},
		{"no router id", func(c *Config) { c.RouterID = netip.Addr{} }, "--bgp-router-id is missing"},
		{"zero router id", func(c *Config) { c.RouterID = netip.IPv4Unspecified() }, "0.0.0.0"},
		{"v6 router id", func(c *Config) { c.RouterID = netip.MustParseAddr("2001:db8::1") }, "IPv4"},
		{"no peers", func(c *Config) { c.Peers = nil }, "no --bgp-peer"},
		{"duplicate peer", func(c *Config) { c.Peers = append(c.Peers, Peer{Addr: c.Peers[0].Addr}) }, "given twice"},
		{"self", func(c *Config) { c.Peers = []Peer{{Addr: c.RouterID}} }, "own router id"},
		{"hold 2s", func(c *Config) { c.HoldTime = 2 * time.Second }, "3s..65535s"},
		{"hold fraction", func(c *Config) { c.HoldTime = 3500 * time.Millisecond }, "whole seconds"},
		{"retry", func(c *Config) { c.ConnectRetry = time.Millisecond }, "connect retry"},
		{"drain", func(c *Config) { c.Drain = -time.Second }, "--bgp-drain"},
		{"wait", func(c *Config) { c.ShutdownWait = time.Hour }, "--bgp-shutdown-wait"},
		{"graceful restart 4096s", func(c *Config) { c.GracefulRestart = 4096 * time.Second }, "--bgp-graceful-restart"},
		{"graceful restart fraction", func(c *Config) { c.GracefulRestart = 1500 * time.Millisecond }, "whole seconds"},
		{"graceful restart negative", func(c *Config) { c.GracefulRestart = -time.Second }, "1s..4095s"},
		{"too many peers", func(c *Config) {
			c.Peers = nil
			for i := range MaxPeers + 1 {
				c.Peers = append(c.Peers, Peer{Addr: netip.AddrFrom4([4]byte{198, 18, 1, byte(i)})})
			}
		}, "at most"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Validate: %v, want an error mentioning %q", err, tc.err)
			}
		})
	}
}

// svc builds a director service with dests of the given weights; a
// negative weight is a removed (unavailable) dest.
func svc(addr string, port uint16, weights ...int) *director.Service {
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr(addr), Port: port}
	s := &director.Service{Config: ipvs.ServiceConfig{ServiceKey: k}}
	for i, w := range weights {
		d := ipvs.NewDest(k, ipvs.DestConfig{Addr: netip.AddrFrom4([4]byte{198, 18, 0, byte(11 + i)}), Port: port, Weight: int32(max(w, 0))})
		if w < 0 {
			d.Unlink()
		}
		s.Dests = append(s.Dests, d)
	}
	return s
}

func TestVIPsOf(t *testing.T) {
	fwm := &director.Service{Config: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{FWMark: 7}}}
	list := []*director.Service{
		svc("198.18.0.100", 80, 1, 1),     // serves
		svc("198.18.0.101", 80, 0, 0),     // all quiesced
		svc("198.18.0.102", 80, -1),       // removed dest
		svc("198.18.0.103", 80),           // no dest
		svc("198.18.0.104", 80, 0),        // one port down...
		svc("198.18.0.104", 443, 1),       // ...another up: announced
		svc("198.18.0.105", 80, 1),        // quorum lost
		svc("198.18.0.106", 80, 1),        // quorum up
		svc("198.18.0.107", 80, 0),        // quorum up but nothing with weight
		svc("::ffff:198.18.0.108", 80, 1), // mapped address: the IPv4 VIP
		svc("2001:db8:18::100", 80, 1),    // IPv6 (ready when the data path is)
		fwm,
	}
	quorum := func(k ipvs.ServiceKey) (bool, bool) {
		switch k.Addr.String() {
		case "198.18.0.105":
			return false, true
		case "198.18.0.106", "198.18.0.107":
			return true, true
		}
		return false, false
	}
	got := VIPsOf(list, quorum)
	want := []VIP{
		{netip.MustParseAddr("198.18.0.100"), true, ""},
		{netip.MustParseAddr("198.18.0.101"), false, "TCP 198.18.0.101:80: no available real server with weight > 0"},
		{netip.MustParseAddr("198.18.0.102"), false, "TCP 198.18.0.102:80: no available real server with weight > 0"},
		{netip.MustParseAddr("198.18.0.103"), false, "TCP 198.18.0.103:80: no available real server with weight > 0"},
		{netip.MustParseAddr("198.18.0.104"), true, ""},
		{netip.MustParseAddr("198.18.0.105"), false, "TCP 198.18.0.105:80: quorum lost"},
		{netip.MustParseAddr("198.18.0.106"), true, ""},
		{netip.MustParseAddr("198.18.0.107"), false, "TCP 198.18.0.107:80: no available real server with weight > 0"},
		{netip.MustParseAddr("198.18.0.108"), true, ""},
		{netip.MustParseAddr("2001:db8:18::100"), true, ""},
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Fatalf("VIPsOf (-want +got):\n%s", d)
	}
	for _, c := range []struct{ a, p string }{{"198.18.0.100", "198.18.0.100/32"}, {"2001:db8:18::100", "2001:db8:18::100/128"}, {"::ffff:198.18.0.1", "198.18.0.1/32"}} {
		if got := HostRoute(netip.MustParseAddr(c.a)).String(); got != c.p {
			t.Errorf("HostRoute(%s) = %s, want %s", c.a, got, c.p)
		}
	}
}

func TestWatchdog(t *testing.T) {
	w := &Watchdog{Stall: 5 * time.Second}
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at      time.Duration
		running bool
		beats   []uint64
		ok      bool
		why     string
	}{
		{0, false, nil, false, "stopped"},
		{0, true, []uint64{1, 1}, true, ""},
		{4 * time.Second, true, []uint64{9, 1}, true, ""},           // worker 1 quiet 4s: fine
		{6 * time.Second, true, []uint64{12, 1}, false, "worker 1"}, // quiet 6s: stalled
		{7 * time.Second, true, []uint64{13, 2}, true, ""},          // moves again
		{8 * time.Second, false, []uint64{13, 2}, false, "stopped"}, // Run returned
	}
	for i, s := range steps {
		ok, why := w.Check(s.running, s.beats, t0.Add(s.at))
		if ok != s.ok || !strings.Contains(why, s.why) {
			t.Errorf("step %d: %v %q, want %v %q", i, ok, why, s.ok, s.why)
		}
	}
}

// fakeSpeaker records the calls, in order, and fails on demand.
type fakeSpeaker struct {
	mu    sync.Mutex
	calls []string
	fail  map[string]int // prefix -> calls to fail
	live  map[netip.Prefix]bool
}

func (f *fakeSpeaker) do(what string, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail[p.String()] > 0 {
		f.fail[p.String()]--
		return errors.New("speaker says no")
	}
	f.calls = append(f.calls, what+" "+p.String())
	if f.live == nil {
		f.live = map[netip.Prefix]bool{}
	}
	f.live[p] = what != "withdraw"
	return nil
}
func (f *fakeSpeaker) Announce(p netip.Prefix, gshut bool) error {
	if gshut {
		return f.do("gshut", p)
	}
	return f.do("announce", p)
}
func (f *fakeSpeaker) Withdraw(p netip.Prefix) error { return f.do("withdraw", p) }
func (f *fakeSpeaker) Peers() []PeerStatus {
	return []PeerStatus{{Addr: "198.18.0.254", ASN: 65000, State: "established"}}
}
func (f *fakeSpeaker) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func TestAnnouncer(t *testing.T) {
	sp := &fakeSpeaker{fail: map[string]int{}}
	var mu sync.Mutex
	vips := []VIP{{Addr: netip.MustParseAddr("198.18.0.100"), Up: true}, {Addr: netip.MustParseAddr("198.18.0.101"), Why: "TCP 198.18.0.101:80: quorum lost"}}
	dpOK, dpWhy := true, ""
	cfg := validConfig()
	cfg.ShutdownWait, cfg.Drain = 30*time.Millisecond, 30*time.Millisecond
	cfg.GracefulRestart = 60 * time.Second
	var logs []string
	cfg.Logf = func(f string, a ...any) { mu.Lock(); logs = append(logs, fmt.Sprintf(f, a...)); mu.Unlock() }
	a := NewAnnouncer(cfg, sp,
		func() []VIP { mu.Lock(); defer mu.Unlock(); return append([]VIP(nil), vips...) },
		func() (bool, string) { mu.Lock(); defer mu.Unlock(); return dpOK, dpWhy })
	set := func(f func()) { mu.Lock(); f(); mu.Unlock() }
	step := func(name string, want ...string) {
		t.Helper()
		a.Reconcile()
		if d := cmp.Diff(want, sp.take()); d != "" {
			t.Fatalf("%s: speaker calls (-want +got):\n%s", name, d)
		}
	}
	step("start", "announce 198.18.0.100/32")
	step("steady")
	set(func() { vips[1].Up, vips[1].Why = true, "" })
	step("quorum back", "announce 198.18.0.101/32")
	set(func() {
		vips[0].Up, vips[0].Why = false, "TCP 198.18.0.100:80: no available real server with weight > 0"
	})
	step("no real server", "withdraw 198.18.0.100/32")
	st := a.Status()
	if st.Routes[0].Announced || st.Routes[0].Reason != "TCP 198.18.0.100:80: no available real server with weight > 0" || !st.Routes[1].Announced {
		t.Fatalf("status %+v", st.Routes)
	}
	set(func() { vips[0].Up, vips[0].Why = true, "" })
	set(func() { dpOK, dpWhy = false, "stalled: worker 0 silent for 6s" })
	step("data path stalled", "withdraw 198.18.0.101/32")
	if st := a.Status(); st.DataPath != "stalled: worker 0 silent for 6s" || st.Routes[0].Reason != "data path stalled: worker 0 silent for 6s" {
		t.Fatalf("status %+v", st)
	}
	set(func() { dpOK, dpWhy = true, "" })
	sp.fail["198.18.0.100/32"] = 1
	step("speaker error", "announce 198.18.0.101/32")
	step("retried", "announce 198.18.0.100/32")
	set(func() { vips = vips[:1] })
	step("service removed", "withdraw 198.18.0.101/32")
	if st := a.Status(); len(st.Routes) != 1 {
		t.Fatalf("routes of removed services kept: %+v", st.Routes)
	}
	set(func() { vips = append(vips, VIP{Addr: netip.MustParseAddr("2001:db8:18::100"), Up: true}) })
	step("ipv6", "announce 2001:db8:18::100/128")

	// Shutdown: GRACEFUL_SHUTDOWN first, withdrawal after ShutdownWait,
	// then the drain; nothing is announced again after it.
	t0 := time.Now()
	done := make(chan struct{})
	go func() { a.Shutdown(context.Background()); close(done) }()
	<-done
	if el := time.Since(t0); el < cfg.ShutdownWait+cfg.Drain {
		t.Errorf("Shutdown returned after %v, want at least wait+drain %v", el, cfg.ShutdownWait+cfg.Drain)
	}
	want := []string{"gshut 198.18.0.100/32", "gshut 2001:db8:18::100/128", "withdraw 198.18.0.100/32", "withdraw 2001:db8:18::100/128"}
	if d := cmp.Diff(want, sp.take()); d != "" {
		t.Fatalf("shutdown calls (-want +got):\n%s", d)
	}
	step("after shutdown")
	st = a.Status()
	if !st.ShuttingDown || st.Routes[0].Announced || st.Routes[0].Reason != "shutting down" {
		t.Fatalf("status after shutdown %+v", st)
	}
	var buf bytes.Buffer
	st.Write(&buf)
	for _, w := range []string{"bgp: AS 65001, router id 198.18.0.1, data path running, graceful restart 1m0s, shutting down", "bgp peer 198.18.0.254 AS 65000: established", "bgp route 198.18.0.100/32: withdrawn (shutting down)"} {
		if !strings.Contains(buf.String(), w) {
			t.Errorf("status text lacks %q:\n%s", w, buf.String())
		}
	}
}

// TestAnnouncerConcurrent: status readers, kicks and the run loop
// together under the race detector; what the speaker was told always
// matches what the status says once the loop is stopped.
func TestAnnouncerConcurrent(t *testing.T) {
	sp := &fakeSpeaker{fail: map[string]int{}}
	var mu sync.Mutex
	up := map[int]bool{}
	vips := func() []VIP {
		mu.Lock()
		defer mu.Unlock()
		var out []VIP
		for i := range 8 {
			out = append(out, VIP{Addr: netip.AddrFrom4([4]byte{198, 18, 0, byte(100 + i)}), Up: up[i], Why: "down"})
		}
		return out
	}
	a := NewAnnouncer(validConfig(), sp, vips, func() (bool, string) { return true, "" })
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.Run(ctx) }()
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				switch g {
				case 0:
					mu.Lock()
					up[i%8] = !up[i%8]
					mu.Unlock()
					a.Kick()
				case 1:
					_ = a.Status()
				case 2:
					a.Reconcile()
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	wg.Wait()
	a.Reconcile()
	st := a.Status()
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for _, r := range st.Routes {
		p := netip.MustParsePrefix(r.Prefix)
		if sp.live[p] != r.Announced {
			t.Errorf("%s: status says announced=%v, the speaker was last told %v", p, r.Announced, sp.live[p])
		}
		i := int(p.Addr().As4()[3]) - 100
		if r.Announced != up[i] {
			t.Errorf("%s: announced=%v, the VIP is up=%v", p, r.Announced, up[i])
		}
	}
}

// BenchmarkReconcile: one announcer pass (5 a second) over 1,000 services
// of 4 real servers each, nothing to change: the steady-state cost.
func BenchmarkReconcile(b *testing.B) {
	var list []*director.Service
	for i := range 1000 {
		list = append(list, svc(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}).String(), 80, 1, 1, 1, 1))
	}
	a := NewAnnouncer(validConfig(), &fakeSpeaker{fail: map[string]int{}},
		func() []VIP { return VIPsOf(list, nil) }, func() (bool, string) { return true, "" })
	a.Reconcile()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		a.Reconcile()
	}
}
