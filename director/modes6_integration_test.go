package director

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
)

// The modes over IPv6, through AF_PACKET in dual-stack labs (the IPv4
// tests' structure, lab.VIP6 for the VIP): per mode 1,000 TCP connections
// and UDP exchanges, counts matching rr, what the real servers see as
// source, replies from the VIP, and 3 KB and 9 KB UDP datagrams, which
// the client's kernel fragments, echoed back whole (golvs reassembles them
// and sends them on in fragments no larger than they came in).

const echoPort6 = 7

// fromVIP6 matches IPv6 frames with the IPv6 VIP as source (replies).
func fromVIP6(f []byte) bool {
	return len(f) >= 54 && binary.BigEndian.Uint16(f[12:]) == 0x86dd && netip.AddrFrom16([16]byte(f[22:38])) == lab.VIP6
}

// echo6 starts a UDP echo on every real server (on the VIP for DR and
// TUN, whose replies must come from it) and adds a UDP service for it.
func (ml *modeLab) echo6(t *testing.T, mode string, dest func(i int) ipvs.DestConfig) {
	t.Helper()
	for _, ns := range ml.mt.RS {
		at := netip.AddrPortFrom(netip.IPv6Unspecified(), echoPort6)
		if mode == "dr" || mode == "tun" {
			at = netip.AddrPortFrom(lab.VIP6, echoPort6)
		}
		if err := lab.EchoUDP(ml.ctx, ns, at); err != nil {
			t.Fatal(err)
		}
	}
	k := ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: lab.VIP6, Port: echoPort6}
	if err := ml.d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	for i := range ml.mt.RS {
		dc := dest(i)
		if dc.Port != 0 {
			dc.Port = echoPort6
		}
		if err := ml.d.AddDest(k, dc); err != nil {
			t.Fatal(err)
		}
	}
}

// checkBigUDP6 sends 3 KB and 9 KB datagrams to the echo service and
// checks they come back whole, golvs having reassembled and fragmented
// them again (each way for NAT and FULLNAT, inbound only for DR and TUN).
func (ml *modeLab) checkBigUDP6(t *testing.T, mode string) {
	t.Helper()
	d := ml.d
	before := d.ModeCounters()
	for _, size := range []int{3000, 9000} {
		pay := payloadOf(size - 48)
		if _, err := lab.EchoRoundTrip(ml.mt.Client, netip.AddrPortFrom(lab.VIP6, echoPort6), pay, lab.PMTUDefault, 3, 5*time.Second); err != nil {
			t.Fatalf("%s: %d-byte datagram over IPv6: %v (drops %v, modes %v)", mode, size, err, d.Drops.Get(), d.ModeCounters())
		}
	}
	after := d.ModeCounters()
	per := uint64(1)
	if mode == "nat" || mode == "fullnat" {
		per = 2
	}
	if got := after[MCntReassembled] - before[MCntReassembled]; got < 2*per {
		t.Fatalf("%s: %d datagrams reassembled, want at least %d", mode, got, 2*per)
	}
	if got := after[MCntFragmented] - before[MCntFragmented]; got < 2*per {
		t.Fatalf("%s: %d datagrams fragmented again, want at least %d", mode, got, 2*per)
	}
	if n := d.Drops[CntFrag6Drop].Load(); n != 0 {
		t.Fatalf("%s: %d fragments refused", mode, n)
	}
}

func TestNATEndToEnd6(t *testing.T) {
	ml := startModeLab(t, "nat", 2, []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}}, []int{8080}, []int{53}, true)
	d := ml.d
	shortTimeouts(d)
	dest := func(i int) ipvs.DestConfig {
		return ipvs.DestConfig{Addr: lab.RIP6(i + 1), Port: 8080, Method: ipvs.MethodMasq, Weight: 1}
	}
	ml.echo6(t, "nat", dest)
	ml.addServicesAt(t, lab.VIP6, 80, dest)
	// A NAT real server of the other family: the kernel's EINVAL.
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP6, Port: 80}
	if err := d.AddDest(k, ipvs.DestConfig{Addr: lab.RIP(1), Port: 8080, Method: ipvs.MethodMasq, Weight: 1}); err == nil || !strings.Contains(err.Error(), ipvs.EINVALText) {
		t.Fatalf("an IPv4 NAT real server for an IPv6 service: %v", err)
	}
	ml.checkTrafficAt(t, lab.VIP6, 1000, 80, func(a netip.Addr) bool { return a == lab.CIP6 })
	ml.checkBigUDP6(t, "nat")
	ml.drain(t)
	t.Logf("drops %v modes %v", d.Drops.Get(), d.ModeCounters())
}

func TestDREndToEnd6(t *testing.T) {
	ml := startModeLab(t, "dr", 2, []Interface{{Name: lab.DirExt, ARP: true}}, []int{80}, []int{53}, true)
	d := ml.d
	shortTimeouts(d)
	crossed := countFrames(t, ml.mt.Director, lab.DirExt, fromVIP6)
	dest := func(i int) ipvs.DestConfig {
		return ipvs.DestConfig{Addr: lab.DRRIP6(i + 1), Port: 80, Method: ipvs.MethodRoute, Weight: 1}
	}
	ml.echo6(t, "dr", dest)
	ml.addServicesAt(t, lab.VIP6, 80, dest)
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP6, Port: 80}
	if err := d.AddDest(k, ipvs.DestConfig{Addr: netip.MustParseAddr("2001:db8:77::5"), Port: 80, Method: ipvs.MethodRoute, Weight: 1}); err == nil || !strings.Contains(err.Error(), "directly connected") {
		t.Fatalf("DR to an off-link IPv6 real server: %v", err)
	}
	ml.checkTrafficAt(t, lab.VIP6, 1000, 80, func(a netip.Addr) bool { return a == lab.CIP6 })
	ml.checkBigUDP6(t, "dr")
	if n := crossed.n.Load(); n != 0 {
		t.Fatalf("%d reply frames crossed the director's interface", n)
	}
	ml.drain(t)
	t.Logf("drops %v modes %v", d.Drops.Get(), d.ModeCounters())
}

// TestTUNEndToEnd6: rs1 over ip6ip6, rs2 over GUE on IPv6; then the mixed
// families IPVS allows for tunnel dests: an IPv4 service with IPv6 real
// servers (IPv4 in IPv6) and an IPv6 service with IPv4 ones (IPv6 in
// IPv4), and nothing else of another family.
func TestTUNEndToEnd6(t *testing.T) {
	ml := startModeLab(t, "tun", 2, []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}}, []int{80, 81, 82}, []int{53}, true)
	d := ml.d
	shortTimeouts(d)
	eps := ml.eps
	crossedExt := countFrames(t, ml.mt.Director, lab.DirExt, fromVIP6)
	crossedInt := countFrames(t, ml.mt.Director, lab.DirInt, fromVIP6)
	dest := func(i int) ipvs.DestConfig {
		dc := ipvs.DestConfig{Addr: lab.TUNRIP6(i + 1), Port: 80, Method: ipvs.MethodTunnel, Weight: 1}
		if i == 1 {
			dc.TunType, dc.TunPort = ipvs.TunGUE, 6080
		}
		return dc
	}
	ml.echo6(t, "tun", dest)
	ml.addServicesAt(t, lab.VIP6, 80, dest)
	ml.checkTrafficAt(t, lab.VIP6, 1000, 80, func(a netip.Addr) bool { return a == lab.CIP6 })
	ml.checkBigUDP6(t, "tun")
	if n := crossedExt.n.Load() + crossedInt.n.Load(); n != 0 {
		t.Fatalf("%d reply frames crossed the director's interfaces", n)
	}
	for i, ep := range eps {
		if ep.Stats().Delivered == 0 {
			t.Fatalf("rs%d's rs-tun delivered nothing: %+v", i+1, ep.Stats())
		}
	}

	// Mixed families: :81 is an IPv4 service on IPv6 real servers, :82 an
	// IPv6 service on IPv4 ones (both IPIP and GUE).
	mixed := []struct {
		vip   netip.Addr
		port  uint16
		rip   func(int) netip.Addr
		cip   netip.Addr
		outer string
	}{{lab.VIP, 81, lab.TUNRIP6, lab.CIP, "IPv6"}, {lab.VIP6, 82, lab.TUNRIP, lab.CIP6, "IPv4"}}
	for _, m := range mixed {
		k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: m.vip, Port: m.port}
		if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 2; i++ {
			dc := ipvs.DestConfig{Addr: m.rip(i), Port: m.port, Method: ipvs.MethodTunnel, Weight: 1}
			if i == 2 {
				dc.TunType, dc.TunPort = ipvs.TunGUE, 6080
			}
			if err := d.AddDest(k, dc); err != nil {
				t.Fatalf("a tunnel real server of the other family (%s outer): %v", m.outer, err)
			}
		}
		if err := d.AddDest(k, ipvs.DestConfig{Addr: m.rip(3), Port: m.port, Method: ipvs.MethodRoute, Weight: 1}); err == nil || !strings.Contains(err.Error(), ipvs.EINVALText) {
			t.Fatalf("a DR real server of the other family: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	for _, m := range mixed {
		rs, err := lab.GetParallel(ml.mt.Client, netip.AddrPortFrom(m.vip, m.port), 40, 4, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for i, r := range rs {
			if r.Err != nil || r.Remote != netip.AddrPortFrom(m.vip, m.port) {
				t.Fatalf("%s outer, request %d: %v from %s (drops %v)", m.outer, i, r.Err, r.Remote, d.Drops.Get())
			}
			seen[r.Body]++
		}
		if seen["rs1"] != 20 || seen["rs2"] != 20 {
			t.Fatalf("%s outer: rr split %v", m.outer, seen)
		}
	}
	for _, s := range ml.servers {
		for a := range s.Seen() {
			if a != lab.CIP && a != lab.CIP6 {
				t.Fatalf("%s saw source %s", s.Name, a)
			}
		}
	}
	// Path MTU: full-size IPv6 packets do not fit the tunnel (40 or 52
	// bytes more); golvs answered Packet Too Big with the reduced MTU (to
	// the 9 KB datagram's fragments above, or to these segments), the
	// client lowered its path MTU to the VIP, and a 1 MB upload completes
	// through each real server (ip6ip6, GUE), golvs cutting the client's
	// GSO frames into segments to tunnel.
	for _, ns := range ml.mt.RS {
		sink(t, ns, 9000)
	}
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP6, Port: 9000}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		dc := dest(i)
		dc.Port = 9000
		if err := d.AddDest(k, dc); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		got, err := lab.Upload(ml.mt.Client, netip.AddrPortFrom(lab.VIP6, 9000), 1<<20, 30*time.Second)
		if err != nil || got != itoa(1<<20) {
			t.Fatalf("upload %d: sink got %q, %v (modes %v drops %v)", i, got, err, d.ModeCounters(), d.Drops.Get())
		}
	}
	if mc := d.ModeCounters(); mc[MCntPacketTooBig] == 0 || mc[MCntGSOSegmented] == 0 {
		t.Fatalf("no Packet Too Big sent, or no GSO frame segmented (modes %v)", mc)
	}
	ml.drain(t)
	t.Logf("drops %v modes %v rs-tun %+v %+v", d.Drops.Get(), d.ModeCounters(), eps[0].Stats(), eps[1].Stats())
}

// toa6Capture records, on a real server, the client in the IPv6 TOA
// option of every IPv6 SYN to port.
type toa6Capture struct {
	mu      sync.Mutex
	seen    map[netip.AddrPort]bool
	syns    int
	withTOA int
}

func captureTOA6(t *testing.T, ns *lab.NS, port uint16) *toa6Capture {
	tc := &toa6Capture{seen: map[netip.AddrPort]bool{}}
	countFrames(t, ns, "eth0", func(f []byte) bool {
		if len(f) < 74 || binary.BigEndian.Uint16(f[12:]) != 0x86dd || f[20] != 6 {
			return false
		}
		tcp := f[54:]
		if binary.BigEndian.Uint16(tcp[2:]) != port || tcp[13]&0x12 != 0x02 {
			return false
		}
		tc.mu.Lock()
		tc.syns++
		if cip, cport, ok := forward.FindTOA6(tcp); ok {
			tc.seen[netip.AddrPortFrom(netip.AddrFrom16(cip), cport)] = true
			tc.withTOA++
		}
		tc.mu.Unlock()
		return true
	})
	return tc
}

func TestFullNATEndToEnd6(t *testing.T) {
	ml := startModeLab(t, "fullnat", 2, []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}}, []int{8080}, []int{53}, true)
	d := ml.d
	shortTimeouts(d)
	dest := func(i int) ipvs.DestConfig {
		return ipvs.DestConfig{Addr: lab.RIP6(i + 1), Port: 8080, Method: ipvs.MethodFullNAT, Weight: 1}
	}
	// IPv4 local addresses only: an IPv6 service has none to take.
	if err := d.SetLocalAddrs([]netip.Addr{lab.LIP(0)}, 0, 0); err != nil {
		t.Fatal(err)
	}
	k0 := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP6, Port: 81}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k0, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddDest(k0, dest(0)); !errors.Is(err, ErrNoLocalAddrs) {
		t.Fatalf("FULLNAT without IPv6 local addresses: %v", err)
	}
	if err := d.DelService(k0); err != nil {
		t.Fatal(err)
	}
	lips := []netip.Addr{lab.LIP6(0), lab.LIP6(1), lab.LIP6(2), lab.LIP6(3), lab.LIP(0)}
	if err := d.SetLocalAddrs(lips, 0, 0); err != nil {
		t.Fatal(err)
	}
	toa := []*toa6Capture{captureTOA6(t, ml.mt.RS[0], 8080), captureTOA6(t, ml.mt.RS[1], 8080)}
	ml.echo6(t, "fullnat", dest)
	ml.addServicesAt(t, lab.VIP6, 80, dest)
	isLIP := func(a netip.Addr) bool {
		for _, l := range lips[:4] {
			if a == l {
				return true
			}
		}
		return false
	}
	ml.checkTrafficAt(t, lab.VIP6, 1000, 80, isLIP)
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
			t.Fatalf("%d of %d SYNs reached the real servers without IPv6 TOA", syns-with, syns)
		}
		if with >= 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d SYNs with IPv6 TOA seen on the real servers, want at least 1000", with)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, tc := range toa {
		tc.mu.Lock()
		for ap := range tc.seen {
			if ap.Addr() != lab.CIP6 {
				t.Fatalf("TOA carried %s, want the client %s", ap, lab.CIP6)
			}
		}
		tc.mu.Unlock()
	}
	ml.checkBigUDP6(t, "fullnat")
	ml.drain(t)
	for _, la := range d.LocalAddrs() {
		if la.Conns != 0 {
			t.Fatalf("local address %s still has %d ports in use after drain", la.Addr, la.Conns)
		}
	}
	t.Logf("drops %v modes %v laddrs %+v", d.Drops.Get(), d.ModeCounters(), d.LocalAddrs())
}
