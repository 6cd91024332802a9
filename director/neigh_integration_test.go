package director

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/packet"
)

// fastNeigh shortens the kernel's neighbour timers on the director's
// internal interface (base_reachable_time 1 s, first probe after 1 s,
// probes 200 ms apart), so that a test sees the kernel re-check a real
// server in seconds instead of the default half minute. golvs follows
// whatever the kernel is configured to do.
func fastNeigh(t *testing.T, ns *lab.NS, dev string) {
	t.Helper()
	for k, v := range map[string]string{"base_reachable_time_ms": "1000", "delay_first_probe_time": "1", "retrans_time_ms": "200"} {
		if _, err := lab.WriteSysctl(ns, "net/ipv4/neigh/"+dev+"/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
}

func tcpService(t *testing.T, d *Director, port uint16, rs netip.Addr) ipvs.ServiceKey {
	t.Helper()
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: port}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddDest(k, ipvs.DestConfig{Addr: rs, Port: 8080, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	return k
}

func destNext(d *Director, rs netip.Addr) *ipvs.NextHop {
	for _, sv := range d.Snapshot().List {
		for _, dd := range sv.Dests {
			if dd.Addr == rs {
				return dd.Next.Load()
			}
		}
	}
	return nil
}

// TestNeighFollowsMACChange: a real server changes its MAC (a replaced
// NIC, a VM moved) and sends nothing of its own accord. The director's
// next hop must follow the kernel's neighbour table, which re-checks the
// address and learns the new MAC, so that new connections work again
// within a bounded time (here seconds, with the kernel's timers
// shortened; by default reachable_time plus a few seconds).
func TestNeighFollowsMACChange(t *testing.T) {
	testutil.RequireNetns(t)
	nl := startNAT(t, 1, 8080, 5353)
	fastNeigh(t, nl.topo.Director, lab.DirInt)
	d := nl.d
	tcpService(t, d, 80, lab.RIP(1))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	vip := netip.AddrPortFrom(lab.VIP, 80)
	resp, err := lab.Get(nl.topo.Client, vip, 3, 5*time.Second)
	if err != nil || resp[2].Err != nil {
		t.Fatalf("before the change: %v %v", err, resp)
	}
	// The real server must have nothing left to send (a closing
	// connection would make it ARP for its gateway, and the director
	// would learn the new MAC from that): wait until its connections
	// are all in TIME_WAIT.
	quietTCP(t, nl.topo.RS[0])
	newMAC := net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x99, 0x01}
	err = nl.topo.RS[0].Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.LinkSetHardwareAddr(l, newMAC)
	})
	if err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	const bound = 30 * time.Second // generous: the kernel needs ~4 s here
	var last error
	for time.Since(changed) < bound {
		r, err := lab.Get(nl.topo.Client, vip, 1, time.Second)
		if err == nil && r[0].Err == nil {
			nh := destNext(d, lab.RIP(1))
			if nh == nil || net.HardwareAddr(nh.DstMAC[:]).String() != newMAC.String() {
				t.Fatalf("a connection went through, but the next hop is %+v, want MAC %s", nh, newMAC)
			}
			t.Logf("new connections work again %v after the MAC change", time.Since(changed).Round(time.Millisecond))
			return
		}
		last = r[0].Err
	}
	t.Fatalf("no new connection got through in the %v after the real server's MAC changed (last error %v; next hop %+v; drops %v)",
		bound, last, destNext(d, lab.RIP(1)), d.Drops.Get())
}

// quietTCP waits until every TCP socket in ns listens or sits in
// TIME_WAIT, states that send nothing of their own accord.
func quietTCP(t *testing.T, ns *lab.NS) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var busy []string
		err := ns.Do(func() error {
			b, err := os.ReadFile("/proc/thread-self/net/tcp")
			if err != nil {
				return err
			}
			for _, line := range strings.Split(string(b), "\n")[1:] {
				f := strings.Fields(line)
				if len(f) > 3 && f[3] != "06" && f[3] != "0A" {
					busy = append(busy, f[1]+"->"+f[2]+" state "+f[3])
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(busy) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still has busy TCP sockets: %v", ns.Name, busy)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNewDestFirstSYN: the first SYN to a real server that was just added
// must not be dropped for want of its next hop.
func TestNewDestFirstSYN(t *testing.T) {
	testutil.RequireNetns(t)
	nl := startNAT(t, 2, 8080, 5353)
	d := nl.d
	tcpService(t, d, 80, lab.RIP(1))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	// The client knows the VIP's MAC already, so its next SYN leaves at
	// once.
	if r, err := lab.Get(nl.topo.Client, netip.AddrPortFrom(lab.VIP, 80), 1, 5*time.Second); err != nil || r[0].Err != nil {
		t.Fatalf("first service: %v %v", err, r)
	}
	before := d.Drops.Get()[CntNoNextHop]
	tcpService(t, d, 81, lab.RIP(2)) // a real server the director never talked to
	r, err := lab.Get(nl.topo.Client, netip.AddrPortFrom(lab.VIP, 81), 1, 10*time.Second)
	if err != nil || r[0].Err != nil {
		t.Fatalf("request to the new real server: %v %v", err, r)
	}
	if got := d.Drops.Get()[CntNoNextHop] - before; got != 0 {
		t.Fatalf("%d packets dropped as %s right after the real server was added; want 0", got, CounterNames[CntNoNextHop])
	}
}

// TestARPFloodBounded: ARP from any number of senders must not grow the
// director's memory (each sender used to get a cache entry for ever).
func TestARPFloodBounded(t *testing.T) {
	testutil.RequireNetns(t)
	nl := startNAT(t, 1, 8080, 5353)
	d := nl.d
	tcpService(t, d, 80, lab.RIP(1))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	const n, chunk = 100000, 2000
	h0 := heap()
	answered0 := d.Drops.Get()[CntARPAnswered]
	// A plain packet socket in the client: the test sends raw ARP, nothing
	// more. It stays in the client's namespace after Do returns.
	fd := -1
	var to unix.SockaddrLinklayer
	err := nl.topo.Client.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		to = unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var mac [6]byte
	bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	var b [60]byte
	for i := 0; i < n; i++ {
		_, _ = rand.Read(mac[:])
		mac[0] = mac[0]&^1 | 2 // unicast, locally administered
		ip := [4]byte{198, 18, byte(i >> 8), byte(i)}
		if i%100 == 0 {
			ip = [4]byte{198, 18, 0, 10} // the client itself, asking for the VIP
		}
		packet.BuildARP(b[:], packet.ARPRequest, mac, bcast, mac, ip, [6]byte{}, lab.VIP.As4())
		if err := unix.Sendto(fd, b[:], 0, &to); err != nil {
			if errors.Is(err, syscall.ENOBUFS) {
				i--
				time.Sleep(time.Millisecond)
				continue
			}
			t.Fatal(err)
		}
		if (i+1)%chunk == 0 {
			// Paced: at most a chunk in flight, so no ring overflows
			// however busy the machine. The director answers each (they
			// ask for the VIP).
			deadline := time.Now().Add(10 * time.Second)
			for d.Drops.Get()[CntARPAnswered]-answered0 < uint64(i+1-chunk/10) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for d.Drops.Get()[CntARPAnswered]-answered0 < n*95/100 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	seen := d.Drops.Get()[CntARPAnswered] - answered0
	grew := int64(heap()) - int64(h0)
	t.Logf("%d ARP requests from %d senders answered; heap %+d bytes", seen, n, grew)
	if seen < n*95/100 {
		t.Fatalf("the director saw only %d of %d ARP requests", seen, n)
	}
	if grew > 4<<20 {
		t.Fatalf("the heap grew by %d bytes over %d ARP requests from distinct senders; want it bounded (< 4 MiB)", grew, seen)
	}
}

// mtuLab is a client, a director and a real server reached by IPIP over
// the director's int0, whose interface index the test chooses.
type mtuLab struct {
	client, director, rs *lab.NS
	d                    *Director
	intIndex             int
}

func buildMTULab(t *testing.T, intIndex, mtu int) *mtuLab {
	t.Helper()
	sfx := lab.RandomSuffix()
	ml := &mtuLab{intIndex: intIndex}
	for _, p := range []struct {
		ns   **lab.NS
		name string
	}{{&ml.client, "mtucli"}, {&ml.director, "mtudir"}, {&ml.rs, "mturs"}} {
		ns, err := lab.NewNS(p.name + sfx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ns.Delete)
		*p.ns = ns
	}
	link := func(a *lab.NS, an string, aIndex, aMTU int, aAddr string, b *lab.NS, bn, bAddr string) {
		h, err := netlink.NewHandleAt(a.Handle)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: an, Index: aIndex, MTU: aMTU}, PeerName: bn, PeerNamespace: netlink.NsFd(int(b.Handle))}
		if err := h.LinkAdd(v); err != nil {
			t.Fatalf("veth %s (index %d): %v", an, aIndex, err)
		}
		for _, e := range []struct {
			ns   *lab.NS
			dev  string
			addr string
		}{{a, an, aAddr}, {b, bn, bAddr}} {
			hh, err := netlink.NewHandleAt(e.ns.Handle)
			if err != nil {
				t.Fatal(err)
			}
			l, err := hh.LinkByName(e.dev)
			if err == nil {
				var ad *netlink.Addr
				if ad, err = netlink.ParseAddr(e.addr); err == nil {
					if err = hh.AddrAdd(l, ad); err == nil {
						err = hh.LinkSetUp(l)
					}
				}
			}
			hh.Close()
			if err != nil {
				t.Fatalf("%s/%s: %v", e.ns.Name, e.dev, err)
			}
		}
	}
	link(ml.director, lab.DirExt, 0, 1500, "198.18.0.1/24", ml.client, "eth0", "198.18.0.10/24")
	link(ml.director, lab.DirInt, intIndex, mtu, "198.19.1.1/24", ml.rs, "eth0", "198.19.1.11/24")
	err := ml.director.Do(func() error {
		var err error
		ml.d, err = New(Config{
			Interfaces: []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}},
			Workers:    1,
			Conntrack:  conntrack.Config{Tick: 100 * time.Millisecond, Shards: 16},
			FixHost:    true,
			Logf:       t.Logf,
		})
		return err
	})
	if err != nil {
		t.Fatalf("starting director: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = ml.d.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	k := ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: lab.VIP, Port: 9}
	if err := ml.d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	if err := ml.d.AddDest(k, ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.1.11"), Method: ipvs.MethodTunnel, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	if err := ml.d.WaitResolved(wctx); err != nil {
		t.Fatal(err)
	}
	return ml
}

// pmtuProbe is a connected UDP socket in the client, with DF set on
// everything it sends, whose path MTU the kernel lowers on ICMP
// fragmentation-needed.
type pmtuProbe struct{ fd int }

func newPMTUProbe(t *testing.T, ns *lab.NS) *pmtuProbe {
	t.Helper()
	p := &pmtuProbe{fd: -1}
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		p.fd = fd
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO); err != nil {
			return err
		}
		return unix.Connect(fd, &unix.SockaddrInet4{Addr: lab.VIP.As4(), Port: 9})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p.fd) })
	return p
}

// send sends one datagram of ipLen bytes (IP header included); the kernel
// refuses it locally (EMSGSIZE) once it knows the path is narrower.
func (p *pmtuProbe) send(ipLen int) { _, _ = unix.Write(p.fd, make([]byte, ipLen-28)) }

func (p *pmtuProbe) mtu() int {
	v, err := unix.GetsockoptInt(p.fd, unix.IPPROTO_IP, unix.IP_MTU)
	if err != nil {
		return -1
	}
	return v
}

// waitPMTU sends ipLen-byte datagrams until the client's path MTU to the
// VIP reads want.
func (p *pmtuProbe) waitPMTU(t *testing.T, ipLen, want int, what string, d *Director) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		p.send(ipLen)
		if p.mtu() == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: the client's path MTU to the VIP is %d, want %d from the director's fragmentation-needed (modes %v)", what, p.mtu(), want, d.ModeCounters())
}

// TestLinkMTUFollowed: TUN's fragmentation-needed carries the egress
// link's MTU less the tunnel's 20 bytes, whatever the link's interface
// index (container hosts have indexes in the tens of thousands), and
// follows a live change of the MTU.
func TestLinkMTUFollowed(t *testing.T) {
	testutil.RequireNetns(t)
	for _, idx := range []int{0, 40000 + int(time.Now().UnixNano()%20000)} {
		t.Run(fmt.Sprintf("ifindex-%s", map[bool]string{true: "low", false: "high"}[idx == 0]), func(t *testing.T) {
			ml := buildMTULab(t, idx, 1400)
			p := newPMTUProbe(t, ml.client)
			p.waitPMTU(t, 1400, 1380, "link MTU 1400", ml.d)
			err := ml.director.Do(func() error {
				l, err := netlink.LinkByName(lab.DirInt)
				if err != nil {
					return err
				}
				if idx != 0 && l.Attrs().Index != idx {
					return fmt.Errorf("int0 has index %d, want %d", l.Attrs().Index, idx)
				}
				return netlink.LinkSetMTU(l, 1300)
			})
			if err != nil {
				t.Fatal(err)
			}
			p.waitPMTU(t, 1380, 1280, "link MTU changed to 1300", ml.d)
		})
	}
}

// lineLog collects a director's log lines.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) logf(format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *lineLog) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

// TestNoRouteLoggedOnce: a real server the director has no route to is
// retried (every half second, and on every kick) but logged once, not on
// every retry.
func TestNoRouteLoggedOnce(t *testing.T) {
	testutil.RequireNetns(t)
	topo := testutil.NATLab(t, 1)
	var log lineLog
	var d *Director
	err := topo.Director.Do(func() error {
		var err error
		d, err = New(Config{
			Interfaces: []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}},
			Workers:    1,
			Conntrack:  conntrack.Config{Tick: 100 * time.Millisecond, Shards: 16},
			FixHost:    true,
			Logf:       log.logf,
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 80}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	const unrouted = "198.18.200.1" // the director has no route there
	if err := d.AddDest(k, ipvs.DestConfig{Addr: netip.MustParseAddr(unrouted), Port: 80, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	// WaitResolved kicks the resolver every 50 ms for two seconds: dozens
	// of retries.
	wctx, wcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer wcancel()
	if err := d.WaitResolved(wctx); err == nil {
		t.Fatal("a real server without a route resolved")
	}
	if n := log.count(unrouted); n != 1 {
		t.Fatalf("%d log lines about %s, want 1:\n%s", n, unrouted, strings.Join(log.lines, "\n"))
	}
}
