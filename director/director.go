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
	"github.com/golvs/golvs/internal/ratelog"
	"github.com/golvs/golvs/ipvs"
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
	// Lines reach it through a rate limiter (internal/ratelog): an
	// identical line at most once a minute, its repeats summarised.
	Logf func(format string, args ...any)

	// FULLNAT (spec §5.5): the local address pool (LIPs) and its port
	// range (0, 0: 5000-65535), and NoTOA to stop inserting the TOA
	// option into SYNs. See modes.go and fullnat.go.
	LocalAddrs   []netip.Addr
	LocalPortMin uint16
	LocalPortMax uint16
	NoTOA        bool
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

	srv  serving          // VRRP master or backup (serving.go)
	res  resolver         // next hops (resolve.go)
	logs *ratelog.Limiter // every log line goes through it
}

// Counter names, in Counters order.
var CounterNames = [NumCounters]string{
	"truncated-frame", "not-ipv4", "bad-ip", "fragment", "protocol", "bad-l4", "bad-arp",
	"no-conn", "no-dest", "dest-unavailable", "table-full", "next-hop-unresolved",
	"ttl-expired", "not-ours", "arp-answered", "icmp-ignored", "tx-errors", "standby",
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
	CntStandby // a VRRP backup serves nothing (serving.go)
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
		logs:  ratelog.New(c.Logf, ratelog.Config{}),
	}
	d.snap.Store(&Snapshot{vips: map[[4]byte]bool{}})
	d.initModes()
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
	neigh, err := netio.NewNeigh(nl, names, netio.NeighConfig{OnLink: d.SetLinkMTU})
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

// logf logs through the rate limiter: an identical line at most once a
// minute, its repeats summarised.
func (d *Director) logf(format string, args ...any) { d.logs.Logf(format, args...) }

// refilter rebuilds the kernel filter for the current services.
func (d *Director) refilter(s *Snapshot) {
	if len(d.rings) == 0 {
		return
	}
	dst, src := d.filterMatches(s)
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

// housekeeping advances the connection table's clock and keeps next hops
// current (resolve.go); it never touches the packet path's locks for long.
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
	lastFull := time.Now()
	// A kick (from the packet path or the control plane) or a kernel
	// change runs a resolve pass at once, but passes are kept resolveGap
	// apart: a flood toward an unresolved real server kicks on every
	// packet.
	const resolveGap = 20 * time.Millisecond
	var lastPass time.Time
	var soon <-chan time.Time
	resolveNow := func() {
		if soon != nil {
			return // one is due already
		}
		if wait := resolveGap - time.Since(lastPass); wait > 0 {
			soon = time.After(wait)
			return
		}
		d.resolve(false)
		lastPass = time.Now()
	}
	for {
		var changes <-chan struct{} // the kernel changed a route, a link or a followed neighbour
		if d.neigh != nil {
			changes = d.neigh.Changes()
		}
		select {
		case <-stop:
			return
		case now := <-t.C:
			d.CT.Advance(now)
		case <-d.kick:
			resolveNow()
		case <-changes:
			resolveNow()
		case <-soon:
			soon = nil
			resolveNow()
		case <-est.C:
			d.est.update(d.snap.Load(), &d.Total)
		case now := <-res.C:
			full := now.Sub(lastFull) > 30*time.Second
			if full {
				lastFull = now
			}
			d.resolve(full)
			lastPass = now
			d.logs.Flush()
		}
	}
}

// Close stops nothing (Run does that) but releases the sockets and puts
// back any host setting golvs changed.
func (d *Director) Close() {
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
