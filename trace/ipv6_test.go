package trace

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

var (
	cip6   = net.ParseIP("2001:db8:18::10")
	vip6   = net.ParseIP("2001:db8:18::100")
	natRS6 = net.ParseIP("2001:db8:19::11")
	dip6   = net.ParseIP("2001:db8:19::1")
	tunRS6 = net.ParseIP("2001:db8:19:1::11")
)

// syn6 is an IPv6 TCP SYN built by gopacket (checksums computed there,
// independently of golvs), with an 8-byte destination-options header
// when opts, inside an outer IPv6 header (ip6ip6) when outer is set, and
// with TOA's IPv6 form when toa is set.
func syn6(t *testing.T, src, dst net.IP, hop uint8, opts bool, outer [2]net.IP, toa bool) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: macClient, DstMAC: macExt0, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: hop, NextHeader: layers.IPProtocolTCP, SrcIP: src, DstIP: dst}
	tcp := &layers.TCP{SrcPort: cport, DstPort: 80, Seq: 1000, SYN: true, Window: 64240,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xa0}}}}
	if toa {
		d := make([]byte, 18)
		binary.BigEndian.PutUint16(d, cport)
		copy(d[2:], cip6)
		tcp.Options = append([]layers.TCPOption{{OptionType: TOA6Kind, OptionLength: TOA6Len, OptionData: d}}, tcp.Options...)
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	ls := []gopacket.SerializableLayer{eth}
	if outer[0] != nil {
		ls = append(ls, &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolIPv6, SrcIP: outer[0], DstIP: outer[1]})
	}
	ls = append(ls, ip)
	if opts {
		ip.NextHeader = layers.IPProtocolIPv6Destination
		do := &layers.IPv6Destination{}
		do.NextHeader = layers.IPProtocolTCP
		do.Options = []*layers.IPv6DestinationOption{{OptionType: 1, OptionLength: 4, OptionData: make([]byte, 4)}}
		ls = append(ls, do)
	}
	ls = append(ls, tcp)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestFormatIPv6: traces show IPv6 headers, the extension-header walk the
// director made, hop-limit changes, checksums verified, an ip6ip6
// tunnel's outer header and TOA's IPv6 form.
func TestFormatIPv6(t *testing.T) {
	f := &Formatter{}
	cases := []struct {
		name          string
		before, after []byte
		method        string
		want          []string
	}{
		{
			name:   "nat with destination options",
			before: syn6(t, cip6, vip6, 64, true, [2]net.IP{}, false),
			after:  syn6(t, cip6, natRS6, 63, true, [2]net.IP{}, false),
			method: "Masq",
			want: []string{
				"request TCP [2001:db8:18::10]:40000 > [2001:db8:18::100]:80",
				"ip6       2001:db8:18::10 > 2001:db8:18::100 next 60 hlim 64 plen 32",
				"ip6-ext   destination-options(8) > proto 6",
				"ip6       2001:db8:18::10 > *2001:db8:19::11 next 60 hlim *63 plen 32",
				"csum *", // the rewritten checksum, verified ok below
			},
		},
		{
			name:   "tunnel ip6ip6",
			before: syn6(t, cip6, vip6, 64, false, [2]net.IP{}, false),
			after:  syn6(t, cip6, vip6, 64, false, [2]net.IP{dip6, tunRS6}, false),
			method: "Tunnel",
			want:   []string{"+ outer-ip6 2001:db8:19::1 > 2001:db8:19:1::11 next 41 hlim 64 plen 64"},
		},
		{
			name:   "fullnat toa6",
			before: syn6(t, cip6, vip6, 64, false, [2]net.IP{}, false),
			after:  syn6(t, net.ParseIP("2001:db8:19::200"), natRS6, 63, false, [2]net.IP{}, true),
			method: "FullNat",
			want:   []string{"+ toa       kind 253 len 20 client [2001:db8:18::10]:40000", "opts *<toa6,mss 1440>"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := &Event{Seq: 1, Time: t0, InIf: "ext0", OutIf: "int0", Dir: "request", Method: c.method, Lookup: "miss", Verdict: "forwarded"}
			e.SetBefore(c.before)
			e.SetAfter(c.after)
			var b strings.Builder
			if err := f.WriteText(&b, e); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("missing %q in:\n%s", w, out)
				}
			}
			if strings.Contains(out, " bad") || strings.Contains(out, "decode") {
				t.Errorf("a checksum reads bad, or a header did not decode:\n%s", out)
			}
			if strings.Count(out, " ok") < 2 {
				t.Errorf("checksums not verified:\n%s", out)
			}
			j := JSON(e)
			if j.BeforeHeaders.IP6 == nil || j.AfterHeaders.IP6 == nil {
				t.Fatalf("JSON has no IPv6 headers: %+v", j)
			}
		})
	}
	// The client filter matches the IPv6 flow.
	fl, err := ParseFilter("tcp client 2001:db8:18::/64 service [2001:db8:18::100]:80")
	if err != nil {
		t.Fatal(err)
	}
	c, v := netip.AddrFrom16([16]byte(cip6.To16())), netip.AddrFrom16([16]byte(vip6.To16()))
	a, b := c.As16(), v.As16()
	if !fl.Match6(6, &a, &b, cport, 80) {
		t.Fatalf("filter %s does not match the flow", fl)
	}
}
