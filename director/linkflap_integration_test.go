package director

import (
	"context"
	"net/netip"
	"testing"
	"time"

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
	nl := startNAT(t, 1, 8080, 53)
	d := nl.d
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 80}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddDest(k, ipvs.DestConfig{Addr: lab.RIP(1), Port: 8080, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	// get retries a request through the VIP for up to 15 s.
	get := func(when string) {
		t.Helper()
		var last error
		for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			r, _, err := lab.GetPath(nl.topo.Client, netip.AddrPortFrom(lab.VIP, 80), "/", 2*time.Second)
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
	if err := lab.FlapLink(nl.topo.Director, lab.DirExt); err != nil {
		t.Fatal(err)
	}
	want := "receive ring on " + lab.DirExt + ": network is down"
	for end := time.Now().Add(10 * time.Second); d.Drops.Get()[CntRingErrors] == 0 || !nl.logged(want); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("after a flap of %s: ring-errors %d, logged %q: %v", lab.DirExt, d.Drops.Get()[CntRingErrors], want, nl.logged(want))
		}
	}
	get("after the flap")
}
