package netio

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/golvs/golvs/packet"
)

// The kernel's packet types (skb->pkt_type), which the filter reads with
// the SKF_AD_PKTTYPE extension.
const (
	pktHost      = 0
	pktBroadcast = 1
	pktMulticast = 2
	pktOtherHost = 3
	pktOutgoing  = 4
)

// filterVM runs a filter program in x/net/bpf's VM. The VM has no
// SKF_AD_PKTTYPE extension, so each load of it is replaced by a load of
// the constant packet type the frame is given: exactly what the kernel's
// extension puts in A.
type filterVM struct {
	byType [5]*bpf.VM
	insns  int
}

func newFilterVM(t testing.TB, prog []bpf.Instruction) *filterVM {
	t.Helper()
	fv := &filterVM{insns: len(prog)}
	for pt := range fv.byType {
		p := make([]bpf.Instruction, len(prog))
		copy(p, prog)
		for i, ins := range p {
			if e, ok := ins.(bpf.LoadExtension); ok && e.Num == bpf.ExtType {
				p[i] = bpf.LoadConstant{Dst: bpf.RegA, Val: uint32(pt)}
			}
		}
		vm, err := bpf.NewVM(p)
		if err != nil {
			t.Fatalf("filter does not load in the BPF VM: %v", err)
		}
		fv.byType[pt] = vm
	}
	return fv
}

func newRawFilterVM(t testing.TB, raw []bpf.RawInstruction) *filterVM {
	t.Helper()
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatalf("filter does not disassemble")
	}
	return newFilterVM(t, prog)
}

func (fv *filterVM) accepts(t testing.TB, pkttype int, frame []byte) bool {
	n, err := fv.byType[pkttype].Run(frame)
	if err != nil {
		t.Fatalf("BPF VM: %v", err)
	}
	return n > 0
}

// verdict is what the reference matcher says of a frame.
type verdict int

const (
	reject verdict = iota
	accept
	either // a truncated or invalid header the filter may take or leave
)

// Reference matchers, written from the documented meaning of a Match and
// of each precision level, not from the program.

type filterLevel int

const (
	levelExact filterLevel = iota // protocol, address (prefix) and port
	levelAddrs                    // addresses (prefixes) only
	levelIPv4                     // every IPv4 frame
)

func refFilter(level filterLevel, dst, src []Match, arp bool, pkttype int, f []byte) verdict {
	if pkttype == pktOutgoing || len(f) < 14 {
		return reject
	}
	switch binary.BigEndian.Uint16(f[12:]) {
	case packet.EtherTypeARP:
		if arp {
			return accept
		}
		return reject
	case packet.EtherTypeIP4:
	case packet.EtherTypeIP6:
		return refFilter6(level, dst, src, f)
	default:
		return reject
	}
	if level == levelIPv4 {
		return accept
	}
	if len(f) < 14+20 || f[14]&0xf < 5 {
		return either // no room for the addresses, or a bogus header length
	}
	l4 := 14 + 4*int(f[14]&0xf)
	proto := f[14+9]
	saddr := binary.BigEndian.Uint32(f[14+12:])
	daddr := binary.BigEndian.Uint32(f[14+16:])
	unknown := false
	hit := func(m Match, addr uint32, portOff int) bool {
		bits := int(m.Bits)
		if bits == 0 || bits > 32 {
			bits = 32
		}
		mask := ^uint32(0) << (32 - bits)
		if addr&mask != binary.BigEndian.Uint32(m.Addr[:])&mask {
			return false
		}
		if level == levelAddrs {
			return true
		}
		if m.Proto != 0 && proto != m.Proto {
			return false
		}
		if m.Port == 0 {
			return true
		}
		if l4+portOff+2 > len(f) {
			unknown = true
			return false
		}
		return binary.BigEndian.Uint16(f[l4+portOff:]) == m.Port
	}
	any := false
	for _, m := range dst {
		any = !m.V6 && hit(m, daddr, 2) || any
	}
	for _, m := range src {
		any = !m.V6 && hit(m, saddr, 0) || any
	}
	switch {
	case unknown:
		return either // the transport header is cut short
	case any:
		return accept
	}
	return reject
}

// refFilter6 is the reference for IPv6 frames: Neighbor Solicitations
// always; a match's address (prefix) first, then, when the next header is
// the match's protocol, its port, while an extension header next (hop-by-
// hop, routing, fragment, destination options) is taken on the address.
func refFilter6(level filterLevel, dst, src []Match, f []byte) verdict {
	if level == levelIPv4 {
		return accept
	}
	if len(f) < 14+40 {
		return either
	}
	nh := f[14+6]
	if nh == 58 {
		if len(f) < 14+41 {
			return either
		}
		if f[14+40] == 135 {
			return accept
		}
	}
	unknown := false
	hit := func(m Match, addr []byte, portOff int) bool {
		bits := int(m.Bits)
		if bits == 0 || bits > 128 {
			bits = 128
		}
		for i := 0; i < 16; i++ {
			keep := min(max(bits-8*i, 0), 8)
			mask := byte(0xff << (8 - keep))
			if keep == 0 {
				mask = 0
			}
			if addr[i]&mask != m.Addr6[i]&mask {
				return false
			}
		}
		if level == levelAddrs || m.Proto == 0 {
			return true
		}
		switch nh {
		case 0, 43, 44, 60:
			return true
		}
		if nh != m.Proto {
			return false
		}
		if m.Port == 0 {
			return true
		}
		if 14+40+portOff+2 > len(f) {
			unknown = true
			return false
		}
		return binary.BigEndian.Uint16(f[14+40+portOff:]) == m.Port
	}
	any := false
	for _, m := range dst {
		any = m.V6 && hit(m, f[14+24:14+40], 2) || any
	}
	for _, m := range src {
		any = m.V6 && hit(m, f[14+8:14+24], 0) || any
	}
	switch {
	case unknown:
		return either
	case any:
		return accept
	}
	return reject
}

// filterConfig draws a random filter configuration whose addresses, ports
// and protocols overlap on purpose: the same address as a destination and
// a source, prefixes covering single addresses, port 0 and protocol 0.
func filterConfig(r *rand.Rand, n int) (dst, src []Match, pool [][4]byte) {
	npool := 1 + n/2
	for i := 0; i < npool; i++ {
		pool = append(pool, [4]byte{198, 18 + byte(r.IntN(2)), byte(r.IntN(4)), byte(r.IntN(256))})
	}
	ports := []uint16{0, 80, 443, 53, 8080, uint16(r.IntN(65536))}
	protos := []uint8{0, 1, 6, 17, 6, 17}
	one := func() Match {
		m := Match{Proto: protos[r.IntN(len(protos))], Addr: pool[r.IntN(len(pool))], Port: ports[r.IntN(len(ports))]}
		if r.IntN(8) == 0 {
			m.Bits = uint8(8 + r.IntN(25))
		}
		if r.IntN(3) == 0 { // IPv6: the pool address in 2001:db8::/32's low bytes
			m.V6, m.Addr6 = true, v6of(m.Addr)
			if m.Bits != 0 {
				m.Bits = uint8(32 + r.IntN(97))
			}
			if m.Proto == 1 {
				m.Proto = 58
			}
		}
		if m.Proto == 1 || m.Proto == 58 {
			m.Port = 0
		}
		return m
	}
	for i := 0; i < n; i++ {
		m := one()
		dst = append(dst, m)
		switch r.IntN(4) {
		case 0: // the very same match as a source (a real server on a VIP's address and port)
			src = append(src, m)
		case 1:
			x := one()
			x.Addr, x.Addr6, x.V6 = m.Addr, m.Addr6, m.V6 // same address, other protocol or port
			src = append(src, x)
		default:
			src = append(src, one())
		}
	}
	return dst, src, pool
}

// filterFrame draws a frame meant to hit or just miss the configuration:
// addresses from the pool, their neighbours or anything; ports and
// protocols from the configuration or anything; IP options, truncation,
// other ethertypes.
func filterFrame(r *rand.Rand, pool [][4]byte, dst, src []Match) []byte {
	addr := func() [4]byte {
		switch r.IntN(4) {
		case 0, 1:
			return pool[r.IntN(len(pool))]
		case 2:
			a := pool[r.IntN(len(pool))]
			a[3] ^= byte(1 << r.IntN(8))
			if r.IntN(2) == 0 {
				a[2] ^= byte(1 << r.IntN(8))
			}
			return a
		}
		return [4]byte{byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}
	}
	port := func(ms []Match) uint16 {
		if len(ms) > 0 && r.IntN(2) == 0 {
			return ms[r.IntN(len(ms))].Port
		}
		return uint16(r.IntN(65536))
	}
	protos := []uint8{1, 6, 17, 47, uint8(r.IntN(256))}
	opts := 0
	if r.IntN(6) == 0 {
		opts = 4 * (1 + r.IntN(10))
	}
	l4 := 8 + r.IntN(40)
	f := make([]byte, 14+20+opts+l4)
	et := uint16(packet.EtherTypeIP4)
	switch r.IntN(12) {
	case 0:
		et = packet.EtherTypeARP
	case 1:
		et = packet.EtherTypeIP6
	case 2:
		et = 0x8100 // VLAN
	case 3:
		et = uint16(r.IntN(65536))
	}
	binary.BigEndian.PutUint16(f[12:], et)
	ip := f[14:]
	ip[0] = 0x40 | byte(5+opts/4)
	if r.IntN(20) == 0 {
		ip[0] = 0x40 | byte(r.IntN(5)) // bogus header length
	}
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	ip[8], ip[9] = 64, protos[r.IntN(len(protos))]
	s, d := addr(), addr()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[20+opts:], port(src))
	binary.BigEndian.PutUint16(ip[22+opts:], port(dst))
	if r.IntN(3) == 0 {
		f = filterFrame6(r, addr, port(src), port(dst), protos)
	}
	if r.IntN(10) == 0 {
		f = f[:r.IntN(len(f)+1)] // truncated anywhere
	}
	return f
}

// v6of maps a pool address into IPv6 (2001:db8::a.b.c.d).
func v6of(a [4]byte) [16]byte {
	return [16]byte{0x20, 0x01, 0x0d, 0xb8, 12: a[0], 13: a[1], 14: a[2], 15: a[3]}
}

// filterFrame6 draws an IPv6 frame: addresses from the pool (mapped),
// their neighbours in the high bits or anything; a protocol, an extension
// header, or an NS.
func filterFrame6(r *rand.Rand, addr func() [4]byte, sport, dport uint16, protos []uint8) []byte {
	a6 := func() [16]byte {
		a := v6of(addr())
		if r.IntN(5) == 0 {
			a[r.IntN(12)] ^= byte(1 << r.IntN(8))
		}
		return a
	}
	f := make([]byte, 14+40+8+r.IntN(40))
	binary.BigEndian.PutUint16(f[12:], packet.EtherTypeIP6)
	ip := f[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40))
	nhs := append([]uint8{0, 43, 44, 60, 58}, protos...)
	ip[6], ip[7] = nhs[r.IntN(len(nhs))], 64
	s, d := a6(), a6()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	binary.BigEndian.PutUint16(ip[40:], sport)
	binary.BigEndian.PutUint16(ip[42:], dport)
	if ip[6] == 58 && r.IntN(2) == 0 {
		ip[40] = 135
	}
	return f
}

// craftedFrames are, for each match, a frame that meets it exactly on its
// own side and the same frame reversed (which must be taken only when the
// other side lists it too).
func craftedFrames(dst, src []Match) [][]byte {
	var out [][]byte
	mk := func(m Match, asDst bool) {
		proto := m.Proto
		if proto == 0 {
			proto = 6
		}
		other := [4]byte{203, 0, 113, 9} // in no configuration
		sport, dport := uint16(40000), m.Port
		s, d := other, m.Addr
		if m.V6 {
			copy(d[:], m.Addr6[12:])
		}
		if !asDst {
			sport, dport = m.Port, 40000
			s, d = d, other
		}
		if m.V6 {
			out = append(out, ip6Frame(proto, v6of(s), v6of(d), sport, dport), ip6Frame(proto, v6of(d), v6of(s), dport, sport))
			return
		}
		out = append(out, ipFrame(proto, s, d, sport, dport), ipFrame(proto, d, s, dport, sport))
	}
	for _, m := range dst {
		mk(m, true)
	}
	for _, m := range src {
		mk(m, false)
	}
	return out
}

func checkFilter(t *testing.T, name string, fv *filterVM, level filterLevel, dst, src []Match, arp bool, frames [][]byte, r *rand.Rand) {
	t.Helper()
	bad := 0
	for _, f := range frames {
		pt := pktHost
		switch r.IntN(10) {
		case 0:
			pt = pktOutgoing
		case 1:
			pt = []int{pktBroadcast, pktMulticast, pktOtherHost}[r.IntN(3)]
		}
		want := refFilter(level, dst, src, arp, pt, f)
		got := fv.accepts(t, pt, f)
		if want == either || got == (want == accept) {
			continue
		}
		if bad++; bad <= 5 {
			t.Errorf("%s: pkttype %d frame % x: accepted %v, the reference says %v", name, pt, f, got, want == accept)
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d frames disagree with the reference in all", name, bad)
	}
}

// TestFilterReference runs the filter's programs in the BPF VM over random
// configurations and frames (and frames crafted to meet each match) and
// compares every verdict with a reference matcher: the exact program, the
// addresses-only fallback and BuildFilter's choice between them.
func TestFilterReference(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 3))
	sizes := []int{1, 2, 3, 5, 8, 13, 30, 60, 120, 250, 400, 700, 1500, 2500}
	chosen := map[int]bool{} // program lengths BuildFilter chose: exact, addresses, all IPv4
	for ci, n := range sizes {
		dst, src, pool := filterConfig(r, n)
		arp := r.IntN(2) == 0
		frames := craftedFrames(dst, src)
		nrand := 3000
		if n > 100 {
			nrand = 600 // long programs: the VM is slow
		}
		for i := 0; i < nrand; i++ {
			frames = append(frames, filterFrame(r, pool, dst, src))
		}
		for _, lv := range []struct {
			level filterLevel
			ports bool
		}{{levelExact, true}, {levelAddrs, false}} {
			name := fmt.Sprintf("config %d (%d matches) level %d", ci, n, lv.level)
			checkFilter(t, name, newFilterVM(t, build(dst, src, arp, lv.ports)), lv.level, dst, src, arp, frames, r)
		}
		// What BuildFilter installs: never more than the kernel takes,
		// and never a frame refused that the exact matcher takes.
		raw, err := BuildFilter(dst, src, arp)
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) > maxInsns {
			t.Fatalf("config %d: %d instructions, over the kernel's %d", ci, len(raw), maxInsns)
		}
		switch len(raw) {
		case len(build(dst, src, arp, true)):
			chosen[0] = true
		case len(build(dst, src, arp, false)):
			chosen[1] = true
		default:
			chosen[2] = true
		}
		fv := newRawFilterVM(t, raw)
		for _, f := range frames {
			if refFilter(levelExact, dst, src, arp, pktHost, f) == accept && !fv.accepts(t, pktHost, f) {
				t.Fatalf("config %d: BuildFilter's program refuses % x, which the configuration takes", ci, f)
			}
		}
	}
	if len(chosen) != 3 {
		t.Fatalf("the configurations exercised only %v of BuildFilter's three programs", chosen)
	}
}

// TestFilterSourceEqualsDestination: a real server whose address (and
// port) equals a VIP's must still get its replies through, in the exact
// program and in the addresses-only fallback of large configurations.
func TestFilterSourceEqualsDestination(t *testing.T) {
	a := [4]byte{198, 18, 0, 100}
	other := [4]byte{198, 18, 0, 10}
	dst := []Match{{Proto: 6, Addr: a, Port: 80}}
	src := []Match{{Proto: 6, Addr: a, Port: 80}}
	reply := ipFrame(6, a, other, 80, 40000)
	for _, ports := range []bool{true, false} {
		fv := newFilterVM(t, build(dst, src, true, ports))
		if !fv.accepts(t, pktHost, reply) {
			t.Errorf("ports=%v: a reply from %v:80 is refused although it is a listed source", ports, a)
		}
	}
	// A configuration too large for the exact program.
	for i := 0; i < 1200; i++ {
		dst = append(dst, Match{Proto: 6, Addr: [4]byte{198, 19, byte(i >> 8), byte(i)}, Port: 80})
	}
	raw, err := BuildFilter(dst, src, true)
	if err != nil {
		t.Fatal(err)
	}
	if !newRawFilterVM(t, raw).accepts(t, pktHost, reply) {
		t.Errorf("large configuration: a reply from %v:80 is refused", a)
	}
}
