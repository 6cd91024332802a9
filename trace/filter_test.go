package trace

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/golvs/golvs/ipvs"
)

// TestMatch6: an IPv6 filter matches IPv6 connections by prefix and
// service, and never an IPv4 one (nor the reverse).
func TestMatch6(t *testing.T) {
	f, err := ParseFilter("tcp client 2001:db8:18::/64 service [2001:db8:18::100]:80")
	if err != nil {
		t.Fatal(err)
	}
	c, v := netip.MustParseAddr("2001:db8:18::10").As16(), netip.MustParseAddr("2001:db8:18::100").As16()
	other := netip.MustParseAddr("2001:db8:19::10").As16()
	if !f.Match6(6, &c, &v, 40000, 80) || f.Match6(6, &other, &v, 40000, 80) || f.Match6(17, &c, &v, 40000, 80) || f.Match6(6, &c, &v, 40000, 81) {
		t.Fatalf("IPv6 matching wrong")
	}
	if f.Match(6, [4]byte{198, 18, 0, 10}, [4]byte{198, 18, 0, 100}, 40000, 80) {
		t.Fatalf("an IPv6 filter matched an IPv4 connection")
	}
	f4, _ := ParseFilter("client 198.18.0.0/24")
	if f4.Match6(6, &c, &v, 1, 80) {
		t.Fatalf("an IPv4 filter matched an IPv6 connection")
	}
}

func TestParseFilter(t *testing.T) {
	good := []struct {
		in   string
		want Filter
		str  string
	}{
		{"", Filter{}, ""},
		{"tcp", Filter{Proto: ipvs.ProtoTCP}, "tcp"},
		{"UDP port 53", Filter{Proto: ipvs.ProtoUDP, Port: 53}, "udp port 53"},
		{"client 198.18.0.10", Filter{Client: netip.MustParsePrefix("198.18.0.10/32")}, "client 198.18.0.10/32"},
		{"client 198.18.0.77/24 tcp", Filter{Proto: ipvs.ProtoTCP, Client: netip.MustParsePrefix("198.18.0.0/24")}, "tcp client 198.18.0.0/24"},
		{"service 198.18.0.100:80", Filter{Service: netip.MustParseAddrPort("198.18.0.100:80")}, "service 198.18.0.100:80"},
		{"client 2001:db8:18::/64", Filter{Client: netip.MustParsePrefix("2001:db8:18::/64")}, "client 2001:db8:18::/64"},
		{"client 2001:db8:18::10", Filter{Client: netip.MustParsePrefix("2001:db8:18::10/128")}, "client 2001:db8:18::10/128"},
		{"tcp service [2001:db8:18::100]:80", Filter{Proto: ipvs.ProtoTCP, Service: netip.MustParseAddrPort("[2001:db8:18::100]:80")}, "tcp service [2001:db8:18::100]:80"},
	}
	for _, c := range good {
		f, err := ParseFilter(c.in)
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		if f != c.want || f.String() != c.str {
			t.Fatalf("%q: got %+v (%q), want %+v (%q)", c.in, f, f.String(), c.want, c.str)
		}
	}
	bad := []struct {
		in, want string
		is       error
	}{
		{"client ::ffff:198.18.0.10", "not v4-mapped", nil},
		{"client fe80::1%eth0", "without a zone", nil},
		{"service [::ffff:198.18.0.100]:80", "not v4-mapped", nil},
		{"tcp udp", "protocol given twice (tcp, then udp)", nil},
		{"udp udp", "protocol given twice", nil},
		{"client 198.18.0.1 client 198.18.0.2", "client given twice", nil},
		{"port 80 port 81", "port given twice", nil},
		{"service 198.18.0.100:80 service 198.18.0.100:81", "service given twice", nil},
		{"client", `"client" needs a value`, nil},
		{"client 198.18.0.300", "is not an IPv4 or IPv6 address or prefix", nil},
		{"port 0", "is not 1..65535", nil},
		{"sctp", "unknown word", nil},
	}
	for _, c := range bad {
		_, err := ParseFilter(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) || c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("%q: %v, want an error with %q", c.in, err, c.want)
		}
	}
}

// The filter's own words parse back to the same filter.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"tcp client 198.18.0.0/24 service 198.18.0.100:80 port 80", "udp", "client 2001:db8::/32", "tcp udp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseFilter(s)
		if err != nil {
			return
		}
		if p.Client.IsValid() && (p.Client.Addr().Is4In6() || p.Client.Addr().Zone() != "") || p.Service.IsValid() && (p.Service.Addr().Is4In6() || p.Service.Addr().Zone() != "") {
			t.Fatalf("%q: accepted an address that can never match: %+v", s, p)
		}
		q, err := ParseFilter(p.String())
		if err != nil || q != p {
			t.Fatalf("%q -> %q -> %+v, %v", s, p.String(), q, err)
		}
	})
}
