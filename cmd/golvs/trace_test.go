package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/director"
)

func TestTraceBadInput(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("GOLVS_SOCKET", filepath.Join(dir, "none.sock"))
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"bad-filter", []string{"tcp", "client", "nowhere"}, `golvs trace: filter "tcp client nowhere": client "nowhere" is not an IPv4 or IPv6 address or prefix`},
		{"bad-word", []string{"sctp"}, `unknown word "sctp"`},
		{"bad-sample", []string{"--sample", "0"}, "golvs trace: --sample 0 is not 1..2147483648"},
		{"unwritable-pcap", []string{"tcp", "--pcap", filepath.Join(dir, "no", "such", "dir", "x.pcapng")}, "golvs trace: cannot write the pcap file:"},
		{"not-running", []string{"tcp", "--json"}, "golvs: no golvs director is running (no control socket at"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := traceRun(context.Background(), c.args, &out, &errb, false)
			if code != 2 {
				t.Fatalf("exit %d, want 2 (stderr %q)", code, errb.String())
			}
			lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], c.want) && !strings.Contains(lines[0], c.want) {
				t.Fatalf("stderr %q, want one line with %q", errb.String(), c.want)
			}
			if out.Len() != 0 {
				t.Fatalf("stdout %q, want nothing", out.String())
			}
		})
	}
	// The pcap file is not left behind when the director is not there.
	var errb bytes.Buffer
	p := filepath.Join(dir, "t.pcapng")
	traceRun(context.Background(), []string{"--pcap", p}, &bytes.Buffer{}, &errb, false)
	if _, err := os.Stat(p); err == nil {
		t.Fatalf("pcap file left behind: %s", errb.String())
	}
}

// Against a control server (a director that never runs: no root needed),
// a trace opens, runs for --duration, and ends with the dropped count; the
// pcap file is valid even with no events.
func TestTraceRunsAgainstDaemon(t *testing.T) {
	srv := control.NewServer(&director.Director{})
	sock := filepath.Join(t.TempDir(), "golvs.sock")
	if err := srv.Listen(sock); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	t.Setenv("GOLVS_SOCKET", sock)
	p := filepath.Join(t.TempDir(), "t.pcapng")
	var out, errb bytes.Buffer
	code := traceRun(context.Background(), []string{"tcp", "--duration", "300ms", "service", "198.18.0.100:80", "--pcap", p}, &out, &errb, false)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, w := range []string{"golvs trace: tracing tcp service 198.18.0.100:80", "golvs trace: 0 events shown, 0 dropped"} {
		if !strings.Contains(errb.String(), w) {
			t.Errorf("stderr %q lacks %q", errb.String(), w)
		}
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := pcapgo.NewNgReader(f, pcapgo.NgReaderOptions{}); err != nil {
		t.Fatalf("pcap file: %v", err)
	}
}
