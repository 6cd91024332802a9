// Package packet decodes and rewrites the frames on golvs's packet path:
// Ethernet, ARP, IPv4, TCP, UDP and ICMP headers as views over []byte, a
// fail-closed decoder that fills a caller-owned Parsed, and RFC 1624
// incremental checksum updates.
//
// Decode never allocates and never panics on any input: a frame it cannot
// fully vouch for is reported as unknown with a Reason, and must never
// reach a rewriter.
package packet

import "encoding/binary"

// Ethernet header, 14 bytes:
//
//	0      6      12    14
//	| dst  | src  | type |
const (
	EthLen       = 14
	EtherTypeIP4 = 0x0800
	EtherTypeARP = 0x0806
	EtherTypeIP6 = 0x86DD
	EtherTypeVLN = 0x8100
)

// Eth is a view of an Ethernet header.
type Eth []byte

func (e Eth) Dst() (m [6]byte)         { copy(m[:], e[0:6]); return }
func (e Eth) Src() (m [6]byte)         { copy(m[:], e[6:12]); return }
func (e Eth) Type() uint16             { return binary.BigEndian.Uint16(e[12:14]) }
func (e Eth) SetDst(m [6]byte)         { copy(e[0:6], m[:]) }
func (e Eth) SetSrc(m [6]byte)         { copy(e[6:12], m[:]) }
func (e Eth) SetType(t uint16)         { binary.BigEndian.PutUint16(e[12:14], t) }
func (e Eth) SetMACs(src, dst [6]byte) { copy(e[0:6], dst[:]); copy(e[6:12], src[:]) }

// IPv4 header, 20 bytes without options:
//
//	0        1        2        4        6        8     9      10       12    16    20
//	| ver/ihl| tos    | totlen | id     | frag   | ttl | proto| csum   | src | dst |
const (
	IP4MinLen  = 20
	ip4TotLen  = 2
	ip4Frag    = 6
	ip4TTL     = 8
	ip4Proto   = 9
	ip4Csum    = 10
	ip4Src     = 12
	ip4Dst     = 16
	ip4FlagDF  = 0x4000
	ip4FlagMF  = 0x2000
	ip4FragOff = 0x1fff
)

// IPv4 is a view of an IPv4 header (with its options).
type IPv4 []byte

func (h IPv4) IHL() int             { return int(h[0]&0xf) * 4 }
func (h IPv4) TotalLen() int        { return int(binary.BigEndian.Uint16(h[ip4TotLen:])) }
func (h IPv4) TTL() uint8           { return h[ip4TTL] }
func (h IPv4) Proto() uint8         { return h[ip4Proto] }
func (h IPv4) Checksum() uint16     { return binary.BigEndian.Uint16(h[ip4Csum:]) }
func (h IPv4) Src() (a [4]byte)     { copy(a[:], h[ip4Src:ip4Src+4]); return }
func (h IPv4) Dst() (a [4]byte)     { copy(a[:], h[ip4Dst:ip4Dst+4]); return }
func (h IPv4) DF() bool             { return binary.BigEndian.Uint16(h[ip4Frag:])&ip4FlagDF != 0 }
func (h IPv4) SetChecksum(c uint16) { binary.BigEndian.PutUint16(h[ip4Csum:], c) }

// IsFragment reports a fragment (MF set or a non-zero offset).
func (h IPv4) IsFragment() bool {
	return binary.BigEndian.Uint16(h[ip4Frag:])&(ip4FlagMF|ip4FragOff) != 0
}

// HeaderChecksum computes the header checksum from scratch.
func (h IPv4) HeaderChecksum() uint16 {
	n := h.IHL()
	s := Sum(h[:ip4Csum], 0)
	s = Sum(h[ip4Csum+2:n], s)
	return ^Fold(s)
}

// SetSrcWithChecksum rewrites the source address and updates the header
// checksum incrementally. It returns the old address so the caller can fix
// the L4 pseudo-header checksum.
func (h IPv4) SetSrcWithChecksum(a [4]byte) {
	h.SetChecksum(Update32(h.Checksum(), be32(h[ip4Src:]), be32(a[:])))
	copy(h[ip4Src:], a[:])
}

// SetDstWithChecksum rewrites the destination address and updates the
// header checksum incrementally.
func (h IPv4) SetDstWithChecksum(a [4]byte) {
	h.SetChecksum(Update32(h.Checksum(), be32(h[ip4Dst:]), be32(a[:])))
	copy(h[ip4Dst:], a[:])
}

// DecTTL decrements the TTL and updates the header checksum: the word
// TTL<<8|proto drops by 0x0100, so the checksum rises by 0x0100 with the
// end-around carry (RFC 1141). As the kernel's ip_decrease_ttl does, a
// sum of exactly 0xffff is carried round too, to 0x0000: a recomputed
// checksum is never 0xffff, so the result is always the recomputed one.
// The caller has checked TTL > 1; a TTL of 0 is left alone (the sum's
// step would be another then).
func (h IPv4) DecTTL() {
	if h[ip4TTL] == 0 {
		return
	}
	h[ip4TTL]--
	c := uint32(h.Checksum()) + 0x0100
	c += (c + 1) >> 16 // 1 when c >= 0xffff
	h.SetChecksum(uint16(c))
}

func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

// TCP header offsets.
//
//	0      2      4     8     12        13     14    16     18    20
//	| sprt | dprt | seq | ack | off/rsv | flags| win | csum | urg |
const (
	TCPMinLen = 20
	tcpCsum   = 16
	TCPFin    = 0x01
	TCPSyn    = 0x02
	TCPRst    = 0x04
	TCPPsh    = 0x08
	TCPAck    = 0x10
)

// UDP header: sport, dport, length, checksum; 8 bytes.
const (
	UDPLen  = 8
	udpCsum = 6
)

// L4 is a view of a TCP or UDP header (ports sit at the same offsets).
type L4 []byte

func (l L4) SrcPort() uint16 { return binary.BigEndian.Uint16(l[0:]) }
func (l L4) DstPort() uint16 { return binary.BigEndian.Uint16(l[2:]) }

// SetSrcPortRaw and SetDstPortRaw change a port without touching the
// checksum; callers fix it (see forward).
func (l L4) SetSrcPortRaw(p uint16) { binary.BigEndian.PutUint16(l[0:], p) }
func (l L4) SetDstPortRaw(p uint16) { binary.BigEndian.PutUint16(l[2:], p) }

// ARP (Ethernet/IPv4) payload, 28 bytes.
const (
	ARPLen     = 28
	ARPRequest = 1
	ARPReply   = 2
)

// ARP is a view of an ARP payload.
type ARP []byte

func (a ARP) Op() uint16             { return binary.BigEndian.Uint16(a[6:]) }
func (a ARP) SenderMAC() (m [6]byte) { copy(m[:], a[8:14]); return }
func (a ARP) SenderIP() (ip [4]byte) { copy(ip[:], a[14:18]); return }
func (a ARP) TargetMAC() (m [6]byte) { copy(m[:], a[18:24]); return }
func (a ARP) TargetIP() (ip [4]byte) { copy(ip[:], a[24:28]); return }

// valid reports an Ethernet/IPv4 ARP payload.
func (a ARP) valid() bool {
	return len(a) >= ARPLen && binary.BigEndian.Uint16(a[0:]) == 1 &&
		binary.BigEndian.Uint16(a[2:]) == EtherTypeIP4 && a[4] == 6 && a[5] == 4
}

// BuildGARP writes keepalived's gratuitous ARP for ip into b (at least 42
// bytes; vrrp_arp.c): an ARP request from mac, to broadcast, with sender
// and target both ip and target hardware ff:ff:ff:ff:ff:ff. It returns
// the frame's length (pad it to 60 to send it).
func BuildGARP(b []byte, mac [6]byte, ip [4]byte) int {
	bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	return BuildARP(b, ARPRequest, mac, bcast, mac, ip, bcast, ip)
}

// BuildARP writes an Ethernet+ARP frame into b (at least 42 bytes) and
// returns its length.
func BuildARP(b []byte, op uint16, srcMAC, dstMAC [6]byte, senderMAC [6]byte, senderIP [4]byte, targetMAC [6]byte, targetIP [4]byte) int {
	e := Eth(b)
	e.SetMACs(srcMAC, dstMAC)
	e.SetType(EtherTypeARP)
	a := b[EthLen:]
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], EtherTypeIP4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], op)
	copy(a[8:], senderMAC[:])
	copy(a[14:], senderIP[:])
	copy(a[18:], targetMAC[:])
	copy(a[24:], targetIP[:])
	return EthLen + ARPLen
}
