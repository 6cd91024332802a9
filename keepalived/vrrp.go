package keepalived

import (
	"net/netip"
	"strings"
	"time"

	"github.com/golvs/golvs/vrrp"
)

// VRRP blocks (issue 15): vrrp_instance and vrrp_sync_group configure
// golvs's VRRP speaker (package vrrp), with global_defs' vrrp_* settings
// as defaults. Keywords about what golvs does not do (scripts, tracking,
// routes, kernel address options) are accepted and named in warnings;
// ones it cannot honour safely (a virtual MAC, IPSEC-AH, IPv6, another
// multicast group) refuse the file.

// vrrpGlobals are global_defs' VRRP defaults.
type vrrpGlobals struct {
	version int
	garp    vrrp.GARP
	skip    bool
	sync    *SyncDaemon
}

// SyncDaemon is global_defs' lvs_sync_daemon: an IPVS connection sync
// daemon whose role follows a VRRP instance (master sends, backup
// receives). Zero values take the kernel's defaults.
type SyncDaemon struct {
	Interface string // the interface sync messages use
	Instance  string // the vrrp_instance it follows
	SyncID    uint8
	MaxLen    int
	Port      uint16
	TTL       uint8
	Group     netip.Addr
	Pos       Pos
}

// lvsSyncDaemon reads `lvs_sync_daemon IF INSTANCE [id N] [maxlen N]
// [port N] [ttl N] [group ADDR]`.
func lvsSyncDaemon(c *node) (*SyncDaemon, error) {
	if err := leaf(c); err != nil {
		return nil, err
	}
	if len(c.args) < 2 {
		return nil, errorf(c.pos(), "lvs_sync_daemon needs an interface and a vrrp_instance")
	}
	sd := &SyncDaemon{Interface: c.args[0].s, Instance: c.args[1].s, Pos: c.pos()}
	rest := c.args[2:]
	for i := 0; i < len(rest); i += 2 {
		k := rest[i].s
		if i+1 >= len(rest) {
			return nil, errorf(c.pos(), "lvs_sync_daemon: %s needs a value", k)
		}
		v := rest[i+1]
		var n uint64
		var err error
		switch k {
		case "id":
			n, err = parseUint(v, 0, 255, "lvs_sync_daemon id")
			sd.SyncID = uint8(n)
		case "maxlen":
			n, err = parseUint(v, 1, 65507, "lvs_sync_daemon maxlen")
			sd.MaxLen = int(n)
		case "port":
			n, err = parseUint(v, 1, 65535, "lvs_sync_daemon port")
			sd.Port = uint16(n)
		case "ttl":
			n, err = parseUint(v, 1, 255, "lvs_sync_daemon ttl")
			sd.TTL = uint8(n)
		case "group":
			a, e := netip.ParseAddr(v.s)
			if e != nil || !a.IsMulticast() {
				return nil, errorf(c.pos(), "lvs_sync_daemon group %q: not a multicast address", v.s)
			}
			sd.Group = a
		default:
			return nil, errorf(c.pos(), "lvs_sync_daemon: unknown option %q (id, maxlen, port, ttl, group)", k)
		}
		if err != nil {
			return nil, err
		}
	}
	return sd, nil
}

// vrrpIgnored are vrrp_instance keywords golvs accepts without acting on
// them, and why.
var vrrpIgnored = map[string]string{
	"track_interface": "golvs tracks only the VRRP interface's link", "track_script": "golvs runs no scripts",
	"track_process": "golvs runs no scripts", "track_file": "golvs runs no scripts", "track_bfd": "golvs has no BFD",
	"notify": "golvs runs no scripts", "notify_master": "golvs runs no scripts", "notify_backup": "golvs runs no scripts",
	"notify_fault": "golvs runs no scripts", "notify_stop": "golvs runs no scripts", "notify_deleted": "golvs runs no scripts",
	"notify_master_rx_lower_pri": "golvs runs no scripts", "smtp_alert": "golvs sends no SMTP alerts",
	"debug": "golvs logs through its own logger", "dont_track_primary": "golvs tracks only the VRRP interface's link",
	"accept": "golvs never gives the virtual addresses to the kernel", "no_accept": "golvs never gives the virtual addresses to the kernel",
	"strict_mode": "golvs applies RFC 5798's checks always", "virtual_routes": "golvs adds no routes", "virtual_rules": "golvs adds no rules",
	"garp_lower_prio_delay": "golvs sends the lower-priority round once", "lvs_sync_daemon_interface": "configure the sync daemon with golvs adm --start-daemon",
	"vmac_xmit_base": "golvs uses no virtual MAC", "unicast_ttl": "golvs sends with TTL 255 and checks TTL over multicast only",
	"old_unicast_checksum": "golvs uses RFC 5798's checksum", "down_timer_adverts": "golvs uses RFC 5798's three intervals",
	"kernel_rx_buf_size": "golvs sizes its own socket", "notify_priority_changes": "golvs runs no scripts",
	"higher_prio_send_advert": "golvs follows keepalived's default", "lower_prio_no_advert": "golvs follows keepalived's default",
}

// vrrpRefused are keywords whose meaning golvs cannot honour.
var vrrpRefused = map[string]string{
	"use_vmac":    "golvs does not support a VRRP virtual MAC (keepalived's default is the interface's MAC, as golvs uses)",
	"native_ipv6": "golvs's VRRP speaks IPv4 only",
}

// vrrpGlobalsOf reads global_defs' VRRP settings and warns about the
// rest of the block.
func (t *translator) vrrpGlobalsOf(n *node, g *vrrpGlobals) error {
	var others []string
	for _, c := range n.children {
		k := c.key.s
		var err error
		switch k {
		case "vrrp_version":
			var a token
			var v uint64
			if a, err = oneArg(c); err == nil {
				if v, err = parseUint(a, 2, 3, k); err == nil {
					g.version = int(v)
				}
			}
		case "vrrp_garp_master_delay":
			err = garpDelay(c, &g.garp)
		case "vrrp_garp_master_repeat":
			err = garpCount(c, &g.garp.MasterRepeat)
		case "vrrp_garp_master_refresh":
			err = timerArg(c, true, &g.garp.MasterRefresh)
		case "vrrp_garp_master_refresh_repeat":
			err = garpCount(c, &g.garp.RefreshRepeat)
		case "vrrp_garp_lower_prio_repeat":
			err = garpCount(c, &g.garp.LowerPrioRepeat)
		case "vrrp_garp_interval":
			err = timerArg(c, true, &g.garp.Interval)
		case "vrrp_skip_check_adv_addr":
			g.skip, err = parseBool(c)
		case "lvs_sync_daemon":
			g.sync, err = lvsSyncDaemon(c)
		case "vrrp_mcast_group4":
			var a token
			if a, err = oneArg(c); err == nil && a.s != vrrp.MulticastGroup.String() {
				err = errorf(c.pos(), "vrrp_mcast_group4 %s: golvs's VRRP uses %s only", a.s, vrrp.MulticastGroup)
			}
		default:
			others = append(others, k)
		}
		if err != nil {
			return err
		}
	}
	if len(others) > 0 {
		t.warn(n.pos(), "global_defs: golvs acts only on its vrrp_* settings; ignored: %s", strings.Join(others, " "))
	}
	return nil
}

func timerArg(c *node, zeroOK bool, d *time.Duration) error {
	a, err := oneArg(c)
	if err != nil {
		return err
	}
	*d, err = parseTimer(a, zeroOK, c.key.s)
	return err
}

func garpDelay(c *node, g *vrrp.GARP) error {
	if err := timerArg(c, true, &g.MasterDelay); err != nil {
		return err
	}
	g.NoSecondRound = g.MasterDelay == 0
	return nil
}

func garpCount(c *node, n *int) error {
	a, err := oneArg(c)
	if err != nil {
		return err
	}
	v, err := parseUint(a, 0, 100, c.key.s)
	*n = int(v)
	return err
}

// vrrpInstance translates a vrrp_instance block.
func (t *translator) vrrpInstance(n *node, g *vrrpGlobals) (vrrp.Instance, error) {
	in := vrrp.Instance{Version: g.version, GARP: g.garp, SkipCheckAdvAddr: g.skip}
	if !n.block {
		return in, errorf(n.pos(), "vrrp_instance needs a block")
	}
	if len(n.args) != 1 {
		return in, errorf(n.pos(), "vrrp_instance takes one name")
	}
	in.Name = n.args[0].s
	seen := map[string]Pos{}
	for _, c := range n.children {
		k := c.key.s
		if why, ok := vrrpRefused[k]; ok {
			return in, errorf(c.pos(), "%s: %s", k, why)
		}
		if why, ok := vrrpIgnored[k]; ok {
			t.warn(c.pos(), "%s: ignored (%s)", k, why)
			continue
		}
		if p, dup := seen[k]; dup && k != "unicast_peer" {
			return in, errorf(c.pos(), "%s given twice in vrrp_instance %s (first at %s)", k, in.Name, p)
		}
		seen[k] = c.pos()
		block := k == "authentication" || k == "virtual_ipaddress" || k == "virtual_ipaddress_excluded" || k == "unicast_peer"
		if !block {
			if err := leaf(c); err != nil {
				return in, err
			}
		} else if !c.block {
			return in, errorf(c.pos(), "%s needs a block", k)
		}
		var err error
		var a token
		var v uint64
		switch k {
		case "state":
			if a, err = oneArg(c); err == nil {
				switch strings.ToUpper(a.s) {
				case "MASTER":
					in.StartMaster = true
				case "BACKUP":
				default:
					err = errorf(c.pos(), "state %q: MASTER or BACKUP", a.s)
				}
			}
		case "interface":
			if a, err = oneArg(c); err == nil {
				in.Interface = a.s
			}
		case "virtual_router_id":
			if a, err = oneArg(c); err == nil {
				v, err = parseUint(a, 1, 255, k)
				in.VRID = int(v)
			}
		case "priority":
			if a, err = oneArg(c); err == nil {
				v, err = parseUint(a, 1, 255, k)
				in.Priority = int(v)
			}
		case "advert_int":
			err = timerArg(c, false, &in.Interval)
		case "version":
			if a, err = oneArg(c); err == nil {
				v, err = parseUint(a, 2, 3, k)
				in.Version = int(v)
			}
		case "nopreempt":
			err = noArgs(c)
			in.NoPreempt = true
		case "preempt_delay":
			err = timerArg(c, true, &in.PreemptDelay)
		case "skip_check_adv_addr":
			in.SkipCheckAdvAddr, err = parseBool(c)
		case "garp_master_delay":
			err = garpDelay(c, &in.GARP)
		case "garp_master_repeat":
			err = garpCount(c, &in.GARP.MasterRepeat)
		case "garp_master_refresh":
			err = timerArg(c, true, &in.GARP.MasterRefresh)
		case "garp_master_refresh_repeat":
			err = garpCount(c, &in.GARP.RefreshRepeat)
		case "garp_lower_prio_repeat":
			err = garpCount(c, &in.GARP.LowerPrioRepeat)
		case "unicast_src_ip", "mcast_src_ip":
			if a, err = oneArg(c); err == nil {
				if in.UnicastSrc, err = netip.ParseAddr(a.s); err != nil || !in.UnicastSrc.Is4() {
					err = errorf(c.pos(), "%s %q: not an IPv4 address", k, a.s)
				}
			}
		case "unicast_peer":
			for _, p := range c.children {
				ip, e := netip.ParseAddr(p.key.s)
				if e != nil || !ip.Is4() || p.block {
					return in, errorf(p.pos(), "unicast_peer %q: not an IPv4 address", p.key.s)
				}
				if len(p.args) > 0 {
					t.warn(p.pos(), "unicast_peer %s: %s ignored (golvs checks no TTL range)", p.key.s, p.args[0].s)
				}
				in.UnicastPeers = append(in.UnicastPeers, ip)
			}
		case "authentication":
			err = t.vrrpAuth(c, &in)
		case "virtual_ipaddress":
			in.Addrs, err = t.vrrpAddrs(c)
		case "virtual_ipaddress_excluded":
			in.Excluded, err = t.vrrpAddrs(c)
		default:
			err = errorf(c.pos(), "unknown keyword %q in vrrp_instance", k)
		}
		if err != nil {
			return in, err
		}
	}
	if in.Interface == "" {
		return in, errorf(n.pos(), "vrrp_instance %s: no interface", in.Name)
	}
	if in.VRID == 0 {
		return in, errorf(n.pos(), "vrrp_instance %s: no virtual_router_id", in.Name)
	}
	if in.AuthPass != "" && in.Version == 3 {
		t.warn(n.pos(), "vrrp_instance %s: authentication ignored with VRRP version 3 (as keepalived)", in.Name)
		in.AuthPass = ""
	}
	return in, nil
}

func (t *translator) vrrpAuth(c *node, in *vrrp.Instance) error {
	typ := ""
	for _, a := range c.children {
		if err := leaf(a); err != nil {
			return err
		}
		arg, err := oneArg(a)
		if err != nil {
			return err
		}
		switch a.key.s {
		case "auth_type":
			typ = strings.ToUpper(arg.s)
			switch typ {
			case "PASS":
			case "AH":
				return errorf(a.pos(), "auth_type AH: golvs does not support IPSEC-AH authentication (use PASS, or none)")
			default:
				return errorf(a.pos(), "auth_type %q: PASS or AH", arg.s)
			}
		case "auth_pass":
			in.AuthPass = arg.s
			if len(in.AuthPass) > 8 {
				t.warn(a.pos(), "auth_pass longer than 8 characters: truncated to %q, as keepalived does", in.AuthPass[:8])
				in.AuthPass = in.AuthPass[:8]
			}
		default:
			return errorf(a.pos(), "unknown keyword %q in authentication", a.key.s)
		}
	}
	if typ == "" || in.AuthPass == "" {
		return errorf(c.pos(), "authentication needs auth_type PASS and auth_pass")
	}
	return nil
}

// vrrpAddrs reads virtual_ipaddress lines: ADDR[/LEN] [dev IF] and
// kernel address options golvs has no use for (it never assigns them).
func (t *translator) vrrpAddrs(c *node) ([]vrrp.VAddr, error) {
	var out []vrrp.VAddr
	for _, l := range c.children {
		if l.block {
			return nil, errorf(l.pos(), "%s: an address takes no block", c.key.s)
		}
		s := l.key.s
		if i := strings.IndexByte(s, '/'); i >= 0 {
			s = s[:i]
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, errorf(l.pos(), "%s %q: not an address", c.key.s, l.key.s)
		}
		if !a.Is4() {
			return nil, errorf(l.pos(), "%s %s: golvs's VRRP speaks IPv4 only", c.key.s, a)
		}
		v := vrrp.VAddr{Addr: a}
		for i := 0; i < len(l.args); i++ {
			switch o := l.args[i].s; o {
			case "dev":
				if i+1 >= len(l.args) {
					return nil, errorf(l.pos(), "%s %s: dev needs an interface", c.key.s, a)
				}
				v.Dev = l.args[i+1].s
				i++
			case "brd", "broadcast", "scope", "label", "peer", "track_group":
				i++
				t.warn(l.pos(), "%s %s: %s ignored (golvs never gives the address to the kernel)", c.key.s, a, o)
			default:
				t.warn(l.pos(), "%s %s: %s ignored (golvs never gives the address to the kernel)", c.key.s, a, o)
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// vrrpSyncGroup translates a vrrp_sync_group block.
func (t *translator) vrrpSyncGroup(n *node) (vrrp.Group, error) {
	var g vrrp.Group
	if !n.block || len(n.args) != 1 {
		return g, errorf(n.pos(), "vrrp_sync_group takes one name and a block")
	}
	g.Name = n.args[0].s
	for _, c := range n.children {
		switch k := c.key.s; {
		case k == "group":
			if !c.block {
				return g, errorf(c.pos(), "group needs a block of instance names")
			}
			for _, m := range c.children {
				if m.block {
					return g, errorf(m.pos(), "group: %s takes no block", m.key.s)
				}
				g.Members = append(g.Members, m.key.s)
				for _, a := range m.args {
					g.Members = append(g.Members, a.s)
				}
			}
		case strings.HasPrefix(k, "notify") || strings.HasPrefix(k, "track_") || k == "smtp_alert" || k == "global_tracking" || k == "sync_group_tracking_weight":
			t.warn(c.pos(), "%s: ignored (golvs runs no scripts and tracks only the VRRP interfaces)", k)
		default:
			return g, errorf(c.pos(), "unknown keyword %q in vrrp_sync_group", k)
		}
	}
	return g, nil
}
