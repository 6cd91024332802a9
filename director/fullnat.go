package director

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// FULLNAT local addresses (spec §5.5). Each new conn takes the next LIP
// round robin and, on it, the next free port of its protocol from a
// counter, so (LIP, lport) — and with it (LIP, lport, RIP, rport) — is
// unique among live conns by construction. Each counter starts at a
// random port of the range (as the kernel picks ephemeral ports, RFC
// 6056): a director just started, or one that just took over, must not
// give its first conns the pairs the last one gave, which the real
// servers may still hold in TIME_WAIT (a SYN to one can be answered
// with an ACK, and the client then waits a second to try again). A port
// is marked in a bitmap when a conn takes it and cleared when the conn
// leaves the table (conntrack's OnExpire). A pool with no free port left
// refuses the conn, counts it (fullnat-no-port) and logs ErrNoLocalPort;
// it never reuses a port in use. The bitmap lock is taken only when a
// conn is created or expires, never per packet.

// Default local port range, as Alibaba LVS and DPVS use.
const (
	DefaultLocalPortMin = 5000
	DefaultLocalPortMax = 65535
)

// Errors.
var (
	ErrNoLocalAddrs     = errors.New("director: FULLNAT needs a local address pool: golvs run --laddr IP[,IP...] (addresses on the real servers' network that no host owns; golvs answers ARP for them)")
	ErrLocalAddrOverlap = errors.New("director: bad FULLNAT local address pool")
	ErrNoLocalPort      = errors.New("director: FULLNAT: no local port available (every LIP:port of the pool is in use); new connections are dropped until some expire: add local addresses (--laddr) or widen the port range")
)

// lipPool is one family's local addresses (an IPv4 conn takes an IPv4
// LIP, an IPv6 conn an IPv6 one: modes.pool and modes.pool6).
type lipPool struct {
	min, max uint16
	lips     []*lip
	rr       atomic.Uint32
}

type lip struct {
	addr   netip.Addr
	a4     [4]byte  // IPv4: the address
	a16    [16]byte // IPv6: the address
	mu     sync.Mutex
	used   [2][]uint64 // TCP, UDP: bit i is port min+i
	free   [2]int
	next   [2]uint32
	conns  atomic.Int64
	noPort atomic.Uint64
}

func protoIndex(proto uint8) int {
	if proto == ipvs.ProtoUDP {
		return 1
	}
	return 0
}

func (pl *lipPool) has(a [4]byte) bool {
	for _, l := range pl.lips {
		if l.a4 == a && l.addr.Is4() {
			return true
		}
	}
	return false
}

func (pl *lipPool) has6(a *[16]byte) bool {
	for _, l := range pl.lips {
		if l.a16 == *a && l.addr.Is6() {
			return true
		}
	}
	return false
}

func (pl *lipPool) hasAddr(a netip.Addr) bool {
	for _, l := range pl.lips {
		if l.addr == a {
			return true
		}
	}
	return false
}

func (pl *lipPool) find(a netip.Addr) *lip {
	for _, l := range pl.lips {
		if l.addr == a {
			return l
		}
	}
	return nil
}

// alloc takes a free (LIP, port) for proto.
func (pl *lipPool) alloc(proto uint8) (l *lip, port uint16, ok bool) {
	n := uint32(len(pl.lips))
	if n == 0 {
		return nil, 0, false
	}
	pi := protoIndex(proto)
	span := uint32(pl.max) - uint32(pl.min) + 1
	start := pl.rr.Add(1)
	for i := uint32(0); i < n; i++ {
		l := pl.lips[(start+i)%n]
		l.mu.Lock()
		if l.free[pi] == 0 {
			l.mu.Unlock()
			l.noPort.Add(1)
			continue
		}
		for tries := uint32(0); tries < span; tries++ {
			idx := l.next[pi] % span
			l.next[pi]++
			w, b := idx/64, uint64(1)<<(idx%64)
			if l.used[pi][w]&b == 0 {
				l.used[pi][w] |= b
				l.free[pi]--
				l.mu.Unlock()
				l.conns.Add(1)
				return l, pl.min + uint16(idx), true
			}
		}
		l.mu.Unlock()
	}
	return nil, 0, false
}

func (pl *lipPool) release(addr netip.Addr, proto uint8, port uint16) {
	l := pl.find(addr)
	if l == nil || port < pl.min || port > pl.max {
		return
	}
	pi := protoIndex(proto)
	idx := uint32(port - pl.min)
	w, b := idx/64, uint64(1)<<(idx%64)
	l.mu.Lock()
	if l.used[pi][w]&b != 0 {
		l.used[pi][w] &^= b
		l.free[pi]++
		l.conns.Add(-1)
	}
	l.mu.Unlock()
}

// SetLocalAddrs sets the FULLNAT local address pool and port range (0, 0:
// 5000-65535). The addresses must be on the real servers' networks and
// owned by no host: golvs answers ARP for them, and the director's kernel
// must not hold them (it would reset the replies). Call it before FULLNAT
// conns exist: conns of a replaced pool keep their ports until they end.
func (d *Director) SetLocalAddrs(addrs []netip.Addr, portMin, portMax uint16) error {
	if portMin == 0 && portMax == 0 {
		portMin, portMax = DefaultLocalPortMin, DefaultLocalPortMax
	}
	if portMin == 0 || portMax < portMin {
		return fmt.Errorf("%w: local port range %d-%d is empty", ErrLocalAddrOverlap, portMin, portMax)
	}
	if err := validateLocalAddrs(addrs); err != nil {
		return err
	}
	for _, a := range addrs {
		if d.checkVIPNotLocal(a) != nil {
			return fmt.Errorf("%w: %s is assigned to this host; the kernel would reset FULLNAT replies to it (remove it: golvs answers ARP for local addresses)", ErrLocalAddrOverlap, a)
		}
		for _, sv := range d.snap.Load().List {
			if sv.Config.FWMark == 0 && sv.Config.Addr == a {
				return fmt.Errorf("%w: %s is a VIP", ErrLocalAddrOverlap, a)
			}
			for _, dd := range sv.Dests {
				if dd.Addr == a {
					return fmt.Errorf("%w: %s is a real server", ErrLocalAddrOverlap, a)
				}
			}
		}
	}
	span := int(portMax) - int(portMin) + 1
	pl, pl6 := &lipPool{min: portMin, max: portMax}, &lipPool{min: portMin, max: portMax}
	for _, a := range addrs {
		l := &lip{addr: a}
		if a.Is4() {
			l.a4 = a.As4()
		} else {
			l.a16 = a.As16()
		}
		for i := range l.used {
			l.used[i] = make([]uint64, (span+63)/64)
			l.free[i] = span
			l.next[i] = rand.Uint32N(uint32(span))
		}
		if a.Is4() {
			pl.lips = append(pl.lips, l)
		} else {
			pl6.lips = append(pl6.lips, l)
		}
	}
	d.cfg.mu.Lock()
	if d.CT.OnExpire == nil || !d.modes.hooked {
		prev := d.CT.OnExpire
		ct := d.CT
		d.CT.OnExpire = func(e *conntrack.Entry) {
			if e.Method == ipvs.MethodFullNAT {
				if a6 := ct.EntryAddrs6(e); a6 != nil {
					if p := d.modes.pool6.Load(); p != nil {
						p.release(netip.AddrFrom16(a6.Out.Dst), e.Out.Proto, e.Out.DstPort)
					}
				} else if p := d.modes.pool.Load(); p != nil {
					p.release(netip.AddrFrom4(e.Out.DstIP), e.Out.Proto, e.Out.DstPort)
				}
			}
			if prev != nil {
				prev(e)
			}
		}
		d.modes.hooked = true
	}
	d.modes.pool.Store(pl)
	d.modes.pool6.Store(pl6)
	d.publishLocked()
	d.cfg.mu.Unlock()
	return nil
}

// SetTOA turns the TOA option on FULLNAT SYNs on or off (on by default).
func (d *Director) SetTOA(on bool) { d.modes.noTOA.Store(!on) }

// LocalAddrStat is one local address's use (ipvsadm --get-laddr).
type LocalAddrStat struct {
	Addr   netip.Addr
	Conns  int64  // ports in use
	NoPort uint64 // conns it could not take (no port left on it)
}

// LocalAddrs returns the pool's use.
func (d *Director) LocalAddrs() []LocalAddrStat {
	var out []LocalAddrStat
	for _, pl := range []*lipPool{d.modes.pool.Load(), d.modes.pool6.Load()} {
		if pl == nil {
			continue
		}
		for _, l := range pl.lips {
			out = append(out, LocalAddrStat{Addr: l.addr, Conns: l.conns.Load(), NoPort: l.noPort.Load()})
		}
	}
	return out
}

// FullNATErr returns ErrNoLocalPort, with the count, once the pool ran out
// of ports at least once; nil otherwise.
func (d *Director) FullNATErr() error {
	if n := d.ModeCounters()[MCntNoPort]; n > 0 {
		return fmt.Errorf("%w (%d connections refused)", ErrNoLocalPort, n)
	}
	return nil
}

// createFullNAT gives a new FULLNAT conn (w.nc, filled by schedule) its
// local address and port and creates it.
func (w *Worker) createFullNAT(sv *Service, dest *ipvs.Dest, dport uint16) bool {
	p := &w.p
	nc := &w.nc
	pl := w.d.modes.pool.Load()
	var l *lip
	var lport uint16
	ok := false
	if pl != nil {
		l, lport, ok = pl.alloc(p.Proto)
	}
	if !ok {
		w.mcount(MCntNoPort)
		if now := w.d.CT.Now(); w.d.modes.lastNoPort.Swap(now) != now {
			w.d.logf("%v", w.d.FullNATErr())
		}
		return false
	}
	nc.Out = conntrack.Key{SrcIP: dest.Addr.As4(), DstIP: l.a4, SrcPort: dport, DstPort: lport, Proto: p.Proto}
	_, err := w.d.CT.Create(nc, p.Flags, &w.hit)
	if err != nil {
		pl.release(l.addr, p.Proto, lport)
		if err == conntrack.ErrExists {
			return w.d.CT.LookupIn(&nc.In, p.Flags, &w.hit) == conntrack.Found
		}
		w.count(CntTableFull)
		return false
	}
	dest.Stats.Conns.Add(1)
	sv.Stats.Conns.Add(1)
	w.st.conn()
	return true
}

// fullnatIn rewrites a client packet of a FULLNAT conn and sends it; a SYN
// gets the TOA option when it fits.
func (w *Worker) fullnatIn(f *netio.Frame, nh *ipvs.NextHop) bool {
	p := &w.p
	h := &w.hit
	if forward.TTLExpired(f.Data, p) {
		w.count(CntTTL)
		return false
	}
	mtu, ok := w.egress(f, nh.IfIndex, 0, p.Dst, false) // output.go
	if !ok {
		return false
	}
	cs := csumMode(f)
	syn := p.Proto == ipvs.ProtoTCP && p.Flags&(packet.TCPSyn|packet.TCPAck) == packet.TCPSyn
	forward.FullNATIn(f.Data, p, h.Out.DstIP, h.Out.DstPort, h.Out.SrcIP, h.Out.SrcPort, cs)
	forward.DecTTL(f.Data, p)
	if syn && !w.d.modes.noTOA.Load() {
		if !forward.TOAFits(f.Data, p, mtu) {
			w.mcount(MCntTOASkipped)
		} else {
			w.mcount(MCntTOA)
			f.Data = f.Data[:p.End]
			if !f.Grow(forward.TOALen) {
				b := w.m.alloc(w, netio.VnetHdrLen+forward.TOALen+p.End)
				copy(b, f.Vnet[:netio.VnetHdrLen])
				copy(b[netio.VnetHdrLen+forward.TOALen:], f.Data)
				forward.InsertTOA(b[netio.VnetHdrLen:], p, h.In.SrcIP, h.In.SrcPort, cs)
				forward.MAC(b[netio.VnetHdrLen:], nh.SrcMAC, nh.DstMAC)
				return w.send(nh.IfIndex, b[:netio.VnetHdrLen+p.End], false)
			}
			forward.InsertTOA(f.Data, p, h.In.SrcIP, h.In.SrcPort, cs)
			f.Data = f.Data[:p.End]
		}
	}
	forward.MAC(f.Data, nh.SrcMAC, nh.DstMAC)
	return w.emit(nh.IfIndex, f, mtu)
}
