package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// Semantics is the kernel behaviour a director reproduces where IPVS
// changed in the 2026 stable kernels (spec §1.0). It is a property of the
// whole director, like a kernel version: chosen at start, carried by
// every Dest (overhead and OVERLOAD rules) and scheduler (lblc/lblcr
// cache rules), never changed while running. The zero value is Current.
type Semantics uint8

const (
	// Current is Linux 6.1.191 and later in the 6.1 series and mainline
	// 7.3; 6.18.45+ and mainline 7.2 have its overhead and threshold
	// rules (their lblc/lblcr rules came in 6.1.191 and 7.3-rc;
	// 6.18.y unverified): overhead = (active << 8) + total, i.e. 257 per active
	// conn; OVERLOAD edge-triggered at total == u, cleared through
	// l_val, re-evaluated only when -x/-y change, never by templates;
	// u_threshold above 2^31-1 refused; lblc/lblcr caches stop adding
	// entries at 24576; the lblc entry counter is exact.
	Current Semantics = iota
	// Classic is Linux before 6.1.183 (and every series before its 2026
	// stable updates), the formulas of the LVS tutorials: overhead =
	// active*256 + inactive; OVERLOAD checked on every bind and unbind,
	// templates included, edits only clear it; lblc/lblcr caches
	// unbounded; the lblc entry counter counts replaced entries twice.
	Classic
)

// SemanticsNames are the names ParseSemantics accepts, in value order.
var SemanticsNames = []string{"current", "classic"}

// String returns "current" or "classic".
func (s Semantics) String() string {
	if int(s) < len(SemanticsNames) {
		return SemanticsNames[s]
	}
	return fmt.Sprintf("Semantics(%d)", uint8(s))
}

// Kernels says which kernels the semantics reproduces, for status output.
func (s Semantics) Kernels() string {
	switch s {
	case Current:
		return "Linux 6.1.191+, 7.3+; overhead and -x/-y as in 6.18.45+, 7.2+"
	case Classic:
		return "Linux before 6.1.183 (overhead active*256 + inactive)"
	}
	return "unknown"
}

// ErrSemantics is matched by ParseSemantics's errors.
var ErrSemantics = errors.New("ipvs: unknown semantics")

// ParseSemantics reads "current" or "classic".
func ParseSemantics(name string) (Semantics, error) {
	for i, n := range SemanticsNames {
		if n == name {
			return Semantics(i), nil
		}
	}
	return 0, fmt.Errorf("%w %q (allowed: current, classic)", ErrSemantics, name)
}

// MarshalText implements encoding.TextMarshaler.
func (s Semantics) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Semantics) UnmarshalText(b []byte) error {
	v, err := ParseSemantics(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Set implements flag.Value.
func (s *Semantics) Set(v string) error { return s.UnmarshalText([]byte(v)) }

// CheckDestThresholds is the kernel's check of a dest's thresholds on
// add and edit (ip_vs_add_dest, ip_vs_edit_dest), after the weight check:
// l > u is ERANGE in both semantics (also when u is too large); current
// kernels then refuse u above 2^31-1 with EINVAL, which classic ones
// accept. ipvsadm cannot send such a u (it refuses it itself); only a
// caller of the API can.
func (s Semantics) CheckDestThresholds(upper, lower uint32) error {
	if lower > upper {
		return &ValueError{"Numerical result out of range", fmt.Sprintf("lower threshold %d above upper threshold %d", lower, upper), "lower <= upper (an upper threshold of 0 allows no lower threshold)"}
	}
	if s == Current && upper > MaxThreshold {
		return &ValueError{EINVALText, fmt.Sprintf("upper threshold %d", upper), fmt.Sprintf("0..%d (current kernels; classic ones accept up to %d)", MaxThreshold, uint32(1<<32-1))}
	}
	return nil
}

// EINVALText is ipvsadm's words for the kernel's EINVAL (ipvs_strerror;
// two spaces after the first full stop).
const EINVALText = "Invalid operation.  Possibly wrong module version, address not unicast, ..."

// CheckDestAddr is the kernel's check of a new dest's address
// (ip_vs_new_dest, spec §6.8). IPv4: inet_addr_type must be unicast or
// local, so 0.0.0.0/8, 255.255.255.255 and multicast are refused. IPv6:
// an address whose ipv6_addr_type lacks the unicast bit (::, multicast,
// v4-mapped ::ffff:0:0/96) or is link-local (fe80::/10) is refused unless
// the host owns it (the kernel's route lookup ends on the loopback
// device); hostOwns nil owns nothing. The refusal is EINVAL.
func CheckDestAddr(a netip.Addr, hostOwns func(netip.Addr) bool) error {
	why := ""
	if a.Is4() {
		if b := a.As4(); b[0] == 0 || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			why = "not unicast"
		}
	} else {
		b := a.As16()
		switch {
		case a.WithZone("").IsUnspecified(), b[0] == 0xff: // ::, multicast (not netip's IsMulticast, which unmaps)
			why = "not unicast"
		case a.Is4In6():
			why = "v4-mapped (::ffff:0:0/96): not unicast in IPv6"
		case b[0] == 0xfe && b[1]&0xc0 == 0x80:
			why = "link-local (fe80::/10) and not an address of this host"
		}
		if why != "" && hostOwns != nil && hostOwns(a.WithZone("")) {
			why = ""
		}
	}
	if why != "" {
		return &ValueError{EINVALText, fmt.Sprintf("real server address %s is %s", inetNtop(a), why), "a unicast address"}
	}
	return nil
}

// HostOwns reports whether an interface of this host (in the caller's
// network namespace) has address a, the zone ignored: the kernel's
// "is local" for a dest address.
func HostOwns(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	a = a.WithZone("")
	for _, x := range addrs {
		p, ok := x.(*net.IPNet)
		if !ok {
			continue
		}
		ip := p.IP
		if v4 := ip.To4(); v4 != nil {
			ip = v4 // an IPv4 address; never equal to a v4-mapped IPv6 one
		}
		if b, ok := netip.AddrFromSlice(ip); ok && b == a {
			return true
		}
	}
	return false
}

// inetNtop is a's text without the zone, v4-mapped IPv6 in its IPv6 form.
func inetNtop(a netip.Addr) string { return a.WithZone("").String() }
