package netio

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Hop is a resolved layer-2 next hop.
type Hop struct {
	IfIndex int
	SrcMAC  [6]byte
	DstMAC  [6]byte
	SrcIP   netip.Addr // the director's own address on that link
	Via     netip.Addr // the next hop's address (a gateway or the target)
}

// Link is what golvs knows of one of the director's interfaces. Links are
// fixed when the Neigh is made (the packet path reads them without a
// lock); what changes (the MTU) is reported through NeighConfig.OnLink.
type Link struct {
	Name  string
	Index int
	MAC   [6]byte
	Addrs []netip.Prefix // IPv4 addresses with their prefixes
	// Addrs6 are its IPv6 addresses of global scope (link-local ones are
	// never a source or a next hop of golvs's).
	Addrs6 []netip.Prefix
}

// NeighKey names a next hop: an address on one interface.
type NeighKey struct {
	IfIndex int
	Addr    netip.Addr
}

// NeighEntry is the kernel's neighbour entry for a next hop as golvs last
// heard it: its NUD state bits (netlink.NUD_*; 0 when the kernel has no
// entry) and its MAC.
type NeighEntry struct {
	State int
	MAC   [6]byte
}

// The kernel's states, grouped as golvs uses them.
const (
	// nudUsable: the kernel would send to this MAC (a stale entry too,
	// while it checks it).
	nudUsable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP
	// nudCurrent: confirmed, being confirmed, or not subject to
	// confirmation; anything else is asked again.
	nudCurrent = netlink.NUD_REACHABLE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP
)

// Usable reports whether frames may go to the entry's MAC.
func (e NeighEntry) Usable() bool { return e.State&nudUsable != 0 && e.MAC != [6]byte{} }

// Failed reports whether the kernel gave up on the address: it answered
// none of the kernel's probes.
func (e NeighEntry) Failed() bool { return e.State&netlink.NUD_FAILED != 0 }

// NeighConfig sets a Neigh up. Zero values take defaults.
type NeighConfig struct {
	// MaxTracked bounds the next hops followed at once (default 65536);
	// those beyond it are refused and counted (NeighStats.Untracked).
	MaxTracked int
	// AskEvery is the least time between two requests to the kernel to
	// check one next hop (default one second).
	AskEvery time.Duration
	// OnLink reports the MTU of each of the interfaces, once at the start
	// and again whenever the kernel says it changed. It is called from
	// the watcher goroutine (and from NewNeigh) and must not block.
	OnLink func(ifindex, mtu int)
	// OnReplaced reports that the name of one of the interfaces now
	// names another interface, which is up: the one served was removed
	// and made again (ifdown and ifup of a VLAN or a bond do that), or
	// renamed and another given its name. Its packet sockets stay bound
	// to the old one. It is called from the watcher goroutine, on every
	// notification about the new interface while it is up (and at each
	// resync), and must not block.
	OnReplaced func(name string, served, now int)
	// OnMAC reports that a served interface's MAC changed (an active-backup
	// bond with fail_over_mac=active taking the new slave's, `ip link set
	// dev X address`): the interface is the same, so its sockets still
	// serve it, but the frames golvs builds must come from the new MAC. It
	// is called from the watcher goroutine, once per change (a change an
	// overrun lost is found by re-reading the links), and must not block.
	OnMAC func(ifindex int, old, now [6]byte)
}

// Defaults.
const (
	DefaultMaxTracked = 65536
	DefaultAskEvery   = time.Second
)

// NeighStats are the resolver's counters.
type NeighStats struct {
	Tracked   int    // next hops followed now
	Untracked int    // next hops wanted but not followed: MaxTracked reached
	Asks      uint64 // checks asked of the kernel (NTF_USE)
	AskErrors uint64 // ... that the kernel refused
	Events    uint64 // kernel notifications about followed next hops
	Overruns  uint64 // notifications lost to a full socket buffer (each followed by a full re-read)
	Resyncs   uint64 // full re-reads of the kernel's neighbour table
}

// Neigh resolves next hops by following the kernel's own tables over
// netlink: routes (RTM_GETROUTE), and MACs from the kernel's neighbour
// table, whose notifications (RTM_NEWNEIGH, RTM_DELNEIGH) it mirrors for
// the next hops golvs uses and nothing else. golvs sends nothing through
// the kernel, so the kernel would never re-check those entries on its own:
// when an entry is not known to be current (STALE, FAILED, gone) golvs asks
// the kernel to check it (RTM_NEWNEIGH with NTF_USE, as if the kernel had
// traffic for it), and the kernel runs its usual state machine: unicast
// probes, then broadcast ARP, with its own timers and sysctls. A real
// server that changes its MAC is followed as soon as the kernel notices.
//
// It also follows link changes (RTM_NEWLINK: the MTU) and route changes
// (RouteGen). It is used on the control path and by housekeeping, never
// per packet.
type Neigh struct {
	nl    *netlink.Handle
	links map[int]*Link // fixed
	c     NeighConfig
	sock  *nl.NetlinkSocket

	mu        sync.Mutex
	macs      map[int][6]byte // the links' MACs as last seen (OnMAC)
	tracked   map[NeighKey]*tracked
	untracked int
	changes   chan struct{} // closed (and replaced) when anything followed changes

	routeGen atomic.Uint64
	asks     atomic.Uint64
	askErrs  atomic.Uint64
	events   atomic.Uint64
	overruns atomic.Uint64
	resyncs  atomic.Uint64

	stop chan struct{}
	done chan struct{}
}

type tracked struct {
	e     NeighEntry
	asked time.Time
	pin   time.Time // followed until then even when no longer wanted
}

// Errors.
var (
	// ErrPending is returned while a next hop's MAC is being resolved.
	ErrPending = errors.New("netio: next hop not resolved yet (the kernel is asking)")
	// ErrNeighFailed is returned when the kernel's neighbour entry for
	// the next hop is FAILED: it answered none of the kernel's probes.
	ErrNeighFailed = errors.New("netio: next hop does not answer ARP (IPv6: neighbour solicitations)")
	// ErrUntracked is returned for a next hop beyond NeighConfig.MaxTracked.
	ErrUntracked = errors.New("netio: too many next hops to follow")
)

// NewNeigh creates a resolver over the given interfaces and starts
// following the kernel's tables. nl is a netlink handle in the director's
// network namespace; the calling thread must be in it too (the
// notification socket is opened here). Close stops it.
func NewNeigh(h *netlink.Handle, names []string, c NeighConfig) (*Neigh, error) {
	if c.MaxTracked <= 0 {
		c.MaxTracked = DefaultMaxTracked
	}
	if c.AskEvery <= 0 {
		c.AskEvery = DefaultAskEvery
	}
	n := &Neigh{nl: h, c: c, links: map[int]*Link{}, macs: map[int][6]byte{}, tracked: map[NeighKey]*tracked{},
		changes: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	// Subscribe before reading anything, so no change falls in between.
	s, err := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_NEIGH, unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netio: subscribing to the kernel's neighbour, link and route changes: %w", err)
	}
	_ = s.SetReceiveBufferSize(1<<20, false) // a bigger buffer, fewer overruns
	n.sock = s
	mtus := map[int]int{}
	for _, name := range names {
		l, err := h.LinkByName(name)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("%w: %q", ErrNoInterface, name)
		}
		attrs := l.Attrs()
		lk := &Link{Name: name, Index: attrs.Index}
		copy(lk.MAC[:], attrs.HardwareAddr)
		addrs, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("netio: listing addresses of %s: %w", name, err)
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP.To4())
			if !ok {
				continue
			}
			ones, _ := a.Mask.Size()
			lk.Addrs = append(lk.Addrs, netip.PrefixFrom(ip, ones))
		}
		addrs6, err := h.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("netio: listing IPv6 addresses of %s: %w", name, err)
		}
		for _, a := range addrs6 {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || ip.Is4In6() || ip.IsLinkLocalUnicast() || ip.IsLoopback() {
				continue
			}
			ones, _ := a.Mask.Size()
			lk.Addrs6 = append(lk.Addrs6, netip.PrefixFrom(ip, ones))
		}
		n.links[lk.Index] = lk
		n.macs[lk.Index] = lk.MAC
		mtus[lk.Index] = attrs.MTU
	}
	if c.OnLink != nil {
		for idx, mtu := range mtus {
			c.OnLink(idx, mtu)
		}
	}
	go n.watch()
	return n, nil
}

// Links returns the interfaces, by index.
func (n *Neigh) Links() map[int]*Link { return n.links }

// Link returns one interface, or nil.
func (n *Neigh) Link(ifindex int) *Link { return n.links[ifindex] }

// Close stops following the kernel.
func (n *Neigh) Close() {
	select {
	case <-n.stop:
		return
	default:
	}
	close(n.stop)
	n.sock.Close() // wakes the watcher
	<-n.done
}

// Changes returns a channel closed at the next change of a followed next
// hop, a route or a link.
func (n *Neigh) Changes() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.changes
}

func (n *Neigh) notifyLocked() {
	close(n.changes)
	n.changes = make(chan struct{})
}

// RouteGen counts the kernel's IPv4 and IPv6 route changes: routes
// computed under an older value may be out of date.
func (n *Neigh) RouteGen() uint64 { return n.routeGen.Load() }

// Stats returns the counters.
func (n *Neigh) Stats() NeighStats {
	n.mu.Lock()
	st := NeighStats{Tracked: len(n.tracked), Untracked: n.untracked}
	n.mu.Unlock()
	st.Asks, st.AskErrors, st.Events = n.asks.Load(), n.askErrs.Load(), n.events.Load()
	st.Overruns, st.Resyncs = n.overruns.Load(), n.resyncs.Load()
	return st
}

// Route finds the interface and next-hop address for dst among golvs's
// interfaces, as the kernel's routing table says.
func (n *Neigh) Route(dst netip.Addr) (l *Link, via netip.Addr, src netip.Addr, err error) {
	routes, err := n.nl.RouteGet(net.IP(dst.AsSlice()))
	if err != nil || len(routes) == 0 {
		return nil, via, src, fmt.Errorf("netio: no route to %s: %v", dst, err)
	}
	r := routes[0]
	l = n.links[r.LinkIndex]
	if l == nil {
		name := fmt.Sprint(r.LinkIndex)
		if lk, err := n.nl.LinkByIndex(r.LinkIndex); err == nil {
			name = lk.Attrs().Name
		}
		return nil, via, src, fmt.Errorf("netio: the route to %s leaves through %s, which golvs does not serve", dst, name)
	}
	via = dst
	if r.Gw != nil {
		via = addrOf(r.Gw, dst.Is4())
	}
	if r.Src != nil {
		src = addrOf(r.Src, dst.Is4())
	}
	if !src.IsValid() {
		if p := l.addrsOf(dst.Is4()); len(p) > 0 {
			src = p[0].Addr()
		}
	}
	if dst.Is6() && !src.IsValid() {
		return nil, via, src, fmt.Errorf("netio: no IPv6 address of global scope on %s to reach %s from", l.Name, dst)
	}
	return l, via, src, nil
}

// addrOf reads a netlink address as IPv4 (v4) or IPv6.
func addrOf(ip net.IP, v4 bool) netip.Addr {
	if v4 {
		ip = ip.To4()
	} else {
		ip = ip.To16()
	}
	a, _ := netip.AddrFromSlice(ip)
	return a
}

func (l *Link) addrsOf(v4 bool) []netip.Prefix {
	if v4 {
		return l.Addrs
	}
	return l.Addrs6
}

// OnLink reports whether dst is on a directly connected network of an
// interface golvs serves.
func (n *Neigh) OnLink(dst netip.Addr) bool {
	for _, l := range n.links {
		for _, p := range l.addrsOf(dst.Is4()) {
			if p.Contains(dst) {
				return true
			}
		}
	}
	return false
}

// Follow sets the next hops to follow: those not listed are forgotten
// (unless pinned), new ones have their kernel entry read at once. Beyond
// MaxTracked, next hops are refused and counted.
func (n *Neigh) Follow(keys []NeighKey) {
	now := time.Now()
	want := make(map[NeighKey]bool, len(keys))
	for _, k := range keys {
		want[k] = true
	}
	n.mu.Lock()
	for k, t := range n.tracked {
		if !want[k] && now.After(t.pin) {
			delete(n.tracked, k)
		}
	}
	fresh := map[int]bool{}
	refused := 0
	for k := range want {
		if n.tracked[k] != nil {
			continue
		}
		if len(n.tracked) >= n.c.MaxTracked {
			refused++
			continue
		}
		n.tracked[k] = &tracked{}
		fresh[k.IfIndex] = true
	}
	n.untracked = refused
	n.mu.Unlock()
	for idx := range fresh {
		n.readLink(idx)
	}
}

// Pin follows one more next hop for at least d (a real server being
// added, before it is in the configuration Follow is given), reading its
// kernel entry at once. It returns false when MaxTracked is reached.
func (n *Neigh) Pin(k NeighKey, d time.Duration) bool {
	n.mu.Lock()
	t := n.tracked[k]
	fresh := t == nil
	if fresh {
		if len(n.tracked) >= n.c.MaxTracked {
			n.mu.Unlock()
			return false
		}
		t = &tracked{}
		n.tracked[k] = t
	}
	if until := time.Now().Add(d); until.After(t.pin) {
		t.pin = until
	}
	n.mu.Unlock()
	if fresh {
		n.readLink(k.IfIndex)
	}
	return true
}

// Entry returns what the kernel last said of a followed next hop. When the
// entry is not known to be current (stale, failed, gone, never resolved),
// it asks the kernel to check it, at most once per AskEvery.
func (n *Neigh) Entry(k NeighKey) (NeighEntry, bool) {
	now := time.Now()
	n.mu.Lock()
	t := n.tracked[k]
	if t == nil {
		n.mu.Unlock()
		return NeighEntry{}, false
	}
	e := t.e
	ask := e.State&nudCurrent == 0 && now.Sub(t.asked) >= n.c.AskEvery
	if ask {
		t.asked = now
	}
	n.mu.Unlock()
	if ask {
		n.ask(k)
	}
	return e, true
}

// Hop returns the next hop through l to via, from the kernel's entry for
// it: ErrPending while the kernel resolves it, ErrNeighFailed when the
// kernel gave up, ErrUntracked when it cannot be followed.
func (n *Neigh) Hop(l *Link, via, src netip.Addr) (Hop, error) {
	h := Hop{IfIndex: l.Index, SrcMAC: n.MAC(l), SrcIP: src, Via: via}
	e, ok := n.Entry(NeighKey{IfIndex: l.Index, Addr: via})
	switch {
	case !ok:
		return h, fmt.Errorf("%w: %d are followed already, %s is not", ErrUntracked, n.c.MaxTracked, via)
	case e.Usable():
		h.DstMAC = e.MAC
		return h, nil
	case e.Failed():
		return h, fmt.Errorf("%w: the kernel's neighbour entry for %s on %s is FAILED", ErrNeighFailed, via, l.Name)
	}
	return h, ErrPending
}

// ask has the kernel check a neighbour as if it had a packet for it
// (NTF_USE): a stale entry is probed, a failed or missing one resolved
// afresh by broadcast ARP. The answer comes as a notification.
func (n *Neigh) ask(k NeighKey) {
	n.asks.Add(1)
	fam := netlink.FAMILY_V4
	if k.Addr.Is6() {
		fam = netlink.FAMILY_V6
	}
	err := n.nl.NeighSet(&netlink.Neigh{LinkIndex: k.IfIndex, Family: fam, IP: net.IP(k.Addr.AsSlice()), Flags: netlink.NTF_USE})
	if err != nil {
		n.askErrs.Add(1)
	}
}

// Resync re-reads the kernel's neighbour table for every followed next
// hop (housekeeping calls it now and then; notifications keep the mirror
// current in between).
func (n *Neigh) Resync() {
	n.resyncs.Add(1)
	n.mu.Lock()
	idx := map[int]bool{}
	for k := range n.tracked {
		idx[k.IfIndex] = true
	}
	n.mu.Unlock()
	for i := range idx {
		n.readLink(i)
	}
}

// readLink reads the kernel's neighbour table of one interface into the
// followed entries on it.
func (n *Neigh) readLink(ifindex int) {
	got := map[netip.Addr]NeighEntry{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		list, err := n.nl.NeighList(ifindex, fam)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return
		}
		for _, ne := range list {
			if a, ok := neighAddr(&ne); ok {
				got[a] = entryOf(&ne)
			}
		}
	}
	n.mu.Lock()
	changed := false
	for k, t := range n.tracked {
		if k.IfIndex != ifindex {
			continue
		}
		e, ok := got[k.Addr]
		if !ok {
			e = NeighEntry{MAC: t.e.MAC} // no entry: remember the MAC, nothing more
		}
		if e != t.e {
			t.e, changed = e, true
		}
	}
	if changed {
		n.notifyLocked()
	}
	n.mu.Unlock()
}

// neighAddr is a neighbour entry's address, IPv4 or IPv6.
func neighAddr(ne *netlink.Neigh) (netip.Addr, bool) {
	switch ne.Family {
	case netlink.FAMILY_V4:
		return netip.AddrFromSlice(ne.IP.To4())
	case netlink.FAMILY_V6:
		a, ok := netip.AddrFromSlice(ne.IP.To16())
		return a, ok && !a.Is4In6()
	}
	return netip.Addr{}, false
}

func entryOf(ne *netlink.Neigh) NeighEntry {
	e := NeighEntry{State: ne.State}
	if len(ne.HardwareAddr) == 6 {
		copy(e.MAC[:], ne.HardwareAddr)
	}
	return e
}

// watch applies the kernel's notifications until Close.
func (n *Neigh) watch() {
	defer close(n.done)
	for {
		msgs, from, err := n.sock.Receive()
		select {
		case <-n.stop:
			return
		default:
		}
		if err != nil {
			switch {
			case errors.Is(err, unix.ENOBUFS):
				// Notifications were lost: apply what is queued
				// (older), then re-read the table (newer).
				n.overruns.Add(1)
				n.drain()
				n.Resync()
				n.checkNames()
				n.routeGen.Add(1)
			case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			case errors.Is(err, os.ErrClosed):
				return
			default:
				time.Sleep(100 * time.Millisecond) // never spin on a broken socket
			}
			continue
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		n.apply(msgs)
	}
}

// drain applies the notifications already queued, without waiting for
// more.
func (n *Neigh) drain() {
	_ = n.sock.SetReceiveTimeout(&unix.Timeval{Usec: 1000})
	defer n.sock.SetReceiveTimeout(&unix.Timeval{})
	for i := 0; i < 10000; i++ {
		msgs, from, err := n.sock.Receive()
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				continue
			}
			return
		}
		if from.Pid == nl.PidKernel {
			n.apply(msgs)
		}
	}
}

func (n *Neigh) apply(msgs []syscall.NetlinkMessage) {
	for i := range msgs {
		m := &msgs[i]
		switch m.Header.Type {
		case unix.RTM_NEWNEIGH, unix.RTM_DELNEIGH:
			n.applyNeigh(m.Header.Type == unix.RTM_DELNEIGH, m.Data)
		case unix.RTM_NEWLINK:
			hdr := unix.NlMsghdr(m.Header) // the same layout, two packages
			l, err := netlink.LinkDeserialize(&hdr, m.Data)
			if err != nil {
				continue
			}
			a := l.Attrs()
			if n.links[a.Index] == nil {
				n.replaced(a) // not one of golvs's interfaces: one under a served name?
				continue
			}
			if n.c.OnLink != nil {
				n.c.OnLink(a.Index, a.MTU)
			}
			n.checkMAC(a)
			n.mu.Lock()
			n.notifyLocked()
			n.mu.Unlock()
		case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
			n.routeGen.Add(1)
			n.mu.Lock()
			n.notifyLocked()
			n.mu.Unlock()
		}
	}
}

// replaced reports a link that is up under the name of a served
// interface but is not that interface (NeighConfig.OnReplaced).
func (n *Neigh) replaced(a *netlink.LinkAttrs) {
	if n.c.OnReplaced == nil || a.Flags&net.FlagUp == 0 {
		return
	}
	for idx, l := range n.links {
		if l.Name == a.Name && idx != a.Index {
			n.c.OnReplaced(a.Name, idx, a.Index)
		}
	}
}

// MAC returns a served link's MAC as last seen: Link.MAC is the one it
// had when golvs started.
func (n *Neigh) MAC(l *Link) [6]byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	if mac, ok := n.macs[l.Index]; ok {
		return mac
	}
	return l.MAC
}

// checkMAC reports a served link whose MAC is not the one last seen
// (NeighConfig.OnMAC). The next hops through it (Hop) have the new one
// as their source from then on.
func (n *Neigh) checkMAC(a *netlink.LinkAttrs) {
	if len(a.HardwareAddr) != 6 {
		return
	}
	mac := [6]byte(a.HardwareAddr)
	n.mu.Lock()
	old, ok := n.macs[a.Index]
	if ok && old != mac {
		n.macs[a.Index] = mac
	}
	n.mu.Unlock()
	if !ok || old == mac {
		return
	}
	if n.c.OnMAC != nil {
		n.c.OnMAC(a.Index, old, mac)
	}
}

// checkNames looks each served link up again, by name and by index, for
// the link notifications an overrun lost (Resync).
func (n *Neigh) checkNames() {
	for idx, l := range n.links {
		if n.c.OnReplaced != nil {
			if nl, err := n.nl.LinkByName(l.Name); err == nil {
				n.replaced(nl.Attrs())
			}
		}
		if nl, err := n.nl.LinkByIndex(idx); err == nil {
			n.checkMAC(nl.Attrs())
		}
	}
}

func (n *Neigh) applyNeigh(del bool, data []byte) {
	ne, err := netlink.NeighDeserialize(data)
	if err != nil {
		return
	}
	a, ok := neighAddr(ne)
	if !ok {
		return
	}
	k := NeighKey{IfIndex: ne.LinkIndex, Addr: a}
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.tracked[k]
	if t == nil {
		return // not a next hop golvs uses: nothing is kept
	}
	n.events.Add(1)
	e := entryOf(ne)
	if del {
		e = NeighEntry{MAC: t.e.MAC}
	} else if e.MAC == ([6]byte{}) {
		e.MAC = t.e.MAC // a state change without the address
	}
	if e != t.e {
		t.e = e
		n.notifyLocked()
	}
}
