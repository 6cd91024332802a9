// Package bgp decides which of golvs's VIPs a director announces to its
// routers, and when: each VIP as a host route (/32, /128) with the
// director as next hop while it can serve it, withdrawn when it cannot (no
// real server available, quorum lost, the data path stopped or stalled)
// and, at shutdown, first marked with the GRACEFUL_SHUTDOWN community
// (RFC 8326), then withdrawn, then drained. Routers that spread a VIP's
// flows over several directors by ECMP (docs/ecmp.md) thus only send
// traffic to directors that forward it.
//
// The BGP sessions themselves are a Speaker (bgp/speaker runs GoBGP);
// this package holds the policy, the configuration and the status, and
// imports no BGP implementation, so the control plane and the metrics
// can show the status without linking one. Nothing here is on the packet
// path: the announcer reads the director's snapshot and heartbeats a few
// times a second. It must never announce a VIP the director cannot serve,
// and a peer's failure must never stop or slow the data path.
package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
)

// Speaker holds the BGP sessions: it announces and withdraws host routes
// to every peer. Its methods are called from one goroutine at a time,
// except Peers (from status readers).
type Speaker interface {
	// Announce (re)announces p with the director as next hop; gshut adds
	// the GRACEFUL_SHUTDOWN community. Announcing a route again replaces
	// it.
	Announce(p netip.Prefix, gshut bool) error
	// Withdraw withdraws p.
	Withdraw(p netip.Prefix) error
	// Peers returns the sessions' state.
	Peers() []PeerStatus
}

// VIP is one virtual address and whether this director can serve it.
type VIP struct {
	Addr netip.Addr
	Up   bool
	Why  string // why not, when !Up
}

// HostRoute returns the host route of a VIP: /32 or /128.
func HostRoute(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

// QuorumFunc reports a service's quorum as the health checks see it;
// known is false for a service no checker watches.
type QuorumFunc func(ipvs.ServiceKey) (up, known bool)

// VIPsOf says, for each address of the services (fwmark services have
// none: their addresses are the mark rules', outside the service table),
// whether this director can serve it: some service of the address has
// its quorum (when health checks watch it) and an available real server
// with weight > 0. A VIP with several services stays announced while any
// of them can be served, since withdrawing the address would take the
// healthy ones down too.
func VIPsOf(list []*director.Service, quorum QuorumFunc) []VIP {
	idx := map[netip.Addr]int{}
	var out []VIP
	for _, sv := range list {
		k := sv.Config.ServiceKey
		if k.FWMark != 0 {
			continue
		}
		a := k.Addr.Unmap()
		i, ok := idx[a]
		if !ok {
			i = len(out)
			idx[a] = i
			out = append(out, VIP{Addr: a})
		}
		why := ""
		if up, known := quorumOf(quorum, k); known && !up {
			why = k.String() + ": quorum lost"
		} else if !anyDest(sv.Dests) {
			why = k.String() + ": no available real server with weight > 0"
		}
		v := &out[i]
		switch {
		case why == "":
			v.Up, v.Why = true, ""
		case !v.Up:
			if v.Why != "" {
				v.Why += "; "
			}
			v.Why += why
		}
	}
	return out
}

func quorumOf(q QuorumFunc, k ipvs.ServiceKey) (up, known bool) {
	if q == nil {
		return false, false
	}
	return q(k)
}

func anyDest(ds []*ipvs.Dest) bool {
	for _, d := range ds {
		if d.Available() && d.Weight() > 0 {
			return true
		}
	}
	return false
}

// Watchdog turns the director's heartbeats into "is the data path
// forwarding": stopped when Run is not running, stalled when a worker's
// round count has not moved for Stall.
type Watchdog struct {
	Stall time.Duration
	prev  []uint64
	moved []time.Time
}

// DefaultStall is how long a worker may not come round its loop (which it
// does at least every 100 ms) before the data path counts as stalled;
// generous, so a loaded host's scheduling delays never withdraw a route.
const DefaultStall = 5 * time.Second

// Check takes one reading of director.Heartbeats.
func (w *Watchdog) Check(running bool, beats []uint64, now time.Time) (ok bool, why string) {
	if !running {
		w.prev, w.moved = nil, nil
		return false, "stopped"
	}
	if len(w.prev) != len(beats) {
		w.prev = slices.Clone(beats)
		w.moved = make([]time.Time, len(beats))
		for i := range w.moved {
			w.moved[i] = now
		}
		return true, ""
	}
	stall := w.Stall
	if stall <= 0 {
		stall = DefaultStall
	}
	var stuck []string
	for i, b := range beats {
		if b != w.prev[i] {
			w.prev[i], w.moved[i] = b, now
			continue
		}
		if d := now.Sub(w.moved[i]); d >= stall {
			stuck = append(stuck, fmt.Sprintf("worker %d silent for %s", i, d.Truncate(time.Second)))
		}
	}
	if len(stuck) > 0 {
		return false, "stalled: " + strings.Join(stuck, ", ")
	}
	return true, ""
}

// route is one prefix's announcement state.
type route struct {
	announced, gshut bool
	why              string
	since            time.Time
}

// Announcer keeps the speaker's routes in step with what the director
// can serve.
type Announcer struct {
	cfg  Config
	sp   Speaker
	vips func() []VIP
	dp   func() (ok bool, why string)
	logf func(string, ...any)
	now  func() time.Time

	mu       sync.Mutex
	routes   map[netip.Prefix]*route
	shutting bool
	dpState  string
	ann, wd  uint64
	kick     chan struct{}
}

// Interval is how often the announcer looks at the director.
const Interval = 200 * time.Millisecond

// NewAnnouncer returns an announcer over a speaker: vips says what can be
// served, dp whether the data path forwards. cfg must be validated.
func NewAnnouncer(cfg Config, sp Speaker, vips func() []VIP, dp func() (bool, string)) *Announcer {
	a := &Announcer{cfg: cfg, sp: sp, vips: vips, dp: dp, logf: cfg.Logf, now: time.Now,
		routes: map[netip.Prefix]*route{}, kick: make(chan struct{}, 1)}
	if a.logf == nil {
		a.logf = func(string, ...any) {}
	}
	return a
}

// Kick asks for a pass now (after a configuration change).
func (a *Announcer) Kick() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run reconciles every Interval, and on Kick, until ctx is done. It does
// not withdraw anything at the end: Shutdown does that.
func (a *Announcer) Run(ctx context.Context) {
	t := time.NewTicker(Interval)
	defer t.Stop()
	for {
		a.Reconcile()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.kick:
		}
	}
}

// Reconcile makes one pass: every VIP that can be served is announced,
// every other withdrawn. A speaker error is logged and the route tried
// again on the next pass.
func (a *Announcer) Reconcile() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.shutting {
		return
	}
	dpOK, dpWhy := a.dp()
	a.dpState = "running"
	if !dpOK {
		a.dpState = dpWhy
	}
	want := map[netip.Prefix]string{} // prefix -> why not ("" serve)
	for _, v := range a.vips() {
		why := v.Why
		if v.Up {
			why = ""
		}
		if why == "" && !dpOK {
			why = "data path " + dpWhy
		}
		want[HostRoute(v.Addr)] = why
	}
	now := a.now()
	for p, why := range want {
		r := a.routes[p]
		if r == nil {
			r = &route{why: "new", since: now}
			a.routes[p] = r
		}
		switch {
		case why == "" && !r.announced:
			if err := a.sp.Announce(p, false); err != nil {
				a.logf("bgp: announcing %s: %v (tried again in %v)", p, err, Interval)
				continue
			}
			a.ann++
			r.announced, r.gshut, r.why, r.since = true, false, "", now
			a.logf("bgp: %s announced", p)
		case why != "" && r.announced:
			if err := a.sp.Withdraw(p); err != nil {
				a.logf("bgp: withdrawing %s: %v (tried again in %v)", p, err, Interval)
				continue
			}
			a.wd++
			r.announced, r.gshut, r.why, r.since = false, false, why, now
			a.logf("bgp: %s withdrawn: %s", p, why)
		case why != "" && r.why != why:
			r.why = why
		}
	}
	for p, r := range a.routes {
		if _, ok := want[p]; ok {
			continue
		}
		if r.announced {
			if err := a.sp.Withdraw(p); err != nil {
				a.logf("bgp: withdrawing %s: %v (tried again in %v)", p, err, Interval)
				continue
			}
			a.wd++
			a.logf("bgp: %s withdrawn: no service has this address any more", p)
		}
		delete(a.routes, p)
	}
}

// Shutdown takes the director out of the routers' paths before it stops:
// every announced route is announced again with the GRACEFUL_SHUTDOWN
// community (routers honouring RFC 8326 prefer the other directors at
// once), after ShutdownWait it is withdrawn, and Shutdown returns after
// Drain, while the data path still forwards what routers send during
// their convergence. ctx cuts the waits short (a second signal).
func (a *Announcer) Shutdown(ctx context.Context) {
	a.mu.Lock()
	a.shutting = true
	var ps []netip.Prefix
	for p, r := range a.routes {
		if r.announced {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	now := a.now()
	for _, p := range ps {
		r := a.routes[p]
		if err := a.sp.Announce(p, true); err != nil {
			a.logf("bgp: announcing %s with GRACEFUL_SHUTDOWN: %v", p, err)
			continue
		}
		a.ann++
		r.gshut, r.since = true, now
	}
	a.mu.Unlock()
	if len(ps) > 0 {
		a.logf("bgp: shutting down: %d routes announced with GRACEFUL_SHUTDOWN (65535:0), withdrawn in %v", len(ps), a.cfg.ShutdownWait)
		sleep(ctx, a.cfg.ShutdownWait)
	}
	a.mu.Lock()
	now = a.now()
	for _, p := range ps {
		r := a.routes[p]
		if err := a.sp.Withdraw(p); err != nil {
			a.logf("bgp: withdrawing %s: %v", p, err)
			continue
		}
		a.wd++
		r.announced, r.gshut, r.why, r.since = false, false, "shutting down", now
	}
	for _, r := range a.routes {
		if !r.announced {
			r.why = "shutting down"
		}
	}
	a.mu.Unlock()
	if len(ps) > 0 {
		a.logf("bgp: shutting down: routes withdrawn, draining for %v", a.cfg.Drain)
		sleep(ctx, a.cfg.Drain)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Status returns the speaker's status.
func (a *Announcer) Status() *Status {
	s := &Status{ASN: a.cfg.ASN, RouterID: a.cfg.RouterID.String(), Peers: a.sp.Peers(), GracefulRestart: a.cfg.GracefulRestart}
	a.mu.Lock()
	s.Announcements, s.Withdrawals, s.ShuttingDown, s.DataPath = a.ann, a.wd, a.shutting, a.dpState
	for p, r := range a.routes {
		s.Routes = append(s.Routes, RouteStatus{Prefix: p.String(), Announced: r.announced, GracefulShutdown: r.gshut, Reason: r.why, Since: r.since})
	}
	a.mu.Unlock()
	if s.DataPath == "" {
		s.DataPath = "not checked yet"
	}
	slices.SortFunc(s.Routes, func(x, y RouteStatus) int {
		px, _ := netip.ParsePrefix(x.Prefix)
		py, _ := netip.ParsePrefix(y.Prefix)
		return px.Addr().Compare(py.Addr())
	})
	return s
}
