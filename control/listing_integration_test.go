package control

import (
	"io"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
)

// fillConns puts n NAT conns on the first dest of the director's first
// service, straight into the connection table.
func fillConns(t testing.TB, d *director.Director, n int) {
	t.Helper()
	svcs := d.Snapshot().List
	if len(svcs) == 0 || len(svcs[0].Dests) == 0 {
		t.Fatal("fillConns needs a service with a real server")
	}
	dest := svcs[0].Dests[0]
	vip := svcs[0].Config.Addr.As4()
	rip := dest.Addr.As4()
	for i := 0; i < n; i++ {
		cl := [4]byte{198, 18, byte(1 + i>>16), byte(i >> 8)}
		port := uint16(1024 + i&0xff)
		nc := conntrack.NewConn{
			In:     conntrack.Key{SrcIP: cl, DstIP: vip, SrcPort: port, DstPort: 80, Proto: ipvs.ProtoTCP},
			Out:    conntrack.Key{SrcIP: rip, DstIP: cl, SrcPort: 80, DstPort: port, Proto: ipvs.ProtoTCP},
			Dest:   dest,
			Method: ipvs.MethodMasq,
		}
		if _, err := d.CT.Create(&nc, 0x02, nil); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
	}
}

// heapPeak samples the live heap every millisecond while fn runs and
// returns how far it rose above where it started.
func heapPeak(fn func()) uint64 {
	old := debug.SetGCPercent(10) // collect garbage promptly: measure what is held
	defer debug.SetGCPercent(old)
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	base := s[0].Value.Uint64()
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	fn()
	close(stop)
	<-done
	if p := peak.Load(); p > base {
		return p - base
	}
	return 0
}

// Listing 200,000 conns (ipvsadm -L -n -c) streams them: neither the
// daemon nor the client holds the table's listing at once.
func TestConnListingBoundedMemory(t *testing.T) {
	dm := startDaemon(t, 1)
	adm(t, "", "-A", "-t", "198.18.0.100:80", "-s", "rr")
	adm(t, "", "-a", "-t", "198.18.0.100:80", "-r", "198.19.0.11:80", "-m")
	const n = 200000
	fillConns(t, dm.d, n)
	var lines countWriter
	var code int
	grew := heapPeak(func() {
		code = AdmMain([]string{"-L", "-n", "-c"}, strings.NewReader(""), &lines, io.Discard)
	})
	if code != 0 {
		t.Fatalf("-L -n -c: exit %d", code)
	}
	if lines.n != n+2 {
		t.Fatalf("-L -n -c printed %d lines, want %d conns and 2 header lines", lines.n, n)
	}
	t.Logf("listing %d conns raised the live heap by %.1f MB", n, float64(grew)/(1<<20))
	if grew > 32<<20 {
		t.Fatalf("listing %d conns raised the live heap by %.1f MB (bound: 32 MB)", n, float64(grew)/(1<<20))
	}
}

type countWriter struct{ n int }

func (w *countWriter) Write(b []byte) (int, error) {
	for _, c := range b {
		if c == '\n' {
			w.n++
		}
	}
	return len(b), nil
}
