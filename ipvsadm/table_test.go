package ipvsadm

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"strings"
	"testing"

	"github.com/golvs/golvs/ipvs"
	"github.com/google/go-cmp/cmp"
)

// applyLines parses and applies each line, failing the test on any error.
func applyLines(t *testing.T, p *Parser, tb *Table, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if err := tb.Apply(mustParse(t, p, l)); err != nil {
			t.Fatalf("Apply(%q): %v", l, err)
		}
	}
}

func TestApplyErrors(t *testing.T) {
	p := testParser(t)
	setup := []string{
		"-A -t 10.0.0.1:80 -s rr",
		"-a -t 10.0.0.1:80 -r 192.168.0.2 -m",
	}
	tests := []struct {
		line     string
		msg      string
		status   int
		sentinel error
	}{
		{"-A -t 10.0.0.1:80", "Service already exists", 255, ipvs.ErrServiceExists},
		{"-A -t 10.0.0.1:81 -s nosuch", "Scheduler or persistence engine not found", 255, ipvs.ErrNoScheduler},
		{"-A -t 10.0.0.1:81 --pe nosuch", "Scheduler or persistence engine not found", 255, ipvs.ErrNoScheduler},
		{"-E -t 10.0.0.1:81", "No such service", 255, ipvs.ErrNoService},
		{"-E -t 10.0.0.1:80 -s nosuch", "Scheduler or persistence engine not found", 255, ipvs.ErrNoScheduler},
		{"-D -t 10.0.0.1:81", "No such service", 255, ipvs.ErrNoService},
		{"-Z -t 10.0.0.1:81", "No such service", 255, ipvs.ErrNoService},
		{"-a -t 10.0.0.1:81 -r 192.168.0.2", "Service not defined", 255, ipvs.ErrSvcNotDefined},
		{"-e -t 10.0.0.1:81 -r 192.168.0.2", "Service not defined", 255, ipvs.ErrSvcNotDefined},
		{"-d -t 10.0.0.1:81 -r 192.168.0.2", "Service not defined", 255, ipvs.ErrSvcNotDefined},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -m", "Destination already exists", 255, ipvs.ErrDestExists},
		{"-e -t 10.0.0.1:80 -r 192.168.0.3", "No such destination", 255, ipvs.ErrNoDest},
		{"-d -t 10.0.0.1:80 -r 192.168.0.2:8080", "No such destination", 255, ipvs.ErrNoDest},
		{"-a -t 10.0.0.1:80 -r 192.168.0.3 -y 10",
			"Numerical result out of range: lower threshold 10 above upper threshold 0 (allowed: lower <= upper (an upper threshold of 0 allows no lower threshold))", 255, ipvs.ErrRange},
		{"-e -t 10.0.0.1:80 -r 192.168.0.2 -m -x 5 -y 6",
			"Numerical result out of range: lower threshold 6 above upper threshold 5 (allowed: lower <= upper (an upper threshold of 0 allows no lower threshold))", 255, ipvs.ErrRange},
		{"-a -t 10.0.0.1:80 -r 224.0.0.1", einvalText + " (real server address 224.0.0.1 is not unicast)", 255, ipvs.ErrInvalid},
		{"-a -t 10.0.0.1:80 -r 0.0.0.7", einvalText + " (real server address 0.0.0.7 is not unicast)", 255, ipvs.ErrInvalid},
		{"-a -t 10.0.0.1:80 -r 255.255.255.255", einvalText + " (real server address 255.255.255.255 is not unicast)", 255, ipvs.ErrInvalid},
		{"--start-daemon master", "Operation not supported: the sync daemon is not part of a rules file (golvs adm --start-daemon, or golvs run --start-daemon at boot)", 255, ErrUnsupported},
		{"-R", "ipvsadm: restore does not apply to a table", 255, ErrNotTable},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			tb := newTestTable()
			applyLines(t, p, tb, setup...)
			before := tb.Clone()
			err := tb.Apply(mustParse(t, p, tt.line))
			if err == nil {
				t.Fatalf("Apply(%q) succeeded, want %q", tt.line, tt.msg)
			}
			if err.Error() != tt.msg {
				t.Errorf("got %q, want %q", err.Error(), tt.msg)
			}
			if ExitStatus(err) != tt.status {
				t.Errorf("status: got %d, want %d", ExitStatus(err), tt.status)
			}
			if !errors.Is(err, tt.sentinel) {
				t.Errorf("%v does not wrap %v", err, tt.sentinel)
			}
			if d := cmp.Diff(before.Services(), tb.Services(), addrCmp); d != "" {
				t.Errorf("a failed Apply changed the table (-before +after):\n%s", d)
			}
		})
	}
}

func TestApplyHandMadeCommands(t *testing.T) {
	tb := newTestTable()
	c := &Command{Cmd: CmdAdd, Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: v4("10.0.0.1")}, Sched: "rr"}}
	if err := tb.Apply(c); err == nil || err.Error() != "Zero port specified for non-persistent service" || ExitStatus(err) != 2 {
		t.Errorf("got %v, want the zero port error with status 2", err)
	}
	c = &Command{Cmd: CmdAdd, Service: ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoSCTP, Addr: v4("10.0.0.1"), Port: 80}, Sched: "rr"}}
	if err := tb.Apply(c); !errors.Is(err, ErrSCTP) {
		t.Errorf("got %v, want ErrSCTP", err)
	}
	tb.Apply(&Command{Cmd: CmdAdd, Service: ipvs.ServiceConfig{ServiceKey: tcp80, Sched: "rr", Netmask: 0xffffffff}})
	c = &Command{Cmd: CmdAddDest, Service: ipvs.ServiceConfig{ServiceKey: tcp80}, Dest: ipvs.DestConfig{Addr: v4("192.168.0.2"), Port: 80, Weight: -1}}
	if err := tb.Apply(c); !errors.Is(err, ipvs.ErrRange) {
		t.Errorf("negative weight: got %v, want ERANGE", err)
	}
	c.Dest = ipvs.DestConfig{Addr: v4("192.168.0.2"), Port: 80, Method: ipvs.MethodTunnel, TunType: ipvs.TunGUE}
	if err := tb.Apply(c); !errors.Is(err, ipvs.ErrInvalid) {
		t.Errorf("GUE port 0: got %v, want EINVAL", err)
	}
	c.Dest = ipvs.DestConfig{Addr: v4("2001:db8::2"), Port: 80, Method: ipvs.MethodMasq}
	if err := tb.Apply(c); !errors.Is(err, ipvs.ErrInvalid) {
		t.Errorf("mixed family NAT: got %v, want EINVAL", err)
	}
}

func TestApplyListOrderAndReplacement(t *testing.T) {
	p := testParser(t)
	tb := newTestTable()
	applyLines(t, p, tb,
		"-A -t 10.0.0.1:80 -s sh -p 600 -M 255.255.255.0 -b sh-port --pe sip",
		"-a -t 10.0.0.1:80 -r 192.168.0.1 -m -w 3 -x 10 -y 5",
		"-a -t 10.0.0.1:80 -r 192.168.0.2 -m",
		"-a -t 10.0.0.1:80 -r 192.168.0.3 -i",
	)
	addrs := func() []string {
		s, _ := tb.Service(tcp80)
		var out []string
		for _, d := range s.Dests {
			out = append(out, d.AddrPort().String())
		}
		return out
	}
	want := []string{"192.168.0.3:80", "192.168.0.2:80", "192.168.0.1:80"}
	if d := cmp.Diff(want, addrs()); d != "" {
		t.Errorf("new dests go to the head (-want +got):\n%s", d)
	}
	// -e replaces every field and does not move the dest.
	applyLines(t, p, tb, "-e -t 10.0.0.1:80 -r 192.168.0.1")
	if d := cmp.Diff(want, addrs()); d != "" {
		t.Errorf("-e moved a dest (-want +got):\n%s", d)
	}
	s, _ := tb.Service(tcp80)
	wantDest := ipvs.DestConfig{Addr: v4("192.168.0.1"), Port: 80, Method: ipvs.MethodRoute, Weight: 1}
	if d := cmp.Diff(wantDest, s.Dests[2], addrCmp); d != "" {
		t.Errorf("-e without -w/-m/-x/-y (-want +got):\n%s", d)
	}
	// -E replaces scheduler, flags, persistence and pe; dests stay.
	applyLines(t, p, tb, "-E -t 10.0.0.1:80 -s wrr")
	s, _ = tb.Service(tcp80)
	wantSvc := ipvs.ServiceConfig{ServiceKey: tcp80, Sched: "wrr", Netmask: 0xffffffff}
	got := s
	got.Dests = nil
	if d := cmp.Diff(wantSvc, got, addrCmp); d != "" {
		t.Errorf("-E full replacement (-want +got):\n%s", d)
	}
	if len(s.Dests) != 3 {
		t.Errorf("-E dropped dests: %d left", len(s.Dests))
	}
	// Re-adding a deleted dest puts it at the head.
	applyLines(t, p, tb, "-d -t 10.0.0.1:80 -r 192.168.0.1", "-a -t 10.0.0.1:80 -r 192.168.0.1")
	if d := cmp.Diff([]string{"192.168.0.1:80", "192.168.0.3:80", "192.168.0.2:80"}, addrs()); d != "" {
		t.Errorf("re-added dest (-want +got):\n%s", d)
	}
	// --set 0 leaves a value unchanged.
	applyLines(t, p, tb, "--set 0 60 0")
	if want := (Timeouts{900, 60, 300}); tb.Timeouts != want {
		t.Errorf("timeouts: got %+v, want %+v", tb.Timeouts, want)
	}
	// fwmark services are found by mark and family only.
	applyLines(t, p, tb, "-A -f 5", "-A -f 5 -6", "-a -f 5 -r 192.168.0.9")
	if err := tb.Apply(mustParse(t, p, "-A -f 5 -s rr")); !errors.Is(err, ipvs.ErrServiceExists) {
		t.Errorf("second -A -f 5: got %v", err)
	}
	applyLines(t, p, tb, "-D -f 5 -6", "-C")
	if n := len(tb.Services()); n != 0 {
		t.Errorf("-C left %d services", n)
	}
	if want := (Timeouts{900, 60, 300}); tb.Timeouts != want {
		t.Errorf("-C changed the timeouts: %+v", tb.Timeouts)
	}
}

func TestCloneIsDeep(t *testing.T) {
	p := testParser(t)
	tb := newTestTable()
	applyLines(t, p, tb, "-A -t 10.0.0.1:80", "-a -t 10.0.0.1:80 -r 192.168.0.2 -m")
	c := tb.Clone()
	applyLines(t, p, c, "-e -t 10.0.0.1:80 -r 192.168.0.2 -m -w 9", "-A -t 10.0.0.1:81")
	s, _ := tb.Service(tcp80)
	if s.Dests[0].Weight != 1 || len(tb.Services()) != 1 {
		t.Errorf("changing a clone changed the original: %+v", tb.Services())
	}
}

func listing(t *testing.T, tb *Table, f Format) string {
	t.Helper()
	var b bytes.Buffer
	if err := testLister(t, f).WriteAll(&b, tb.ListServices()); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestTutorial is the classic sequence of an ipvsadm tutorial, on the
// Table model.
func TestTutorial(t *testing.T) {
	p := testParser(t)
	tb := newTestTable()
	applyLines(t, p, tb,
		"-A -t 10.0.0.1:80 -s rr",
		"-a -t 10.0.0.1:80 -r 192.168.0.2:80 -m",
		"-a -t 10.0.0.1:80 -r 192.168.0.3:80 -m",
	)
	first := listing(t, tb, FmtNumeric)
	want := "IP Virtual Server version 1.2.1 (size=4096)\n" +
		"Prot LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
		"TCP  10.0.0.1:80 rr\n" +
		"  -> 192.168.0.2:80               Masq    1      0          0         \n" +
		"  -> 192.168.0.3:80               Masq    1      0          0         \n"
	if first != want {
		t.Errorf("first listing (-want +got):\n%s", cmp.Diff(want, first))
	}
	applyLines(t, p, tb,
		"-E -t 10.0.0.1:80 -s wrr",
		"-e -t 10.0.0.1:80 -r 192.168.0.2:80 -m -w 2",
	)
	var saved bytes.Buffer
	if err := testLister(t, 0).WriteSave(&saved, tb.ListServices(), true); err != nil {
		t.Fatal(err)
	}
	wantSave := "-A -t 10.0.0.1:80 -s wrr\n" +
		"-a -t 10.0.0.1:80 -r 192.168.0.2:80 -m -w 2\n" +
		"-a -t 10.0.0.1:80 -r 192.168.0.3:80 -m -w 1\n"
	if saved.String() != wantSave {
		t.Errorf("-S -n (-want +got):\n%s", cmp.Diff(wantSave, saved.String()))
	}
	applyLines(t, p, tb, "-C")
	if got := listing(t, tb, FmtNumeric); got != want[:strings.Index(want, "TCP")] {
		t.Errorf("after -C: %q", got)
	}
	lines, err := p.ParseRules(&saved)
	if err != nil {
		t.Fatal(err)
	}
	if err := tb.Restore(lines); err != nil {
		t.Fatal(err)
	}
	applyLines(t, p, tb,
		"-E -t 10.0.0.1:80 -s rr",
		"-e -t 10.0.0.1:80 -r 192.168.0.2:80 -m -w 1",
	)
	if got := listing(t, tb, FmtNumeric); got != first {
		t.Errorf("after -R and undoing the edits (-first +now):\n%s", cmp.Diff(first, got))
	}
}

func TestRestoreIsAtomic(t *testing.T) {
	p := testParser(t)
	tb := newTestTable()
	applyLines(t, p, tb, "-A -t 10.0.0.1:80")
	lines, err := p.ParseRules(strings.NewReader("-A -t 10.0.0.2:80\n-a -t 10.0.0.2:80 -r 192.168.0.2\n-A -t 10.0.0.1:80\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = tb.Restore(lines)
	if err == nil || err.Error() != "line 3: -A -t 10.0.0.1:80: Service already exists" {
		t.Errorf("got %v", err)
	}
	if !errors.Is(err, ipvs.ErrServiceExists) || ExitStatus(err) != 255 {
		t.Errorf("%v: wrong sentinel or status %d", err, ExitStatus(err))
	}
	if n := len(tb.Services()); n != 1 {
		t.Errorf("a failed restore left %d services, want 1", n)
	}
}

// randomTable builds a table from random valid commands.
func randomTable(t *testing.T, p *Parser, r *rand.Rand) *Table {
	tb := newTestTable()
	scheds := []string{"rr", "wrr", "wlc", "lc", "sh", "mh", "dh", "none"}
	nsvc := 1 + r.Intn(6)
	for i := 0; i < nsvc; i++ {
		var svc string
		sched := scheds[r.Intn(len(scheds))]
		v6 := r.Intn(3) == 0
		switch r.Intn(3) {
		case 0:
			if v6 {
				svc = fmt.Sprintf("-t [2001:db8::%x]:%d", r.Intn(4096), 1+r.Intn(65535))
			} else {
				// Addresses within 2^31 of each other: libipvs sorts others
				// by a non-transitive comparison (spec §6.5).
				svc = fmt.Sprintf("-t %d.%d.%d.%d:%d", 1+r.Intn(126), r.Intn(256), r.Intn(256), 1+r.Intn(254), 1+r.Intn(65535))
			}
		case 1:
			svc = fmt.Sprintf("-u 10.%d.%d.%d:%d", r.Intn(256), r.Intn(256), 1+r.Intn(254), 1+r.Intn(65535))
		case 2:
			svc = fmt.Sprintf("-f %d", 1+r.Uint32()%1000000)
			if v6 {
				svc += " -6"
			}
		}
		add := "-A " + svc + " -s " + sched
		if r.Intn(2) == 0 {
			add += fmt.Sprintf(" -p %d", 1+r.Intn(ipvs.MaxTimeout))
			if r.Intn(2) == 0 {
				if strings.Contains(svc, "[") || strings.HasSuffix(svc, "-6") {
					add += fmt.Sprintf(" -M %d", 1+r.Intn(128))
				} else {
					add += fmt.Sprintf(" -M 255.255.%d.0", r.Intn(256))
				}
			}
			if r.Intn(4) == 0 {
				add += " --pe sip"
			}
		}
		if strings.HasPrefix(svc, "-u") && r.Intn(2) == 0 {
			add += " -o"
		}
		switch {
		case sched == "sh" && r.Intn(2) == 0:
			add += " -b sh-fallback,sh-port"
		case sched == "mh" && r.Intn(2) == 0:
			add += " -b mh-port"
		case r.Intn(4) == 0:
			add += " -b flag-1,flag-3"
		}
		c, err := p.Parse(strings.Fields(add))
		if err != nil {
			t.Fatalf("%s: %v", add, err)
		}
		if tb.Apply(c) != nil {
			continue // a duplicate
		}
		v6svc := strings.Contains(svc, "[") || strings.HasSuffix(svc, "-6")
		for j := r.Intn(5); j > 0; j-- {
			var rs string
			if v6svc {
				rs = fmt.Sprintf("[2001:db8:1::%x]:%d", 1+r.Intn(65535), r.Intn(65536))
			} else {
				rs = fmt.Sprintf("192.168.%d.%d:%d", r.Intn(256), 1+r.Intn(254), r.Intn(65536))
			}
			line := fmt.Sprintf("-a %s -r %s -w %d", svc, rs, r.Intn(65536))
			switch r.Intn(6) {
			case 0:
				line += " -m"
			case 1:
				line += " -g"
			case 2:
				line += " --fullnat"
			case 3:
				line += " -i --tun-type gue --tun-port 6080 --tun-csum"
			case 4:
				line += " -i --tun-type gre --tun-nocsum"
			case 5:
				line += " -i"
			}
			if err := tb.Apply(mustParse(t, p, line)); err != nil && !errors.Is(err, ipvs.ErrDestExists) {
				t.Fatalf("%s: %v", line, err)
			}
		}
	}
	return tb
}

// TestSaveRestoreRoundTrip: for random tables, -S -n then -R into an empty
// table gives the same -S -n output and the same services (dests compared
// as sets: -S writes them sorted, -R re-adds them newest first).
func TestSaveRestoreRoundTrip(t *testing.T) {
	p := testParser(t)
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 200; i++ {
		tb := randomTable(t, p, r)
		var saved bytes.Buffer
		if err := testLister(t, 0).WriteSave(&saved, tb.ListServices(), true); err != nil {
			t.Fatal(err)
		}
		lines, err := p.ParseRules(bytes.NewReader(saved.Bytes()))
		if err != nil {
			t.Fatalf("table %d: %v\n%s", i, err, saved.String())
		}
		n := newTestTable()
		if err := n.Restore(lines); err != nil {
			t.Fatalf("table %d: %v\n%s", i, err, saved.String())
		}
		var again bytes.Buffer
		testLister(t, 0).WriteSave(&again, n.ListServices(), true)
		if again.String() != saved.String() {
			t.Fatalf("table %d: -S after -R differs (-first +second):\n%s", i, cmp.Diff(saved.String(), again.String()))
		}
		if got, want := listing(t, n, FmtNumeric|FmtTunInfo), listing(t, tb, FmtNumeric|FmtTunInfo); got != want {
			t.Fatalf("table %d: listings differ:\n%s", i, cmp.Diff(want, got))
		}
	}
}

func TestNormKey(t *testing.T) {
	a := NormKey(ipvs.ServiceKey{Proto: 0, Addr: netip.MustParseAddr("1.2.3.4"), Port: 9, FWMark: 3})
	b := NormKey(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, FWMark: 3})
	if a != b {
		t.Errorf("fwmark keys differ: %v %v", a, b)
	}
}

// TestDefaultCheckSched runs against package sched as registered.
func TestDefaultCheckSched(t *testing.T) {
	if err := DefaultCheckSched("none"); err != nil {
		t.Errorf("none: %v", err)
	}
	if err := DefaultCheckSched("nosuch"); err == nil {
		t.Errorf("nosuch accepted")
	}
	for _, n := range []string{"rr", "wrr", "lc", "wlc", "sh", "dh", "mh"} {
		if err := DefaultCheckSched(n); err != nil {
			t.Logf("%s not registered in package sched yet: %v", n, err)
		}
	}
}
