package director

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// The forwarding methods beside NAT (spec §5): DR (-g) rewrites only the
// MACs, TUN (-i) encapsulates in IPIP or GUE, FULLNAT rewrites both ends
// (fullnat.go). DR and TUN conns carry NOOUTPUT: replies go from the real
// server straight to the client, and the INPUT-ONLY state table applies.

// Mode counters (events beside the frames' fates), in ModeCounterNames
// order.
const (
	MCntFragNeeded   = iota // ICMP fragmentation-needed sent (DF set, over the egress MTU, any mode)
	MCntGSOSegmented        // GSO frames cut into segments to go into a tunnel
	MCntNoPort              // FULLNAT: no local port left (new conn dropped)
	MCntTOA                 // FULLNAT: TOA option inserted into a SYN
	MCntTOASkipped          // FULLNAT: SYN without room for TOA (40 option bytes or MTU)
	MCntICMPRelayed         // ICMP errors matched to a conn and forwarded
	MCntUnreachSent         // ICMP port unreachable sent (no real server available)
	MCntICMPLimited         // ICMP errors not sent: over the rate limit
	MCntFragmented          // datagrams over the egress MTU, DF clear, sent as fragments
	MCntFragsSent           // the fragments they were cut into
	MCntPacketTooBig        // ICMPv6 packet too big sent (IPv6 over the egress MTU)
	MCntReassembled         // IPv6 datagrams reassembled from fragments (frag6.go)
	MCntReasmTimeout        // IPv6 datagrams dropped for not being whole in time
	MCntReasmEvicted        // IPv6 datagrams dropped to make room (reassembly memory full)
	NumModeCounters
)

// ModeCounterNames names the mode counters.
var ModeCounterNames = [NumModeCounters]string{
	"frag-needed-sent", "tun-gso-segmented",
	"fullnat-no-port", "toa-inserted", "toa-skipped", "icmp-related-relayed",
	"icmp-unreach-sent", "icmp-ratelimited", "fragmented", "fragments-sent",
	"packet-too-big-sent", "ip6-reassembled", "ip6-reasm-timeout", "ip6-reasm-evicted",
}

// DroppingModeCounters are the mode counters that count traffic golvs did
// not forward and that no drop counter counts too: a new FULLNAT conn with
// no local port, IPv6 datagrams given up in reassembly. (An ICMP error
// not sent is not among them: the frame that called for it is counted by
// its drop cause.)
var DroppingModeCounters = []int{MCntNoPort, MCntReasmTimeout, MCntReasmEvicted}

// modeState is the director-wide state of the non-NAT methods. (Their
// counters are the workers' own, workerCounters.m, summed on read like
// the drop counters.)
type modeState struct {
	// mtu holds the links' MTUs by interface index (any index: container
	// hosts have them in the tens of thousands), copied on write and
	// swapped whole; a link not in it counts as 1500. The kernel's link
	// notifications keep it current (netio.NeighConfig.OnLink).
	mtu   atomic.Pointer[map[int]uint32]
	mtuMu sync.Mutex              // serialises writers
	pool  atomic.Pointer[lipPool] // IPv4 local addresses
	pool6 atomic.Pointer[lipPool] // IPv6 local addresses
	noTOA atomic.Bool
	// lastNoPort is the coarse-clock tick of the last exhaustion log line.
	lastNoPort atomic.Int64
	hooked     bool // OnExpire releases FULLNAT ports (under cfg.mu)
}

// modeWorker is a worker's own scratch for the non-NAT methods: an arena
// for frames built outside the ring (segments, ICMP errors, frames that
// came without headroom), flushed before it is reused.
type modeWorker struct {
	arena []byte
	used  int
	id    uint16
	tun   forward.Tunnel
	emb   forward.Embedded
}

const arenaSize = 256 << 10

// ModeCounters returns the mode counters.
func (d *Director) ModeCounters() (out [NumModeCounters]uint64) {
	d.cset.modeSum(&out)
	st := d.reasm.Stats() // the reassembler keeps its own
	out[MCntReassembled], out[MCntReasmTimeout], out[MCntReasmEvicted] = st.Reassembled, st.Timeouts, st.Evicted
	return
}

func (d *Director) initModes() {
	d.modes.noTOA.Store(d.c.NoTOA)
	if len(d.c.LocalAddrs) > 0 {
		if err := d.SetLocalAddrs(d.c.LocalAddrs, d.c.LocalPortMin, d.c.LocalPortMax); err != nil {
			d.logf("fullnat: %v", err)
		}
	}
}

// mcount counts a mode event on the worker's own cache line.
func (w *Worker) mcount(i int) { w.cnt.m[i].Add(1) }

// linkMTU returns the MTU of one of the director's links.
func (d *Director) linkMTU(ifindex int) int {
	if m := d.modes.mtu.Load(); m != nil {
		if v, ok := (*m)[ifindex]; ok {
			return int(v)
		}
	}
	return 1500
}

// SetLinkMTU records a link's MTU: the kernel's link notifications call it
// (through netio.Neigh) at start and on every change; tests call it
// directly.
func (d *Director) SetLinkMTU(ifindex, mtu int) {
	if mtu <= 0 {
		return
	}
	d.modes.mtuMu.Lock()
	defer d.modes.mtuMu.Unlock()
	old := d.modes.mtu.Load()
	if old != nil && (*old)[ifindex] == uint32(mtu) {
		return
	}
	m := make(map[int]uint32, 4)
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[ifindex] = uint32(mtu)
	d.modes.mtu.Store(&m)
}

// checkModeDest validates what a method allows, without the host.
func checkModeDest(svc *ipvs.ServiceConfig, d *ipvs.DestConfig) error {
	switch d.Method {
	case ipvs.MethodRoute, ipvs.MethodTunnel:
		if svc.FWMark == 0 && d.Port != 0 && svc.Port != 0 && d.Port != svc.Port {
			return fmt.Errorf("director: real server %s: port mapping is not possible with %s (the real server gets the packet as the client sent it, to port %d); use -r %s:%d, or NAT (-m) to map ports", d.AddrPort(), methodFlag(d.Method), svc.Port, d.Addr, svc.Port)
		}
		if d.Method == ipvs.MethodTunnel {
			switch d.TunType {
			case ipvs.TunIPIP:
			case ipvs.TunGUE:
				if d.TunPort == 0 {
					return fmt.Errorf("director: real server %s: --tun-type gue needs --tun-port (the UDP port rs-tun listens on)", d.AddrPort())
				}
				if d.TunFlags&ipvs.TunFlagRemCsum != 0 {
					return fmt.Errorf("director: real server %s: --tun-remcsum is not supported (use --tun-nocsum)", d.AddrPort())
				}
			default:
				return fmt.Errorf("director: real server %s: tunnel type %d is not supported (ipip and gue are)", d.AddrPort(), d.TunType)
			}
		}
	case ipvs.MethodFullNAT:
	}
	return nil
}

func methodFlag(m ipvs.Method) string {
	switch m {
	case ipvs.MethodRoute:
		return "DR (-g)"
	case ipvs.MethodTunnel:
		return "TUN (-i)"
	case ipvs.MethodFullNAT:
		return "FULLNAT (--fullnat)"
	}
	return "NAT (-m)"
}

// checkDestHost says why a method cannot work on this host before any
// traffic flows: DR needs the real server on a directly connected
// network, TUN a route to it, FULLNAT a local address pool.
func (dr *Director) checkDestHost(svc *ipvs.ServiceConfig, d *ipvs.DestConfig) error {
	// The kernel refuses a mixed-family dest while a sync daemon runs:
	// the sync protocol cannot carry such a conn (ip_vs_ctl.c).
	if d.Addr.Is6() != svc.IsV6() && dr.Sync != nil {
		if m, b := dr.Sync.Running(); m || b {
			return fmt.Errorf("director: real server %s: %s (a real server of another address family than its service while a sync daemon runs: the sync protocol cannot carry its connections)", d.AddrPort(), ipvs.EINVALText)
		}
	}
	switch d.Method {
	case ipvs.MethodRoute:
		if dr.neigh != nil && !dr.neigh.OnLink(d.Addr) {
			return fmt.Errorf("director: real server %s: DR (-g) needs it on a network directly connected to golvs's interfaces (%s), and it is not: DR only changes MAC addresses. Use TUN (-i) or NAT (-m)", d.Addr, dr.linkNets())
		}
	case ipvs.MethodTunnel:
		if dr.neigh != nil {
			if _, _, _, err := dr.neigh.Route(d.Addr); err != nil {
				return fmt.Errorf("director: real server %s: TUN (-i) cannot reach it: %v", d.Addr, err)
			}
		}
	case ipvs.MethodFullNAT:
		pl := dr.modes.pool.Load()
		if svc.IsV6() {
			pl = dr.modes.pool6.Load()
		}
		if pl == nil || len(pl.lips) == 0 {
			fam := "IPv4"
			if svc.IsV6() {
				fam = "IPv6"
			}
			return fmt.Errorf("%w (real server %s: an %s service needs %s local addresses)", ErrNoLocalAddrs, d.AddrPort(), fam, fam)
		}
		if pl.hasAddr(d.Addr) {
			return fmt.Errorf("%w: real server %s is in the local address pool", ErrLocalAddrOverlap, d.Addr)
		}
		if svc.FWMark == 0 && pl.hasAddr(svc.Addr) {
			return fmt.Errorf("%w: VIP %s is in the local address pool", ErrLocalAddrOverlap, svc.Addr)
		}
	}
	return nil
}

func (dr *Director) linkNets() string {
	s := ""
	for _, l := range dr.neigh.Links() {
		for _, p := range l.Addrs {
			if s != "" {
				s += ", "
			}
			s += l.Name + " " + p.Masked().String()
		}
	}
	return s
}

// modeFilter lists what the kernel filter must also pass for the other
// methods: ICMP to VIPs (from clients) and local addresses, and ICMP from
// real servers (errors about NAT and FULLNAT conns, fwmark ones included).
func (d *Director) modeFilter(s *Snapshot) (dst, src []netio.Match) {
	for _, sv := range s.List {
		if sv.Config.FWMark == 0 {
			dst = append(dst, icmpMatch(sv.Config.Addr))
		}
		for _, dd := range sv.Dests { // fwmark services' real servers too
			src = append(src, icmpMatch(dd.Addr))
		}
	}
	for _, pl := range []*lipPool{d.modes.pool.Load(), d.modes.pool6.Load()} {
		if pl == nil {
			continue
		}
		for _, l := range pl.lips {
			dst = append(dst, icmpMatch(l.addr))
		}
	}
	return dst, src
}

// icmpMatch is a filter entry for ICMP (ICMPv6) to or from an address.
func icmpMatch(a netip.Addr) netio.Match {
	if a.Is6() {
		return netio.Match{Proto: 58, V6: true, Addr6: a.As16()}
	}
	return netio.Match{Proto: 1, Addr: a.As4()}
}

// isLocalAddr6 reports a FULLNAT IPv6 local address.
func (d *Director) isLocalAddr6(a *[16]byte) bool {
	pl := d.modes.pool6.Load()
	return pl != nil && pl.has6(a)
}

// isLocalAddr reports a FULLNAT local address (golvs answers ARP for it:
// the kernel must not own it, or it would reset the replies).
func (d *Director) isLocalAddr(a [4]byte) bool {
	pl := d.modes.pool.Load()
	return pl != nil && pl.has(a)
}

// inboundMode forwards a client packet of a DR, TUN or FULLNAT conn; h
// holds the conn, nh the dest's next hop.
func (w *Worker) inboundMode(f *netio.Frame, dst *ipvs.Dest, nh *ipvs.NextHop) {
	p := &w.p
	h := &w.hit
	n := uint64(p.End - p.L3)
	var ok bool
	switch h.Method {
	case ipvs.MethodRoute:
		mtu, fits := w.egress(f, nh.IfIndex, 0, p.Dst, false)
		if !fits {
			return
		}
		forward.DR(f.Data, nh.SrcMAC, nh.DstMAC)
		ok = w.emit(nh.IfIndex, f, mtu)
	case ipvs.MethodTunnel:
		ok = w.tunnel(f, dst, nh)
	case ipvs.MethodFullNAT:
		ok = w.fullnatIn(f, nh)
	default:
		w.count(CntDestUnavail)
	}
	if !ok {
		return
	}
	w.st.in(dst, h.SvcStats, n)
}

// send queues a frame; flush sends at once.
func (w *Worker) send(ifindex int, buf []byte, flush bool) bool {
	t := w.txFor(ifindex)
	if t == nil {
		w.count(CntNoNextHop)
		return false
	}
	t.Queue(buf)
	if traceCompiled && w.ev != nil {
		w.ev.SetAfter(buf[netio.VnetHdrLen:])
		w.ev.OutIf = w.d.IfName(ifindex)
		w.ev.Verdict = "forwarded"
	}
	if flush {
		t.Flush()
	}
	return true
}

// alloc takes n bytes of the worker's arena, for a frame built outside
// the ring (fragments, segments, ICMP errors, ARP replies, copies of
// frames without headroom), queued with the batch; every flush empties
// the arena, and a full arena is flushed first.
func (m *modeWorker) alloc(w *Worker, n int) []byte {
	if m.arena == nil {
		m.arena = make([]byte, arenaSize)
	}
	if n > len(m.arena) {
		return nil
	}
	if m.used+n > len(m.arena) {
		w.flush()
	}
	b := m.arena[m.used : m.used+n : m.used+n]
	m.used += n
	return b
}

func vnetGSO(f *netio.Frame) (typ uint8, size int) {
	if len(f.Vnet) < netio.VnetHdrLen {
		return 0, 0
	}
	return f.Vnet[1] &^ 0x80, int(binary.LittleEndian.Uint16(f.Vnet[4:]))
}

// shiftCsumStart moves a NEEDS_CSUM offset by n bytes (an outer header
// went in front; the checksum to complete is still the inner one's).
func shiftCsumStart(vnet []byte, n int) {
	if len(vnet) >= netio.VnetHdrLen && vnet[0]&netio.VnetNeedsCsum != 0 {
		binary.LittleEndian.PutUint16(vnet[6:], binary.LittleEndian.Uint16(vnet[6:])+uint16(n))
	}
}

// tunnel encapsulates a client packet toward its real server (IPIP, or
// GUE with --tun-type gue), with IPVS's MTU rule: a packet that would not
// fit the path with DF set is answered with ICMP fragmentation-needed
// carrying the MTU minus the tunnel overhead.
func (w *Worker) tunnel(f *netio.Frame, dst *ipvs.Dest, nh *ipvs.NextHop) bool {
	p := &w.p
	t := w.setTunnel(dst, nh) // an IPv6 outer header for an IPv6 real server (modes6.go)
	oh := t.Overhead()
	inner := p.End - p.L3
	mtu := w.d.linkMTU(nh.IfIndex)
	df := packet.IPv4(f.Data[p.L3:]).DF()
	gt, gs := vnetGSO(f)
	if gt != netio.GSONone {
		if gt != netio.GSOTCPv4 || p.Proto != 6 {
			w.count(CntTooBig) // a GSO kind a tunnel cannot carry
			return false
		}
		hl := p.L4 - p.L3 + int(f.Data[p.L4+12]>>4)*4
		if hl+gs+oh > mtu {
			return w.tooBig(f, df, mtu-oh)
		}
		return w.tunnelSegments(f, nh.IfIndex, gs, oh)
	}
	if inner+oh > mtu {
		imtu, ok := w.egress(f, nh.IfIndex, oh, p.Dst, false)
		if !ok {
			return false
		}
		// DF clear: the inner packet is fragmented, each fragment in a
		// tunnel packet of its own.
		return w.fragment(nh.IfIndex, f, imtu, t)
	}
	return w.encapWhole(f, nh.IfIndex, t)
}

// encapWhole puts the frame p describes, whole, into tunnel t and sends
// it: in place when the frame has headroom, else as a copy in the arena.
func (w *Worker) encapWhole(f *netio.Frame, ifindex int, t *forward.Tunnel) bool {
	p := &w.p
	m := &w.m
	oh := t.Overhead()
	inner := p.End - p.L3
	t.ID = m.id
	m.id++
	f.Data = f.Data[:p.End]
	if f.Grow(oh) {
		forward.Encap(f.Data, inner, t)
		shiftCsumStart(f.Vnet, oh)
		return w.send(ifindex, f.Buf(), false)
	}
	// No headroom (a frame that did not come from a ring): build a copy.
	b := m.alloc(w, netio.VnetHdrLen+packet.EthLen+oh+inner)
	copy(b, f.Vnet[:netio.VnetHdrLen])
	copy(b[netio.VnetHdrLen+packet.EthLen+oh:], f.Data[p.L3:p.End])
	forward.Encap(b[netio.VnetHdrLen:], inner, t)
	shiftCsumStart(b, oh)
	return w.send(ifindex, b, false)
}

// tunnelSegments cuts a GSO TCP frame into segments and encapsulates each:
// a virtio header cannot describe TSO inside a tunnel.
func (w *Worker) tunnelSegments(f *netio.Frame, ifindex, mss, oh int) bool {
	p := &w.p
	m := &w.m
	t := &m.tun
	ip := f.Data[p.L3:p.End]
	nseg := forward.TCPSegments(ip, mss)
	hl := p.L4 - p.L3 + int(f.Data[p.L4+12]>>4)*4
	for i := 0; i < nseg; i++ {
		b := m.alloc(w, netio.VnetHdrLen+packet.EthLen+oh+hl+mss)
		if b == nil {
			w.count(CntTooBig)
			return false
		}
		for j := 0; j < netio.VnetHdrLen; j++ {
			b[j] = 0
		}
		n := forward.TCPSegment(b[netio.VnetHdrLen+packet.EthLen+oh:], ip, mss, i)
		t.ID = m.id
		m.id++
		forward.Encap(b[netio.VnetHdrLen:], n, t)
		if !w.send(ifindex, b[:netio.VnetHdrLen+packet.EthLen+oh+n], false) {
			return false
		}
	}
	w.mcount(MCntGSOSegmented)
	return true
}

// tooBig answers a GSO frame whose segments do not fit the tunnel:
// fragmentation-needed (announcing mtu) when DF is set, else a counted
// drop (a segment cannot be fragmented before it exists).
func (w *Worker) tooBig(f *netio.Frame, df bool, mtu int) bool {
	w.count(CntTooBig)
	if df && !w.d.c.NoPMTU {
		w.fragNeeded(f, w.p.Dst, mtu)
	}
	return false
}

// ValidateLocalAddrs checks a FULLNAT local address pool: IPv4 and IPv6
// unicast addresses (IPv6 ones of global scope), each once.
func validateLocalAddrs(addrs []netip.Addr) error {
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		if !a.Is4() && !a.Is6() || a.Is4In6() || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a.IsLinkLocalUnicast() {
			return fmt.Errorf("%w: %s is not a unicast IPv4 or global IPv6 address", ErrLocalAddrOverlap, a)
		}
		if seen[a] {
			return fmt.Errorf("%w: %s is listed twice", ErrLocalAddrOverlap, a)
		}
		seen[a] = true
	}
	return nil
}
