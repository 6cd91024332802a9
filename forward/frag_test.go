package forward

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/ip4defrag"
	"github.com/gopacket/gopacket/layers"

	"github.com/golvs/golvs/packet"
)

// udpDatagram builds an IPv4/UDP datagram with a payload of n bytes and
// the given options (padded to 4 bytes), checksums complete.
func udpDatagram(t testing.TB, n int, opts []byte, id uint16) []byte {
	pl := make([]byte, n)
	for i := range pl {
		pl[i] = byte(i*7 + i>>8)
	}
	o := append([]byte(nil), opts...)
	for len(o)%4 != 0 {
		o = append(o, 0)
	}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, Id: id,
		SrcIP: net.IP{198, 18, 0, 10}, DstIP: net.IP{198, 19, 0, 11}}
	udp := &layers.UDP{SrcPort: 40000, DstPort: 53}
	_ = udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, udp, gopacket.Payload(pl)); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if len(o) == 0 {
		return append([]byte(nil), b...)
	}
	// Insert the options by hand (gopacket pads them its own way).
	out := make([]byte, 0, len(b)+len(o))
	out = append(out, b[:20]...)
	out = append(out, o...)
	out = append(out, b[20:]...)
	out[0] = 0x45 + byte(len(o)/4)
	binary.BigEndian.PutUint16(out[2:], uint16(len(out)))
	h := packet.IPv4(out[:20+len(o)])
	h.SetChecksum(0)
	h.SetChecksum(h.HeaderChecksum())
	return out
}

// TestFragmentReassembles cuts fixed-seed random datagrams at many MTUs
// and checks every fragment on its own (size, alignment, offset, MF, ID,
// header checksum, options) and the whole reassembled by gopacket's
// ip4defrag, an implementation independent of golvs's: the original
// datagram, byte for byte, its UDP checksum still valid.
func TestFragmentReassembles(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	// Record route (not copied), a copied option type 0x82 (security),
	// a NOP: the later fragments must keep 0x82 and NOP the rest.
	optSets := [][]byte{nil, {7, 7, 4, 0, 0, 0, 0}, {1, 0x82, 4, 9, 9, 7, 3, 4, 0}}
	mtus := []int{MinMTU, 576, 1280, 1480, 1500, 4000}
	for it := 0; it < 300; it++ {
		n := 1 + rng.Intn(9000)
		opts := optSets[it%len(optSets)]
		id := uint16(rng.Intn(65536))
		orig := udpDatagram(t, n, opts, id)
		mtu := mtus[rng.Intn(len(mtus))]
		if it%5 == 0 {
			mtu = MinMTU + rng.Intn(2000)
		}
		if len(orig) <= mtu {
			continue
		}
		ihl := packet.IPv4(orig).IHL()
		nf := Fragments(orig, mtu)
		df := ip4defrag.NewIPv4Defragmenter()
		var whole *layers.IPv4
		buf := make([]byte, mtu)
		next := 0
		for i := 0; i < nf; i++ {
			m := Fragment(buf, orig, mtu, i)
			fr := buf[:m]
			if m > mtu {
				t.Fatalf("fragment %d of %d bytes over mtu %d", i, m, mtu)
			}
			h := packet.IPv4(fr)
			if h.IHL() != ihl || h.TotalLen() != m || packet.Fold(packet.Sum(fr[:ihl], 0)) != 0xffff {
				t.Fatalf("fragment %d: ihl %d total %d checksum sum %#x", i, h.IHL(), h.TotalLen(), packet.Fold(packet.Sum(fr[:ihl], 0)))
			}
			if binary.BigEndian.Uint16(fr[4:]) != id {
				t.Fatalf("fragment %d has id %d, want the datagram's %d", i, binary.BigEndian.Uint16(fr[4:]), id)
			}
			fo := binary.BigEndian.Uint16(fr[6:])
			last := i == nf-1
			if int(fo&0x1fff)*8 != next || (fo&0x2000 != 0) == last || fo&0x4000 != 0 {
				t.Fatalf("fragment %d: frag field %#04x, want offset %d, MF %v", i, fo, next, !last)
			}
			if !last && (m-ihl)%8 != 0 {
				t.Fatalf("fragment %d: payload %d not a multiple of 8", i, m-ihl)
			}
			next += m - ihl
			wantOpts := append([]byte(nil), orig[20:ihl]...)
			if i > 0 {
				for j := 0; j < len(wantOpts); {
					switch {
					case wantOpts[j] == 0:
						j = len(wantOpts)
					case wantOpts[j] == 1:
						j++
					default:
						l := int(wantOpts[j+1])
						if wantOpts[j]&0x80 == 0 {
							for k := j; k < j+l; k++ {
								wantOpts[k] = 1
							}
						}
						j += l
					}
				}
			}
			if !bytes.Equal(fr[20:ihl], wantOpts) {
				t.Fatalf("fragment %d options % x, want % x", i, fr[20:ihl], wantOpts)
			}
			p := gopacket.NewPacket(append([]byte(nil), fr...), layers.LayerTypeIPv4, gopacket.Default)
			ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if ip == nil {
				t.Fatalf("fragment %d does not decode", i)
			}
			out, err := df.DefragIPv4(ip)
			if err != nil {
				t.Fatalf("fragment %d: ip4defrag: %v", i, err)
			}
			if out != nil {
				whole = out
			}
		}
		if next != len(orig)-ihl {
			t.Fatalf("fragments carry %d payload bytes, want %d", next, len(orig)-ihl)
		}
		if whole == nil {
			t.Fatalf("%d-byte datagram at mtu %d: ip4defrag did not complete it", len(orig), mtu)
		}
		if !bytes.Equal(whole.Payload, orig[ihl:]) {
			t.Fatalf("%d-byte datagram at mtu %d: reassembled payload differs", len(orig), mtu)
		}
		if c := packet.L4Checksum(packet.IPv4(orig).Src(), packet.IPv4(orig).Dst(), 17, whole.Payload); c != binary.BigEndian.Uint16(whole.Payload[6:]) {
			t.Fatalf("reassembled UDP checksum %#04x, recomputed %#04x", binary.BigEndian.Uint16(whole.Payload[6:]), c)
		}
	}
}

func TestFragmentDoesNotAllocate(t *testing.T) {
	orig := udpDatagram(t, 9000, nil, 1)
	buf := make([]byte, 1500)
	allocs := testing.AllocsPerRun(100, func() {
		for i := 0; i < Fragments(orig, 1500); i++ {
			Fragment(buf, orig, 1500, i)
		}
	})
	if allocs != 0 {
		t.Fatalf("fragmenting allocates %.1f times", allocs)
	}
}

// TestCompleteChecksum: an offloaded UDP checksum (the field holding the
// pseudo-header sum, as virtio NEEDS_CSUM frames carry it) completed in
// software equals a full computation.
func TestCompleteChecksum(t *testing.T) {
	orig := udpDatagram(t, 3000, nil, 1)
	want := binary.BigEndian.Uint16(orig[20+6:])
	part := append([]byte(nil), orig...)
	h := packet.IPv4(part)
	ps := packet.Fold(packet.PseudoSum4(h.Src(), h.Dst(), 17, len(part)-20))
	binary.BigEndian.PutUint16(part[20+6:], ps)
	if !CompleteChecksum(part, 20, 6, len(part), true) {
		t.Fatal("refused")
	}
	if got := binary.BigEndian.Uint16(part[20+6:]); got != want {
		t.Fatalf("completed %#04x, want %#04x", got, want)
	}
	if CompleteChecksum(part, 20, 6, len(part)+1, true) || CompleteChecksum(part, len(part)-1, 6, len(part), true) {
		t.Fatal("out-of-range offsets accepted")
	}
}

// FuzzFragment: any datagram Decode accepts, cut at any legal MTU, comes
// back whole from its fragments laid out by offset, each fragment within
// the MTU.
func FuzzFragment(f *testing.F) {
	f.Add(udpDatagram(f, 3000, nil, 7), uint16(1500))
	f.Add(udpDatagram(f, 200, []byte{7, 7, 4, 0, 0, 0, 0}, 7), uint16(MinMTU))
	f.Fuzz(func(t *testing.T, ip []byte, mtu16 uint16) {
		mtu := max(int(mtu16), MinMTU)
		frame := append(make([]byte, packet.EthLen), ip...)
		binary.BigEndian.PutUint16(frame[12:], packet.EtherTypeIP4)
		if len(ip) >= 20 && int(ip[0]&0xf)*4 <= len(ip) && ip[0]&0xf >= 5 {
			h := packet.IPv4(frame[packet.EthLen : packet.EthLen+int(ip[0]&0xf)*4])
			h.SetChecksum(0)
			h.SetChecksum(h.HeaderChecksum())
		}
		var p packet.Parsed
		packet.Decode(frame, &p)
		if p.Kind != packet.KindIPv4 {
			return
		}
		dg := frame[p.L3:p.End]
		ihl := p.L4 - p.L3
		got := make([]byte, len(dg)-ihl)
		buf := make([]byte, mtu)
		for i := 0; i < Fragments(dg, mtu); i++ {
			n := Fragment(buf, dg, mtu, i)
			if n > mtu || n < ihl {
				t.Fatalf("fragment %d: %d bytes at mtu %d", i, n, mtu)
			}
			off := int(binary.BigEndian.Uint16(buf[6:])&0x1fff) * 8
			copy(got[off:], buf[ihl:n])
		}
		if !bytes.Equal(got, dg[ihl:]) {
			t.Fatal("fragments do not rebuild the datagram")
		}
	})
}
