package control

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
)

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
		if !strings.HasPrefix(out.String(), want) || !strings.Contains(out.String(), "\nconns ") {
			t.Errorf("golvs adm --status:\n%s\nwant it to begin with %q and list the counters", out.String(), want)
		}
		if code := AdmMain([]string{"--status", "x"}, strings.NewReader(""), &out, &errb); code != 2 {
			t.Errorf("golvs adm --status x: exit %d, want 2", code)
		}
		cancel()
		d.Close()
	}
}
