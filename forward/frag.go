package forward

import (
	"encoding/binary"

	"github.com/golvs/golvs/packet"
)

// IPv4 fragmentation, as a router does it (RFC 791, the kernel's
// ip_do_fragment): a datagram longer than the egress MTU, DF clear, is
// cut into fragments of at most mtu bytes whose payloads, but the last,
// are a multiple of 8 bytes:
//
//	fragment i:  | IPv4 header (ihl bytes) | payload [i*step, min((i+1)*step, len)) |
//	             id as the datagram's, offset (i*step)/8, MF on all but the last
//
// Every fragment keeps the header's length; after the first, the options
// without the "copied" bit are overwritten with NOPs (ip_options_fragment).
// The L4 checksum must be complete before the datagram is cut: it covers
// the whole datagram, and no device completes a checksum across fragments.

// MinMTU is the smallest MTU an IPv4 link may have (RFC 791): a 60-byte
// header and 8 bytes of payload.
const MinMTU = 68

// fragStep is the payload of every fragment but the last.
func fragStep(ihl, mtu int) int { return (mtu - ihl) &^ 7 }

// Fragments returns how many fragments the IPv4 packet ip (its header
// validated by packet.Decode) makes at mtu (at least MinMTU).
func Fragments(ip []byte, mtu int) int {
	ihl := packet.IPv4(ip).IHL()
	pl := packet.IPv4(ip).TotalLen() - ihl
	step := fragStep(ihl, mtu)
	if pl <= 0 {
		return 1
	}
	return (pl + step - 1) / step
}

// Fragment writes fragment i of the IPv4 packet ip into dst (at least mtu
// bytes) and returns its length. The header checksum is recomputed; the
// payload is copied as it is.
func Fragment(dst, ip []byte, mtu, i int) int {
	h := packet.IPv4(ip)
	ihl := h.IHL()
	tot := h.TotalLen()
	step := fragStep(ihl, mtu)
	lo := ihl + i*step
	hi := min(lo+step, tot)
	n := ihl + hi - lo
	copy(dst[:ihl], ip[:ihl])
	copy(dst[ihl:n], ip[lo:hi])
	if i > 0 && ihl > packet.IP4MinLen {
		nopUncopied(dst[packet.IP4MinLen:ihl])
	}
	frag := binary.BigEndian.Uint16(ip[6:])
	off := frag&0x1fff + uint16(i*step/8)
	mf := frag & 0x2000 // a fragment cut again keeps its own MF on its last piece
	if hi < tot {
		mf = 0x2000
	}
	binary.BigEndian.PutUint16(dst[2:], uint16(n))
	binary.BigEndian.PutUint16(dst[6:], frag&0x4000|mf|off)
	o := packet.IPv4(dst[:ihl])
	o.SetChecksum(0)
	o.SetChecksum(o.HeaderChecksum())
	return n
}

// nopUncopied overwrites the options a later fragment must not carry with
// NOPs. The options were validated by packet.Decode.
func nopUncopied(o []byte) {
	for len(o) > 0 {
		switch o[0] {
		case 0: // END
			return
		case 1: // NOP
			o = o[1:]
			continue
		}
		if len(o) < 2 || int(o[1]) < 2 || int(o[1]) > len(o) {
			return
		}
		n := int(o[1])
		if !packet.OptionCopied(o[0]) {
			for j := 0; j < n; j++ {
				o[j] = 1
			}
		}
		o = o[n:]
	}
}

// CompleteChecksum finishes an offloaded (virtio NEEDS_CSUM) checksum in
// software, as the device would: the ones'-complement sum of frame[start:end]
// (the checksum field holding the pseudo-header sum) is stored, inverted,
// at start+off. A UDP checksum that comes out 0 is sent as 0xFFFF.
func CompleteChecksum(frame []byte, start, off, end int, udp bool) bool {
	if start < 0 || off < 0 || start+off+2 > end || end > len(frame) {
		return false
	}
	c := ^packet.Fold(packet.Sum(frame[start:end], 0))
	if udp && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(frame[start+off:], c)
	return true
}
