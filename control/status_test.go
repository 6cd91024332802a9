package control

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
)

func TestWriteStatus(t *testing.T) {
	c := map[string]uint64{"no-dest": 3, "bad-l4": 0, "frag-needed-sent": 12, "conns": 2, "conns-created": 9,
		"kernel-reasm-oks": 4, "trace-dropped": 7}
	var b bytes.Buffer
	WriteStatus(&b, &Reply{Counters: c, Host: []string{"ext0: IPv4 forwarding off"}, Semantics: "current", Resolved: true})
	want := "semantics: current (" + ipvs.Current.Kernels() + ")\n" +
		"real servers resolved: true\n" +
		"relies on: ext0: IPv4 forwarding off\n" +
		"Frames not forwarded, by cause (ARP handled included):\n" +
		"  bad-l4                              0\n" +
		"  no-dest                             3\n" +
		"Events:\n" +
		"  frag-needed-sent                   12\n" +
		"Connection table:\n" +
		"  conns                               2\n" +
		"  conns-created                       9\n" +
		"Kernel, this network namespace (IPv4 reassembly for golvs and the host):\n" +
		"  kernel-reasm-oks                    4\n" +
		"Other:\n" +
		"  trace-dropped                       7\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestAdmStatus: golvs adm --status lists every counter of the running
// director, live, and --json gives the same numbers; a SYN to a service
// with no real server shows up as no-dest and a port unreachable sent.
func TestAdmStatus(t *testing.T) {
	dm := startDaemon(t, 1)
	adm(t, "", "-A", "-t", lab.VIP.String()+":80", "-s", "rr")
	err := dm.topo.Client.Do(func() error {
		c, err := net.DialTimeout("tcp4", lab.VIP.String()+":80", 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("a service with no real server: %v, want connection refused (ICMP port unreachable)", err)
	}
	text := adm(t, "", "--status")
	for _, n := range append(director.CounterNames[:], director.ModeCounterNames[:]...) {
		if !strings.Contains(text, "\n  "+n+" ") {
			t.Fatalf("--status does not list %s:\n%s", n, text)
		}
	}
	if !strings.Contains(text, "kernel-reasm-reqds") {
		t.Fatalf("--status lacks the kernel's reassembly counters:\n%s", text)
	}
	var js struct {
		Counters map[string]uint64 `json:"counters"`
	}
	if err := json.Unmarshal([]byte(adm(t, "", "--status", "--json")), &js); err != nil {
		t.Fatal(err)
	}
	drops, modes := dm.d.Drops.Get(), dm.d.ModeCounters()
	for i, n := range director.CounterNames {
		if js.Counters[n] != drops[i] {
			t.Fatalf("--json %s = %d, director %d", n, js.Counters[n], drops[i])
		}
	}
	if js.Counters["no-dest"] == 0 || js.Counters["icmp-unreach-sent"] != modes[director.MCntUnreachSent] || js.Counters["icmp-unreach-sent"] == 0 {
		t.Fatalf("no-dest %d, icmp-unreach-sent %d", js.Counters["no-dest"], js.Counters["icmp-unreach-sent"])
	}
	var out, errb bytes.Buffer
	if code := AdmMain([]string{"--status", "-n"}, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), `"-n"`) {
		t.Fatalf("--status -n: exit %d %q", code, errb.String())
	}
}

// TestStatusSemantics: the director's kernel semantics is visible through
// the control plane (the status op) and in golvs adm --status.
func TestStatusSemantics(t *testing.T) {
	topo := testutil.NATLab(t, 1)
	for _, sem := range []ipvs.Semantics{ipvs.Classic, ipvs.Current} {
		var d *director.Director
		err := topo.Director.Do(func() error {
			var err error
			d, err = director.New(director.Config{
				Interfaces: []director.Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}},
				Workers:    1, FixHost: true, Semantics: sem,
			})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		srv := NewServer(d)
		sock := filepath.Join(t.TempDir(), "golvs.sock")
		if err := srv.Listen(sock); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go srv.Serve(ctx)
		t.Setenv("GOLVS_SOCKET", sock)
		rep := srv.Handle(&Request{V: Version, Op: "status"})
		if !rep.OK || rep.Semantics != sem.String() {
			t.Errorf("status reply semantics %q, want %q", rep.Semantics, sem)
		}
		var out, errb bytes.Buffer
		if code := AdmMain([]string{"--status"}, strings.NewReader(""), &out, &errb); code != 0 {
			t.Fatalf("golvs adm --status: exit %d: %s", code, errb.String())
		}
		want := "semantics: " + sem.String() + " (" + sem.Kernels() + ")\n"
		if !strings.HasPrefix(out.String(), want) || !strings.Contains(out.String(), "\n  conns ") {
			t.Errorf("golvs adm --status:\n%s\nwant it to begin with %q and list the counters", out.String(), want)
		}
		if code := AdmMain([]string{"--status", "x"}, strings.NewReader(""), &out, &errb); code != 2 {
			t.Errorf("golvs adm --status x: exit %d, want 2", code)
		}
		cancel()
		d.Close()
	}
}
