package ipvsadm

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

// Tests of this file pin differences from ipvsadm 1.31 and the kernel that
// golvs had (issue 13); each failed on the code before the fix. Expected
// texts are written out literally from ipvsadm.c and the kernel, not
// produced by golvs.

// TestFWMarkDestPortsNumeric: the kernel sends no protocol for fwmark
// services (ip_vs_genl_fill_service puts FWMARK instead of PROTOCOL), so
// ipvsadm's svc->protocol is 0 and port_to_service never finds a name:
// real servers' ports of fwmark services are numbers, with or without -n.
func TestFWMarkDestPortsNumeric(t *testing.T) {
	p := testParser(t)
	tb := newTestTable()
	applyLines(t, p, tb,
		"-A -t 10.0.0.1:80 -s rr",
		"-a -t 10.0.0.1:80 -r 192.168.0.2:8080 -m",
		"-A -f 1 -s rr",
		"-a -f 1 -r 192.168.0.2:8080 -m",
		"-A -f 2 -6 -s rr",
		"-a -f 2 -6 -r [2001:db8::5]:80 -g",
	)
	var b bytes.Buffer
	if err := testLister(t, 0).WriteAll(&b, tb.ListServices()); err != nil {
		t.Fatal(err)
	}
	want := "IP Virtual Server version 1.2.1 (size=4096)\n" +
		"Prot LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
		"TCP  www.example.com:http rr\n" +
		"  -> real1.example.com:http-alt   Masq    1      0          0         \n" +
		"FWM  1 rr\n" +
		"  -> real1.example.com:8080       Masq    1      0          0         \n" +
		"FWM  2 IPv6 rr\n" +
		"  -> [2001:db8::5]:80             Route   1      0          0         \n"
	if got := b.String(); got != want {
		t.Errorf("ipvsadm -L:\ngot:\n%s\nwant:\n%s", got, want)
	}
	b.Reset()
	if err := testLister(t, 0).WriteSave(&b, tb.ListServices(), false); err != nil {
		t.Fatal(err)
	}
	want = "-A -t www.example.com:http -s rr\n" +
		"-a -t www.example.com:http -r real1.example.com:http-alt -m -w 1\n" +
		"-A -f 1 -s rr\n" +
		"-a -f 1 -r real1.example.com:8080 -m -w 1\n" +
		"-A -f 2 -6 -s rr\n" +
		"-a -f 2 -6 -r [2001:db8::5]:80 -g -w 1\n"
	if got := b.String(); got != want {
		t.Errorf("ipvsadm -S:\ngot:\n%s\nwant:\n%s", got, want)
	}
}

// TestSecondCommand: ipvsadm's parse_options takes the command from the
// first option only; a command option met later falls to the default case
// of the second switch: fail(2, "invalid option `%s'", poptBadOption(...)),
// which names the last word popt consumed.
func TestSecondCommand(t *testing.T) {
	p := testParser(t)
	tests := []struct{ line, msg string }{
		{"-A -E -t 10.0.0.1:80", "invalid option `-E'"},
		{"-L -A", "invalid option `-A'"},
		{"-L -n -Z", "invalid option `-Z'"},
		{"-C -C", "invalid option `-C'"},
		{"-L -L", "invalid option `-L'"},
		{"-A -t 10.0.0.1:80 -A", "invalid option `-A'"},
		{"-LZ", "invalid option `-LZ'"},
		{"--list --zero", "invalid option `--zero'"},
		{"-L -h", "invalid option `-h'"},
		{"-S --restore", "invalid option `--restore'"},
	}
	for _, tt := range tests {
		_, err := p.Parse(strings.Fields(tt.line))
		if err == nil {
			t.Errorf("%q: no error, want %q", tt.line, tt.msg)
			continue
		}
		if err.Error() != tt.msg || ExitStatus(err) != 2 {
			t.Errorf("%q: %q (status %d), want %q (status 2)", tt.line, err, ExitStatus(err), tt.msg)
		}
	}
}

// TestLinkLocalAndMappedDests: ip_vs_new_dest refuses an IPv6 dest whose
// ipv6_addr_type is not unicast (v4-mapped addresses have no UNICAST bit)
// or is link-local, unless the host owns the address; the refusal is
// EINVAL, which ipvsadm words as ipvs_strerror's "Invalid operation. ...".
func TestLinkLocalAndMappedDests(t *testing.T) {
	p := testParser(t)
	for _, rs := range []string{"[fe80::1]:80", "[febf:ffff::1]:80", "[::ffff:192.168.0.2]:80"} {
		tb := newTestTable()
		applyLines(t, p, tb, "-A -t [2001:db8::1]:80 -s rr")
		err := tb.Apply(mustParse(t, p, "-a -t [2001:db8::1]:80 -r "+rs+" -m"))
		if err == nil {
			t.Errorf("real server %s accepted, want EINVAL", rs)
			continue
		}
		if !strings.HasPrefix(err.Error(), einvalText) || ExitStatus(err) != 255 {
			t.Errorf("real server %s: %q (status %d), want %q... (status 255)", rs, err, ExitStatus(err), einvalText)
		}
	}
	// fec0::/10 (site-local) and global addresses are unicast; a
	// link-local address the host owns is accepted (and the clone a
	// restore works on asks the same question)
	tb := newTestTable()
	own := netip.MustParseAddr("fe80::1")
	tb.HostOwns = func(a netip.Addr) bool { return a == own }
	applyLines(t, p, tb, "-A -t [2001:db8::1]:80 -s rr",
		"-a -t [2001:db8::1]:80 -r [fec0::1]:80 -m",
		"-a -t [2001:db8::1]:80 -r [2001:db8::2]:80 -m")
	n := tb.Clone()
	applyLines(t, p, n, "-a -t [2001:db8::1]:80 -r [fe80::1]:80 -m")
	if err := n.Apply(mustParse(t, p, "-a -t [2001:db8::1]:80 -r [fe80::2]:80 -m")); err == nil {
		t.Error("fe80::2, not the host's, accepted")
	}
}
