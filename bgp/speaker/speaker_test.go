package speaker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gbgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/golvs/golvs/bgp"
)

// freePort returns a TCP port nothing listens on at host right now.
func freePort(t *testing.T, host string) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Skipf("no %s here: %v", host, err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// Sessions in these tests use the production hold time (9 s): a loaded CI
// machine running the race detector must not drop one between keepalives.

// router is a second, independent GoBGP instance acting as the routers
// golvs peers with: it accepts golvs's session and keeps what it learns.
// The tests do not run in parallel: GoBGP's StartBgp sets package
// variables (route selection options), so two servers starting at once
// race (one speaker per golvs process never does).
type router struct {
	s    *server.BgpServer
	port uint16
}

func newRouter(t *testing.T, host string, peerASN uint32) *router {
	t.Helper()
	r := &router{s: server.NewBgpServer(), port: freePort(t, host)}
	go r.s.Serve()
	ctx := context.Background()
	if err := r.s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: 65000, RouterId: "198.18.0.254", ListenPort: int32(r.port), ListenAddresses: []string{host},
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.s.StopBgp(context.Background(), &api.StopBgpRequest{})
		r.s.Stop()
	})
	err := r.s.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: host, PeerAsn: peerASN},
		Transport: &api.Transport{PassiveMode: true},
		Timers:    &api.Timers{Config: &api.TimersConfig{HoldTime: 9, KeepaliveInterval: 3}},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: famV4, Enabled: true}},
			{Config: &api.AfiSafiConfig{Family: famV6, Enabled: true}},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// peerStates describes the router's sessions, for a failing test's log.
func (r *router) peerStates() string {
	var b strings.Builder
	_ = r.s.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.State != nil {
			fmt.Fprintf(&b, "%s %v (received %d messages, %d updates); ", p.State.NeighborAddress, p.State.SessionState,
				p.State.GetMessages().GetReceived().GetTotal(), p.State.GetMessages().GetReceived().GetUpdate())
		}
	})
	return b.String()
}

// learned is one route the router holds, decoded from its attributes.
type learned struct {
	nextHop     string
	communities []uint32
}

func (r *router) routes(t *testing.T, fam gbgp.Family) map[string]learned {
	t.Helper()
	out := map[string]learned{}
	err := r.s.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: fam}, func(prefix gbgp.NLRI, paths []*apiutil.Path) {
		for _, p := range paths {
			var l learned
			for _, a := range p.Attrs {
				switch x := a.(type) {
				case *gbgp.PathAttributeNextHop:
					l.nextHop = x.Value.String()
				case *gbgp.PathAttributeMpReachNLRI:
					l.nextHop = x.Nexthop.String()
				case *gbgp.PathAttributeCommunities:
					l.communities = x.Value
				}
			}
			out[prefix.String()] = l
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// eventually polls cond for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) logf(f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.TrimSpace(fmt.Sprintf(f, a...)))
}

func (l *logSink) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

func (l *logSink) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, x := range l.lines {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}

func start(t *testing.T, host string, peers ...bgp.Peer) (*Speaker, *logSink) {
	t.Helper()
	logs := &logSink{}
	cfg := bgp.Config{ASN: 65001, RouterID: netip.MustParseAddr("198.18.0.1"), Peers: peers,
		HoldTime: 9 * time.Second, ConnectRetry: time.Second, Logf: logs.logf}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	sp, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.Close)
	return sp, logs
}

func peerState(sp *Speaker, addr string) bgp.PeerStatus {
	for _, p := range sp.Peers() {
		if p.Addr == addr {
			return p
		}
	}
	return bgp.PeerStatus{}
}

// TestAnnounceToGoBGP: a host route reaches a second BGP implementation
// with golvs's session address as next hop; the GRACEFUL_SHUTDOWN
// re-announcement carries 65535:0; the withdrawal removes it.
func TestAnnounceToGoBGP(t *testing.T) {
	for _, tc := range []struct {
		name, host, prefix string
		fam                gbgp.Family
	}{
		{"ipv4", "127.0.0.1", "198.18.0.100/32", gbgp.RF_IPv4_UC},
		{"ipv6", "::1", "2001:db8:18::100/128", gbgp.RF_IPv6_UC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRouter(t, tc.host, 65001)
			sp, logs := start(t, tc.host, bgp.Peer{Addr: netip.MustParseAddr(tc.host), ASN: 65000, Port: r.port})
			defer func() {
				if t.Failed() {
					t.Logf("golvs's peers: %+v\nrouter's view: %s\nlog: %q", sp.Peers(), r.peerStates(), logs.snapshot())
				}
			}()
			eventually(t, 20*time.Second, "session established", func() bool { return peerState(sp, tc.host).State == "established" })
			if !logs.has("session established") {
				t.Errorf("no log line for the session coming up: %q", logs.snapshot())
			}
			p := netip.MustParsePrefix(tc.prefix)
			if err := sp.Announce(p, false); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "route learned", func() bool { _, ok := r.routes(t, tc.fam)[tc.prefix]; return ok })
			got := r.routes(t, tc.fam)[tc.prefix]
			if got.nextHop != tc.host {
				t.Errorf("next hop %q, want golvs's session address %s", got.nextHop, tc.host)
			}
			if len(got.communities) != 0 {
				t.Errorf("communities %x before shutdown, want none", got.communities)
			}
			if err := sp.Announce(p, true); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "GRACEFUL_SHUTDOWN learned", func() bool {
				c := r.routes(t, tc.fam)[tc.prefix].communities
				return len(c) == 1 && c[0] == 0xFFFF0000
			})
			if err := sp.Withdraw(p); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "route withdrawn", func() bool { _, ok := r.routes(t, tc.fam)[tc.prefix]; return !ok })
			st := peerState(sp, tc.host)
			if st.Established != 1 || st.MsgsIn == 0 || st.MsgsOut == 0 || st.ASN != 65000 {
				t.Errorf("peer status %+v: want established once, messages both ways, AS 65000", st)
			}
		})
	}
}

// TestRoutesFromPeersRefused: what a router sends is neither kept nor
// passed on (golvs is never a transit).
func TestRoutesFromPeersRefused(t *testing.T) {
	r := newRouter(t, "127.0.0.1", 65001)
	pa, err := path(netip.MustParsePrefix("198.19.5.0/24"), false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.s.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{pa}}); err != nil {
		t.Fatal(err)
	}
	sp, _ := start(t, "127.0.0.1", bgp.Peer{Addr: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: r.port})
	eventually(t, 20*time.Second, "session established", func() bool { return peerState(sp, "127.0.0.1").State == "established" })
	eventually(t, 10*time.Second, "the router's route received", func() bool { return peerState(sp, "127.0.0.1").Received == 1 })
	n := 0
	err = sp.s.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: gbgp.RF_IPv4_UC}, func(gbgp.NLRI, []*apiutil.Path) { n++ })
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("golvs's routing table holds %d routes learned from its peer, want 0", n)
	}
}

// TestBadPeers: a peer that refuses connections and one that answers with
// garbage are logged, retried, and never established; the speaker keeps
// serving a good peer beside them.
func TestBadPeers(t *testing.T) {
	garbage, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("127.0.0.2 not usable here: %v", err)
	}
	defer garbage.Close()
	var mu sync.Mutex
	var accepts []time.Time
	go func() {
		for {
			c, err := garbage.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepts = append(accepts, time.Now())
			mu.Unlock()
			go func() {
				defer c.Close()
				// A header of the right size with no marker and a
				// message type BGP does not have.
				hdr := make([]byte, 19)
				hdr[17], hdr[18] = 19, 99
				_, _ = c.Write(hdr)
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	gport := uint16(garbage.Addr().(*net.TCPAddr).Port)
	refused := freePort(t, "127.0.0.3")
	r := newRouter(t, "127.0.0.1", 65001)
	sp, logs := start(t, "127.0.0.1",
		bgp.Peer{Addr: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: r.port},
		bgp.Peer{Addr: netip.MustParseAddr("127.0.0.2"), ASN: 65000, Port: gport},
		bgp.Peer{Addr: netip.MustParseAddr("127.0.0.3"), ASN: 65000, Port: refused},
	)
	if err := sp.Announce(netip.MustParsePrefix("198.18.0.100/32"), false); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the good peer learns the route", func() bool { _, ok := r.routes(t, gbgp.RF_IPv4_UC)["198.18.0.100/32"]; return ok })
	// Two attempts in a row fail, then golvs holds the peer back.
	eventually(t, 60*time.Second, "garbage peer tried three times", func() bool { mu.Lock(); defer mu.Unlock(); return len(accepts) >= 3 })
	mu.Lock()
	if gap := accepts[2].Sub(accepts[1]); gap < FirstBackoff {
		t.Errorf("third attempt %v after the second, want at least the back-off %v", gap, FirstBackoff)
	}
	mu.Unlock()
	defer func() {
		if t.Failed() {
			t.Logf("peers: %+v\nlog: %q", sp.Peers(), logs.snapshot())
		}
	}()
	eventually(t, 10*time.Second, "errors recorded", func() bool {
		return peerState(sp, "127.0.0.2").LastError != "" && strings.Contains(peerState(sp, "127.0.0.3").LastError, "refused")
	})
	for _, a := range []string{"127.0.0.2", "127.0.0.3"} {
		if st := peerState(sp, a); st.Established != 0 || st.State == "established" {
			t.Errorf("peer %s: %+v, want never established", a, st)
		}
	}
	if !logs.has("127.0.0.2") {
		t.Errorf("the garbage peer's failures are not logged: %q", logs.snapshot())
	}
	if st := peerState(sp, "127.0.0.1"); st.State != "established" || st.Established != 1 {
		t.Errorf("good peer %+v: want established once, undisturbed", st)
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 120 * time.Second, 120 * time.Second}
	for i, w := range want {
		if got := backoff(i + 2); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+2, got, w)
		}
	}
}

// TestAnnounceAtEstablishment: a route announced at the very moment a
// session comes up still reaches the router. GoBGP tells watchers that a
// peer is established before its FSM says so to its own table code; a
// path added in between would be in golvs's table and sent to no one
// (the gap, see enterGap). Each round announces from the log line of the
// session coming up, the earliest any caller can know; the window is too
// short to hit reliably, so TestGap checks the gate itself.
func TestAnnounceAtEstablishment(t *testing.T) {
	for round := range 3 {
		// A subtest a round: its router stops before the next starts
		// (GoBGP servers must not start while another runs, see router).
		t.Run(fmt.Sprint(round), func(t *testing.T) { announceAtEstablishment(t, round) })
	}
}

func announceAtEstablishment(t *testing.T, round int) {
	r := newRouter(t, "127.0.0.1", 65001)
	p := netip.MustParsePrefix(fmt.Sprintf("198.18.0.%d/32", 100+round))
	var sp *Speaker
	ready := make(chan struct{}) // closed once sp is set
	errc := make(chan error, 8)
	cfg := bgp.Config{ASN: 65001, RouterID: netip.MustParseAddr("198.18.0.1"),
		Peers:    []bgp.Peer{{Addr: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: r.port}},
		HoldTime: 9 * time.Second, ConnectRetry: time.Second,
		Logf: func(f string, a ...any) {
			if strings.Contains(fmt.Sprintf(f, a...), "session established") {
				go func() {
					<-ready
					select {
					case errc <- sp.Announce(p, false):
					default:
					}
				}()
			}
		}}
	sp, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.Close)
	close(ready)
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("session not established within 20s")
	}
	eventually(t, 10*time.Second, "route announced at establishment learned", func() bool {
		_, ok := r.routes(t, gbgp.RF_IPv4_UC)[p.String()]
		return ok
	})
	sp.mu.Lock()
	seen, gaps := sp.gapsSeen, sp.gaps
	sp.mu.Unlock()
	if seen != 1 || gaps != 0 {
		t.Errorf("gaps entered %d, open %d: want 1 and 0 (does GoBGP still log \"Peer Up\" before it sends the table?)", seen, gaps)
	}
}

// TestWithdrawAtEstablishment: a route withdrawn at the moment a session
// comes up (from the log line of it coming up) is withdrawn at the router
// too, and the session stays up.
func TestWithdrawAtEstablishment(t *testing.T) {
	r := newRouter(t, "127.0.0.1", 65001)
	keep, drop := netip.MustParsePrefix("198.18.0.100/32"), netip.MustParsePrefix("198.18.0.101/32")
	var sp *Speaker
	ready, withdrawn := make(chan struct{}), make(chan struct{})
	var once sync.Once
	logs := &logSink{}
	cfg := bgp.Config{ASN: 65001, RouterID: netip.MustParseAddr("198.18.0.1"),
		Peers:    []bgp.Peer{{Addr: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: r.port}},
		HoldTime: 9 * time.Second, ConnectRetry: time.Second,
		Logf: func(f string, a ...any) {
			logs.logf(f, a...)
			if strings.Contains(fmt.Sprintf(f, a...), "session established") {
				once.Do(func() {
					go func() {
						<-ready
						if err := sp.Withdraw(drop); err != nil {
							t.Error(err)
						}
						close(withdrawn)
					}()
				})
			}
		}}
	sp, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.Close)
	for _, p := range []netip.Prefix{keep, drop} {
		if err := sp.Announce(p, false); err != nil {
			t.Fatal(err)
		}
	}
	close(ready)
	defer func() {
		if t.Failed() {
			t.Logf("golvs's peers: %+v\nrouter's view: %s\nlog: %q", sp.Peers(), r.peerStates(), logs.snapshot())
		}
	}()
	select {
	case <-withdrawn:
	case <-time.After(20 * time.Second):
		t.Fatal("session not established within 20s")
	}
	eventually(t, 10*time.Second, "router holds exactly the route still announced", func() bool {
		got := r.routes(t, gbgp.RF_IPv4_UC)
		_, k := got[keep.String()]
		_, d := got[drop.String()]
		return k && !d && len(got) == 1
	})
	if st := peerState(sp, "127.0.0.1"); st.Established != 1 || st.State != "established" {
		t.Errorf("peer %+v: want the one session, still up", st)
	}
}

// TestGap: while a peer is in the gap no table change is made, a change
// under way holds the gap back until it is done, and the gap ends once
// GoBGP's FSM is past OPENCONFIRM.
func TestGap(t *testing.T) {
	r := newRouter(t, "127.0.0.1", 65001)
	sp, _ := start(t, "127.0.0.1", bgp.Peer{Addr: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: r.port})
	eventually(t, 20*time.Second, "session established", func() bool { return peerState(sp, "127.0.0.1").State == "established" })
	p := sp.peers[netip.MustParseAddr("127.0.0.1")]

	// A gap held open by hand (watchGap's poll would end it at once: the
	// FSM is established) blocks Announce until it ends.
	sp.mu.Lock()
	p.gap, sp.gaps = true, 1
	sp.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- sp.Announce(netip.MustParsePrefix("198.18.0.100/32"), false) }()
	select {
	case err := <-done:
		t.Fatalf("Announce returned (%v) while a peer was in the gap", err)
	case <-time.After(300 * time.Millisecond):
	}
	sp.leaveGap(p)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "route learned after the gap", func() bool { _, ok := r.routes(t, gbgp.RF_IPv4_UC)["198.18.0.100/32"]; return ok })

	// A change under way holds enterGap back; once in, the gap ends by
	// itself because the FSM is established.
	sp.begin()
	entered := make(chan struct{})
	go func() { sp.enterGap("127.0.0.1"); close(entered) }()
	select {
	case <-entered:
		t.Fatal("enterGap returned while a change was under way")
	case <-time.After(300 * time.Millisecond):
	}
	sp.end()
	<-entered
	eventually(t, 10*time.Second, "gap ended by watchGap", func() bool {
		sp.mu.Lock()
		defer sp.mu.Unlock()
		return sp.gaps == 0 && !p.gap
	})
}
