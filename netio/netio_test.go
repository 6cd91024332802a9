package netio

import (
	"encoding/binary"
	"strings"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/golvs/golvs/packet"
)

func ipFrame(proto uint8, src, dst [4]byte, sport, dport uint16) []byte {
	b := make([]byte, 14+20+20)
	binary.BigEndian.PutUint16(b[12:], packet.EtherTypeIP4)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[8], ip[9] = 64, proto
	copy(ip[12:], src[:])
	copy(ip[16:], dst[:])
	binary.BigEndian.PutUint16(ip[20:], sport)
	binary.BigEndian.PutUint16(ip[22:], dport)
	ip[32] = 5 << 4
	packet.IPv4(ip).SetChecksum(packet.IPv4(ip).HeaderChecksum())
	return b
}

func ip6Frame(proto uint8, src, dst [16]byte, sport, dport uint16) []byte {
	b := make([]byte, 14+40+20)
	binary.BigEndian.PutUint16(b[12:], packet.EtherTypeIP6)
	ip := b[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], 20)
	ip[6], ip[7] = proto, 64
	copy(ip[8:], src[:])
	copy(ip[24:], dst[:])
	binary.BigEndian.PutUint16(ip[40:], sport)
	binary.BigEndian.PutUint16(ip[42:], dport)
	return b
}

// TestFilter runs the filter (less its PACKET_OUTGOING preamble, which
// needs the kernel's ancillary data) in x/net/bpf's VM.
func TestFilter(t *testing.T) {
	vip := [4]byte{198, 18, 0, 100}
	rip := [4]byte{198, 19, 0, 11}
	cip := [4]byte{198, 18, 0, 10}
	dst := []Match{{Proto: 6, Addr: vip, Port: 80}, {Proto: 17, Addr: [4]byte{198, 18, 1, 0}, Bits: 24}}
	src := []Match{{Proto: 6, Addr: rip, Port: 8080}}
	arp := make([]byte, 42)
	binary.BigEndian.PutUint16(arp[12:], packet.EtherTypeARP)
	v6 := ipFrame(6, cip, vip, 1, 80)
	binary.BigEndian.PutUint16(v6[12:], packet.EtherTypeIP6)
	vip6 := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 14: 1}
	cip6 := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 15: 0x10}
	rip6 := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x19, 15: 0x11}
	dst = append(dst, Match{V6: true, Proto: 6, Addr6: vip6, Port: 80})
	src = append(src, Match{V6: true, Proto: 6, Addr6: rip6, Port: 8080})
	prog := build(dst, src, true, true)[3:]
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	ns := ip6Frame(58, cip6, [16]byte{0xff, 0x02, 11: 1, 12: 0xff, 15: 1}, 0, 0)
	ns[14+40] = 135
	withExt := ip6Frame(60, cip6, vip6, 0, 0) // destination options first: the address decides
	cases := []struct {
		name  string
		frame []byte
		want  bool
	}{
		{"to VIP:80", ipFrame(6, cip, vip, 40000, 80), true},
		{"to VIP:81", ipFrame(6, cip, vip, 40000, 81), false},
		{"udp to VIP:80", ipFrame(17, cip, vip, 40000, 80), false},
		{"from RIP:8080", ipFrame(6, rip, cip, 8080, 40000), true},
		{"from RIP:22", ipFrame(6, rip, cip, 22, 40000), false},
		{"udp into the /24", ipFrame(17, cip, [4]byte{198, 18, 1, 77}, 1, 53), true},
		{"udp next to the /24", ipFrame(17, cip, [4]byte{198, 18, 2, 77}, 1, 53), false},
		{"arp", arp, true},
		{"ipv4 under the ipv6 ethertype", v6, false},
		{"ipv6 to VIP:80", ip6Frame(6, cip6, vip6, 40000, 80), true},
		{"ipv6 to VIP:81", ip6Frame(6, cip6, vip6, 40000, 81), false},
		{"ipv6 udp to VIP:80", ip6Frame(17, cip6, vip6, 40000, 80), false},
		{"ipv6 from RIP:8080", ip6Frame(6, rip6, cip6, 8080, 40000), true},
		{"ipv6 from RIP:22", ip6Frame(6, rip6, cip6, 22, 40000), false},
		{"ipv6 with an extension header to the VIP", withExt, true},
		{"ipv6 neighbor solicitation", ns, true},
		{"ipv6 to another address", ip6Frame(6, cip6, rip6, 40000, 80), false},
	}
	for _, c := range cases {
		n, err := vm.Run(c.frame)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if (n > 0) != c.want {
			t.Errorf("%s: accepted=%v, want %v", c.name, n > 0, c.want)
		}
	}
	// Too many matches for the kernel's limit: a looser program, still valid.
	var many []Match
	for i := 0; i < 2000; i++ {
		many = append(many, Match{Proto: 6, Addr: [4]byte{198, 18, byte(i >> 8), byte(i)}, Port: 80})
	}
	raw, err := BuildFilter(many, many, true)
	if err != nil || len(raw) >= maxInsns {
		t.Fatalf("large filter: %d instructions, %v", len(raw), err)
	}
}

func TestErrors(t *testing.T) {
	if _, err := OpenRing("nosuchif0", RingConfig{}); err == nil || !contains(err.Error(), `no such interface: "nosuchif0"`) {
		t.Fatalf("missing interface: %v", err)
	}
	if _, err := OpenTx("nosuchif0"); err == nil {
		t.Fatal("OpenTx on a missing interface")
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
