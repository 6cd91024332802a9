package packet

import "encoding/binary"

// Kind is what Decode found.
type Kind uint8

const (
	KindUnknown Kind = iota // see Parsed.Reason
	KindARP
	KindIPv4 // TCP, UDP or ICMP over IPv4, fully validated
	KindIPv6 // TCP, UDP or ICMPv6 over IPv6, its extension headers walked (ipv6.go)
)

// Reason says why a frame is unknown. Each has a counter in the director.
type Reason uint8

const (
	ReasonNone      Reason = iota
	ReasonTruncated        // shorter than its headers claim
	ReasonNotIPv4          // another EtherType (VLAN, ...): neither IPv4, IPv6 nor ARP
	ReasonBadIP            // bad version, IHL or total length
	ReasonFragment         // an IPv4 fragment, or an IPv6 one (its fragment header described in Parsed)
	ReasonProto            // an IP protocol golvs does not balance
	ReasonBadL4            // bad TCP data offset or UDP length
	ReasonBadARP           // not Ethernet/IPv4 ARP
	ReasonBadIPCsum        // the IPv4 header checksum is wrong
	ReasonBadIPOpts        // malformed IPv4 options, or a source route
	ReasonBadIP6Ext        // a malformed or refused IPv6 extension-header chain (ipv6.go)
	NumReasons
)

var reasonNames = [NumReasons]string{"ok", "truncated", "not-ipv4", "bad-ip", "fragment", "protocol", "bad-l4", "bad-arp", "bad-ip-checksum", "bad-ip-options", "bad-ip6-ext"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "?"
}

// Parsed is the result of decoding one frame. It is owned by the caller
// and reused across frames; Decode fills every field it reports.
type Parsed struct {
	Kind   Kind
	Reason Reason

	L3     int // offset of the IP header (EthLen)
	L4     int // offset of the L4 header
	End    int // offset just past the IP packet (frame padding excluded)
	Proto  uint8
	Src    [4]byte
	Dst    [4]byte
	SPort  uint16
	DPort  uint16
	Flags  uint8 // TCP flags
	IPOpts bool  // the IPv4 header carries options

	// IPv6 (KindIPv6, and a ReasonFragment of an IPv6 frame): the
	// addresses, and what the extension-header walk found. Decode sets
	// them only for IPv6 frames; IPv4 frames leave them as they were.
	V6
}

// Decode parses frame into p. Only KindIPv4, KindIPv6 and KindARP results
// are safe to hand to a rewriter or responder.
func Decode(frame []byte, p *Parsed) {
	p.Kind = KindUnknown
	p.Reason = ReasonNone
	p.IPOpts = false
	if len(frame) < EthLen {
		p.Reason = ReasonTruncated
		return
	}
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case EtherTypeIP4:
	case EtherTypeIP6:
		decode6(frame, p)
		return
	case EtherTypeARP:
		if len(frame) < EthLen+ARPLen {
			p.Reason = ReasonTruncated
			return
		}
		if !ARP(frame[EthLen:]).valid() {
			p.Reason = ReasonBadARP
			return
		}
		p.Kind = KindARP
		return
	default:
		p.Reason = ReasonNotIPv4
		return
	}
	ip := frame[EthLen:]
	if len(ip) < IP4MinLen {
		p.Reason = ReasonTruncated
		return
	}
	ihl := int(ip[0]&0xf) * 4
	if ip[0]>>4 != 4 || ihl < IP4MinLen {
		p.Reason = ReasonBadIP
		return
	}
	tot := int(binary.BigEndian.Uint16(ip[ip4TotLen:]))
	if tot < ihl {
		p.Reason = ReasonBadIP
		return
	}
	if tot > len(ip) || ihl > len(ip) {
		p.Reason = ReasonTruncated
		return
	}
	// The kernel's ip_rcv_core drops a header whose checksum is wrong
	// (a rewrite would otherwise forward it still wrong, or fix it).
	if !HeaderOK(ip[:ihl]) {
		p.Reason = ReasonBadIPCsum
		return
	}
	if ihl > IP4MinLen && !validOptions(ip[IP4MinLen:ihl]) {
		p.Reason = ReasonBadIPOpts
		return
	}
	if binary.BigEndian.Uint16(ip[ip4Frag:])&(ip4FlagMF|ip4FragOff) != 0 {
		p.Reason = ReasonFragment
		return
	}
	p.L3 = EthLen
	p.L4 = EthLen + ihl
	p.End = EthLen + tot
	p.IPOpts = ihl > IP4MinLen
	p.Proto = ip[ip4Proto]
	copy(p.Src[:], ip[ip4Src:ip4Src+4])
	copy(p.Dst[:], ip[ip4Dst:ip4Dst+4])
	l4 := ip[ihl:tot]
	switch p.Proto {
	case 6:
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
	case 17:
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
	case 1:
		if len(l4) < 8 {
			p.Reason = ReasonTruncated
			return
		}
		p.SPort, p.DPort, p.Flags = 0, 0, 0
		p.Kind = KindIPv4
		return
	default:
		p.Reason = ReasonProto
		return
	}
	p.SPort = binary.BigEndian.Uint16(l4[0:])
	p.DPort = binary.BigEndian.Uint16(l4[2:])
	p.Kind = KindIPv4
}

// IPv4 option types (RFC 791) that the input path checks.
const (
	optEnd  = 0
	optNoop = 1
	optRR   = 7
	optTS   = 68
	optLSRR = 131
	optSSRR = 137
	optRA   = 148
)

// validOptions checks IPv4 options as the kernel's ip_options_compile
// does before a packet is routed: every option's length fits, record
// route and timestamp pointers are sane, and there is no source route
// (the kernel drops those unless accept_source_route is set, which it is
// not by default; forwarding one unchanged would let a client steer the
// real server's reply).
func validOptions(o []byte) bool {
	for len(o) > 0 {
		switch o[0] {
		case optEnd:
			return true
		case optNoop:
			o = o[1:]
			continue
		}
		if len(o) < 2 {
			return false
		}
		n := int(o[1])
		if n < 2 || n > len(o) {
			return false
		}
		switch o[0] {
		case optLSRR, optSSRR:
			return false
		case optRR:
			if n < 3 || o[2] < 4 {
				return false
			}
		case optTS:
			if n < 4 || o[2] < 5 {
				return false
			}
		case optRA:
			if n < 4 {
				return false
			}
		}
		o = o[n:]
	}
	return true
}

// OptionCopied reports whether an IPv4 option type must be copied into
// every fragment (its high bit); the others go into the first only.
func OptionCopied(typ byte) bool { return typ&0x80 != 0 }

// MartianSource reports a source address no router accepts from the wire,
// whatever its configuration (the kernel's ip_route_input_slow): 0.0.0.0/8,
// loopback 127.0.0.0/8, multicast 224.0.0.0/4 and the limited broadcast
// 255.255.255.255. The director adds its own addresses (a VIP, a local or
// broadcast address of its links) to these.
func MartianSource(a [4]byte) bool {
	return a[0] == 0 || a[0] == 127 || a[0]&0xf0 == 0xe0 || a == [4]byte{255, 255, 255, 255}
}

// MartianDest reports a destination no router forwards: 0.0.0.0/8,
// loopback, multicast (golvs balances unicast only) and the limited
// broadcast.
func MartianDest(a [4]byte) bool {
	return MartianSource(a)
}
