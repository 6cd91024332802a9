package control

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
)

// procMB reads a size field of /proc/self/status (VmRSS, VmHWM) in MB.
func procMB(field string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field) {
			var kb float64
			fmt.Sscanf(strings.TrimPrefix(l, field), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}

// BenchmarkConnListing lists 300,000 conns (ipvsadm -L -n -c) through
// the control socket as golvs does now, streamed, and as it did before,
// one reply holding the whole table: time per listing, the live heap's
// peak rise (daemon and client together) and the RSS it added.
func BenchmarkConnListing(b *testing.B) {
	d := director.NewOffline(director.Config{Workers: 1})
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: ipvsAddr("198.18.0.100"), Port: 80}
	if err := d.Apply(director.Model{Services: []ipvs.ServiceConfig{{ServiceKey: k, Sched: "rr",
		Dests: []ipvs.DestConfig{{Addr: ipvsAddr("198.19.0.11"), Port: 80, Method: ipvs.MethodMasq, Weight: 1}}}}}); err != nil {
		b.Fatal(err)
	}
	const n = 300000
	fillConns(b, d, n)
	srv := NewServer(d)
	sock := filepath.Join(b.TempDir(), "golvs.sock")
	if err := srv.Listen(sock); err != nil {
		b.Fatal(err)
	}
	b.Setenv("GOLVS_SOCKET", sock)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	for _, c := range []struct {
		name string
		list func() int
	}{
		{"streamed", func() int {
			var w countWriter
			if code := AdmMain([]string{"-L", "-n", "-c"}, strings.NewReader(""), &w, io.Discard); code != 0 {
				b.Fatalf("exit %d", code)
			}
			return w.n
		}},
		{"one-reply", func() int { // what golvs did before streaming
			rep := &Reply{V: Version, OK: true, Conns: srv.Conns()}
			line, _ := json.Marshal(rep)
			var back Reply
			if err := json.Unmarshal(line, &back); err != nil {
				b.Fatal(err)
			}
			var w countWriter
			_ = ipvsadm.NewLister(ipvsadm.FmtNumeric).WriteConns(&w, back.Conns)
			return w.n
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if lines := c.list(); lines != n+2 {
					b.Fatalf("%d lines, want %d", lines, n+2)
				}
			}
			b.StopTimer()
			// Memory, measured apart (with prompt collections, which
			// would distort the time): the live heap's peak rise, and
			// the process's peak RSS above its RSS before.
			debug.FreeOSMemory()                                      // RSS down to what is live
			_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // resets VmHWM
			rss := procMB("VmRSS:")
			peak := heapPeak(func() { c.list() })
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
			b.ReportMetric(procMB("VmHWM:")-rss, "peak-rss-added-MB")
		})
	}
}

func ipvsAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
