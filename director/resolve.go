package director

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
)

// Next-hop resolution. Each dest's next hop (ipvs.Dest.Next, read per
// packet) follows the kernel: the route from its routing table, the MAC
// from its neighbour table, mirrored by netio.Neigh from the kernel's
// notifications. Housekeeping re-derives every next hop on each change the
// kernel reports, every half second, and on a kick from the packet path;
// the kernel checks the entries golvs uses when golvs asks it to. A new
// dest's next hop is resolved before it is published (resolveNew), so its
// first SYN is not dropped.

const (
	// resolveWait bounds how long AddDest waits for a new real server's
	// MAC (the kernel's ARP round trip on a LAN takes well under a
	// millisecond; a dead server costs the whole wait, once).
	resolveWait = time.Second
	// rerouteFailed is how often a dest without a route is routed again.
	rerouteFailed = time.Second
	// rerouteEvery bounds how often a route change reroutes every dest.
	rerouteEvery = time.Second
)

// resolver is housekeeping's state for next hops.
type resolver struct {
	mu          sync.Mutex
	dests       map[*ipvs.Dest]*destRoute
	routeGen    uint64
	lastReroute time.Time
}

// destRoute is the route a dest's next hop was computed from, and the last
// line logged about it (a line is logged when the state changes, not on
// every retry).
type destRoute struct {
	l        *netio.Link
	via, src netip.Addr
	err      error
	at       time.Time
	logged   string
}

func routeDest(n *netio.Neigh, a netip.Addr, now time.Time) *destRoute {
	l, via, src, err := n.Route(a)
	return &destRoute{l: l, via: via, src: src, err: err, at: now}
}

// resolve re-derives every dest's next hop from the kernel's state. all
// also re-reads every route and the kernel's neighbour table (a periodic
// safety net: notifications keep both current in between).
func (d *Director) resolve(all bool) {
	n := d.neigh
	if n == nil {
		return
	}
	r := &d.res
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	gen := n.RouteGen()
	reroute := all || gen != r.routeGen && now.Sub(r.lastReroute) >= rerouteEvery
	if reroute {
		r.routeGen, r.lastReroute = gen, now
	}
	live := map[*ipvs.Dest]*destRoute{}
	routed := map[netip.Addr]*destRoute{} // one route lookup per address per pass
	var keys []netio.NeighKey
	for _, sv := range d.snap.Load().List {
		for _, dd := range sv.Dests {
			if live[dd] != nil {
				continue
			}
			st := r.dests[dd]
			if st == nil || reroute || st.err != nil && now.Sub(st.at) >= rerouteFailed {
				nst := routed[dd.Addr]
				if nst == nil {
					nst = routeDest(n, dd.Addr, now)
					routed[dd.Addr] = nst
				}
				c := *nst
				if st != nil {
					c.logged = st.logged
				}
				st = &c
			}
			live[dd] = st
			if st.err == nil {
				keys = append(keys, netio.NeighKey{IfIndex: st.l.Index, Addr: st.via})
			}
		}
	}
	r.dests = live
	n.Follow(keys)
	if all {
		n.Resync()
	}
	for dd, st := range live {
		d.applyHop(n, dd, st)
	}
	if all {
		if st := n.Stats(); st.Untracked > 0 {
			d.logf("next hops: %d real servers' next hops are not followed: the limit of %d is reached", st.Untracked, netio.DefaultMaxTracked)
		}
	}
}

// applyHop sets a dest's next hop from its route and the kernel's
// neighbour entry: the MAC when the kernel has a usable one, nothing
// (packets counted as next-hop-unresolved) when the kernel gave up or
// there is no route; while the kernel resolves, the last hop stays.
func (d *Director) applyHop(n *netio.Neigh, dd *ipvs.Dest, st *destRoute) {
	if st.err != nil {
		dd.Next.Store(nil)
		d.logHop(st, fmt.Sprintf("next hop for %s: %v", dd.Addr, st.err))
		return
	}
	h, err := n.Hop(st.l, st.via, st.src)
	switch {
	case err == nil:
		nh := ipvs.NextHop{IfIndex: h.IfIndex, SrcMAC: h.SrcMAC, DstMAC: h.DstMAC, SrcIP: h.SrcIP}
		if old := dd.Next.Load(); old == nil || *old != nh {
			dd.Next.Store(&nh)
		}
		d.logHop(st, fmt.Sprintf("next hop for %s: %s via %s (%s)", dd.Addr, h.Via, st.l.Name, net.HardwareAddr(h.DstMAC[:])))
		return
	case errors.Is(err, netio.ErrPending):
		return
	}
	dd.Next.Store(nil)
	d.logHop(st, fmt.Sprintf("next hop for %s: %v", dd.Addr, err))
}

// logHop logs a dest's resolution when it changed since the last line
// (not on every retry), through the rate limiter (a next hop that flaps
// repeats the same lines, which are summarised).
func (d *Director) logHop(st *destRoute, line string) {
	if line == st.logged {
		return
	}
	st.logged = line
	d.logf("%s", line) // a flapping next hop repeats its lines: limited
}

// resolveNew resolves the next hops of real servers about to be added,
// waiting up to resolveWait for the kernel's answers, so that the dests
// are published with their next hops and their first packets are not
// dropped. A nil hop is one still unresolved (no route, no answer yet, the
// kernel gave up): housekeeping keeps at it.
func (d *Director) resolveNew(addrs []netip.Addr) []*ipvs.NextHop {
	hops := make([]*ipvs.NextHop, len(addrs))
	n := d.neigh
	if n == nil || len(addrs) == 0 {
		return hops
	}
	deadline := time.Now().Add(resolveWait)
	routes := make([]*destRoute, len(addrs))
	now := time.Now()
	for i, a := range addrs {
		st := routeDest(n, a, now)
		if st.err != nil {
			continue
		}
		// Follow it until housekeeping finds it in the configuration.
		if n.Pin(netio.NeighKey{IfIndex: st.l.Index, Addr: st.via}, resolveWait+10*time.Second) {
			routes[i] = st
		}
	}
	for {
		changes := n.Changes()
		pending := false
		for i, st := range routes {
			if st == nil {
				continue
			}
			h, err := n.Hop(st.l, st.via, st.src)
			switch {
			case err == nil:
				hops[i] = &ipvs.NextHop{IfIndex: h.IfIndex, SrcMAC: h.SrcMAC, DstMAC: h.DstMAC, SrcIP: h.SrcIP}
				routes[i] = nil
			case errors.Is(err, netio.ErrPending):
				pending = true
			default:
				routes[i] = nil // nothing to wait for
			}
		}
		wait := time.Until(deadline)
		if !pending || wait <= 0 {
			return hops
		}
		select {
		case <-changes:
		case <-time.After(min(wait, 100*time.Millisecond)):
		}
	}
}

func (d *Director) kickResolver() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Resolved reports whether every dest of every service has a next hop.
func (d *Director) Resolved() bool {
	for _, sv := range d.snap.Load().List {
		for _, dd := range sv.Dests {
			if dd.Next.Load() == nil {
				return false
			}
		}
	}
	return true
}

// WaitResolved waits until every dest of every service has a next hop, or
// ctx ends. Labs and tests call it before sending traffic.
func (d *Director) WaitResolved(ctx context.Context) error {
	for {
		missing := ""
		for _, sv := range d.snap.Load().List {
			for _, dd := range sv.Dests {
				if dd.Next.Load() == nil {
					missing = dd.Addr.String()
				}
			}
		}
		if missing == "" {
			return nil
		}
		d.kickResolver()
		select {
		case <-ctx.Done():
			return fmt.Errorf("director: no next hop for real server %s (does it answer ARP, or IPv6 neighbour solicitations, on a directly connected network?)", missing)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Names of the resolver's counter sets.
var (
	neighEventNames = []string{"asks", "ask-errors", "events", "overruns", "resyncs"}
	neighEntryNames = []string{"followed", "not-followed-limit"}
)

// housekeepingSets are the next-hop resolver's and the log limiter's
// counter sets (CounterSets).
func (d *Director) housekeepingSets() []CounterSet {
	var st netio.NeighStats
	if n := d.neigh; n != nil {
		st = n.Stats()
	}
	return []CounterSet{
		{
			Name:  "neighbour_events",
			Help:  "Next-hop resolution: checks asked of the kernel (NTF_USE) and those it refused, kernel neighbour notifications about followed next hops, notifications lost to a full socket buffer, full re-reads of the kernel's table.",
			Label: "event", Names: neighEventNames, Values: []uint64{st.Asks, st.AskErrors, st.Events, st.Overruns, st.Resyncs},
		},
		{
			Name:  "neighbour_entries",
			Help:  "Next hops whose kernel neighbour entries golvs follows, and those it does not follow because the limit is reached.",
			Label: "state", Names: neighEntryNames, Values: []uint64{uint64(st.Tracked), uint64(st.Untracked)}, Gauge: true,
		},
		{
			Name:  "log_lines_suppressed",
			Help:  "Log lines held back by the rate limit (an identical line at most once a minute); each interval's count is logged.",
			Label: "reason", Names: []string{"repeated"}, Values: []uint64{d.logs.Suppressed()},
		},
	}
}

// Named is one named counter.
type Named struct {
	Name  string
	Value uint64
}

// HousekeepingCounters are the resolver's and the log limiter's counters
// by name, for the control socket's status reply: neigh-<name> and
// log-suppressed.
func (d *Director) HousekeepingCounters() []Named {
	var out []Named
	for _, s := range d.housekeepingSets() {
		for i, n := range s.Names {
			name := "neigh-" + n
			if s.Name == "log_lines_suppressed" {
				name = "log-suppressed"
			}
			out = append(out, Named{name, s.Values[i]})
		}
	}
	return out
}
