package trace

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./trace -update to create it)", err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s differs (-want +got; go test ./trace -update rewrites it):\n%s", path, d)
	}
}

func TestFormatTextGolden(t *testing.T) {
	f := &Formatter{Loc: time.UTC}
	for _, c := range modeEvents(t) {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := f.WriteText(&b, c.e); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(b.String(), "\x1b[") {
				t.Fatalf("colour without Color:\n%s", b.String())
			}
			golden(t, c.name+".txt", b.Bytes())
		})
	}
}

func TestFormatJSONGolden(t *testing.T) {
	f := &Formatter{Loc: time.UTC}
	for _, c := range modeEvents(t) {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := f.WriteJSON(&b, c.e); err != nil {
				t.Fatal(err)
			}
			if n := bytes.Count(b.Bytes(), []byte("\n")); n != 1 || !bytes.HasSuffix(b.Bytes(), []byte("\n")) {
				t.Fatalf("got %d lines, want one JSON line", n)
			}
			// Indented for the golden file, so diffs read.
			var ind bytes.Buffer
			if err := json.Indent(&ind, b.Bytes(), "", "  "); err != nil {
				t.Fatal(err)
			}
			golden(t, c.name+".json", ind.Bytes())
			// The frames come back byte for byte.
			var back Event
			if err := json.Unmarshal(b.Bytes(), &back); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back.Before, c.e.Before) || !bytes.Equal(back.After, c.e.After) {
				t.Fatalf("frames do not survive JSON")
			}
		})
	}
}

func TestFormatColor(t *testing.T) {
	ev := modeEvents(t)[0].e
	var b bytes.Buffer
	if err := (&Formatter{Color: true, Loc: time.UTC}).WriteText(&b, ev); err != nil {
		t.Fatal(err)
	}
	golden(t, "nat-first-wlc.color.txt", b.Bytes())
	// Without the escapes it is the plain text, character for character.
	plain := stripANSI(b.String())
	var p bytes.Buffer
	_ = (&Formatter{Loc: time.UTC}).WriteText(&p, ev)
	if plain != p.String() {
		t.Fatalf("coloured text minus escapes differs from plain:\n%s", cmp.Diff(p.String(), plain))
	}
}

func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b {
			for i < len(s) && s[i] != 'm' {
				i++
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// The changes each mode makes, as the JSON form lists them: the table of
// what a rewrite touches, checked field by field.
func TestChangedFields(t *testing.T) {
	want := map[string][]string{
		"nat-first-wlc":    {"eth.src", "eth.dst", "ip.dst", "ip.ttl", "ip.csum", "tcp.csum"},
		"nat-established":  {"eth.src", "eth.dst", "ip.dst", "ip.ttl", "ip.csum", "tcp.csum"},
		"nat-reply":        {"eth.src", "eth.dst", "ip.src", "ip.ttl", "ip.csum", "tcp.csum"},
		"dr-first-sh":      {"eth.src", "eth.dst"},
		"dr-established":   {"eth.src", "eth.dst"},
		"tun-first-lblc":   {"eth.src", "eth.dst", "+outer-ip"},
		"tun-established":  {"eth.src", "eth.dst", "+outer-ip"},
		"tun-gue-lblc-hit": {"eth.src", "eth.dst", "+outer-ip", "+outer-udp", "+gue"},
		"fullnat-first-wlc": {"eth.src", "eth.dst", "ip.src", "ip.dst", "ip.ttl", "ip.len", "ip.csum",
			"tcp.sport", "tcp.hlen", "tcp.options", "tcp.csum", "+toa"},
		"fullnat-established": {"eth.src", "eth.dst", "ip.src", "ip.dst", "ip.ttl", "ip.csum", "tcp.sport", "tcp.csum"},
		"fullnat-reply":       {"eth.src", "eth.dst", "ip.src", "ip.dst", "ip.ttl", "ip.csum", "tcp.dport", "tcp.csum"},
		"dropped":             nil,
	}
	for _, c := range modeEvents(t) {
		t.Run(c.name, func(t *testing.T) {
			w, ok := want[c.name]
			if !ok {
				t.Fatalf("no expectation for %s", c.name)
			}
			if d := cmp.Diff(w, JSON(c.e).Changed); d != "" {
				t.Errorf("changed fields (-want +got):\n%s", d)
			}
		})
	}
}

func TestDecodeChecksums(t *testing.T) {
	cases := []struct {
		name   string
		mangle func(b []byte)
		ip, l4 string
	}{
		{"good", func([]byte) {}, CsumOK, CsumOK},
		{"bad-ip", func(b []byte) { b[14+10] ^= 0xff }, CsumBad, CsumOK},
		{"bad-tcp", func(b []byte) { b[14+20+16] ^= 0xff }, CsumOK, CsumBad},
		{"partial", func(b []byte) {
			// What a veth hands AF_PACKET with TX offload: the folded
			// pseudo-header sum, not complemented.
			l4len := uint32(b[14+2])<<8 | uint32(b[14+3]) - 20
			ps := uint32(0xc612) + 0x000a + 0xc612 + 0x0064 + 6 + l4len // 198.18.0.10, 198.18.0.100, TCP
			for ps>>16 != 0 {
				ps = ps&0xffff + ps>>16
			}
			b[14+20+16], b[14+20+17] = byte(ps>>8), byte(ps)
		}, CsumOK, CsumPartial},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := seg{srcMAC: macClient, dstMAC: macExt0, src: cip, dst: vip, sport: cport, dport: 80, ttl: 64, id: 1, ack: true, seq: 1, ackN: 1, data: "x"}
			b := s.frame(t)
			c.mangle(b)
			h := Decode(b, false)
			if h.IP.CsumStat != c.ip || h.TCP.CsumStat != c.l4 {
				t.Fatalf("got ip %s tcp %s, want ip %s tcp %s", h.IP.CsumStat, h.TCP.CsumStat, c.ip, c.l4)
			}
		})
	}
}

// A frame cut short anywhere decodes to exactly the headers it holds in
// full, each with the values the frame was built with, and says it is
// truncated; decoding never panics. The SYN below is Ethernet (14 bytes),
// IPv4 (20), TCP with an MSS option (24): 58 bytes, padded to 60.
func TestDecodeTruncated(t *testing.T) {
	s := seg{srcMAC: macClient, dstMAC: macExt0, src: cip, dst: vip, sport: cport, dport: 80, ttl: 64, id: 1, syn: true}
	b := s.frame(t)
	const ethEnd, ipEnd, tcpEnd = 14, 34, 58
	if len(b) < tcpEnd {
		t.Fatalf("test frame is %d bytes", len(b))
	}
	for n := 1; n <= len(b); n++ {
		h := Decode(b[:n], false)
		if (h.Eth != nil) != (n >= ethEnd) || (h.IP != nil) != (n >= ipEnd) || (h.TCP != nil) != (n >= tcpEnd) {
			t.Fatalf("%d bytes: eth %v ip %v tcp %v, want each only when it is whole", n, h.Eth != nil, h.IP != nil, h.TCP != nil)
		}
		if (h.Error != "") != (n < tcpEnd) {
			t.Fatalf("%d bytes: error %q", n, h.Error)
		}
		if h.Eth != nil && (h.Eth.Src != macClient.String() || h.Eth.Dst != macExt0.String()) {
			t.Fatalf("%d bytes: eth %+v", n, h.Eth)
		}
		if h.IP != nil && (h.IP.Src.String() != cip.String() || h.IP.Dst.String() != vip.String() || h.IP.TTL != 64 || h.IP.ID != 1 || h.IP.Proto != 6 || h.IP.CsumStat != CsumOK) {
			t.Fatalf("%d bytes: ip %+v", n, h.IP)
		}
		if h.TCP != nil && (h.TCP.SPort != cport || h.TCP.DPort != 80) {
			t.Fatalf("%d bytes: tcp %+v", n, h.TCP)
		}
		var out bytes.Buffer
		if err := (&Formatter{}).WriteText(&out, &Event{Before: b[:n], After: b[:n], Len: n, Method: "Tunnel"}); err != nil || !utf8.Valid(out.Bytes()) {
			t.Fatalf("%d bytes: text %v %q", n, err, out.String())
		}
	}
}

// Whatever the bytes: the JSON form is one line of valid JSON whose
// frames decode back to the bytes given; the text form is valid UTF-8;
// and a decoded IPv4 header (Ethernet type 0x0800, no tunnel) carries
// the values at their RFC 791 offsets.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{}, false)
	s := seg{srcMAC: macClient, dstMAC: macExt0, src: cip, dst: vip, sport: cport, dport: 80, ttl: 64, id: 1, syn: true}
	f.Add(s.frame(f), false)
	f.Fuzz(func(t *testing.T, b []byte, tun bool) {
		e := &Event{Before: b, After: b, Len: len(b)}
		if tun {
			e.Method = "Tunnel"
		}
		var out bytes.Buffer
		if err := (&Formatter{}).WriteText(&out, e); err != nil || !utf8.Valid(out.Bytes()) {
			t.Fatalf("text: %v %q", err, out.String())
		}
		out.Reset()
		if err := (&Formatter{}).WriteJSON(&out, e); err != nil {
			t.Fatal(err)
		}
		line := out.Bytes()
		if bytes.Count(line, []byte("\n")) != 1 || !json.Valid(line) {
			t.Fatalf("JSON form is not one line of JSON: %q", line)
		}
		var back struct{ Before, After []byte }
		if err := json.Unmarshal(line, &back); err != nil || !bytes.Equal(back.Before, b) || !bytes.Equal(back.After, b) {
			t.Fatalf("frames do not round-trip through JSON: %v", err)
		}
		h := Decode(b, false)
		if h.Eth != nil && len(b) < 14 || h.IP != nil && len(b) < 34 || h.TCP != nil && len(b) < 54 || h.UDP != nil && len(b) < 42 {
			t.Fatalf("%d bytes decoded to headers that do not fit: %+v", len(b), h)
		}
		if h.IP != nil && h.Outer == nil && len(b) >= 34 && b[12] == 0x08 && b[13] == 0x00 {
			src, _ := netip.AddrFromSlice(b[26:30])
			dst, _ := netip.AddrFromSlice(b[30:34])
			if h.IP.Src != src || h.IP.Dst != dst || h.IP.TTL != b[22] || h.IP.Proto != b[23] || h.IP.ID != uint16(b[18])<<8|uint16(b[19]) {
				t.Fatalf("ip %+v, frame says %s -> %s ttl %d proto %d", h.IP, src, dst, b[22], b[23])
			}
		}
	})
}
