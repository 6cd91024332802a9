package director

import (
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
)

// icmpFrame builds an ICMP error from src to dst quoting the IP header
// and first 8 bytes of the frame quoted.
func icmpFrame(t *testing.T, ifindex int, srcMAC, dstMAC [6]byte, src, dst net.IP, typ, code uint8, quoted []byte) *netio.Frame {
	eth := &layers.Ethernet{SrcMAC: srcMAC[:], DstMAC: dstMAC[:], EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src, DstIP: dst}
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code)}
	q := quoted[14 : 14+20+8]
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, ic, gopacket.Payload(q)); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, netio.VnetHdrLen+len(buf.Bytes()))
	copy(raw[netio.VnetHdrLen:], buf.Bytes())
	return &netio.Frame{Data: raw[netio.VnetHdrLen:], Vnet: raw[:netio.VnetHdrLen], IfIndex: ifindex}
}

// A port unreachable from the real server about a NAT UDP conn reaches the
// client as if from the VIP, quoting the client's own datagram (VIP:53 as
// destination); an unrelated ICMP error is left alone.
func TestRelatedICMPRelayed(t *testing.T) {
	d, w, ext, in := testDirector(t, true)
	w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 17, 40000, 53, 0, []byte("q")))
	if len(in.frames) != 1 {
		t.Fatalf("UDP request not forwarded (drops %v)", d.Drops.Get())
	}
	sent := in.frames[0][netio.VnetHdrLen:] // CIP:40000 -> RIP:53, as the real server got it
	w.handle(icmpFrame(t, ifInt, rsMAC, intMAC, rip.AsSlice(), cip.AsSlice(), 3, 3, sent))
	if len(ext.frames) != 1 {
		t.Fatalf("related ICMP not relayed (drops %v, modes %v)", d.Drops.Get(), d.ModeCounters())
	}
	p := gopacket.NewPacket(ext.frames[0][netio.VnetHdrLen:], layers.LayerTypeEthernet, gopacket.Default)
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	ic := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if !ip.SrcIP.Equal(vip.AsSlice()) || !ip.DstIP.Equal(cip.AsSlice()) || ic.TypeCode.Type() != 3 {
		t.Fatalf("relayed ICMP %s -> %s type %d", ip.SrcIP, ip.DstIP, ic.TypeCode.Type())
	}
	// The ICMP checksum is valid over the rewritten message.
	body := append([]byte(nil), ip.Payload...)
	var sum uint32
	for i := 0; i+1 < len(body); i += 2 {
		sum += uint32(body[i])<<8 | uint32(body[i+1])
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Fatalf("relayed ICMP checksum does not verify (sum %#x)", sum)
	}
	quoted := gopacket.NewPacket(ic.Payload, layers.LayerTypeIPv4, gopacket.Default)
	qip := quoted.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !qip.SrcIP.Equal(cip.AsSlice()) || !qip.DstIP.Equal(vip.AsSlice()) {
		t.Fatalf("quoted header %s -> %s, want the client's own %s -> %s", qip.SrcIP, qip.DstIP, cip, vip)
	}
	if qu, ok := quoted.Layer(layers.LayerTypeUDP).(*layers.UDP); !ok || qu.DstPort != 53 || qu.SrcPort != 40000 {
		t.Fatalf("quoted ports %v", quoted.Layer(layers.LayerTypeUDP))
	}
	// Unrelated: an error quoting a conn golvs never saw.
	other := append([]byte(nil), sent...)
	other[14+12+3] = 99 // another client address in the quote
	before := d.Drops[CntICMP].Load()
	w.handle(icmpFrame(t, ifInt, rsMAC, intMAC, rip.AsSlice(), cip.AsSlice(), 3, 3, other))
	if len(ext.frames) != 1 || d.Drops[CntICMP].Load() != before+1 {
		t.Fatalf("unrelated ICMP was relayed")
	}
}

// No real server available: IPVS answers ICMP port unreachable from the
// VIP and drops the packet (spec §1.6); golvs does the same and counts it.
func TestNoDestPortUnreachable(t *testing.T) {
	d, w, ext, in := testDirector(t, true)
	k := vipKey80()
	for _, dd := range d.Snapshot().List[0].Dests {
		if err := d.DelDest(k, dd.Addr, dd.Port); err != nil {
			t.Fatal(err)
		}
	}
	w.snap = d.snap.Load()
	w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x02, nil))
	if len(in.frames) != 0 || d.Drops[CntNoDest].Load() != 1 {
		t.Fatalf("forwarded %d, no-dest %d", len(in.frames), d.Drops[CntNoDest].Load())
	}
	if len(ext.frames) != 1 {
		t.Fatalf("%d frames back to the client, want one ICMP error", len(ext.frames))
	}
	p := gopacket.NewPacket(ext.frames[0][netio.VnetHdrLen:], layers.LayerTypeEthernet, gopacket.Default)
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if !ok || ic.TypeCode.Type() != 3 || ic.TypeCode.Code() != 3 || !ip.SrcIP.Equal(vip.AsSlice()) || !ip.DstIP.Equal(cip.AsSlice()) {
		t.Fatalf("answer %v from %s to %s, want port unreachable from the VIP", ic, ip.SrcIP, ip.DstIP)
	}
	eth := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if [6]byte(eth.DstMAC) != cliMAC {
		t.Fatalf("sent to %s, want the client's MAC", eth.DstMAC)
	}
}

func vipKey80() ipvs.ServiceKey { return ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80} }
