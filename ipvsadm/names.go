package ipvsadm

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Resolver looks up host names the way ipvsadm does with gethostbyname and
// gethostbyaddr. ipvsadm resolves host names to IPv4 only, and only the
// first address counts.
type Resolver interface {
	// LookupHost4 returns the first IPv4 address of a host name.
	LookupHost4(name string) (netip.Addr, bool)
	// LookupAddr returns the host name of an address (for listings
	// without -n).
	LookupAddr(addr netip.Addr) (string, bool)
}

// Services maps service names to ports and back for a protocol ("tcp",
// "udp", "sctp"), the way getservbyname and getservbyport read
// /etc/services.
type Services interface {
	Port(name, proto string) (uint16, bool)
	Name(port uint16, proto string) (string, bool)
}

// NetResolver is the default Resolver: the net package's lookups, bounded
// by Timeout (5 s when zero).
type NetResolver struct {
	Timeout time.Duration
}

func (r NetResolver) ctx() (context.Context, context.CancelFunc) {
	t := r.Timeout
	if t == 0 {
		t = 5 * time.Second
	}
	return context.WithTimeout(context.Background(), t)
}

// LookupHost4 implements Resolver.
func (r NetResolver) LookupHost4(name string) (netip.Addr, bool) {
	if name == "" {
		return netip.Addr{}, false
	}
	ctx, cancel := r.ctx()
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", name)
	if err != nil || len(ips) == 0 {
		return netip.Addr{}, false
	}
	return ips[0].Unmap(), true
}

// LookupAddr implements Resolver.
func (r NetResolver) LookupAddr(addr netip.Addr) (string, bool) {
	ctx, cancel := r.ctx()
	defer cancel()
	names, err := net.DefaultResolver.LookupAddr(ctx, addr.String())
	if err != nil || len(names) == 0 {
		return "", false
	}
	return strings.TrimSuffix(names[0], "."), true
}

// NoResolver resolves nothing: every lookup fails, so names print as
// numbers and only literal addresses parse.
type NoResolver struct{}

// LookupHost4 implements Resolver.
func (NoResolver) LookupHost4(string) (netip.Addr, bool) { return netip.Addr{}, false }

// LookupAddr implements Resolver.
func (NoResolver) LookupAddr(netip.Addr) (string, bool) { return "", false }

// ServiceEntry is one line of /etc/services.
type ServiceEntry struct {
	Name    string
	Port    uint16
	Proto   string
	Aliases []string
}

// ServiceDB is a parsed services file. Lookups return the first matching
// line, as the C library does.
type ServiceDB struct {
	Entries []ServiceEntry
}

// ParseServices reads the /etc/services format: "name port/proto
// [aliases...]", '#' starts a comment, malformed lines are skipped.
func ParseServices(r io.Reader) (*ServiceDB, error) {
	db := &ServiceDB{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		pp := strings.SplitN(f[1], "/", 2)
		if len(pp) != 2 {
			continue
		}
		port, err := strconv.ParseUint(pp[0], 10, 16)
		if err != nil {
			continue
		}
		db.Entries = append(db.Entries, ServiceEntry{Name: f[0], Port: uint16(port), Proto: pp[1], Aliases: f[2:]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("ipvsadm: reading services: %w", err)
	}
	return db, nil
}

// Port implements Services (getservbyname: official name or alias).
func (db *ServiceDB) Port(name, proto string) (uint16, bool) {
	if db == nil {
		return 0, false
	}
	for _, e := range db.Entries {
		if e.Proto != proto {
			continue
		}
		if e.Name == name {
			return e.Port, true
		}
		for _, a := range e.Aliases {
			if a == name {
				return e.Port, true
			}
		}
	}
	return 0, false
}

// Name implements Services (getservbyport: the official name).
func (db *ServiceDB) Name(port uint16, proto string) (string, bool) {
	if db == nil {
		return "", false
	}
	for _, e := range db.Entries {
		if e.Proto == proto && e.Port == port {
			return e.Name, true
		}
	}
	return "", false
}

// SystemServices reads /etc/services once, on first use; a missing file
// gives an empty database.
type SystemServices struct {
	Path string // "/etc/services" when empty

	once sync.Once
	db   *ServiceDB
}

func (s *SystemServices) load() *ServiceDB {
	s.once.Do(func() {
		p := s.Path
		if p == "" {
			p = "/etc/services"
		}
		f, err := os.Open(p)
		if err != nil {
			s.db = &ServiceDB{}
			return
		}
		defer f.Close()
		db, err := ParseServices(f)
		if err != nil {
			db = &ServiceDB{}
		}
		s.db = db
	})
	return s.db
}

// Port implements Services.
func (s *SystemServices) Port(name, proto string) (uint16, bool) { return s.load().Port(name, proto) }

// Name implements Services.
func (s *SystemServices) Name(port uint16, proto string) (string, bool) {
	return s.load().Name(port, proto)
}

var defaultServices = &SystemServices{}

// protoServiceName is the protocol name getservby* uses, or "" where
// ipvsadm does not look ports up (fwmark templates, unknown protocols).
func protoServiceName(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 132:
		return "sctp"
	}
	return ""
}

// inetAton parses an IPv4 address as glibc's inet_aton does: one to four
// parts separated by dots, each decimal, octal (leading 0) or hex (0x);
// the last part fills the remaining bytes; trailing whitespace and
// anything after it are ignored. So "24" is 0.0.0.24 and "10.1" is
// 10.0.0.1.
func inetAton(s string) (netip.Addr, bool) {
	var parts [4]uint32
	n := 0
	i := 0
	var val uint64
	for {
		if i >= len(s) || !isDigit(s[i]) {
			return netip.Addr{}, false
		}
		v, j, ok := strtoul0(s, i)
		if !ok || v > 0xffffffff {
			return netip.Addr{}, false
		}
		val = v
		i = j
		if i < len(s) && s[i] == '.' {
			if n > 2 || val > 0xff {
				return netip.Addr{}, false
			}
			parts[n] = uint32(val)
			n++
			i++
			continue
		}
		break
	}
	if i < len(s) && !isSpace(s[i]) {
		return netip.Addr{}, false
	}
	max := [4]uint64{0xffffffff, 0xffffff, 0xffff, 0xff}
	if val > max[n] {
		return netip.Addr{}, false
	}
	ip := uint32(val)
	for k := 0; k < n; k++ {
		ip |= parts[k] << (24 - 8*k)
	}
	return netip.AddrFrom4([4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)}), true
}

// strtoul0 is strtoul(s+i, &end, 0) for a string known to start with a
// digit at i: it returns the value, the end index and false on overflow
// of 64 bits.
func strtoul0(s string, i int) (uint64, int, bool) {
	base := uint64(10)
	if s[i] == '0' {
		base = 8
		if i+1 < len(s) && (s[i+1] == 'x' || s[i+1] == 'X') && i+2 < len(s) && isHex(s[i+2]) {
			base = 16
			i += 2
		}
	}
	var v uint64
	over := false
	for i < len(s) {
		d, ok := digitVal(s[i])
		if !ok || d >= base {
			break
		}
		if v > (1<<64-1-d)/base {
			over = true
		}
		v = v*base + d
		i++
	}
	return v, i, !over
}

func digitVal(c byte) (uint64, bool) {
	switch {
	case c >= '0' && c <= '9':
		return uint64(c - '0'), true
	case c >= 'a' && c <= 'f':
		return uint64(c-'a') + 10, true
	case c >= 'A' && c <= 'F':
		return uint64(c-'A') + 10, true
	}
	return 0, false
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isHex(c byte) bool   { _, ok := digitVal(c); return ok }
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// inetPton6 is inet_pton(AF_INET6): an IPv6 literal, no zone.
func inetPton6(s string) (netip.Addr, bool) {
	if !strings.Contains(s, ":") || strings.Contains(s, "%") {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() {
		return netip.Addr{}, false
	}
	return a, true
}

// inetNtop is inet_ntop as glibc writes it: dotted decimal for IPv4; for
// IPv6 the longest run of two or more zero words becomes "::" (the first
// such run on a tie), and ::a.b.c.d and ::ffff:a.b.c.d keep a dotted tail.
func inetNtop(a netip.Addr) string {
	if a.Is4() {
		return a.String()
	}
	if !a.Is6() {
		return "0.0.0.0"
	}
	b := a.As16()
	var w [8]uint16
	for i := range w {
		w[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
	}
	bestBase, bestLen := -1, 0
	curBase, curLen := -1, 0
	for i := 0; i < 8; i++ {
		if w[i] == 0 {
			if curBase == -1 {
				curBase, curLen = i, 1
			} else {
				curLen++
			}
		} else if curBase != -1 {
			if bestBase == -1 || curLen > bestLen {
				bestBase, bestLen = curBase, curLen
			}
			curBase = -1
		}
	}
	if curBase != -1 && (bestBase == -1 || curLen > bestLen) {
		bestBase, bestLen = curBase, curLen
	}
	if bestBase != -1 && bestLen < 2 {
		bestBase = -1
	}
	var sb strings.Builder
	for i := 0; i < 8; i++ {
		if bestBase != -1 && i >= bestBase && i < bestBase+bestLen {
			if i == bestBase {
				sb.WriteByte(':')
			}
			continue
		}
		if i != 0 {
			sb.WriteByte(':')
		}
		if i == 6 && bestBase == 0 && (bestLen == 6 || (bestLen == 5 && w[5] == 0xffff)) {
			fmt.Fprintf(&sb, "%d.%d.%d.%d", b[12], b[13], b[14], b[15])
			return sb.String()
		}
		fmt.Fprintf(&sb, "%x", w[i])
	}
	if bestBase != -1 && bestBase+bestLen == 8 {
		sb.WriteByte(':')
	}
	return sb.String()
}
