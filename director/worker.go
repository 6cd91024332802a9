package director

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
	"github.com/golvs/golvs/sched"
	"github.com/golvs/golvs/trace"
)

// lookupNames name the conntrack verdicts in traces.
var lookupNames = [...]string{conntrack.Miss: "miss", conntrack.Found: "hit", conntrack.Reused: "reuse"}

// Transmitter queues frames for one interface; netio.Tx is the real one,
// tests use a fake. Frames are queued with their virtio header in front.
type Transmitter interface {
	Queue(buf []byte)
	Flush()
}

// Worker is one packet-processing loop. Everything it touches per packet
// is its own or behind a conntrack shard lock.
type Worker struct {
	d     *Director
	group *netio.Group
	tx    []Transmitter // by ifindex
	snap  *Snapshot

	p   packet.Parsed
	hit conntrack.Hit
	nc  conntrack.NewConn
	dc  conntrack.DropCounter // drop_packet's count, per worker
	sp  sched.Packet
	m   modeWorker // DR, TUN, FULLNAT scratch (modes.go)

	id     int
	backup bool           // a VRRP backup (serving.go) or a sync backup with backup_only (sync.go): serve nothing; loaded once per batch
	tr     *trace.Tracer  // the attached tracer, loaded once per batch
	ev     *trace.Event   // the current frame's event, when traced
	dec    sched.Decision // scratch for traced scheduler decisions
	st     statCache      // packet and byte counts, added up once per batch

	macs []ifaceMAC // the director's interface MACs by ifindex (a slice, not the map, per packet), loaded once per batch (ifmac.go)
	cnt  *workerCounters

	vipSnap *Snapshot // the snapshot vipList was built from (validate.go)
	vipList [][4]byte

	x6       worker6   // IPv6 scratch (worker6.go)
	vip6Snap *Snapshot // the snapshot vip6List was built from (validate6.go)
	vip6List [][16]byte

	running, parked atomic.Bool  // the loop runs; it has seen standby (takeover.go)
	tid             atomic.Int32 // the thread the worker's goroutine is locked to
}

type ifaceMAC struct {
	mac [6]byte
	ok  bool
}

func (d *Director) newWorker() *Worker {
	w := &Worker{d: d, id: len(d.workers), cnt: d.cset.newBlock()}
	w.st.tot = &d.Total
	if t := d.macs.Load(); t != nil {
		w.macs = *t
	} else {
		w.macs = macTable(d.ifMAC) // NewOffline: no link watcher to follow
	}
	return w
}

// macTable is the workers' MAC table: by ifindex, a slice, not the map,
// per packet.
func macTable(m map[int][6]byte) []ifaceMAC {
	n := 0
	for idx := range m {
		n = max(n, idx+1)
	}
	t := make([]ifaceMAC, n)
	for idx, mac := range m {
		t[idx] = ifaceMAC{mac, true}
	}
	return t
}

// ifMAC returns the MAC of one of the director's interfaces.
func (w *Worker) ifMAC(ifindex int) ([6]byte, bool) {
	if ifindex >= 0 && ifindex < len(w.macs) {
		return w.macs[ifindex].mac, w.macs[ifindex].ok
	}
	return [6]byte{}, false
}

// ownMAC is ifMAC, or else the destination MAC of the received frame (which
// was addressed to the director).
func (w *Worker) ownMAC(ifindex int, f *netio.Frame) [6]byte {
	if mac, ok := w.ifMAC(ifindex); ok {
		return mac
	}
	return packet.Eth(f.Data).Dst()
}

func (w *Worker) setTx(ifindex int, t Transmitter) {
	for len(w.tx) <= ifindex {
		w.tx = append(w.tx, nil)
	}
	w.tx[ifindex] = t
}

func (w *Worker) txFor(ifindex int) Transmitter {
	if ifindex < len(w.tx) {
		return w.tx[ifindex]
	}
	return nil
}

// sender is a real transmitter: netio.Tx or netio.TxRing.
type sender interface {
	Transmitter
	IfIndex() int
	Stats() netio.TxStats
	Close() error
}

func (w *Worker) closeTx() {
	for _, t := range w.tx {
		if c, ok := t.(sender); ok && c != nil {
			c.Close() // its counters stay readable
		}
	}
	w.tx = nil
}

// flush sends every queued frame; the arena's frames are gone then, and
// it is reused from the start.
func (w *Worker) flush() {
	for _, t := range w.tx {
		if t != nil {
			t.Flush()
		}
	}
	w.m.used = 0
}

// loop takes batches of frames from the worker's rings until stop closes.
func (w *Worker) loop(stop chan struct{}) {
	var b netio.Block
	var f netio.Frame
	w.running.Store(true)
	defer w.running.Store(false)
	for {
		select {
		case <-stop:
			return
		default:
		}
		w.group.Wait(100 * time.Millisecond)
		standby := w.d.handover.standby.Load()
		w.parked.Store(standby)
		w.beat()
		for _, r := range w.group.Rings {
			// One batch from each of the ring's sockets at most, so no
			// interface waits behind a busy one.
			for k := r.Sockets(); k > 0 && r.TryNext(&b); k-- {
				w.load()
				for b.Frame(&f) {
					if standby {
						w.standbyFrame(&f)
						continue
					}
					w.handle(&f)
				}
				w.flush() // frames point into the ring: send before release
				b.Release()
				w.st.flush()
			}
		}
	}
}

// load takes what a batch runs under: the service snapshot, the serving
// switch and the tracer, each loaded once.
func (w *Worker) load() {
	w.snap = w.d.snap.Load()
	if t := w.d.macs.Load(); t != nil {
		w.macs = *t
	}
	w.backup = w.d.srv.backup.Load() || w.d.syncBackup.Load()
	if traceCompiled {
		w.tr = w.d.tracer.Load()
	}
}

func (w *Worker) count(i int) {
	w.cnt.inc(i)
	if traceCompiled && w.ev != nil {
		w.ev.Verdict = dropVerdicts[i]
	}
}

// handle processes one frame. It must not allocate (when no trace is
// attached).
func (w *Worker) handle(f *netio.Frame) {
	w.handleFrame(f)
	if traceCompiled && w.ev != nil {
		w.traceEnd()
	}
}

func (w *Worker) handleFrame(f *netio.Frame) {
	if f.Trunc {
		w.count(int(packet.ReasonTruncated) - 1)
		return
	}
	if !w.validL2(f) { // validate.go
		return
	}
	p := &w.p
	packet.Decode(f.Data, p)
	switch p.Kind {
	case packet.KindARP:
		w.arpIn(f)
		return
	case packet.KindIPv4:
	case packet.KindIPv6:
		w.handle6(f) // worker6.go
		return
	default:
		if p.Reason == packet.ReasonFragment && packet.Eth(f.Data).Type() == packet.EtherTypeIP6 {
			w.frag6(f) // frag6.go: reassembled here (the kernel does IPv4's)
			return
		}
		w.count(int(p.Reason) - 1)
		return
	}
	if !w.validIPv4(f) {
		return
	}
	if w.backup {
		// A VRRP backup (serving.go), or a sync backup with backup_only
		// (sync.go), forwards nothing.
		w.count(CntBackup)
		return
	}
	if p.Proto == 1 {
		// ICMP errors about a conn are relayed; the rest is the kernel's.
		w.icmp(f)
		return
	}
	if sv := w.snap.lookup(p.Proto, p.Dst, p.DPort); sv != nil {
		w.inbound(f, sv)
		return
	}
	w.reply(f)
}

// csumMode tells whether the frame's L4 checksum is complete or an
// offload request (virtio NEEDS_CSUM).
func csumMode(f *netio.Frame) forward.Csum {
	if len(f.Vnet) > 0 && f.Vnet[0]&netio.VnetNeedsCsum != 0 {
		return forward.CsumPartial
	}
	return forward.CsumFull
}

// inbound handles a client -> VIP packet.
func (w *Worker) inbound(f *netio.Frame, sv *Service) {
	p := &w.p
	k := conntrack.ConnKey4(p.Src, p.Dst, p.SPort, p.DPort, p.Proto)
	h := &w.hit
	if traceCompiled && w.tr != nil {
		w.traceStart(f, "request", sv, p.Src, p.Dst, p.SPort, p.DPort)
	}
	if packet.IPv4(f.Data[p.L3:]).TTL() <= 1 && w.ttlDrops(sv, &k) {
		w.count(CntTTL) // before any state is created or moved
		return
	}
	v := w.d.CT.LookupIn(&k, p.Flags, h)
	if v == conntrack.Found && h.ClientIf == 0 && (h.Method == ipvs.MethodMasq || h.Method == ipvs.MethodFullNAT) {
		w.d.clients.learn(netip.AddrFrom4(p.Src).As16(), f.IfIndex, packet.Eth(f.Data).Src()) // a synced conn's replies go back this way (sync.go)
	}
	// A packet that starts a connection: UDP, or a TCP SYN without RST.
	// One that may create a conn: the same, or with sloppy_tcp any TCP
	// packet without RST (spec §3.8).
	syn := p.Proto != ipvs.ProtoTCP || p.Flags&(packet.TCPSyn|packet.TCPRst) == packet.TCPSyn
	opens := syn || w.d.c.SloppyTCP && p.Flags&packet.TCPRst == 0
	if traceCompiled && w.ev != nil {
		w.ev.Lookup = lookupNames[v]
		if v == conntrack.Found {
			w.traceLookup(lookupNames[v], h)
		}
	}
	if v != conntrack.Found {
		if !opens {
			// Not a connection golvs knows, and not one it may start:
			// the kernel gets it and drops it (the VIP is not its own).
			w.count(CntNoConn)
			return
		}
		if !w.schedule(f, sv, &k) {
			return
		}
		if traceCompiled && w.ev != nil {
			w.traceLookup(lookupNames[v], h)
		}
	} else if h.Dest != nil && !h.Dest.Available() {
		// The dest was removed (spec §3.8). With expire_nodest_conn the
		// conn is expired and the packet treated as new; without it, the
		// packet is dropped and the conn times out.
		if !w.d.c.ExpireNodestConn {
			w.count(CntDestUnavail)
			return
		}
		if !w.rescheduleNew(f, sv, &k, opens) {
			return
		}
	} else if h.Dest != nil && syn && p.Proto == ipvs.ProtoTCP && h.Dest.Weight() == 0 && w.d.c.ExpireNodestConn {
		// A new SYN reusing the tuple of a conn on a quiesced dest: with
		// expire_nodest_conn it is scheduled anew; without, the
		// quiesced dest keeps its conn.
		if !w.rescheduleNew(f, sv, &k, opens) {
			return
		}
	}
	dst := h.Dest
	nh := dst.Next.Load()
	if nh == nil {
		w.count(CntNoNextHop)
		w.d.kickResolver()
		return
	}
	if h.Method != ipvs.MethodMasq {
		w.inboundMode(f, dst, nh) // DR, TUN, FULLNAT: modes.go
		return
	}
	if forward.TTLExpired(f.Data, p) {
		w.count(CntTTL)
		return
	}
	mtu, ok := w.egress(f, nh.IfIndex, 0, p.Dst, false) // output.go
	if !ok {
		return
	}
	n := uint64(p.End - p.L3)
	forward.DNAT(f.Data, p, h.Out.SrcIP, h.Out.SrcPort, csumMode(f))
	forward.DecTTL(f.Data, p)
	forward.MAC(f.Data, nh.SrcMAC, nh.DstMAC)
	if !w.emit(nh.IfIndex, f, mtu) {
		return
	}
	w.st.in(dst, h.SvcStats, n)
}

// rescheduleNew expires the packet's conn and treats the packet as the
// first of a new one (IPVS's expire_nodest_conn).
func (w *Worker) rescheduleNew(f *netio.Frame, sv *Service, k *conntrack.Key, opens bool) bool {
	w.d.CT.Expire(k)
	if !opens {
		w.count(CntNoConn)
		return false
	}
	return w.schedule(f, sv, k)
}

// schedule picks a dest for a new conn and creates it; h is filled. The
// drop_packet defense may drop the packet first (ip_vs_todrop, before any
// scheduling).
func (w *Worker) schedule(f *netio.Frame, sv *Service, k *conntrack.Key) bool {
	if w.d.CT.DropPacket(&w.dc) {
		w.count(CntDropPacket)
		return false
	}
	p := &w.p
	sp := &w.sp
	sp.Proto = p.Proto
	sp.Src = netip.AddrFrom4(p.Src)
	sp.Dst = netip.AddrFrom4(p.Dst)
	sp.SrcPort, sp.DstPort, sp.Inverse = p.SPort, p.DPort, false
	var dest *ipvs.Dest
	var tpl conntrack.Ref
	var dport uint16
	if sv.Config.Flags&ipvs.SvcPersistent != 0 {
		var ok bool
		if dest, tpl, dport, ok = w.persistPick(f, sv); !ok {
			return false
		}
	} else {
		if sv.Config.Port == 0 && sv.Config.FWMark == 0 {
			// A non-persistent port-zero service schedules nothing
			// (the kernel: "port zero only supported in persistent
			// services").
			w.count(CntNoDest)
			return false
		}
		if traceCompiled && w.ev != nil {
			w.traceSched(sv)
		}
		dest = sv.Sched.Schedule(sv.View, sp)
		if traceCompiled && w.ev != nil && dest != nil {
			w.ev.Sched.Chosen = netip.AddrPortFrom(dest.Addr, dest.Port)
		}
		if dest == nil {
			w.count(CntNoDest)
			w.rejectNoDest(f)
			return false
		}
		dport = dest.Port
		if dport == 0 {
			dport = p.DPort
		}
	}
	nc := &w.nc
	*nc = conntrack.NewConn{}
	nc.In = *k
	nc.Dest = dest
	nc.Tpl = tpl
	nc.Method = dest.Method()
	nc.ClientIf = int32(f.IfIndex)
	copy(nc.ClientMAC[:], f.Data[6:12])
	nc.NoOutput = nc.Method != ipvs.MethodMasq && nc.Method != ipvs.MethodFullNAT
	if nc.Method == ipvs.MethodMasq {
		nc.Out = conntrack.Key{SrcIP: dest.Addr.As4(), DstIP: p.Src, SrcPort: dport, DstPort: p.SPort, Proto: p.Proto}
	}
	if nc.Method == ipvs.MethodFullNAT {
		return w.createFullNAT(sv, dest, dport) // fullnat.go: LIP and port
	}
	_, err := w.d.CT.Create(nc, p.Flags, &w.hit)
	if err != nil {
		if err == conntrack.ErrExists {
			// Another worker created it a moment ago.
			return w.d.CT.LookupIn(k, p.Flags, &w.hit) == conntrack.Found
		}
		w.count(CntTableFull)
		return false
	}
	dest.Stats.Conns.Add(1)
	sv.Stats.Conns.Add(1)
	w.st.conn()
	return true
}

// reply handles a packet that is not for a VIP: a NAT reply from a real
// server, or nothing of golvs's.
func (w *Worker) reply(f *netio.Frame) {
	p := &w.p
	k := conntrack.ConnKey4(p.Src, p.Dst, p.SPort, p.DPort, p.Proto)
	h := &w.hit
	if forward.TTLExpired(f.Data, p) {
		// Replies are forwarded as a router does: TTL <= 1 is dropped
		// before the conn's state moves.
		if w.d.CT.Peek(&k, true, h) {
			w.count(CntTTL)
		} else {
			w.count(CntNotOurs)
		}
		return
	}
	if !w.d.CT.LookupOut(&k, p.Flags, h) {
		w.count(CntNotOurs)
		return
	}
	if h.ClientIf == 0 && !w.clientHop(h) {
		return // a synced conn whose client is being resolved (sync.go)
	}
	if traceCompiled && w.tr != nil {
		w.traceStart(f, "reply", nil, h.In.SrcIP, h.In.DstIP, h.In.SrcPort, h.In.DstPort)
		if w.ev != nil {
			w.traceLookup("hit", h)
		}
	}
	mtu, ok := w.egress(f, int(h.ClientIf), 0, h.In.DstIP, true)
	if !ok {
		return
	}
	n := uint64(p.End - p.L3)
	if h.Method == ipvs.MethodFullNAT {
		forward.FullNATOut(f.Data, p, h.In.DstIP, h.In.DstPort, h.In.SrcIP, h.In.SrcPort, csumMode(f))
	} else {
		forward.SNAT(f.Data, p, h.In.DstIP, h.In.DstPort, csumMode(f))
	}
	forward.DecTTL(f.Data, p)
	forward.MAC(f.Data, w.ownMAC(int(h.ClientIf), f), h.ClientMAC)
	if !w.emit(int(h.ClientIf), f, mtu) {
		return
	}
	w.st.out(h.Dest, h.SvcStats, n)
}

// arpIn answers ARP requests for VIPs on interfaces configured to. It
// learns nothing: next hops follow the kernel's neighbour table, which
// sees the same frames (resolve.go).
func (w *Worker) arpIn(f *netio.Frame) {
	a := packet.ARP(f.Data[packet.EthLen:])
	if a.Op() != packet.ARPRequest {
		w.count(CntARPOther)
		return
	}
	if w.backup {
		w.count(CntBackup) // a VRRP backup, or a sync backup with backup_only, answers nothing
		return
	}
	if !(w.d.ifARP[f.IfIndex] && w.snap.IsVIP(a.TargetIP())) && !w.d.isLocalAddr(a.TargetIP()) && !w.d.isFloating(a.TargetIP(), f.IfIndex) {
		w.count(CntARPOther)
		return // FULLNAT local addresses are answered on every interface
	}
	mac, ok := w.ifMAC(f.IfIndex)
	if !ok {
		w.count(CntARPOther)
		return
	}
	t := w.txFor(f.IfIndex)
	if t == nil {
		w.count(CntARPOther)
		return
	}
	// The reply is built in the arena and queued with the batch: a storm
	// of requests costs no syscall per answer.
	buf := w.m.alloc(w, netio.VnetHdrLen+60)
	clear(buf)
	packet.BuildARP(buf[netio.VnetHdrLen:], packet.ARPReply, mac, a.SenderMAC(), mac, a.TargetIP(), a.SenderMAC(), a.SenderIP())
	t.Queue(buf)
	w.count(CntARPAnswered)
}
