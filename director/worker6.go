package director

import (
	"net/netip"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// The IPv6 packet path: the IPv4 one (worker.go) with 16-byte addresses,
// conntrack's IPv6 lookups (digest keys, full addresses beside), the hop
// limit for the TTL and ICMPv6 for ICMP; plus Neighbour Discovery
// (nd6.go) and the reassembly of fragments (frag6.go), which the kernel
// does for IPv4 before golvs sees a frame. An IPv4 frame never enters
// this file.

// worker6 is a worker's IPv6 scratch.
type worker6 struct {
	a6  conntrack.Pair6
	emb forward.Embedded6
	// A datagram reassembled from fragments: the largest fragment it came
	// in (0: it came whole), its unfragmentable part's length and the
	// offset of the next-header byte that ends it (frag6.go).
	fragMax, fragHLen, fragPrev int
}

// handle6 processes a decoded IPv6 frame (KindIPv6).
func (w *Worker) handle6(f *netio.Frame) {
	p := &w.p
	if p.Proto == packet.NHICMPv6 && w.nd6(f) { // nd6.go
		return
	}
	if !w.validIPv6(f) { // validate6.go
		return
	}
	if w.backup {
		// A VRRP backup (serving.go), or a sync backup with backup_only
		// (sync.go), forwards nothing.
		w.count(CntBackup)
		return
	}
	if p.Proto == packet.NHICMPv6 {
		// ICMPv6 errors about a conn are relayed; the rest is the kernel's.
		w.icmp6(f)
		return
	}
	if sv := w.snap.lookup6(p.Proto, &p.Dst6, p.DPort); sv != nil {
		w.inbound6(f, sv)
		return
	}
	w.reply6(f)
}

// key6 fills w.x6.a6 with the packet's addresses and returns its key.
func (w *Worker) key6() conntrack.Key {
	p := &w.p
	a := &w.x6.a6
	a.Src, a.Dst = p.Src6, p.Dst6
	return w.d.CT.Key6(a, p.SPort, p.DPort, p.Proto, conntrack.KindConn)
}

// inbound6 handles a client -> VIP IPv6 packet (inbound's twin).
func (w *Worker) inbound6(f *netio.Frame, sv *Service) {
	p := &w.p
	k := w.key6()
	a := &w.x6.a6
	h := &w.hit
	if traceCompiled && w.tr != nil {
		w.traceStart6(f, "request", sv, &p.Src6, &p.Dst6, p.SPort, p.DPort)
	}
	if packet.IPv6(f.Data[p.L3:]).HopLimit() <= 1 && w.hopDrops6(sv, &k) {
		w.count(CntTTL) // before any state is created or moved
		return
	}
	v := w.d.CT.LookupIn6(&k, a, p.Flags, h)
	if v == conntrack.Found && h.ClientIf == 0 && (h.Method == ipvs.MethodMasq || h.Method == ipvs.MethodFullNAT) {
		w.d.clients.learn(p.Src6, f.IfIndex, packet.Eth(f.Data).Src()) // a synced conn's replies go back this way (sync.go)
	}
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
			w.count(CntNoConn)
			return
		}
		if !w.schedule6(f, sv, &k) {
			return
		}
		if traceCompiled && w.ev != nil {
			w.traceLookup(lookupNames[v], h)
		}
	} else if h.Dest != nil && !h.Dest.Available() {
		if !w.d.c.ExpireNodestConn {
			w.count(CntDestUnavail)
			return
		}
		if !w.rescheduleNew6(f, sv, &k, opens) {
			return
		}
	} else if h.Dest != nil && syn && p.Proto == ipvs.ProtoTCP && h.Dest.Weight() == 0 && w.d.c.ExpireNodestConn {
		if !w.rescheduleNew6(f, sv, &k, opens) {
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
		w.inboundMode6(f, dst, nh) // DR, TUN, FULLNAT: modes6.go
		return
	}
	if forward.HopLimitExpired(f.Data, p) {
		w.count(CntTTL)
		return
	}
	mtu, ok := w.egress6(f, nh.IfIndex, 0, &p.Dst6, false) // output6.go
	if !ok {
		return
	}
	n := uint64(p.End - p.L3)
	forward.DNAT6(f.Data, p, h.A6.Out.Src, h.Out.SrcPort, csumMode(f))
	forward.DecHopLimit(f.Data, p)
	forward.MAC(f.Data, nh.SrcMAC, nh.DstMAC)
	if !w.emit6(nh.IfIndex, f, mtu, nil) {
		return
	}
	w.st.in(dst, h.SvcStats, n)
}

func (w *Worker) rescheduleNew6(f *netio.Frame, sv *Service, k *conntrack.Key, opens bool) bool {
	a := w.x6.a6
	w.d.CT.Expire6(k, &a)
	if !opens {
		w.count(CntNoConn)
		return false
	}
	return w.schedule6(f, sv, k)
}

// schedule6 is schedule for an IPv6 packet; k is its in key (w.x6.a6 its
// addresses).
func (w *Worker) schedule6(f *netio.Frame, sv *Service, k *conntrack.Key) bool {
	if w.d.CT.DropPacket(&w.dc) {
		w.count(CntDropPacket)
		return false
	}
	p := &w.p
	sp := &w.sp
	sp.Proto = p.Proto
	sp.Src = netip.AddrFrom16(p.Src6)
	sp.Dst = netip.AddrFrom16(p.Dst6)
	sp.SrcPort, sp.DstPort, sp.Inverse = p.SPort, p.DPort, false
	var dest *ipvs.Dest
	var tpl conntrack.Ref
	var dport uint16
	if sv.Config.Flags&ipvs.SvcPersistent != 0 {
		var ok bool
		if dest, tpl, dport, ok = w.persistPick6(f, sv); !ok {
			return false
		}
	} else {
		if sv.Config.Port == 0 && sv.Config.FWMark == 0 {
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
			w.rejectNoDest6(f)
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
	nc.A6.In = w.x6.a6
	nc.Dest = dest
	nc.Tpl = tpl
	nc.Method = dest.Method()
	nc.ClientIf = int32(f.IfIndex)
	copy(nc.ClientMAC[:], f.Data[6:12])
	nc.NoOutput = nc.Method != ipvs.MethodMasq && nc.Method != ipvs.MethodFullNAT
	if nc.Method == ipvs.MethodMasq {
		nc.A6.Out = conntrack.Pair6{Src: dest.Addr.As16(), Dst: p.Src6}
		nc.Out = w.d.CT.Key6(&nc.A6.Out, dport, p.SPort, p.Proto, conntrack.KindConn)
	}
	if nc.Method == ipvs.MethodFullNAT {
		return w.createFullNAT6(sv, dest, dport) // fullnat6.go
	}
	_, err := w.d.CT.Create(nc, p.Flags, &w.hit)
	if err != nil {
		if err == conntrack.ErrExists {
			return w.d.CT.LookupIn6(k, &nc.A6.In, p.Flags, &w.hit) == conntrack.Found
		}
		w.count(CntTableFull)
		return false
	}
	dest.Stats.Conns.Add(1)
	sv.Stats.Conns.Add(1)
	w.st.conn()
	return true
}

// reply6 handles an IPv6 packet that is not for a VIP: a NAT or FULLNAT
// reply from a real server, or nothing of golvs's.
func (w *Worker) reply6(f *netio.Frame) {
	p := &w.p
	k := w.key6()
	a := &w.x6.a6
	h := &w.hit
	if forward.HopLimitExpired(f.Data, p) {
		if w.d.CT.Peek6(&k, a, true, h) {
			w.count(CntTTL)
		} else {
			w.count(CntNotOurs)
		}
		return
	}
	if !w.d.CT.LookupOut6(&k, a, p.Flags, h) {
		w.count(CntNotOurs)
		return
	}
	if h.ClientIf == 0 && !w.clientHop(h) {
		return // a synced conn whose client is being resolved (sync.go)
	}
	if traceCompiled && w.tr != nil {
		w.traceStart6(f, "reply", nil, &h.A6.In.Src, &h.A6.In.Dst, h.In.SrcPort, h.In.DstPort)
		if w.ev != nil {
			w.traceLookup("hit", h)
		}
	}
	mtu, ok := w.egress6(f, int(h.ClientIf), 0, &h.A6.In.Dst, true)
	if !ok {
		return
	}
	n := uint64(p.End - p.L3)
	if h.Method == ipvs.MethodFullNAT {
		forward.FullNATOut6(f.Data, p, h.A6.In.Dst, h.In.DstPort, h.A6.In.Src, h.In.SrcPort, csumMode(f))
	} else {
		forward.SNAT6(f.Data, p, h.A6.In.Dst, h.In.DstPort, csumMode(f))
	}
	forward.DecHopLimit(f.Data, p)
	forward.MAC(f.Data, w.ownMAC(int(h.ClientIf), f), h.ClientMAC)
	if !w.emit6(int(h.ClientIf), f, mtu, nil) {
		return
	}
	w.st.out(h.Dest, h.SvcStats, n)
}
