package bench

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/lab"
)

// TestGeneratorFrames decodes the generator's frames with gopacket, an
// implementation of its own, and checks every header field, both
// checksums and the stamp.
func TestGeneratorFrames(t *testing.T) {
	src := [6]byte{0x02, 0, 0x5e, 0, 0x0c, 10}
	dst := [6]byte{0x02, 0, 0x5e, 0, 0xd1, 1}
	targets := [][4]byte{{198, 19, 0, 11}, {198, 19, 0, 12}}
	for _, tc := range []struct {
		name string
		mix  Mix
		size int
	}{
		{"syn-64", MixSYN, 64}, {"est-64", MixEst, 64}, {"udp-64", MixUDP, 64},
		{"syn-1514", MixSYN, 1514}, {"est-300", MixEst, 300}, {"udp-1514", MixUDP, 1514},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := &flowPlan{mix: tc.mix, flows: 1000, targets: targets}
			spec := frameSpec{srcMAC: src, dstMAC: dst, size: tc.size}
			buf := make([]byte, MaxFrame)
			pre := make([]byte, MaxFrame)
			var tm *frameTmpl
			flows := map[[6]uint16]bool{}
			for k := uint64(0); k < 3000; k++ {
				plan.flow(k, &spec)
				spec.ts = 1e12 + k*1000
				spec.tag = 7
				n := buildFrame(buf, &spec)
				if n != tc.size {
					t.Fatalf("frame length %d, want %d", n, tc.size)
				}
				// The generator's pre-built frames: the same bytes.
				if tm == nil {
					tm = newTmpl(spec)
				}
				if m := tm.fill(pre, &spec); m != n || !bytes.Equal(pre[:m], buf[:n]) {
					t.Fatalf("frame %d: pre-built frame differs:\n% x\nwant\n% x", k, pre[:m], buf[:n])
				}
				p := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
				// Port 53 makes gopacket try DNS on the stamp: only the
				// layers up to the transport must decode.
				if p.TransportLayer() == nil {
					t.Fatalf("frame %d does not decode: %v", k, p.ErrorLayer().Error())
				}
				eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
				if !bytes.Equal(eth.SrcMAC, src[:]) || !bytes.Equal(eth.DstMAC, dst[:]) {
					t.Fatalf("MACs %s -> %s", eth.SrcMAC, eth.DstMAC)
				}
				ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
				if ip.IHL != 5 || int(ip.Length) != n-14 || ip.TTL != 64 || ip.Flags != layers.IPv4DontFragment {
					t.Fatalf("IPv4 header: ihl %d len %d ttl %d flags %v", ip.IHL, ip.Length, ip.TTL, ip.Flags)
				}
				if ip.SrcIP[0] != 198 || ip.SrcIP[1] != 18 || ip.SrcIP[2] != 0 {
					t.Fatalf("source %s outside 198.18.0.0/24", ip.SrcIP)
				}
				if !ip.DstIP.Equal(net.IP(targets[0][:])) && !ip.DstIP.Equal(net.IP(targets[1][:])) {
					t.Fatalf("destination %s not a target", ip.DstIP)
				}
				ipc := *ip
				_ = ipc.SerializeTo(gopacket.NewSerializeBuffer(), gopacket.SerializeOptions{ComputeChecksums: true})
				if ipc.Checksum != ip.Checksum {
					t.Fatalf("IPv4 checksum %#04x, recomputed %#04x", ip.Checksum, ipc.Checksum)
				}
				var payload []byte
				var sport, dport uint16
				switch tc.mix {
				case MixUDP:
					u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
					if !ok {
						t.Fatalf("not UDP: %v", p)
					}
					if int(u.Length) != n-34 || u.DstPort != 53 {
						t.Fatalf("UDP length %d port %d", u.Length, u.DstPort)
					}
					c := *u
					_ = c.SetNetworkLayerForChecksum(ip)
					_ = gopacket.SerializeLayers(gopacket.NewSerializeBuffer(), gopacket.SerializeOptions{ComputeChecksums: true}, &c, gopacket.Payload(u.Payload))
					if c.Checksum != u.Checksum || u.Checksum == 0 {
						t.Fatalf("UDP checksum %#04x, recomputed %#04x", u.Checksum, c.Checksum)
					}
					payload, sport, dport = u.Payload, uint16(u.SrcPort), uint16(u.DstPort)
				default:
					tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
					if !ok {
						t.Fatalf("not TCP: %v", p)
					}
					if tcp.DataOffset != 5 || tcp.DstPort != 80 || tcp.SYN != (tc.mix == MixSYN) || tcp.ACK != (tc.mix == MixEst) || tcp.RST || tcp.FIN {
						t.Fatalf("TCP header: %+v", tcp)
					}
					c := *tcp
					_ = c.SetNetworkLayerForChecksum(ip)
					_ = gopacket.SerializeLayers(gopacket.NewSerializeBuffer(), gopacket.SerializeOptions{ComputeChecksums: true}, &c, gopacket.Payload(tcp.Payload))
					if c.Checksum != tcp.Checksum {
						t.Fatalf("TCP checksum %#04x, recomputed %#04x", tcp.Checksum, c.Checksum)
					}
					payload, sport, dport = tcp.Payload, uint16(tcp.SrcPort), uint16(tcp.DstPort)
				}
				if len(payload) < stampLen || binary.BigEndian.Uint64(payload) != spec.ts || binary.BigEndian.Uint16(payload[8:]) != 7 {
					t.Fatalf("payload % x, want stamp %d tag 7", payload, spec.ts)
				}
				ts, tag, ok := stampOf(buf[:n])
				if !ok || ts != spec.ts || tag != 7 {
					t.Fatalf("stampOf = %d, %d, %v; want %d, 7, true", ts, tag, ok, spec.ts)
				}
				var key [6]uint16
				key[0], key[1] = uint16(ip.SrcIP[3]), sport
				key[2], key[3] = uint16(ip.DstIP[3]), dport
				flows[key] = true
			}
			want := 1000
			if tc.mix == MixSYN {
				want = 3000 // a new flow per frame
			}
			if len(flows) != want {
				t.Fatalf("%d distinct flows, want %d", len(flows), want)
			}
		})
	}
}

// TestGeneratorFrames6: IPv6 frames, pre-built or not, the same bytes,
// decoding with gopacket with their checksums right, and their stamps found
// through an ip6ip6 header and TOA's IPv6 form.
func TestGeneratorFrames6(t *testing.T) {
	src := [6]byte{0x02, 0, 0x5e, 0, 0x0c, 10}
	dst := [6]byte{0x02, 0, 0x5e, 0, 0xd1, 1}
	vip := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 14: 1}
	for _, mix := range []Mix{MixSYN, MixEst, MixUDP} {
		plan := &flowPlan{mix: mix, flows: 100, v6: true, targets6: [][16]byte{vip}}
		spec := frameSpec{srcMAC: src, dstMAC: dst, size: MinFrame6}
		buf, pre := make([]byte, MaxFrame), make([]byte, MaxFrame)
		var tm *frameTmpl
		for k := uint64(0); k < 500; k++ {
			plan.flow(k, &spec)
			spec.ts, spec.tag = 1e12+k*977, 9
			n := buildFrame(buf, &spec)
			if tm == nil {
				tm = newTmpl(spec)
			}
			if m := tm.fill(pre, &spec); m != n || !bytes.Equal(pre[:m], buf[:n]) {
				t.Fatalf("%s frame %d: pre-built frame differs", mix, k)
			}
			p := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
			ip, ok := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			if !ok || p.TransportLayer() == nil || !ip.DstIP.Equal(net.IP(vip[:])) || int(ip.Length) != n-54 {
				t.Fatalf("%s frame %d: %v", mix, k, p)
			}
			var got, want uint16
			switch l := p.TransportLayer().(type) {
			case *layers.TCP:
				c := *l
				_ = c.SetNetworkLayerForChecksum(ip)
				_ = gopacket.SerializeLayers(gopacket.NewSerializeBuffer(), gopacket.SerializeOptions{ComputeChecksums: true}, &c, gopacket.Payload(l.Payload))
				got, want = l.Checksum, c.Checksum
			case *layers.UDP:
				c := *l
				_ = c.SetNetworkLayerForChecksum(ip)
				_ = gopacket.SerializeLayers(gopacket.NewSerializeBuffer(), gopacket.SerializeOptions{ComputeChecksums: true}, &c, gopacket.Payload(l.Payload))
				got, want = l.Checksum, c.Checksum
			}
			if got != want {
				t.Fatalf("%s frame %d: checksum %#04x, recomputed %#04x", mix, k, got, want)
			}
			if ts, tag, ok := stampOf(buf[:n]); !ok || ts != spec.ts || tag != 9 {
				t.Fatalf("%s frame %d: stamp %d %d %v", mix, k, ts, tag, ok)
			}
		}
	}
	spec := frameSpec{srcMAC: src, dstMAC: dst, size: MinFrame6, v6: true, src6: [16]byte{0x20, 1}, dst6: vip, proto: 6, flags: tcpFlagSYN, ts: 42, tag: 3}
	b := make([]byte, 200)
	n := buildFrame(b, &spec)
	outer := make([]byte, 40)
	outer[0], outer[6] = 0x60, 41
	tun := append(append(append([]byte{}, b[:14]...), outer...), b[14:n]...)
	toa := append(append(append([]byte{}, b[:74]...), 253, 20, 0, 80, 0x20, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10), b[74:n]...)
	toa[14+40+12] = 10 << 4
	for name, f := range map[string][]byte{"ip6ip6": tun, "toa6": toa} {
		if ts, tag, ok := stampOf(f); !ok || ts != 42 || tag != 3 {
			t.Fatalf("%s: stamp %d %d %v", name, ts, tag, ok)
		}
	}
}

// TestTmplChecksumEdges fills frames whose checksums come out 0 and
// 0xffff (and everything between, over random fields) against buildFrame.
func TestTmplChecksumEdges(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, proto := range []uint8{6, 17} {
		base := frameSpec{srcMAC: [6]byte{2, 0, 0, 0, 0, 1}, dstMAC: [6]byte{2, 0, 0, 0, 0, 2}, size: 64 + rng.IntN(100), proto: proto, dport: 53, flags: tcpFlagACK}
		tm := newTmpl(base)
		a, b := make([]byte, MaxFrame), make([]byte, MaxFrame)
		var sawZero, sawFFFF bool
		for i := 0; i < 400000; i++ {
			s := base
			s.src = [4]byte{198, 18, 0, byte(rng.IntN(256))}
			s.dst = [4]byte{198, 19, 0, byte(rng.IntN(256))}
			s.sport, s.seq, s.ts, s.tag = uint16(rng.Uint32()), rng.Uint32(), rng.Uint64(), uint16(rng.Uint32())
			n := buildFrame(a, &s)
			if m := tm.fill(b, &s); m != n || !bytes.Equal(a[:n], b[:m]) {
				t.Fatalf("proto %d, %+v: pre-built frame differs", proto, s)
			}
			off := 14 + 20 + 16
			if proto == 17 {
				off = 14 + 20 + 6
			}
			switch binary.BigEndian.Uint16(a[off:]) {
			case 0:
				sawZero = true
			case 0xffff:
				sawFFFF = true
			}
		}
		if proto == 17 && sawZero {
			t.Errorf("UDP checksum 0 sent (means none)")
		}
		t.Logf("proto %d: checksum 0 seen %v, 0xffff seen %v", proto, sawZero, sawFFFF)
	}
}

func TestBuildFrameDoesNotAllocate(t *testing.T) {
	plan := &flowPlan{mix: MixSYN, flows: 10, targets: [][4]byte{{198, 18, 0, 100}}}
	spec := frameSpec{size: 64}
	buf := make([]byte, MaxFrame)
	var k uint64
	if n := testing.AllocsPerRun(1000, func() {
		plan.flow(k, &spec)
		buildFrame(buf, &spec)
		k++
	}); n != 0 {
		t.Fatalf("got %v allocations per frame, want 0", n)
	}
}

// TestStampThroughModes finds the stamp behind an IPIP header (TUN) and
// TCP options (FULLNAT's TOA), and refuses frames that are not ours.
func TestStampThroughModes(t *testing.T) {
	spec := frameSpec{src: [4]byte{198, 18, 0, 10}, dst: [4]byte{198, 18, 0, 100}, proto: 6, flags: tcpFlagSYN, size: 64, ts: 42, tag: 3}
	b := make([]byte, 200)
	n := buildFrame(b, &spec)
	// IPIP: an outer IPv4 header (protocol 4) in front of the inner one.
	tun := append(append(append([]byte{}, b[:14]...), 0x45, 0, 0, 0, 0, 0, 0, 0, 64, 4, 0, 0, 198, 19, 0, 1, 198, 19, 0, 11), b[14:n]...)
	// TOA: 8 option bytes after the TCP header, data offset 7.
	toa := append(append(append([]byte{}, b[:54]...), 254, 8, 0, 80, 198, 18, 0, 10), b[54:n]...)
	toa[14+20+12] = 7 << 4
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"plain", b[:n], true}, {"ipip", tun, true}, {"toa", toa, true},
		{"short", b[:40], false}, {"arp", append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 6}, make([]byte, 50)...), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, tag, ok := stampOf(tc.b)
			if ok != tc.ok || (ok && (ts != 42 || tag != 3)) {
				t.Fatalf("stampOf = %d, %d, %v; want 42, 3, %v", ts, tag, ok, tc.ok)
			}
		})
	}
}

// TestLatHistPercentiles checks the histogram against Percentile, the
// exact oracle, within its bucket resolution.
func TestLatHistPercentiles(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h latHist
	var xs []float64
	for i := 0; i < 100000; i++ {
		v := uint64(r.ExpFloat64() * 50000)
		h.add(v)
		xs = append(xs, float64(v))
	}
	for _, p := range []float64{1, 50, 90, 99, 99.9} {
		got, want := h.percentile(p), Percentile(xs, p)
		if math.Abs(got-want) > 0.04*want+1 {
			t.Fatalf("p%g = %g, want %g (within 4%%)", p, got, want)
		}
	}
	var empty latHist
	if !math.IsNaN(empty.percentile(50)) {
		t.Fatalf("empty percentile = %g, want NaN", empty.percentile(50))
	}
}

func TestDataplaneLimits(t *testing.T) {
	base := func() DataplaneConfig {
		return DataplaneConfig{Duration: time.Second, Size: 64, Flows: 10, MaxPackets: 100, RealServers: 2,
			Workers: []int{1}, Mixes: []Mix{MixUDP}, Modes: []string{"nat"}, Rings: []int{2}, Placements: []string{placeSplit}}
	}
	for _, tc := range []struct {
		name string
		mod  func(*DataplaneConfig)
		want string
	}{
		{"ok", func(*DataplaneConfig) {}, ""},
		{"duration", func(c *DataplaneConfig) { c.Duration = 601 * time.Second }, "at most 10m0s"},
		{"rate", func(c *DataplaneConfig) { c.Rate = 10 }, "--rate 10 out of range"},
		{"size", func(c *DataplaneConfig) { c.Size = 60 }, "--size 60 out of range (allowed: 64..1514"},
		{"workers", func(c *DataplaneConfig) { c.Workers = []int{0} }, "--workers 0 out of range"},
		{"mix", func(c *DataplaneConfig) { c.Mixes = []Mix{"icmp"} }, `unknown mix "icmp"`},
		{"mode", func(c *DataplaneConfig) { c.Modes = []string{"bypass"} }, `unknown mode "bypass"`},
		{"ring", func(c *DataplaneConfig) { c.Rings = []int{4} }, "--ring 4: allowed 2 or 3"},
		{"no ring", func(c *DataplaneConfig) { c.Rings = nil }, "--ring is empty"},
		{"placement", func(c *DataplaneConfig) { c.Placements = []string{"beside"} }, `unknown placement "beside"`},
		{"concurrency", func(c *DataplaneConfig) { c.Concurrency = []int{0} }, "--concurrency 0 out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	var out, errb bytes.Buffer
	if err := Main([]string{"dataplane", "--duration", "601s"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "at most 10m0s") {
		t.Fatalf("got %v, want the duration refused with its limit", err)
	}
}

// TestDataplaneSmoke runs the whole command for a moment: the lab, every
// reference this host has, golvs with one worker, the TCP tests.
func TestDataplaneSmoke(t *testing.T) {
	if err := lab.RequireRoot(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	if testing.Short() {
		t.Skip("skipping: builds a lab (-short)")
	}
	c := DataplaneConfig{Duration: 100 * time.Millisecond, Size: 64, Flows: 64, MaxPackets: 1_000_000, RealServers: 2,
		Workers: []int{1}, Mixes: []Mix{MixEst, MixUDP}, Modes: []string{"nat", "fullnat", "tun"}, Concurrency: []int{2}, ReqDuration: 300 * time.Millisecond,
		StreamBytes: 256 << 10, LatRate: 0, Rings: []int{2}, Placements: []string{placeSplit}, NoDropRow: true,
		Refs: []string{fwdSink, "kernel-forward", "netio-ceiling", refXDP}, // the peers' floods are the slow part
		IPv6: true, BusyPolls: []time.Duration{director.DefaultSpin, 0}}
	start := time.Now()
	rep, err := RunDataplane(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("took %s", time.Since(start))
	got := map[string]bool{}
	for _, cl := range rep.Cells {
		got[cl.Forwarder] = true
		if cl.Sent == 0 || cl.Received == 0 {
			t.Errorf("%s/%s: sent %d, received %d; want both > 0", cl.Forwarder, cl.Mix, cl.Sent, cl.Received)
		}
		if cl.Received > cl.Sent {
			t.Errorf("%s/%s: received %d > sent %d", cl.Forwarder, cl.Mix, cl.Received, cl.Sent)
		}
		if cl.Forwarder != fwdSink && !(cl.LosslessPPS > 0 && float64(cl.LosslessPPS) <= float64(cl.SentPPS)*1.2) {
			t.Errorf("%s/%s: lossless rate %v (offered flat out %v)", cl.Forwarder, cl.Mix, cl.LosslessPPS, cl.SentPPS)
		}
		if cl.Forwarder != fwdSink && !(cl.P50us > 0 && cl.P50us <= cl.P90us && cl.P90us <= cl.P99us) {
			t.Errorf("%s/%s: percentiles %v %v %v", cl.Forwarder, cl.Mix, cl.P50us, cl.P90us, cl.P99us)
		}
	}
	want := []string{fwdSink, "kernel-forward", "netio-ceiling", "golvs-nat-w1", "golvs-nat-w1-ipv6", "golvs-fullnat-w1"}
	if fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW, 0); err == nil {
		unix.Close(fd)
		want = append(want, refXDP) // this kernel has AF_XDP
	}
	for _, f := range want {
		if !got[f] {
			t.Errorf("no cell for %s (have %v)", f, got)
		}
	}
	if len(rep.Ratios) == 0 {
		t.Errorf("no ratios")
	}
	// Every locked thread of the floods (generator, receivers, the netio
	// ceiling's loop, golvs's workers) had a P of its own.
	for _, n := range rep.Notes {
		if strings.Contains(n, "GOMAXPROCS") {
			t.Errorf("note: %s", n)
		}
	}
	v6ratio := false
	for _, q := range rep.Ratios {
		v6ratio = v6ratio || q.Golvs == "golvs-nat-w1" && q.Reference == "golvs-nat-w1-ipv6"
	}
	if !v6ratio {
		t.Errorf("no IPv4/IPv6 ratio: %+v", rep.Ratios)
	}
	paths := map[string]bool{}
	for _, q := range rep.Requests {
		paths[q.Path] = true
		if q.Requests == 0 || !(q.RPS > 0) || q.Error != "" || !(q.P50us > 0 && q.P50us <= q.P99us) {
			t.Errorf("requests %s c%d (%s): %+v", q.Path, q.Concurrency, q.Tool, q)
		}
	}
	// Every golvs row runs golvs's default --busy-poll and keeps its
	// plain name; the second window gets a NAT row of its own.
	// TUN's loops run in a TUN lab of their own, against direct-tun.
	for _, p := range []string{"direct", "golvs-nat-w1", "golvs-nat-w1-busypoll0s", "golvs-fullnat-w1", "direct-tun", "golvs-tun-w1"} {
		if !paths[p] {
			t.Errorf("request loops on %v, want %s", paths, p)
		}
	}
	if _, err := exec.LookPath("nft"); err == nil && !paths[peerNFT] {
		t.Errorf("request loops on %v: the host has nft, want %s", paths, peerNFT)
	}
	ceiling := false
	for _, st := range rep.Streams {
		if st.Bytes < 256<<10 || st.Error != "" {
			t.Errorf("stream %s: %d bytes, error %q", st.Path, st.Bytes, st.Error)
		}
		ceiling = ceiling || st.Path == streamCeiling
	}
	if !ceiling {
		t.Errorf("streams %+v: no %s row (the client's own ceiling)", rep.Streams, streamCeiling)
	}
	// Every path but the direct ones has its stream paired with its
	// direct reference, and that pair's ratio is the one reported.
	pairs := map[string]DPStreamPair{}
	for _, x := range rep.StreamPairs {
		pairs[x.Path] = x
		if x.Error != "" || x.Pairs != streamRuns || !(x.Min <= x.Ratio && x.Ratio <= x.Max) || !(x.Ratio > 0) {
			t.Errorf("stream pair %+v", x)
		}
	}
	for p := range paths {
		want := "direct"
		if p == "golvs-tun-w1" {
			want = "direct-tun"
		}
		if x, ok := pairs[p]; !isDirect(p) && (!ok || x.Reference != want) {
			t.Errorf("stream of %s: paired %+v (%v), want against %s", p, x, ok, want)
		}
	}
	for _, x := range rep.PathRatios {
		if pr, ok := pairs[x.Path]; ok && x.Concurrency == 0 && x.Reference == pr.Reference && x.Ratio != pr.Ratio {
			t.Errorf("stream ratio %s/%s %v, want the pairs' %v", x.Path, x.Reference, x.Ratio, pr.Ratio)
		}
	}
	var out bytes.Buffer
	if err := WriteDataplaneTable(&out, rep); err != nil {
		t.Fatal(err)
	}
	if err := PlotDataplane(rep, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "golvs-nat-w1") {
		t.Fatalf("table lacks golvs:\n%s", out.String())
	}
}

// TestGolvsCounters: the drops column counts the mode counters that drop
// frames (FULLNAT's exhausted port pool) beside the drop counters, and
// dropDiff names only what moved.
func TestGolvsCounters(t *testing.T) {
	before := map[string]uint64{"no-conn": 5, "fullnat-no-port": 0, "ring-packets": 10}
	after := map[string]uint64{"no-conn": 5, "fullnat-no-port": 7, "ring-packets": 30}
	got := dropDiff(before, after)
	if len(got) != 2 || got["fullnat-no-port"] != 7 || got["ring-packets"] != 20 {
		t.Fatalf("dropDiff = %v, want fullnat-no-port=7 ring-packets=20", got)
	}
	names := map[string]bool{}
	for _, i := range director.DroppingModeCounters {
		names[director.ModeCounterNames[i]] = true
	}
	for _, n := range []string{"fullnat-no-port", "ip6-reasm-evicted"} {
		if !names[n] {
			t.Errorf("%s is not among the counters the drops column reads", n)
		}
	}
	// An ICMP error not sent is no frame dropped: the frame that called
	// for it is counted by its drop cause already.
	if names["icmp-ratelimited"] {
		t.Errorf("icmp-ratelimited counted as a drop: it would count the frame twice")
	}
}

// TestPause: the generator's wait sleeps at least what it is asked (a
// unit slip, microseconds for nanoseconds, would show), and nothing for
// nothing.
func TestPause(t *testing.T) {
	start := time.Now()
	pause(3 * time.Millisecond)
	if el := time.Since(start); el < 3*time.Millisecond {
		t.Errorf("pause(3ms) returned after %v", el)
	}
	start = time.Now()
	pause(0)
	if el := time.Since(start); el > time.Second {
		t.Errorf("pause(0) took %v", el)
	}
}
