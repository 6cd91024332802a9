package ipvsadm

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/golvs/golvs/ipvs"
)

// Firewall-mark rules are a golvs extension of the grammar. IPVS reads the
// mark the kernel's packet filter set (iptables -t mangle ... -j MARK);
// AF_PACKET cannot see it, so golvs classifies packets itself. One rule
// covers the classic
//
//	iptables -t mangle -A PREROUTING -p tcp -d VIP -m multiport --dports 80,443 -j MARK --set-mark 1
//
// as
//
//	golvs adm --add-mark -f 1 --mark-proto tcp --mark-dst VIP --mark-ports 80,443
//
// Rules are listed with -S (before the services, in the same form) and
// read back by -R; --del-mark removes an identical rule; -C clears them
// with the services.

// MarkCmd is a parsed mark command.
type MarkCmd struct {
	Op   string // "add", "del" or "list"
	Rule ipvs.MarkRule
}

// IsMarkCommand reports whether args are a mark command.
func IsMarkCommand(args []string) bool {
	if len(args) == 0 {
		return false
	}
	switch args[0] {
	case "--add-mark", "--del-mark", "--list-marks":
		return true
	}
	return false
}

// ParseMark parses a mark command line.
func ParseMark(args []string) (*MarkCmd, error) {
	if !IsMarkCommand(args) {
		return nil, failf("not a mark command")
	}
	c := &MarkCmd{}
	switch args[0] {
	case "--add-mark":
		c.Op = "add"
	case "--del-mark":
		c.Op = "del"
	case "--list-marks":
		if len(args) > 1 {
			return nil, failf("unexpected argument %s", args[1])
		}
		c.Op = "list"
		return c, nil
	}
	seen := map[string]bool{}
	for i := 1; i < len(args); i++ {
		opt := args[i]
		val := ""
		if k, v, ok := strings.Cut(opt, "="); ok && strings.HasPrefix(opt, "--") {
			opt, val = k, v
		} else if i+1 < len(args) {
			i++
			val = args[i]
		} else {
			return nil, failf("%s: missing argument", opt)
		}
		if seen[opt] {
			return nil, failf("multiple '%s' options specified", strings.TrimLeft(opt, "-"))
		}
		seen[opt] = true
		switch opt {
		case "-f", "--fwmark-service":
			m, ok := parseFWMark(val)
			if !ok {
				return nil, failf("invalid fwmark value `%s' specified (allowed: 1..4294967295)", val)
			}
			c.Rule.Mark = m
		case "--mark-proto":
			switch strings.ToLower(val) {
			case "tcp":
				c.Rule.Proto = ipvs.ProtoTCP
			case "udp":
				c.Rule.Proto = ipvs.ProtoUDP
			case "all", "any":
				c.Rule.Proto = 0
			default:
				return nil, failf("invalid mark protocol `%s' (allowed: tcp, udp, all)", val)
			}
		case "--mark-dst":
			p, err := parsePrefix(val)
			if err != nil {
				return nil, failf("invalid mark destination `%s' (allowed: an IPv4 or IPv6 address or address/length)", val)
			}
			c.Rule.Dst = p
		case "--mark-ports":
			pr, err := ParsePortRanges(val)
			if err != nil {
				return nil, failf("invalid mark ports `%s': %v", val, err)
			}
			c.Rule.Ports = pr
		default:
			return nil, failf("%s: unknown option for %s", opt, args[0])
		}
	}
	if c.Rule.Mark == 0 {
		return nil, failf("You need to supply the 'fwmark-service' option for the '%s' command", strings.TrimPrefix(args[0], "--"))
	}
	if !c.Rule.Dst.IsValid() {
		return nil, failf("You need to supply the 'mark-dst' option for the '%s' command", strings.TrimPrefix(args[0], "--"))
	}
	if len(c.Rule.Ports) > 0 && c.Rule.Proto == 0 {
		return nil, failf("--mark-ports needs --mark-proto tcp or udp")
	}
	return c, nil
}

// parsePrefix reads a mark rule's destination: an IPv4 or IPv6 address or
// address/length (an IPv6 rule feeds an IPv6 fwmark service, -f MARK -6).
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Is4In6() {
			return netip.Prefix{}, fmt.Errorf("bad prefix")
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Is4In6() || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("bad address")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParsePortRanges reads "80,443,8000-8100".
func ParsePortRanges(s string) ([]ipvs.PortRange, error) {
	var out []ipvs.PortRange
	for _, f := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(f, "-")
		a, err1 := strconv.ParseUint(lo, 10, 16)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.ParseUint(hi, 10, 16)
		}
		if err1 != nil || err2 != nil || a == 0 || b < a {
			return nil, fmt.Errorf("%q is not a port or a range lo-hi within 1..65535", f)
		}
		out = append(out, ipvs.PortRange{Lo: uint16(a), Hi: uint16(b)})
	}
	if len(out) > 15 {
		return nil, fmt.Errorf("at most 15 ports or ranges per rule (as iptables' multiport)")
	}
	return out, nil
}

// FormatMark writes a rule as the command that adds it (the -S form).
func FormatMark(r ipvs.MarkRule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "--add-mark -f %d", r.Mark)
	switch r.Proto {
	case ipvs.ProtoTCP:
		b.WriteString(" --mark-proto tcp")
	case ipvs.ProtoUDP:
		b.WriteString(" --mark-proto udp")
	}
	fmt.Fprintf(&b, " --mark-dst %s", r.Dst)
	if len(r.Ports) > 0 {
		var ps []string
		for _, p := range r.Ports {
			if p.Lo == p.Hi {
				ps = append(ps, strconv.Itoa(int(p.Lo)))
			} else {
				ps = append(ps, fmt.Sprintf("%d-%d", p.Lo, p.Hi))
			}
		}
		b.WriteString(" --mark-ports " + strings.Join(ps, ","))
	}
	return b.String()
}

// ApplyMark adds or deletes a rule in a rule list, returning the new list.
func ApplyMark(rules []ipvs.MarkRule, c *MarkCmd) ([]ipvs.MarkRule, error) {
	i := slices.IndexFunc(rules, func(r ipvs.MarkRule) bool { return r.Equal(c.Rule) })
	switch c.Op {
	case "add":
		if i >= 0 {
			return nil, &Error{Status: StatusKernel, Msg: "Mark rule already exists", Err: ipvs.ErrServiceExists}
		}
		return append(slices.Clone(rules), c.Rule), nil
	case "del":
		if i < 0 {
			return nil, &Error{Status: StatusKernel, Msg: "No such mark rule", Err: ipvs.ErrNoService}
		}
		return slices.Delete(slices.Clone(rules), i, i+1), nil
	}
	return rules, nil
}
