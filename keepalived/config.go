package keepalived

import (
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/golvs/golvs/health"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
	"github.com/golvs/golvs/sched"
	"github.com/golvs/golvs/vrrp"
)

// Config is what golvs takes from a keepalived.conf.
type Config struct {
	Services []health.Service
	// VRRP is the vrrp_instance and vrrp_sync_group blocks, with
	// global_defs' vrrp_* defaults (nil: none): golvs's VRRP speaker.
	VRRP *vrrp.Config
	// SyncDaemon is global_defs' lvs_sync_daemon (nil: none).
	SyncDaemon *SyncDaemon
	// Warnings name, once each, what the file holds that golvs does not
	// act on (VRRP, global_defs, SMTP alerts, ...), with where it is.
	Warnings []string
}

// Options change how a file is read.
type Options struct {
	FS FS // nil: the operating system's files
	// ConfigID decides @ID conditional lines; "": the host name up to
	// its first dot, as keepalived's default.
	ConfigID string
}

// MaxServices bounds how many IPVS services a configuration may expand
// to (virtual_server_group ranges multiply).
const MaxServices = 4096

// Load reads a keepalived.conf and everything it includes.
func Load(path string, o *Options) (*Config, error) {
	var opt Options
	if o != nil {
		opt = *o
	}
	if opt.FS == nil {
		opt.FS = osFS{}
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
	}
	if opt.ConfigID == "" {
		h, _ := os.Hostname()
		opt.ConfigID, _, _ = strings.Cut(h, ".")
	}
	r := &reader{fs: opt.FS, configID: opt.ConfigID}
	if err := r.readFile(path, 0, Pos{}); err != nil {
		return nil, err
	}
	tree, err := parseTree(r.lines)
	if err != nil {
		return nil, err
	}
	return translate(tree)
}

// Parse reads a configuration from memory (no includes outside it).
func Parse(name string, data []byte) (*Config, error) {
	return Load(name, &Options{FS: memFS{name: data}, ConfigID: "golvs"})
}

type memFS map[string][]byte

func (m memFS) ReadFile(name string) ([]byte, error) {
	if b, ok := m[name]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("open %s: %w", name, os.ErrNotExist)
}

func (m memFS) Glob(pattern string) ([]string, error) {
	var out []string
	for n := range m {
		if ok, err := filepath.Match(pattern, n); err != nil {
			return nil, err
		} else if ok {
			out = append(out, n)
		}
	}
	return out, nil
}

// Top-level keywords of keepalived that golvs does not act on: named in a
// warning. Anything else unknown at the top is an error.
var ignoredTop = map[string]bool{
	"vrrp_script":        true,
	"vrrp_track_process": true, "static_ipaddress": true, "static_routes": true, "static_rules": true,
	"linkbeat_interfaces": true, "bfd_instance": true, "track_file": true, "garp_group": true,
	"vrrp_track_file": true, "track_bfd": true, "net_namespace": true, "net_namespace_ipvs": true,
	"instance": true, "use_pid_dir": true, "child_wait_time": true, "virtual_server_group_nftables": false,
}

// Keywords of implemented blocks that golvs accepts without acting on
// them (no SMTP, no SNMP, VIPs never local): warned about.
var ignoredIn = map[string]string{
	"smtp_alert": "golvs sends no SMTP alerts",
	"snmp_name":  "golvs has no SNMP agent",
	"ha_suspend": "golvs serves VIPs without assigning them to the host, so checks always run",
	"hashed":     "IPVS sets the hashed flag itself",
}

type translator struct {
	warnings []string
	warned   map[string]bool
	groups   map[string]*vsgDef
	ssl      *health.TLS
	sslPos   Pos
	services int
}

func (t *translator) warn(p Pos, format string, args ...any) {
	msg := fmt.Sprintf("%s: %s", p, fmt.Sprintf(format, args...))
	if !t.warned[msg] {
		t.warned[msg] = true
		t.warnings = append(t.warnings, msg)
	}
}

func translate(tree []*node) (*Config, error) {
	t := &translator{warned: map[string]bool{}, groups: map[string]*vsgDef{}}
	var vg vrrpGlobals
	var vrrpAt Pos
	var groupAt []Pos
	// First pass: groups, the SSL block and global_defs, which other
	// blocks use wherever they are in the file.
	for _, n := range tree {
		switch n.key.s {
		case "global_defs":
			if err := t.vrrpGlobalsOf(n, &vg); err != nil {
				return nil, err
			}
		case "virtual_server_group":
			g, err := t.group(n)
			if err != nil {
				return nil, err
			}
			if _, dup := t.groups[g.name]; dup {
				return nil, errorf(n.pos(), "virtual_server_group %s defined twice", g.name)
			}
			t.groups[g.name] = g
		case "SSL":
			if t.ssl != nil {
				return nil, errorf(n.pos(), "SSL block given twice (first at %s)", t.sslPos)
			}
			s, err := t.sslBlock(n)
			if err != nil {
				return nil, err
			}
			t.ssl, t.sslPos = s, n.pos()
		}
	}
	cfg := &Config{}
	seen := map[ipvs.ServiceKey]Pos{}
	for _, n := range tree {
		switch k := n.key.s; {
		case k == "virtual_server":
			s, err := t.virtualServer(n)
			if err != nil {
				return nil, err
			}
			for _, c := range s.Configs {
				key := ipvsadm.NormKey(c.ServiceKey)
				if p, ok := seen[key]; ok {
					return nil, errorf(n.pos(), "service %s is already configured at %s", key, p)
				}
				seen[key] = n.pos()
			}
			cfg.Services = append(cfg.Services, s)
		case k == "virtual_server_group" || k == "SSL" || k == "global_defs":
		case k == "vrrp_instance":
			in, err := t.vrrpInstance(n, &vg)
			if err != nil {
				return nil, err
			}
			if cfg.VRRP == nil {
				cfg.VRRP, vrrpAt = &vrrp.Config{}, n.pos()
			}
			cfg.VRRP.Instances = append(cfg.VRRP.Instances, in)
		case k == "vrrp_sync_group":
			g, err := t.vrrpSyncGroup(n)
			if err != nil {
				return nil, err
			}
			if cfg.VRRP == nil {
				cfg.VRRP, vrrpAt = &vrrp.Config{}, n.pos()
			}
			cfg.VRRP.Groups = append(cfg.VRRP.Groups, g)
			groupAt = append(groupAt, n.pos())
		case ignoredTop[k]:
			name := k
			if len(n.args) > 0 {
				name += " " + n.args[0].s
			}
			t.warn(n.pos(), "%s: golvs does not act on this block (no VRRP or keepalived global settings); ignored", name)
		default:
			return nil, errorf(n.pos(), "unknown keyword %q at the top level", k)
		}
	}
	if cfg.VRRP != nil {
		names := map[string]bool{}
		for _, in := range cfg.VRRP.Instances {
			names[in.Name] = true
		}
		for i, g := range cfg.VRRP.Groups {
			for _, m := range g.Members {
				if !names[m] {
					return nil, errorf(groupAt[i], "sync group %s: no instance %s", g.Name, m)
				}
			}
		}
		checked, err := cfg.VRRP.Check()
		if err != nil {
			return nil, errorf(vrrpAt, "%v", err)
		}
		cfg.VRRP = checked
	}
	if sd := vg.sync; sd != nil {
		found := false
		if cfg.VRRP != nil {
			for _, in := range cfg.VRRP.Instances {
				found = found || in.Name == sd.Instance
			}
		}
		if !found {
			return nil, errorf(sd.Pos, "lvs_sync_daemon follows vrrp_instance %s, which is not defined", sd.Instance)
		}
		cfg.SyncDaemon = sd
	}
	// Every group must be used or it is a likely mistake: warn.
	cfg.Warnings = t.warnings
	return cfg, nil
}

// vsgDef is a virtual_server_group: addresses, ranges and marks.
type vsgDef struct {
	name    string
	pos     Pos
	entries []vsgEntry
}

type vsgEntry struct {
	pos    Pos
	addrs  []netip.Addr // expanded range
	port   uint16
	fwmark uint32
	family int // for fwmark: 4, 6 or 0 (unset)
}

func (t *translator) group(n *node) (*vsgDef, error) {
	if !n.block {
		return nil, errorf(n.pos(), "virtual_server_group needs a block")
	}
	if len(n.args) != 1 {
		return nil, errorf(n.pos(), "virtual_server_group takes one name")
	}
	g := &vsgDef{name: n.args[0].s, pos: n.pos()}
	for _, c := range n.children {
		if c.block {
			return nil, errorf(c.pos(), "unexpected block in virtual_server_group %s", g.name)
		}
		if c.key.s == "fwmark" {
			if len(c.args) < 1 || len(c.args) > 2 {
				return nil, errorf(c.pos(), "fwmark takes a mark and optionally inet or inet6")
			}
			m, err := parseUint(c.args[0], 1, math.MaxUint32, "fwmark")
			if err != nil {
				return nil, err
			}
			e := vsgEntry{pos: c.pos(), fwmark: uint32(m)}
			if len(c.args) == 2 {
				switch c.args[1].s {
				case "inet":
					e.family = 4
				case "inet6":
					e.family = 6
				default:
					return nil, errorf(c.pos(), "fwmark family %q: inet or inet6", c.args[1].s)
				}
			}
			g.entries = append(g.entries, e)
			continue
		}
		addrs, err := parseRange(c.key)
		if err != nil {
			return nil, err
		}
		e := vsgEntry{pos: c.pos(), addrs: addrs}
		switch len(c.args) {
		case 0:
		case 1:
			p, err := parseUint(c.args[0], 0, 65535, "port")
			if err != nil {
				return nil, err
			}
			e.port = uint16(p)
		default:
			return nil, errorf(c.pos(), "unexpected %q after the address and port", c.args[1].s)
		}
		g.entries = append(g.entries, e)
	}
	if len(g.entries) == 0 {
		return nil, errorf(n.pos(), "virtual_server_group %s has no entries", g.name)
	}
	return g, nil
}

// parseRange reads an address, a range (a.b.c.d-e, a.b.c.d-e.f.g.h,
// 2001:db8::1-ff on the last 16 bits, or addr-addr) or a prefix (/nn).
func parseRange(t token) ([]netip.Addr, error) {
	s := t.s
	if a, err := netip.ParseAddr(s); err == nil {
		return []netip.Addr{a}, nil
	}
	var lo, hi netip.Addr
	if i := strings.IndexByte(s, '/'); i >= 0 {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, errorf(t.pos, "%q is not an address, range or prefix", s)
		}
		p = p.Masked()
		lo = p.Addr()
		hi = lastAddr(p)
	} else if i := strings.LastIndexByte(s, '-'); i > 0 {
		a, err := netip.ParseAddr(s[:i])
		if err != nil {
			return nil, errorf(t.pos, "%q is not an address, range or prefix", s)
		}
		lo = a
		end := s[i+1:]
		if b, err := netip.ParseAddr(end); err == nil {
			hi = b
		} else if a.Is4() {
			v, err := strconv.ParseUint(end, 10, 8)
			if err != nil {
				return nil, errorf(t.pos, "range end %q is not a number 0-255 or an address", end)
			}
			b := a.As4()
			b[3] = byte(v)
			hi = netip.AddrFrom4(b)
		} else {
			v, err := strconv.ParseUint(end, 16, 16)
			if err != nil {
				return nil, errorf(t.pos, "range end %q is not hex 0-ffff or an address", end)
			}
			b := a.As16()
			b[14], b[15] = byte(v>>8), byte(v)
			hi = netip.AddrFrom16(b)
		}
	} else {
		return nil, errorf(t.pos, "%q is not an address, range or prefix", s)
	}
	if lo.Is4() != hi.Is4() || hi.Less(lo) {
		return nil, errorf(t.pos, "range %s: its end is before its start or of another family", s)
	}
	n := new(big.Int).Sub(new(big.Int).SetBytes(hi.AsSlice()), new(big.Int).SetBytes(lo.AsSlice()))
	if !n.IsInt64() || n.Int64() >= MaxServices {
		return nil, errorf(t.pos, "range %s has more than %d addresses", s, MaxServices)
	}
	var out []netip.Addr
	for a := lo; ; a = a.Next() {
		out = append(out, a)
		if a == hi {
			break
		}
	}
	return out, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func parseUint(t token, lo, hi uint64, what string) (uint64, error) {
	v, err := strconv.ParseUint(t.s, 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, errorf(t.pos, "%s %q: want a whole number %d..%d", what, t.s, lo, hi)
	}
	return v, nil
}

// parseTimer reads keepalived's <TIMER>: seconds, fractions allowed,
// microsecond resolution.
func parseTimer(t token, zeroOK bool, what string) (time.Duration, error) {
	v, err := strconv.ParseFloat(t.s, 64)
	if err != nil || math.IsNaN(v) || v < 0 || v > 1e9 || (!zeroOK && v == 0) || strings.ContainsAny(t.s, "xXpPeEiInN_") {
		lo := "0"
		if !zeroOK {
			lo = "more than 0"
		}
		return 0, errorf(t.pos, "%s %q: want seconds (%s, fractions allowed)", what, t.s, lo)
	}
	d := time.Duration(math.Round(v*1e6)) * time.Microsecond
	if !zeroOK && d == 0 {
		return 0, errorf(t.pos, "%s %q: below the microsecond resolution", what, t.s)
	}
	return d, nil
}

func parseBool(n *node) (bool, error) {
	switch len(n.args) {
	case 0:
		return true, nil
	case 1:
		switch strings.ToLower(n.args[0].s) {
		case "on", "true", "yes":
			return true, nil
		case "off", "false", "no":
			return false, nil
		}
	}
	return false, errorf(n.pos(), "%s: want on|off|true|false|yes|no", n.key.s)
}

func oneArg(n *node) (token, error) {
	if len(n.args) != 1 {
		return token{}, errorf(n.pos(), "%s takes one value (got %d)", n.key.s, len(n.args))
	}
	return n.args[0], nil
}

func noArgs(n *node) error {
	if len(n.args) != 0 {
		return errorf(n.pos(), "%s takes no value", n.key.s)
	}
	return nil
}

func leaf(n *node) error {
	if n.block {
		return errorf(n.pos(), "%s does not take a block", n.key.s)
	}
	return nil
}

// scriptArgs reads a script keyword: a quoted string is a command line
// split at unquoted spaces ('...' groups); an unquoted one is the
// program. Words after it would name a user to run as: refused.
func scriptArgs(n *node) ([]string, error) {
	if len(n.args) == 0 {
		return nil, errorf(n.pos(), "%s needs a script", n.key.s)
	}
	if len(n.args) > 1 {
		return nil, errorf(n.pos(), "%s: running scripts as another user (%s) is not supported by golvs; quote a command line with arguments", n.key.s, n.args[1].s)
	}
	a := n.args[0]
	if !a.quoted {
		return []string{a.s}, nil
	}
	argv, err := splitCommand(a.s)
	if err != nil || len(argv) == 0 {
		return nil, errorf(n.pos(), "%s: %q is not a command line", n.key.s, a.s)
	}
	return argv, nil
}

func splitCommand(s string) ([]string, error) {
	var out []string
	var b strings.Builder
	in, any := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			in, any = !in, true
		case !in && (c == ' ' || c == '\t'):
			if any {
				out = append(out, b.String())
				b.Reset()
				any = false
			}
		default:
			b.WriteByte(c)
			any = true
		}
	}
	if in {
		return nil, fmt.Errorf("unterminated quote")
	}
	if any {
		out = append(out, b.String())
	}
	return out, nil
}

// method is a forwarding method with its tunnel settings.
type method struct {
	m       ipvs.Method
	tunType ipvs.TunType
	tunPort uint16
	tunFlag uint16
}

// parseMethod reads lvs_method/lb_kind: NAT, DR, TUN [type ipip|gue
// port N|gre] [nocsum|csum|remcsum], and golvs's FULLNAT (FNAT).
func parseMethod(n *node) (method, error) {
	if len(n.args) == 0 {
		return method{}, errorf(n.pos(), "%s needs NAT, DR or TUN", n.key.s)
	}
	var m method
	switch strings.ToUpper(n.args[0].s) {
	case "NAT":
		m.m = ipvs.MethodMasq
	case "DR":
		m.m = ipvs.MethodRoute
	case "TUN":
		m.m = ipvs.MethodTunnel
	case "FULLNAT", "FNAT":
		m.m = ipvs.MethodFullNAT
	default:
		return m, errorf(n.pos(), "%s %q: NAT, DR, TUN (or golvs's FULLNAT)", n.key.s, n.args[0].s)
	}
	a := n.args[1:]
	if len(a) > 0 && m.m != ipvs.MethodTunnel {
		return m, errorf(n.pos(), "%s %s takes no options (%q)", n.key.s, n.args[0].s, a[0].s)
	}
	csumSet := false
	for i := 0; i < len(a); i++ {
		switch a[i].s {
		case "type":
			if i+1 >= len(a) {
				return m, errorf(n.pos(), "tunnel type missing")
			}
			switch a[i+1].s {
			case "ipip":
				m.tunType = ipvs.TunIPIP
			case "gue":
				m.tunType = ipvs.TunGUE
			case "gre":
				m.tunType = ipvs.TunGRE
			default:
				return m, errorf(n.pos(), "tunnel type %q: ipip, gue or gre", a[i+1].s)
			}
			i++
		case "port":
			if i+1 >= len(a) {
				return m, errorf(n.pos(), "tunnel port missing")
			}
			p, err := parseUint(a[i+1], 1, 65535, "tunnel port")
			if err != nil {
				return m, err
			}
			m.tunPort = uint16(p)
			i++
		case "nocsum":
			m.tunFlag, csumSet = ipvs.TunFlagNoCsum, true
		case "csum":
			m.tunFlag, csumSet = ipvs.TunFlagCsum, true
		case "remcsum":
			m.tunFlag, csumSet = ipvs.TunFlagRemCsum, true
		default:
			return m, errorf(n.pos(), "tunnel option %q: type, port, nocsum, csum or remcsum", a[i].s)
		}
	}
	if (m.tunType == ipvs.TunGUE) != (m.tunPort != 0) {
		return m, errorf(n.pos(), "gue tunnels require a port, other tunnels cannot have one")
	}
	if m.tunType == ipvs.TunIPIP && csumSet && m.tunFlag != ipvs.TunFlagNoCsum {
		return m, errorf(n.pos(), "ipip tunnels do not support checksum options")
	}
	if m.tunType == ipvs.TunGRE && m.tunFlag == ipvs.TunFlagRemCsum {
		return m, errorf(n.pos(), "gre tunnels do not support remcsum")
	}
	return m, nil
}

func (t *translator) sslBlock(n *node) (*health.TLS, error) {
	if !n.block {
		return nil, errorf(n.pos(), "SSL needs a block")
	}
	s := &health.TLS{}
	for _, c := range n.children {
		if err := leaf(c); err != nil {
			return nil, err
		}
		v, err := oneArg(c)
		if err != nil {
			return nil, err
		}
		switch c.key.s {
		case "password":
			s.Password = v.s
		case "ca":
			s.CA = v.s
		case "certificate":
			s.Cert = v.s
		case "key":
			s.Key = v.s
		default:
			return nil, errorf(c.pos(), "unknown keyword %q in SSL (password, ca, certificate, key)", c.key.s)
		}
	}
	if s.Password != "" {
		return nil, errorf(n.pos(), "SSL password: encrypted keys are not supported by golvs")
	}
	return s, nil
}

// defaults are settings that cascade virtual server -> real server ->
// checker; nil means not set at that level.
type defaults struct {
	delayLoop, delayBeforeRetry, connectTimeout, warmup *time.Duration
	retry, rise                                         *int
	alpha, inhibit, logAll                              *bool
	vhost                                               *string
}

func (d defaults) over(p defaults) defaults {
	if d.delayLoop == nil {
		d.delayLoop = p.delayLoop
	}
	if d.delayBeforeRetry == nil {
		d.delayBeforeRetry = p.delayBeforeRetry
	}
	if d.connectTimeout == nil {
		d.connectTimeout = p.connectTimeout
	}
	if d.warmup == nil {
		d.warmup = p.warmup
	}
	if d.retry == nil {
		d.retry = p.retry
	}
	if d.rise == nil {
		d.rise = p.rise
	}
	if d.alpha == nil {
		d.alpha = p.alpha
	}
	if d.inhibit == nil {
		d.inhibit = p.inhibit
	}
	if d.logAll == nil {
		d.logAll = p.logAll
	}
	if d.vhost == nil {
		d.vhost = p.vhost
	}
	return d
}

// common handles the keywords every level shares. It reports whether
// the keyword was one of them. fallSeen tracks retry/fall conflicts.
func (d *defaults) common(n *node, fall *Pos) (bool, error) {
	set := func(p **time.Duration, zeroOK bool) error {
		v, err := oneArg(n)
		if err != nil {
			return err
		}
		x, err := parseTimer(v, zeroOK, n.key.s)
		*p = &x
		return err
	}
	switch n.key.s {
	case "delay_loop":
		return true, set(&d.delayLoop, false)
	case "delay_before_retry":
		return true, set(&d.delayBeforeRetry, true)
	case "connect_timeout":
		return true, set(&d.connectTimeout, false)
	case "warmup":
		return true, set(&d.warmup, true)
	case "retry", "nb_get_retry", "fall":
		v, err := oneArg(n)
		if err != nil {
			return true, err
		}
		lo := uint64(0)
		if n.key.s == "fall" {
			lo = 1
		}
		x, err := parseUint(v, lo, 1<<20, n.key.s)
		if err != nil {
			return true, err
		}
		if fall.Line != 0 {
			return true, errorf(n.pos(), "%s and retry/fall both given here (first at %s): fall N is retry N-1", n.key.s, *fall)
		}
		*fall = n.pos()
		r := int(x)
		if n.key.s == "fall" {
			r--
		}
		d.retry = &r
		return true, nil
	case "rise":
		v, err := oneArg(n)
		if err != nil {
			return true, err
		}
		x, err := parseUint(v, 1, 1<<20, "rise")
		if err != nil {
			return true, err
		}
		r := int(x)
		d.rise = &r
		return true, nil
	case "alpha", "inhibit_on_failure", "log_all_failures":
		b, err := parseBool(n)
		if err != nil {
			return true, err
		}
		switch n.key.s {
		case "alpha":
			d.alpha = &b
		case "inhibit_on_failure":
			d.inhibit = &b
		default:
			d.logAll = &b
		}
		return true, nil
	case "virtualhost":
		v, err := oneArg(n)
		if err != nil {
			return true, err
		}
		d.vhost = &v.s
		return true, nil
	}
	return false, nil
}

// vsDef is a virtual_server as read.
type vsDef struct {
	pos        Pos
	sched      string
	meth       *method
	flags      uint32
	ptimeout   *uint32
	gran       *token
	pe         string
	proto      *token
	family     int
	omega      bool
	quorum     *int64
	hyst       int64
	quorumUp   []string
	quorumDown []string
	weight     int32
	sorry      *rsDef
	sorryMeth  *method
	sorryInh   bool
	def        defaults
	reals      []*rsDef
}

type rsDef struct {
	pos        Pos
	addr       netip.Addr
	port       uint16
	weight     *int32
	meth       *method
	uthresh    uint32
	lthresh    uint32
	notifyUp   []string
	notifyDown []string
	def        defaults
	checks     []*checkDef
}

type checkDef struct {
	pos         Pos
	kind        health.Kind
	def         defaults
	connectIP   netip.Addr
	connectPort *uint16
	bind        netip.Addr
	bindPort    uint16
	bindIf      string
	fwmark      uint32
	urls        []health.URL
	protocol    string
	sni         bool
	script      []string
	scriptTO    time.Duration
	dynamic     bool
	uid, gid    int
	qtype       uint16
	qname       string
}

// schedFlagNames are the -b flags: sh-fallback and mh-fallback are
// flag-1, sh-port and mh-port flag-2 (IP_VS_SVC_F_SCHED_*).
var schedFlagNames = map[string]uint32{
	"flag-1": ipvs.SvcSched1, "flag-2": ipvs.SvcSched2, "flag-3": ipvs.SvcSched3,
	"sh-fallback": ipvs.SvcSched1, "sh-port": ipvs.SvcSched2, "mh-fallback": ipvs.SvcSched1, "mh-port": ipvs.SvcSched2,
}

func (t *translator) virtualServer(n *node) (health.Service, error) {
	var svc health.Service
	if !n.block {
		return svc, errorf(n.pos(), "virtual_server needs a block")
	}
	v := &vsDef{pos: n.pos(), weight: 1}
	var fall Pos
	// The declaration: IP [PORT] | fwmark N | group NAME.
	if len(n.args) == 0 {
		return svc, errorf(n.pos(), "virtual_server needs an address (and port), fwmark N or group NAME")
	}
	declKind := n.args[0].s
	switch declKind {
	case "fwmark", "group":
		if len(n.args) != 2 {
			return svc, errorf(n.pos(), "virtual_server %s takes one value", declKind)
		}
	default:
		if len(n.args) > 2 {
			return svc, errorf(n.pos(), "virtual_server: unexpected %q after the address and port", n.args[2].s)
		}
	}
	for _, c := range n.children {
		if ok, err := v.def.common(c, &fall); ok {
			if err == nil {
				err = leaf(c)
			}
			if err != nil {
				return svc, err
			}
			continue
		}
		if why, ok := ignoredIn[c.key.s]; ok {
			t.warn(c.pos(), "%s: ignored (%s)", c.key.s, why)
			continue
		}
		if c.key.s != "real_server" {
			if err := leaf(c); err != nil {
				return svc, err
			}
		}
		var err error
		switch k := c.key.s; {
		case k == "lb_algo" || k == "lvs_sched":
			var a token
			if a, err = oneArg(c); err == nil {
				v.sched = a.s
				if a.s != "none" {
					if e := sched.Check(a.s); e != nil {
						err = errorf(c.pos(), "%s %q: unknown scheduler (%s)", k, a.s, strings.Join(sched.Names(), " "))
					}
				}
			}
		case k == "lb_kind" || k == "lvs_method":
			var m method
			if m, err = parseMethod(c); err == nil {
				v.meth = &m
			}
		case k == "ops":
			err = noArgs(c)
			v.flags |= ipvs.SvcOnePacket
		case schedFlagNames[k] != 0:
			err = noArgs(c)
			v.flags |= schedFlagNames[k]
		case k == "persistence_timeout":
			to := uint32(ipvs.DefaultPersist)
			if len(c.args) > 0 {
				var a token
				if a, err = oneArg(c); err == nil {
					var x uint64
					x, err = parseUint(a, 1, ipvs.MaxTimeout, k)
					to = uint32(x)
				}
			}
			v.ptimeout = &to
		case k == "persistence_granularity":
			var a token
			if a, err = oneArg(c); err == nil {
				v.gran = &a
			}
		case k == "persistence_engine":
			var a token
			if a, err = oneArg(c); err == nil {
				v.pe = a.s
				if a.s != "sip" {
					err = errorf(c.pos(), "persistence_engine %q: only sip exists", a.s)
				}
			}
		case k == "protocol":
			var a token
			if a, err = oneArg(c); err == nil {
				v.proto = &a
			}
		case k == "ip_family":
			var a token
			if a, err = oneArg(c); err == nil {
				switch a.s {
				case "inet":
					v.family = 4
				case "inet6":
					v.family = 6
				default:
					err = errorf(c.pos(), "ip_family %q: inet or inet6", a.s)
				}
			}
		case k == "omega":
			v.omega, err = parseBool(c)
		case k == "quorum":
			var a token
			if a, err = oneArg(c); err == nil {
				var x uint64
				x, err = parseUint(a, 1, math.MaxUint32, k)
				q := int64(x)
				v.quorum = &q
			}
		case k == "hysteresis":
			var a token
			if a, err = oneArg(c); err == nil {
				var x uint64
				x, err = parseUint(a, 0, math.MaxUint32, k)
				v.hyst = int64(x)
			}
		case k == "quorum_up":
			v.quorumUp, err = scriptArgs(c)
		case k == "quorum_down":
			v.quorumDown, err = scriptArgs(c)
		case k == "weight":
			var a token
			if a, err = oneArg(c); err == nil {
				var x uint64
				x, err = parseUint(a, 1, ipvs.MaxAdmWeight, k)
				v.weight = int32(x)
			}
		case k == "sorry_server":
			if v.sorry != nil {
				return svc, errorf(c.pos(), "sorry_server given twice")
			}
			var rs *rsDef
			if rs, err = addrPort(c, "sorry_server"); err == nil {
				v.sorry = rs
			}
		case k == "sorry_server_inhibit":
			if v.sorry == nil {
				err = errorf(c.pos(), "sorry_server_inhibit before or without sorry_server")
			} else {
				v.sorryInh, err = parseBool(c)
			}
		case k == "sorry_server_lvs_method":
			if v.sorry == nil {
				err = errorf(c.pos(), "sorry_server_lvs_method before or without sorry_server")
			} else {
				var m method
				if m, err = parseMethod(c); err == nil {
					v.sorryMeth = &m
				}
			}
		case k == "real_server":
			var rs *rsDef
			if rs, err = t.realServer(c); err == nil {
				v.reals = append(v.reals, rs)
			}
		case k == "SMTP_CHECK" || k == "HTTP_GET" || k == "TCP_CHECK":
			err = errorf(c.pos(), "%s belongs inside a real_server block", k)
		default:
			err = errorf(c.pos(), "unknown keyword %q in virtual_server", k)
		}
		if err != nil {
			return svc, err
		}
	}
	if len(v.reals) == 0 {
		return svc, errorf(n.pos(), "virtual_server has no real_server")
	}
	return t.buildService(n, v)
}

// addrPort reads "ADDR [PORT]" of real_server and sorry_server.
func addrPort(n *node, what string) (*rsDef, error) {
	if len(n.args) < 1 || len(n.args) > 2 {
		return nil, errorf(n.pos(), "%s takes an address and optionally a port", what)
	}
	a, err := netip.ParseAddr(n.args[0].s)
	if err != nil || a.Zone() != "" {
		return nil, errorf(n.pos(), "%s %q: not an IP address", what, n.args[0].s)
	}
	rs := &rsDef{pos: n.pos(), addr: a}
	if len(n.args) == 2 {
		p, err := parseUint(n.args[1], 0, 65535, "port")
		if err != nil {
			return nil, err
		}
		rs.port = uint16(p)
	}
	return rs, nil
}

func (t *translator) realServer(n *node) (*rsDef, error) {
	if !n.block {
		return nil, errorf(n.pos(), "real_server needs a block")
	}
	rs, err := addrPort(n, "real_server")
	if err != nil {
		return nil, err
	}
	var fall Pos
	for _, c := range n.children {
		if ok, err := rs.def.common(c, &fall); ok {
			if err == nil {
				err = leaf(c)
			}
			if err != nil {
				return nil, err
			}
			continue
		}
		if why, ok := ignoredIn[c.key.s]; ok {
			t.warn(c.pos(), "%s: ignored (%s)", c.key.s, why)
			continue
		}
		k := c.key.s
		if kind, ok := checkKinds[k]; ok {
			cd, err := t.checker(c, kind)
			if err != nil {
				return nil, err
			}
			rs.checks = append(rs.checks, cd)
			continue
		}
		if unsupportedChecks[k] {
			return nil, errorf(c.pos(), "%s is not supported by golvs (it runs TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK and DNS_CHECK)", k)
		}
		if err := leaf(c); err != nil {
			return nil, err
		}
		switch k {
		case "weight":
			var a token
			if a, err = oneArg(c); err == nil {
				var x uint64
				x, err = parseUint(a, 0, ipvs.MaxAdmWeight, k)
				w := int32(x)
				rs.weight = &w
			}
		case "lvs_method", "lb_kind":
			var m method
			if m, err = parseMethod(c); err == nil {
				rs.meth = &m
			}
		case "uthreshold", "lthreshold":
			var a token
			if a, err = oneArg(c); err == nil {
				var x uint64
				x, err = parseUint(a, 0, ipvs.MaxThreshold, k)
				if k == "uthreshold" {
					rs.uthresh = uint32(x)
				} else {
					rs.lthresh = uint32(x)
				}
			}
		case "notify_up":
			rs.notifyUp, err = scriptArgs(c)
		case "notify_down":
			rs.notifyDown, err = scriptArgs(c)
		default:
			err = errorf(c.pos(), "unknown keyword %q in real_server", k)
		}
		if err != nil {
			return nil, err
		}
	}
	return rs, nil
}

var checkKinds = map[string]health.Kind{
	"TCP_CHECK": health.TCP, "HTTP_GET": health.HTTP, "SSL_GET": health.SSL, "MISC_CHECK": health.MISC, "DNS_CHECK": health.DNS,
}

var unsupportedChecks = map[string]bool{
	"SMTP_CHECK": true, "UDP_CHECK": true, "PING_CHECK": true, "BFD_CHECK": true, "FILE_CHECK": true,
}

var dnsTypes = map[string]uint16{
	"A": dns.TypeA, "NS": dns.TypeNS, "CNAME": dns.TypeCNAME, "SOA": dns.TypeSOA,
	"MX": dns.TypeMX, "TXT": dns.TypeTXT, "AAAA": dns.TypeAAAA,
}

func (t *translator) checker(n *node, kind health.Kind) (*checkDef, error) {
	if !n.block {
		return nil, errorf(n.pos(), "%s needs a block (it may be empty: %s { })", n.key.s, n.key.s)
	}
	if err := noArgs(n); err != nil {
		return nil, err
	}
	c := &checkDef{pos: n.pos(), kind: kind, uid: -1, gid: -1, qtype: dns.TypeSOA, qname: "."}
	var fall Pos
	for _, x := range n.children {
		k := x.key.s
		if k == "url" && (kind == health.HTTP || kind == health.SSL) {
			u, err := t.url(x)
			if err != nil {
				return nil, err
			}
			c.urls = append(c.urls, u)
			continue
		}
		if err := leaf(x); err != nil {
			return nil, err
		}
		if k == "nb_get_retry" && kind != health.HTTP && kind != health.SSL {
			return nil, errorf(x.pos(), "nb_get_retry is an HTTP_GET/SSL_GET keyword")
		}
		if k == "virtualhost" && kind != health.HTTP && kind != health.SSL {
			return nil, errorf(x.pos(), "virtualhost is an HTTP_GET/SSL_GET keyword")
		}
		if k == "inhibit_on_failure" {
			return nil, errorf(x.pos(), "inhibit_on_failure belongs to the real_server or virtual_server, not a checker")
		}
		if ok, err := c.def.common(x, &fall); ok {
			if err != nil {
				return nil, err
			}
			if kind == health.MISC && (k == "connect_timeout") {
				return nil, errorf(x.pos(), "connect_timeout does not apply to MISC_CHECK (use misc_timeout)")
			}
			continue
		}
		var err error
		connKW := map[string]bool{"connect_ip": true, "connect_port": true, "bindto": true, "bind_port": true, "bind_if": true, "fwmark": true}
		if connKW[k] && kind == health.MISC {
			return nil, errorf(x.pos(), "%s does not apply to MISC_CHECK", k)
		}
		switch {
		case k == "connect_ip" || k == "bindto":
			var a token
			if a, err = oneArg(x); err == nil {
				ip, e := netip.ParseAddr(a.s)
				if e != nil || ip.Zone() != "" {
					err = errorf(x.pos(), "%s %q: not an IP address", k, a.s)
				} else if k == "connect_ip" {
					c.connectIP = ip
				} else {
					c.bind = ip
				}
			}
		case k == "connect_port" || k == "bind_port":
			var a token
			if a, err = oneArg(x); err == nil {
				var p uint64
				p, err = parseUint(a, 1, 65535, k)
				if k == "connect_port" {
					pp := uint16(p)
					c.connectPort = &pp
				} else {
					c.bindPort = uint16(p)
				}
			}
		case k == "bind_if":
			var a token
			if a, err = oneArg(x); err == nil {
				c.bindIf = a.s
				if len(a.s) == 0 || len(a.s) > 15 || strings.ContainsAny(a.s, "/ ") {
					err = errorf(x.pos(), "bind_if %q: not an interface name", a.s)
				}
			}
		case k == "fwmark":
			var a token
			if a, err = oneArg(x); err == nil {
				var m uint64
				m, err = parseUint(a, 1, math.MaxUint32, k)
				c.fwmark = uint32(m)
			}
		case (kind == health.HTTP || kind == health.SSL) && k == "http_protocol":
			var a token
			if a, err = oneArg(x); err == nil {
				switch a.s {
				case "1.0", "1.1", "1.0C":
					c.protocol = a.s
				case "1.0c":
					c.protocol = "1.0C"
				default:
					err = errorf(x.pos(), "http_protocol %q: 1.0, 1.0C or 1.1", a.s)
				}
			}
		case (kind == health.HTTP || kind == health.SSL) && k == "enable_sni":
			c.sni, err = parseBool(x)
		case (kind == health.HTTP || kind == health.SSL) && k == "fast_recovery":
			// golvs checks every url at every check: keepalived's
			// fast_recovery behaviour, always.
			_, err = parseBool(x)
		case kind == health.MISC && k == "misc_path":
			c.script, err = scriptArgs(x)
		case kind == health.MISC && k == "misc_timeout":
			var a token
			if a, err = oneArg(x); err == nil {
				c.scriptTO, err = parseTimer(a, false, k)
			}
		case kind == health.MISC && k == "misc_dynamic":
			c.dynamic, err = parseBool(x)
		case kind == health.MISC && k == "user":
			err = c.user(x)
		case kind == health.DNS && k == "type":
			var a token
			if a, err = oneArg(x); err == nil {
				q, ok := dnsTypes[strings.ToUpper(a.s)]
				if !ok {
					err = errorf(x.pos(), "DNS_CHECK type %q: A, NS, CNAME, SOA, MX, TXT or AAAA", a.s)
				}
				c.qtype = q
			}
		case kind == health.DNS && k == "name":
			var a token
			if a, err = oneArg(x); err == nil {
				c.qname = a.s
				if _, ok := dns.IsDomainName(a.s); !ok {
					err = errorf(x.pos(), "DNS_CHECK name %q: not a domain name", a.s)
				}
			}
		default:
			err = errorf(x.pos(), "unknown keyword %q in %s", k, kind)
		}
		if err != nil {
			return nil, err
		}
	}
	switch kind {
	case health.HTTP, health.SSL:
		if len(c.urls) == 0 {
			return nil, errorf(n.pos(), "%s has no url block", kind)
		}
		if c.sni && kind != health.SSL {
			return nil, errorf(n.pos(), "enable_sni applies to SSL_GET only")
		}
	case health.MISC:
		if len(c.script) == 0 {
			return nil, errorf(n.pos(), "MISC_CHECK has no misc_path")
		}
	}
	return c, nil
}

func (c *checkDef) user(n *node) error {
	if len(n.args) < 1 || len(n.args) > 2 {
		return errorf(n.pos(), "user takes a user name and optionally a group")
	}
	u, err := user.Lookup(n.args[0].s)
	if err != nil {
		return errorf(n.pos(), "user %q: %v", n.args[0].s, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if len(n.args) == 2 {
		g, err := user.LookupGroup(n.args[1].s)
		if err != nil {
			return errorf(n.pos(), "group %q: %v", n.args[1].s, err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	c.uid, c.gid = uid, gid
	return nil
}

func (t *translator) url(n *node) (health.URL, error) {
	var u health.URL
	if !n.block {
		return u, errorf(n.pos(), "url needs a block")
	}
	if err := noArgs(n); err != nil {
		return u, err
	}
	for _, c := range n.children {
		if err := leaf(c); err != nil {
			return u, err
		}
		switch c.key.s {
		case "path":
			a, err := oneArg(c)
			if err != nil {
				return u, err
			}
			if a.s == "" || strings.ContainsAny(a.s, " \r\n\t") {
				return u, errorf(c.pos(), "path %q: not a request path", a.s)
			}
			u.Path = a.s
		case "digest":
			a, err := oneArg(c)
			if err != nil {
				return u, err
			}
			d := strings.ToLower(a.s)
			if len(d) != 32 || strings.Trim(d, "0123456789abcdef") != "" {
				return u, errorf(c.pos(), "digest %q: want 32 hex digits (an MD5, as genhash prints)", a.s)
			}
			if u.Digest != "" {
				return u, errorf(c.pos(), "digest given twice")
			}
			u.Digest = d
		case "status_code":
			if len(c.args) == 0 {
				return u, errorf(c.pos(), "status_code needs codes or ranges")
			}
			for _, a := range c.args {
				lo, hi, ok := strings.Cut(a.s, "-")
				if !ok {
					hi = lo
				}
				l, e1 := strconv.Atoi(lo)
				h, e2 := strconv.Atoi(hi)
				if e1 != nil || e2 != nil || l < 100 || h > 599 || l > h {
					return u, errorf(c.pos(), "status_code %q: want codes or ranges within 100-599", a.s)
				}
				u.Status = append(u.Status, health.StatusRange{Lo: l, Hi: h})
			}
		case "virtualhost":
			a, err := oneArg(c)
			if err != nil {
				return u, err
			}
			u.VirtualHost = a.s
		case "regex", "regex_no_match", "regex_options", "regex_stack", "regex_min_offset", "regex_max_offset":
			return u, errorf(c.pos(), "%s is not supported by golvs (use digest or status_code)", c.key.s)
		default:
			return u, errorf(c.pos(), "unknown keyword %q in url (path, digest, status_code, virtualhost)", c.key.s)
		}
	}
	if u.Path == "" {
		return u, errorf(n.pos(), "url has no path")
	}
	return u, nil
}
