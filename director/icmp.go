package director

import (
	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// Related ICMP (IPVS's ip_vs_in_icmp / ip_vs_out_icmp): an ICMP error
// quoting a packet of a conn golvs forwards is matched to the conn with
// the quoted addresses and forwarded with the conn's own rewrite, the
// quoted header included:
//
//   - from the client side, about a reply the client got from the VIP
//     (port unreachable, fragmentation needed): to the real server;
//   - from the real-server side, about a packet golvs sent it (NAT:
//     CIP -> RIP, FULLNAT: LIP -> RIP): back to the client, from the VIP.
//
// Anything else (echo, errors about other traffic) is left to the kernel.
// The match is a Peek: an error neither moves the conn's state nor
// refreshes its timer.
func (w *Worker) icmp(f *netio.Frame) {
	p := &w.p
	e := &w.m.emb
	h := &w.hit
	if !forward.ParseICMPError(f.Data, p, e) {
		w.count(CntICMP)
		return
	}
	// The conn key is the quoted packet reversed: a reply VIP -> CIP gives
	// the in key CIP -> VIP; a forwarded CIP/LIP -> RIP the out key.
	k := conntrack.Key{SrcIP: e.Dst, DstIP: e.Src, SrcPort: e.DPort, DstPort: e.SPort, Proto: e.Proto}
	if w.snap.IsVIP(e.Src) && w.d.CT.Peek(&k, false, h) {
		w.icmpToServer(f)
		return
	}
	if w.d.CT.Peek(&k, true, h) {
		w.icmpToClient(f)
		return
	}
	w.count(CntICMP)
}

func (w *Worker) icmpToServer(f *netio.Frame) {
	p := &w.p
	e := &w.m.emb
	h := &w.hit
	dst := h.Dest
	if dst == nil || !dst.Available() {
		w.count(CntDestUnavail)
		return
	}
	nh := dst.Next.Load()
	if nh == nil {
		w.count(CntNoNextHop)
		return
	}
	mtu, ok := w.egress(f, nh.IfIndex, 0, p.Dst, false)
	if !ok {
		return
	}
	switch h.Method {
	case ipvs.MethodMasq:
		forward.SetOuter(f.Data, p, p.Src, h.Out.SrcIP)
		forward.RewriteEmbedded(f.Data, p, e, h.Out.SrcIP, h.Out.SrcPort, e.Dst, e.DPort)
	case ipvs.MethodFullNAT:
		forward.SetOuter(f.Data, p, h.Out.DstIP, h.Out.SrcIP)
		forward.RewriteEmbedded(f.Data, p, e, h.Out.SrcIP, h.Out.SrcPort, h.Out.DstIP, h.Out.DstPort)
	case ipvs.MethodRoute, ipvs.MethodTunnel:
		// The real server holds the VIP: the error goes as it is (DR) or
		// in the tunnel (TUN).
		w.mcount(MCntICMPRelayed)
		w.inboundMode(f, dst, nh)
		return
	default:
		w.count(CntICMP)
		return
	}
	if forward.TTLExpired(f.Data, p) {
		w.count(CntTTL)
		return
	}
	forward.DecTTL(f.Data, p)
	forward.MAC(f.Data, nh.SrcMAC, nh.DstMAC)
	if w.emit(nh.IfIndex, f, mtu) {
		w.mcount(MCntICMPRelayed)
	}
}

func (w *Worker) icmpToClient(f *netio.Frame) {
	p := &w.p
	e := &w.m.emb
	h := &w.hit
	mtu, ok := w.egress(f, int(h.ClientIf), 0, p.Dst, false)
	if !ok {
		return
	}
	switch h.Method {
	case ipvs.MethodMasq:
		forward.SetOuter(f.Data, p, h.In.DstIP, p.Dst)
		forward.RewriteEmbedded(f.Data, p, e, e.Src, e.SPort, h.In.DstIP, h.In.DstPort)
	case ipvs.MethodFullNAT:
		forward.SetOuter(f.Data, p, h.In.DstIP, h.In.SrcIP)
		forward.RewriteEmbedded(f.Data, p, e, h.In.SrcIP, h.In.SrcPort, h.In.DstIP, h.In.DstPort)
	default:
		w.count(CntICMP)
		return
	}
	if forward.TTLExpired(f.Data, p) {
		w.count(CntTTL)
		return
	}
	forward.DecTTL(f.Data, p)
	if h.ClientIf == 0 && !w.clientHop(h) {
		return // a synced conn whose client is being resolved (sync.go)
	}
	forward.MAC(f.Data, w.ownMAC(int(h.ClientIf), f), h.ClientMAC)
	if w.emit(int(h.ClientIf), f, mtu) {
		w.mcount(MCntICMPRelayed)
	}
}

// rejectNoDest answers a packet for which no real server is available the
// way IPVS's ip_vs_leave does (spec §1.6): ICMP port unreachable from the
// VIP back to the client, and the packet dropped. (cache_bypass and the
// FTP special case do not apply to golvs.) The answer is rate-limited and
// queued with the batch.
func (w *Worker) rejectNoDest(f *netio.Frame) {
	if !w.d.icmpLimit.allow() {
		w.mcount(MCntICMPLimited)
		return
	}
	p := &w.p
	mac := w.ownMAC(f.IfIndex, f)
	b := w.m.alloc(w, netio.VnetHdrLen+packet.EthLen+packet.IP4MinLen+8+576)
	clear(b[:netio.VnetHdrLen])
	n := forward.BuildUnreach(b[netio.VnetHdrLen:], f.Data[p.L3:p.End], p.Dst, forward.ICMPPortUnreach, 0, mac, packet.Eth(f.Data).Src())
	if w.send(f.IfIndex, b[:netio.VnetHdrLen+n], false) {
		w.mcount(MCntUnreachSent)
	}
	if traceCompiled && w.ev != nil {
		w.ev.Verdict = dropVerdicts[CntNoDest] + " (ICMP port unreachable sent)"
	}
}
