package netio

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// Match selects IPv4 frames by protocol, address and port (port 0: any).
type Match struct {
	Proto uint8
	Addr  [4]byte
	Bits  uint8 // prefix length of Addr; 0 means 32 (one address)
	Port  uint16
}

// maxInsns is the kernel's limit on a classic BPF program (BPF_MAXINSNS).
const maxInsns = 4096

// snapAll is the capture length the filter returns: whole frames, GSO ones
// included.
const snapAll = 262144

// BuildFilter returns a classic BPF program that accepts only what golvs
// must see: ARP (when arp is set), IPv4 frames to one of dst (traffic for a
// virtual service) and IPv4 frames from one of src (replies from real
// servers). Frames the host itself sends (PACKET_OUTGOING) are never
// accepted, so golvs never sees its own transmissions. When the program
// would not fit the kernel's limit, it falls back to every IPv4 frame to or
// from a listed address, then to every IPv4 frame; golvs re-checks each
// frame anyway, so a looser filter costs speed, never correctness.
func BuildFilter(dst, src []Match, arp bool) ([]bpf.RawInstruction, error) {
	prog := build(dst, src, arp, true)
	if len(prog) > maxInsns-FilterReserve {
		prog = build(dst, src, arp, false)
	}
	if len(prog) > maxInsns-FilterReserve {
		prog = build(nil, nil, arp, false)
		// every IPv4 frame
		prog = append(prog[:len(prog)-1], bpf.RetConstant{Val: snapAll})
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("netio: assembling filter: %w", err)
	}
	return raw, nil
}

// Offsets of the IPv4 addresses in an Ethernet frame.
const (
	srcAddrOff = 14 + 12
	dstAddrOff = 14 + 16
)

func build(dst, src []Match, arp, ports bool) []bpf.Instruction {
	p := []bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 4 /* PACKET_OUTGOING */, SkipTrue: 0, SkipFalse: 1},
		bpf.RetConstant{Val: 0},
		bpf.LoadAbsolute{Off: 12, Size: 2},
	}
	if arp {
		p = append(p,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0806, SkipTrue: 0, SkipFalse: 1},
			bpf.RetConstant{Val: snapAll})
	}
	p = append(p,
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipTrue: 1, SkipFalse: 0},
		bpf.RetConstant{Val: 0})
	// A block is skipped when the same test already stands on the same
	// side: the key holds the whole match and the side, so a source equal
	// to a destination (a real server on a VIP's address) keeps its block.
	type blockKey struct {
		m   Match
		src bool
	}
	seen := map[blockKey]bool{}
	block := func(m Match, addrOff, portOff uint32) {
		if !ports {
			m.Port, m.Proto = 0, 0
		}
		if m.Bits == 0 || m.Bits > 32 {
			m.Bits = 32
		}
		mask := ^uint32(0) << (32 - uint32(m.Bits))
		for i := range m.Addr { // one key for every spelling of a prefix
			m.Addr[i] &= byte(mask >> (24 - 8*i))
		}
		key := blockKey{m: m, src: addrOff == srcAddrOff}
		if seen[key] {
			return
		}
		seen[key] = true
		var b []bpf.Instruction
		b = append(b, bpf.LoadAbsolute{Off: addrOff, Size: 4})
		if m.Bits < 32 {
			b = append(b, bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask})
		}
		rest := []bpf.Instruction{}
		if m.Proto != 0 {
			rest = append(rest,
				bpf.LoadAbsolute{Off: 14 + 9, Size: 1},
				bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(m.Proto)}) // SkipFalse fixed below
		}
		if m.Port != 0 {
			rest = append(rest,
				bpf.LoadMemShift{Off: 14},
				bpf.LoadIndirect{Off: 14 + portOff, Size: 2},
				bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(m.Port)})
		}
		rest = append(rest, bpf.RetConstant{Val: snapAll})
		// Each failed test skips to the end of this block.
		n := len(rest)
		for i, ins := range rest {
			if j, ok := ins.(bpf.JumpIf); ok {
				j.SkipFalse = uint8(n - i - 1)
				rest[i] = j
			}
		}
		v := (uint32(m.Addr[0])<<24 | uint32(m.Addr[1])<<16 | uint32(m.Addr[2])<<8 | uint32(m.Addr[3])) & mask
		b = append(b, bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipFalse: uint8(n)})
		p = append(p, b...)
		p = append(p, rest...)
	}
	for _, m := range dst {
		block(m, dstAddrOff, 2)
	}
	for _, m := range src {
		block(m, srcAddrOff, 0)
	}
	return append(p, bpf.RetConstant{Val: 0})
}
