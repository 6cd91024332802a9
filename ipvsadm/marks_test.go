package ipvsadm

import (
	"strings"
	"testing"
)

func TestParseMark(t *testing.T) {
	good := []string{
		"--add-mark -f 1 --mark-proto tcp --mark-dst 198.18.0.100/32 --mark-ports 80,443",
		"--add-mark -f 7 --mark-dst 198.18.0.0/24",
		"--add-mark -f 4294967295 --mark-proto udp --mark-dst 198.18.0.100/32 --mark-ports 5000-5100,53",
		"--del-mark -f 1 --mark-proto tcp --mark-dst 198.18.0.100/32 --mark-ports 80,443",
		"--add-mark -f 8 --mark-proto tcp --mark-dst 2001:db8:18::/64 --mark-ports 80",
	}
	for _, g := range good {
		c, err := ParseMark(strings.Fields(g))
		if err != nil {
			t.Fatalf("%s: %v", g, err)
		}
		if c.Op == "add" && FormatMark(c.Rule) != g {
			t.Fatalf("round trip: %q -> %q", g, FormatMark(c.Rule))
		}
	}
	bad := []struct{ line, msg string }{
		{"--add-mark --mark-dst 198.18.0.100", "You need to supply the 'fwmark-service' option"},
		{"--add-mark -f 1", "You need to supply the 'mark-dst' option"},
		{"--add-mark -f 0 --mark-dst 198.18.0.100", "invalid fwmark value `0'"},
		{"--add-mark -f 1 --mark-dst ::ffff:198.18.0.1", "invalid mark destination"},
		{"--add-mark -f 1 --mark-dst fe80::1%eth0", "invalid mark destination"},
		{"--add-mark -f 1 --mark-proto icmp --mark-dst 198.18.0.100", "invalid mark protocol `icmp'"},
		{"--add-mark -f 1 --mark-proto tcp --mark-dst 198.18.0.100 --mark-ports 90-80", "invalid mark ports"},
		{"--add-mark -f 1 --mark-dst 198.18.0.100 --mark-ports 80", "--mark-ports needs --mark-proto"},
		{"--add-mark -f 1 -f 2 --mark-dst 198.18.0.100", "multiple 'f' options"},
		{"--add-mark -f 1 --mark-dst", "missing argument"},
		{"--add-mark -f 1 --bogus x", "unknown option"},
	}
	for _, b := range bad {
		_, err := ParseMark(strings.Fields(b.line))
		if err == nil || !strings.Contains(err.Error(), b.msg) {
			t.Errorf("%s: %v, want %q", b.line, err, b.msg)
		}
	}
	c, _ := ParseMark(strings.Fields(good[0]))
	rules, err := ApplyMark(nil, c)
	if err != nil || len(rules) != 1 {
		t.Fatal(err)
	}
	if _, err := ApplyMark(rules, c); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("duplicate add: %v", err)
	}
	d, _ := ParseMark(strings.Fields(good[3]))
	if rules, err = ApplyMark(rules, d); err != nil || len(rules) != 0 {
		t.Fatalf("delete: %v %v", rules, err)
	}
}

func FuzzParseMark(f *testing.F) {
	f.Add("--add-mark -f 1 --mark-proto tcp --mark-dst 198.18.0.100/32 --mark-ports 80,443")
	f.Fuzz(func(t *testing.T, line string) {
		c, err := ParseMark(strings.Fields(line))
		if err == nil && c.Op == "add" {
			c2, err := ParseMark(strings.Fields(FormatMark(c.Rule)))
			if err != nil || !c2.Rule.Equal(c.Rule) {
				t.Fatalf("round trip of %q: %v", line, err)
			}
		}
	})
}
