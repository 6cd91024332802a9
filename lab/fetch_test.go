package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// fetchNS is a namespace of the test's own with CIP on its loopback.
func fetchNS(t *testing.T) *NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	ns, err := NewNS("fetch-" + RandomSuffix())
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { ns.Delete() })
	err = ns.Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: CIP.AsSlice(), Mask: net.CIDRMask(32, 32)}})
	})
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// answerOnce listens on CIP:port in ns and answers one connection with
// parts, written one at a time a little apart (so a header can arrive in
// pieces), then closes it.
func answerOnce(t *testing.T, ns *NS, port int, parts ...string) {
	t.Helper()
	var l net.Listener
	err := ns.Do(func() (err error) {
		l, err = net.Listen("tcp4", netip.AddrPortFrom(CIP, uint16(port)).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 512)
		_, _ = c.Read(buf) // the request
		for i, p := range parts {
			if i > 0 {
				time.Sleep(20 * time.Millisecond)
			}
			if _, err := c.Write([]byte(p)); err != nil {
				return
			}
		}
	}()
}

// TestFetch checks the bulk client against a lab server's /bytes/N (the
// body is the server's name line and N bytes) and against answers written
// by hand: a header in two pieces, a body shorter than its
// Content-Length, another status, no Content-Length, a header that never
// ends.
func TestFetch(t *testing.T) {
	ns := fetchNS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := Serve(ctx, ns, "rs9", []int{80}, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 300 << 10, 3_000_000} {
		body, el, err := Fetch(ns, netip.AddrPortFrom(CIP, 80), fmt.Sprintf("/bytes/%d", n), 10*time.Second)
		if err != nil {
			t.Fatalf("/bytes/%d: %v", n, err)
		}
		if want := int64(n + len("rs9\n")); body != want || el <= 0 {
			t.Errorf("/bytes/%d: %d bytes in %v, want %d", n, body, el, want)
		}
	}
	cases := []struct {
		name  string
		parts []string
		body  int64
		err   string
	}{
		{"split header", []string{"HTTP/1.0 200 OK\r\nContent-Le", "ngth: 3\r\n\r\nab", "c"}, 3, ""},
		{"short body", []string{"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\n12345"}, 0, "5 bytes of body, Content-Length 10"},
		{"long body", []string{"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n12345"}, 0, "5 bytes of body, Content-Length 2"},
		{"status", []string{"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"}, 0, `status "HTTP/1.0 404 Not Found"`},
		{"HTTP/1.1", []string{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"}, 3, ""},
		{"status 2000", []string{"HTTP/1.1 2000 OK\r\nContent-Length: 3\r\n\r\nabc"}, 0, `status "HTTP/1.1 2000 OK"`},
		{"HTTP/2", []string{"HTTP/2 200 OK\r\nContent-Length: 3\r\n\r\nabc"}, 0, `status "HTTP/2 200 OK"`},
		{"no length", []string{"HTTP/1.0 200 OK\r\n\r\nabc"}, 0, "no Content-Length"},
		{"bad length", []string{"HTTP/1.0 200 OK\r\nContent-Length: -4\r\n\r\n"}, 0, `Content-Length "-4"`},
		{"endless header", []string{"HTTP/1.0 200 OK\r\n" + strings.Repeat("x", 20<<10)}, 0, "no end of header in its first 16 KiB"},
		{"cut header", []string{"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n"}, 0, "ended in its header"},
	}
	for i, c := range cases {
		port := 9000 + i
		answerOnce(t, ns, port, c.parts...)
		body, _, err := Fetch(ns, netip.AddrPortFrom(CIP, uint16(port)), "/", 10*time.Second)
		switch {
		case c.err == "" && (err != nil || body != c.body):
			t.Errorf("%s: %d bytes, %v; want %d", c.name, body, err, c.body)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: %d bytes, error %v; want an error with %q", c.name, body, err, c.err)
		}
	}
}

// FuzzContentLength: any header is refused with an error or yields a
// length that a line of it states, after a 200 status line.
func FuzzContentLength(f *testing.F) {
	f.Add("HTTP/1.0 200 OK\r\nContent-Length: 12")
	f.Add("HTTP/1.0 200 OK\r\ncontent-length:7\r\nX: y")
	f.Add("HTTP/1.0 404 Not Found\r\nContent-Length: 0")
	f.Add("HTTP/1.0 200 OK\r\nContent-Length: -1")
	f.Add("HTTP/1.0 200 OK\r\nContent-Length: +5")
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 5")
	f.Add("")
	f.Fuzz(func(t *testing.T, head string) {
		n, err := contentLength(head)
		if err != nil {
			return
		}
		lines := strings.Split(head, "\r\n")
		if !strings.HasPrefix(lines[0], "HTTP/1.0 200") && !strings.HasPrefix(lines[0], "HTTP/1.1 200") || n < 0 {
			t.Fatalf("%q: accepted with %d", head, n)
		}
		for _, l := range lines[1:] {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "content-length") {
				// 1*DIGIT, the number n (leading zeros allowed).
				v = strings.TrimSpace(v)
				if v == "" || strings.Trim(v, "0123456789") != "" || strings.TrimLeft(v, "0") != strings.TrimLeft(fmt.Sprint(n), "0") {
					t.Fatalf("%q: length %d, the header says %q", head, n, v)
				}
				return
			}
		}
		t.Fatalf("%q: a length %d with no Content-Length line", head, n)
	})
}
