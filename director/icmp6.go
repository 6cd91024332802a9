package director

import (
	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
)

// Related ICMPv6 (IPVS's ip_vs_in_icmp_v6 / ip_vs_out_icmp_v6), icmp.go's
// twin: an ICMPv6 error quoting a packet of a conn golvs forwards is
// matched to the conn with the quoted addresses (Peek6: no state moves,
// no timer refreshed) and forwarded with the conn's rewrite, the quoted
// header included:
//
//   - from the client side, about a reply the client got from the VIP
//     (port unreachable, packet too big): to the real server (NAT,
//     FULLNAT rewritten; DR as it is; TUN in the tunnel);
//   - from the real-server side, about a packet golvs sent it: back to
//     the client, from the VIP.
//
// As current kernels do (spec 2026 D11), an error about a NAT or FULLNAT
// conn whose ICMPv6 checksum is wrong is dropped (icmp-ignored); one
// quoting a later fragment is not related to any conn (D12).
func (w *Worker) icmp6(f *netio.Frame) {
	p := &w.p
	e := &w.x6.emb
	h := &w.hit
	if !forward.ParseICMPv6Error(f.Data, p, e) {
		w.count(CntICMP)
		return
	}
	// The conn key is the quoted packet reversed.
	a := &w.x6.a6
	a.Src, a.Dst = e.Dst, e.Src
	k := w.d.CT.Key6(a, e.DPort, e.SPort, e.Proto, 0)
	if w.snap.IsVIP6(&e.Src) && w.d.CT.Peek6(&k, a, false, h) {
		w.icmp6ToServer(f)
		return
	}
	if w.d.CT.Peek6(&k, a, true, h) {
		w.icmp6ToClient(f)
		return
	}
	w.count(CntICMP)
}

func (w *Worker) icmp6ToServer(f *netio.Frame) {
	p := &w.p
	e := &w.x6.emb
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
	switch h.Method {
	case ipvs.MethodMasq, ipvs.MethodFullNAT:
		if !forward.ICMPv6ChecksumOK(f.Data, p) {
			w.count(CntICMP)
			return
		}
	case ipvs.MethodRoute, ipvs.MethodTunnel:
		// The real server holds the VIP: the error goes as it is (DR) or
		// in the tunnel (TUN).
		w.mcount(MCntICMPRelayed)
		w.inboundMode6(f, dst, nh)
		return
	default:
		w.count(CntICMP)
		return
	}
	mtu, ok := w.egress6(f, nh.IfIndex, 0, &p.Dst6, false)
	if !ok {
		return
	}
	if h.Method == ipvs.MethodMasq {
		forward.SetOuter6(f.Data, p, p.Src6, h.A6.Out.Src)
		forward.RewriteEmbedded6(f.Data, p, e, h.A6.Out.Src, h.Out.SrcPort, e.Dst, e.DPort)
	} else {
		forward.SetOuter6(f.Data, p, h.A6.Out.Dst, h.A6.Out.Src)
		forward.RewriteEmbedded6(f.Data, p, e, h.A6.Out.Src, h.Out.SrcPort, h.A6.Out.Dst, h.Out.DstPort)
	}
	if forward.HopLimitExpired(f.Data, p) {
		w.count(CntTTL)
		return
	}
	forward.DecHopLimit(f.Data, p)
	forward.MAC(f.Data, nh.SrcMAC, nh.DstMAC)
	if w.emit6(nh.IfIndex, f, mtu, nil) {
		w.mcount(MCntICMPRelayed)
	}
}

func (w *Worker) icmp6ToClient(f *netio.Frame) {
	p := &w.p
	e := &w.x6.emb
	h := &w.hit
	switch h.Method {
	case ipvs.MethodMasq, ipvs.MethodFullNAT:
		if !forward.ICMPv6ChecksumOK(f.Data, p) {
			w.count(CntICMP)
			return
		}
	default:
		w.count(CntICMP)
		return
	}
	if h.ClientIf == 0 && !w.clientHop(h) {
		return // a synced conn whose client is being resolved (sync.go)
	}
	mtu, ok := w.egress6(f, int(h.ClientIf), 0, &p.Dst6, false)
	if !ok {
		return
	}
	if h.Method == ipvs.MethodMasq {
		forward.SetOuter6(f.Data, p, h.A6.In.Dst, p.Dst6)
		forward.RewriteEmbedded6(f.Data, p, e, e.Src, e.SPort, h.A6.In.Dst, h.In.DstPort)
	} else {
		forward.SetOuter6(f.Data, p, h.A6.In.Dst, h.A6.In.Src)
		forward.RewriteEmbedded6(f.Data, p, e, h.A6.In.Src, h.In.SrcPort, h.A6.In.Dst, h.In.DstPort)
	}
	if forward.HopLimitExpired(f.Data, p) {
		w.count(CntTTL)
		return
	}
	forward.DecHopLimit(f.Data, p)
	forward.MAC(f.Data, w.ownMAC(int(h.ClientIf), f), h.ClientMAC)
	if w.emit6(int(h.ClientIf), f, mtu, nil) {
		w.mcount(MCntICMPRelayed)
	}
}
