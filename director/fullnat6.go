package director

import (
	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// FULLNAT for IPv6 (fullnat.go's twin): an IPv6 conn takes an IPv6 local
// address (and port) from the IPv6 pool, and its SYN carries TOA's IPv6
// form (kind 253, length 20: the client's port and IPv6 address, spec
// §5.5) when it fits.

// createFullNAT6 gives a new IPv6 FULLNAT conn (w.nc, filled by
// schedule6) its local address and port and creates it.
func (w *Worker) createFullNAT6(sv *Service, dest *ipvs.Dest, dport uint16) bool {
	p := &w.p
	nc := &w.nc
	pl := w.d.modes.pool6.Load()
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
	nc.A6.Out = conntrack.Pair6{Src: dest.Addr.As16(), Dst: l.a16}
	nc.Out = w.d.CT.Key6(&nc.A6.Out, dport, lport, p.Proto, conntrack.KindConn)
	_, err := w.d.CT.Create(nc, p.Flags, &w.hit)
	if err != nil {
		pl.release(l.addr, p.Proto, lport)
		if err == conntrack.ErrExists {
			return w.d.CT.LookupIn6(&nc.In, &nc.A6.In, p.Flags, &w.hit) == conntrack.Found
		}
		w.count(CntTableFull)
		return false
	}
	dest.Stats.Conns.Add(1)
	sv.Stats.Conns.Add(1)
	w.st.conn()
	return true
}

// fullnatIn6 rewrites a client IPv6 packet of a FULLNAT conn and sends
// it; a SYN gets the IPv6 TOA option when it fits.
func (w *Worker) fullnatIn6(f *netio.Frame, nh *ipvs.NextHop) bool {
	p := &w.p
	h := &w.hit
	if forward.HopLimitExpired(f.Data, p) {
		w.count(CntTTL)
		return false
	}
	mtu, ok := w.egress6(f, nh.IfIndex, 0, &p.Dst6, false)
	if !ok {
		return false
	}
	cs := csumMode(f)
	syn := p.Proto == ipvs.ProtoTCP && p.Flags&(packet.TCPSyn|packet.TCPAck) == packet.TCPSyn
	forward.FullNATIn6(f.Data, p, h.A6.Out.Dst, h.Out.DstPort, h.A6.Out.Src, h.Out.SrcPort, cs)
	forward.DecHopLimit(f.Data, p)
	if syn && !w.d.modes.noTOA.Load() {
		if !forward.TOA6Fits(f.Data, p, mtu) {
			w.mcount(MCntTOASkipped)
		} else {
			w.mcount(MCntTOA)
			f.Data = f.Data[:p.End]
			if !f.Grow(forward.TOA6Len) {
				b := w.m.alloc(w, netio.VnetHdrLen+forward.TOA6Len+p.End)
				copy(b, f.Vnet[:netio.VnetHdrLen])
				copy(b[netio.VnetHdrLen+forward.TOA6Len:], f.Data)
				forward.InsertTOA6(b[netio.VnetHdrLen:], p, h.A6.In.Src, h.In.SrcPort, cs)
				forward.MAC(b[netio.VnetHdrLen:], nh.SrcMAC, nh.DstMAC)
				return w.send(nh.IfIndex, b[:netio.VnetHdrLen+p.End], false)
			}
			forward.InsertTOA6(f.Data, p, h.A6.In.Src, h.In.SrcPort, cs)
			f.Data = f.Data[:p.End]
		}
	}
	forward.MAC(f.Data, nh.SrcMAC, nh.DstMAC)
	return w.emit6(nh.IfIndex, f, mtu, nil)
}
