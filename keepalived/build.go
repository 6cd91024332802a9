package keepalived

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/golvs/golvs/health"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
)

// keepalived's defaults.
const (
	defaultDelayLoop      = 60 * time.Second
	defaultConnectTimeout = 5 * time.Second
	defaultScheduler      = "wlc" // IPVS_DEF_SCHED
)

func or[T any](p *T, def T) T {
	if p != nil {
		return *p
	}
	return def
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// buildService turns a read virtual_server into a health service: its
// IPVS services (one per address and port of a group), real servers with
// their settings resolved virtual server -> real server -> checker, the
// sorry server and quorum, then checks the commands it makes against
// ipvsadm's model so a mistake is refused with its line.
func (t *translator) buildService(n *node, v *vsDef) (health.Service, error) {
	svc := health.Service{Pos: v.pos.String(), Omega: v.omega, Hysteresis: v.hyst, QuorumUp: v.quorumUp, QuorumDown: v.quorumDown}
	if v.sched == "" {
		v.sched = defaultScheduler
	}
	var proto uint8
	if v.proto != nil {
		switch strings.ToUpper(v.proto.s) {
		case "TCP":
			proto = ipvs.ProtoTCP
		case "UDP":
			proto = ipvs.ProtoUDP
		case "SCTP":
			return svc, errorf(v.proto.pos, "protocol SCTP: golvs does not balance SCTP")
		default:
			return svc, errorf(v.proto.pos, "protocol %q: TCP or UDP", v.proto.s)
		}
	}
	if v.gran != nil && v.ptimeout == nil {
		to := uint32(ipvs.DefaultPersist)
		v.ptimeout = &to
	}
	// The family of a fwmark service: ip_family, else that of its
	// non-tunnelled real and sorry servers, else IPv4.
	inferred := v.family
	for _, r := range append(append([]*rsDef(nil), v.reals...), v.sorry) {
		if r == nil || inferred != 0 {
			continue
		}
		m := or(r.meth, or(v.meth, method{m: ipvs.MethodMasq}))
		if m.m != ipvs.MethodTunnel {
			inferred = family(r.addr)
		}
	}
	if inferred == 0 {
		inferred = 4
	}
	base := ipvs.ServiceConfig{Sched: v.sched, Flags: v.flags}
	if v.ptimeout != nil {
		base.Flags |= ipvs.SvcPersistent
		base.Timeout = *v.ptimeout
	}
	base.PE = v.pe
	mk := func(k ipvs.ServiceKey, p Pos) (ipvs.ServiceConfig, error) {
		c := base
		c.ServiceKey = k
		c.Netmask = 0xffffffff
		if k.IsV6() {
			c.Netmask = 128
		}
		if v.gran != nil {
			if k.IsV6() {
				x, err := parseUint(*v.gran, 1, 128, "persistence_granularity (IPv6 prefix length)")
				if err != nil {
					return c, err
				}
				c.Netmask = uint32(x)
			} else {
				m, err := netip.ParseAddr(v.gran.s)
				if err != nil || !m.Is4() {
					return c, errorf(v.gran.pos, "persistence_granularity %q: want an IPv4 netmask such as 255.255.255.0", v.gran.s)
				}
				b := m.As4()
				c.Netmask = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
			}
		}
		if k.FWMark == 0 {
			if proto == 0 {
				return c, errorf(p, "virtual_server %s: no protocol (keepalived would default to UDP with a warning): say protocol TCP or UDP", k.Addr)
			}
			if k.Port == 0 && !c.Persistent() {
				return c, errorf(p, "virtual_server %s: the port may be omitted only for persistent services (persistence_timeout)", k.Addr)
			}
		}
		return c, nil
	}
	decl := n.args[0].s
	switch decl {
	case "fwmark":
		m, err := parseUint(n.args[1], 1, 1<<32-1, "fwmark")
		if err != nil {
			return svc, err
		}
		if v.proto != nil {
			t.warn(v.proto.pos, "protocol is ignored for a fwmark virtual_server")
		}
		c, err := mk(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, FWMark: uint32(m), V6: inferred == 6}, v.pos)
		if err != nil {
			return svc, err
		}
		svc.Configs = append(svc.Configs, c)
		svc.Name = c.ServiceKey.String()
	case "group":
		g, ok := t.groups[n.args[1].s]
		if !ok {
			return svc, errorf(n.pos(), "virtual_server group %q: no virtual_server_group of that name", n.args[1].s)
		}
		svc.Name = "group " + g.name
		for _, e := range g.entries {
			if e.fwmark != 0 {
				fam := e.family
				if fam == 0 {
					fam = inferred
				}
				c, err := mk(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, FWMark: e.fwmark, V6: fam == 6}, e.pos)
				if err != nil {
					return svc, err
				}
				svc.Configs = append(svc.Configs, c)
				continue
			}
			for _, a := range e.addrs {
				c, err := mk(ipvs.ServiceKey{Proto: proto, Addr: a, Port: e.port}, e.pos)
				if err != nil {
					return svc, err
				}
				svc.Configs = append(svc.Configs, c)
			}
		}
	default:
		a, err := netip.ParseAddr(decl)
		if err != nil || a.Zone() != "" {
			return svc, errorf(n.pos(), "virtual_server %q: not an IP address, fwmark N or group NAME", decl)
		}
		var port uint16
		if len(n.args) == 2 {
			p, err := parseUint(n.args[1], 0, 65535, "port")
			if err != nil {
				return svc, err
			}
			port = uint16(p)
		}
		c, err := mk(ipvs.ServiceKey{Proto: proto, Addr: a, Port: port}, v.pos)
		if err != nil {
			return svc, err
		}
		svc.Configs = append(svc.Configs, c)
		svc.Name = c.ServiceKey.String()
	}
	t.services += len(svc.Configs)
	if t.services > MaxServices {
		return svc, errorf(n.pos(), "the configuration expands to more than %d IPVS services", MaxServices)
	}
	// A real server of another family than its service needs the tunnel
	// method (as IPVS says).
	svcFam := family(svc.Configs[0].Addr)
	if svc.Configs[0].FWMark != 0 {
		svcFam = 4
		if svc.Configs[0].V6 {
			svcFam = 6
		}
	}
	dest := func(r *rsDef, m method, w int32, what string) (ipvs.DestConfig, error) {
		d := ipvs.DestConfig{Addr: r.addr, Port: r.port, Method: m.m, Weight: w, UThreshold: r.uthresh, LThreshold: r.lthresh}
		if m.m == ipvs.MethodTunnel {
			d.TunType, d.TunPort, d.TunFlags = m.tunType, m.tunPort, m.tunFlag
		}
		for _, c := range svc.Configs {
			f := svcFam
			if c.FWMark == 0 {
				f = family(c.Addr)
			}
			if family(r.addr) != f && m.m != ipvs.MethodTunnel {
				return d, errorf(r.pos, "%s %s and its virtual server are of different address families (only tunnelled servers may be)", what, r.addr)
			}
			if c.FWMark == 0 && m.m != ipvs.MethodMasq && m.m != ipvs.MethodFullNAT && r.port != 0 && r.port != c.Port {
				return d, errorf(r.pos, "%s %s port %d: with %s the real server's port is the service's (%d)", what, r.addr, r.port, m.m, c.Port)
			}
		}
		return d, nil
	}
	var weightSum int64
	for _, r := range v.reals {
		m := or(r.meth, or(v.meth, method{m: ipvs.MethodMasq}))
		if r.uthresh != 0 || r.lthresh != 0 {
			if err := ipvs.CheckThresholds(int64(r.uthresh), int64(r.lthresh)); err != nil {
				return svc, errorf(r.pos, "real_server %s: %v", r.addr, err)
			}
		}
		d, err := dest(r, m, or(r.weight, v.weight), "real_server")
		if err != nil {
			return svc, err
		}
		rd := r.def.over(v.def)
		real := health.Real{Dest: d, Inhibit: or(rd.inhibit, false), NotifyUp: r.notifyUp, NotifyDown: r.notifyDown, Pos: r.pos.String()}
		weightSum += int64(d.Weight)
		for _, c := range r.checks {
			hc, err := buildCheck(c, rd, r, &svc, t.ssl)
			if err != nil {
				return svc, err
			}
			real.Checks = append(real.Checks, hc)
		}
		svc.Reals = append(svc.Reals, real)
	}
	if v.sorry != nil {
		m := or(v.sorryMeth, or(v.meth, method{m: ipvs.MethodMasq}))
		d, err := dest(v.sorry, m, 1, "sorry_server")
		if err != nil {
			return svc, err
		}
		svc.Sorry = &health.Sorry{Dest: d, Inhibit: v.sorryInh}
	}
	svc.Quorum = or(v.quorum, 1)
	if svc.Quorum > weightSum {
		q := max(weightSum, 1)
		t.warn(v.pos, "quorum %d exceeds the real servers' total weight %d: using %d (as keepalived does)", svc.Quorum, weightSum, q)
		svc.Quorum = q
	}
	if svc.Hysteresis >= svc.Quorum {
		t.warn(v.pos, "hysteresis %d >= quorum %d: using %d (as keepalived does)", svc.Hysteresis, svc.Quorum, svc.Quorum-1)
		svc.Hysteresis = svc.Quorum - 1
	}
	if err := svc.Validate(); err != nil {
		return svc, fmt.Errorf("%w", err)
	}
	// The commands this service makes must pass ipvsadm's model.
	rules, err := health.InitialRules([]health.Service{svc})
	if err != nil {
		return svc, err
	}
	tbl := ipvsadm.NewTable()
	for _, r := range rules {
		cmd, err := ipvsadm.NewParser().Parse(r.Args)
		if err == nil {
			err = tbl.Apply(cmd)
		}
		if err != nil {
			return svc, &Error{Pos: parsePos(r.Origin, v.pos), Msg: err.Error()}
		}
	}
	return svc, nil
}

// parsePos turns "file:line" back into a Pos.
func parsePos(s string, def Pos) Pos {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return def
	}
	var line int
	if _, err := fmt.Sscanf(s[i+1:], "%d", &line); err != nil {
		return def
	}
	return Pos{File: s[:i], Line: line}
}

// buildCheck resolves a checker's settings: its own, else its real
// server's, else its virtual server's, else keepalived's defaults (which
// depend on the checker type).
func buildCheck(c *checkDef, parent defaults, r *rsDef, svc *health.Service, ssl *health.TLS) (health.Check, error) {
	d := c.def.over(parent)
	hc := health.Check{Kind: c.kind, Pos: c.pos.String()}
	hc.DelayLoop = or(d.delayLoop, defaultDelayLoop)
	hc.ConnectTimeout = or(d.connectTimeout, defaultConnectTimeout)
	retry, dbr := 1, time.Second
	switch c.kind {
	case health.MISC:
		retry = 0
	case health.DNS:
		retry, dbr = 3, hc.DelayLoop
	case health.HTTP, health.SSL:
		dbr = 3 * time.Second
	}
	hc.Retry = or(d.retry, retry)
	hc.DelayBeforeRetry = or(d.delayBeforeRetry, dbr)
	hc.Warmup = or(d.warmup, hc.DelayLoop)
	hc.Rise = or(d.rise, 1)
	hc.Alpha = or(d.alpha, false)
	hc.LogAllFailures = or(d.logAll, false)
	if c.kind == health.MISC {
		hc.Script, hc.ScriptTimeout, hc.Dynamic, hc.UID, hc.GID = c.script, c.scriptTO, c.dynamic, c.uid, c.gid
		return hc, nil
	}
	ip := r.addr
	if c.connectIP.IsValid() {
		ip = c.connectIP
	}
	port := r.port
	if port == 0 {
		for _, sc := range svc.Configs {
			if sc.FWMark == 0 {
				port = sc.Port
				break
			}
		}
	}
	if c.connectPort != nil {
		port = *c.connectPort
	}
	if port == 0 {
		return hc, errorf(c.pos, "%s of real_server %s: no port to check (give the real server a port, or connect_port)", c.kind, r.addr)
	}
	hc.Target = netip.AddrPortFrom(ip, port)
	if c.bind.IsValid() && c.bind.Is4() != ip.Is4() {
		return hc, errorf(c.pos, "bindto %s and the checked address %s are of different families", c.bind, ip)
	}
	hc.Bind = netip.AddrPortFrom(c.bind, c.bindPort)
	hc.BindIf, hc.FWMark = c.bindIf, c.fwmark
	switch c.kind {
	case health.HTTP, health.SSL:
		hc.Protocol = c.protocol
		if hc.Protocol == "" {
			hc.Protocol = "1.0"
		}
		if c.kind == health.SSL {
			tl := health.TLS{}
			if ssl != nil {
				tl = *ssl
			}
			tl.SNI = c.sni
			hc.TLS = &tl
		}
		for _, u := range c.urls {
			if u.VirtualHost == "" && d.vhost != nil {
				u.VirtualHost = *d.vhost
			}
			hc.URLs = append(hc.URLs, u)
		}
	case health.DNS:
		hc.QType, hc.QName = c.qtype, c.qname
	}
	return hc, nil
}
