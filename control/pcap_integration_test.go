package control

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/trace"
)

// TestTracePcapFromLiveDirector traces real traffic through a director in
// a lab, writes the frames to pcapng, reads the file back with gopacket and
// checks every frame against the event it came from: received frames as
// inbound on the event's interface, transmitted ones as outbound, with the
// NAT rewrite visible in the headers. Where tshark is installed it must
// decode the file too.
func TestTracePcapFromLiveDirector(t *testing.T) {
	dm := startDaemon(t, 2)
	vip := lab.VIP.String() + ":80"
	adm(t, "", "-A", "-t", vip, "-s", "rr")
	adm(t, "", "-a", "-t", vip, "-r", lab.RIP(1).String()+":80", "-m")
	adm(t, "", "-a", "-t", vip, "-r", lab.RIP(2).String()+":80", "-m")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := dm.d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	cl, err := Dial(SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var buf bytes.Buffer
	var pw *trace.Pcap
	var mu sync.Mutex
	var events []*trace.Event
	opened := make(chan struct{})
	done := make(chan error, 1)
	tctx, tcancel := context.WithCancel(ctx)
	go func() {
		done <- cl.Trace(tctx, "tcp service "+vip, TraceOptions{}, func(l *TraceLine) error {
			var err error
			pw, err = trace.NewPcap(&buf, l.Interfaces...)
			close(opened)
			return err
		}, func(l *TraceLine) error {
			if l.Event == nil {
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			events = append(events, l.Event)
			return pw.Write(l.Event)
		})
	}()
	<-opened
	resp, err := lab.Get(dm.topo.Client, netip.AddrPortFrom(lab.VIP, 80), 3, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	// Each HTTP/1.0 exchange is about ten frames each way; wait for them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(events)
		mu.Unlock()
		if n >= 30 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	tcancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if err := pw.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(events) < 20 {
		t.Fatalf("only %d events traced", len(events))
	}
	r, err := pcapgo.NewNgReader(bytes.NewReader(buf.Bytes()), pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	frames := 0
	for i, e := range events {
		for _, f := range []struct {
			data   []byte
			ifname string
		}{{e.Before, e.InIf}, {e.After, e.OutIf}} {
			if len(f.data) == 0 {
				continue
			}
			data, ci, err := r.ReadPacketData()
			if err != nil {
				t.Fatalf("event %d: reading the pcap: %v", i, err)
			}
			frames++
			if !bytes.Equal(data, f.data) {
				t.Fatalf("event %d: pcap frame differs from the traced one", i)
			}
			if name, _ := r.Interface(ci.InterfaceIndex); name.Name != f.ifname {
				t.Fatalf("event %d: frame on interface %q, want %q", i, name.Name, f.ifname)
			}
			p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
			ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if ip == nil || tcp == nil {
				t.Fatalf("event %d: frame does not decode as TCP/IPv4", i)
			}
			// The NAT rewrite, as the headers show it.
			switch {
			case e.Dir == "request" && &f.data[0] == &e.Before[0]:
				if !ip.DstIP.Equal(lab.VIP.AsSlice()) || tcp.DstPort != 80 {
					t.Fatalf("event %d: received request to %s:%d, want the VIP", i, ip.DstIP, tcp.DstPort)
				}
			case e.Dir == "request":
				if ip.DstIP.Equal(lab.VIP.AsSlice()) {
					t.Fatalf("event %d: sent request still to the VIP", i)
				}
			case e.Dir == "reply" && &f.data[0] == &e.After[0]:
				if !ip.SrcIP.Equal(lab.VIP.AsSlice()) || tcp.SrcPort != 80 {
					t.Fatalf("event %d: sent reply from %s:%d, want the VIP", i, ip.SrcIP, tcp.SrcPort)
				}
			}
		}
	}
	if _, _, err := r.ReadPacketData(); err == nil {
		t.Fatalf("the pcap holds more frames than the %d traced", frames)
	}
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Logf("tshark not installed: skipping its check (%d frames checked with gopacket)", frames)
		return
	}
	file := filepath.Join(t.TempDir(), "trace.pcapng")
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tshark", "-r", file, "-T", "fields", "-e", "ip.dst").Output()
	if err != nil {
		t.Fatalf("tshark -r: %v\n%s", err, out)
	}
	if lines := bytes.Count(out, []byte("\n")); lines != frames {
		t.Fatalf("tshark decoded %d frames, want %d:\n%s", lines, frames, out)
	}
}
