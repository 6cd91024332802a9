// Package director is golvs's data plane: workers that take frames from
// netio, find or create their connection in conntrack (scheduling new ones
// with sched against the current service snapshot), rewrite them with
// forward and hand them back to netio, plus the housekeeping around that
// (ARP for VIPs, next-hop resolution, expiry, the host checks that keep the
// kernel away from VIP traffic).
//
// The per-packet path (Worker.handle) never allocates, never takes a lock
// other than one conntrack shard's, and never blocks; configuration reaches
// it only as an immutable snapshot loaded once per batch.
package director

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvssync"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/trace"
)

// Interface is one interface the director serves.
type Interface struct {
	Name string
	// ARP: answer ARP requests for the VIPs on this interface (as a real
	// director does for VIPs it does not give the kernel).
	ARP bool
}

// Config sets up a director. Zero values take defaults.
type Config struct {
	Interfaces []Interface
	Workers    int // default: one per CPU
	Conntrack  conntrack.Config
	Ring       netio.RingConfig
	// FixHost lets golvs set the sysctls it relies on (IPv4 forwarding
	// off on its interfaces) and restore them when it stops.
	FixHost bool
	// ExpireNodestConn and ExpireQuiescentTemplate are IPVS's sysctls of
	// the same names (default 0, as in IPVS): expire a conn whose dest was
	// removed (or quiesced, on a new SYN) and reschedule its packet, and
	// treat a persistence template on a weight-0 dest as invalid.
	ExpireNodestConn        bool
	ExpireQuiescentTemplate bool
	// NoPMTU drops tunnelled packets too big for the path instead of
	// answering ICMP fragmentation-needed: the mistake IPVS avoids, for
	// the tun-no-pmtu teaching lab.
	NoPMTU bool
	// Logf reports events (next hops resolved, host changes); nil: quiet.
	Logf func(format string, args ...any)

	// FULLNAT (spec §5.5): the local address pool (LIPs) and its port
	// range (0, 0: 5000-65535), and NoTOA to stop inserting the TOA
	// option into SYNs. See modes.go and fullnat.go.
	LocalAddrs   []netip.Addr
	LocalPortMin uint16
	LocalPortMax uint16
	NoTOA        bool

	// Sync is the connection sync daemon's sysctls (sync_threshold,
	// backup_only, ...); nil: the defaults (ipvssync.DefaultSysctls).
	Sync *ipvssync.Sysctls
	// SyncTransport carries sync messages; nil: UDP (tests pass an
	// ipvssync.MemTransport).
	SyncTransport ipvssync.Transport
}

// Director is a running data plane.
type Director struct {
	c    Config
	snap atomic.Pointer[Snapshot]
	cfg  config
	CT   *conntrack.Table

	neigh   *netio.Neigh
	nl      *netlink.Handle
	rings   [][]*netio.Ring // [worker][interface]
	workers []*Worker
	ifMAC   map[int][6]byte
	ifARP   map[int]bool
	filter  sync.Mutex

	kick     chan struct{}
	restore  []func()
	fanoutID uint16

	// Counters of frames golvs did not forward, by cause.
	Drops Counters

	// Total is IPVS's director-wide counters (tot_stats,
	// /proc/net/ip_vs_stats): every conn and packet of every service.
	Total        ipvs.Stats
	traceMu      sync.Mutex
	traceDropped uint64 // events dropped by tracers already detached

	est estimators

	modes modeState // DR, TUN and FULLNAT (modes.go)

	tracer  atomic.Pointer[trace.Tracer]
	ifNames map[int]string // names of fake interfaces in tests

	// Sync is the connection sync daemon (sync.go): master, backup, both
	// or none, started and stopped at run time.
	Sync    *ipvssync.Daemon
	syncErr error
	standby atomic.Bool // a backup runs with backup_only: forward nothing
	clients clientL2    // where synced conns' clients are
}

// Counter names, in Counters order.
var CounterNames = [NumCounters]string{
	"truncated-frame", "not-ipv4", "bad-ip", "fragment", "protocol", "bad-l4", "bad-arp",
	"no-conn", "no-dest", "dest-unavailable", "table-full", "next-hop-unresolved",
	"ttl-expired", "not-ours", "arp-answered", "icmp-ignored", "tx-errors",
	"standby", "client-unresolved",
}

// Counter indices.
const (
	// 0..6 mirror packet.Reason 1..7
	CntNoConn = 7 + iota
	CntNoDest
	CntDestUnavail
	CntTableFull
	CntNoNextHop
	CntTTL
	CntNotOurs
	CntARPAnswered
	CntICMP
	CntTxErrors
	CntStandby       // a sync backup with backup_only: nothing forwarded
	CntClientUnknown // a reply of a synced conn whose client is being resolved
	NumCounters
)

// Counters are per-cause counts, summed over workers.
type Counters [NumCounters]atomic.Uint64

// Get returns a copy.
func (c *Counters) Get() (out [NumCounters]uint64) {
	for i := range c {
		out[i] = c[i].Load()
	}
	return
}

// Errors.
var (
	ErrHostLeak = errors.New("director: the host would handle VIP traffic itself")
)

// newCore creates a director with no sockets: the configuration, the
// connection table and the counters. Tests drive it through workers with
// fake transmitters.
func newCore(c Config) *Director {
	if c.Workers <= 0 {
		c.Workers = runtime.NumCPU()
	}
	d := &Director{
		c:     c,
		CT:    conntrack.New(c.Conntrack),
		ifMAC: map[int][6]byte{},
		ifARP: map[int]bool{},
		kick:  make(chan struct{}, 1),
	}
	d.snap.Store(&Snapshot{vips: map[[4]byte]bool{}})
	d.initModes()
	d.syncErr = d.newSync(c.Sync)
	return d
}

// New opens the director's sockets on its interfaces, in the network
// namespace of the calling goroutine's thread. It checks the host first
// and refuses to start where the kernel would handle VIP traffic itself.
func New(c Config) (*Director, error) {
	if len(c.Interfaces) == 0 {
		return nil, errors.New("director: no interfaces given")
	}
	d := newCore(c)
	if d.syncErr != nil {
		d.Close()
		return nil, d.syncErr
	}
	nl, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("director: netlink: %w", err)
	}
	d.nl = nl
	names := make([]string, len(c.Interfaces))
	for i, ifc := range c.Interfaces {
		names[i] = ifc.Name
		if _, err := netio.InterfaceByName(ifc.Name); err != nil {
			nl.Close()
			return nil, err
		}
	}
	if err := d.checkHost(names); err != nil {
		nl.Close()
		return nil, err
	}
	neigh, err := netio.NewNeigh(nl, names)
	if err != nil {
		d.Close()
		return nil, err
	}
	d.neigh = neigh
	for idx, l := range neigh.Links() {
		d.ifMAC[idx] = l.MAC
	}
	for _, ifc := range c.Interfaces {
		for idx, l := range neigh.Links() {
			if l.Name == ifc.Name {
				d.ifARP[idx] = ifc.ARP
			}
		}
	}
	filter, err := netio.BuildFilter(nil, nil, true)
	if err != nil {
		d.Close()
		return nil, err
	}
	d.fanoutID = uint16(os.Getpid()&0x7fff) | 1
	for w := 0; w < c.Workers; w++ {
		var rings []*netio.Ring
		var txs []*netio.Tx
		for i, name := range names {
			rc := c.Ring
			rc.Filter = filter
			rc.FanoutID = d.fanoutID + uint16(i)
			r, err := netio.OpenRing(name, rc)
			if err != nil {
				d.Close()
				return nil, err
			}
			rings = append(rings, r)
			tx, err := netio.OpenTx(name)
			if err != nil {
				d.Close()
				return nil, err
			}
			txs = append(txs, tx)
		}
		d.rings = append(d.rings, rings)
		wk := d.newWorker()
		for _, tx := range txs {
			wk.setTx(tx.IfIndex(), tx)
		}
		wk.group = netio.NewGroup(rings)
		d.workers = append(d.workers, wk)
	}
	d.refilter(d.snap.Load())
	return d, nil
}

// checkHost makes sure the kernel will not handle VIP traffic itself:
// golvs does not give the VIPs to the kernel (checked per service as it is
// added), and IPv4 forwarding must be off on its interfaces, or the kernel
// would route VIP packets and NAT replies on, un-rewritten. With FixHost
// the director turns it off and puts it back when it stops.
func (d *Director) checkHost(names []string) error {
	var bad []string
	for _, n := range names {
		p := "/proc/sys/net/ipv4/conf/" + n + "/forwarding"
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("director: reading %s: %w", p, err)
		}
		if strings.TrimSpace(string(b)) == "0" {
			continue
		}
		if !d.c.FixHost {
			bad = append(bad, n)
			continue
		}
		if err := os.WriteFile(p, []byte("0"), 0o644); err != nil {
			return fmt.Errorf("director: turning IPv4 forwarding off on %s: %w", n, err)
		}
		d.logf("host: set net.ipv4.conf.%s.forwarding=0 (restored on exit)", n)
		d.restore = append(d.restore, func() { _ = os.WriteFile(p, b, 0o644) })
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: IPv4 forwarding is on for %s, so the kernel would route VIP traffic and NAT replies un-rewritten; set net.ipv4.conf.<if>.forwarding=0 or run with --fix-host", ErrHostLeak, strings.Join(bad, ", "))
	}
	return nil
}

// HostReport says what the director relies on, for `golvs run` to print.
func (d *Director) HostReport() []string {
	var out []string
	for _, ifc := range d.c.Interfaces {
		out = append(out, fmt.Sprintf("%s: IPv4 forwarding off (the kernel drops VIP traffic and replies silently; golvs forwards them), ARP for VIPs answered by golvs: %v", ifc.Name, ifc.ARP))
	}
	out = append(out, "VIPs are not assigned to the kernel: it never answers or resets VIP connections")
	return out
}

// checkVIPNotLocal refuses a VIP the kernel owns (it would answer, or
// reset, the VIP's connections itself).
func (d *Director) checkVIPNotLocal(a netip.Addr) error {
	if d.nl == nil {
		return nil
	}
	addrs, err := d.nl.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil
	}
	for _, x := range addrs {
		if ip, ok := netip.AddrFromSlice(x.IP.To4()); ok && ip == a {
			name := "?"
			if l, err := d.nl.LinkByIndex(x.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			return fmt.Errorf("%w: VIP %s is assigned to %s on this host, so the kernel would answer (or reset) its connections itself; remove it (golvs answers ARP for VIPs)", ErrHostLeak, a, name)
		}
	}
	return nil
}

func (d *Director) logf(format string, args ...any) {
	if d.c.Logf != nil {
		d.c.Logf(format, args...)
	}
}

func (d *Director) kickResolver() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// refilter rebuilds the kernel filter for the current services.
func (d *Director) refilter(s *Snapshot) {
	if len(d.rings) == 0 {
		return
	}
	dst := markMatches(s.Marks)
	var src []netio.Match
	for _, sv := range s.List {
		if sv.Config.FWMark == 0 {
			dst = append(dst, netio.Match{Proto: sv.Config.Proto, Addr: sv.Config.Addr.As4(), Port: sv.Config.Port})
		}
		for _, dd := range sv.Dests {
			port := dd.Port
			if port == 0 {
				port = sv.Config.Port
			}
			proto := sv.Config.Proto
			if sv.Config.FWMark != 0 {
				proto = 0 // a mark may cover TCP and UDP
			}
			src = append(src, netio.Match{Proto: proto, Addr: dd.Addr.As4(), Port: port})
		}
	}
	mdst, msrc := d.modeFilter(s)
	dst, src = append(dst, mdst...), append(src, msrc...)
	f, err := netio.BuildFilter(dst, src, true)
	if err != nil {
		d.logf("filter: %v", err)
		return
	}
	d.filter.Lock()
	defer d.filter.Unlock()
	for _, rs := range d.rings {
		for _, r := range rs {
			if err := r.SetFilter(f); err != nil {
				d.logf("filter: %v", err)
			}
		}
	}
}

// Run starts the workers and housekeeping and blocks until ctx is done;
// then it stops everything and closes the sockets.
func (d *Director) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, w := range d.workers {
		wg.Add(1)
		go func(w *Worker) {
			defer wg.Done()
			runtime.LockOSThread()
			w.loop(stop)
		}(w)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.housekeeping(stop)
	}()
	<-ctx.Done()
	close(stop)
	wg.Wait()
	d.Close()
	return nil
}

// housekeeping advances the connection table's clock and resolves next
// hops; it never touches the packet path's locks for long.
func (d *Director) housekeeping(stop chan struct{}) {
	tick := d.CT.Tick() / 4
	if tick > 250*time.Millisecond {
		tick = 250 * time.Millisecond
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	res := time.NewTicker(500 * time.Millisecond)
	defer res.Stop()
	est := time.NewTicker(ipvs.EstimatorPeriod)
	defer est.Stop()
	lastFull := time.Time{}
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			d.CT.Advance(now)
		case <-d.kick:
			d.resolve(false)
			d.resolveClients()
		case <-est.C:
			d.est.update(d.snap.Load(), &d.Total)
		case now := <-res.C:
			full := now.Sub(lastFull) > 30*time.Second
			if full {
				lastFull = now
			}
			d.resolve(full)
			d.resolveClients()
		}
	}
}

// resolve fills in the next hop of every dest that lacks one (or of every
// dest, to refresh).
func (d *Director) resolve(all bool) {
	if d.neigh == nil {
		return
	}
	for _, sv := range d.snap.Load().List {
		for _, dd := range sv.Dests {
			if !all && dd.Next.Load() != nil {
				continue
			}
			h, err := d.neigh.Resolve(dd.Addr)
			if err != nil {
				if !errors.Is(err, netio.ErrPending) {
					d.logf("next hop for %s: %v", dd.Addr, err)
				}
				continue
			}
			nh := &ipvs.NextHop{IfIndex: h.IfIndex, SrcMAC: h.SrcMAC, DstMAC: h.DstMAC, SrcIP: h.SrcIP}
			if old := dd.Next.Load(); old == nil || *old != *nh {
				dd.Next.Store(nh)
				d.logf("next hop for %s: %s via ifindex %d (%x)", dd.Addr, h.Via, h.IfIndex, h.DstMAC)
			}
		}
	}
}

// Close stops nothing (Run does that) but releases the sockets and puts
// back any host setting golvs changed.
func (d *Director) Close() {
	if d.Sync != nil {
		d.Sync.Close()
	}
	for _, rs := range d.rings {
		for _, r := range rs {
			r.Close()
		}
	}
	d.rings = nil
	for _, w := range d.workers {
		w.closeTx()
	}
	if d.neigh != nil {
		d.neigh.Close()
		d.neigh = nil
	}
	if d.nl != nil {
		d.nl.Close()
		d.nl = nil
	}
	for _, f := range d.restore {
		f()
	}
	d.restore = nil
}

// Workers returns the number of workers.
func (d *Director) Workers() int { return len(d.workers) }

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
// ctx ends. Labs and tests call it before sending traffic, so the first
// SYN is not dropped while ARP is in flight.
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
			return fmt.Errorf("director: no next hop for real server %s (does it answer ARP on a directly connected network?)", missing)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
