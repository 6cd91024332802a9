package director

import (
	"sync"
	"sync/atomic"

	"github.com/golvs/golvs/packet"
)

// Counter names, in Counters order. Each received frame golvs does not
// forward is counted under exactly one of the drop causes; arp-answered
// and arp-other count the ARP frames it handled; tx-* and ring-* count
// what the kernel's sockets report.
var CounterNames = [NumCounters]string{
	"truncated-frame", "not-ipv4", "bad-ip", "fragment", "protocol", "bad-l4", "bad-arp",
	"bad-ip-checksum", "bad-ip-options", "bad-ip6-ext",
	"no-conn", "no-dest", "dest-unavailable", "table-full", "next-hop-unresolved",
	"ttl-expired", "not-ours", "arp-answered", "icmp-ignored", "tx-errors",
	"tx-dropped", "ring-packets", "ring-drops", "ring-freezes", "ring-errors",
	"other-host", "l2-broadcast", "l2-multicast", "vlan", "martian-source", "martian-dest",
	"too-big", "arp-other",
	"standby", "drop-packet", "backup", "client-unresolved",
	"nd-answered", "nd-other", "ip6-fragment-held", "ip6-fragment-dropped",
}

// Counter indices.
const (
	// 0..NumReasons-2 mirror packet.Reason 1..NumReasons-1
	CntNoConn = int(packet.NumReasons) - 1 + iota
	CntNoDest
	CntDestUnavail
	CntTableFull
	CntNoNextHop
	CntTTL
	CntNotOurs
	CntARPAnswered
	CntICMP
	CntTxErrors  // frames the kernel refused to send (bad virtio header, over the MTU)
	CntTxDropped // frames not sent because the socket or device queue was full
	CntRingPackets
	CntRingDrops     // frames the kernel lost because a receive ring was full
	CntRingFreezes   // times a TPACKET_V3 ring froze its queue
	CntRingErrors    // errors the kernel reported on a receive ring (its link went down or was removed)
	CntOtherHost     // addressed to another host's MAC (PACKET_OTHERHOST)
	CntBroadcast     // IPv4 in an Ethernet broadcast (no router forwards it)
	CntMulticast     // IPv4 in an Ethernet multicast
	CntVLAN          // 802.1Q-tagged with a VLAN ID (golvs serves untagged networks)
	CntMartianSrc    // source address no router accepts
	CntMartianDst    // destination address no router forwards
	CntTooBig        // over the egress MTU with DF set (or unsendable): ICMP fragmentation-needed
	CntARPOther      // ARP frames needing no answer (senders learnt)
	CntStandby       // frames dropped while parked for a graceful restart (takeover.go)
	CntDropPacket    // new conns dropped by the drop_packet defense (ip_vs_todrop)
	CntBackup        // a VRRP backup, or a sync backup with backup_only: nothing served (serving.go, sync.go)
	CntClientUnknown // a reply of a synced conn whose client is being resolved (sync.go)
	CntNDAnswered    // Neighbor Solicitations for a VIP or local address, answered
	CntNDOther       // Neighbour Discovery and MLD frames needing no answer
	CntFrag6Held     // IPv6 fragments taken for reassembly (their datagram is counted once whole)
	CntFrag6Drop     // IPv6 fragments refused: bad, overlapping, too many, no room (frag6.go)
	NumCounters
)

// Counter is one cause's count. Workers count in their own cache lines
// (no shared atomic add per packet) and a read sums them; Add is for the
// rare counts made outside a worker.
type Counter struct {
	shared atomic.Uint64
	i      int
	set    *counterSet
}

// Add adds n (outside the packet path: it is a contended atomic add).
func (c *Counter) Add(n uint64) { c.shared.Add(n) }

// Load returns the count, summed over every worker.
func (c *Counter) Load() uint64 {
	v := c.shared.Load()
	if c.set != nil {
		v += c.set.sum(c.i)
	}
	return v
}

// Counters are the per-cause counts of frames golvs did not forward (and a
// few it handled itself), summed over workers on read.
type Counters [NumCounters]Counter

// Get returns every count.
func (c *Counters) Get() (out [NumCounters]uint64) {
	if s := c[0].set; s != nil && s.refresh != nil {
		s.refresh()
	}
	for i := range c {
		out[i] = c[i].Load()
	}
	return
}

// workerCounters is one worker's counts, written by that worker only and
// padded so that no two workers' counts share a cache line.
type workerCounters struct {
	_ [64]byte
	v [NumCounters]atomic.Uint64
	m [NumModeCounters]atomic.Uint64 // the mode counters (modes.go)
	_ [64]byte
}

// inc adds one: an atomic add on a cache line no other CPU writes, so it
// never waits for another worker's.
func (w *workerCounters) inc(i int) { w.v[i].Add(1) }

// counterSet ties the director's Counters to its workers' counts and to
// counts kept elsewhere (transmit sockets).
type counterSet struct {
	mu      sync.Mutex
	blocks  atomic.Pointer[[]*workerCounters]
	sources atomic.Pointer[[]func(*[NumCounters]uint64)]
	refresh func() // brings counts kept by the kernel up to date (ring statistics)
}

func (d *Director) initCounters() {
	s := &counterSet{}
	s.blocks.Store(&[]*workerCounters{})
	s.sources.Store(&[]func(*[NumCounters]uint64){})
	for i := range d.Drops {
		d.Drops[i].i = i
		d.Drops[i].set = s
	}
	d.cset = s
}

// newBlock gives a worker its counts.
func (s *counterSet) newBlock() *workerCounters {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := &workerCounters{}
	l := append(append([]*workerCounters(nil), *s.blocks.Load()...), b)
	s.blocks.Store(&l)
	return b
}

// addSource adds counts that another part keeps; fn adds them to out.
func (s *counterSet) addSource(fn func(out *[NumCounters]uint64)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := append(append([]func(*[NumCounters]uint64){}, *s.sources.Load()...), fn)
	s.sources.Store(&l)
}

// modeSum adds up the workers' mode counters into out.
func (s *counterSet) modeSum(out *[NumModeCounters]uint64) {
	for _, b := range *s.blocks.Load() {
		for i := range b.m {
			out[i] += b.m[i].Load()
		}
	}
}

func (s *counterSet) sum(i int) uint64 {
	var v uint64
	for _, b := range *s.blocks.Load() {
		v += b.v[i].Load()
	}
	if src := *s.sources.Load(); len(src) > 0 {
		var x [NumCounters]uint64
		for _, fn := range src {
			fn(&x)
		}
		v += x[i]
	}
	return v
}

// CounterSet is one named group of the director's counters, as exporters
// (golvs's Prometheus endpoint) read them: a set becomes the series
// golvs_<Name>_total{<Label>="<Names[i]>"} (golvs_<Name> for a gauge).
// Counters added to an existing set (a new entry in CounterNames, say)
// appear in every exporter without further work; a new set needs one line
// in CounterSets.
type CounterSet struct {
	Name   string // series stem, e.g. "drops"
	Help   string
	Label  string // label naming each entry, e.g. "cause"
	Names  []string
	Values []uint64 // same length as Names
	Gauge  bool     // current values rather than counts that only grow
}

// CounterSets reads the director's counter sets now (atomic loads only;
// nothing on the packet path waits for it).
func (d *Director) CounterSets() []CounterSet {
	drops := d.Drops.Get()
	modes := d.ModeCounters()
	sets := []CounterSet{
		{
			Name:  "drops",
			Help:  "Frames golvs did not forward, by cause (arp-answered and arp-other count the ARP frames it handled; tx-errors and tx-dropped are live; ring-packets, ring-drops and ring-freezes are the kernel's ring statistics, read every housekeeping tick; ring-errors counts the errors the kernel reported on a ring (its link went down or was removed); standby counts frames dropped while parked for a graceful restart, backup those a VRRP backup or a sync backup with backup_only left alone).",
			Label: "cause", Names: CounterNames[:], Values: drops[:],
		},
		{
			Name:  "mode_events",
			Help:  "Events of the forwarding paths (ICMP errors sent, rate-limited and relayed, datagrams fragmented, GSO segmentation, TOA, local ports).",
			Label: "event", Names: ModeCounterNames[:], Values: modes[:],
		},
		d.syncCounterSet(), // sync.go
	}
	sets = append(sets, d.housekeepingSets()...) // resolve.go
	sets = append(sets, d.schedSets()...)        // schedcounters.go
	// The kernel's IPv4 reassembly in the director's namespace (it
	// reassembles fragments for golvs): only where it can be read.
	if k := d.KernelStats(); len(k) > 0 {
		ks := CounterSet{Name: "kernel_reasm", Label: "counter",
			Help: "The kernel's IPv4 reassembly counters of the director's network namespace (/proc/net/snmp Ip Reasm*), golvs's and the host's together."}
		for _, s := range kernelIPStats {
			if v, ok := k[s[0]]; ok {
				ks.Names = append(ks.Names, s[1])
				ks.Values = append(ks.Values, v)
			}
		}
		sets = append(sets, ks)
	}
	return sets
}
