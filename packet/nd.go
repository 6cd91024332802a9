package packet

import "encoding/binary"

// ICMPv6 types golvs handles (RFC 4443, RFC 4861).
const (
	ICMPv6DestUnreach  = 1
	ICMPv6PacketTooBig = 2
	ICMPv6TimeExceeded = 3
	ICMPv6ParamProblem = 4
	ICMPv6EchoRequest  = 128
	ICMPv6NS           = 135
	ICMPv6NA           = 136
)

// Neighbour Discovery (RFC 4861), the messages golvs answers for its
// VIPs and local addresses as it answers ARP for IPv4 ones:
//
//	NS: | type 135 | code 0 | csum | reserved (4) | target (16) | options ... |
//	NA: | type 136 | code 0 | csum | R S O flags, reserved (4) | target (16) | options ... |
//	option: | type | length in 8-byte units | ... |   1: source, 2: target link-layer address
const (
	ndMinLen     = 24
	ndOptSrcLL   = 1
	ndOptTgtLL   = 2
	naFlagRouter = 0x80
	naFlagSolic  = 0x40
	naFlagOver   = 0x20
	// NALen is the frame an NA with a target link-layer option takes.
	NALen = EthLen + IP6Len + ndMinLen + 8
)

// NS is a validated Neighbor Solicitation.
type NS struct {
	Target [16]byte
	SrcLL  [6]byte // the source link-layer option, if HasLL
	HasLL  bool
	DAD    bool // from :: (duplicate address detection)
}

// ParseNS validates a Neighbor Solicitation in a decoded ICMPv6 frame as
// RFC 4861 7.1.1 says a node must before it acts on one: hop limit 255
// (it cannot have crossed a router), code 0, at least 24 bytes, a correct
// checksum, a target that is not multicast, options of non-zero length
// inside the message, and, from the unspecified address, a solicited-node
// destination and no source link-layer option.
func ParseNS(frame []byte, p *Parsed, ns *NS) bool {
	if p.Kind != KindIPv6 || p.Proto != NHICMPv6 || p.Ext != 0 {
		return false
	}
	m := frame[p.L4:p.End]
	if len(m) < ndMinLen || m[0] != ICMPv6NS || m[1] != 0 || IPv6(frame[p.L3:]).HopLimit() != 255 {
		return false
	}
	if Fold(Sum(m, PseudoSum6(&p.Src6, &p.Dst6, NHICMPv6, len(m)))) != 0xffff {
		return false
	}
	copy(ns.Target[:], m[8:24])
	if ns.Target[0] == 0xff {
		return false
	}
	ns.HasLL = false
	ns.DAD = p.Src6 == [16]byte{}
	for o := m[ndMinLen:]; len(o) > 0; {
		if len(o) < 2 || o[1] == 0 || int(o[1])*8 > len(o) {
			return false
		}
		n := int(o[1]) * 8
		if o[0] == ndOptSrcLL && n >= 8 {
			copy(ns.SrcLL[:], o[2:8])
			ns.HasLL = true
		}
		o = o[n:]
	}
	if ns.DAD && (p.Dst6 != SolicitedNode(ns.Target) || ns.HasLL) {
		return false
	}
	return true
}

// SolicitedNode returns the solicited-node multicast address of a, the
// one its Neighbor Solicitations go to: ff02::1:ffXX:XXXX.
func SolicitedNode(a [16]byte) [16]byte {
	return [16]byte{0xff, 0x02, 10: 0, 11: 0x01, 12: 0xff, 13: a[13], 14: a[14], 15: a[15]}
}

// MulticastMAC returns the Ethernet address an IPv6 multicast address
// maps to: 33:33 and its last four bytes (RFC 2464 7).
func MulticastMAC(a [16]byte) [6]byte { return [6]byte{0x33, 0x33, a[12], a[13], a[14], a[15]} }

// AllNodes is ff02::1, where an NA defending an address against a
// duplicate address detection goes.
var AllNodes = [16]byte{0xff, 0x02, 15: 1}

// BuildNA writes into b (at least NALen bytes) an Ethernet frame carrying
// a Neighbor Advertisement for target from mac: to the soliciting node
// (solicited set) or, answering duplicate address detection, to all nodes
// (ff02::1, solicited clear). It is sent from the target address itself
// with hop limit 255, override set and the target link-layer option, as
// the kernel's ndisc_send_na does. It returns the frame's length.
func BuildNA(b []byte, mac, dstMAC [6]byte, dst, target [16]byte, solicited bool) int {
	e := Eth(b)
	e.SetMACs(mac, dstMAC)
	e.SetType(EtherTypeIP6)
	ip := IPv6(b[EthLen : EthLen+IP6Len])
	binary.BigEndian.PutUint32(ip[0:], 6<<28)
	ip.SetPayloadLen(ndMinLen + 8)
	ip[ip6Next], ip[ip6Hop] = NHICMPv6, 255
	ip.SetSrc(target)
	ip.SetDst(dst)
	m := b[EthLen+IP6Len : NALen]
	clear(m)
	m[0] = ICMPv6NA
	m[4] = naFlagOver
	if solicited {
		m[4] |= naFlagSolic
	}
	copy(m[8:24], target[:])
	m[24], m[25] = ndOptTgtLL, 1
	copy(m[26:32], mac[:])
	binary.BigEndian.PutUint16(m[2:], ^Fold(Sum(m, PseudoSum6(&target, &dst, NHICMPv6, len(m)))))
	return NALen
}
