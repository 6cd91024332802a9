package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Errors.
var (
	ErrBadASN      = errors.New("bgp: bad AS number")
	ErrBadRouterID = errors.New("bgp: bad router id")
	ErrBadPeer     = errors.New("bgp: bad peer")
	ErrBadConfig   = errors.New("bgp: bad configuration")
)

// Reserved AS numbers that must not be configured as a speaker's or a
// peer's own: 0 (RFC 7607), AS_TRANS 23456 (RFC 6793: a placeholder on
// 2-octet sessions, never an AS), and the last 2- and 4-octet numbers
// 65535 and 4294967295 (RFC 7300).
var reservedASN = map[uint64]string{
	0:          "AS 0 is reserved (RFC 7607)",
	23456:      "AS 23456 is AS_TRANS, a placeholder for 4-octet AS numbers on old sessions (RFC 6793)",
	65535:      "AS 65535 is reserved (RFC 7300)",
	4294967295: "AS 4294967295 is reserved (RFC 7300)",
}

// ParseASN reads an AS number in asplain (65001, 4200000001) or asdot
// (1.10 = 65546) notation, refusing the reserved ones.
func ParseASN(s string) (uint32, error) {
	var v uint64
	hi, lo, dot := strings.Cut(s, ".")
	if dot {
		h, err1 := strconv.ParseUint(hi, 10, 16)
		l, err2 := strconv.ParseUint(lo, 10, 16)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("%w %q: asdot is HIGH.LOW, each 0..65535", ErrBadASN, s)
		}
		v = h<<16 | l
	} else {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w %q: not a number (1..4294967294, or asdot HIGH.LOW)", ErrBadASN, s)
		}
		if n > 4294967295 {
			return 0, fmt.Errorf("%w %q: out of range (1..4294967294)", ErrBadASN, s)
		}
		v = n
	}
	if why, ok := reservedASN[v]; ok {
		return 0, fmt.Errorf("%w %q: %s", ErrBadASN, s, why)
	}
	return uint32(v), nil
}

// ParseRouterID reads a BGP identifier: an IPv4 address other than
// 0.0.0.0 (RFC 6286 requires a non-zero one), the limited broadcast or a
// multicast address (which no router would carry as its own).
func ParseRouterID(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("%w %q: a router id is written as an IPv4 address (e.g. 198.18.0.1)", ErrBadRouterID, s)
	}
	switch {
	case a.IsUnspecified():
		return netip.Addr{}, fmt.Errorf("%w %q: must not be 0.0.0.0 (RFC 6286)", ErrBadRouterID, s)
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || a.IsMulticast():
		return netip.Addr{}, fmt.Errorf("%w %q: a broadcast or multicast address is no identifier", ErrBadRouterID, s)
	}
	return a, nil
}

// Peer is one BGP neighbour.
type Peer struct {
	Addr netip.Addr
	// ASN is the peer's AS number; 0 in a parsed --bgp-peer means the
	// speaker's own (iBGP), filled in by Config.Validate.
	ASN uint32
	// Port is the peer's TCP port (0: 179). Tests use others; the
	// command line does not set it.
	Port uint16
}

// External reports whether the session is eBGP.
func (p Peer) External(local uint32) bool { return p.ASN != local }

// ParsePeer reads --bgp-peer: ADDR or ADDR:ASN, an IPv6 address in
// brackets when it has an ASN ([2001:db8::1]:65000).
func ParsePeer(s string) (Peer, error) {
	addr, asn := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 {
			return Peer{}, fmt.Errorf("%w %q: no closing ]", ErrBadPeer, s)
		}
		addr, asn = s[1:end], s[end+1:]
		if asn != "" {
			if !strings.HasPrefix(asn, ":") {
				return Peer{}, fmt.Errorf("%w %q: ]:ASN expected after the address", ErrBadPeer, s)
			}
			asn = asn[1:]
			if asn == "" {
				return Peer{}, fmt.Errorf("%w %q: empty AS number after :", ErrBadPeer, s)
			}
		}
	case strings.Count(s, ":") == 1:
		addr, asn, _ = strings.Cut(s, ":")
		if asn == "" {
			return Peer{}, fmt.Errorf("%w %q: empty AS number after :", ErrBadPeer, s)
		}
	}
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" {
		return Peer{}, fmt.Errorf("%w %q: %q is not an IP address (ADDR or ADDR:ASN; [IPv6]:ASN)", ErrBadPeer, s, addr)
	}
	a = a.Unmap()
	if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return Peer{}, fmt.Errorf("%w %q: %s cannot be a neighbour", ErrBadPeer, s, a)
	}
	p := Peer{Addr: a}
	if asn != "" {
		if p.ASN, err = ParseASN(asn); err != nil {
			return Peer{}, fmt.Errorf("%w %q: %v", ErrBadPeer, s, err)
		}
	}
	return p, nil
}

// String is ADDR:ASN as --bgp-peer takes it.
func (p Peer) String() string {
	if p.Addr.Is6() {
		return fmt.Sprintf("[%s]:%d", p.Addr, p.ASN)
	}
	return fmt.Sprintf("%s:%d", p.Addr, p.ASN)
}

// Config is the speaker's configuration (golvs run --bgp-*).
type Config struct {
	ASN      uint32
	RouterID netip.Addr
	Peers    []Peer
	// HoldTime is proposed to every peer (RFC 4271: 0, or 3 s and more;
	// the session uses the smaller of both sides'); keepalives go at a
	// third of it. Default 9 s: a director that dies without closing
	// its sessions is routed around within it.
	HoldTime time.Duration
	// ConnectRetry is how often an unreachable or refusing peer is
	// tried again (jittered up to twice that). Default 5 s.
	ConnectRetry time.Duration
	// ShutdownWait is how long the routes carry the GRACEFUL_SHUTDOWN
	// community before they are withdrawn at shutdown (RFC 8326), so
	// routers move traffic away first. Default 2 s.
	ShutdownWait time.Duration
	// Drain is how long the data path keeps forwarding after the
	// withdrawal, for packets routers still send while they converge.
	// Default 2 s.
	Drain time.Duration
	// GracefulRestart, when set, is the restart time golvs advertises in
	// the Graceful Restart capability (RFC 4724, 1 s..4095 s): a graceful
	// restart of golvs (--takeover, SIGUSR2) then ends its sessions with
	// no NOTIFICATION and routers keep its routes, for up to this long,
	// until the new process has announced them again, instead of the
	// withdrawal and re-announcement without it. The cost: routers keep
	// the routes of a director that crashed for as long too (its
	// sessions end without NOTIFICATION as well). 0: off.
	GracefulRestart time.Duration
	// Restarting marks the speaker of a process that takes over (the
	// Restart State bit): GoBGP sends its routes once each router has
	// sent its End-of-RIB.
	Restarting bool
	// Logf receives every log line (nil: none).
	Logf func(format string, args ...any)
}

// Defaults.
const (
	DefaultHoldTime     = 9 * time.Second
	DefaultConnectRetry = 5 * time.Second
	DefaultShutdownWait = 2 * time.Second
	DefaultDrain        = 2 * time.Second
	// MaxPeers bounds the sessions one director holds.
	MaxPeers = 64
	// MaxRestartTime is the largest Graceful Restart time (12 bits).
	MaxRestartTime = 4095 * time.Second
)

// Validate checks the configuration and fills defaults: the errors name
// the flag at fault, so a misconfigured speaker never starts.
func (c *Config) Validate() error {
	if c.ASN == 0 {
		return fmt.Errorf("%w: --bgp-asn is missing (the director's AS number)", ErrBadConfig)
	}
	if _, ok := reservedASN[uint64(c.ASN)]; ok {
		return fmt.Errorf("%w: --bgp-asn %d: %s", ErrBadASN, c.ASN, reservedASN[uint64(c.ASN)])
	}
	if !c.RouterID.IsValid() {
		return fmt.Errorf("%w: --bgp-router-id is missing (an IPv4 address unique among the routers, usually the director's own)", ErrBadConfig)
	}
	if _, err := ParseRouterID(c.RouterID.String()); err != nil {
		return err
	}
	if len(c.Peers) == 0 {
		return fmt.Errorf("%w: no --bgp-peer given", ErrBadConfig)
	}
	if len(c.Peers) > MaxPeers {
		return fmt.Errorf("%w: %d peers, at most %d", ErrBadConfig, len(c.Peers), MaxPeers)
	}
	seen := map[netip.Addr]bool{}
	for i := range c.Peers {
		p := &c.Peers[i]
		if seen[p.Addr] {
			return fmt.Errorf("%w: --bgp-peer %s given twice", ErrBadPeer, p.Addr)
		}
		seen[p.Addr] = true
		if p.ASN == 0 {
			p.ASN = c.ASN
		}
		if p.Addr == c.RouterID && !p.External(c.ASN) {
			return fmt.Errorf("%w: --bgp-peer %s is the director's own router id in its own AS", ErrBadPeer, p.Addr)
		}
	}
	if c.HoldTime == 0 {
		c.HoldTime = DefaultHoldTime
	}
	if c.HoldTime < 3*time.Second || c.HoldTime > 65535*time.Second || c.HoldTime%time.Second != 0 {
		return fmt.Errorf("%w: --bgp-hold-time %v: whole seconds, 3s..65535s (RFC 4271)", ErrBadConfig, c.HoldTime)
	}
	if c.ConnectRetry == 0 {
		c.ConnectRetry = DefaultConnectRetry
	}
	if c.ConnectRetry < time.Second || c.ConnectRetry > time.Hour || c.ConnectRetry%time.Second != 0 {
		return fmt.Errorf("%w: connect retry %v: whole seconds, 1s..1h", ErrBadConfig, c.ConnectRetry)
	}
	if c.ShutdownWait < 0 || c.ShutdownWait > 10*time.Minute {
		return fmt.Errorf("%w: --bgp-shutdown-wait %v out of range (0..10m)", ErrBadConfig, c.ShutdownWait)
	}
	if c.Drain < 0 || c.Drain > 10*time.Minute {
		return fmt.Errorf("%w: --bgp-drain %v out of range (0..10m)", ErrBadConfig, c.Drain)
	}
	if c.GracefulRestart != 0 && (c.GracefulRestart < time.Second || c.GracefulRestart > MaxRestartTime || c.GracefulRestart%time.Second != 0) {
		return fmt.Errorf("%w: --bgp-graceful-restart %v: 0 (off) or whole seconds, 1s..4095s (RFC 4724's restart time)", ErrBadConfig, c.GracefulRestart)
	}
	return nil
}
