package director

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
)

// golvs refuses to start where the host would leak VIP traffic: IPv4
// forwarding on (the kernel would route VIP packets un-rewritten), or a
// VIP the kernel owns (it would answer or reset its connections). With
// FixHost it turns forwarding off and puts it back when it stops.
func TestHostLeakChecks(t *testing.T) {
	topo := testutil.NATLab(t, 2)
	fwd := "/proc/sys/net/ipv4/conf/" + lab.DirExt + "/forwarding"
	err := topo.Director.Do(func() error { return os.WriteFile(fwd, []byte("1"), 0o644) })
	if err != nil {
		t.Fatal(err)
	}
	ifs := []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}}
	// An interface given twice is a mistake in the configuration, said as
	// such (not taken for another golvs holding it).
	err = topo.Director.Do(func() error {
		_, err := New(Config{Interfaces: append(ifs, Interface{Name: lab.DirExt}), Workers: 1, FixHost: true})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), `interface "`+lab.DirExt+`" given twice`) {
		t.Fatalf("an interface given twice: got %v", err)
	}
	// Each refusal lets go of what it took: the starts below find the
	// interfaces free.
	err = topo.Director.Do(func() error {
		_, err := New(Config{Interfaces: ifs, Workers: 1})
		return err
	})
	if !errors.Is(err, ErrHostLeak) || !strings.Contains(err.Error(), lab.DirExt) {
		t.Fatalf("forwarding on: got %v, want ErrHostLeak naming %s", err, lab.DirExt)
	}
	var d *Director
	err = topo.Director.Do(func() error {
		var err error
		d, err = New(Config{Interfaces: ifs, Workers: 1, FixHost: true})
		if err != nil {
			return err
		}
		b, _ := os.ReadFile(fwd)
		if strings.TrimSpace(string(b)) != "0" {
			t.Errorf("FixHost left forwarding at %s", b)
		}
		// A VIP the kernel owns (the DIP here) is refused.
		err = d.AddService(ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: 6, Addr: lab.DirExtIP, Port: 80}, Sched: "rr"})
		if !errors.Is(err, ErrHostLeak) {
			t.Errorf("local VIP: got %v, want ErrHostLeak", err)
		}
		d.Close()
		b, _ = os.ReadFile(fwd)
		if strings.TrimSpace(string(b)) != "1" {
			t.Errorf("Close did not restore forwarding (%s)", b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A served interface made again is logged and handed to OnReplaced once
// per new interface (the kernel notifies it many times), and the host
// report says it is not served.
func TestInterfaceReplacedReported(t *testing.T) {
	var lines []string
	var told []string
	d := NewOffline(Config{
		Interfaces: []Interface{{Name: "int0"}},
		Logf:       func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) },
		OnReplaced: func(name string) { told = append(told, name) },
	})
	defer d.Close()
	for _, l := range d.HostReport() {
		if strings.Contains(l, "NOT SERVED") {
			t.Fatalf("before anything happened: %s", l)
		}
	}
	d.interfaceReplaced("int0", 5, 9)
	d.interfaceReplaced("int0", 5, 9)
	if len(told) != 1 || told[0] != "int0" || len(lines) != 1 || !strings.Contains(lines[0], "int0 was removed and made again (index 5, now 9)") {
		t.Fatalf("told %q, logged %q; want int0 once", told, lines)
	}
	found := false
	for _, l := range d.HostReport() {
		found = found || strings.HasPrefix(l, "int0: NOT SERVED") && strings.Contains(l, "index 9")
	}
	if !found {
		t.Fatalf("the host report does not say int0 is not served: %q", d.HostReport())
	}
	// Made again once more: told again.
	d.interfaceReplaced("int0", 5, 11)
	if len(told) != 2 {
		t.Fatalf("a second new int0 was not told: %q", told)
	}
}
