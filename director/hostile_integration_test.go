package director

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/packet"
)

// Each mode's lab, with a director in this process, a UDP echo service
// VIP:7 and a TCP service VIP:80 over two real servers, takes what the
// tests below throw at it: datagrams longer than the MTU (fragmented by
// the senders' kernels, reassembled for golvs by the director's) and a
// storm of frames a router must drop.

const (
	echoPort = 7
	tcpPort  = 80
)

type hostileLab struct {
	mode     string
	d        *Director
	client   *lab.NS
	director *lab.NS
	rips     []netip.Addr
	lips     []netip.Addr
	peers    []peerDev // the far ends of the director's links
	ctx      context.Context
	// The storm is sent from the far end of the director's ext0 veth:
	// the client's eth0, or the lan bridge's port (through the bridge a
	// host with br_netfilter would drop bad IPv4 headers itself).
	stormNS  *lab.NS
	stormDev string
}

func startHostile(t *testing.T, mode string) *hostileLab {
	t.Helper()
	testutil.RequireNetns(t)
	h := &hostileLab{mode: mode}
	var rsNS []*lab.NS
	method := map[string]ipvs.Method{"nat": ipvs.MethodMasq, "dr": ipvs.MethodRoute, "tun": ipvs.MethodTunnel, "fullnat": ipvs.MethodFullNAT}[mode]
	if mode == "nat" {
		topo := testutil.NATLab(t, 2)
		ctx, cancel := context.WithCancel(context.Background())
		h.ctx = ctx
		h.client, h.director, rsNS = topo.Client, topo.Director, topo.RS
		h.stormNS, h.stormDev = topo.Client, "eth0"
		h.rips = []netip.Addr{lab.RIP(1), lab.RIP(2)}
		h.peers = []peerDev{{topo.Client, "eth0"}, {topo.Switch, "p-dir"}}
		done := make(chan struct{})
		err := topo.Director.Do(func() error {
			var err error
			h.d, err = New(Config{Interfaces: []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}}, Workers: 2,
				Conntrack: conntrack.Config{Tick: 100 * time.Millisecond, Shards: 64}, FixHost: true, Logf: t.Logf})
			return err
		})
		if err != nil {
			cancel()
			t.Fatalf("starting director: %v", err)
		}
		go func() { defer close(done); _ = h.d.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	} else {
		ifaces := []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}}
		if mode == "dr" {
			ifaces = ifaces[:1]
		}
		ml := startMode(t, mode, 2, ifaces, nil, nil)
		switch mode {
		case "dr":
			h.peers = []peerDev{{ml.mt.Switch, "p-dir"}}
		case "tun":
			h.peers = []peerDev{{ml.mt.Switch, "p-dir"}, {ml.mt.Router, "eth1"}}
		default:
			h.peers = []peerDev{{ml.mt.Client, "eth0"}, {ml.mt.Switch, "p-dir"}}
		}
		h.d, h.ctx = ml.d, ml.ctx
		h.client, h.director, rsNS, h.rips = ml.mt.Client, ml.mt.Director, ml.mt.RS, ml.mt.RIPs
		h.stormNS, h.stormDev = ml.mt.Client, "eth0"
		if mode == "dr" || mode == "tun" {
			h.stormNS, h.stormDev = ml.mt.Switch, "p-dir"
		}
		if mode == "fullnat" {
			h.lips = []netip.Addr{lab.LIP(0), lab.LIP(1)}
			if err := h.d.SetLocalAddrs(h.lips, 0, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, ns := range rsNS {
		at := netip.AddrPortFrom(netip.IPv4Unspecified(), echoPort)
		if mode == "dr" || mode == "tun" {
			at = netip.AddrPortFrom(lab.VIP, echoPort) // answer from the VIP
		}
		if err := lab.EchoUDP(h.ctx, ns, at); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []ipvs.ServiceKey{{Proto: ipvs.ProtoUDP, Addr: lab.VIP, Port: echoPort}, {Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: tcpPort}} {
		if err := h.d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
			t.Fatal(err)
		}
		for i, a := range h.rips {
			dc := ipvs.DestConfig{Addr: a, Port: k.Port, Method: method, Weight: 1}
			if mode == "tun" && i == 1 {
				dc.TunType, dc.TunPort = ipvs.TunGUE, 6080
			}
			if err := h.d.AddDest(k, dc); err != nil {
				t.Fatalf("adding %s: %v", dc.AddrPort(), err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	return h
}

var vipEcho = netip.AddrPortFrom(lab.VIP, echoPort)

// checkBigDatagrams sends 3 KB and 9 KB UDP datagrams to the echo service
// and checks each comes back whole: the client's kernel fragments them,
// the director's reassembles them for golvs, golvs fragments them again
// for the real server (inner fragments in their own tunnel packets for
// TUN), whose kernel reassembles them and fragments its equally long
// answer, which NAT and FULLNAT forward back the same way. The old code
// lost every one (its sendmmsg failed with EMSGSIZE) while counting them
// as forwarded.
func (h *hostileLab) checkBigDatagrams(t *testing.T) {
	t.Helper()
	before := h.d.ModeCounters()
	sent := 0
	for _, size := range []int{3000, 9000} {
		pay := payloadOf(size - 28)
		tries, err := lab.EchoRoundTrip(h.client, vipEcho, pay, lab.PMTUDefault, 3, 3*time.Second)
		if err != nil {
			t.Fatalf("%s: %d-byte datagram: %v (drops %v, events %v)", h.mode, size, err, h.d.Drops.Get(), h.d.ModeCounters())
		}
		sent += tries
	}
	after := h.d.ModeCounters()
	perTrip := uint64(1) // DR and TUN answers bypass the director
	if h.mode == "nat" || h.mode == "fullnat" {
		perTrip = 2
	}
	if got := after[MCntFragmented] - before[MCntFragmented]; got < 2*perTrip || got > uint64(sent)*perTrip {
		t.Fatalf("%s: %d datagrams fragmented for %d round trips", h.mode, got, sent)
	}
	if n := h.d.Drops[CntTooBig].Load(); n != 0 {
		t.Fatalf("%s: %d too-big drops", h.mode, n)
	}
}

func TestHostileNAT(t *testing.T) {
	h := startHostile(t, "nat")
	h.checkBigDatagrams(t)
	h.checkJumboIngress(t)
	h.storm(t)
}

func TestHostileDR(t *testing.T) {
	h := startHostile(t, "dr")
	h.checkBigDatagrams(t)
	h.storm(t)
}

func TestHostileTUN(t *testing.T) {
	h := startHostile(t, "tun")
	h.checkBigDatagrams(t)
	h.storm(t)
}

func TestHostileFullNAT(t *testing.T) {
	h := startHostile(t, "fullnat")
	h.checkBigDatagrams(t)
	h.storm(t)
}

// checkJumboIngress gives the client's link a 9000-byte MTU (the real
// servers' stays 1500), so datagrams reach golvs whole. DF clear: golvs
// fragments them itself. DF set (the kernel's default for UDP): golvs
// drops the first and answers ICMP fragmentation-needed with MTU 1500;
// the client's kernel learns the path MTU and fragments the retry itself.
func (h *hostileLab) checkJumboIngress(t *testing.T) {
	t.Helper()
	for _, side := range []struct {
		ns  *lab.NS
		dev string
	}{{h.client, "eth0"}, {h.director, lab.DirExt}} {
		err := side.ns.Do(func() error {
			l, err := netlink.LinkByName(side.dev)
			if err != nil {
				return err
			}
			return netlink.LinkSetMTU(l, 9000)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	pay := payloadOf(3000 - 28)
	fr := h.d.ModeCounters()[MCntFragmented]
	if _, err := lab.EchoRoundTrip(h.client, vipEcho, pay, lab.PMTUDont, 3, 3*time.Second); err != nil {
		t.Fatalf("DF clear from a jumbo link: %v", err)
	}
	if h.d.ModeCounters()[MCntFragmented] == fr {
		t.Fatal("golvs did not fragment a whole 3 KB datagram from the jumbo link")
	}
	fn, tb := h.d.ModeCounters()[MCntFragNeeded], h.d.Drops[CntTooBig].Load()
	tries, err := lab.EchoRoundTrip(h.client, vipEcho, pay, lab.PMTUDefault, 4, time.Second)
	if err != nil {
		t.Fatalf("DF set from a jumbo link: %v (events %v)", err, h.d.ModeCounters())
	}
	if tries < 2 || h.d.ModeCounters()[MCntFragNeeded] == fn || h.d.Drops[CntTooBig].Load() == tb {
		t.Fatalf("DF set: answered after %d tries, frag-needed-sent %d->%d, too-big %d->%d; want the first dropped and answered",
			tries, fn, h.d.ModeCounters()[MCntFragNeeded], tb, h.d.Drops[CntTooBig].Load())
	}
}

// ---- the storm ----

// stormClass is a kind of frame a router must drop, and the counter golvs
// must count it under; cnt -1: the kernel's BPF filter discards it before
// golvs (another EtherType, or IPv4 golvs has no use for), so it must not
// appear anywhere.
type stormClass struct {
	name  string
	cnt   int
	n     int
	modes map[string]bool // nil: every mode
	// frames returns the frames of item i. A fragment set is consumed by
	// the kernel's reassembly (every fragment counts in ReasmReqds);
	// complete tells whether it reassembles, golvs then seeing one
	// datagram.
	frames   func(i int) [][]byte
	frag     bool
	complete bool
}

type stormEnv struct {
	cli, dir, foreign [6]byte
	cip, vip          [4]byte
	rip               [4]byte
	martians          [][4]byte
}

// ipv4Frame builds an Ethernet/IPv4 frame: header with options opts (a
// multiple of 4 bytes), the given fragment field, a correct checksum, and
// payload l4.
func ipv4Frame(dst, src [6]byte, saddr, daddr [4]byte, proto, ttl uint8, id, frag uint16, opts, l4 []byte) []byte {
	ihl := 20 + len(opts)
	b := make([]byte, 14+ihl+len(l4))
	copy(b[0:6], dst[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(ip[2:], uint16(ihl+len(l4)))
	binary.BigEndian.PutUint16(ip[4:], id)
	binary.BigEndian.PutUint16(ip[6:], frag)
	ip[8], ip[9] = ttl, proto
	copy(ip[12:], saddr[:])
	copy(ip[16:], daddr[:])
	copy(ip[20:], opts)
	copy(ip[ihl:], l4)
	h := packet.IPv4(ip[:ihl])
	h.SetChecksum(h.HeaderChecksum())
	return b
}

func udpSeg(sport, dport uint16, n int) []byte {
	b := make([]byte, 8+n)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+n))
	copy(b[8:], "STORM")
	return b
}

func tcpSeg(sport, dport uint16, flags, doff uint8) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[12], b[13] = doff<<4, flags
	return b
}

func refix(b []byte) []byte {
	h := packet.IPv4(b[14 : 14+int(b[14]&0xf)*4])
	h.SetChecksum(0)
	h.SetChecksum(h.HeaderChecksum())
	return b
}

func one(b []byte) [][]byte { return [][]byte{b} }

func stormClasses(e *stormEnv) []stormClass {
	// Client ports below the ephemeral range: no spoofed reply can hit
	// a conn of the legitimate loop.
	sp := func(i int) uint16 { return uint16(1024 + i%30000) }
	good := func(i int) []byte {
		return ipv4Frame(e.dir, e.cli, e.cip, e.vip, 17, 64, uint16(i), 0, nil, udpSeg(sp(i), echoPort, 16))
	}
	// A SYN to a port the real servers do not serve: where a bridge
	// floods an L2 broadcast to DR real servers, which hold the VIP,
	// they answer only with a RST the client ignores.
	syn := func(i int) []byte {
		return ipv4Frame(e.dir, e.cli, e.cip, e.vip, 6, 64, uint16(i), 0, nil, tcpSeg(sp(i), tcpPort, 0x02, 5))
	}
	natOnly := map[string]bool{"nat": true, "fullnat": true}
	reason := func(r packet.Reason) int { return int(r) - 1 }
	frag2 := func(i int, saddr [4]byte, udpLen uint16, overlap bool) [][]byte {
		u := udpSeg(sp(i), echoPort, 40)
		if udpLen != 0 {
			binary.BigEndian.PutUint16(u[4:], udpLen)
		}
		id := uint16(0x8000 + i)
		first := ipv4Frame(e.dir, e.cli, saddr, e.vip, 17, 64, id, 0x2000, nil, u[:24])
		off, rest := uint16(3), u[24:]
		if overlap {
			off, rest = 1, u[8:]
		}
		return [][]byte{first, ipv4Frame(e.dir, e.cli, saddr, e.vip, 17, 64, id, off, nil, rest)}
	}
	classes := []stormClass{
		// Fragment sets first: complete ones while the kernel's
		// reassembly memory is empty.
		{name: "fragments of a martian", cnt: CntMartianSrc, n: 1500, frag: true, complete: true,
			frames: func(i int) [][]byte { return frag2(i, [4]byte{127, 0, 0, 1}, 0, false) }},
		{name: "fragments of a bad UDP length", cnt: reason(packet.ReasonBadL4), n: 1500, frag: true, complete: true,
			frames: func(i int) [][]byte { return frag2(i+2000, e.cip, 200, false) }},
		{name: "another host's MAC", cnt: CntOtherHost, n: 3000, frames: func(i int) [][]byte {
			b := good(i)
			copy(b[0:6], e.foreign[:])
			return one(b)
		}},
		{name: "ethernet broadcast", cnt: CntBroadcast, n: 3000, frames: func(i int) [][]byte {
			b := syn(i)
			copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
			return one(b)
		}},
		{name: "ethernet multicast", cnt: CntMulticast, n: 3000, frames: func(i int) [][]byte {
			b := syn(i)
			copy(b[0:6], []byte{0x01, 0x00, 0x5e, 0x00, 0x00, byte(i)})
			return one(b)
		}},
		{name: "vlan tagged", cnt: CntVLAN, n: 3000, frames: func(i int) [][]byte {
			b := good(i)
			t := make([]byte, len(b)+4)
			copy(t, b[:12])
			binary.BigEndian.PutUint16(t[12:], 0x8100)
			binary.BigEndian.PutUint16(t[14:], uint16(1+i%4094))
			copy(t[16:], b[12:])
			return one(t)
		}},
		{name: "martian sources", cnt: CntMartianSrc, n: 4000, frames: func(i int) [][]byte {
			return one(ipv4Frame(e.dir, e.cli, e.martians[i%len(e.martians)], e.vip, 17, 64, 1, 0, nil, udpSeg(sp(i), echoPort, 16)))
		}},
		{name: "bad header checksum", cnt: reason(packet.ReasonBadIPCsum), n: 3000, frames: func(i int) [][]byte {
			b := good(i)
			b[14+10] ^= byte(1 + i%255)
			return one(b)
		}},
		{name: "bad or source-routing options", cnt: reason(packet.ReasonBadIPOpts), n: 3000, frames: func(i int) [][]byte {
			opts := [][]byte{{131, 7, 4, 198, 19, 0, 99, 0}, {148, 1, 0, 0}, {7, 9, 4, 0}, {68, 3, 5, 0}}[i%4]
			return one(ipv4Frame(e.dir, e.cli, e.cip, e.vip, 17, 64, 1, 0, opts, udpSeg(sp(i), echoPort, 16)))
		}},
		{name: "bad version", cnt: reason(packet.ReasonBadIP), n: 2000, frames: func(i int) [][]byte {
			b := good(i)
			b[14] = byte(0x50+0x10*(i%3)) | 5
			return one(refix(b))
		}},
		{name: "total length below the header", cnt: reason(packet.ReasonBadIP), n: 2000, frames: func(i int) [][]byte {
			b := good(i)
			binary.BigEndian.PutUint16(b[16:], uint16(i%20))
			return one(refix(b))
		}},
		{name: "total length past the frame", cnt: reason(packet.ReasonTruncated), n: 3000, frames: func(i int) [][]byte {
			b := good(i)
			binary.BigEndian.PutUint16(b[16:], uint16(len(b)-14+1+i%1000))
			return one(refix(b))
		}},
		{name: "bad UDP length", cnt: reason(packet.ReasonBadL4), n: 3000, frames: func(i int) [][]byte {
			b := good(i)
			binary.BigEndian.PutUint16(b[14+20+4:], []uint16{0, 7, 25, 60000}[i%4])
			return one(b)
		}},
		{name: "bad TCP data offset", cnt: reason(packet.ReasonBadL4), n: 3000, frames: func(i int) [][]byte {
			return one(ipv4Frame(e.dir, e.cli, e.cip, e.vip, 6, 64, 1, 0, nil, tcpSeg(sp(i), tcpPort, 0x02, uint8([]int{0, 4, 6, 15}[i%4]))))
		}},
		{name: "TCP without a conn", cnt: CntNoConn, n: 3000, frames: func(i int) [][]byte {
			return one(ipv4Frame(e.dir, e.cli, e.cip, e.vip, 6, 64, 1, 0, nil, tcpSeg(sp(i), tcpPort, []uint8{0x10, 0x06, 0x04, 0x11}[i%4], 5)))
		}},
		{name: "TTL 1", cnt: CntTTL, n: 3000, modes: natOnly, frames: func(i int) [][]byte {
			return one(ipv4Frame(e.dir, e.cli, e.cip, e.vip, 17, uint8(i%2), 1, 0, nil, udpSeg(sp(i), echoPort, 16)))
		}},
		{name: "spoofed replies", cnt: CntNotOurs, n: 3000, frames: func(i int) [][]byte {
			return one(ipv4Frame(e.dir, e.cli, e.rip, e.cip, 17, 64, 1, 0, nil, udpSeg(echoPort, sp(i), 16)))
		}},
		{name: "ICMP to the VIP", cnt: CntICMP, n: 3000, frames: func(i int) [][]byte {
			m := make([]byte, 8+28)
			m[0] = []byte{8, 3, 11, 5}[i%4] // echo; errors quoting nothing of ours
			return one(ipv4Frame(e.dir, e.cli, e.cip, e.vip, 1, 64, 1, 0, nil, m))
		}},
		{name: "ARP garbage", cnt: reason(packet.ReasonBadARP), n: 3000, frames: func(i int) [][]byte {
			b := make([]byte, 14+28)
			copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
			copy(b[6:12], e.cli[:])
			binary.BigEndian.PutUint16(b[12:], 0x0806)
			binary.BigEndian.PutUint16(b[14:], uint16(2+i%100)) // not Ethernet
			binary.BigEndian.PutUint16(b[16:], 0x0800)
			b[18], b[19] = 6, 4
			return one(b)
		}},
		{name: "short ARP", cnt: reason(packet.ReasonTruncated), n: 2000, frames: func(i int) [][]byte {
			b := make([]byte, 14+10+i%17)
			copy(b[0:6], e.dir[:])
			copy(b[6:12], e.cli[:])
			binary.BigEndian.PutUint16(b[12:], 0x0806)
			return one(b)
		}},
		// What the kernel's filter discards before golvs.
		{name: "IPv6", cnt: -1, n: 2000, frames: func(i int) [][]byte {
			b := good(i)
			binary.BigEndian.PutUint16(b[12:], 0x86dd)
			return one(b)
		}},
		{name: "LLDP and 802.3 lengths", cnt: -1, n: 2000, frames: func(i int) [][]byte {
			b := good(i)
			binary.BigEndian.PutUint16(b[12:], []uint16{0x88cc, 0x0040, 0x9000}[i%3])
			return one(b)
		}},
		{name: "GRE to the VIP", cnt: -1, n: 2000, frames: func(i int) [][]byte {
			return one(ipv4Frame(e.dir, e.cli, e.cip, e.vip, 47, 64, 1, 0, nil, make([]byte, 24)))
		}},
		{name: "UDP to another port of the VIP", cnt: -1, n: 2000, frames: func(i int) [][]byte {
			return one(ipv4Frame(e.dir, e.cli, e.cip, e.vip, 17, 64, 1, 0, nil, udpSeg(sp(i), 9999, 16)))
		}},
		{name: "IPv4 to another address", cnt: -1, n: 2000, frames: func(i int) [][]byte {
			return one(ipv4Frame(e.dir, e.cli, e.cip, [4]byte{198, 18, 0, 77}, 17, 64, 1, 0, nil, udpSeg(sp(i), echoPort, 16)))
		}},
		// Fragment sets that never make a datagram: held until they
		// time out, or discarded for overlapping.
		{name: "first fragments alone", cnt: -1, n: 1200, frag: true, frames: func(i int) [][]byte { return frag2(i+4000, e.cip, 0, false)[:1] }},
		{name: "overlapping fragments", cnt: -1, n: 1200, frag: true, frames: func(i int) [][]byte { return frag2(i+6000, e.cip, 0, true) }},
	}
	return classes
}

// peerDev is the far end of one of the director's veth links.
type peerDev struct {
	ns  *lab.NS
	dev string
}

// outgoingCapture counts the frames the director sends that are not the
// legitimate loop's (marked LEGIT): a frame golvs forwarded from the
// storm would be one. It listens at the far end of each of the
// director's links, for frames arriving from a director MAC: golvs
// transmits bypassing the qdisc layer, which also bypasses the capture
// taps of its own interfaces.
type outgoingCapture struct {
	bad     atomic.Int64
	sample  atomic.Value
	fds     []int
	stop    atomic.Bool
	wg      sync.WaitGroup
	gueport uint16
}

func captureOutgoing(t *testing.T, peers []peerDev, gueport uint16) *outgoingCapture {
	t.Helper()
	oc := &outgoingCapture{gueport: gueport}
	prog, err := bpf.Assemble([]bpf.Instruction{ // what arrives, not what this end sends
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipTrue: 1},
		bpf.RetConstant{Val: 65536},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		err := p.ns.Do(func() error {
			ifi, err := net.InterfaceByName(p.dev)
			if err != nil {
				return err
			}
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}); err != nil {
				unix.Close(fd)
				return err
			}
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
			_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
			if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons16(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
				unix.Close(fd)
				return err
			}
			oc.fds = append(oc.fds, fd)
			return nil
		})
		if err != nil {
			t.Fatalf("capture on %s/%s: %v", p.ns.Name, p.dev, err)
		}
	}
	for _, fd := range oc.fds {
		oc.wg.Add(1)
		go func(fd int) {
			defer oc.wg.Done()
			buf := make([]byte, 65536)
			for !oc.stop.Load() {
				n, _, err := unix.Recvfrom(fd, buf, 0)
				if err != nil || n < 14 || [6]byte(buf[6:12]) != [6]byte(lab.MAC(0xd1, 1)) && [6]byte(buf[6:12]) != [6]byte(lab.MAC(0xd1, 2)) {
					continue // not sent by the director
				}
				if !oc.legit(buf[:n]) {
					oc.bad.Add(1)
					oc.sample.Store(fmt.Sprintf("% x", buf[:min(n, 64)]))
				}
			}
		}(fd)
	}
	t.Cleanup(oc.close)
	return oc
}

func (oc *outgoingCapture) close() {
	if oc.stop.Swap(true) {
		return
	}
	oc.wg.Wait()
	for _, fd := range oc.fds {
		unix.Close(fd)
	}
}

// legit reports ARP, IPv4 carrying (maybe in a tunnel) UDP whose payload
// starts with LEGIT, and ICMP from the director's own addresses: its
// kernel's answers, as any host's (parameter problem for bad options),
// not forwarded traffic. (golvs sends its own errors to clients from
// the VIP.)
func (oc *outgoingCapture) legit(f []byte) bool {
	if len(f) < 14 {
		return false
	}
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0806:
		return true
	case 0x0800:
	default:
		return false
	}
	ip := f[14:]
	if len(ip) >= 20 && ip[9] == 1 {
		src := netip.AddrFrom4([4]byte(ip[12:16]))
		if src == lab.DirExtIP || src == lab.DirIntIP {
			return true
		}
	}
	if inner, ok := forward.Decap(ip, oc.gueport); ok {
		ip = inner
	}
	if len(ip) >= 20 && ip[9] == 1 {
		// An ICMP error golvs relays: the client's kernel answering
		// an echo that came after its socket was gone. Legit when it
		// quotes a legit datagram.
		ihl := int(ip[0]&0xf) * 4
		if len(ip) < ihl+8+20 || ip[ihl] != 3 && ip[ihl] != 11 && ip[ihl] != 12 {
			return false
		}
		ip = ip[ihl+8:]
	}
	if len(ip) < 20 || ip[9] != 17 {
		return false
	}
	ihl := int(ip[0]&0xf) * 4
	return len(ip) >= ihl+8+5 && string(ip[ihl+8:ihl+13]) == "LEGIT"
}

// legitLoop asks the echo service "LEGIT-n" over and over until stop
// closes, each request tried 5 times at most (2 s each: a loaded machine
// may be slow, golvs must not lose it); it returns the answered and the
// unanswered counts.
func legitLoop(ns *lab.NS, stop chan struct{}) (ok, failed *atomic.Int64, done chan struct{}) {
	ok, failed, done = new(atomic.Int64), new(atomic.Int64), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := lab.EchoRoundTrip(ns, vipEcho, []byte(fmt.Sprintf("LEGIT-%d", i)), lab.PMTUDefault, 5, 2*time.Second); err != nil {
				failed.Add(1)
				time.Sleep(10 * time.Millisecond) // never a hot loop
			} else {
				ok.Add(1)
			}
		}
	}()
	return
}

// storm sends the classes' frames from the client, in chunks, each chunk
// only once golvs has counted the last (so no ring overflows, whatever
// the load), while the legitimate loop runs. Then: every frame golvs saw
// is counted exactly under its cause; every fragment went to the kernel's
// reassembly and every complete set reached golvs as one datagram; the
// filtered classes appear nowhere; nothing of the storm left the
// director; the loop never failed.
func (h *hostileLab) storm(t *testing.T) {
	t.Helper()
	env := &stormEnv{
		cli: [6]byte(lab.MAC(0x0c, 10)), dir: [6]byte(lab.MAC(0xd1, 1)), foreign: [6]byte{0x02, 0x00, 0x5e, 0x00, 0x99, 0x99},
		cip: lab.CIP.As4(), vip: lab.VIP.As4(), rip: h.rips[0].As4(),
	}
	for _, a := range []string{"0.0.0.0", "0.9.9.9", "127.0.0.1", "127.8.8.8", "224.0.0.9", "239.1.2.3", "255.255.255.255",
		lab.VIP.String(), lab.DirExtIP.String(), "198.18.0.255"} {
		env.martians = append(env.martians, netip.MustParseAddr(a).As4())
	}
	for _, l := range h.lips {
		env.martians = append(env.martians, l.As4())
	}
	// The frames, fragment sets whole, other classes interleaved.
	type item struct {
		frames  [][]byte
		visible int // datagrams golvs sees from it
		cnt     int
	}
	var first, mixed, last []item
	want := make([]uint64, NumCounters)
	var fragsSent, reasmOK, total, visible uint64
	var perClass []string
	for _, c := range stormClasses(env) {
		if c.modes != nil && !c.modes[h.mode] {
			continue
		}
		perClass = append(perClass, fmt.Sprintf("%s:%d", c.name, c.n))
		for i := 0; i < c.n; i++ {
			it := item{frames: c.frames(i), cnt: c.cnt}
			total += uint64(len(it.frames))
			if c.frag {
				fragsSent += uint64(len(it.frames))
			}
			if c.cnt >= 0 && (!c.frag || c.complete) {
				it.visible = 1
				want[c.cnt]++
				visible++
			}
			if c.frag && c.complete {
				reasmOK++
			}
			switch {
			case c.frag && c.complete:
				first = append(first, it)
			case c.frag:
				last = append(last, it)
			default:
				mixed = append(mixed, it)
			}
		}
	}
	// The non-fragment classes interleaved (a fixed-seed shuffle).
	rand.New(rand.NewSource(int64(len(mixed)))).Shuffle(len(mixed), func(i, j int) { mixed[i], mixed[j] = mixed[j], mixed[i] })
	items := append(append(first, mixed...), last...)

	fd := h.rawSocket(t)
	oc := captureOutgoing(t, h.peers, 6080)
	checked := func() (s uint64) {
		for i, v := range h.d.Drops.Get() {
			if !background(i) {
				s += v
			}
		}
		return
	}
	before := h.d.Drops.Get()
	kBefore := h.d.KernelStats()
	base := checked()
	stop := make(chan struct{})
	okN, failN, loopDone := legitLoop(h.client, stop)
	var stopOnce sync.Once
	stopLoop := func() { stopOnce.Do(func() { close(stop); <-loopDone }) }
	t.Cleanup(stopLoop) // however the test ends
	start := time.Now()
	var seen uint64
	aborted := false
	soFar := make([]uint64, NumCounters)
	const chunk = 2000
	sent := 0
	for k := 0; k < len(items); {
		for n := 0; n < chunk && k < len(items); k++ {
			for _, f := range items[k].frames {
				sendFrame(t, fd, f)
				n++
				sent++
			}
			seen += uint64(items[k].visible)
			if items[k].visible > 0 {
				soFar[items[k].cnt]++
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for checked()-base < seen && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if checked()-base < seen {
			// Stop sending; the checks below say what went wrong.
			t.Errorf("%s: golvs counted %d of the %d frames it should have seen so far (%d sent)", h.mode, checked()-base, seen, sent)
			copy(want, soFar)
			aborted = true
			break
		}
	}
	stormTime := time.Since(start)
	// The loop goes on a moment after the storm, then stops.
	time.Sleep(200 * time.Millisecond)
	stopLoop()
	after := h.d.Drops.Get()
	kAfter := h.d.KernelStats()
	for i := range after {
		if background(i) {
			continue
		}
		if got := after[i] - before[i]; got != want[i] {
			t.Errorf("%s: %s counted %d, want %d", h.mode, CounterNames[i], got, want[i])
		}
	}
	if got := kAfter["kernel-reasm-reqds"] - kBefore["kernel-reasm-reqds"]; got != fragsSent && !aborted {
		t.Errorf("%s: the kernel took %d fragments to reassembly, %d were sent", h.mode, got, fragsSent)
	}
	if got := kAfter["kernel-reasm-oks"] - kBefore["kernel-reasm-oks"]; got != reasmOK && !aborted {
		t.Errorf("%s: the kernel reassembled %d datagrams, want %d", h.mode, got, reasmOK)
	}
	time.Sleep(50 * time.Millisecond) // the captures read what is in flight
	oc.close()
	if n := oc.bad.Load(); n != 0 {
		t.Errorf("%s: %d storm frames left the director, e.g. %v", h.mode, n, oc.sample.Load())
	}
	if failN.Load() != 0 || okN.Load() == 0 {
		t.Errorf("%s: legitimate requests during the storm: %d answered, %d unanswered", h.mode, okN.Load(), failN.Load())
	}
	if _, err := lab.EchoRoundTrip(h.client, vipEcho, []byte("LEGIT-after"), lab.PMTUDefault, 3, 2*time.Second); err != nil {
		t.Errorf("%s: after the storm: %v", h.mode, err)
	}
	t.Logf("%s: %d frames (%d seen by golvs, %d fragments to the kernel's reassembly) in %v; %d legitimate requests answered meanwhile; classes %v",
		h.mode, total, visible, fragsSent, stormTime.Round(time.Millisecond), okN.Load(), perClass)
}

// background reports the counters the lab's own traffic moves besides the
// storm: ARP (the hosts' neighbour refreshes) and ring-packets (every
// frame a ring took, the legitimate loop's too). Every other counter must
// move by exactly what the storm makes it.
func background(i int) bool {
	return i == CntARPAnswered || i == CntARPOther || i == CntRingPackets
}

// sendFrame sends one crafted frame. ENOBUFS says the veth dropped it
// (its peer's backlog was full: a loaded machine's softirqs lag), so it
// never reached the director: it is sent again, a moment later.
func sendFrame(t *testing.T, fd int, f []byte) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := unix.Write(fd, f)
		if err == nil {
			return
		}
		if (err != unix.ENOBUFS && err != unix.EAGAIN && err != unix.EINTR) || time.Now().After(deadline) {
			t.Fatalf("sending a storm frame of %d bytes: %v", len(f), err)
		}
		time.Sleep(time.Millisecond)
	}
}

// rawSocket opens a raw socket on the far end of the director's ext0,
// for sending crafted frames.
func (h *hostileLab) rawSocket(t *testing.T) int {
	t.Helper()
	fd := -1
	err := h.stormNS.Do(func() error {
		ifi, err := net.InterfaceByName(h.stormDev)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: 0, Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("raw socket in the client: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}
