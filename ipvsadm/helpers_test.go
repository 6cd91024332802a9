package ipvsadm

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// fakeResolver knows a few fixed names, so tests never touch the network.
type fakeResolver struct{}

var fakeHosts = map[string]string{
	"www.example.com":   "10.0.0.1",
	"real1.example.com": "192.168.0.2",
	"mask.example.com":  "255.255.0.0",
}

var fakeAddrs = map[string]string{
	"10.0.0.1":    "www.example.com",
	"192.168.0.2": "real1.example.com",
	"192.168.0.3": "a-really-long-host-name-for-truncation.example.com",
	"2001:db8::1": "v6.example.com",
}

func (fakeResolver) LookupHost4(name string) (netip.Addr, bool) {
	if s, ok := fakeHosts[name]; ok {
		return netip.MustParseAddr(s), true
	}
	return netip.Addr{}, false
}

func (fakeResolver) LookupAddr(a netip.Addr) (string, bool) {
	s, ok := fakeAddrs[a.String()]
	return s, ok
}

const servicesText = `# test services
http		80/tcp		www		# WorldWideWeb HTTP
http		80/udp
domain		53/tcp
domain		53/udp
https		443/tcp
http-alt	8080/tcp	webcache
sip		5060/udp
broken line
`

func testServices(t testing.TB) *ServiceDB {
	db, err := ParseServices(strings.NewReader(servicesText))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func testParser(t testing.TB) *Parser {
	return &Parser{Program: "ipvsadm", Resolver: fakeResolver{}, Services: testServices(t)}
}

func testLister(t testing.TB, f Format) *Lister {
	return &Lister{Format: f, Size: 4096, Resolver: fakeResolver{}, Services: testServices(t)}
}

// testCheckSched accepts the kernel's schedulers even before package
// sched has registered them all.
func testCheckSched(name string) error {
	switch name {
	case "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos", "none":
		return nil
	}
	return DefaultCheckSched(name)
}

func newTestTable() *Table {
	t := NewTable()
	t.CheckSched = testCheckSched
	t.HostOwns = func(netip.Addr) bool { return false } // not the test host's addresses
	return t
}

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./ipvsadm -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (-want +got):\n%s", name, cmp.Diff(string(want), got))
	}
}

func mustParse(t testing.TB, p *Parser, line string) *Command {
	t.Helper()
	c, err := p.Parse(strings.Fields(line))
	if err != nil {
		t.Fatalf("Parse(%q): %v", line, err)
	}
	return c
}
