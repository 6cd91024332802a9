package netio

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// Match selects IPv4 frames (IPv6 ones with V6) by protocol, address and
// port (port 0: any).
type Match struct {
	Proto uint8
	Addr  [4]byte
	Bits  uint8 // prefix length of the address; 0 means one address (32, or 128 with V6)
	Port  uint16
	V6    bool
	Addr6 [16]byte
}

// maxInsns is the kernel's limit on a classic BPF program (BPF_MAXINSNS).
const maxInsns = 4096

// snapAll is the capture length the filter returns: whole frames, GSO ones
// included.
const snapAll = 262144

// BuildFilter returns a classic BPF program that accepts only what golvs
// must see: ARP (when arp is set), IPv4 and IPv6 frames to one of dst
// (traffic for a virtual service) and from one of src (replies from real
// servers), and IPv6 Neighbor Solicitations (golvs answers those for its
// VIPs). An IPv6 frame whose next header is an extension header (or a
// fragment) is taken on its address alone: golvs walks the chain itself.
// Frames the host itself sends (PACKET_OUTGOING) are never accepted, so
// golvs never sees its own transmissions. When the program would not fit
// the kernel's limit, it falls back to every IP frame to or from a listed
// address, then to every IP frame; golvs re-checks each frame anyway, so a
// looser filter costs speed, never correctness.
func BuildFilter(dst, src []Match, arp bool) ([]bpf.RawInstruction, error) {
	prog := build(dst, src, arp, true)
	if len(prog) > maxInsns-FilterReserve {
		prog = build(dst, src, arp, false)
	}
	if len(prog) > maxInsns-FilterReserve {
		prog = buildAll(arp) // every IPv4 and IPv6 frame
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

// preamble drops the host's own frames and loads the EtherType.
func preamble(arp bool) []bpf.Instruction {
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
	return p
}

// buildAll accepts every IPv4 and IPv6 frame (and ARP with arp).
func buildAll(arp bool) []bpf.Instruction {
	return append(preamble(arp),
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipTrue: 1, SkipFalse: 0},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x86dd, SkipTrue: 0, SkipFalse: 1},
		bpf.RetConstant{Val: snapAll},
		bpf.RetConstant{Val: 0})
}

func build(dst, src []Match, arp, ports bool) []bpf.Instruction {
	p := preamble(arp)
	var dst4, src4, dst6, src6 []Match
	for _, m := range dst {
		if m.V6 {
			dst6 = append(dst6, m)
		} else {
			dst4 = append(dst4, m)
		}
	}
	for _, m := range src {
		if m.V6 {
			src6 = append(src6, m)
		} else {
			src4 = append(src4, m)
		}
	}
	v4 := build4(dst4, src4, ports)
	// IPv4: the blocks; anything else jumps to the IPv6 section.
	p = append(p,
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipTrue: 1, SkipFalse: 0},
		bpf.Jump{Skip: uint32(len(v4) + 1)})
	p = append(p, v4...)
	p = append(p, bpf.RetConstant{Val: 0})
	return append(p, build6(dst6, src6, ports)...)
}

func build4(dst, src []Match, ports bool) []bpf.Instruction {
	var p []bpf.Instruction
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
	return p
}

// Offsets in an Ethernet/IPv6 frame.
const (
	ip6NextOff = 14 + 6
	ip6SrcOff  = 14 + 8
	ip6DstOff  = 14 + 24
	ip6L4Off   = 14 + 40
)

// build6 is the IPv6 section, entered with the EtherType in A: Neighbor
// Solicitations, then a block per match (its address word by word, then,
// when the next header is the match's protocol, its port; an extension
// header next is taken on the address alone).
func build6(dst, src []Match, ports bool) []bpf.Instruction {
	// Every conditional jump stays inside its block (classic BPF skips
	// them at most 255 instructions); blocks end in their own returns.
	var a asm
	a.jump(bpf.JumpEqual, 0x86dd, false, "ip6", "")
	a.add(bpf.RetConstant{Val: 0})
	a.mark("ip6")
	a.add(bpf.LoadAbsolute{Off: ip6NextOff, Size: 1})
	a.jump(bpf.JumpEqual, 58, false, "", "blocks")
	a.add(bpf.LoadAbsolute{Off: ip6L4Off, Size: 1})
	a.jump(bpf.JumpEqual, 135, false, "", "blocks") // a Neighbor Solicitation
	a.add(bpf.RetConstant{Val: snapAll})
	a.mark("blocks")
	type blockKey struct {
		m   Match
		src bool
	}
	seen := map[blockKey]bool{}
	n := 0
	block := func(m Match, addrOff, portOff uint32) {
		if !ports {
			m.Port, m.Proto = 0, 0
		}
		if m.Bits == 0 || m.Bits > 128 {
			m.Bits = 128
		}
		m.Addr = [4]byte{}
		for i := range m.Addr6 { // one key for every spelling of a prefix
			if keep := int(m.Bits) - 8*i; keep < 8 {
				m.Addr6[i] &= byte(uint16(0xff00) >> max(keep, 0))
			}
		}
		key := blockKey{m: m, src: addrOff == ip6SrcOff}
		if seen[key] {
			return
		}
		seen[key] = true
		n++
		end, ext, acc := fmt.Sprintf("end%d", n), fmt.Sprintf("ext%d", n), fmt.Sprintf("acc%d", n)
		for w := 0; w < 4 && 32*w < int(m.Bits); w++ {
			a.add(bpf.LoadAbsolute{Off: addrOff + uint32(4*w), Size: 4})
			mask := ^uint32(0)
			if keep := int(m.Bits) - 32*w; keep < 32 {
				mask <<= 32 - keep
				a.add(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask})
			}
			v := (uint32(m.Addr6[4*w])<<24 | uint32(m.Addr6[4*w+1])<<16 | uint32(m.Addr6[4*w+2])<<8 | uint32(m.Addr6[4*w+3])) & mask
			a.jump(bpf.JumpEqual, v, false, "", end)
		}
		if m.Proto != 0 {
			a.add(bpf.LoadAbsolute{Off: ip6NextOff, Size: 1})
			a.jump(bpf.JumpEqual, uint32(m.Proto), false, "", ext)
			if m.Port != 0 {
				a.add(bpf.LoadAbsolute{Off: ip6L4Off + portOff, Size: 2})
				a.jump(bpf.JumpEqual, uint32(m.Port), false, "", end)
			}
			a.add(bpf.RetConstant{Val: snapAll})
			a.mark(ext) // hop-by-hop, routing, fragment, destination options: the address decides
			for _, x := range []uint32{0, 43, 44} {
				a.jump(bpf.JumpEqual, x, false, acc, "")
			}
			a.jump(bpf.JumpEqual, 60, false, "", end)
			a.mark(acc)
		}
		a.add(bpf.RetConstant{Val: snapAll})
		a.mark(end)
	}
	for _, m := range dst {
		block(m, ip6DstOff, 2)
	}
	for _, m := range src {
		block(m, ip6SrcOff, 0)
	}
	a.add(bpf.RetConstant{Val: 0})
	return a.assemble()
}
