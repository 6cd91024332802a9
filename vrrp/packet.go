package vrrp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/golvs/golvs/packet"
)

// The VRRP advertisement, after an IPv4 header (protocol 112):
//
//	version 2 (RFC 3768 §5.1)                version 3 (RFC 5798 §5.1)
//	 0       4       8              16              24             31
//	+-------+-------+---------------+---------------+---------------+
//	|Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
//	+-------+-------+---------------+---------------+---------------+
//	|   Auth Type   |   Adver Int   |          Checksum             |   v2
//	|(rsvd) |     Max Adver Int     |          Checksum             |   v3
//	+---------------+---------------+---------------+---------------+
//	|                       IPv4 Address(es)                        |
//	+---------------------------------------------------------------+
//	|                 Authentication Data (8 bytes, v2 only)        |
//	+---------------------------------------------------------------+
//
// Version 2's Adver Int is in seconds, version 3's Max Adver Int in
// centiseconds (12 bits). Version 2's checksum covers the VRRP message;
// version 3's also an IPv4 pseudo-header (source, destination, zero,
// protocol 112, VRRP length).
const (
	Proto      = 112 // IANA protocol number of VRRP
	ProtoAH    = 51  // IPSEC authentication header (keepalived's auth_type AH)
	TypeAdvert = 1
	hdrLen     = 8
	authLen    = 8
	ipLen      = 20
	// MaxAddrs is how many addresses one advertisement may carry (the
	// count is a byte; keepalived allows 20 per instance before it moves
	// the rest to excluded addresses, golvs allows this many).
	MaxAddrs = 255
	// TTL is the hop limit VRRP packets are sent with and, over
	// multicast, must arrive with (they never cross a router).
	TTL = 255
)

// MulticastGroup is the VRRP multicast group for IPv4 (224.0.0.18).
var MulticastGroup = netip.AddrFrom4([4]byte{224, 0, 0, 18})

// Authentication types of version 2.
const (
	AuthNone = 0
	AuthPass = 1 // simple text password, 8 bytes, zero-padded
	AuthAH   = 2 // IPSEC-AH (not supported by golvs)
)

// Drop reasons: why a received packet was not used. They are counted;
// Reason names them.
type Reason int

// The reasons, in Counters order.
const (
	DropNone      Reason = iota
	DropShort            // shorter than the IP and VRRP headers
	DropIP               // not a well-formed IPv4 header, or a fragment
	DropLength           // IP total length or VRRP length wrong for the address count
	DropProto            // not protocol 112 (IPSEC-AH included)
	DropTTL              // TTL not 255 (multicast)
	DropVersion          // not the version this instance speaks
	DropType             // not an advertisement
	DropChecksum         // checksum wrong
	DropVRID             // no instance for this VRID on the interface
	DropAuthType         // authentication type differs (v2)
	DropAuth             // password differs (v2)
	DropInterval         // advertisement interval differs (v2)
	DropAddrCount        // address count differs from the configuration
	DropAddrList         // an address of the configuration is missing
	DropOwn              // our own packet, looped back
	DropPeer             // unicast: the source is not a configured peer
	DropQueue            // the speaker's loop was behind (bounded queue full)
	NumReasons
)

// ReasonNames name the drop reasons, as counters are labelled.
var ReasonNames = [NumReasons]string{
	"", "short", "bad-ip", "length", "protocol", "ttl", "version", "type", "checksum",
	"vrid", "auth-type", "auth", "interval", "addr-count", "addr-list", "own", "not-peer", "queue-full",
}

func (r Reason) String() string {
	if r > 0 && r < NumReasons {
		return ReasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// ErrDrop is what every decode or check error wraps.
var ErrDrop = errors.New("vrrp: packet dropped")

// DropError is a packet refused for a reason.
type DropError struct {
	Reason Reason
	Detail string
}

func (e *DropError) Error() string { return "vrrp: dropped (" + e.Reason.String() + "): " + e.Detail }

// Is makes every DropError match ErrDrop.
func (e *DropError) Is(target error) bool { return target == ErrDrop }

func drop(r Reason, format string, args ...any) error {
	return &DropError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the drop reason of an error from Decode or Check.
func ReasonOf(err error) Reason {
	var e *DropError
	if errors.As(err, &e) {
		return e.Reason
	}
	return DropNone
}

// Advert is one decoded advertisement with what its IP header said.
type Advert struct {
	Src, Dst netip.Addr
	TTL      uint8
	Version  uint8
	Type     uint8
	VRID     uint8
	Priority uint8
	AuthType uint8 // version 2
	// Interval is the advertisement interval in centiseconds (version 2's
	// seconds times 100).
	Interval uint16
	Checksum uint16
	Addrs    []netip.Addr
	Auth     [authLen]byte // version 2
}

// Decode reads an IPv4 packet carrying a VRRP advertisement (as a raw
// socket delivers it, header included) into a. It checks everything that
// needs no configuration: the IP header, the protocol, the VRRP version
// (2 or 3) and type, the lengths against the address count, and the
// checksum. It fails closed: on error a holds nothing to act on.
func Decode(b []byte, a *Advert) error {
	*a = Advert{Addrs: a.Addrs[:0]}
	if len(b) < ipLen {
		return drop(DropShort, "%d bytes, an IPv4 header needs %d", len(b), ipLen)
	}
	if b[0]>>4 != 4 {
		return drop(DropIP, "IP version %d", b[0]>>4)
	}
	ihl := int(b[0]&0xf) * 4
	if ihl < ipLen || ihl > len(b) {
		return drop(DropIP, "header length %d in a %d-byte packet", ihl, len(b))
	}
	if tot := int(binary.BigEndian.Uint16(b[2:])); tot != len(b) {
		return drop(DropLength, "IP total length %d, received %d", tot, len(b))
	}
	if binary.BigEndian.Uint16(b[6:])&0x3fff != 0 {
		return drop(DropIP, "a fragment")
	}
	switch b[9] {
	case Proto:
	case ProtoAH:
		return drop(DropProto, "IPSEC-AH authentication, which golvs does not support")
	default:
		return drop(DropProto, "protocol %d", b[9])
	}
	a.TTL = b[8]
	a.Src = netip.AddrFrom4([4]byte(b[12:16]))
	a.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	v := b[ihl:]
	if len(v) < hdrLen {
		return drop(DropShort, "%d bytes of VRRP, the header needs %d", len(v), hdrLen)
	}
	a.Version, a.Type = v[0]>>4, v[0]&0xf
	if a.Version != 2 && a.Version != 3 {
		return drop(DropVersion, "version %d", a.Version)
	}
	if a.Type != TypeAdvert {
		return drop(DropType, "type %d", a.Type)
	}
	n := int(v[3])
	want := hdrLen + 4*n
	if a.Version == 2 {
		want += authLen
	}
	if len(v) != want {
		return drop(DropLength, "%d bytes of VRRP version %d, %d addresses need %d", len(v), a.Version, n, want)
	}
	var sum uint32
	if a.Version == 3 {
		sum = packet.PseudoSum4(a.Src.As4(), a.Dst.As4(), Proto, len(v))
	}
	if packet.Fold(packet.Sum(v, sum)) != 0xffff {
		return drop(DropChecksum, "version %d checksum %#04x does not verify", a.Version, binary.BigEndian.Uint16(v[6:]))
	}
	a.VRID, a.Priority = v[1], v[2]
	a.Checksum = binary.BigEndian.Uint16(v[6:])
	if a.Version == 2 {
		a.AuthType = v[4]
		a.Interval = uint16(v[5]) * 100
		copy(a.Auth[:], v[hdrLen+4*n:])
	} else {
		a.Interval = binary.BigEndian.Uint16(v[4:]) & 0x0fff
	}
	for i := 0; i < n; i++ {
		a.Addrs = append(a.Addrs, netip.AddrFrom4([4]byte(v[hdrLen+4*i:])))
	}
	return nil
}

// Message is what an instance advertises.
type Message struct {
	Version  uint8
	VRID     uint8
	Priority uint8
	Interval uint16 // centiseconds; version 2 sends Interval/100 seconds
	Addrs    []netip.Addr
	AuthType uint8
	Auth     [authLen]byte
}

// Len returns the VRRP message length (without the IP header).
func (m *Message) Len() int {
	n := hdrLen + 4*len(m.Addrs)
	if m.Version == 2 {
		n += authLen
	}
	return n
}

// AppendVRRP appends the VRRP message, checksummed for src and dst (the
// IPv4 pseudo-header of version 3).
func (m *Message) AppendVRRP(b []byte, src, dst netip.Addr) []byte {
	start := len(b)
	b = append(b, m.Version<<4|TypeAdvert, m.VRID, m.Priority, uint8(len(m.Addrs)))
	if m.Version == 2 {
		b = append(b, m.AuthType, uint8(m.Interval/100))
	} else {
		b = binary.BigEndian.AppendUint16(b, m.Interval&0x0fff)
	}
	b = append(b, 0, 0)
	for _, a := range m.Addrs {
		a4 := a.As4()
		b = append(b, a4[:]...)
	}
	if m.Version == 2 {
		b = append(b, m.Auth[:]...)
	}
	v := b[start:]
	var sum uint32
	if m.Version == 3 {
		sum = packet.PseudoSum4(src.As4(), dst.As4(), Proto, len(v))
	}
	binary.BigEndian.PutUint16(v[6:], ^packet.Fold(packet.Sum(v, sum)))
	return b
}

// AppendPacket appends the whole IPv4 packet as keepalived sends it: TOS
// 0xc0 (network control), TTL 255, the given IP ID, protocol 112, header
// checksum filled in.
func (m *Message) AppendPacket(b []byte, src, dst netip.Addr, id uint16) []byte {
	start := len(b)
	tot := ipLen + m.Len()
	b = append(b, 0x45, 0xc0)
	b = binary.BigEndian.AppendUint16(b, uint16(tot))
	b = binary.BigEndian.AppendUint16(b, id)
	b = append(b, 0, 0, TTL, Proto, 0, 0)
	s4, d4 := src.As4(), dst.As4()
	b = append(b, s4[:]...)
	b = append(b, d4[:]...)
	binary.BigEndian.PutUint16(b[start+10:], ^packet.Fold(packet.Sum(b[start:start+ipLen], 0)))
	return m.AppendVRRP(b, src, dst)
}

// PassAuth returns version 2's authentication data for a password: its
// first 8 bytes, zero-padded (keepalived truncates longer ones).
func PassAuth(pass string) (a [authLen]byte) {
	copy(a[:], pass)
	return
}

// accept applies the checks that depend on the instance (RFC 5798 §7.1,
// in keepalived's order): TTL 255 over multicast, the version, version
// 2's authentication and interval, the address count and list (unless
// skipped for the master already known), and, over unicast, that the
// source is a peer. a has passed Decode and carries the instance's VRID.
func (in *Instance) accept(a *Advert, knownMaster netip.Addr) error {
	unicast := len(in.UnicastPeers) > 0
	if !unicast && a.TTL != TTL {
		return drop(DropTTL, "TTL %d from %s, VRRP over multicast must arrive with %d", a.TTL, a.Src, TTL)
	}
	if int(a.Version) != in.Version {
		return drop(DropVersion, "version %d from %s, instance %s speaks %d", a.Version, a.Src, in.Name, in.Version)
	}
	if in.Version == 2 {
		want := uint8(AuthNone)
		if in.AuthPass != "" {
			want = AuthPass
		}
		if a.AuthType != want {
			return drop(DropAuthType, "authentication type %d from %s, instance %s expects %d", a.AuthType, a.Src, in.Name, want)
		}
		if want == AuthPass && a.Auth != PassAuth(in.AuthPass) {
			return drop(DropAuth, "wrong password from %s for instance %s", a.Src, in.Name)
		}
		if a.Interval != in.centis() {
			// keepalived: "to prevent concurrent VRID running => multiple
			// master in 1 VRID".
			return drop(DropInterval, "advertisement interval %ds from %s, instance %s uses %ds", a.Interval/100, a.Src, in.Name, in.centis()/100)
		}
	}
	if len(a.Addrs) != len(in.Addrs) {
		return drop(DropAddrCount, "%d addresses from %s, instance %s has %d", len(a.Addrs), a.Src, in.Name, len(in.Addrs))
	}
	if !in.SkipCheckAdvAddr || a.Src != knownMaster {
		for _, v := range in.Addrs {
			found := false
			for _, x := range a.Addrs {
				if x == v.Addr {
					found = true
					break
				}
			}
			if !found {
				return drop(DropAddrList, "advert from %s lacks %s of instance %s", a.Src, v.Addr, in.Name)
			}
		}
	}
	if unicast {
		ok := false
		for _, p := range in.UnicastPeers {
			if p == a.Src {
				ok = true
				break
			}
		}
		if !ok {
			return drop(DropPeer, "advert from %s, which is not a unicast peer of instance %s", a.Src, in.Name)
		}
	}
	return nil
}

// CheckAdvert applies an instance's receive checks (its defaults filled
// in) to a decoded advert, as the speaker does: for tools and tests that
// hold a packet from elsewhere.
func CheckAdvert(in *Instance, a *Advert) error {
	c := in.withDefaults()
	return c.accept(a, netip.Addr{})
}
