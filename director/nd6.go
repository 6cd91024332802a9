package director

import (
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// Neighbour Discovery for the VIPs: golvs answers Neighbor Solicitations
// for its IPv6 VIPs on interfaces configured to answer ARP (and for its
// FULLNAT IPv6 local addresses on every interface), as it answers ARP for
// IPv4 ones, and only while it serves: a VRRP backup, or a sync backup
// with backup_only, answers none (counted as backup), so that clients'
// caches follow the director that forwards; a director parked for a
// graceful restart (standby) still answers, as it answers ARP. It learns
// nothing: next hops follow the kernel's neighbour table (resolve.go),
// which sees the same frames.
//
// The answer is the kernel's ndisc_send_na for an address of its own:
// from the target, hop limit 255, override set, the target link-layer
// option; to the solicitor (solicited set, its link-layer address from
// its option or the frame), or, for duplicate address detection (from
// ::), to all nodes, defending the address.
//
// The director's sockets must receive the solicited-node multicast frames
// of its VIPs: refilter joins their groups on its rings (netio.Ring.
// SetMulticast).

// nd6 handles an ICMPv6 Neighbour Discovery or MLD frame; it reports
// false for other ICMPv6, which goes on to validation.
func (w *Worker) nd6(f *netio.Frame) bool {
	p := &w.p
	typ := f.Data[p.L4]
	if typ < 130 || typ > 143 { // MLD 130-132, ND 133-137, 143 MLDv2 report
		return false
	}
	var ns packet.NS
	if typ != packet.ICMPv6NS || !packet.ParseNS(f.Data, p, &ns) {
		w.count(CntNDOther)
		return true
	}
	if w.backup {
		w.count(CntBackup) // a VRRP backup, or a sync backup with backup_only, answers nothing
		return true
	}
	if !(w.d.ifARP[f.IfIndex] && w.snap.IsVIP6(&ns.Target)) && !w.d.isLocalAddr6(&ns.Target) {
		w.count(CntNDOther) // the kernel's own addresses, or another host's
		return true
	}
	mac, ok := w.ifMAC(f.IfIndex)
	t := w.txFor(f.IfIndex)
	if !ok || t == nil {
		w.count(CntNDOther)
		return true
	}
	dst, dstMAC, solicited := p.Src6, packet.Eth(f.Data).Src(), true
	switch {
	case ns.DAD:
		dst, dstMAC, solicited = packet.AllNodes, packet.MulticastMAC(packet.AllNodes), false
	case ns.HasLL:
		dstMAC = ns.SrcLL
	}
	buf := w.m.alloc(w, netio.VnetHdrLen+packet.NALen)
	clear(buf[:netio.VnetHdrLen])
	packet.BuildNA(buf[netio.VnetHdrLen:], mac, dstMAC, dst, ns.Target, solicited)
	t.Queue(buf)
	w.count(CntNDAnswered)
	return true
}
