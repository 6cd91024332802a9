// Package speaker is golvs's BGP speaker: GoBGP (github.com/osrg/gobgp)
// run as a library, holding a session to each configured router and
// carrying the host routes the bgp package's announcer decides on.
//
// It only originates routes: whatever a peer sends is refused at import
// (never kept in the routing table, never passed on to another peer, so
// a director is never a transit) and a peer sending more than MaxPrefixes
// is cut off. A peer that cannot be reached or refuses the connection is
// tried again every connect-retry interval (jittered, GoBGP's own loop);
// a peer whose sessions keep failing after they connect (a bad OPEN,
// garbage, a NOTIFICATION) is held back with an exponential back-off, up
// to MaxBackoff. Every session change is logged. None of this shares
// anything with the packet path: a broken peer never stops forwarding.
package speaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gbgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/golvs/golvs/bgp"
	"github.com/golvs/golvs/internal/ratelog"
)

// Limits and back-off.
const (
	// MaxPrefixes is the most routes a peer may send (golvs uses none);
	// beyond it GoBGP ends the session with a NOTIFICATION, which keeps
	// the memory a peer can make golvs hold bounded.
	MaxPrefixes = 10000
	// FirstBackoff and MaxBackoff bound the back-off of a peer whose
	// sessions fail after connecting, on top of GoBGP's 5 s idle hold.
	FirstBackoff = 5 * time.Second
	MaxBackoff   = 2 * time.Minute
	// opTimeout bounds each call into GoBGP.
	opTimeout = 5 * time.Second
)

// GracefulShutdown is the well-known GRACEFUL_SHUTDOWN community 65535:0
// (RFC 8326).
const GracefulShutdown uint32 = 0xFFFF0000

var (
	famV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	famV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// peer is golvs's view of one session, beside GoBGP's.
type peer struct {
	cfg         bgp.Peer
	state       string
	since       time.Time
	established uint64
	upAt        time.Time
	lastErr     string
	tries       int       // connection attempts (that reached the OPEN exchange) since the last stable session
	failedTry   int       // the attempt whose failure was last handled (GoBGP logs one failure twice)
	heldUntil   time.Time // back-off: disabled until then
	timer       *time.Timer
	gap         bool // coming up: GoBGP's table code does not yet know (see enterGap)
}

// Speaker is a running GoBGP server with golvs's peers.
type Speaker struct {
	cfg  bgp.Config
	s    *server.BgpServer
	logs *ratelog.Limiter
	now  func() time.Time

	mu       sync.Mutex
	cond     *sync.Cond // on mu: gaps or inflight changed, or closed
	peers    map[netip.Addr]*peer
	gaps     int    // peers in the gap (enterGap)
	inflight int    // table changes being made (begin)
	gapsSeen uint64 // gaps entered so far, for tests
	closed   bool
	ctx      context.Context // ended by Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// Start starts GoBGP with cfg (validated by the caller) and adds every
// peer; the sessions come up in the background.
func Start(cfg bgp.Config) (*Speaker, error) {
	out := cfg.Logf
	if out == nil {
		out = func(string, ...any) {}
	}
	sp := &Speaker{cfg: cfg, peers: map[netip.Addr]*peer{}, now: time.Now,
		logs: ratelog.New(out, ratelog.Config{Burst: 5, Interval: time.Minute})}
	sp.cond = sync.NewCond(&sp.mu)
	for _, p := range cfg.Peers {
		sp.peers[p.Addr] = &peer{cfg: p, state: "idle"} // fixed from here on: read by GoBGP's callbacks
	}
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelDebug) // failed connection attempts are logged at debug
	sp.s = server.NewBgpServer(server.LoggerOption(slog.New(&logHandler{sp: sp}), lv))
	go sp.s.Serve()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	err := sp.s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        cfg.ASN,
		RouterId:   cfg.RouterID.String(),
		ListenPort: -1, // golvs connects to its routers; it accepts no session
	}})
	if err != nil {
		sp.s.Stop()
		return nil, fmt.Errorf("bgp: starting GoBGP: %w", err)
	}
	// Refuse every received route: golvs originates, it never learns or
	// passes routes on. (GoBGP runs its own paths through the import
	// policy too: they are the one thing accepted.)
	only := &api.Policy{Name: "golvs-originate-only", Statements: []*api.Statement{{
		Name:       "local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
	}}}
	err = sp.s.AddPolicy(ctx, &api.AddPolicyRequest{Policy: only})
	if err == nil {
		err = sp.s.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT, Policies: []*api.Policy{{Name: only.Name}},
			DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
		}})
	}
	if err != nil {
		sp.close()
		return nil, fmt.Errorf("bgp: import policy: %w", err)
	}
	wctx, wcancel := context.WithCancel(context.Background())
	sp.ctx, sp.cancel = wctx, wcancel
	err = sp.s.WatchEvent(wctx, server.WatchEventMessageCallbacks{OnPeerUpdate: sp.onEvent}, server.WatchPeer())
	if err != nil {
		sp.close()
		return nil, fmt.Errorf("bgp: watching peers: %w", err)
	}
	for _, p := range cfg.Peers {
		if err := sp.s.AddPeer(ctx, &api.AddPeerRequest{Peer: sp.apiPeer(p)}); err != nil {
			sp.close()
			return nil, fmt.Errorf("bgp: peer %s: %w", p, err)
		}
		kind := "eBGP"
		if !p.External(cfg.ASN) {
			kind = "iBGP"
		}
		sp.logs.Logf("bgp: peer %s AS %d (%s), hold time %v", p.Addr, p.ASN, kind, cfg.HoldTime)
	}
	return sp, nil
}

func (sp *Speaker) apiPeer(p bgp.Peer) *api.Peer {
	hold := uint64(sp.cfg.HoldTime / time.Second)
	fams := []*api.AfiSafi{
		{Config: &api.AfiSafiConfig{Family: famV4, Enabled: true}, PrefixLimits: &api.PrefixLimit{Family: famV4, MaxPrefixes: MaxPrefixes}},
		{Config: &api.AfiSafiConfig{Family: famV6, Enabled: true}, PrefixLimits: &api.PrefixLimit{Family: famV6, MaxPrefixes: MaxPrefixes}},
	}
	var gr *api.GracefulRestart
	if rt := sp.cfg.GracefulRestart; rt > 0 {
		gr = &api.GracefulRestart{Enabled: true, RestartTime: uint32(rt / time.Second), LocalRestarting: sp.cfg.Restarting}
		for _, f := range fams {
			f.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
	}
	return &api.Peer{
		GracefulRestart: gr,
		Conf:            &api.PeerConf{NeighborAddress: p.Addr.String(), PeerAsn: p.ASN},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          hold,
			KeepaliveInterval: max(hold/3, 1),
			ConnectRetry:      uint64(sp.cfg.ConnectRetry / time.Second),
		}},
		Transport: &api.Transport{RemotePort: uint32(p.Port)},
		AfiSafis:  fams,
	}
}

// stateName names GoBGP's session states as the FSM does.
func stateName(s gbgp.FSMState) string {
	switch s {
	case gbgp.BGP_FSM_CONNECT:
		return "connect"
	case gbgp.BGP_FSM_ACTIVE:
		return "active"
	case gbgp.BGP_FSM_OPENSENT:
		return "opensent"
	case gbgp.BGP_FSM_OPENCONFIRM:
		return "openconfirm"
	case gbgp.BGP_FSM_ESTABLISHED:
		return "established"
	}
	return "idle"
}

// onEvent follows the sessions: it logs every change and holds back a
// peer whose sessions keep failing.
func (sp *Speaker) onEvent(pe *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if pe == nil || pe.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	addr := pe.Peer.State.NeighborAddress.Unmap()
	st := stateName(pe.Peer.State.SessionState)
	now := sp.now()
	sp.mu.Lock()
	defer sp.mu.Unlock()
	p := sp.peers[addr]
	if p == nil || sp.closed || st == p.state {
		return
	}
	old := p.state
	p.state, p.since = st, now
	switch {
	case st == "established":
		p.established++
		p.upAt = now
		sp.logs.Logf("bgp: peer %s AS %d: session established", addr, p.cfg.ASN)
	case old == "established" || old == "opensent" || old == "openconfirm":
		why := pe.Peer.State.DisconnectMessage
		if why == "" {
			why = "connection closed"
		}
		// A session that held long enough starts the count afresh: it
		// is the one attempt of its series.
		stable := max(time.Minute, 3*sp.cfg.HoldTime)
		if old == "established" && now.Sub(p.upAt) >= stable || p.tries == 0 {
			p.tries = 1
		}
		sp.failedLocked(p, "session down from "+old, why, pe.Peer.State.AdminState != api.PeerState_ADMIN_STATE_UP)
	}
}

// The gap. When a session comes up, GoBGP's FSM goroutine logs "Peer Up",
// sends the peer the table as it stands, tells watchers the peer is
// established, and only then marks the FSM established, which is what
// the code sending later table changes checks. A route added or withdrawn
// in between is changed in golvs's table and sent to no one: the router
// would miss a VIP, or worse keep a withdrawn one, until the session next
// restarts. So the table is not changed while a peer is in that gap:
// enterGap runs in the FSM goroutine at "Peer Up" (it first waits for
// changes under way to finish, so none lands in the gap), and Announce
// and Withdraw wait until no peer is in it. The gap ends when GoBGP
// reports the FSM's own state as past OPENCONFIRM (established, or down
// again), at most opTimeout later: a few milliseconds of delay for table
// changes, only while a session comes up.

// enterGap is called from GoBGP's log of "Peer Up" for the peer key.
func (sp *Speaker) enterGap(key string) {
	a, err := netip.ParseAddr(key)
	if err != nil {
		return
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	p := sp.peers[a.Unmap()]
	if p == nil || p.gap {
		return
	}
	for sp.inflight > 0 && !sp.closed {
		sp.cond.Wait()
	}
	if sp.closed {
		return
	}
	p.gap = true
	sp.gaps++
	sp.gapsSeen++
	sp.wg.Add(1)
	go sp.watchGap(p)
}

// watchGap ends p's gap once GoBGP's FSM has left OPENCONFIRM.
func (sp *Speaker) watchGap(p *peer) {
	defer sp.wg.Done()
	defer sp.leaveGap(p)
	ctx, cancel := context.WithTimeout(sp.ctx, opTimeout)
	defer cancel()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		opening := false // a peer ListPeer does not know is in no gap
		err := sp.s.ListPeer(ctx, &api.ListPeerRequest{Address: p.cfg.Addr.String()}, func(x *api.Peer) {
			opening = x.State != nil && x.State.SessionState == api.PeerState_SESSION_STATE_OPENCONFIRM
		})
		if err == nil && !opening {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (sp *Speaker) leaveGap(p *peer) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if p.gap {
		p.gap = false
		sp.gaps--
		sp.cond.Broadcast()
	}
}

// begin waits until no peer is in the gap and counts a table change
// under way; end ends it.
func (sp *Speaker) begin() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for sp.gaps > 0 && !sp.closed {
		sp.cond.Wait()
	}
	sp.inflight++
}

func (sp *Speaker) end() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.inflight--
	sp.cond.Broadcast()
}

// failedLocked records a failed session (or attempt) and, from the second
// in a row, holds the peer back. GoBGP connects, sends its OPEN and reads
// the peer's in a loop of its own that retries at once (every second or
// so), whatever went wrong; this is where golvs slows a failing peer down.
func (sp *Speaker) failedLocked(p *peer, what, why string, adminDown bool) {
	p.lastErr = why
	addr := p.cfg.Addr
	switch {
	case adminDown || !p.heldUntil.IsZero() || sp.closed:
		sp.logs.Keyf("down"+addr.String(), "bgp: peer %s AS %d: %s (%s)", addr, p.cfg.ASN, what, why)
	case p.tries < 2:
		sp.logs.Keyf("down"+addr.String(), "bgp: peer %s AS %d: %s (%s); retrying", addr, p.cfg.ASN, what, why)
	default:
		d := backoff(p.tries)
		p.heldUntil = sp.now().Add(d)
		sp.logs.Keyf("down"+addr.String(), "bgp: peer %s AS %d: %s (%s), %d failures in a row; retrying in %v", addr, p.cfg.ASN, what, why, p.tries, d)
		sp.hold(p, d)
	}
}

// backoff is the hold-back after n failed sessions in a row (n >= 2).
func backoff(n int) time.Duration {
	d := FirstBackoff
	for i := 2; i < n && d < MaxBackoff; i++ {
		d *= 2
	}
	return min(d, MaxBackoff)
}

// hold disables a peer for d, then enables it again. Called with mu held;
// the GoBGP calls run outside it (GoBGP may be waiting to deliver an
// event to onEvent).
func (sp *Speaker) hold(p *peer, d time.Duration) {
	addr := p.cfg.Addr.String()
	sp.wg.Add(1)
	go func() {
		defer sp.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := sp.s.DisablePeer(ctx, &api.DisablePeerRequest{Address: addr, Communication: "golvs: backing off after failed sessions"}); err != nil {
			sp.logs.Logf("bgp: peer %s: holding back: %v", addr, err)
		}
	}()
	if p.timer != nil {
		p.timer.Stop()
	}
	p.timer = time.AfterFunc(d, func() {
		sp.mu.Lock()
		p.heldUntil = time.Time{}
		closed := sp.closed
		sp.mu.Unlock()
		if closed {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := sp.s.EnablePeer(ctx, &api.EnablePeerRequest{Address: addr}); err != nil {
			sp.logs.Logf("bgp: peer %s: enabling after back-off: %v", addr, err)
		}
	})
}

// path builds a host route with the director as next hop (GoBGP puts the
// session's local address in place of the unspecified one).
func path(p netip.Prefix, gshut bool) (*apiutil.Path, error) {
	nlri, err := gbgp.NewIPAddrPrefix(p)
	if err != nil {
		return nil, err
	}
	attrs := []gbgp.PathAttributeInterface{gbgp.NewPathAttributeOrigin(gbgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	fam := gbgp.RF_IPv4_UC
	if p.Addr().Is4() {
		nh, err := gbgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, nh)
	} else {
		fam = gbgp.RF_IPv6_UC
		mp, err := gbgp.NewPathAttributeMpReachNLRI(fam, []gbgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, mp)
	}
	if gshut {
		attrs = append(attrs, gbgp.NewPathAttributeCommunities([]uint32{GracefulShutdown}))
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs}, nil
}

// Announce implements bgp.Speaker.
func (sp *Speaker) Announce(p netip.Prefix, gshut bool) error {
	pa, err := path(p, gshut)
	if err != nil {
		return err
	}
	sp.begin()
	defer sp.end()
	res, err := sp.s.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{pa}})
	if err == nil && len(res) == 1 && res[0].Error != nil {
		err = res[0].Error
	}
	return err
}

// Withdraw implements bgp.Speaker.
func (sp *Speaker) Withdraw(p netip.Prefix) error {
	pa, err := path(p, false)
	if err != nil {
		return err
	}
	sp.begin()
	defer sp.end()
	return sp.s.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{pa}})
}

// Peers implements bgp.Speaker.
func (sp *Speaker) Peers() []bgp.PeerStatus {
	type counts struct{ in, out, received uint64 }
	got := map[netip.Addr]counts{}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	_ = sp.s.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.State == nil || p.Conf == nil {
			return
		}
		var c counts
		if m := p.State.Messages; m != nil {
			if m.Received != nil {
				c.in = m.Received.Total
			}
			if m.Sent != nil {
				c.out = m.Sent.Total
			}
		}
		for _, af := range p.AfiSafis {
			if af.State != nil {
				c.received += af.State.Received
			}
		}
		if a, err := netip.ParseAddr(p.Conf.NeighborAddress); err == nil {
			got[a.Unmap()] = c
		}
	})
	now := sp.now()
	sp.mu.Lock()
	defer sp.mu.Unlock()
	out := make([]bgp.PeerStatus, 0, len(sp.peers))
	for addr, p := range sp.peers {
		c := got[addr]
		ps := bgp.PeerStatus{Addr: addr.String(), ASN: p.cfg.ASN, State: p.state, Since: p.since, Established: p.established,
			LastError: p.lastErr, MsgsIn: c.in, MsgsOut: c.out, Received: c.received}
		if !p.heldUntil.IsZero() && p.heldUntil.After(now) {
			ps.RetryIn = p.heldUntil.Sub(now)
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(a, b bgp.PeerStatus) int {
		x, _ := netip.ParseAddr(a.Addr)
		y, _ := netip.ParseAddr(b.Addr)
		return x.Compare(y)
	})
	return out
}

// Handover ends every session for a successor process (a graceful
// restart): with Graceful Restart configured, without a NOTIFICATION to
// the peers that negotiated it, which keep the routes until the
// successor announces them again; without it, as Close. GoBGP stops.
func (sp *Speaker) Handover() {
	sp.closeWith(sp.cfg.GracefulRestart > 0)
}

// Close ends every session (a NOTIFICATION Cease to each peer, so routers
// drop the routes at once) and stops GoBGP.
func (sp *Speaker) Close() { sp.closeWith(false) }

func (sp *Speaker) closeWith(graceful bool) {
	sp.mu.Lock()
	if sp.closed {
		sp.mu.Unlock()
		return
	}
	sp.closed = true
	sp.cond.Broadcast()
	for _, p := range sp.peers {
		if p.timer != nil {
			p.timer.Stop()
		}
	}
	sp.mu.Unlock()
	sp.stop(graceful)
}

func (sp *Speaker) close() { sp.stop(false) }

func (sp *Speaker) stop(graceful bool) {
	if sp.cancel != nil {
		sp.cancel()
	}
	sp.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := sp.s.StopBgp(ctx, &api.StopBgpRequest{AllowGracefulRestart: graceful}); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		sp.logs.Logf("bgp: stopping: %v", err)
	}
	sp.s.Stop()
	sp.logs.Flush()
}

// logHandler passes GoBGP's log (slog) to golvs's, rate-limited: warnings
// and errors as they are, debug only for failed connection attempts,
// which become the peer's last error.
type logHandler struct {
	sp    *Speaker
	attrs []slog.Attr
}

func (h *logHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &logHandler{sp: h.sp, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *logHandler) WithGroup(string) slog.Handler { return h }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	var fail string // a failed attempt, in GoBGP's words
	switch {
	case r.Message == "Peer Up":
		// Logged by the FSM goroutine itself, before it sends the table.
		for _, a := range h.attrs {
			if a.Key == "Key" {
				h.sp.enterGap(a.Value.String())
			}
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "Key" {
				h.sp.enterGap(a.Value.String())
			}
			return true
		})
		return nil
	case r.Message == "failed to connect", r.Message == "outgoing connection established",
		r.Message == "outgoing connection IO error", r.Message == "sent notification":
	case r.Level < slog.LevelWarn:
		return nil // the rest of debug; info is configuration and Peer Up/Down, which golvs logs itself
	}
	fields := map[string]string{}
	for _, a := range h.attrs {
		fields[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { fields[a.Key] = a.Value.String(); return true })
	key := fields["Key"]
	switch r.Message {
	case "failed to connect":
		h.sp.note(key, "connect: "+fields["Error"], false, false)
		return nil
	case "outgoing connection established": // TCP connected, OPEN sent
		h.sp.note(key, "", true, false)
		return nil
	case "outgoing connection IO error":
		fail = fields["reason"]
	case "sent notification":
		code, sub := fields["Code"], fields["Subcode"]
		if code == "6" && (sub == "2" || sub == "4") {
			return nil // Cease, administrative shutdown/reset: golvs's own doing
		}
		fail = "sent NOTIFICATION code " + code + " subcode " + sub
	default:
		if e := fields["Error"]; e != "" && strings.HasPrefix(r.Message, "Session will be reset") {
			fail = r.Message + ": " + e
		}
	}
	if fail != "" {
		h.sp.note(key, fail, false, true)
	}
	if r.Level < slog.LevelWarn {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "bgp: gobgp %s: %s", strings.ToLower(r.Level.String()), r.Message)
	for _, k := range []string{"Key", "State", "Reason", "Error", "Data", "Code", "Subcode"} {
		if v, ok := fields[k]; ok {
			fmt.Fprintf(&b, " %s=%s", strings.ToLower(k), v)
		}
	}
	h.sp.logs.Keyf(r.Level.String()+r.Message+key, "%s", b.String())
	return nil
}

// note takes what GoBGP's log says of a peer's connection attempts: why
// one failed (why), that one reached the OPEN exchange (try), that it
// then failed (failed).
func (sp *Speaker) note(key, why string, try, failed bool) {
	a, err := netip.ParseAddr(key)
	if err != nil {
		return
	}
	if len(why) > 200 {
		why = why[:200]
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	p := sp.peers[a.Unmap()]
	if p == nil {
		return
	}
	switch {
	case try:
		p.tries++
	case failed:
		if p.state != "established" && p.failedTry != p.tries { // the first word on this attempt
			p.failedTry = p.tries
			sp.failedLocked(p, "connection failed", why, false)
		}
	case why != "":
		p.lastErr = why
	}
}
