package director

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
)

// TestLinkFlap takes the director's client-side link down and up while
// golvs serves: the kernel's ENETDOWN on the rings is counted
// (ring-errors) and logged naming the link, and once the link is up
// again connections through the VIP are forwarded again. (That the
// workers sleep again rather than spin on the reported error is
// netio's TestRingLinkFlap.)
func TestLinkFlap(t *testing.T) {
	topo := testutil.NATLab(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := lab.Serve(ctx, topo.RS[0], "rs1", []int{8080}, nil); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs []string
	logf := func(format string, args ...any) {
		mu.Lock()
		logs = append(logs, fmt.Sprintf(format, args...))
		mu.Unlock()
		t.Logf(format, args...)
	}
	var d *Director
	err := topo.Director.Do(func() (err error) {
		d, err = New(Config{
			Interfaces: []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}},
			Workers:    1,
			Conntrack:  conntrack.Config{Tick: 100 * time.Millisecond},
			FixHost:    true,
			Logf:       logf,
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	defer func() { cancel(); <-done; d.Close() }()
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 80}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddDest(k, ipvs.DestConfig{Addr: lab.RIP(1), Port: 8080, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	if err := d.WaitResolved(rctx); err != nil {
		t.Fatal(err)
	}
	// get retries a request through the VIP for up to 15 s.
	get := func(when string) {
		t.Helper()
		var last error
		for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			r, _, err := lab.GetPath(topo.Client, netip.AddrPortFrom(lab.VIP, 80), "/", 2*time.Second)
			if err == nil {
				err = r.Err
			}
			if last = err; err == nil && r.Body == "rs1" {
				return
			}
		}
		t.Fatalf("%s: no answer through the VIP: %v (drops %v)", when, last, d.Drops.Get())
	}
	get("before the flap")
	if err := lab.FlapLink(topo.Director, lab.DirExt); err != nil {
		t.Fatal(err)
	}
	want := "receive ring on " + lab.DirExt + ": network is down"
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		logged := false
		for _, l := range logs {
			logged = logged || strings.Contains(l, want)
		}
		mu.Unlock()
		if d.Drops.Get()[CntRingErrors] > 0 && logged {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("after a flap of %s: ring-errors %d, no log line %q", lab.DirExt, d.Drops.Get()[CntRingErrors], want)
		}
	}
	get("after the flap")
}
