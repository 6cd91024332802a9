package rstun

import (
	"encoding/binary"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/golvs/golvs/packet"
)

// outer builds an Ethernet frame with an outer IPv4 or IPv6 header of
// protocol proto and, for UDP, destination port port.
func outer(v6 bool, proto uint8, port uint16) []byte {
	if v6 {
		b := make([]byte, 14+40+64)
		binary.BigEndian.PutUint16(b[12:], packet.EtherTypeIP6)
		b[14] = 0x60
		binary.BigEndian.PutUint16(b[14+4:], 64)
		b[14+6] = proto
		binary.BigEndian.PutUint16(b[14+40+2:], port)
		return b
	}
	b := make([]byte, 14+20+64)
	binary.BigEndian.PutUint16(b[12:], packet.EtherTypeIP4)
	b[14] = 0x45
	b[14+9] = proto
	binary.BigEndian.PutUint16(b[14+20+2:], port)
	return b
}

// TestFilter runs rs-tun's socket filter in the BPF VM: tunnel packets of
// either family in, everything else out.
func TestFilter(t *testing.T) {
	for _, gue := range []uint16{0, 6080} {
		prog, ok := bpf.Disassemble(filter(gue))
		if !ok {
			t.Fatal("filter does not disassemble")
		}
		for i, ins := range prog {
			if e, ok := ins.(bpf.LoadExtension); ok && e.Num == bpf.ExtType {
				prog[i] = bpf.LoadConstant{Dst: bpf.RegA, Val: 0} // PACKET_HOST
			}
		}
		vm, err := bpf.NewVM(prog)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name  string
			frame []byte
			want  bool
		}{
			{"ipip", outer(false, 4, 0), true},
			{"ipv6 in ipv4", outer(false, 41, 0), true},
			{"gue over ipv4", outer(false, 17, 6080), gue != 0},
			{"udp to another port", outer(false, 17, 53), false},
			{"tcp over ipv4", outer(false, 6, 80), false},
			{"ip6ip6", outer(true, 41, 0), true},
			{"ipv4 in ipv6", outer(true, 4, 0), true},
			{"gue over ipv6", outer(true, 17, 6080), gue != 0},
			{"udp6 to another port", outer(true, 17, 53), false},
			{"tcp over ipv6", outer(true, 6, 80), false},
			{"arp", func() []byte { b := make([]byte, 60); b[12], b[13] = 8, 6; return b }(), false},
		} {
			n, err := vm.Run(c.frame)
			if err != nil {
				t.Fatal(err)
			}
			if (n > 0) != c.want {
				t.Errorf("gue port %d, %s: accepted %v, want %v", gue, c.name, n > 0, c.want)
			}
		}
	}
}

// TestIsVIP: an inner packet of either family is delivered only to one of
// the endpoint's VIPs.
func TestIsVIP(t *testing.T) {
	e := &Endpoint{vips: [][4]byte{{198, 18, 0, 100}}, vips6: [][16]byte{{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 14: 1}}}
	in4 := make([]byte, 20)
	in4[0] = 0x45
	copy(in4[16:], []byte{198, 18, 0, 100})
	in6 := make([]byte, 40)
	in6[0] = 0x60
	copy(in6[24:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 14: 1})
	if !e.isVIP(in4) || !e.isVIP(in6) {
		t.Fatalf("VIPs not recognised")
	}
	in6[39] = 9
	in4[19] = 9
	if e.isVIP(in4) || e.isVIP(in6) {
		t.Fatalf("a non-VIP accepted")
	}
}
