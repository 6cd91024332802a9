package director

import (
	"encoding/binary"
	"net/netip"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// Persistence for IPv6 services (persist.go's twin). The template key is
// spec §4.2's with the IPv6 prefix of the client of the service's length
// (-M as a prefix length, 1..128, default 128), and for fwmark services
// the mark where the VIP goes, as the kernel stores it (htonl(mark) in the
// address's first word, the rest zero).

// templateKey6 builds the template key of an IPv6 packet and fills a with
// the masked client network and the VIP (or mark).
func (w *Worker) templateKey6(sv *Service, p *packet.Parsed, a *conntrack.Pair6) conntrack.Key {
	c := &sv.Config
	bits := int(c.Netmask)
	if bits <= 0 || bits > 128 {
		bits = 128
	}
	a.Src = maskPrefix6(p.Src6, bits)
	a.Dst = p.Dst6
	proto, dport := p.Proto, uint16(0)
	switch {
	case c.FWMark != 0:
		proto = ipvs.ProtoIP
		a.Dst = [16]byte{}
		binary.BigEndian.PutUint32(a.Dst[:], c.FWMark)
	case p.DPort == c.Port:
		if c.Port != 21 {
			dport = p.DPort
		}
	}
	return w.d.CT.Key6(a, 0, dport, proto, conntrack.KindTemplate)
}

// maskPrefix6 keeps the first bits of a.
func maskPrefix6(a [16]byte, bits int) [16]byte {
	for i := range a {
		keep := min(max(bits-8*i, 0), 8)
		a[i] &= byte(uint16(0xff00) >> keep)
	}
	return a
}

// persistPick6 is persistPick for an IPv6 packet.
func (w *Worker) persistPick6(f *netio.Frame, sv *Service) (*ipvs.Dest, conntrack.Ref, uint16, bool) {
	p := &w.p
	ct := w.d.CT
	var a conntrack.Pair6
	k := w.templateKey6(sv, p, &a)
	tpl, dest := ct.LookupTemplate6(&k, &a)
	if !tpl.IsZero() && !w.templateValid(dest) {
		ct.Invalidate(tpl)
		tpl = conntrack.Ref{}
	}
	if !tpl.IsZero() {
		if traceCompiled && w.ev != nil {
			w.ev.Template = "found: client network sticks to its real server"
		}
	} else {
		if traceCompiled && w.ev != nil {
			w.ev.Template = "created: no valid template for the client network, scheduled"
			w.traceSched(sv)
		}
		dest = sv.Sched.Schedule(sv.View, &w.sp)
		if traceCompiled && w.ev != nil && dest != nil {
			w.ev.Sched.Chosen = netip.AddrPortFrom(dest.Addr, dest.Port)
		}
		if dest == nil {
			w.count(CntNoDest)
			w.rejectNoDest6(f)
			return nil, conntrack.Ref{}, 0, false
		}
		nc := &w.nc
		*nc = conntrack.NewConn{In: k, Dest: dest, Method: dest.Method(), Template: true, Timeout: sv.Config.Timeout}
		nc.A6.In = a
		if nc.Timeout == 0 {
			nc.Timeout = ipvs.DefaultPersist
		}
		var err error
		tpl, err = ct.Create(nc, 0, nil)
		if err == conntrack.ErrExists {
			tpl, dest = ct.LookupTemplate6(&k, &a)
		} else if err != nil {
			w.count(CntTableFull)
			return nil, conntrack.Ref{}, 0, false
		}
		if tpl.IsZero() {
			w.count(CntTableFull)
			return nil, conntrack.Ref{}, 0, false
		}
	}
	dport := p.DPort
	if p.DPort == sv.Config.Port && dest.Port != 0 {
		dport = dest.Port
	}
	return dest, tpl, dport, true
}
