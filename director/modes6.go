package director

import (
	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// DR, TUN and FULLNAT for IPv6 packets (modes.go's twins). A tunnel's
// outer header takes its real server's family, whatever the service's:
// IPVS lets a tunnel dest be of the other family (spec §5.3), so an IPv4
// service may tunnel to IPv6 real servers (IPv4 in IPv6) and an IPv6
// service to IPv4 ones (IPv6 in IPv4, protocol 41); every other method
// stays in its service's family (config.go refuses the rest).

// setTunnel fills the worker's tunnel for a packet to dst through nh.
func (w *Worker) setTunnel(dst *ipvs.Dest, nh *ipvs.NextHop) *forward.Tunnel {
	t := &w.m.tun
	cfg := dst.Config()
	*t = forward.Tunnel{SrcMAC: nh.SrcMAC, DstMAC: nh.DstMAC}
	if dst.Addr.Is6() {
		t.Outer6, t.Src6, t.Dst6 = true, nh.SrcIP.As16(), dst.Addr.As16()
	} else {
		t.Src, t.Dst = nh.SrcIP.As4(), dst.Addr.As4()
	}
	if cfg.TunType == ipvs.TunGUE {
		t.GUE, t.DPort, t.SPort = true, cfg.TunPort, forward.GUESourcePort(&w.p)
	}
	return t
}

// inboundMode6 forwards a client IPv6 packet of a DR, TUN or FULLNAT conn.
func (w *Worker) inboundMode6(f *netio.Frame, dst *ipvs.Dest, nh *ipvs.NextHop) {
	p := &w.p
	h := &w.hit
	n := uint64(p.End - p.L3)
	var ok bool
	switch h.Method {
	case ipvs.MethodRoute:
		mtu, fits := w.egress6(f, nh.IfIndex, 0, &p.Dst6, false)
		if !fits {
			return
		}
		forward.DR(f.Data, nh.SrcMAC, nh.DstMAC)
		ok = w.emit6(nh.IfIndex, f, mtu, nil)
	case ipvs.MethodTunnel:
		ok = w.tunnel6(f, dst, nh)
	case ipvs.MethodFullNAT:
		ok = w.fullnatIn6(f, nh)
	default:
		w.count(CntDestUnavail)
	}
	if !ok {
		return
	}
	w.st.in(dst, h.SvcStats, n)
}

// tunnel6 encapsulates a client IPv6 packet toward its real server (in
// IPv6 or IPv4, IPIP or GUE), with IPVS's IPv6 MTU rule: a packet that
// does not fit the path less the tunnel is answered with Packet Too Big
// carrying that (never below 1280); a datagram golvs reassembled goes in
// inner fragments, each in a tunnel packet of its own (the kernel would
// fragment the outer packet; golvs's rs-tun, like a plain ip6ip6 device,
// then gets whole tunnel packets and the real server's stack the inner
// fragments to reassemble).
func (w *Worker) tunnel6(f *netio.Frame, dst *ipvs.Dest, nh *ipvs.NextHop) bool {
	p := &w.p
	t := w.setTunnel(dst, nh)
	oh := t.Overhead()
	mtu := w.d.linkMTU(nh.IfIndex)
	if gt, gs := vnetGSO(f); gt != netio.GSONone {
		if gt != netio.GSOTCPv6 || p.Proto != packet.NHTCP {
			w.count(CntTooBig) // a GSO kind a tunnel cannot carry
			return false
		}
		hl := p.L4 - p.L3 + int(f.Data[p.L4+12]>>4)*4
		if hl+gs+oh > mtu {
			w.count(CntTooBig)
			if mtu-oh >= forward.MinMTU6 && !w.d.c.NoPMTU {
				w.packetTooBig(f, &p.Dst6, mtu-oh)
			}
			return false
		}
		return w.tunnelSegments6(f, nh.IfIndex, gs, oh)
	}
	imtu, ok := w.egress6(f, nh.IfIndex, oh, &p.Dst6, false)
	if !ok {
		return false
	}
	if w.x6.fragMax > 0 && p.End-p.L3 > w.x6.fragMax {
		return w.fragment6(nh.IfIndex, f, imtu, t)
	}
	return w.encapWhole(f, nh.IfIndex, t)
}

// tunnelSegments6 cuts a GSO TCP/IPv6 frame into segments and
// encapsulates each (tunnelSegments' twin).
func (w *Worker) tunnelSegments6(f *netio.Frame, ifindex, mss, oh int) bool {
	p := &w.p
	m := &w.m
	t := &m.tun
	ip := f.Data[p.L3:p.End]
	l4 := p.L4 - p.L3
	nseg := forward.TCPSegments6(ip, l4, mss)
	hl := l4 + int(f.Data[p.L4+12]>>4)*4
	for i := 0; i < nseg; i++ {
		b := m.alloc(w, netio.VnetHdrLen+packet.EthLen+oh+hl+mss)
		if b == nil {
			w.count(CntTooBig)
			return false
		}
		clear(b[:netio.VnetHdrLen])
		n := forward.TCPSegment6(b[netio.VnetHdrLen+packet.EthLen+oh:], ip, l4, mss, i)
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
