package trace

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Fixed frames for the golden tests, addressed as lab-plan.md lays the
// labs out, with the lab's fixed MACs (lab.MAC: 02:00:5e:00:ROLE:N), so
// that every run prints the same bytes.
var (
	macClient = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x0c, 0x0a}
	macExt0   = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0xd1, 0x01}
	macInt0   = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0xd1, 0x02}
	macRS1    = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x5e, 0x01}
	macRS2    = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x5e, 0x02}
	macRouter = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x70, 0x02} // TUN router, director side

	cip    = ip4("198.18.0.10")
	vip    = ip4("198.18.0.100")
	dipInt = ip4("198.19.0.1")
	natRS1 = ip4("198.19.0.11")
	natRS2 = ip4("198.19.0.12")
	drRS1  = ip4("198.18.0.11")
	drRS2  = ip4("198.18.0.12")
	tunRS1 = ip4("198.19.1.11")
	tunRS2 = ip4("198.19.1.12")
	lip0   = ip4("198.19.0.200")

	t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)
)

const (
	cport = 40000
	lport = 5001
)

func ip4(s string) net.IP { return net.ParseIP(s).To4() }

func ap(ip net.IP, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip)), port)
}

// seg describes one TCP segment.
type seg struct {
	srcMAC, dstMAC net.HardwareAddr
	src, dst       net.IP
	sport, dport   uint16
	ttl            uint8
	id             uint16
	syn, ack       bool
	seq, ackN      uint32
	data           string
	toa            *netip.AddrPort // FULLNAT: a TOA option carrying the client
	outer          *[2]net.IP      // TUN: an IPIP outer header src, dst
	gue            uint16          // TUN: GUE to this port instead of IPIP
}

func (s seg) frame(t testing.TB) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: s.srcMAC, DstMAC: s.dstMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: s.ttl, Id: s.id, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP, SrcIP: s.src, DstIP: s.dst}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport), Seq: s.seq, Ack: s.ackN, SYN: s.syn, ACK: s.ack, PSH: s.data != "", Window: 64240}
	if s.toa != nil { // right after the fixed header, as FULLNAT puts it
		d := make([]byte, 6)
		binary.BigEndian.PutUint16(d, s.toa.Port())
		a := s.toa.Addr().As4()
		copy(d[2:], a[:])
		tcp.Options = append(tcp.Options, layers.TCPOption{OptionType: TOAKind, OptionLength: TOALen, OptionData: d})
	}
	if s.syn {
		tcp.Options = append(tcp.Options, layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}})
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	ls := []gopacket.SerializableLayer{eth}
	switch {
	case s.outer != nil && s.gue != 0:
		oip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 7, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolUDP, SrcIP: s.outer[0], DstIP: s.outer[1]}
		u := &layers.UDP{SrcPort: 51234, DstPort: layers.UDPPort(s.gue)}
		if err := u.SetNetworkLayerForChecksum(oip); err != nil {
			t.Fatal(err)
		}
		ls = append(ls, oip, u, gopacket.Payload([]byte{0, 4, 0, 0}))
	case s.outer != nil:
		oip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 7, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolIPv4, SrcIP: s.outer[0], DstIP: s.outer[1]}
		ls = append(ls, oip)
	}
	ls = append(ls, ip, tcp, gopacket.Payload(s.data))
	buf := gopacket.NewSerializeBuffer()
	if s.outer != nil && s.gue != 0 {
		// UDP length and the outer IP's cover the GUE header and the
		// inner packet: serialise the inner packet first.
		in := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(in, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp, gopacket.Payload(s.data)); err != nil {
			t.Fatal(err)
		}
		inner := append([]byte{0, 4, 0, 0}, in.Bytes()...)
		ls = []gopacket.SerializableLayer{ls[0], ls[1], ls[2], gopacket.Payload(inner)}
	}
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	b := append([]byte(nil), buf.Bytes()...)
	if s.outer != nil && s.gue != 0 {
		b[14+20+6], b[14+20+7] = 0, 0 // --tun-nocsum, IPVS's default
	}
	return b
}

// ev builds an event the way the data path fills one.
func ev(t testing.TB, seq uint64, before, after []byte) *Event {
	e := &Event{}
	e.reset()
	e.Seq, e.Time = seq, t0.Add(time.Duration(seq)*time.Microsecond)
	e.SetBefore(before)
	if after != nil {
		e.SetAfter(after)
		e.Verdict = "forwarded"
	}
	return e
}

// wlcDests is a wlc decision of a classic director over two real
// servers: rs1 weight 1 with 2 active and 3 inactive connections
// (overhead 515, 515/1), rs2 weight 2 with 1 active (overhead 256, 128
// per weight): rs2 wins.
func wlcSched(e *Event, rs1, rs2 netip.AddrPort) {
	s := e.SchedSlot()
	s.Name, s.Semantics, s.Formula = "wlc", "classic", "overhead = active*256 + inactive"
	s.Dests = append(s.Dests,
		DestInfo{Addr: rs2, Weight: 2, Active: 1, Inactive: 0, Overhead: 256, Available: true},
		DestInfo{Addr: rs1, Weight: 1, Active: 2, Inactive: 3, Overhead: 515, Available: true},
	)
	s.Chosen = rs2
}

// modeEvents returns the golden cases: for each forwarding mode, the
// first packet of a connection (with the scheduler's reasoning) and one of
// an established connection, and for NAT and FULLNAT a reply.
func modeEvents(t testing.TB) []struct {
	name string
	e    *Event
} {
	t.Helper()
	syn := seg{srcMAC: macClient, dstMAC: macExt0, src: cip, dst: vip, sport: cport, dport: 80, ttl: 64, id: 0x1234, syn: true, seq: 1000}
	est := seg{srcMAC: macClient, dstMAC: macExt0, src: cip, dst: vip, sport: cport, dport: 80, ttl: 64, id: 0x1236, ack: true, seq: 1001, ackN: 5001, data: "GET / HTTP/1.0\r\n\r\n"}
	var out []struct {
		name string
		e    *Event
	}
	add := func(name string, e *Event) {
		out = append(out, struct {
			name string
			e    *Event
		}{name, e})
	}

	// NAT: DNAT VIP:80 -> RIP:80 on the way in, MACs int0 -> rs, TTL-1.
	{
		a := syn
		a.srcMAC, a.dstMAC, a.dst, a.ttl = macInt0, macRS2, natRS2, 63
		e := ev(t, 1, syn.frame(t), a.frame(t))
		e.InIf, e.OutIf, e.Dir, e.Service, e.Method = "ext0", "int0", "request", "TCP 198.18.0.100:80 wlc", "Masq"
		e.Lookup, e.StateNew = "miss", "SYN_RECV"
		wlcSched(e, ap(natRS1, 80), ap(natRS2, 80))
		add("nat-first-wlc", e)

		a = est
		a.srcMAC, a.dstMAC, a.dst, a.ttl = macInt0, macRS2, natRS2, 63
		e = ev(t, 3, est.frame(t), a.frame(t))
		e.InIf, e.OutIf, e.Dir, e.Service, e.Method = "ext0", "int0", "request", "TCP 198.18.0.100:80 wlc", "Masq"
		e.Lookup, e.StateOld, e.StateNew = "hit", "ESTABLISHED", "ESTABLISHED"
		add("nat-established", e)

		r := seg{srcMAC: macRS2, dstMAC: macInt0, src: natRS2, dst: cip, sport: 80, dport: cport, ttl: 64, id: 0x4321, ack: true, seq: 5001, ackN: 1019, data: "rs2\n"}
		a = r
		a.srcMAC, a.dstMAC, a.src, a.ttl = macExt0, macClient, vip, 63
		e = ev(t, 4, r.frame(t), a.frame(t))
		e.InIf, e.OutIf, e.Dir, e.Service, e.Method = "int0", "ext0", "reply", "TCP 198.18.0.100:80 wlc", "Masq"
		e.Lookup, e.StateOld, e.StateNew = "hit", "ESTABLISHED", "ESTABLISHED"
		add("nat-reply", e)
	}

	// DR: only the MACs change; same segment, out of ext0.
	{
		a := syn
		a.srcMAC, a.dstMAC = macExt0, macRS1
		e := ev(t, 1, syn.frame(t), a.frame(t))
		e.InIf, e.OutIf, e.Dir, e.Service, e.Method = "ext0", "ext0", "request", "TCP 198.18.0.100:80 sh", "Route"
		e.Lookup, e.StateNew = "miss", "SYN_RECV"
		s := e.SchedSlot()
		s.Name, s.Bucket, s.Chosen = "sh", 170, ap(drRS1, 80)
		s.Dests = append(s.Dests,
			DestInfo{Addr: ap(drRS2, 80), Weight: 1, Available: true},
			DestInfo{Addr: ap(drRS1, 80), Weight: 1, Available: true})
		add("dr-first-sh", e)

		a = est
		a.srcMAC, a.dstMAC = macExt0, macRS1
		e = ev(t, 3, est.frame(t), a.frame(t))
		e.InIf, e.OutIf, e.Dir, e.Service, e.Method = "ext0", "ext0", "request", "TCP 198.18.0.100:80 sh", "Route"
		e.Lookup, e.StateOld, e.StateNew = "hit", "SYN_RECV", "ESTABLISHED"
		add("dr-established", e)
	}

	// TUN: the client's packet unchanged inside an outer IPv4 header
	// (proto 4) DIP -> RIP, to the router's MAC.
	{
		a := syn
		a.srcMAC, a.dstMAC, a.outer = macInt0, macRouter, &[2]net.IP{dipInt, tunRS1}
		e := ev(t, 1, syn.frame(t), a.frame(t))
		e.InIf, e.OutIf, e.Dir, e.Service, e.Method = "ext0", "int0", "request", "TCP 198.18.0.100:80 lblc", "Tunnel"
		e.Lookup, e.StateNew = "miss", "SYN_RECV"
		s := e.SchedSlot()
		// a current director: an active conn weighs 257
		s.Name, s.Chosen = "lblc", ap(tunRS1, 80)
		s.Semantics, s.Formula = "current", "overhead = active*257 + inactive (= active*256 + total)"
		s.Dests = append(s.Dests,
			DestInfo{Addr: ap(tunRS2, 80), Weight: 1, Active: 1, Overhead: 257, Available: true},
			DestInfo{Addr: ap(tunRS1, 80), Weight: 1, Available: true})
		add("tun-first-lblc", e)

		a = est
		a.srcMAC, a.dstMAC, a.outer = macInt0, macRouter, &[2]net.IP{dipInt, tunRS1}
		e = ev(t, 3, est.frame(t), a.frame(t))
		e.InIf, e.OutIf, e.Dir, e.Service, e.Method = "ext0", "int0", "request", "TCP 198.18.0.100:80 lblc", "Tunnel"
		e.Lookup, e.StateOld, e.StateNew = "hit", "SYN_RECV", "ESTABLISHED"
		add("tun-established", e)

		a = syn
		a.srcMAC, a.dstMAC, a.outer, a.gue = macInt0, macRouter, &[2]net.IP{dipInt, tunRS1}, 6080
		e = ev(t, 5, syn.frame(t), a.frame(t))
		e.InIf, e.OutIf, e.Dir, e.Service, e.Method = "ext0", "int0", "request", "TCP 198.18.0.100:80 lblc", "Tunnel"
		e.Lookup, e.StateNew = "miss", "SYN_RECV"
		s = e.SchedSlot()
		s.Name, s.Chosen, s.CacheHit, s.Cached = "lblc", ap(tunRS1, 80), true, append(s.Cached, ap(tunRS1, 80).String())
		s.Semantics, s.Formula = "current", "overhead = active*257 + inactive (= active*256 + total)"
		s.Dests = append(s.Dests,
			DestInfo{Addr: ap(tunRS2, 80), Weight: 1, Active: 1, Overhead: 257, Available: true},
			DestInfo{Addr: ap(tunRS1, 80), Weight: 1, Active: 1, Overhead: 257, Available: true})
		add("tun-gue-lblc-hit", e)
	}

	// FULLNAT: both ends rewritten (CIP:cport -> LIP:lport, VIP:80 ->
	// RIP:80) and a TOA option carrying CIP:cport in the SYN.
	{
		c := ap(cip, cport)
		a := syn
		a.srcMAC, a.dstMAC, a.src, a.sport, a.dst, a.ttl, a.toa = macInt0, macRS2, lip0, lport, natRS2, 63, &c
		e := ev(t, 1, syn.frame(t), a.frame(t))
		e.InIf, e.OutIf, e.Dir, e.Service, e.Method = "ext0", "int0", "request", "TCP 198.18.0.100:80 wlc persistent 300", "FullNat"
		e.Lookup, e.StateNew = "miss", "SYN_RECV"
		e.Template = "created 198.18.0.10 -> 198.19.0.12:80 (300s)"
		wlcSched(e, ap(natRS1, 80), ap(natRS2, 80))
		add("fullnat-first-wlc", e)

		a = est
		a.srcMAC, a.dstMAC, a.src, a.sport, a.dst, a.ttl = macInt0, macRS2, lip0, lport, natRS2, 63
		e = ev(t, 3, est.frame(t), a.frame(t))
		e.InIf, e.OutIf, e.Dir, e.Service, e.Method = "ext0", "int0", "request", "TCP 198.18.0.100:80 wlc persistent 300", "FullNat"
		e.Lookup, e.StateOld, e.StateNew = "hit", "ESTABLISHED", "ESTABLISHED"
		add("fullnat-established", e)

		r := seg{srcMAC: macRS2, dstMAC: macInt0, src: natRS2, dst: lip0, sport: 80, dport: lport, ttl: 64, id: 0x4321, ack: true, seq: 5001, ackN: 1019, data: "rs2\n"}
		a = r
		a.srcMAC, a.dstMAC, a.src, a.dst, a.dport, a.ttl = macExt0, macClient, vip, cip, cport, 63
		e = ev(t, 4, r.frame(t), a.frame(t))
		e.InIf, e.OutIf, e.Dir, e.Service, e.Method = "int0", "ext0", "reply", "TCP 198.18.0.100:80 wlc persistent 300", "FullNat"
		e.Lookup, e.StateOld, e.StateNew = "hit", "ESTABLISHED", "ESTABLISHED"
		add("fullnat-reply", e)
	}

	// A dropped frame: no connection, not a SYN.
	{
		e := ev(t, 9, est.frame(t), nil)
		e.InIf, e.Dir, e.Service, e.Method = "ext0", "request", "TCP 198.18.0.100:80 wlc", "Masq"
		e.Lookup, e.Verdict = "miss", "dropped: no connection and not a SYN"
		add("dropped", e)
	}
	return out
}
