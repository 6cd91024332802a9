package director

import (
	"context"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
)

// TestNATTxRing runs real TCP through a director that sends through
// PACKET_TX_RINGs (--tx ring): every request is answered, through both
// real servers, and nothing is counted as dropped or refused.
func TestNATTxRing(t *testing.T) {
	topo := testutil.NATLab(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i, ns := range topo.RS {
		if _, err := lab.Serve(ctx, ns, nameOf(i), []int{8080}, nil); err != nil {
			t.Fatal(err)
		}
	}
	var d *Director
	err := topo.Director.Do(func() error {
		var err error
		d, err = New(Config{
			Interfaces: []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}},
			Workers:    2,
			TxRing:     true,
			FixHost:    true,
			Logf:       t.Logf,
		})
		return err
	})
	if err != nil {
		t.Fatalf("starting director: %v", err)
	}
	procsBefore := runtime.GOMAXPROCS(0)
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()
	svc := ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 80}, Sched: "rr"}
	if err := d.AddService(svc); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if err := d.AddDest(svc.ServiceKey, ipvs.DestConfig{Addr: lab.RIP(i), Port: 8080, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
			t.Fatal(err)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := d.WaitResolved(wctx); err != nil {
		t.Fatal(err)
	}
	// Run gives each worker a P of its own while they run (procs.go).
	for len(d.WorkerThreads()) < 2 && wctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	if got := runtime.GOMAXPROCS(0); got != procsBefore+2 {
		t.Errorf("GOMAXPROCS %d while 2 workers run, want %d", got, procsBefore+2)
	}
	found := false
	for _, l := range d.HostReport() {
		found = found || l == "transmit: a PACKET_TX_RING per worker and interface, one non-blocking kick per batch, qdisc bypassed"
	}
	if !found {
		t.Errorf("relies-on lines %q do not name the TX ring", d.HostReport())
	}
	const n = 200
	resp, err := lab.GetParallel(topo.Client, netip.AddrPortFrom(lab.VIP, 80), n, 4, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for i, r := range resp {
		if r.Err != nil {
			t.Fatalf("request %d: %v (counters %v)", i, r.Err, d.Drops.Get())
		}
		counts[r.Body]++
	}
	if counts["rs1"] != n/2 || counts["rs2"] != n/2 {
		t.Fatalf("rr split %v, want %d each", counts, n/2)
	}
	if c := d.Drops.Get(); c[CntTxErrors] != 0 || c[CntTxDropped] != 0 {
		t.Fatalf("tx-errors %d, tx-dropped %d; want 0", c[CntTxErrors], c[CntTxDropped])
	}
	cancel()
	<-done
	stopped = true
	if got := runtime.GOMAXPROCS(0); got != procsBefore {
		t.Errorf("GOMAXPROCS %d after Run returned, want %d as before", got, procsBefore)
	}
}
