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

// natLab is a running NAT lab with a director in this process.
type natLab struct {
	topo    *lab.Topology
	d       *Director
	servers []*lab.Server
	cancel  context.CancelFunc
	done    chan struct{}
	logMu   sync.Mutex
	logs    []string // what the director logged
}

// logged reports whether the director has logged a line containing s.
func (nl *natLab) logged(s string) bool {
	nl.logMu.Lock()
	defer nl.logMu.Unlock()
	for _, l := range nl.logs {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// startNAT builds the lab, starts real servers on tcpPort/udpPort and a
// director with short timeouts, and stops it all at cleanup.
func startNAT(t *testing.T, rs int, tcpPort, udpPort int) *natLab {
	t.Helper()
	topo := testutil.NATLab(t, rs)
	ctx, cancel := context.WithCancel(context.Background())
	nl := &natLab{topo: topo, cancel: cancel, done: make(chan struct{})}
	for i, ns := range topo.RS {
		s, err := lab.Serve(ctx, ns, nameOf(i), []int{tcpPort}, []int{udpPort})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		nl.servers = append(nl.servers, s)
	}
	err := topo.Director.Do(func() error {
		var err error
		nl.d, err = New(Config{
			Interfaces: []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}},
			Workers:    2,
			Conntrack:  conntrack.Config{Tick: 100 * time.Millisecond, Shards: 64},
			FixHost:    true,
			Logf: func(format string, args ...any) {
				nl.logMu.Lock()
				nl.logs = append(nl.logs, fmt.Sprintf(format, args...))
				nl.logMu.Unlock()
				t.Logf(format, args...)
			},
		})
		return err
	})
	if err != nil {
		cancel()
		t.Fatalf("starting director: %v", err)
	}
	go func() {
		defer close(nl.done)
		_ = nl.d.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-nl.done
	})
	return nl
}

func nameOf(i int) string { return "rs" + string(rune('1'+i)) }

func TestNATEndToEnd(t *testing.T) {
	nl := startNAT(t, 2, 8080, 53)
	d := nl.d
	// Short timeouts so the table drains within the test.
	shortTimeouts(d)

	vip := lab.VIP
	tcpSvc := ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}, Sched: "rr"}
	udpSvc := ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: vip, Port: 53}, Sched: "rr"}
	for _, s := range []ipvs.ServiceConfig{tcpSvc, udpSvc} {
		if err := d.AddService(s); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 2; i++ {
		if err := d.AddDest(tcpSvc.ServiceKey, ipvs.DestConfig{Addr: lab.RIP(i), Port: 8080, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
			t.Fatal(err)
		}
		if err := d.AddDest(udpSvc.ServiceKey, ipvs.DestConfig{Addr: lab.RIP(i), Port: 53, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}

	const n = 1000
	resp, err := lab.GetParallel(nl.topo.Client, netip.AddrPortFrom(vip, 80), n, 8, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for i, r := range resp {
		if r.Err != nil {
			t.Fatalf("request %d: %v (drops %v)", i, r.Err, d.Drops.Get())
		}
		if r.Remote != netip.AddrPortFrom(vip, 80) {
			t.Fatalf("request %d answered from %s, want %s:80", i, r.Remote, vip)
		}
		counts[r.Body]++
	}
	if counts["rs1"] != n/2 || counts["rs2"] != n/2 {
		t.Fatalf("rr split %v, want %d each", counts, n/2)
	}
	for _, s := range nl.servers {
		seen := s.Seen()
		if len(seen) != 1 || seen[lab.CIP] != n/2 {
			t.Fatalf("%s saw sources %v, want only the client %s (%d times)", s.Name, seen, lab.CIP, n/2)
		}
	}
	// The service's and dests' counters match the scheduler's choices.
	snap := d.Snapshot()
	for _, sv := range snap.List {
		if sv.Config.Proto != ipvs.ProtoTCP {
			continue
		}
		if got := sv.Stats.Conns.Load(); got != n {
			t.Fatalf("service conns = %d, want %d", got, n)
		}
		for _, dd := range sv.Dests {
			if got := dd.Stats.Conns.Load(); got != n/2 {
				t.Fatalf("dest %s conns = %d, want %d", dd.Addr, got, n/2)
			}
		}
	}

	// UDP request/response with a reply from the VIP.
	for i := 0; i < 4; i++ {
		body, from, err := lab.UDPAsk(nl.topo.Client, netip.AddrPortFrom(vip, 53), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if from != netip.AddrPortFrom(vip, 53) {
			t.Fatalf("UDP answer from %s, want %s:53", from, vip)
		}
		if body != "rs1" && body != "rs2" {
			t.Fatalf("UDP answer %q", body)
		}
	}

	// The table drains once the (short) timeouts pass.
	deadline := time.Now().Add(60 * time.Second)
	for d.CT.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("connection table still holds %d entries", d.CT.Len())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, sv := range d.Snapshot().List {
		for _, dd := range sv.Dests {
			if dd.ActiveConns() != 0 || dd.InactConns() != 0 {
				t.Fatalf("dest %s counters active=%d inactive=%d after drain", dd.Addr, dd.ActiveConns(), dd.InactConns())
			}
		}
	}
	t.Logf("drops: %v", d.Drops.Get())
}
