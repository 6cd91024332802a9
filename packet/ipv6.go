package packet

import "encoding/binary"

// IPv6 header, 40 bytes:
//
//	0          4        6      7        8     24    40
//	| ver/tc/fl | paylen | next | hoplim | src | dst |
//
// then any extension headers, each naming the next one:
//
//	| next | len | ... |   hop-by-hop (0), routing (43), destination options (60): (len+1)*8 bytes
//	| next | res | off/M | id |   fragment (44): 8 bytes
const (
	IP6Len   = 40
	ip6PLen  = 4
	ip6Next  = 6
	ip6Hop   = 7
	ip6Src   = 8
	ip6Dst   = 24
	FragHLen = 8 // the fragment header
)

// IPv6 next-header values golvs knows.
const (
	NHHopByHop = 0
	NHTCP      = 6
	NHUDP      = 17
	NHIPv6     = 41
	NHRouting  = 43
	NHFragment = 44
	NHESP      = 50
	NHAH       = 51
	NHICMPv6   = 58
	NHNone     = 59
	NHDestOpts = 60
)

// MaxExtHeaders bounds the extension headers Decode walks: no legitimate
// packet carries more (RFC 8200 defines six kinds, each at most once but
// destination options, twice); a longer chain is refused, so a frame
// costs a bounded walk whatever it holds.
const MaxExtHeaders = 8

// maxTLVOptions is the kernel's max_hbh_opts_number and
// max_dst_opts_number default: more non-padding options in one header
// and the packet is dropped.
const maxTLVOptions = 8

// V6 is what Decode reports of an IPv6 frame beside the common fields.
type V6 struct {
	Src6, Dst6 [16]byte
	// Ext counts the extension headers walked (an atomic fragment header
	// included); ExtLen is their total length (L4 - L3 - IP6Len).
	Ext    uint8
	ExtLen int
	// A fragment (Reason ReasonFragment): where its fragment header is,
	// where the next-header byte that names it is (the IPv6 header's or
	// the last extension header's), its offset in bytes, MF, its
	// identification and the header its payload starts with. FragHdr is
	// 0 for a packet that is not a fragment (an atomic fragment, offset
	// 0 without MF, is walked over as the kernel does: it is whole).
	FragHdr   int
	FragPrev  int
	FragOff   int
	FragMore  bool
	FragID    uint32
	FragProto uint8
}

// IPv6 is a view of an IPv6 header.
type IPv6 []byte

func (h IPv6) PayloadLen() int       { return int(binary.BigEndian.Uint16(h[ip6PLen:])) }
func (h IPv6) NextHeader() uint8     { return h[ip6Next] }
func (h IPv6) HopLimit() uint8       { return h[ip6Hop] }
func (h IPv6) Src() (a [16]byte)     { copy(a[:], h[ip6Src:ip6Src+16]); return }
func (h IPv6) Dst() (a [16]byte)     { copy(a[:], h[ip6Dst:ip6Dst+16]); return }
func (h IPv6) SetSrc(a [16]byte)     { copy(h[ip6Src:], a[:]) }
func (h IPv6) SetDst(a [16]byte)     { copy(h[ip6Dst:], a[:]) }
func (h IPv6) SetPayloadLen(n int)   { binary.BigEndian.PutUint16(h[ip6PLen:], uint16(n)) }
func (h IPv6) SetNextHeader(n uint8) { h[ip6Next] = n }
func (h IPv6) DecHopLimit()          { h[ip6Hop]-- } // no header checksum in IPv6

// TrafficClass returns the traffic class (the IPv4 TOS's counterpart).
func (h IPv6) TrafficClass() uint8 { return h[0]<<4 | h[1]>>4 }

// FlowLabel returns the 20-bit flow label.
func (h IPv6) FlowLabel() uint32 { return binary.BigEndian.Uint32(h[0:]) & 0xfffff }

// decode6 is Decode for an IPv6 frame (EtherType 0x86DD): the fixed
// header, then the extension headers as IPVS walks them (ipv6_find_hdr
// from ip_vs_fill_iph_skb) to the upper-layer header, failing closed:
//
//   - hop-by-hop only right after the IPv6 header (RFC 8200 4.1; the
//     kernel's ip6_input drops it elsewhere), its options well formed and
//     their action bits honoured as ip6_parse_tlv does: an unknown option
//     whose type says "discard" is discarded, a jumbo payload option
//     (golvs forwards no jumbograms) too;
//   - destination options well formed (the real server acts on them);
//   - a routing header with segments left is refused (bad-ip6-ext): it
//     would steer the packet past its destination, as an IPv4 source
//     route does (type 0 is deprecated, RFC 5095); one with none left is
//     walked over;
//   - a fragment header: an atomic fragment (offset 0, no MF) is walked
//     over, a real fragment is reported as ReasonFragment with its
//     header described (the director reassembles it);
//   - AH, ESP, mobility and anything else end the walk as a protocol
//     golvs does not balance (protocol);
//   - more than MaxExtHeaders headers, a header past the payload, a
//     payload length of 0 (jumbogram) or past the frame: refused.
func decode6(frame []byte, p *Parsed) {
	ip := frame[EthLen:]
	if len(ip) < IP6Len {
		p.Reason = ReasonTruncated
		return
	}
	if ip[0]>>4 != 6 {
		p.Reason = ReasonBadIP
		return
	}
	plen := int(binary.BigEndian.Uint16(ip[ip6PLen:]))
	if plen == 0 {
		p.Reason = ReasonBadIP // a jumbogram (RFC 2675) or nothing
		return
	}
	if IP6Len+plen > len(ip) {
		p.Reason = ReasonTruncated
		return
	}
	end := EthLen + IP6Len + plen
	copy(p.Src6[:], ip[ip6Src:ip6Src+16])
	copy(p.Dst6[:], ip[ip6Dst:ip6Dst+16])
	p.L3 = EthLen
	p.End = end
	p.Ext, p.ExtLen, p.FragHdr = 0, 0, 0
	nh := ip[ip6Next]
	prev := EthLen + ip6Next
	off := EthLen + IP6Len
walk:
	for {
		var hl int
		switch nh {
		case NHHopByHop, NHDestOpts, NHRouting:
			if off+8 > end {
				p.Reason = ReasonTruncated
				return
			}
			hl = (int(frame[off+1]) + 1) * 8
			if off+hl > end {
				p.Reason = ReasonTruncated
				return
			}
			switch nh {
			case NHHopByHop:
				if off != EthLen+IP6Len || !validTLVs(frame[off+2:off+hl], true) {
					p.Reason = ReasonBadIP6Ext
					return
				}
			case NHDestOpts:
				if !validTLVs(frame[off+2:off+hl], false) {
					p.Reason = ReasonBadIP6Ext
					return
				}
			case NHRouting:
				if frame[off+3] != 0 { // segments left
					p.Reason = ReasonBadIP6Ext
					return
				}
			}
		case NHFragment:
			if off+FragHLen > end {
				p.Reason = ReasonTruncated
				return
			}
			hl = FragHLen
			fo := binary.BigEndian.Uint16(frame[off+2:])
			if fo&0xfff9 != 0 { // an offset or MF: a real fragment
				p.Ext++
				p.FragHdr, p.FragPrev = off, prev
				p.FragOff = int(fo &^ 7)
				p.FragMore = fo&1 != 0
				p.FragID = binary.BigEndian.Uint32(frame[off+4:])
				p.FragProto = frame[off]
				p.ExtLen = off - EthLen - IP6Len
				p.Reason = ReasonFragment
				return
			}
		default:
			break walk
		}
		p.Ext++
		if p.Ext > MaxExtHeaders {
			p.Reason = ReasonBadIP6Ext
			return
		}
		prev = off
		nh = frame[off]
		off += hl
	}
	p.ExtLen = off - EthLen - IP6Len
	p.L4 = off
	p.Proto = nh
	p.IPOpts = false
	l4 := frame[off:end]
	switch nh {
	case NHTCP:
		if len(l4) < TCPMinLen {
			p.Reason = ReasonTruncated
			return
		}
		doff := int(l4[12]>>4) * 4
		if doff < TCPMinLen || doff > len(l4) {
			p.Reason = ReasonBadL4
			return
		}
		p.Flags = l4[13]
	case NHUDP:
		if len(l4) < UDPLen {
			p.Reason = ReasonTruncated
			return
		}
		ul := int(binary.BigEndian.Uint16(l4[4:]))
		if ul < UDPLen || ul > len(l4) {
			p.Reason = ReasonBadL4
			return
		}
		p.Flags = 0
	case NHICMPv6:
		if len(l4) < 8 {
			p.Reason = ReasonTruncated
			return
		}
		p.SPort, p.DPort, p.Flags = 0, 0, 0
		p.Kind = KindIPv6
		return
	default:
		p.Reason = ReasonProto
		return
	}
	p.SPort = binary.BigEndian.Uint16(l4[0:])
	p.DPort = binary.BigEndian.Uint16(l4[2:])
	p.Kind = KindIPv6
}

// Hop-by-hop option types the kernel acts on (ip6_parse_tlv's tables).
const (
	opt6Pad1        = 0
	opt6PadN        = 1
	opt6RouterAlert = 0x05
	opt6Calipso     = 0x07
	opt6IOAM        = 0x31
	opt6Jumbo       = 0xc2
)

// validTLVs checks the options of a hop-by-hop (hbh) or destination
// options header as the kernel's ip6_parse_tlv does: every option fits,
// padding is at most 7 bytes in a row and zero, at most maxTLVOptions
// other options; in hop-by-hop, an option golvs does not know whose
// action bits say discard, and the jumbo payload option, are refused.
func validTLVs(o []byte, hbh bool) bool {
	pad, n := 0, 0
	for len(o) > 0 {
		t := o[0]
		if t == opt6Pad1 {
			if pad++; pad > 7 {
				return false
			}
			o = o[1:]
			continue
		}
		if len(o) < 2 || 2+int(o[1]) > len(o) {
			return false
		}
		l := 2 + int(o[1])
		if t == opt6PadN {
			if pad += l; pad > 7 {
				return false
			}
			for _, b := range o[2:l] {
				if b != 0 {
					return false
				}
			}
			o = o[l:]
			continue
		}
		pad = 0
		if n++; n > maxTLVOptions {
			return false
		}
		if hbh {
			switch t {
			case opt6RouterAlert:
				if l != 4 {
					return false
				}
			case opt6Calipso, opt6IOAM:
			case opt6Jumbo:
				return false
			default:
				if t>>6 != 0 { // discard (and maybe answer): golvs discards
					return false
				}
			}
		}
		o = o[l:]
	}
	return true
}

// ExtHeader is one header of an IPv6 extension chain, for traces.
type ExtHeader struct {
	Proto uint8 // its next-header value: 0 hop-by-hop, 43 routing, 44 fragment, 60 destination options
	Off   int   // its offset from the IPv6 header
	Len   int   // its length in bytes
}

// ExtChain lists the extension headers of the IPv6 packet ip (from its
// fixed header), with the upper-layer protocol they lead to, for traces
// and --explain: the walk Decode makes, without its checks. It stops at
// the first header it cannot read (ok false) and at a real fragment.
func ExtChain(ip []byte) (hs []ExtHeader, proto uint8, ok bool) {
	if len(ip) < IP6Len || ip[0]>>4 != 6 {
		return nil, 0, false
	}
	end := min(len(ip), IP6Len+int(binary.BigEndian.Uint16(ip[ip6PLen:])))
	nh, off := ip[ip6Next], IP6Len
	for i := 0; i <= MaxExtHeaders; i++ {
		var hl int
		switch nh {
		case NHHopByHop, NHDestOpts, NHRouting:
			if off+8 > end {
				return hs, nh, false
			}
			hl = (int(ip[off+1]) + 1) * 8
		case NHFragment:
			hl = FragHLen
		default:
			return hs, nh, true
		}
		if off+hl > end {
			return hs, nh, false
		}
		hs = append(hs, ExtHeader{Proto: nh, Off: off, Len: hl})
		if nh == NHFragment && binary.BigEndian.Uint16(ip[off+2:])&0xfff9 != 0 {
			return hs, ip[off], true
		}
		nh = ip[off]
		off += hl
	}
	return hs, nh, false
}

// ExtName names an extension header kind.
func ExtName(nh uint8) string {
	switch nh {
	case NHHopByHop:
		return "hop-by-hop"
	case NHRouting:
		return "routing"
	case NHFragment:
		return "fragment"
	case NHDestOpts:
		return "destination-options"
	}
	return "?"
}

// MartianSource6 reports an IPv6 source address no router forwards from
// the wire (the kernel's ip6_rcv_core and ip6_forward): unspecified ::,
// loopback ::1, multicast ff00::/8, IPv4-mapped ::ffff:0:0/96, and
// link-local fe80::/10 (RFC 4291 2.5.6: never forwarded off its link).
// The director adds its own addresses, VIPs and local addresses.
func MartianSource6(a [16]byte) bool {
	return martian6(a)
}

// MartianDest6 reports an IPv6 destination no router forwards: the same
// ranges (golvs balances unicast only).
func MartianDest6(a [16]byte) bool { return martian6(a) }

func martian6(a [16]byte) bool {
	hi := binary.BigEndian.Uint64(a[0:])
	lo := binary.BigEndian.Uint64(a[8:])
	switch {
	case hi == 0 && (lo == 0 || lo == 1): // :: and ::1
		return true
	case a[0] == 0xff: // multicast
		return true
	case a[0] == 0xfe && a[1]&0xc0 == 0x80: // link-local
		return true
	case hi == 0 && lo>>32 == 0xffff: // IPv4-mapped
		return true
	}
	return false
}

// PseudoSum6 is the IPv6 pseudo-header sum for an L4 checksum (RFC 8200
// 8.1): both addresses, the upper-layer length and the next header.
func PseudoSum6(src, dst *[16]byte, proto uint8, length int) uint32 {
	var s uint64
	for i := 0; i < 16; i += 4 {
		s += uint64(binary.BigEndian.Uint32(src[i:])) + uint64(binary.BigEndian.Uint32(dst[i:]))
	}
	s += uint64(length) + uint64(proto)
	for s>>32 != 0 {
		s = s&0xffffffff + s>>32
	}
	return uint32(s)
}

// L4Checksum6 computes a TCP, UDP or ICMPv6 checksum over IPv6 from
// scratch over l4 (its checksum field taken as zero). A computed UDP 0 is
// returned as 0xFFFF.
func L4Checksum6(src, dst *[16]byte, proto uint8, l4 []byte) uint16 {
	off := tcpCsum
	switch proto {
	case NHUDP:
		off = udpCsum
	case NHICMPv6:
		off = 2
	}
	s := PseudoSum6(src, dst, proto, len(l4))
	s = Sum(l4[:off], s)
	s = Sum(l4[off+2:], s)
	c := ^Fold(s)
	if proto == NHUDP && c == 0 {
		c = 0xffff
	}
	return c
}

// Update128 is RFC 1624 eqn. 3 for a 128-bit field (an IPv6 address in
// the pseudo header): ~(~HC + ~old + new), word by word.
func Update128(hc uint16, old, new *[16]byte) uint16 {
	s := uint64(^hc)
	for i := 0; i < 16; i += 4 {
		s += uint64(^binary.BigEndian.Uint32(old[i:])) + uint64(binary.BigEndian.Uint32(new[i:]))
	}
	return ^fold64(s)
}

// UpdatePartial128 is UpdatePartial32 for an IPv6 address: the field
// holds the folded pseudo-header sum, not complemented.
func UpdatePartial128(p uint16, old, new *[16]byte) uint16 {
	s := uint64(p)
	for i := 0; i < 16; i += 4 {
		s += uint64(^binary.BigEndian.Uint32(old[i:])) + uint64(binary.BigEndian.Uint32(new[i:]))
	}
	return fold64(s)
}

func fold64(s uint64) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
