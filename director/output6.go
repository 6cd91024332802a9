package director

import (
	"encoding/binary"

	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// The IPv6 egress MTU, as IPVS applies it (__mtu_check_toobig_v6, then
// the kernel's ip6_fragment). Routers never fragment IPv6:
//
//   - the packet fits the egress MTU (less a tunnel's overhead), or it is
//     a GSO frame (the device segments it): sent as is;
//   - it is a datagram golvs reassembled (frag6.go) whose largest
//     fragment fits: sent again in fragments no larger than that one
//     (and never smaller than IPv6's 1280), with a new identification,
//     as the kernel's output path refragments what nf_defrag_ipv6
//     reassembled;
//   - otherwise: dropped (too-big) and answered with ICMPv6 Packet Too
//     Big carrying the MTU (from the VIP for a client's packet, from the
//     director's address for a real server's reply), within the ICMP
//     rate limit; never about an ICMPv6 message, and never announcing
//     less than 1280: a path whose MTU, less the tunnel, is below it
//     drops the packet unanswered (IPVS's __ip_vs_get_out_rt_v6 refuses
//     such a route the same way).

// egress6 checks the IPv6 frame p describes against the egress MTU of
// ifindex less oh bytes of encapsulation, and returns the MTU to send it
// at. ok is false when the frame was dropped (and answered).
func (w *Worker) egress6(f *netio.Frame, ifindex, oh int, vip *[16]byte, reply bool) (mtu int, ok bool) {
	p := &w.p
	mtu = w.d.linkMTU(ifindex) - oh
	if p.End-p.L3 <= mtu {
		return mtu, true
	}
	if gt, _ := vnetGSO(f); gt != netio.GSONone {
		return mtu, true
	}
	if w.x6.fragMax > 0 && w.x6.fragMax <= mtu {
		return mtu, true // emit6 fragments it again
	}
	w.count(CntTooBig)
	if p.Proto == packet.NHICMPv6 || mtu < forward.MinMTU6 || oh > 0 && w.d.c.NoPMTU {
		return mtu, false
	}
	src := *vip
	if reply {
		src = w.replyICMPSource6(f, vip)
	}
	w.packetTooBig(f, &src, mtu)
	return mtu, false
}

// replyICMPSource6 is the director's IPv6 address on the link the frame
// came in on (the VIP when it has none).
func (w *Worker) replyICMPSource6(f *netio.Frame, vip *[16]byte) [16]byte {
	if w.d.neigh != nil {
		if l := w.d.neigh.Link(f.IfIndex); l != nil && len(l.Addrs6) > 0 {
			return l.Addrs6[0].Addr().As16()
		}
	}
	return *vip
}

// emit6 sends a rewritten IPv6 frame; a reassembled datagram goes in
// fragments again, as the kernel's ip6_finish_output sends one longer than
// its largest fragment (egress6 checked that they fit). The frame is
// already in tunnel t when t is not nil and it is whole.
func (w *Worker) emit6(ifindex int, f *netio.Frame, mtu int, t *forward.Tunnel) bool {
	p := &w.p
	if w.x6.fragMax == 0 || p.End-p.L3 <= w.x6.fragMax {
		return w.send(ifindex, f.Buf(), false)
	}
	return w.fragment6(ifindex, f, mtu, t)
}

// fragment6 cuts a reassembled IPv6 datagram into fragments of at most
// min(its largest fragment, mtu) bytes, each in the worker's arena with an
// all-zero virtio header (the datagram's checksum was computed whole), and
// the frame's Ethernet header or the tunnel t around it.
func (w *Worker) fragment6(ifindex int, f *netio.Frame, mtu int, t *forward.Tunnel) bool {
	p := &w.p
	m := &w.m
	if len(f.Vnet) >= netio.VnetHdrLen && f.Vnet[0]&netio.VnetNeedsCsum != 0 {
		start := int(binary.LittleEndian.Uint16(f.Vnet[6:]))
		off := int(binary.LittleEndian.Uint16(f.Vnet[8:]))
		if !forward.CompleteChecksum(f.Data, start, off, p.End, p.Proto == packet.NHUDP) {
			w.count(CntTooBig)
			return false
		}
	}
	size := min(max(w.x6.fragMax, forward.MinMTU6), mtu)
	oh := 0
	if t != nil {
		oh = t.Overhead()
	}
	ip := f.Data[p.L3:p.End]
	id := w.d.fragID6.Add(1)
	nf := forward.Fragments6(ip, w.x6.fragHLen, size)
	for i := 0; i < nf; i++ {
		b := m.alloc(w, netio.VnetHdrLen+packet.EthLen+oh+size)
		if b == nil {
			w.count(CntTooBig)
			return false
		}
		clear(b[:netio.VnetHdrLen])
		n := forward.Fragment6(b[netio.VnetHdrLen+packet.EthLen+oh:], ip, w.x6.fragHLen, w.x6.fragPrev, size, i, id)
		if t != nil {
			t.ID = m.id
			m.id++
			forward.Encap(b[netio.VnetHdrLen:], n, t)
		} else {
			copy(b[netio.VnetHdrLen:], f.Data[:packet.EthLen])
		}
		if !w.send(ifindex, b[:netio.VnetHdrLen+packet.EthLen+oh+n], false) {
			return false
		}
	}
	w.mcount(MCntFragmented)
	w.cnt.m[MCntFragsSent].Add(uint64(nf))
	return true
}

// packetTooBig queues ICMPv6 Packet Too Big (announcing mtu) from src to
// the sender of the frame p describes, within the rate limit.
func (w *Worker) packetTooBig(f *netio.Frame, src *[16]byte, mtu int) {
	if w.icmp6Error(f, src, packet.ICMPv6PacketTooBig, 0, uint32(mtu)) {
		w.mcount(MCntPacketTooBig)
	}
	if traceCompiled && w.ev != nil {
		w.ev.Verdict = dropVerdicts[CntTooBig] + " (ICMPv6 packet too big sent)"
	}
}

// icmp6Error queues an ICMPv6 error about the frame p describes, from src
// back to its sender, within the ICMP rate limit.
func (w *Worker) icmp6Error(f *netio.Frame, src *[16]byte, typ, code uint8, param uint32) bool {
	if !w.d.icmpLimit.allow() {
		w.mcount(MCntICMPLimited)
		return false
	}
	p := &w.p
	mac := w.ownMAC(f.IfIndex, f)
	b := w.m.alloc(w, netio.VnetHdrLen+forward.ICMPv6ErrorMax)
	clear(b[:netio.VnetHdrLen])
	n := forward.BuildICMPv6Error(b[netio.VnetHdrLen:], f.Data[p.L3:p.End], *src, typ, code, param, mac, packet.Eth(f.Data).Src())
	return w.send(f.IfIndex, b[:netio.VnetHdrLen+n], false)
}

// rejectNoDest6 answers an IPv6 packet for which no real server is
// available as IPVS's ip_vs_leave does: ICMPv6 port unreachable from the
// VIP, rate-limited, and the packet dropped.
func (w *Worker) rejectNoDest6(f *netio.Frame) {
	p := &w.p
	vip := p.Dst6
	if w.icmp6Error(f, &vip, packet.ICMPv6DestUnreach, forward.ICMPv6PortUnreach, 0) {
		w.mcount(MCntUnreachSent)
	}
	if traceCompiled && w.ev != nil {
		w.ev.Verdict = dropVerdicts[CntNoDest] + " (ICMPv6 port unreachable sent)"
	}
}
