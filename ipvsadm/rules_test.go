package ipvsadm

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseRules(t *testing.T) {
	p := testParser(t)
	in := "# saved by hand\n" +
		"ipvsadm -A -t 10.0.0.1:80 -s rr\r\n" +
		"\n" +
		"   \t \n" +
		"ipvsadm\n" +
		"  -a\t-t 10.0.0.1:80 ipvsadm -r 192.168.0.2 -m\n" +
		"#-C\n" +
		"-a -t 10.0.0.1:80 -r 192.168.0.3 -m" // no final newline
	lines, err := p.ParseRules(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var got [][]string
	var nums []int
	for _, l := range lines {
		got = append(got, l.Args)
		nums = append(nums, l.Num)
	}
	want := [][]string{
		{"-A", "-t", "10.0.0.1:80", "-s", "rr"},
		{"-a", "-t", "10.0.0.1:80", "-r", "192.168.0.2", "-m"},
		{"-a", "-t", "10.0.0.1:80", "-r", "192.168.0.3", "-m"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("words (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]int{2, 6, 8}, nums); d != "" {
		t.Errorf("line numbers (-want +got):\n%s", d)
	}
}

func TestParseRulesErrors(t *testing.T) {
	p := testParser(t)
	tests := []struct {
		in     string
		msg    string
		status int
		n      int // lines parsed before the error
	}{
		{"-A -t 10.0.0.1:80\n-A -t 10.0.0.2:80\n-a -t 10.0.0.1:80 -r 192.168.0.2 -w 70000\n",
			"line 3: -a -t 10.0.0.1:80 -r 192.168.0.2 -w 70000: illegal weight specified: 70000 (allowed: 0..65535)", 2, 2},
		{"-A -t 10.0.0.1:80\n-R\n", "line 2: -R: " + tryHelp, 255, 1},
		{"ipvsadm -L --bogus\n", "line 1: ipvsadm -L --bogus: --bogus: unknown option", 255, 0},
		{"foo\n", "line 1: foo: " + tryHelp, 255, 0},
	}
	for _, tt := range tests {
		lines, err := p.ParseRules(strings.NewReader(tt.in))
		if err == nil {
			t.Errorf("%q: no error", tt.in)
			continue
		}
		if err.Error() != tt.msg {
			t.Errorf("got %q, want %q", err.Error(), tt.msg)
		}
		if ExitStatus(err) != tt.status {
			t.Errorf("%q: status %d, want %d", tt.in, ExitStatus(err), tt.status)
		}
		if len(lines) != tt.n {
			t.Errorf("%q: %d lines before the error, want %d", tt.in, len(lines), tt.n)
		}
		if !errors.Is(err, ErrUsage) && !strings.Contains(tt.msg, "weight") {
			t.Errorf("%v does not wrap ErrUsage", err)
		}
	}
}

func TestServiceDB(t *testing.T) {
	db := testServices(t)
	for _, tt := range []struct {
		name, proto string
		port        uint16
		ok          bool
	}{
		{"http", "tcp", 80, true}, {"www", "tcp", 80, true}, {"webcache", "tcp", 8080, true},
		{"https", "udp", 0, false}, {"sip", "udp", 5060, true}, {"broken", "tcp", 0, false},
	} {
		port, ok := db.Port(tt.name, tt.proto)
		if port != tt.port || ok != tt.ok {
			t.Errorf("Port(%s/%s) = %d %v, want %d %v", tt.name, tt.proto, port, ok, tt.port, tt.ok)
		}
	}
	if n, ok := db.Name(8080, "tcp"); n != "http-alt" || !ok {
		t.Errorf("Name(8080/tcp) = %q %v", n, ok)
	}
	if _, ok := db.Name(8080, "udp"); ok {
		t.Errorf("Name(8080/udp) found")
	}
}
