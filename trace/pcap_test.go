package trace

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
)

// writePcap writes every golden event to a pcapng file and returns its
// path and the frames in file order with their interface and direction.
func writePcap(t *testing.T) (string, []pcapFrame) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "trace.pcapng")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPcap(f, "ext0", "int0")
	if err != nil {
		t.Fatal(err)
	}
	var want []pcapFrame
	for _, c := range modeEvents(t) {
		e := c.e
		if err := p.Write(e); err != nil {
			t.Fatal(err)
		}
		want = append(want, pcapFrame{e.InIf, pcapgo.NgEpbFlagDirectionInbound, e.Before, e.Len, e.Time})
		if len(e.After) > 0 {
			want = append(want, pcapFrame{e.OutIf, pcapgo.NgEpbFlagDirectionOutbound, e.After, e.AfterLen, e.Time})
		}
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path, want
}

type pcapFrame struct {
	ifname string
	dir    pcapgo.NgEpbFlag
	data   []byte
	length int
	at     time.Time
}

func TestPcapRoundTrip(t *testing.T) {
	path, want := writePcap(t)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.NgReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		data, ci, opts, err := r.ReadPacketDataWithOptions()
		if errors.Is(err, io.EOF) {
			if i != len(want) {
				t.Fatalf("got %d frames, want %d", i, len(want))
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i >= len(want) {
			t.Fatalf("more frames than events")
		}
		w := want[i]
		intf, err := r.Interface(ci.InterfaceIndex)
		if err != nil {
			t.Fatal(err)
		}
		if intf.Name != w.ifname {
			t.Errorf("frame %d: interface %q, want %q", i, intf.Name, w.ifname)
		}
		if opts.Flags == nil || opts.Flags.Direction != w.dir {
			t.Errorf("frame %d: direction %v, want %v", i, opts.Flags, w.dir)
		}
		if ci.Length != w.length || !bytes.Equal(data, w.data) {
			t.Errorf("frame %d: length %d (%d bytes), want %d (%d bytes)", i, ci.Length, len(data), w.length, len(w.data))
		}
		if !ci.Timestamp.Equal(w.at) {
			t.Errorf("frame %d: time %v, want %v", i, ci.Timestamp, w.at)
		}
		// The headers read back as the events' own.
		got, exp := Decode(data, true), Decode(w.data, true)
		if got.IP == nil || *got.IP != *exp.IP || got.Eth == nil || *got.Eth != *exp.Eth || (exp.TCP != nil && got.TCP.Csum != exp.TCP.Csum) {
			t.Errorf("frame %d: headers differ", i)
		}
	}
	// Each name has one interface block.
	names := map[string]int{}
	for i := 0; ; i++ {
		intf, err := r.Interface(i)
		if err != nil {
			break
		}
		names[intf.Name]++
	}
	if len(names) != 2 || names["ext0"] != 1 || names["int0"] != 1 {
		t.Fatalf("interfaces %v, want ext0 and int0 once each", names)
	}
}

// An interface not declared up front gets its block when first seen, and
// an empty trace is still a valid file.
func TestPcapLateInterface(t *testing.T) {
	var b bytes.Buffer
	p, err := NewPcap(&b)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := pcapgo.NewNgReader(bytes.NewReader(b.Bytes()), pcapgo.NgReaderOptions{}); err != nil {
		t.Fatalf("empty trace: %v", err)
	}
	b.Reset()
	p, _ = NewPcap(&b)
	e := modeEvents(t)[2].e // NAT reply: in on int0, out on ext0
	if err := p.Write(e); err != nil {
		t.Fatal(err)
	}
	_ = p.Flush()
	r, err := pcapgo.NewNgReader(bytes.NewReader(b.Bytes()), pcapgo.NgReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"int0", "ext0"} {
		_, ci, err := r.ReadPacketData()
		if err != nil {
			t.Fatal(err)
		}
		intf, _ := r.Interface(ci.InterfaceIndex)
		if intf.Name != want {
			t.Fatalf("interface %q, want %q", intf.Name, want)
		}
	}
}

// tshark, where installed, reads the file and decodes what golvs wrote:
// the TOA option, the IPIP and GUE outer headers, the rewritten addresses.
func TestPcapTshark(t *testing.T) {
	bin, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed")
	}
	path, want := writePcap(t)
	out, err := exec.Command(bin, "-r", path, "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("tshark -r: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var frames []string
	for _, l := range lines {
		if strings.Contains(l, "→") || strings.Contains(l, "->") {
			frames = append(frames, l)
		}
	}
	if len(frames) != len(want) {
		t.Fatalf("tshark shows %d frames, want %d:\n%s", len(frames), len(want), out)
	}
	for _, s := range []string{"198.19.0.200", "198.19.0.12", "198.18.0.100"} {
		if !strings.Contains(string(out), s) {
			t.Errorf("tshark output lacks %s:\n%s", s, out)
		}
	}
	// Verbose decode: the interface names, directions and the outer header.
	v, err := exec.Command(bin, "-r", path, "-n", "-T", "fields", "-e", "frame.interface_name", "-e", "frame.p2p_dir", "-e", "frame.comment", "-e", "ip.src", "-e", "ip.proto").CombinedOutput()
	if err != nil {
		t.Fatalf("tshark -T fields: %v\n%s", err, v)
	}
	vs := string(v)
	for _, s := range []string{"ext0", "int0", "golvs #1 request forwarded (sent)", "198.19.0.1,198.18.0.10"} {
		if !strings.Contains(vs, s) {
			t.Errorf("tshark fields lack %q:\n%s", s, vs)
		}
	}
	o, err := exec.Command(bin, "-r", path, "-n", "-V", "-Y", "tcp.option_kind == 254").CombinedOutput()
	if err != nil {
		t.Fatalf("tshark -V: %v\n%s", err, o)
	}
	if !strings.Contains(string(o), "254") {
		t.Errorf("tshark does not see the TOA option:\n%s", o)
	}
}
