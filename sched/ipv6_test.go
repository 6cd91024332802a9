package sched

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/golvs/golvs/ipvs"
)

// The kernel's hash schedulers fold an IPv6 address into the XOR of its
// four 32-bit words (spec §2.10-2.14) and hash that value as they hash an
// IPv4 address. So an IPv6 packet must pick exactly what an IPv4 packet
// whose address equals its fold picks: the IPv4 schedulers' conformance
// (the spec's vectors) carries over to IPv6, and this test checks it over
// random addresses for every hash scheduler, with and without the port
// flags.
func TestIPv6HashesAsFolded(t *testing.T) {
	r := rand.New(rand.NewPCG(16, 16))
	key6 := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("2001:db8:18::100"), Port: 80}
	for _, name := range []string{"sh", "dh", "mh", "lblc", "lblcr"} {
		for _, flags := range []uint32{0, ipvs.SvcSched2} { // sh-port / mh-port
			if flags != 0 && name != "sh" && name != "mh" {
				continue
			}
			var pair [2]*harness
			for i := range pair {
				h := newHarness(t, name)
				if i == 1 {
					h.svc.Key = key6
				}
				h.svc.Flags = flags
				var ds []*ipvs.Dest
				for j := 0; j < 5; j++ {
					ds = append(ds, h.mk(string(rune('A'+j)), int32(1+j%3)))
				}
				h.preset(ds...)
				h.init()
				pair[i] = h
			}
			for n := 0; n < 500; n++ {
				var a6 [16]byte
				for i := range a6 {
					a6[i] = byte(r.Uint32())
				}
				f := binary.BigEndian.Uint32(a6[0:]) ^ binary.BigEndian.Uint32(a6[4:]) ^ binary.BigEndian.Uint32(a6[8:]) ^ binary.BigEndian.Uint32(a6[12:])
				var a4 [4]byte
				binary.BigEndian.PutUint32(a4[:], f)
				port := uint16(r.Uint32())
				p4 := &Packet{Proto: ipvs.ProtoTCP, Src: netip.AddrFrom4(a4), Dst: netip.AddrFrom4(a4), SrcPort: port, DstPort: 80}
				p6 := &Packet{Proto: ipvs.ProtoTCP, Src: netip.AddrFrom16(a6), Dst: netip.AddrFrom16(a6), SrcPort: port, DstPort: 80}
				d4 := pair[0].s.Schedule(pair[0].svc, p4)
				d6 := pair[1].s.Schedule(pair[1].svc, p6)
				if pair[0].name(d4) != pair[1].name(d6) {
					t.Fatalf("%s flags %#x: %s (fold %#x) picks %s, the IPv4 address of its fold %s", name, flags, netip.AddrFrom16(a6), f, pair[1].name(d6), pair[0].name(d4))
				}
			}
		}
	}
}

// TestMHMixedFamilyDests: ip_vs_mh_permutate hashes a dest's address with
// its service's family, so a dest of the other family (a tunnel dest) is
// placed by its first 32-bit word (IPv4 service) or by its IPv4 address
// with zero words behind it (IPv6 service): the tables equal those of
// dests at those IPv4 addresses.
func TestMHMixedFamilyDests(t *testing.T) {
	mk := func(key ipvs.ServiceKey, addrs []string) []string {
		s, err := New("mh")
		if err != nil {
			t.Fatal(err)
		}
		svc := &Service{Key: key}
		names := map[*ipvs.Dest]string{}
		for i, a := range addrs {
			d := ipvs.NewDest(key, ipvs.DestConfig{Addr: netip.MustParseAddr(a), Port: 80, Weight: 1, Method: ipvs.MethodTunnel})
			names[d] = string(rune('A' + i))
			svc.Dests = append(svc.Dests, d)
		}
		if err := s.Init(svc); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, d := range s.(*MH).Slots() {
			out = append(out, names[d])
		}
		return out
	}
	same := func(what string, a, b []string) {
		t.Helper()
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("%s: slot %d holds %s, want %s", what, i, a[i], b[i])
			}
		}
	}
	k4 := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("198.18.0.100"), Port: 80}
	k6 := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("2001:db8:18::100"), Port: 80}
	// 2001:db8:19::11's first word is 0x20010db8 = 32.1.13.184.
	a := mk(k4, []string{"2001:db8:19::11", "198.19.1.12"})
	b := mk(k4, []string{"32.1.13.184", "198.19.1.12"})
	same("IPv4 service, an IPv6 dest", a, b)
	c := mk(k6, []string{"198.19.1.11", "2001:db8:19::12"})
	d := mk(k6, []string{"::c613:10b", "2001:db8:19::12"}) // 198.19.1.11 with zero words in front: the same fold
	same("IPv6 service, an IPv4 dest", c, d)
}
