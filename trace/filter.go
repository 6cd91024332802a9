package trace

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/golvs/golvs/ipvs"
)

// Filter selects the frames to trace. Zero fields match everything.
type Filter struct {
	Proto   uint8          `json:"proto,omitempty"`
	Client  netip.Prefix   `json:"client,omitempty"`  // client address or prefix
	Service netip.AddrPort `json:"service,omitempty"` // VIP:port
	Port    uint16         `json:"port,omitempty"`    // either port of the frame
}

// ParseFilter reads a filter: space-separated words among
//
//	tcp | udp                  protocol
//	client ADDR[/LEN]          the client's address or network
//	service VIP:PORT           a virtual service
//	port N                     either port
//
// e.g. "tcp client 198.18.0.0/24 service 198.18.0.100:80", or with IPv6
// addresses "client 2001:db8:18::/64 service [2001:db8:18::100]:80".
//
// Each word may appear once ("tcp udp" is refused, not read as udp).
func ParseFilter(s string) (Filter, error) {
	var f Filter
	w := strings.Fields(s)
	seen := map[string]string{}
	for i := 0; i < len(w); i++ {
		arg := func() (string, error) {
			if i+1 >= len(w) {
				return "", fmt.Errorf("trace: filter %q: %q needs a value", s, w[i])
			}
			i++
			return w[i], nil
		}
		word := strings.ToLower(w[i])
		kind := word
		if word == "tcp" || word == "udp" {
			kind = "protocol"
		}
		if prev, dup := seen[kind]; dup {
			return f, fmt.Errorf("trace: filter %q: %s given twice (%s, then %s): a filter matches one of each", s, kind, prev, w[i])
		}
		seen[kind] = w[i]
		switch word {
		case "tcp":
			f.Proto = ipvs.ProtoTCP
		case "udp":
			f.Proto = ipvs.ProtoUDP
		case "client":
			v, err := arg()
			if err != nil {
				return f, err
			}
			p, err := netip.ParsePrefix(v)
			if err != nil {
				a, err2 := netip.ParseAddr(v)
				if err2 != nil {
					return f, fmt.Errorf("trace: filter %q: client %q is not an IPv4 or IPv6 address or prefix", s, v)
				}
				if err := checkFamily(a); err != nil {
					return f, fmt.Errorf("trace: filter %q: client %s: %w", s, v, err)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			if err := checkFamily(p.Addr()); err != nil {
				return f, fmt.Errorf("trace: filter %q: client %s: %w", s, v, err)
			}
			f.Client = p.Masked()
		case "service":
			v, err := arg()
			if err != nil {
				return f, err
			}
			ap, err := netip.ParseAddrPort(v)
			if err != nil {
				return f, fmt.Errorf("trace: filter %q: service %q is not VIP:PORT", s, v)
			}
			if err := checkFamily(ap.Addr()); err != nil {
				return f, fmt.Errorf("trace: filter %q: service %s: %w", s, v, err)
			}
			f.Service = ap
		case "port":
			v, err := arg()
			if err != nil {
				return f, err
			}
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil || n == 0 {
				return f, fmt.Errorf("trace: filter %q: port %q is not 1..65535", s, v)
			}
			f.Port = uint16(n)
		default:
			return f, fmt.Errorf("trace: filter %q: unknown word %q (allowed: tcp, udp, client ADDR[/LEN], service VIP:PORT, port N)", s, w[i])
		}
	}
	return f, nil
}

// ErrIPv6 was the refusal of IPv6 addresses while the data path had no
// IPv6; it is kept for callers that test for it, and never returned now.
var ErrIPv6 = errors.New("trace: IPv6 is not forwarded by golvs yet, so it can never match (use an IPv4 address or prefix)")

// tracesIPv6 says whether the data path forwards (and so can trace) IPv6:
// it does, and Match6 compares 16-byte addresses.
const tracesIPv6 = true

// checkFamily refuses what no frame can carry: a zone, a v4-mapped IPv6
// address (golvs matches IPv4 flows by their IPv4 addresses).
func checkFamily(a netip.Addr) error {
	if a.Zone() != "" || a.Is4In6() {
		return fmt.Errorf("trace: %s: give an IPv4 address, or an IPv6 one without a zone (not v4-mapped)", a)
	}
	if a.Is4() || tracesIPv6 {
		return nil
	}
	return ErrIPv6
}

// String renders the filter in ParseFilter's syntax.
func (f Filter) String() string {
	var w []string
	switch f.Proto {
	case ipvs.ProtoTCP:
		w = append(w, "tcp")
	case ipvs.ProtoUDP:
		w = append(w, "udp")
	}
	if f.Client.IsValid() {
		w = append(w, "client", f.Client.String())
	}
	if f.Service.IsValid() {
		w = append(w, "service", f.Service.String())
	}
	if f.Port != 0 {
		w = append(w, "port", strconv.Itoa(int(f.Port)))
	}
	return strings.Join(w, " ")
}

// Match6 is Match for an IPv6 connection.
func (f *Filter) Match6(proto uint8, client, vip *[16]byte, cport, vport uint16) bool {
	if f.Proto != 0 && f.Proto != proto {
		return false
	}
	if f.Port != 0 && f.Port != cport && f.Port != vport {
		return false
	}
	if f.Client.IsValid() && !f.Client.Contains(netip.AddrFrom16(*client)) {
		return false
	}
	if f.Service.IsValid() && (netip.AddrFrom16(*vip) != f.Service.Addr() || vport != f.Service.Port()) {
		return false
	}
	return true
}

// Match reports whether a frame matches. It is given the connection as
// the client sees it (client -> VIP), for replies too: the data path calls
// it once the reply's connection is known.
func (f *Filter) Match(proto uint8, client, vip [4]byte, cport, vport uint16) bool {
	if f.Proto != 0 && f.Proto != proto {
		return false
	}
	if f.Port != 0 && f.Port != cport && f.Port != vport {
		return false
	}
	if f.Client.IsValid() && !f.Client.Contains(netip.AddrFrom4(client)) {
		return false
	}
	if f.Service.IsValid() && (netip.AddrFrom4(vip) != f.Service.Addr() || vport != f.Service.Port()) {
		return false
	}
	return true
}
