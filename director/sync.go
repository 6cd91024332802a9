package director

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvssync"
	"github.com/golvs/golvs/netio"
)

// The director's side of connection synchronisation (package ipvssync):
//
//   - backup_only: while a backup daemon runs with it, workers
//     forward nothing and answer no ARP for VIPs (or FULLNAT local
//     addresses); frames are counted as "backup". The synced conns wait
//     in the table, kept alive by the master's messages, until the daemon
//     switches to master: then the first packet of each finds its conn.
//   - Install: a received record is bound to the same real server as on
//     the master (ip_vs_find_dest: the service by fwmark, else by
//     protocol, VIP and port, else the port-zero service; then the dest
//     by address and port) and installed with conntrack.Install. The
//     conn takes the forwarding method of the local dest, as the kernel's
//     ip_vs_bind_dest does for synced conns.
//   - the client's layer 2: a conn created from a frame remembers the
//     interface and MAC the client's frames came from, and NAT/FULLNAT
//     replies go back there. A synced conn has none (ClientIf 0): its
//     replies go where the first client frame seen for its address came
//     from, or else where the routing table and ARP say the client is, as
//     the kernel routes them.

// SyncBackupOnly reports whether the director stands by for a sync
// backup (a backup daemon runs with backup_only). A graceful restart's
// standby (takeover.go) is another switch: Standby.
func (d *Director) SyncBackupOnly() bool { return d.syncBackup.Load() }

// SetSyncBackupOnly stands the director by (or not) as a backup daemon
// with backup_only does; the daemon sets it when it starts or stops a
// backup, and a run sets it before forwarding when one is about to start.
func (d *Director) SetSyncBackupOnly(on bool) { syncGlue{d}.SetBackupOnly(on) }

// syncGlue is the director as the daemon's Installer.
type syncGlue struct{ d *Director }

func (g syncGlue) SetBackupOnly(on bool) {
	if g.d.syncBackup.Swap(on) != on {
		g.d.logf("sync: backup_only standby %v (backup daemon with backup_only: no forwarding, no ARP for VIPs)", on)
	}
}

func (g syncGlue) Install(c *ipvssync.Conn, inPkts uint32) ipvssync.Outcome {
	return g.d.installSynced(c, inPkts)
}

// newSync creates the director's sync daemon. Its sockets are opened in
// the network namespace the director was created in.
func (d *Director) newSync(sys *ipvssync.Sysctls) error {
	s := ipvssync.DefaultSysctls()
	if sys != nil {
		s = *sys
	}
	o := ipvssync.Options{Table: d.CT, Installer: syncGlue{d}, Sysctls: s, Transport: d.c.SyncTransport, Logf: d.c.Logf}
	if h, err := netns.Get(); err == nil {
		d.restore = append(d.restore, func() { h.Close() })
		o.Do = func(fn func() error) error { return inNetNS(h, fn) }
	}
	sd, err := ipvssync.New(o)
	if err != nil {
		return err
	}
	d.Sync = sd
	return nil
}

// inNetNS runs fn on a fresh locked thread inside namespace h; the
// thread is retired afterwards (never unlocked), so no goroutine ever
// runs in a namespace it did not ask for.
func inNetNS(h netns.NsHandle, fn func() error) error {
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if e := netns.Set(h); e != nil {
			err = fmt.Errorf("director: entering the director's network namespace: %w", e)
			return
		}
		err = fn()
	}()
	<-done
	return err
}

// findDest is ip_vs_find_dest: the service by fwmark, else by protocol,
// VIP and port (then the port-zero service), of the VIP's family; then
// the dest by address and port; for a fwmark service's non-NAT conn the
// port is matched as 0 first. It returns nil when this director has no
// such real server.
func (s *Snapshot) findDest(fwmark uint32, proto uint8, vaddr netip.Addr, vport uint16, daddr netip.Addr, dport uint16, masq bool) *ipvs.Dest {
	var sv *Service
	v6 := vaddr.Is6()
	if fwmark != 0 {
		if v6 {
			sv = s.fwm6[fwmark]
		} else {
			sv = s.fwm[fwmark]
		}
	}
	if sv == nil && v6 {
		a := vaddr.As16()
		sv = s.services6.get(svcKey6{a, vport, proto})
		if sv == nil && s.port0_6.n != 0 {
			sv = s.port0_6.get(svcKey6{a, 0, proto})
		}
	}
	if sv == nil && !v6 {
		sv = s.services.get(packSvc(vaddr.As4(), vport, proto))
		if sv == nil && s.port0.n != 0 {
			sv = s.port0.get(packSvc(vaddr.As4(), 0, proto))
		}
	}
	if sv == nil {
		return nil
	}
	port := dport
	if fwmark != 0 && !masq {
		port = 0
	}
	for _, p := range [2]uint16{port, port ^ dport} {
		for _, d := range sv.Dests {
			if d.Addr == daddr && d.Port == p {
				return d
			}
		}
	}
	return nil
}

// installSynced binds a received record to a local real server and
// installs it (ip_vs_proc_conn). An IPv6 record's keys are the table's
// IPv6 keys (their addresses' digests, the addresses beside them).
func (d *Director) installSynced(c *ipvssync.Conn, inPkts uint32) ipvssync.Outcome {
	v6 := c.V6()
	if c.VAddr.Is6() != v6 || c.DAddr.Is6() != v6 {
		return ipvssync.NoDest // the decoder keeps a record's addresses of one family
	}
	tpl := c.Flags&ipvssync.FlagTemplate != 0
	masq := ipvs.Method(c.Flags&ipvssync.FlagFwdMask) == ipvs.MethodMasq
	dest := d.snap.Load().findDest(c.FWMark, c.Proto, c.VAddr, c.VPort, c.DAddr, c.DPort, masq)
	if dest == nil {
		return ipvssync.NoDest
	}
	method := dest.Method()
	sc := conntrack.SyncedConn{
		Dest:     dest,
		DPort:    c.DPort,
		Method:   method,
		Template: tpl,
		NoOutput: method != ipvs.MethodMasq && method != ipvs.MethodFullNAT,
		Inactive: c.Flags&ipvssync.FlagInactive != 0,
		State:    uint8(c.State),
		Timeout:  c.Timeout,
		InPkts:   inPkts,
	}
	cport, kind := c.CPort, uint8(conntrack.KindConn)
	if tpl {
		cport, kind = 0, conntrack.KindTemplate
		sc.NoOutput = false
	}
	// key makes a key of the record's family (a6: its addresses).
	key := func(a6 *conntrack.Pair6, src, dst netip.Addr, sport, dport uint16, kind uint8) conntrack.Key {
		if v6 {
			*a6 = conntrack.Pair6{Src: src.As16(), Dst: dst.As16()}
			return d.CT.Key6(a6, sport, dport, c.Proto, kind)
		}
		return conntrack.Key{SrcIP: src.As4(), DstIP: dst.As4(), SrcPort: sport, DstPort: dport, Proto: c.Proto, Kind: kind}
	}
	sc.In = key(&sc.A6.In, c.CAddr, c.VAddr, cport, c.VPort, kind)
	var pool *lipPool
	var lip netip.Addr
	reserved := false
	if !tpl {
		switch method {
		case ipvs.MethodMasq:
			sc.Out = key(&sc.A6.Out, c.DAddr, c.CAddr, c.DPort, c.CPort, conntrack.KindConn)
		case ipvs.MethodFullNAT:
			// The master's local address and port travel in golvs's own
			// option; the port is taken from this director's pool.
			if v6 {
				pool = d.modes.pool6.Load()
			} else {
				pool = d.modes.pool.Load()
			}
			if !c.LAddr.IsValid() || c.LAddr.Is6() != v6 || pool == nil || pool.find(c.LAddr) == nil {
				return ipvssync.NoLocalAddr
			}
			lip = c.LAddr
			sc.Out = key(&sc.A6.Out, c.DAddr, lip, c.DPort, c.LPort, conntrack.KindConn)
			var h conntrack.Hit
			var known bool
			if v6 {
				known = d.CT.Peek6(&sc.In, &sc.A6.In, false, &h) && h.Out == sc.Out && h.A6.Out == sc.A6.Out
			} else {
				known = d.CT.Peek(&sc.In, false, &h) && h.Out == sc.Out
			}
			if !known {
				if !pool.reserve(lip, c.Proto, c.LPort) {
					return ipvssync.NoLocalAddr
				}
				reserved = true
			}
		}
	}
	res, err := d.CT.Install(&sc)
	if reserved && (err != nil || res == conntrack.Updated || res == conntrack.IgnoredInactive) {
		pool.release(lip, c.Proto, c.LPort)
	}
	if err != nil {
		if errors.Is(err, conntrack.ErrFull) {
			return ipvssync.TableFull
		}
		return ipvssync.NoDest
	}
	switch res {
	case conntrack.Updated:
		return ipvssync.Updated
	case conntrack.Replaced:
		return ipvssync.Replaced
	case conntrack.IgnoredInactive:
		return ipvssync.IgnoredInactive
	}
	return ipvssync.Installed
}

// reserve marks a FULLNAT local port as used by a synced conn; false when
// it is outside the range or already used.
func (pl *lipPool) reserve(addr netip.Addr, proto uint8, port uint16) bool {
	l := pl.find(addr)
	if l == nil || port < pl.min || port > pl.max {
		return false
	}
	pi := protoIndex(proto)
	idx := uint32(port - pl.min)
	w, b := idx/64, uint64(1)<<(idx%64)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.used[pi][w]&b != 0 {
		return false
	}
	l.used[pi][w] |= b
	l.free[pi]--
	l.conns.Add(1)
	return true
}

// clientL2 remembers where clients of synced conns are, for their
// replies: learnt from the clients' own frames, or resolved by route and
// ARP. Bounded: at maxClients entries it starts over (counted), and at
// most maxClientAsks addresses wait to be resolved.
type clientL2 struct {
	mu     sync.RWMutex
	m      map[[16]byte]clientHop // by address, IPv4 ones v4-mapped
	ask    map[[16]byte]struct{}
	resets uint64
}

// clientKey is the client address of a hit (an IPv6 conn's from its
// addresses, an IPv4 one's v4-mapped).
func clientKey(h *conntrack.Hit) [16]byte {
	if h.In.Kind&conntrack.KindV6 != 0 {
		return h.A6.In.Src
	}
	return netip.AddrFrom4(h.In.SrcIP).As16()
}

type clientHop struct {
	ifindex int32
	mac     [6]byte
}

const (
	maxClients    = 1 << 16
	maxClientAsks = 1024
)

// learn records the interface and MAC a client's frame came from.
func (c *clientL2) learn(ip [16]byte, ifindex int, mac [6]byte) {
	h := clientHop{int32(ifindex), mac}
	c.mu.RLock()
	old, ok := c.m[ip]
	c.mu.RUnlock()
	if ok && old == h {
		return
	}
	c.set(ip, h)
}

func (c *clientL2) set(ip [16]byte, h clientHop) {
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxClients {
		if c.m != nil {
			c.resets++
		}
		c.m = make(map[[16]byte]clientHop)
	}
	c.m[ip] = h
	delete(c.ask, ip)
	c.mu.Unlock()
}

// fill sets h's client interface and MAC; false (and the address queued
// for resolution) when they are not known yet.
func (c *clientL2) fill(h *conntrack.Hit) bool {
	ip := clientKey(h)
	c.mu.RLock()
	hop, ok := c.m[ip]
	c.mu.RUnlock()
	if ok {
		h.ClientIf, h.ClientMAC = hop.ifindex, hop.mac
		return true
	}
	c.mu.Lock()
	if c.ask == nil {
		c.ask = make(map[[16]byte]struct{})
	}
	if len(c.ask) < maxClientAsks {
		c.ask[ip] = struct{}{}
	}
	c.mu.Unlock()
	return false
}

// pending returns the addresses waiting to be resolved.
func (c *clientL2) pending() [][16]byte {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([][16]byte, 0, len(c.ask))
	for ip := range c.ask {
		out = append(out, ip)
	}
	return out
}

// resolveClients resolves the clients synced conns wait for
// (housekeeping): the route to each, then the kernel's neighbour entry of
// its next hop, followed (pinned) while it is wanted.
func (d *Director) resolveClients() {
	if d.neigh == nil {
		return
	}
	for _, ip := range d.clients.pending() {
		a := netip.AddrFrom16(ip).Unmap()
		l, via, src, err := d.neigh.Route(a)
		if err == nil {
			d.neigh.Pin(netio.NeighKey{IfIndex: l.Index, Addr: via}, 30*time.Second)
			var h netio.Hop
			if h, err = d.neigh.Hop(l, via, src); err == nil {
				d.clients.set(ip, clientHop{int32(h.IfIndex), h.DstMAC})
				continue
			}
		}
		if !errors.Is(err, netio.ErrPending) {
			d.logf("sync: no way back to client %s: %v", a, err)
			d.clients.mu.Lock()
			delete(d.clients.ask, ip)
			d.clients.mu.Unlock()
		}
	}
}

// clientHop fills a reply's client side for a synced conn; false (and
// counted) while it is being resolved.
func (w *Worker) clientHop(h *conntrack.Hit) bool {
	if w.d.clients.fill(h) {
		return true
	}
	w.count(CntClientUnknown)
	w.d.kickResolver()
	return false
}

// syncCounterSet is the sync daemon's counters for CounterSets.
func (d *Director) syncCounterSet() CounterSet {
	return CounterSet{
		Name:  "sync",
		Help:  "IPVS connection synchronisation: what the master sent, what the backup received, every message dropped (drop-*) and record skipped (skip-*) by reason, and what became of the records installed.",
		Label: "event", Names: ipvssync.CounterNames, Values: d.Sync.Counters(),
	}
}
