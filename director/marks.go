package director

import (
	"net/netip"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
)

// compileMarks compiles the rules with IPv4 destinations (compileMarks6
// the others).
func compileMarks(rules []ipvs.MarkRule) []markRule {
	out := make([]markRule, 0, len(rules))
	for _, r := range rules {
		if !r.Dst.Addr().Is4() {
			continue
		}
		bits := r.Dst.Bits()
		mask := uint32(0)
		if bits > 0 {
			mask = ^uint32(0) << (32 - bits)
		}
		out = append(out, markRule{mark: r.Mark, proto: r.Proto, net: be32(r.Dst.Addr().As4()) & mask, mask: mask, ports: r.Ports})
	}
	return out
}

// markMatches are the filter entries for mark rules: their destinations,
// with their ports when the rule lists a few.
func markMatches(rules []ipvs.MarkRule) []netio.Match {
	var m []netio.Match
	for _, r := range rules {
		if r.Dst.Bits() == 0 {
			// A Match with no prefix length is one address: cover every
			// address with its two halves.
			halves := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")}
			if r.Dst.Addr().Is6() {
				halves = []netip.Prefix{netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1")}
			}
			for _, half := range halves {
				r2 := r
				r2.Dst = half
				m = append(m, markMatches([]ipvs.MarkRule{r2})...)
			}
			continue
		}
		base := addrMatch(r.Proto, r.Dst.Addr(), 0)
		base.Bits = uint8(r.Dst.Bits())
		single := true
		for _, p := range r.Ports {
			if p.Lo != p.Hi {
				single = false
			}
		}
		if len(r.Ports) == 0 || !single {
			m = append(m, base)
			continue
		}
		for _, p := range r.Ports {
			x := base
			x.Port = p.Lo
			m = append(m, x)
		}
	}
	return m
}
