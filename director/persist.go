package director

import (
	"net/netip"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// templateKey builds the persistence template key of a packet for a
// service (spec §4.2): the client network after the service's netmask,
// client port 0, and the VIP and port, or the mark for fwmark services,
// or port 0 for port-zero services; FTP (port 21) templates use port 0.
func templateKey(sv *Service, p *packet.Parsed) conntrack.Key {
	c := &sv.Config
	m := c.Netmask
	if m == 0 {
		m = 0xffffffff
	}
	src := be32(p.Src) & m
	k := conntrack.Key{SrcIP: put32(src), Proto: p.Proto, Kind: conntrack.KindTemplate}
	switch {
	case c.FWMark != 0:
		k.Proto = ipvs.ProtoIP
		k.DstIP = put32(c.FWMark)
	case p.DPort == c.Port:
		k.DstIP = p.Dst
		if c.Port != 21 {
			k.DstPort = p.DPort
		}
	default: // a port-zero service
		k.DstIP = p.Dst
	}
	return k
}

func be32(a [4]byte) uint32 {
	return uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
}
func put32(v uint32) [4]byte { return [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

// persistPick is ip_vs_sched_persist: reuse the client's template if it
// is still valid, else schedule and create one. It returns the dest, the
// template the new conn hangs from (conntrack.Create takes its control
// reference and restarts its timer, spec §4.4), and the conn's
// destination port.
func (w *Worker) persistPick(f *netio.Frame, sv *Service) (*ipvs.Dest, conntrack.Ref, uint16, bool) {
	p := &w.p
	ct := w.d.CT
	k := templateKey(sv, p)
	tpl, dest := ct.LookupTemplate(&k)
	if !tpl.IsZero() && !w.templateValid(dest) {
		ct.Invalidate(tpl)
		tpl = conntrack.Ref{}
	}
	if !tpl.IsZero() {
		if traceCompiled && w.ev != nil {
			w.ev.Template = "found: client network " + "sticks to its real server"
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
			w.rejectNoDest(f)
			return nil, conntrack.Ref{}, 0, false
		}
		nc := &w.nc
		*nc = conntrack.NewConn{In: k, Dest: dest, Method: dest.Method(), Template: true, Timeout: sv.Config.Timeout}
		if nc.Timeout == 0 {
			nc.Timeout = ipvs.DefaultPersist
		}
		var err error
		tpl, err = ct.Create(nc, 0, nil)
		if err == conntrack.ErrExists {
			tpl, dest = ct.LookupTemplate(&k)
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

// templateValid is ip_vs_check_template on a template's dest: it must
// still be there and, with expire_quiescent_template, not quiesced.
func (w *Worker) templateValid(d *ipvs.Dest) bool {
	if d == nil || !d.Available() {
		return false
	}
	if w.d.c.ExpireQuiescentTemplate && d.Weight() == 0 {
		return false
	}
	return true
}
