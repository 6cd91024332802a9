package director

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/rstun"
)

// modeLab is a DR, TUN or FULLNAT lab with a director in this process.
type modeLab struct {
	mt      *lab.ModeTopology
	d       *Director
	servers []*lab.Server
	ctx     context.Context
	eps     []*rstun.Endpoint // TUN: rs-tun in each real server
}

func startMode(t *testing.T, mode string, rs int, ifaces []Interface, tcpPorts, udpPorts []int) *modeLab {
	t.Helper()
	return startModeLab(t, mode, rs, ifaces, tcpPorts, udpPorts, false)
}

// startModeLab is startMode for any mode (nat too), in a dual-stack lab
// with v6: the real servers serve both families (DR and TUN: UDP from the
// IPv6 VIP), rs-tun takes both VIPs.
func startModeLab(t *testing.T, mode string, rs int, ifaces []Interface, tcpPorts, udpPorts []int, v6 bool) *modeLab {
	t.Helper()
	testutil.RequireNetns(t)
	o := lab.Options{Suffix: lab.RandomSuffix(), RealServers: rs, IPv6: v6}
	var mt *lab.ModeTopology
	var err error
	switch mode {
	case "nat":
		var topo *lab.Topology
		if topo, err = lab.BuildNAT(o); err == nil {
			mt = &lab.ModeTopology{Topology: topo}
		}
	case "dr":
		mt, err = lab.BuildDR(o)
	case "tun":
		mt, err = lab.BuildTUN(o)
	case "fullnat":
		mt, err = lab.BuildFullNAT(o)
	}
	if err != nil {
		t.Fatalf("building %s lab: %v", mode, err)
	}
	t.Cleanup(mt.Close)
	ctx, cancel := context.WithCancel(context.Background())
	ml := &modeLab{mt: mt, ctx: ctx}
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
	})
	if mode == "tun" {
		ml.eps = startRSTun(t, ml, 6080)
	}
	for i, ns := range mt.RS {
		var s *lab.Server
		switch {
		case (mode == "fullnat" || mode == "nat") && v6:
			s, err = lab.Serve6(ctx, ns, nameOf(i), tcpPorts, udpPorts)
		case mode == "fullnat" || mode == "nat":
			s, err = lab.Serve(ctx, ns, nameOf(i), tcpPorts, udpPorts)
		case v6: // the VIP is local there: answer UDP from it
			s, err = lab.ServeAt(ctx, ns, nameOf(i), lab.VIP6, tcpPorts, udpPorts)
		default:
			s, err = lab.ServeAt(ctx, ns, nameOf(i), lab.VIP, tcpPorts, udpPorts)
		}
		if err != nil {
			close(done)
			t.Fatal(err)
		}
		ml.servers = append(ml.servers, s)
	}
	err = mt.Director.Do(func() error {
		var err error
		ml.d, err = New(Config{
			Interfaces: ifaces,
			Workers:    2,
			Conntrack:  conntrack.Config{Tick: 100 * time.Millisecond, Shards: 64},
			FixHost:    true,
			Logf:       t.Logf,
		})
		return err
	})
	if err != nil {
		close(done)
		t.Fatalf("starting director: %v", err)
	}
	go func() {
		defer close(done)
		_ = ml.d.Run(ctx)
	}()
	return ml
}

// shortTimeouts makes the table drain soon after the traffic ends: the
// closing states expire after one second. The states a connection sits in
// while it is open (SYN_RECV, ESTABLISHED) keep timeouts no busy machine can
// outlast between two packets of one flow, so load never expires a live
// connection; the test's conns all close, so none is left in them.
func shortTimeouts(d *Director) {
	for _, st := range []uint8{conntrack.TCPTimeWait, conntrack.TCPClose, conntrack.TCPCloseWait, conntrack.TCPLastAck, conntrack.TCPFinWait} {
		d.CT.SetStateTimeout(st, 1)
	}
	d.CT.SetStateTimeout(conntrack.TCPSynRecv, 20)
	d.CT.SetStateTimeout(conntrack.TCPEstablished, 20)
	d.CT.SetTimeouts(0, 0, 5)
}

func (ml *modeLab) addServices(t *testing.T, port uint16, dest func(i int) ipvs.DestConfig) (tcp, udp ipvs.ServiceKey) {
	t.Helper()
	return ml.addServicesAt(t, lab.VIP, port, dest)
}

// addServicesAt is addServices for the VIP vip (lab.VIP6 for IPv6).
func (ml *modeLab) addServicesAt(t *testing.T, vip netip.Addr, port uint16, dest func(i int) ipvs.DestConfig) (tcp, udp ipvs.ServiceKey) {
	t.Helper()
	tcp = ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: port}
	udp = ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: vip, Port: 53}
	for _, k := range []ipvs.ServiceKey{tcp, udp} {
		if err := ml.d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
			t.Fatal(err)
		}
		for i := range ml.mt.RS {
			dc := dest(i)
			if k.Proto == ipvs.ProtoUDP && dc.Port != 0 {
				dc.Port = 53
			}
			if err := ml.d.AddDest(k, dc); err != nil {
				t.Fatalf("adding %s to %s: %v", dc.AddrPort(), k, err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := ml.d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	return tcp, udp
}

// frameCounter counts frames seen on an interface of a namespace that
// match pred (a raw AF_PACKET capture, both directions).
type frameCounter struct {
	n    atomic.Int64
	fd   int
	done chan struct{}
}

func countFrames(t *testing.T, ns *lab.NS, dev string, pred func(frame []byte) bool) *frameCounter {
	t.Helper()
	fc := &frameCounter{fd: -1, done: make(chan struct{})}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons16(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons16(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
		fc.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("capture on %s/%s: %v", ns.Name, dev, err)
	}
	var stop atomic.Bool
	go func() {
		defer close(fc.done)
		buf := make([]byte, 65536)
		for !stop.Load() {
			n, _, err := unix.Recvfrom(fc.fd, buf, 0)
			if err != nil {
				continue
			}
			if pred(buf[:n]) {
				fc.n.Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		stop.Store(true)
		<-fc.done
		unix.Close(fc.fd)
	})
	return fc
}

func htons16(v uint16) uint16 { return v<<8 | v>>8 }

// fromVIP matches IPv4 frames with the VIP as source (replies).
func fromVIP(f []byte) bool {
	return len(f) >= 34 && binary.BigEndian.Uint16(f[12:]) == 0x0800 && netip.AddrFrom4([4]byte(f[26:30])) == lab.VIP
}

// checkTraffic sends n HTTP requests and 4 UDP exchanges through the VIP
// and checks answers, the rr split, what each real server saw as source
// (want), and the scheduler's counters.
func (ml *modeLab) checkTraffic(t *testing.T, n int, port uint16, want func(netip.Addr) bool) {
	t.Helper()
	ml.checkTrafficAt(t, lab.VIP, n, port, want)
}

// checkTrafficAt is checkTraffic through the VIP vipA (lab.VIP6 for IPv6).
func (ml *modeLab) checkTrafficAt(t *testing.T, vipA netip.Addr, n int, port uint16, want func(netip.Addr) bool) {
	t.Helper()
	d := ml.d
	vip := netip.AddrPortFrom(vipA, port)
	resp, err := lab.GetParallel(ml.mt.Client, vip, n, 8, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for i, r := range resp {
		if r.Err != nil {
			t.Fatalf("request %d: %v (drops %v, modes %v)", i, r.Err, d.Drops.Get(), d.ModeCounters())
		}
		if r.Remote != vip {
			t.Fatalf("request %d answered from %s, want %s", i, r.Remote, vip)
		}
		counts[r.Body]++
	}
	for _, s := range ml.servers {
		for a, c := range s.Seen() {
			if !want(a) {
				t.Fatalf("%s saw source %s (%d times)", s.Name, a, c)
			}
		}
		if s.Requests() != counts[s.Name] {
			t.Fatalf("%s answered %d requests, the client got %d from it", s.Name, s.Requests(), counts[s.Name])
		}
	}
	// rr's choices alternate exactly over the conns it scheduled. A client
	// port reused while its old conn is still in FIN_WAIT (DR and TUN see
	// no replies, so conns linger there) stays with its old real server
	// without a new pick, exactly as IPVS does (conn_reuse_mode 1), so the
	// answers may differ from n/2 each by those conns.
	for _, sv := range d.Snapshot().List {
		if sv.Config.Proto != ipvs.ProtoTCP || sv.Config.Port != port || sv.Config.Addr != vipA {
			continue
		}
		var sum, lo, hi uint64 = 0, ^uint64(0), 0
		for _, dd := range sv.Dests {
			c := dd.Stats.Conns.Load()
			sum += c
			lo, hi = min(lo, c), max(hi, c)
		}
		if got := sv.Stats.Conns.Load(); got != sum || got > uint64(n) {
			t.Fatalf("service conns = %d, dests %d, requests %d", got, sum, n)
		}
		if hi-lo > 1 {
			t.Fatalf("rr scheduled %d and %d conns: not alternating", lo, hi)
		}
		reused := uint64(n) - sum
		if d := counts["rs1"] - counts["rs2"]; uint64(max(d, -d)) > reused+1 {
			t.Fatalf("rr split %v with %d conns reused without a pick", counts, reused)
		}
		if reused == 0 && (counts["rs1"] != n/2 || counts["rs2"] != n/2) {
			t.Fatalf("rr split %v, want %d each", counts, n/2)
		}
	}
	for i := 0; i < 4; i++ {
		body, from, err := lab.UDPAsk(ml.mt.Client, netip.AddrPortFrom(vipA, 53), 5*time.Second)
		if err != nil {
			t.Fatalf("UDP %d: %v (drops %v, modes %v)", i, err, d.Drops.Get(), d.ModeCounters())
		}
		if from != netip.AddrPortFrom(vipA, 53) || (body != "rs1" && body != "rs2") {
			t.Fatalf("UDP answer %q from %s", body, from)
		}
	}
}

func (ml *modeLab) drain(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for ml.d.CT.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("connection table still holds %d entries", ml.d.CT.Len())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, sv := range ml.d.Snapshot().List {
		for _, dd := range sv.Dests {
			if dd.ActiveConns() != 0 || dd.InactConns() != 0 {
				t.Fatalf("dest %s counters active=%d inactive=%d after drain", dd.Addr, dd.ActiveConns(), dd.InactConns())
			}
		}
	}
}

func TestDREndToEnd(t *testing.T) {
	ml := startMode(t, "dr", 2, []Interface{{Name: lab.DirExt, ARP: true}}, []int{80}, []int{53})
	d := ml.d
	shortTimeouts(d)
	crossed := countFrames(t, ml.mt.Director, lab.DirExt, fromVIP)
	ml.addServices(t, 80, func(i int) ipvs.DestConfig {
		return ipvs.DestConfig{Addr: lab.DRRIP(i + 1), Port: 80, Method: ipvs.MethodRoute, Weight: 1}
	})
	// Bad input is refused before traffic flows.
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 80}
	if err := d.AddDest(k, ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.0.50"), Port: 80, Method: ipvs.MethodRoute, Weight: 1}); err == nil || !strings.Contains(err.Error(), "directly connected") {
		t.Fatalf("DR to an off-link real server: %v", err)
	}
	if err := d.AddDest(k, ipvs.DestConfig{Addr: lab.DRRIP(3), Port: 8080, Method: ipvs.MethodRoute, Weight: 1}); err == nil || !strings.Contains(err.Error(), "port mapping") {
		t.Fatalf("DR with a port mapping: %v", err)
	}
	ml.checkTraffic(t, 1000, 80, func(a netip.Addr) bool { return a == lab.CIP })
	if n := crossed.n.Load(); n != 0 {
		t.Fatalf("%d reply frames crossed the director's interface", n)
	}
	ml.drain(t)
	t.Logf("drops %v modes %v", d.Drops.Get(), d.ModeCounters())
}

// startRSTun runs golvs rs-tun in every real server of a TUN lab.
func startRSTun(t *testing.T, ml *modeLab, guePort uint16) []*rstun.Endpoint {
	var eps []*rstun.Endpoint
	for _, ns := range ml.mt.RS {
		var ep *rstun.Endpoint
		err := ns.Do(func() error {
			var err error
			vips := []netip.Addr{lab.VIP}
			if ml.mt.IPv6 {
				vips = append(vips, lab.VIP6)
			}
			ep, err = rstun.Open(rstun.Config{Interface: "eth0", VIPs: vips, GUEPort: guePort})
			return err
		})
		if err != nil {
			t.Fatalf("rs-tun in %s: %v", ns.Name, err)
		}
		t.Cleanup(ep.Close)
		go func() { _ = ep.Run(ml.ctx) }()
		eps = append(eps, ep)
	}
	return eps
}

// sink runs a lab.Sink on port in ns for the test's life.
func sink(t *testing.T, ns *lab.NS, port int) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := lab.Sink(ctx, ns, port); err != nil {
		t.Fatal(err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestTUNEndToEnd(t *testing.T) {
	ml := startMode(t, "tun", 2, []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}}, []int{80, 9000}, []int{53})
	d := ml.d
	shortTimeouts(d)
	eps := ml.eps
	crossedExt := countFrames(t, ml.mt.Director, lab.DirExt, fromVIP)
	crossedInt := countFrames(t, ml.mt.Director, lab.DirInt, fromVIP)
	// rs1 over IPIP, rs2 over GUE.
	dest := func(i int) ipvs.DestConfig {
		dc := ipvs.DestConfig{Addr: lab.TUNRIP(i + 1), Port: 80, Method: ipvs.MethodTunnel, Weight: 1}
		if i == 1 {
			dc.TunType, dc.TunPort = ipvs.TunGUE, 6080
		}
		return dc
	}
	ml.addServices(t, 80, dest)
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 80}
	if err := d.AddDest(k, ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.200.1"), Port: 80, Method: ipvs.MethodTunnel, Weight: 1}); err == nil || !strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("TUN to an address with no route: %v", err)
	}
	if err := d.AddDest(k, ipvs.DestConfig{Addr: lab.TUNRIP(3), Port: 8080, Method: ipvs.MethodTunnel, Weight: 1}); err == nil || !strings.Contains(err.Error(), "port mapping") {
		t.Fatalf("TUN with a port mapping: %v", err)
	}
	if err := d.AddDest(k, ipvs.DestConfig{Addr: lab.TUNRIP(3), Port: 80, Method: ipvs.MethodTunnel, TunType: ipvs.TunGUE, Weight: 1}); err == nil || !strings.Contains(err.Error(), "tun-port") {
		t.Fatalf("GUE without a port: %v", err)
	}
	ml.checkTraffic(t, 1000, 80, func(a netip.Addr) bool { return a == lab.CIP })
	if n := crossedExt.n.Load() + crossedInt.n.Load(); n != 0 {
		t.Fatalf("%d reply frames crossed the director's interfaces", n)
	}
	for i, ep := range eps {
		if ep.Stats().Delivered == 0 {
			t.Fatalf("rs%d's rs-tun delivered nothing: %+v", i+1, ep.Stats())
		}
	}
	ml.drain(t)
	t.Logf("drops %v modes %v rs-tun %+v %+v", d.Drops.Get(), d.ModeCounters(), eps[0].Stats(), eps[1].Stats())
}

// TestTUNPathMTU: the tunnel adds 20 (IPIP) or 32 (GUE) bytes, so a
// full-size client segment does not fit the director's 1500-byte path.
// With DF set golvs answers ICMP fragmentation-needed with the reduced
// MTU; the client's TCP lowers its segment size and a 1 MB upload
// completes, and so does a 1 MB download (which never crosses the director).
func TestTUNPathMTU(t *testing.T) {
	ml := startMode(t, "tun", 2, []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}}, []int{80}, nil)
	d := ml.d
	for i, ns := range ml.mt.RS {
		_ = i
		sink(t, ns, 9000)
	}
	for _, port := range []uint16{80, 9000} {
		k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: port}
		if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 2; i++ {
			dc := ipvs.DestConfig{Addr: lab.TUNRIP(i), Port: port, Method: ipvs.MethodTunnel, Weight: 1}
			if i == 2 {
				dc.TunType, dc.TunPort = ipvs.TunGUE, 6080
			}
			if err := d.AddDest(k, dc); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	const size = 1 << 20
	for i := 0; i < 2; i++ { // once through each real server (IPIP, GUE)
		got, err := lab.Upload(ml.mt.Client, netip.AddrPortFrom(lab.VIP, 9000), size, 30*time.Second)
		if err != nil || got != itoa(size) {
			t.Fatalf("upload %d: sink got %q, %v (modes %v drops %v)", i, got, err, d.ModeCounters(), d.Drops.Get())
		}
		r, n, err := lab.GetPath(ml.mt.Client, netip.AddrPortFrom(lab.VIP, 80), "/bytes/1048576", 30*time.Second)
		if err != nil || r.Err != nil || n != size+len(r.Body)+1 {
			t.Fatalf("download %d: %d bytes, %v %v", i, n, err, r.Err)
		}
	}
	if d.ModeCounters()[MCntFragNeeded] == 0 {
		t.Fatalf("no ICMP fragmentation-needed was sent (modes %v)", d.ModeCounters())
	}
	t.Logf("modes %v", d.ModeCounters())
}

// toaCapture records, on a real server, the client address in the TOA
// option of every SYN to port.
type toaCapture struct {
	mu      sync.Mutex
	seen    map[netip.AddrPort]bool
	syns    int
	withTOA int // SYNs that carried a TOA option
}

func captureTOA(t *testing.T, ns *lab.NS, port uint16) *toaCapture {
	tc := &toaCapture{seen: map[netip.AddrPort]bool{}}
	countFrames(t, ns, "eth0", func(f []byte) bool {
		if len(f) < 54 || binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[23] != 6 {
			return false
		}
		ihl := int(f[14]&0xf) * 4
		tcp := f[14+ihl:]
		if len(tcp) < 20 || binary.BigEndian.Uint16(tcp[2:]) != port || tcp[13]&0x12 != 0x02 {
			return false
		}
		tc.mu.Lock()
		tc.syns++
		if cip, cport, ok := forward.FindTOA(tcp); ok {
			tc.seen[netip.AddrPortFrom(netip.AddrFrom4(cip), cport)] = true
			tc.withTOA++
		}
		tc.mu.Unlock()
		return true
	})
	return tc
}

func TestFullNATEndToEnd(t *testing.T) {
	ml := startMode(t, "fullnat", 2, []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}}, []int{8080}, []int{53})
	d := ml.d
	shortTimeouts(d)
	dest := func(i int) ipvs.DestConfig {
		return ipvs.DestConfig{Addr: lab.RIP(i + 1), Port: 8080, Method: ipvs.MethodFullNAT, Weight: 1}
	}
	// No pool yet: refused, saying why.
	k0 := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 81}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k0, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddDest(k0, dest(0)); !errors.Is(err, ErrNoLocalAddrs) {
		t.Fatalf("FULLNAT without local addresses: %v", err)
	}
	if err := d.DelService(k0); err != nil {
		t.Fatal(err)
	}
	if err := d.SetLocalAddrs([]netip.Addr{lab.LIP(0), lab.LIP(0)}, 0, 0); !errors.Is(err, ErrLocalAddrOverlap) {
		t.Fatalf("duplicate local address: %v", err)
	}
	lips := []netip.Addr{lab.LIP(0), lab.LIP(1), lab.LIP(2), lab.LIP(3)}
	if err := d.SetLocalAddrs(lips, 0, 0); err != nil {
		t.Fatal(err)
	}
	toa := []*toaCapture{captureTOA(t, ml.mt.RS[0], 8080), captureTOA(t, ml.mt.RS[1], 8080)}
	ml.addServices(t, 80, dest)
	if err := d.SetLocalAddrs([]netip.Addr{lab.RIP(1)}, 0, 0); !errors.Is(err, ErrLocalAddrOverlap) {
		t.Fatalf("a real server as local address: %v", err)
	}
	isLIP := func(a netip.Addr) bool {
		for _, l := range lips {
			if a == l {
				return true
			}
		}
		return false
	}
	ml.checkTraffic(t, 1000, 80, isLIP)
	// Every SYN carried TOA with the client's address. (Client ports
	// repeat over 1000 connections, the server closing first, so SYNs are
	// counted, not distinct ports.)
	deadline := time.Now().Add(5 * time.Second)
	for {
		syns, with := 0, 0
		for _, tc := range toa {
			tc.mu.Lock()
			syns += tc.syns
			with += tc.withTOA
			tc.mu.Unlock()
		}
		if with != syns {
			t.Fatalf("%d of %d SYNs reached the real servers without TOA", syns-with, syns)
		}
		if with >= 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d SYNs with TOA seen on the real servers, want at least 1000", with)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, tc := range toa {
		tc.mu.Lock()
		for ap := range tc.seen {
			if ap.Addr() != lab.CIP {
				t.Fatalf("TOA carried %s, want the client %s", ap, lab.CIP)
			}
		}
		tc.mu.Unlock()
	}
	ml.drain(t)
	for _, la := range d.LocalAddrs() {
		if la.Conns != 0 {
			t.Fatalf("local address %s still has %d ports in use after drain", la.Addr, la.Conns)
		}
	}
	t.Logf("drops %v modes %v laddrs %+v", d.Drops.Get(), d.ModeCounters(), d.LocalAddrs())
}

// TestFullNATPortExhaustion: a pool of one address and four ports takes
// four conns; the fifth is refused and counted (ErrNoLocalPort); once the
// four expire, new conns get through again.
func TestFullNATPortExhaustion(t *testing.T) {
	ml := startMode(t, "fullnat", 1, []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}}, []int{80}, nil)
	d := ml.d
	shortTimeouts(d)
	if err := d.SetLocalAddrs([]netip.Addr{lab.LIP(0)}, 5000, 5003); err != nil {
		t.Fatal(err)
	}
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 80}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddDest(k, ipvs.DestConfig{Addr: lab.RIP(1), Port: 80, Method: ipvs.MethodFullNAT, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	err := ml.mt.Client.Do(func() error {
		for i := 0; i < 4; i++ {
			c, err := net.DialTimeout("tcp4", "198.18.0.100:80", 5*time.Second)
			if err != nil {
				return err
			}
			held = append(held, c)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the pool's 4 ports: %v", err)
	}
	err = ml.mt.Client.Do(func() error {
		c, err := net.DialTimeout("tcp4", "198.18.0.100:80", time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Fatal("a fifth conn got through a pool of four ports")
	}
	if d.ModeCounters()[MCntNoPort] == 0 || !errors.Is(d.FullNATErr(), ErrNoLocalPort) {
		t.Fatalf("exhaustion not counted: modes %v, err %v", d.ModeCounters(), d.FullNATErr())
	}
	t.Logf("reported: %v", d.FullNATErr())
	for _, c := range held {
		c.Close()
	}
	deadline := time.Now().Add(30 * time.Second)
	for d.LocalAddrs()[0].Conns != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("ports still in use: %+v", d.LocalAddrs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	rs, err := lab.Get(ml.mt.Client, netip.AddrPortFrom(lab.VIP, 80), 4, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Err != nil || r.Body != "rs1" {
			t.Fatalf("after expiry: %q %v", r.Body, r.Err)
		}
	}
}
