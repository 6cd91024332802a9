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
// LVS, ipvs-spec §5.5); TOALen its length.
const (
	TOAKind = 254
	TOALen  = 8
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
	// IP is the (inner) IPv4 header the service sees.
	IP   *IPHeader   `json:"ip,omitempty"`
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

// ICMPHeader is an ICMPv4 header and, for errors, the quoted packet.
type ICMPHeader struct {
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
	if h.Error == "" && (p.Metadata().Truncated || h.Eth != nil && h.Eth.Type == layers.EthernetTypeIPv4.String() && h.IP == nil) {
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

func (h *Headers) fill(p gopacket.Packet, tunnel bool) {
	var ips []*layers.IPv4
	for _, l := range p.Layers() {
		switch l := l.(type) {
		case *layers.Ethernet:
			h.Eth = &EthHeader{Src: l.SrcMAC.String(), Dst: l.DstMAC.String(), Type: l.EthernetType.String()}
		case *layers.IPv4:
			if !wholeIPv4(l) {
				continue
			}
			ips = append(ips, l)
			h.IP = ipHeader(l)
		case *layers.TCP:
			if len(ips) == 0 || !wholeTCP(l) {
				continue // TCP over something else (IPv6): golvs does not trace it
			}
			h.TCP = tcpHeader(l, ips[len(ips)-1])
		case *layers.UDP:
			if len(ips) == 0 || len(l.Contents) < 8 {
				continue
			}
			h.UDP = udpHeader(l, ips[len(ips)-1])
			if tunnel && len(ips) == 1 {
				h.gue(l)
				if h.GUE != nil {
					return
				}
			}
		case *layers.ICMPv4:
			h.ICMP = icmpHeader(l)
		}
	}
	if len(ips) > 1 {
		h.Outer = ipHeader(ips[0])
		h.Tunnel = "ipip"
	}
}

// gue takes a UDP datagram apart as GUE (version 0, IPv4 inside) and
// decodes the inner packet; it leaves h alone if the payload is not GUE.
func (h *Headers) gue(u *layers.UDP) {
	b := u.Payload
	if len(b) < 4 || b[0]>>6 != 0 || b[1] != 4 {
		return
	}
	hl := 4 + int(b[0]&0x1f)*4
	if len(b) < hl+packet.IP4MinLen || b[hl]>>4 != 4 {
		return
	}
	h.Outer, h.OuterUDP, h.Tunnel = h.IP, h.UDP, "gue"
	h.IP, h.UDP = nil, nil
	h.GUE = &GUEHeader{Version: b[0] >> 6, Control: b[0]&0x20 != 0, HLen: hl - 4, Proto: b[1]}
	in := gopacket.NewPacket(b[hl:], layers.LayerTypeIPv4, gopacket.DecodeOptions{NoCopy: true})
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

// l4Csum checks a TCP or UDP checksum over the whole segment.
func l4Csum(ip *layers.IPv4, seg []byte, csum uint16, udp bool) string {
	if udp && csum == 0 {
		return CsumNone
	}
	want := int(ip.Length) - len(ip.Contents)
	if len(seg) < want || want < 0 {
		return CsumTruncated
	}
	seg = seg[:want]
	var src, dst [4]byte
	copy(src[:], ip.SrcIP.To4())
	copy(dst[:], ip.DstIP.To4())
	ps := packet.PseudoSum4(src, dst, uint8(ip.Protocol), len(seg))
	if packet.Fold(packet.Sum(seg, ps)) == 0xffff {
		return CsumOK
	}
	if csum == packet.Fold(ps) {
		return CsumPartial
	}
	return CsumBad
}

func tcpHeader(l *layers.TCP, ip *layers.IPv4) *TCPHeader {
	h := &TCPHeader{
		SPort: uint16(l.SrcPort), DPort: uint16(l.DstPort), Seq: l.Seq, Ack: l.Ack, Flags: tcpFlags(l),
		Win: l.Window, HLen: int(l.DataOffset) * 4, Data: len(l.Payload), Csum: l.Checksum,
	}
	h.CsumStat = l4Csum(ip, ip.Payload, l.Checksum, false)
	for _, o := range l.Options {
		switch {
		case o.OptionType == TOAKind && o.OptionLength == TOALen && len(o.OptionData) == 6:
			a := netip.AddrFrom4([4]byte(o.OptionData[2:6]))
			h.TOA = &TOA{Kind: TOAKind, Len: TOALen, Client: netip.AddrPortFrom(a, binary.BigEndian.Uint16(o.OptionData))}
			h.Options = append(h.Options, "toa")
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

func udpHeader(l *layers.UDP, ip *layers.IPv4) *UDPHeader {
	return &UDPHeader{
		SPort: uint16(l.SrcPort), DPort: uint16(l.DstPort), Len: l.Length, Csum: l.Checksum,
		CsumStat: l4Csum(ip, ip.Payload, l.Checksum, true),
	}
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
