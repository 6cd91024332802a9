package control

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
)

// A restart that loses the connection table (kill -9, or a plain restart):
// without sloppy_tcp the new director drops every packet of the old
// flows (they are not SYNs); with it, the next packet of each flow
// creates its conn again, and sh with sh-port sends it to the real server
// it had, so the connections carry on.
func TestSloppyTCPAfterRestart(t *testing.T) {
	topo := testutil.NATLab(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for i, ns := range topo.RS {
		testutil.EchoServe(t, ctx, ns, lab.RIP(i+1).String(), 7)
	}
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 7}
	model := director.Model{Services: []ipvs.ServiceConfig{{ServiceKey: k, Sched: "sh", Flags: ipvs.SvcSched2, Dests: []ipvs.DestConfig{
		{Addr: lab.RIP(2), Port: 7, Method: ipvs.MethodMasq, Weight: 1},
		{Addr: lab.RIP(1), Port: 7, Method: ipvs.MethodMasq, Weight: 1},
	}}}}
	start := func(sloppy bool) (*director.Director, func()) {
		t.Helper()
		var d *director.Director
		err := topo.Director.Do(func() error {
			var err error
			d, err = director.New(director.Config{
				Interfaces: []director.Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}},
				Workers:    2, FixHost: true, SloppyTCP: sloppy,
				Conntrack: conntrack.Config{Tick: 100 * time.Millisecond},
			})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Apply(model); err != nil { // zero timeouts: keep the table's
			t.Fatal(err)
		}
		dctx, dcancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = d.Run(dctx) }()
		wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer wcancel()
		if err := d.WaitResolved(wctx); err != nil {
			t.Fatal(err)
		}
		stop := func() { dcancel(); <-done }
		t.Cleanup(stop)
		return d, stop
	}
	_, stopA := start(false)
	var conns []*testutil.EchoConn
	for i := 0; i < 6; i++ {
		conns = append(conns, testutil.DialEcho(t, topo.Client, netip.AddrPortFrom(lab.VIP, 7)))
	}
	lost := testutil.DialEcho(t, topo.Client, netip.AddrPortFrom(lab.VIP, 7))
	stopA()

	// A new director without sloppy_tcp: the old flows are dead to it.
	b, stopB := start(false)
	if _, err := lost.Ping(time.Second); err == nil {
		t.Fatal("a flow from before the restart was forwarded without sloppy_tcp")
	}
	if n := b.Drops[director.CntNoConn].Load(); n == 0 {
		t.Fatalf("no packet counted as no-conn (drops %v)", b.Drops.Get())
	}
	stopB()

	// With sloppy_tcp the same flows carry on, each on its real server.
	c, _ := start(true)
	testutil.CheckEcho(t, conns, 10*time.Second, "after a restart with sloppy_tcp")
	if n := c.CT.Len(); n < len(conns) {
		t.Fatalf("%d conns in the new table, want at least %d", n, len(conns))
	}
}
