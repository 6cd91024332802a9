package packet

import "encoding/binary"

// Kind is what Decode found.
type Kind uint8

const (
	KindUnknown Kind = iota // see Parsed.Reason
	KindARP
	KindIPv4 // TCP, UDP or ICMP over IPv4, fully validated
)

// Reason says why a frame is unknown. Each has a counter in the director.
type Reason uint8

const (
	ReasonNone      Reason = iota
	ReasonTruncated        // shorter than its headers claim
	ReasonNotIPv4          // another EtherType (IPv6, VLAN, ...)
	ReasonBadIP            // bad version, IHL or total length
	ReasonFragment         // an IPv4 fragment
	ReasonProto            // an IP protocol golvs does not balance
	ReasonBadL4            // bad TCP data offset or UDP length
	ReasonBadARP           // not Ethernet/IPv4 ARP
	NumReasons
)

var reasonNames = [NumReasons]string{"ok", "truncated", "not-ipv4", "bad-ip", "fragment", "protocol", "bad-l4", "bad-arp"}

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
}

// Decode parses frame into p. Only KindIPv4 and KindARP results are safe
// to hand to a rewriter or responder.
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
