package trace

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/golvs/golvs/packet"
)

// Decoding happens in the consumer, never on the data path: the data path
// only copies bytes into an event (see Tracer.Want). Frames are decoded
// with gopacket's layers into Headers, a flat, JSON-friendly record of the
// fields a person checks when reading a rewrite.

// TOAKind is the TCP option kind of TOA (FULLNAT's client address, Alibaba
// LVS, ipvs-spec §5.5); TOALen its length. TOA6Kind and TOA6Len are its
// IPv6 form (a port and a 16-byte address).
const (
	TOAKind  = 254
	TOALen   = 8
	TOA6Kind = 253
	TOA6Len  = 20
)

// Checksum states in Headers.
const (
	CsumOK        = "ok"
	CsumBad       = "bad"
	CsumNone      = "none"      // UDP checksum 0: not computed
	CsumPartial   = "partial"   // offloaded (CHECKSUM_PARTIAL): pseudo-header sum only
	CsumTruncated = "truncated" // the event kept too few bytes to check
)

// Headers is one frame decoded. Pointers are nil for absent headers.
type Headers struct {
	Eth *EthHeader `json:"eth,omitempty"`
	// Outer is the tunnel's outer IPv4 header (TUN), Tunnel its kind
	// ("ipip" or "gue"); OuterUDP and GUE are set for GUE only.
	Outer    *IPHeader  `json:"outer_ip,omitempty"`
	Tunnel   string     `json:"tunnel,omitempty"`
	OuterUDP *UDPHeader `json:"outer_udp,omitempty"`
	GUE      *GUEHeader `json:"gue,omitempty"`
	// Outer6 is the tunnel's outer IPv6 header (ip6ip6, IPv4 in IPv6, GUE
	// over IPv6), instead of Outer.
	Outer6 *IP6Header `json:"outer_ip6,omitempty"`
	// IP is the (inner) IPv4 header the service sees; IP6 the IPv6 one.
	IP   *IPHeader   `json:"ip,omitempty"`
	IP6  *IP6Header  `json:"ip6,omitempty"`
	TCP  *TCPHeader  `json:"tcp,omitempty"`
	UDP  *UDPHeader  `json:"udp,omitempty"`
	ICMP *ICMPHeader `json:"icmp,omitempty"`
	// Error says what could not be decoded (the rest is still shown).
	Error string `json:"error,omitempty"`
}

// EthHeader is an Ethernet header.
type EthHeader struct {
	Src  string `json:"src"`
	Dst  string `json:"dst"`
	Type string `json:"type"`
}

// IPHeader is an IPv4 header.
type IPHeader struct {
	Src      netip.Addr `json:"src"`
	Dst      netip.Addr `json:"dst"`
	Proto    uint8      `json:"proto"`
	TTL      uint8      `json:"ttl"`
	TOS      uint8      `json:"tos"`
	ID       uint16     `json:"id"`
	Len      uint16     `json:"len"`
	DF       bool       `json:"df,omitempty"`
	Frag     bool       `json:"frag,omitempty"` // MF set or an offset
	Csum     uint16     `json:"csum"`
	CsumStat string     `json:"csum_status"`
}

// IP6Header is an IPv6 header and the extension headers behind it, as
// the director walks them (packet.ExtChain).
type IP6Header struct {
	Src      netip.Addr `json:"src"`
	Dst      netip.Addr `json:"dst"`
	HopLimit uint8      `json:"hop_limit"`
	TClass   uint8      `json:"traffic_class"`
	Flow     uint32     `json:"flow_label"`
	Len      uint16     `json:"payload_len"`
	Next     uint8      `json:"next"`  // the fixed header's next header
	Proto    uint8      `json:"proto"` // the upper-layer protocol the chain leads to
	Ext      []Ext6     `json:"ext,omitempty"`
	// Frag is set for a fragment (not the first's upper-layer header).
	Frag bool `json:"frag,omitempty"`
}

// Ext6 is one IPv6 extension header.
type Ext6 struct {
	Kind string `json:"kind"` // hop-by-hop, routing, destination-options, fragment
	Len  int    `json:"len"`
	// A fragment header's offset, more-fragments flag and identification.
	Offset int    `json:"offset,omitempty"`
	More   bool   `json:"more,omitempty"`
	ID     uint32 `json:"id,omitempty"`
}

// TCPHeader is a TCP header.
type TCPHeader struct {
	SPort    uint16   `json:"sport"`
	DPort    uint16   `json:"dport"`
	Seq      uint32   `json:"seq"`
	Ack      uint32   `json:"ack"`
	Flags    string   `json:"flags"` // tcpdump's letters: S F R P . (ACK) U E W
	Win      uint16   `json:"win"`
	HLen     int      `json:"hlen"` // data offset in bytes
	Options  []string `json:"options,omitempty"`
	TOA      *TOA     `json:"toa,omitempty"`
	Data     int      `json:"data"` // payload bytes
	Csum     uint16   `json:"csum"`
	CsumStat string   `json:"csum_status"`
}

// TOA is FULLNAT's client-address option.
type TOA struct {
	Kind   uint8          `json:"kind"`
	Len    uint8          `json:"len"`
	Client netip.AddrPort `json:"client"`
}

// UDPHeader is a UDP header.
type UDPHeader struct {
	SPort    uint16 `json:"sport"`
	DPort    uint16 `json:"dport"`
	Len      uint16 `json:"len"`
	Csum     uint16 `json:"csum"`
	CsumStat string `json:"csum_status"`
}

// GUEHeader is the 4-byte GUE header of --tun-type gue.
type GUEHeader struct {
	Version uint8 `json:"version"`
	Control bool  `json:"control,omitempty"`
	HLen    int   `json:"hlen"` // extension words, in bytes
	Proto   uint8 `json:"proto"`
}

// ICMPHeader is an ICMPv4 (ICMPv6 with V6) header and, for errors, the
// quoted packet.
type ICMPHeader struct {
	V6       bool   `json:"v6,omitempty"`
	Type     uint8  `json:"type"`
	Code     uint8  `json:"code"`
	Name     string `json:"name"`
	Csum     uint16 `json:"csum"`
	CsumStat string `json:"csum_status"`
	// The quoted packet's addresses and ports (errors only).
	Quote *Quote `json:"quote,omitempty"`
}

// Quote is the start of the packet an ICMP error quotes.
type Quote struct {
	Src   netip.Addr `json:"src"`
	Dst   netip.Addr `json:"dst"`
	Proto uint8      `json:"proto"`
	SPort uint16     `json:"sport,omitempty"`
	DPort uint16     `json:"dport,omitempty"`
}

// Decode decodes an Ethernet frame. It never fails: what it cannot read is
// named in Error. tunnel says the frame may carry GUE (the event's method
// is Tunnel), which a UDP port alone cannot tell.
func Decode(frame []byte, tunnel bool) *Headers {
	h := &Headers{}
	if len(frame) == 0 {
		return h
	}
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{NoCopy: true})
	h.fill(p, tunnel)
	if el := p.ErrorLayer(); el != nil && h.Error == "" {
		h.Error = el.Error().Error()
	}
	if h.Error == "" && (p.Metadata().Truncated || h.Eth != nil && (h.Eth.Type == layers.EthernetTypeIPv4.String() && h.IP == nil || h.Eth.Type == layers.EthernetTypeIPv6.String() && h.IP6 == nil)) {
		h.Error = "truncated: the frame holds fewer bytes than its headers say"
	}
	return h
}

// Decoding fails closed: gopacket keeps a layer it failed to decode, with
// what it read so far, and such a half-read header is not shown. An IPv4
// header is whole once its addresses were read (the last step of its
// decoding), a TCP header once its data offset's bytes are there, a UDP
// header once its 8 bytes are.
func wholeIPv4(l *layers.IPv4) bool { return l.SrcIP != nil && l.DstIP != nil }

func wholeTCP(l *layers.TCP) bool {
	return l.DataOffset >= 5 && len(l.Contents) >= int(l.DataOffset)*4
}

// netHdr is one network header of a frame: IPv4 or IPv6.
type netHdr struct {
	v4 *layers.IPv4
	v6 *layers.IPv6
	h6 *IP6Header
}

// pseudo returns the pseudo-header sum of the header for an L4 segment
// of proto and length n, and the length the segment should have.
func (n *netHdr) pseudo(proto uint8, seg []byte) (sum uint32, want int) {
	if n.v6 != nil {
		var src, dst [16]byte
		copy(src[:], n.v6.SrcIP.To16())
		copy(dst[:], n.v6.DstIP.To16())
		want = len(seg)
		return packet.PseudoSum6(&src, &dst, proto, want), want
	}
	ip := n.v4
	want = int(ip.Length) - len(ip.Contents)
	var src, dst [4]byte
	copy(src[:], ip.SrcIP.To4())
	copy(dst[:], ip.DstIP.To4())
	return packet.PseudoSum4(src, dst, proto, max(want, 0)), want
}

func (h *Headers) fill(p gopacket.Packet, tunnel bool) {
	var ips []netHdr
	for _, l := range p.Layers() {
		switch l := l.(type) {
		case *layers.Ethernet:
			h.Eth = &EthHeader{Src: l.SrcMAC.String(), Dst: l.DstMAC.String(), Type: l.EthernetType.String()}
		case *layers.IPv4:
			if !wholeIPv4(l) {
				continue
			}
			ips = append(ips, netHdr{v4: l})
			h.IP, h.IP6 = ipHeader(l), nil
		case *layers.IPv6:
			if l.SrcIP == nil || l.DstIP == nil {
				continue
			}
			h6 := ip6Header(l)
			ips = append(ips, netHdr{v6: l, h6: h6})
			h.IP6, h.IP = h6, nil
		case *layers.TCP:
			if len(ips) == 0 || !wholeTCP(l) {
				continue
			}
			h.TCP = tcpHeader(l, &ips[len(ips)-1])
		case *layers.UDP:
			if len(ips) == 0 || len(l.Contents) < 8 {
				continue
			}
			h.UDP = udpHeader(l, &ips[len(ips)-1])
			if tunnel && len(ips) == 1 {
				h.gue(l)
				if h.GUE != nil {
					return
				}
			}
		case *layers.ICMPv4:
			h.ICMP = icmpHeader(l)
		case *layers.ICMPv6:
			if len(ips) > 0 && ips[len(ips)-1].v6 != nil {
				h.ICMP = icmp6Header(l, &ips[len(ips)-1])
			}
		}
	}
	if len(ips) > 1 {
		switch o := ips[0]; {
		case o.v4 != nil:
			h.Outer = ipHeader(o.v4)
		default:
			h.Outer6 = o.h6
		}
		h.Tunnel = "ipip"
		if h.Outer6 != nil || ips[len(ips)-1].v6 != nil {
			h.Tunnel = tunnelName(ips[0].v6 != nil, ips[len(ips)-1].v6 != nil)
		}
	}
}

// tunnelName names an IP-in-IP tunnel by its families.
func tunnelName(outer6, inner6 bool) string {
	switch {
	case outer6 && inner6:
		return "ip6ip6"
	case outer6:
		return "ipip6" // IPv4 in IPv6
	case inner6:
		return "sit" // IPv6 in IPv4 (protocol 41)
	}
	return "ipip"
}

// ip6Header reads an IPv6 header and walks its extension headers.
func ip6Header(l *layers.IPv6) *IP6Header {
	h := &IP6Header{
		Src: addr(l.SrcIP), Dst: addr(l.DstIP), HopLimit: l.HopLimit, TClass: l.TrafficClass,
		Flow: l.FlowLabel, Len: l.Length, Next: uint8(l.NextHeader), Proto: uint8(l.NextHeader),
	}
	ip := append(append([]byte(nil), l.Contents...), l.Payload...)
	chain, proto, _ := packet.ExtChain(ip)
	h.Proto = proto
	for _, x := range chain {
		e := Ext6{Kind: packet.ExtName(x.Proto), Len: x.Len}
		if x.Proto == packet.NHFragment && x.Off+8 <= len(ip) {
			fo := binary.BigEndian.Uint16(ip[x.Off+2:])
			e.Offset, e.More, e.ID = int(fo&^7), fo&1 != 0, binary.BigEndian.Uint32(ip[x.Off+4:])
			h.Frag = h.Frag || e.Offset != 0 || e.More
		}
		h.Ext = append(h.Ext, e)
	}
	return h
}

// gue takes a UDP datagram apart as GUE (version 0, IPv4 inside) and
// decodes the inner packet; it leaves h alone if the payload is not GUE.
func (h *Headers) gue(u *layers.UDP) {
	b := u.Payload
	if len(b) < 4 || b[0]>>6 != 0 || b[1] != 4 && b[1] != packet.NHIPv6 {
		return
	}
	hl := 4 + int(b[0]&0x1f)*4
	lt, v := layers.LayerTypeIPv4, byte(4)
	if b[1] == packet.NHIPv6 {
		lt, v = layers.LayerTypeIPv6, 6
	}
	if len(b) < hl+packet.IP4MinLen || b[hl]>>4 != v {
		return
	}
	h.Outer, h.Outer6, h.OuterUDP, h.Tunnel = h.IP, h.IP6, h.UDP, "gue"
	h.IP, h.IP6, h.UDP = nil, nil, nil
	h.GUE = &GUEHeader{Version: b[0] >> 6, Control: b[0]&0x20 != 0, HLen: hl - 4, Proto: b[1]}
	in := gopacket.NewPacket(b[hl:], lt, gopacket.DecodeOptions{NoCopy: true})
	h.fill(in, false)
	if el := in.ErrorLayer(); el != nil {
		h.Error = "inner packet: " + el.Error().Error()
	}
}

func addr(b []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap()
}

func ipHeader(l *layers.IPv4) *IPHeader {
	h := &IPHeader{
		Src: addr(l.SrcIP), Dst: addr(l.DstIP), Proto: uint8(l.Protocol), TTL: l.TTL, TOS: l.TOS,
		ID: l.Id, Len: l.Length, DF: l.Flags&layers.IPv4DontFragment != 0,
		Frag: l.Flags&layers.IPv4MoreFragments != 0 || l.FragOffset != 0, Csum: l.Checksum,
	}
	h.CsumStat = CsumBad
	if packet.Fold(packet.Sum(l.Contents, 0)) == 0xffff {
		h.CsumStat = CsumOK
	}
	return h
}

// l4Csum checks a TCP, UDP or ICMPv6 checksum over the whole segment seg
// (the L4 header onwards) of protocol proto.
func l4Csum(n *netHdr, proto uint8, seg []byte, csum uint16, udp bool) string {
	if udp && csum == 0 {
		return CsumNone
	}
	ps, want := n.pseudo(proto, seg)
	if len(seg) < want || want < 0 {
		return CsumTruncated
	}
	if n.v6 != nil && n.h6.Frag {
		return CsumTruncated // a fragment: the checksum covers the whole datagram
	}
	seg = seg[:want]
	if packet.Fold(packet.Sum(seg, ps)) == 0xffff {
		return CsumOK
	}
	if csum == packet.Fold(ps) {
		return CsumPartial
	}
	return CsumBad
}

// segment is the L4 segment of a decoded layer: its header and payload.
func segment(l gopacket.Layer) []byte {
	return append(append([]byte(nil), l.LayerContents()...), l.LayerPayload()...)
}

func tcpHeader(l *layers.TCP, ip *netHdr) *TCPHeader {
	h := &TCPHeader{
		SPort: uint16(l.SrcPort), DPort: uint16(l.DstPort), Seq: l.Seq, Ack: l.Ack, Flags: tcpFlags(l),
		Win: l.Window, HLen: int(l.DataOffset) * 4, Data: len(l.Payload), Csum: l.Checksum,
	}
	seg := segment(l)
	if ip.v4 != nil {
		seg = ip.v4.Payload
	}
	h.CsumStat = l4Csum(ip, 6, seg, l.Checksum, false)
	for _, o := range l.Options {
		switch {
		case o.OptionType == TOAKind && o.OptionLength == TOALen && len(o.OptionData) == 6:
			a := netip.AddrFrom4([4]byte(o.OptionData[2:6]))
			h.TOA = &TOA{Kind: TOAKind, Len: TOALen, Client: netip.AddrPortFrom(a, binary.BigEndian.Uint16(o.OptionData))}
			h.Options = append(h.Options, "toa")
		case o.OptionType == TOA6Kind && o.OptionLength == TOA6Len && len(o.OptionData) == 18:
			a := netip.AddrFrom16([16]byte(o.OptionData[2:18]))
			h.TOA = &TOA{Kind: TOA6Kind, Len: TOA6Len, Client: netip.AddrPortFrom(a, binary.BigEndian.Uint16(o.OptionData))}
			h.Options = append(h.Options, "toa6")
		case o.OptionType == layers.TCPOptionKindNop:
			h.Options = append(h.Options, "nop")
		case o.OptionType == layers.TCPOptionKindEndList:
			h.Options = append(h.Options, "eol")
		case o.OptionType == layers.TCPOptionKindMSS && len(o.OptionData) == 2:
			h.Options = append(h.Options, fmt.Sprintf("mss %d", binary.BigEndian.Uint16(o.OptionData)))
		case o.OptionType == layers.TCPOptionKindWindowScale && len(o.OptionData) == 1:
			h.Options = append(h.Options, fmt.Sprintf("wscale %d", o.OptionData[0]))
		case o.OptionType == layers.TCPOptionKindSACKPermitted:
			h.Options = append(h.Options, "sackOK")
		case o.OptionType == layers.TCPOptionKindTimestamps:
			h.Options = append(h.Options, "ts")
		default:
			h.Options = append(h.Options, fmt.Sprintf("kind %d", uint8(o.OptionType)))
		}
	}
	return h
}

func tcpFlags(l *layers.TCP) string {
	var b strings.Builder
	for _, f := range []struct {
		on bool
		c  byte
	}{{l.SYN, 'S'}, {l.FIN, 'F'}, {l.RST, 'R'}, {l.PSH, 'P'}, {l.URG, 'U'}, {l.ECE, 'E'}, {l.CWR, 'W'}, {l.ACK, '.'}} {
		if f.on {
			b.WriteByte(f.c)
		}
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

func udpHeader(l *layers.UDP, ip *netHdr) *UDPHeader {
	seg := segment(l)
	if ip.v4 != nil {
		seg = ip.v4.Payload
	} else if int(l.Length) >= 8 && int(l.Length) <= len(seg) {
		seg = seg[:l.Length]
	}
	return &UDPHeader{
		SPort: uint16(l.SrcPort), DPort: uint16(l.DstPort), Len: l.Length, Csum: l.Checksum,
		CsumStat: l4Csum(ip, 17, seg, l.Checksum, true), // 0: none (over IPv6, a tunnel's, RFC 6935)
	}
}

// icmp6Header is an ICMPv6 header and, for errors, the quoted packet's
// addresses and ports (past its extension headers).
func icmp6Header(l *layers.ICMPv6, ip *netHdr) *ICMPHeader {
	h := &ICMPHeader{Type: l.TypeCode.Type(), Code: l.TypeCode.Code(), Name: l.TypeCode.String(), Csum: l.Checksum, V6: true}
	h.CsumStat = l4Csum(ip, packet.NHICMPv6, segment(l), l.Checksum, false)
	if h.Type >= packet.ICMPv6DestUnreach && h.Type <= packet.ICMPv6ParamProblem && len(l.Payload) >= 4+packet.IP6Len {
		q := l.Payload[4:]
		if q[0]>>4 == 6 {
			qt := &Quote{Src: netip.AddrFrom16([16]byte(q[8:24])), Dst: netip.AddrFrom16([16]byte(q[24:40]))}
			chain, proto, _ := packet.ExtChain(q)
			qt.Proto = proto
			off := packet.IP6Len
			if n := len(chain); n > 0 {
				off = chain[n-1].Off + chain[n-1].Len
			}
			if (proto == 6 || proto == 17) && len(q) >= off+4 {
				qt.SPort, qt.DPort = binary.BigEndian.Uint16(q[off:]), binary.BigEndian.Uint16(q[off+2:])
			}
			h.Quote = qt
		}
	}
	return h
}

func icmpHeader(l *layers.ICMPv4) *ICMPHeader {
	h := &ICMPHeader{Type: l.TypeCode.Type(), Code: l.TypeCode.Code(), Name: l.TypeCode.String(), Csum: l.Checksum}
	h.CsumStat = CsumBad
	if packet.Fold(packet.Sum(l.Payload, packet.Sum(l.Contents, 0))) == 0xffff {
		h.CsumStat = CsumOK
	}
	switch h.Type {
	case layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4TypeTimeExceeded, layers.ICMPv4TypeParameterProblem:
		q := l.Payload
		if len(q) >= packet.IP4MinLen && q[0]>>4 == 4 {
			ihl := int(q[0]&0xf) * 4
			qt := &Quote{Src: netip.AddrFrom4([4]byte(q[12:16])), Dst: netip.AddrFrom4([4]byte(q[16:20])), Proto: q[9]}
			if (qt.Proto == 6 || qt.Proto == 17) && ihl >= packet.IP4MinLen && len(q) >= ihl+4 {
				qt.SPort, qt.DPort = binary.BigEndian.Uint16(q[ihl:]), binary.BigEndian.Uint16(q[ihl+2:])
			}
			h.Quote = qt
		}
	}
	return h
}
