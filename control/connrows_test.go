package control

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
)

// Rows written by appendConnRow read back as the same conns.
func TestConnRowsRoundTrip(t *testing.T) {
	in := []ipvsadm.Conn{
		{Proto: 6, State: "ESTABLISHED", Expires: 899, Client: netip.MustParseAddrPort("198.18.0.10:40000"), Virtual: netip.MustParseAddrPort("198.18.0.100:80"), Dest: netip.MustParseAddrPort("198.19.0.11:80")},
		{Proto: 17, State: "UDP", Expires: 0, Client: netip.MustParseAddrPort("198.18.0.11:53"), Virtual: netip.MustParseAddrPort("198.18.0.100:53"), Dest: netip.MustParseAddrPort("198.19.0.12:53")},
		{Proto: 0, State: "NONE", Expires: 360, Client: netip.MustParseAddrPort("198.18.0.0:0"), Virtual: netip.MustParseAddrPort("0.0.0.1:0"), Dest: netip.MustParseAddrPort("198.19.0.11:0"), PEName: "sip", PEData: "abc"},
	}
	var b []byte
	for i := range in {
		b = appendConnRow(b, &in[i])
	}
	want := "6 ESTABLISHED 899 198.18.0.10:40000 198.18.0.100:80 198.19.0.11:80\n"
	if !bytes.HasPrefix(b, []byte(want)) {
		t.Fatalf("first row %q, want %q", b[:len(want)], want)
	}
	out, err := parseConnRows(string(b), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("%d conns back, want %d", len(out), len(in))
	}
	for i := range in {
		if out[i] != in[i] {
			t.Fatalf("conn %d: %+v, want %+v", i, out[i], in[i])
		}
	}
	for _, bad := range []string{"6 ESTABLISHED 1 a b c\n", "6 X\n", "300 S 1 1.2.3.4:1 1.2.3.4:1 1.2.3.4:1\n"} {
		if _, err := parseConnRows(bad, nil); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// Whatever the daemon sends, the client either refuses it or reads conns
// that write back to rows reading the same.
func FuzzConnRows(f *testing.F) {
	f.Add("6 ESTABLISHED 899 198.18.0.10:40000 198.18.0.100:80 198.19.0.11:80\n")
	f.Add("17 UDP 3 198.18.0.10:1 198.18.0.100:53 198.19.0.11:53 sip x\n")
	f.Fuzz(func(t *testing.T, s string) {
		out, err := parseConnRows(s, nil)
		if err != nil {
			return
		}
		var b []byte
		for i := range out {
			b = appendConnRow(b, &out[i])
		}
		again, err := parseConnRows(string(b), nil)
		if err != nil || len(again) != len(out) {
			t.Fatalf("%q -> %q: %v", s, b, err)
		}
		for i := range out {
			if again[i] != out[i] {
				t.Fatalf("%+v came back as %+v", out[i], again[i])
			}
		}
	})
}

// A record crosses the takeover's wire unchanged, and any 88 bytes decode
// to a record that encodes back to the same bytes (padding aside).
func FuzzTakeoverRecord(f *testing.F) {
	r := conntrack.Record{
		In:     conntrack.Key{SrcIP: [4]byte{198, 18, 0, 10}, DstIP: [4]byte{198, 18, 0, 100}, SrcPort: 40000, DstPort: 80, Proto: 6},
		Out:    conntrack.Key{SrcIP: [4]byte{198, 19, 0, 11}, DstIP: [4]byte{198, 18, 0, 10}, SrcPort: 80, DstPort: 40000, Proto: 6},
		Tpl:    conntrack.Key{SrcIP: [4]byte{198, 18, 0, 0}, DstIP: [4]byte{198, 18, 0, 100}, DstPort: 80, Proto: 6, Kind: conntrack.KindTemplate},
		Method: ipvs.MethodFullNAT, State: conntrack.TCPEstablished, Flags: conntrack.FlagNoOutput,
		ClientIf: 3, ClientMAC: [6]byte{2, 0, 0, 0, 0, 0x0c}, Aux: 1 << 40, Timeout: 900, Expires: 899_500_000_000,
	}
	b := appendRecord(nil, &r, 7)
	if len(b) != recSize {
		f.Fatalf("record is %d bytes", len(b))
	}
	back, di := decodeRecord(b)
	if back != r || di != 7 {
		f.Fatalf("round trip: %+v (dest %d), want %+v (dest 7)", back, di, r)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, x []byte) {
		if len(x) != recSize {
			return
		}
		r, di := decodeRecord(x)
		y := appendRecord(nil, &r, di)
		for i := range x {
			pad := i == 14 || i == 15 || i == 30 || i == 31 || i == 46 || i == 47 || i == 54 || i == 55 || i == 70 || i == 71
			if !pad && x[i] != y[i] {
				t.Fatalf("byte %d: %#x came back as %#x", i, x[i], y[i])
			}
		}
	})
}

// An IPv6 record carries its full addresses and its template's across
// the wire.
func TestTakeoverRecord6(t *testing.T) {
	a := func(s string) [16]byte { return netip.MustParseAddr(s).As16() }
	r := conntrack.Record{
		In:     conntrack.Key{SrcIP: [4]byte{1, 2, 3, 4}, DstIP: [4]byte{5, 6, 7, 8}, SrcPort: 40000, DstPort: 80, Proto: 6, Kind: conntrack.KindV6},
		Out:    conntrack.Key{SrcIP: [4]byte{9, 9, 9, 9}, DstIP: [4]byte{1, 2, 3, 4}, SrcPort: 8080, DstPort: 40000, Proto: 6, Kind: conntrack.KindV6},
		Tpl:    conntrack.Key{SrcIP: [4]byte{7, 7, 7, 7}, DstIP: [4]byte{5, 6, 7, 8}, DstPort: 80, Proto: 6, Kind: conntrack.KindTemplate | conntrack.KindV6},
		Method: ipvs.MethodMasq, State: conntrack.TCPEstablished, Timeout: 900, Expires: 899_000_000_000,
		A6:    conntrack.Addrs6{In: conntrack.Pair6{Src: a("2001:db8:18::10"), Dst: a("2001:db8:18::100")}, Out: conntrack.Pair6{Src: a("2001:db8:19::11"), Dst: a("2001:db8:18::10")}},
		TplA6: conntrack.Pair6{Src: a("2001:db8:18::"), Dst: a("2001:db8:18::100")},
	}
	b := appendRecord(nil, &r, 3)
	if len(b) != recSize6 || recordLen(b) != recSize6 {
		t.Fatalf("IPv6 record of %d bytes (recordLen %d), want %d", len(b), recordLen(b), recSize6)
	}
	back, di := decodeRecord(b)
	if back != r || di != 3 {
		t.Fatalf("round trip: %+v, want %+v", back, r)
	}
	c := connOf(&back)
	if c.Client != netip.MustParseAddrPort("[2001:db8:18::10]:40000") || c.Virtual != netip.MustParseAddrPort("[2001:db8:18::100]:80") || c.Dest != netip.MustParseAddrPort("[2001:db8:19::11]:8080") {
		t.Fatalf("listed as %+v", c)
	}
}
