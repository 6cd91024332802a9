package director

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/netio"
)

// TestSYNFloodThroughDirector floods a NAT service with SYNs from random
// sources (real frames from the client's namespace, answered by the real
// server's kernel) until the connection table is full, then measures
// legitimate HTTP requests during the flood and after it. With golvs's
// defaults a new conn replaces a half-open one at the limit, so at least
// 90% get through both times; the table as it was (refusing new conns at
// the limit) lets none through while the flood's SYN_RECV entries live.
//
// Nothing depends on how fast the machine is: the flood is paced by the
// director itself (at most 1,000 SYNs sent and not yet handled, and at
// most ~40,000 SYN/s), so the director's queue stays short and a
// legitimate handshake waits behind a few thousand flood SYNs at most,
// while the table (20,000 entries) takes five times that to turn over;
// the measurement starts once the table is full, whatever that took, and
// every request may retransmit its SYN within its timeout.
func TestSYNFloodThroughDirector(t *testing.T) {
	testutil.RequireNetns(t)
	t.Run("evict at the limit (default)", func(t *testing.T) {
		during, after, st := synFlood(t, conntrack.Config{}, 20, 10, 3*time.Second)
		t.Logf("legitimate requests: %d/20 during the flood, %d/10 after; table: %d evicted, %d refused", during, after, st.Evicted, st.Dropped)
		if during < 18 || after < 9 {
			t.Fatalf("legitimate requests: %d/20 during the flood, %d/10 after; want >= 90%%", during, after)
		}
	})
	t.Run("refuse at the limit (before)", func(t *testing.T) {
		during, after, st := synFlood(t, conntrack.Config{NoEvict: true}, 5, 5, 2*time.Second)
		t.Logf("legitimate requests: %d/5 during the flood, %d/5 after; table: %d refused", during, after, st.Dropped)
		if during > 1 || after > 1 {
			t.Fatalf("a full table that refuses new conns let %d/5 and %d/5 requests through", during, after)
		}
	})
}

func synFlood(t *testing.T, ct conntrack.Config, nDuring, nAfter int, timeout time.Duration) (during, after int, st conntrack.Stats) {
	const tableSize = 20000
	topo := testutil.NATLab(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := lab.Serve(ctx, topo.RS[0], "rs1", []int{8080}, nil); err != nil {
		t.Fatal(err)
	}
	ct.Tick, ct.Shards, ct.MaxEntries = 100*time.Millisecond, 16, tableSize
	var d *Director
	err := topo.Director.Do(func() error {
		var err error
		d, err = New(Config{
			Interfaces: []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}},
			Workers:    1,
			Conntrack:  ct,
			FixHost:    true,
			Logf:       t.Logf,
		})
		return err
	})
	if err != nil {
		t.Fatalf("starting director: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	svc := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 80}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: svc, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddDest(svc, ipvs.DestConfig{Addr: lab.RIP(1), Port: 8080, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	if err := d.WaitResolved(rctx); err != nil {
		t.Fatal(err)
	}
	vip := netip.AddrPortFrom(lab.VIP, 80)
	if r, err := lab.Get(topo.Client, vip, 1, 5*time.Second); err != nil || r[0].Err != nil {
		t.Fatalf("request before the flood: %v %v", err, r)
	}

	// The flood: SYNs to the VIP from random addresses of 198.18.128.0/17
	// and random ports, sent from the client's interface.
	var tx *netio.Tx
	var cliMAC, dirMAC [6]byte
	err = topo.Client.Do(func() error {
		var err error
		if tx, err = netio.OpenTx("eth0"); err != nil {
			return err
		}
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		copy(cliMAC[:], ifi.HardwareAddr)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	_ = topo.Director.Do(func() error {
		ifi, err := net.InterfaceByName(lab.DirExt)
		if err == nil {
			copy(dirMAC[:], ifi.HardwareAddr)
		}
		return err
	})
	tmpl := frame(t, 0, cliMAC, dirMAC, lab.CIP, lab.VIP, 6, 40000, 80, 0x02, nil)
	var sent atomic.Int64
	stop := make(chan struct{})
	var fw sync.WaitGroup
	fw.Add(1)
	go func() {
		defer fw.Done()
		const batch = 40 // at most every 1 ms: ~40,000 SYN/s
		r := rand.New(rand.NewPCG(11, 13))
		bufs := make([][]byte, batch)
		for i := range bufs {
			bufs[i] = append([]byte(nil), tmpl.Buf()...)
		}
		end := time.Now().Add(60 * time.Second) // a bound, whatever happens
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for time.Now().Before(end) {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if st := d.CT.Stats(); sent.Load()-int64(st.Created+st.Dropped) > 1000 {
				continue // the director is behind: let it catch up
			}
			for _, b := range bufs {
				copy(b, tmpl.Buf())
				v := r.Uint32()
				stampFlow(b[netio.VnetHdrLen:], [4]byte{198, 18, 128 | byte(v>>24&0x7f), byte(v >> 16)}, uint16(v)|1024)
				tx.Queue(b)
			}
			tx.Flush()
			sent.Add(batch)
		}
	}()
	stopFlood := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		fw.Wait()
	}
	defer stopFlood()

	// Measure once the table is full: a flood SYN found no free entry
	// (it was refused, or replaced a half-open conn), so no free entry is
	// left for a legitimate SYN to take however slowly the flood runs.
	deadline := time.Now().Add(30 * time.Second)
	for st := d.CT.Stats(); st.Dropped+st.Evicted == 0; st = d.CT.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("the flood did not fill the table in 30 s: %d entries after %d SYNs (drops %v)", d.CT.Len(), sent.Load(), d.Drops.Get())
		}
		time.Sleep(20 * time.Millisecond)
	}
	count := func(rs []lab.Response, err error) int {
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range rs {
			if r.Err == nil && r.Body == "rs1" {
				n++
			}
		}
		return n
	}
	// In rounds of 5, 200 ms apart, while the flood goes on.
	before := d.CT.Stats().Evicted
	for i := 0; i < nDuring; i += 5 {
		if i > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		during += count(lab.GetParallel(topo.Client, vip, min(5, nDuring-i), 5, timeout))
	}
	floodSent := sent.Load()
	t.Logf("%d entries evicted while the requests were made", d.CT.Stats().Evicted-before)
	stopFlood()
	after = count(lab.GetParallel(topo.Client, vip, nAfter, 5, timeout))
	st = d.CT.Stats()
	t.Logf("flood: %d SYNs; table %d/%d entries; director drops %v", floodSent, d.CT.Len(), tableSize, d.Drops.Get())
	return during, after, st
}
