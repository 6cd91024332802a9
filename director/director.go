// Package director is golvs's data plane: workers that take frames from
// netio, find or create their connection in conntrack (scheduling new ones
// with sched against the current service snapshot), rewrite them with
// forward and hand them back to netio, plus the housekeeping around that
// (ARP for VIPs, next-hop resolution, expiry, the host checks that keep the
// kernel away from VIP traffic).
//
// The per-packet path (Worker.handle) never allocates and never blocks;
// configuration reaches it only as an immutable snapshot loaded once per
// batch. A packet of a known connection takes no lock but conntrack shard
// locks, one at a time (a reply may take its entry's home shard after
// releasing the reply index's). A packet that starts a connection also
// takes leaf locks that never wait on another: its scheduler's, its
// dest's counter lock (conntrack.Create binds the dest under the shard
// lock) and, for FULLNAT, the local port pool's (taken with no shard lock
// held, also when a conn ends).
package director

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/internal/ratelog"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvssync"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
	"github.com/golvs/golvs/trace"
)

// Interface is one interface the director serves.
type Interface struct {
	Name string
	// ARP: answer ARP requests for the VIPs on this interface (as a real
	// director does for VIPs it does not give the kernel).
	ARP bool
}

// DefaultSpin is golvs run's --busy-poll: the longest look for frames
// after traffic. Measured on the NAT lab (2 vCPUs shared by client, real
// servers and director), one connection at a time: see the README.
const DefaultSpin = 50 * time.Microsecond

// MaxSpin is the longest --busy-poll golvs run takes.
const MaxSpin = 10 * time.Millisecond

// Config sets up a director. Zero values take defaults.
type Config struct {
	Interfaces []Interface
	Workers    int // default: one per CPU
	Conntrack  conntrack.Config
	// Ring shapes each worker's receive path on each interface (the
	// default: TPACKET_V2, a frame handed over as soon as it is there).
	Ring netio.RingConfig
	// Fanout is how an interface's frames are spread over the workers
	// (default FanoutCPU: the worker of the CPU that received the frame;
	// FanoutNext: the worker of the next CPU; with more workers than
	// CPUs, FanoutHash).
	Fanout netio.FanoutMode
	// NoPin leaves the workers unpinned; by default worker i runs only on
	// the CPU whose frames it gets.
	NoPin bool
	// Spin is the longest a worker keeps looking for frames after
	// traffic before it sleeps in poll() (0: never); the look itself
	// adapts between 0 and Spin (netio.Group). golvs run's --busy-poll,
	// DefaultSpin by default.
	Spin time.Duration
	// NoDropRule leaves the kernel to run every frame golvs forwards
	// through its IP stack too, instead of installing the nftables drop
	// rule at ingress (netio.DropRule).
	NoDropRule bool
	// TxRing sends through a PACKET_TX_RING per worker and interface (one
	// kick per batch) instead of one sendmmsg per batch.
	TxRing bool
	// FixHost lets golvs set the sysctls it relies on (IPv4 forwarding
	// off on its interfaces) and restore them when it stops.
	FixHost bool
	// ExpireNodestConn and ExpireQuiescentTemplate are IPVS's sysctls of
	// the same names (default 0, as in IPVS): expire a conn whose dest was
	// removed (or quiesced, on a new SYN) and reschedule its packet, and
	// treat a persistence template on a weight-0 dest as invalid.
	ExpireNodestConn        bool
	ExpireQuiescentTemplate bool
	// Semantics is the kernel behaviour the director reproduces where
	// IPVS changed in 2026 (spec §1.0): the overhead formula, the
	// OVERLOAD rules, the lblc/lblcr cache rules. Zero: current.
	Semantics ipvs.Semantics
	// SloppyTCP is IPVS's sloppy_tcp sysctl: a conn may be created by any
	// TCP packet without RST, not only a SYN, so flows that began on
	// another director (or before a restart that lost the table) are
	// picked up mid-stream. Use it with a scheduler that picks the same
	// real server again (sh, mh): the new pick is where the flow goes.
	SloppyTCP bool
	// Standby starts the director parked (SetStandby): its workers drop
	// IP frames until SetStandby(false); a graceful restart uses it. Such
	// a successor leaves the running golvs's interface locks and drop rule
	// alone until it is gone (TakeHost).
	Standby bool
	// LockDir holds the interface locks that keep a second golvs off
	// interfaces one already serves (iflock.go); "": DefaultLockDir.
	LockDir string
	// NoPMTU drops tunnelled packets too big for the path instead of
	// answering ICMP fragmentation-needed: the mistake IPVS avoids, for
	// the tun-no-pmtu teaching lab.
	NoPMTU bool
	// OnReplaced is told the name of a served interface that was removed
	// and made again (a new interface under its name, up): the director's
	// sockets stay bound to the old one, so it serves the name again only
	// once restarted. golvs run restarts itself then, as on SIGUSR2. It is
	// called once per new interface, from a goroutine that must not block.
	// nil: the director only logs it and reports it in HostReport.
	OnReplaced func(name string)
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

	// Sync is the connection sync daemon's sysctls (sync_threshold,
	// backup_only, ...); nil: the defaults (ipvssync.DefaultSysctls).
	Sync *ipvssync.Sysctls
	// SyncTransport carries sync messages; nil: UDP (tests pass an
	// ipvssync.MemTransport).
	SyncTransport ipvssync.Transport
	// ICMPMsgsPerSec and ICMPMsgsBurst bound the ICMP errors golvs
	// generates (port unreachable, fragmentation needed) with a token
	// bucket, as the kernel's icmp_msgs_per_sec and icmp_msgs_burst do
	// (0: their defaults, 1000 and 50; a negative rate sends none).
	ICMPMsgsPerSec int
	ICMPMsgsBurst  int
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
	ringMu  sync.Mutex      // rings' statistics are read, and the rings closed, under it
	txs     []sender
	workers []*Worker
	cpus    []int // the CPU each worker is pinned to (nil: not pinned)
	fanout  netio.FanoutMode
	drop    *netio.DropRule
	dropMu  sync.Mutex
	dropOff string // why there is no drop rule
	locks   *ifaceLocks
	ifMAC   map[int][6]byte // the served interfaces by index, with the MACs read at the start (macs follows changes)
	ifARP   map[int]bool
	filter  sync.Mutex
	// replaced: served interfaces whose name names another interface now
	// (interfaceReplaced), by name: the new one's index.
	replMu   sync.Mutex
	replaced map[string]int
	// The interfaces' MACs as followed (ifmac.go): the table the workers
	// read once per batch, and the sockets that announce a change.
	macMu  sync.Mutex
	macs   atomic.Pointer[[]ifaceMAC]
	annTx  map[int]*netio.Tx
	ifName map[int]string // fixed once macs is published

	kick    chan struct{}
	restore []func()

	// Counters of frames golvs did not forward, by cause (counters.go).
	Drops Counters
	cset  *counterSet

	// Total is IPVS's director-wide counters (tot_stats,
	// /proc/net/ip_vs_stats): every conn and packet of every service.
	Total        ipvs.Stats
	traceMu      sync.Mutex
	traceDropped uint64 // events dropped by tracers already detached

	est estimators

	icmpLimit icmpLimiter
	// own holds the director's interface addresses and their links'
	// broadcast addresses: no packet from the wire may carry one as its
	// source (martians). own6: its IPv6 addresses.
	own  [][4]byte
	own6 [][16]byte

	// IPv6 fragments: golvs's defragmenter, and the identification of
	// the fragments it sends (frag6.go).
	reasm   *forward.Reassembler6
	fragID6 atomic.Uint32

	snmp kernelSnmp // the namespace's /proc/net/snmp (kstats.go)

	modes modeState // DR, TUN and FULLNAT (modes.go)

	tracer  atomic.Pointer[trace.Tracer]
	ifNames map[int]string // names of fake interfaces in tests

	srv  serving          // VRRP master or backup (serving.go)
	res  resolver         // next hops (resolve.go)
	logs *ratelog.Limiter // every log line goes through it

	handover handover  // standby and host settings (takeover.go)
	hb       heartbeat // is the data path running (heartbeat.go)

	// Sync is the connection sync daemon (sync.go): master, backup, both
	// or none, started and stopped at run time.
	Sync       *ipvssync.Daemon
	syncErr    error
	syncBackup atomic.Bool // a backup daemon runs with backup_only: serve nothing (sync.go)
	clients    clientL2    // where synced conns' clients are
}

// Semantics returns the kernel semantics the director reproduces.
func (dr *Director) Semantics() ipvs.Semantics { return dr.c.Semantics }

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
	d.initCounters()
	d.reasm = forward.NewReassembler6(forward.ReasmConfig{})
	d.fragID6.Store(rand.Uint32())
	tcp, fin, udp := d.CT.Timeouts()
	d.cfg.model.Timeouts = Timeouts{tcp, fin, udp}
	d.snap.Store(&Snapshot{vips: map[[4]byte]bool{}, Model: d.cfg.model, snap6: snap6{vips6: map[[16]byte]bool{}}})
	d.handover.standby.Store(c.Standby)
	d.icmpLimit.init(c.ICMPMsgsPerSec, c.ICMPMsgsBurst)
	d.initModes()
	d.syncErr = d.newSync(c.Sync)
	return d
}

// NewOffline creates a director with no sockets and no data path: its
// configuration, connection table and counters only. Control-plane tests
// and benchmarks drive it without root; Run must not be called.
func NewOffline(c Config) *Director { return newCore(c) }

// New opens the director's sockets on its interfaces, in the network
// namespace of the calling goroutine's thread. It checks the host first
// and refuses to start where the kernel would handle VIP traffic itself.
func New(c Config) (*Director, error) {
	if len(c.Interfaces) == 0 {
		return nil, errors.New("director: no interfaces given")
	}
	if c.NoPin && c.Fanout == netio.FanoutNext {
		return nil, errors.New("director: fanout next is a pinning (each worker one CPU on), which no-pin turns off: use fanout cpu with no-pin")
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
	index := map[string]int{}
	for i, ifc := range c.Interfaces {
		names[i] = ifc.Name
		if _, dup := index[ifc.Name]; dup {
			nl.Close()
			return nil, fmt.Errorf("director: interface %q given twice", ifc.Name)
		}
		ifi, err := netio.InterfaceByName(ifc.Name)
		if err != nil {
			nl.Close()
			return nil, err
		}
		index[ifc.Name] = ifi.Index
	}
	lockDir := c.LockDir
	if lockDir == "" {
		lockDir = DefaultLockDir
	}
	if d.locks, err = lockInterfaces(lockDir, names, index, c.Standby); err != nil {
		nl.Close()
		return nil, err
	}
	if err := d.checkHost(names); err != nil {
		d.locks.Close()
		nl.Close()
		return nil, err
	}
	d.snmp = openKernelSnmp() // from this thread: its namespace's
	neigh, err := netio.NewNeigh(nl, names, netio.NeighConfig{OnLink: d.SetLinkMTU, OnReplaced: d.interfaceReplaced, OnMAC: d.macChanged})
	if err != nil {
		d.Close()
		return nil, err
	}
	d.neigh = neigh
	for idx, l := range neigh.Links() {
		d.ifMAC[idx] = l.MAC
		d.addOwn(l.Addrs)
		d.addOwn6(l.Addrs6)
	}
	for _, ifc := range c.Interfaces {
		for idx, l := range neigh.Links() {
			if l.Name == ifc.Name {
				d.ifARP[idx] = ifc.ARP
			}
		}
	}
	if err := d.setMACs(neigh); err != nil {
		d.Close()
		return nil, err
	}
	filter, err := netio.BuildFilter(nil, nil, true)
	if err != nil {
		d.Close()
		return nil, err
	}
	if err := d.planWorkers(); err != nil {
		d.Close()
		return nil, err
	}
	// Every worker opens its rings in the same order, so worker i has
	// index i in every fanout group.
	fo := netio.NewFanout(d.fanout)
	for w := 0; w < d.c.Workers; w++ {
		var rings []*netio.Ring
		var txs []sender
		for _, name := range names {
			rc := c.Ring
			rc.Filter = filter
			rc.Fanout = fo
			r, err := netio.OpenRing(name, rc)
			if err != nil {
				d.Close()
				return nil, err
			}
			rings = append(rings, r)
			var tx sender
			if c.TxRing {
				tx, err = netio.OpenTxRing(name, netio.TxRingConfig{})
			} else {
				tx, err = netio.OpenTx(name)
			}
			if err != nil {
				d.Close()
				return nil, err
			}
			txs = append(txs, tx)
			d.txs = append(d.txs, tx)
		}
		d.rings = append(d.rings, rings)
		wk := d.newWorker()
		for _, tx := range txs {
			wk.setTx(tx.IfIndex(), tx)
		}
		wk.group = netio.NewGroup(rings)
		wk.group.Spin = max(c.Spin, 0)
		d.workers = append(d.workers, wk)
	}
	d.hb.init(len(d.workers))
	d.cset.refresh = d.readRingStats
	txs := d.txs
	d.cset.addSource(func(out *[NumCounters]uint64) {
		for _, t := range txs {
			st := t.Stats()
			out[CntTxErrors] += st.Errors
			out[CntTxDropped] += st.Dropped
		}
	})
	if !c.NoDropRule {
		open := netio.OpenDropRule
		if c.Standby {
			// A successor: the running golvs's rule stays until that
			// one is gone (TakeHost).
			open = netio.AdoptDropRule
		}
		dr, err := open(names)
		switch {
		case errors.Is(err, netio.ErrNoNftables):
			d.dropOff = fmt.Sprintf("no drop rule: %v; the kernel also runs every frame golvs forwards through its IP stack (and drops it there)", err)
			d.logf("host: %s", d.dropOff)
		case err != nil:
			d.Close()
			return nil, fmt.Errorf("director: %w (run with --no-drop-rule to go without)", err)
		default:
			d.drop = dr
			for _, t := range dr.Stale {
				d.logf("host: removed nftables table netdev %s left by an earlier golvs that did not stop cleanly", t)
			}
		}
	} else {
		d.dropOff = "no drop rule (turned off): the kernel also runs every frame golvs forwards through its IP stack (and drops it there)"
	}
	if err := d.refilter(d.snap.Load()); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// planWorkers picks the fanout mode and each worker's CPU. With
// FanoutCPU the kernel hands a frame received on CPU c to worker
// c mod workers, so worker i is pinned to an allowed CPU c with
// c mod workers = i where there is one.
func (d *Director) planWorkers() error {
	n := d.c.Workers
	d.fanout = d.c.Fanout
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return fmt.Errorf("director: sched_getaffinity: %w", err)
	}
	var allowed []int
	for c := 0; c < len(set)*64; c++ {
		if set.IsSet(c) {
			allowed = append(allowed, c)
		}
	}
	if len(allowed) == 0 {
		return errors.New("director: no CPU allowed to run on")
	}
	if d.fanout != netio.FanoutHash && n > len(allowed) {
		d.fanout = netio.FanoutHash
		d.logf("host: %d workers for %d CPUs: frames are spread by flow hash (fanout hash), not by CPU", n, len(allowed))
	}
	if d.c.NoPin {
		return nil
	}
	d.cpus = pinPlan(allowed, n, d.fanout)
	return nil
}

// pinPlan gives each of n workers a CPU from allowed. With FanoutCPU the
// kernel hands a frame received on CPU c to worker c mod n, so worker k
// gets an allowed CPU c with c mod n = k where there is one (and no CPU
// twice); with FanoutNext (the same in the kernel) one with c mod n =
// k+1 mod n, so the frames of CPU c are handled on the next; the rest,
// and every worker with FanoutHash, go round the allowed CPUs.
func pinPlan(allowed []int, n int, mode netio.FanoutMode) []int {
	cpus := make([]int, n)
	used := map[int]bool{}
	shift := 0
	if mode == netio.FanoutNext {
		shift = 1
	}
	for k := range cpus {
		cpus[k] = -1
		if mode != netio.FanoutHash {
			for _, c := range allowed {
				if c%n == (k+shift)%n && !used[c] {
					cpus[k] = c
					break
				}
			}
		}
		if cpus[k] < 0 {
			cpus[k] = allowed[k%len(allowed)]
		}
		used[cpus[k]] = true
	}
	return cpus
}

// readRingStats adds what the kernel counted on the rings since the last
// read (reading resets them) to the ring counters, and logs a link whose
// rings reported an error.
func (d *Director) readRingStats() {
	d.ringMu.Lock()
	defer d.ringMu.Unlock()
	var sum netio.RingStats
	for _, rs := range d.rings {
		for _, r := range rs {
			st, err := r.Stats()
			if err != nil {
				continue
			}
			sum.Add(st)
			if st.Errors > 0 {
				// Every worker's ring on the link saw it: the rate limiter
				// keeps one line.
				d.logf("receive ring on %s: %v: its link went down or was removed; golvs receives on it again once the link is up (a link removed and made again needs golvs run restarted)", d.IfName(r.IfIndex()), st.LastErr)
			}
		}
	}
	d.Drops[CntRingPackets].Add(sum.Packets)
	d.Drops[CntRingDrops].Add(sum.Drops)
	d.Drops[CntRingFreezes].Add(sum.Freezes)
	d.Drops[CntRingErrors].Add(sum.Errors)
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
		d.recordHost(p, string(b))
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: IPv4 forwarding is on for %s, so the kernel would route VIP traffic and NAT replies un-rewritten; set net.ipv4.conf.<if>.forwarding=0 or run with --fix-host", ErrHostLeak, strings.Join(bad, ", "))
	}
	// IPv6 forwarding is one switch for the whole host (the per-interface
	// ones say whether it acts as a router towards that link). Without
	// IPv6 in the namespace there is no file and nothing to check.
	const p6 = "/proc/sys/net/ipv6/conf/all/forwarding"
	if b, err := os.ReadFile(p6); err == nil && strings.TrimSpace(string(b)) != "0" {
		if !d.c.FixHost {
			return fmt.Errorf("%w: IPv6 forwarding is on (net.ipv6.conf.all.forwarding), so the kernel would route IPv6 VIP traffic and NAT replies un-rewritten; set it to 0 or run with --fix-host", ErrHostLeak)
		}
		if err := os.WriteFile(p6, []byte("0"), 0o644); err != nil {
			return fmt.Errorf("director: turning IPv6 forwarding off: %w", err)
		}
		d.logf("host: set net.ipv6.conf.all.forwarding=0 (restored on exit)")
		d.recordHost(p6, string(b))
	}
	return nil
}

// interfaceReplaced is told (netio.NeighConfig.OnReplaced) that the name
// of a served interface names another interface now, which is up: the
// served one was removed and made again. The rings and transmit sockets
// stay bound to the old one (the kernel gives the new one another
// index), as do the interface locks and MACs, so the director does not
// serve the name until it restarts. It logs that once per new interface,
// and hands the name to Config.OnReplaced (golvs run restarts).
func (d *Director) interfaceReplaced(name string, served, now int) {
	d.replMu.Lock()
	seen := d.replaced[name] == now
	if !seen {
		if d.replaced == nil {
			d.replaced = map[string]int{}
		}
		d.replaced[name] = now
	}
	d.replMu.Unlock()
	if seen {
		return
	}
	next := "restart golvs run to serve it (SIGUSR2 restarts it without losing connections)"
	if d.c.OnReplaced != nil {
		next = "golvs restarts to serve it, keeping its connections"
	}
	d.logf("host: interface %s was removed and made again (index %d, now %d): golvs's sockets are bound to the old one; %s", name, served, now, next)
	if d.c.OnReplaced != nil {
		d.c.OnReplaced(name)
	}
}

// HostReport says what the director relies on, for `golvs run` to print.
func (d *Director) HostReport() []string {
	var out []string
	d.replMu.Lock()
	for name, now := range d.replaced {
		out = append(out, fmt.Sprintf("%s: NOT SERVED: the interface was removed and made again (now index %d); golvs serves it again once restarted", name, now))
	}
	d.replMu.Unlock()
	for _, ifc := range d.c.Interfaces {
		out = append(out, fmt.Sprintf("%s: IPv4 forwarding off (the kernel drops VIP traffic and replies silently; golvs forwards them), ARP and Neighbor Solicitations for VIPs answered by golvs: %v", ifc.Name, ifc.ARP))
	}
	out = append(out, "IPv6 forwarding off (net.ipv6.conf.all.forwarding=0); IPv6 fragments reassembled by golvs (the kernel's fanout reassembles IPv4 only)")
	out = append(out, "VIPs are not assigned to the kernel: it never answers or resets VIP connections")
	d.dropMu.Lock()
	if d.drop != nil {
		out = append(out, d.drop.Describe())
	} else if d.dropOff != "" {
		out = append(out, d.dropOff)
	}
	d.dropMu.Unlock()
	if len(d.rings) > 0 && len(d.rings[0]) > 0 {
		pin := "workers not pinned"
		if d.cpus != nil {
			pin = fmt.Sprintf("worker i pinned to CPU %v[i]", d.cpus)
		}
		spin := "sleeps in poll() as soon as no frame is ready"
		if g := d.workers[0].group; g.Spin > 0 {
			spin = fmt.Sprintf("keeps looking for frames up to %s after traffic before it sleeps (adaptive: only while looking saves wake-ups)", g.Spin)
		}
		out = append(out, fmt.Sprintf("receive: per worker and interface %s; fanout %s over %d workers, %s; a worker %s",
			d.rings[0][0].Describe(), d.fanout, len(d.workers), pin, spin))
		tx := "one non-blocking sendmmsg per batch"
		if d.c.TxRing {
			tx = "a PACKET_TX_RING per worker and interface, one non-blocking kick per batch"
		}
		out = append(out, "transmit: "+tx+", qdisc bypassed")
		out = append(out, fmt.Sprintf("Go: GOMAXPROCS raised by %d while the workers run (a P each, so none waits for the Go scheduler)", len(d.workers)))
	}
	return out
}

// checkVIPNotLocal refuses a VIP the kernel owns (it would answer, or
// reset, the VIP's connections itself).
func (d *Director) checkVIPNotLocal(a netip.Addr) error {
	if d.nl == nil {
		return nil
	}
	fam := netlink.FAMILY_V4
	if a.Is6() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := d.nl.AddrList(nil, fam)
	if err != nil {
		return nil
	}
	for _, x := range addrs {
		ip, ok := netip.AddrFromSlice(x.IP.To4())
		if a.Is6() {
			ip, ok = netip.AddrFromSlice(x.IP.To16())
		}
		if ok && ip == a {
			name := "?"
			if l, err := d.nl.LinkByIndex(x.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			return fmt.Errorf("%w: VIP %s is assigned to %s on this host, so the kernel would answer (or reset) its connections itself; remove it (golvs answers ARP and Neighbor Solicitations for VIPs)", ErrHostLeak, a, name)
		}
	}
	return nil
}

// logf logs through the rate limiter: an identical line at most once a
// minute, its repeats summarised.
func (d *Director) logf(format string, args ...any) { d.logs.Logf(format, args...) }

// refilter rebuilds the kernel filter and the drop rule for the current
// services.
func (d *Director) refilter(s *Snapshot) error {
	if err := d.redrop(s); err != nil {
		d.logf("%v", err)
		return err
	}
	if len(d.rings) == 0 {
		return nil
	}
	dst, src := d.filterMatches(s)
	f, err := netio.BuildFilter(dst, src, true)
	if err != nil {
		d.logf("filter: %v", err)
		return err
	}
	mc := d.ndGroups(s)
	d.filter.Lock()
	defer d.filter.Unlock()
	for _, rs := range d.rings {
		for _, r := range rs {
			if err := r.SetFilter(f); err != nil {
				d.logf("filter: %v", err)
				return err
			}
			if err := r.SetMulticast(mc[r.IfIndex()]); err != nil {
				d.logf("filter: %v", err)
			}
		}
	}
	return nil
}

// ndGroups lists, per interface, the Ethernet multicast addresses of the
// solicited-node groups golvs answers Neighbor Solicitations in: its IPv6
// VIPs' on the interfaces that answer for VIPs, its IPv6 local
// addresses' on every interface (nd6.go).
func (d *Director) ndGroups(s *Snapshot) map[int][][6]byte {
	out := map[int][][6]byte{}
	var lips [][16]byte
	if pl := d.modes.pool6.Load(); pl != nil {
		for _, l := range pl.lips {
			lips = append(lips, l.a16)
		}
	}
	for idx := range d.ifMAC {
		seen := map[[6]byte]bool{}
		add := func(a [16]byte) {
			m := packet.MulticastMAC(packet.SolicitedNode(a))
			if !seen[m] {
				seen[m] = true
				out[idx] = append(out[idx], m)
			}
		}
		if d.ifARP[idx] {
			for v := range s.vips6 {
				add(v)
			}
		}
		for _, a := range lips {
			add(a)
		}
	}
	return out
}

// redrop sets the drop rule to the frames golvs forwards under s: TCP
// and UDP to its services (and marked destinations with a service), and
// replies from its NAT and FULLNAT real servers.
func (d *Director) redrop(s *Snapshot) error {
	d.dropMu.Lock()
	defer d.dropMu.Unlock()
	if d.drop == nil {
		return nil
	}
	var dst, src []netio.Match
	for _, r := range s.Marks {
		if r.Dst.Addr().Is4() && s.fwm[r.Mark] != nil || r.Dst.Addr().Is6() && s.fwm6[r.Mark] != nil {
			dst = append(dst, markMatches([]ipvs.MarkRule{r})...)
		}
	}
	for _, sv := range s.List {
		if sv.Config.FWMark == 0 {
			dst = append(dst, addrMatch(sv.Config.Proto, sv.Config.Addr, sv.Config.Port))
		}
		for _, dd := range sv.Dests {
			if m := dd.Method(); m != ipvs.MethodMasq && m != ipvs.MethodFullNAT {
				continue // DR and TUN replies never pass the director
			}
			port := dd.Port
			if port == 0 {
				port = sv.Config.Port
			}
			proto := sv.Config.Proto
			if sv.Config.FWMark != 0 {
				proto = 0
			}
			src = append(src, addrMatch(proto, dd.Addr, port))
		}
	}
	if err := d.drop.Set(dst, src); err != nil {
		return fmt.Errorf("director: %w", err)
	}
	return nil
}

// Run starts the workers and housekeeping and blocks until ctx is done;
// then it stops everything and closes the sockets.
func (d *Director) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	stop := make(chan struct{})
	if len(d.workers) > 0 {
		before, now, release := netio.ReserveProcs(len(d.workers))
		defer release()
		d.logf("host: GOMAXPROCS %d -> %d: a P for each of %d workers, so a worker woken by a frame never waits for the Go scheduler", before, now, len(d.workers))
	}
	for _, w := range d.workers {
		wg.Add(1)
		go func(w *Worker) {
			defer wg.Done()
			// The thread ends with the goroutine (never unlocked), so its
			// affinity goes with it.
			runtime.LockOSThread()
			if d.cpus != nil {
				var set unix.CPUSet
				set.Set(d.cpus[w.id])
				if err := unix.SchedSetaffinity(0, &set); err != nil {
					d.logf("worker %d: pinning to CPU %d: %v", w.id, d.cpus[w.id], err)
				}
			}
			w.tid.Store(int32(unix.Gettid()))
			w.loop(stop)
		}(w)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.housekeeping(stop)
	}()
	d.hb.running.Store(true)
	<-ctx.Done()
	d.hb.running.Store(false)
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
		d.resolveClients() // sync.go
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
			d.readRingStats()
			d.reasm.Expire(now)
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
			d.resolveClients() // sync.go
			lastPass = now
			d.logs.Flush()
		}
	}
}

// Close stops nothing (Run does that) but releases the sockets and puts
// back any host setting golvs changed.
func (d *Director) Close() {
	if d.Sync != nil {
		d.Sync.Close()
	}
	if len(d.rings) > 0 {
		d.readRingStats()
	}
	d.ringMu.Lock()
	for _, rs := range d.rings {
		for _, r := range rs {
			r.Close()
		}
	}
	d.rings = nil
	d.ringMu.Unlock()
	for _, w := range d.workers {
		w.closeTx()
	}
	d.dropMu.Lock()
	if d.drop != nil {
		if err := d.drop.Close(); err != nil {
			d.logf("host: %v", err)
		}
		d.drop = nil
	}
	d.dropMu.Unlock()
	if d.neigh != nil {
		d.neigh.Close()
		d.neigh = nil
	}
	d.closeAnnounce()
	if d.nl != nil {
		d.nl.Close()
		d.nl = nil
	}
	d.snmp.close()
	for _, f := range d.restore {
		f()
	}
	d.restore = nil
	d.dropMu.Lock() // TakeHost takes the locks under it
	d.locks.Close() // last: the host is as it was
	d.locks = nil
	d.dropMu.Unlock()
}

// Workers returns the number of workers.
func (d *Director) Workers() int { return len(d.workers) }

// WorkerThreads returns the thread IDs of the workers running now (each
// worker's goroutine is locked to its thread, pinned already), for a
// harness that places them on CPUs of its choice.
func (d *Director) WorkerThreads() []int {
	var tids []int
	for _, w := range d.workers {
		if t := w.tid.Load(); t != 0 && w.running.Load() {
			tids = append(tids, int(t))
		}
	}
	return tids
}
