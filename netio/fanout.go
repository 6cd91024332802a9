package netio

import (
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// FanoutMode is how the kernel spreads an interface's frames over the
// sockets of a fanout group (one per worker).
type FanoutMode int

const (
	// FanoutCPU hands a frame to the socket of the CPU that received it
	// (PACKET_FANOUT_CPU): with worker i pinned to CPU i, a frame is
	// handled where the kernel's receive processing (RSS queue or RPS)
	// put it, with no wake-up of another CPU. A flow stays on one worker
	// as long as the NIC's RSS or RPS keeps it on one CPU.
	FanoutCPU FanoutMode = iota
	// FanoutHash hands a frame to a socket chosen by its flow hash
	// (PACKET_FANOUT_HASH): every flow on one worker whatever CPU
	// received it, at the cost of a cross-CPU wake-up when they differ.
	FanoutHash
	// FanoutNext spreads frames as FanoutCPU does (the kernel's part is
	// the same), for workers pinned one CPU on: a frame received on CPU c
	// is handled on CPU c+1. For hosts where the frame's sender runs on
	// the CPU that receives it (a veth fed by local programs: a lab, a
	// director beside its clients or servers), so the worker does not
	// wait for the sender to leave its CPU; a NIC's frames lose their
	// CPU's cache for nothing.
	FanoutNext
)

func (m FanoutMode) String() string {
	switch m {
	case FanoutHash:
		return "hash"
	case FanoutNext:
		return "next"
	}
	return "cpu"
}

// ParseFanoutMode reads "cpu", "next" or "hash".
func ParseFanoutMode(s string) (FanoutMode, error) {
	switch s {
	case "cpu":
		return FanoutCPU, nil
	case "next":
		return FanoutNext, nil
	case "hash":
		return FanoutHash, nil
	}
	return 0, fmt.Errorf("netio: fanout mode %q (allowed: cpu, next, hash)", s)
}

// Fanout is the set of fanout groups one set of workers shares: one group
// per interface, holding every worker's sockets of that interface (a
// version 2 ring has three, by frame length: tiny, MTU and aggregate
// slots). The group asks the kernel to reassemble IPv4 fragments before
// it picks a socket (PACKET_FANOUT_FLAG_DEFRAG), so a datagram reaches one
// worker whole, and a classic BPF program of golvs's picks the socket
// (PACKET_FANOUT_CBPF): the worker by CPU (FanoutCPU, FanoutNext) or flow
// hash (FanoutHash), then the socket of that worker whose slots fit the frame.
//
// One group per interface, not one per socket kind: the kernel keeps one
// reassembly queue per datagram for every AF_PACKET group alike, so with
// a group per kind the first group to see a datagram's last fragment
// would take the whole datagram, whatever its length (its socket's length
// test then dropped it unless it was an aggregate), and the other groups
// would start a queue with that last fragment that never completes.
//
// The first socket of a group gets an id from the kernel that no other
// process uses (PACKET_FANOUT_FLAG_UNIQUEID); the rest join it. The kernel
// indexes a group's sockets in the order they joined, so workers that
// open their rings in the same order, each ring its sockets in kind
// order, make socket worker*kinds+kind: worker i receives what CPU i or
// flow-hash bucket i gets, on every interface.
type Fanout struct {
	Mode   FanoutMode
	mu     sync.Mutex
	groups map[int]*fanoutGroup // by ifindex
}

type fanoutGroup struct {
	id      uint16
	members int
	his     []int // the length bound of each kind but the last (frame bytes)
}

// NewFanout makes an empty set of fanout groups.
func NewFanout(mode FanoutMode) *Fanout {
	return &Fanout{Mode: mode, groups: map[int]*fanoutGroup{}}
}

// join adds a socket of kind tier (of kinds, whose length bounds are his)
// to its interface's group and installs the group's program for the
// workers joined so far.
func (f *Fanout) join(fd, ifindex, tier int, his []int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	typ := unix.PACKET_FANOUT_CBPF | unix.PACKET_FANOUT_FLAG_DEFRAG
	g := f.groups[ifindex]
	if g == nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, (typ|unix.PACKET_FANOUT_FLAG_UNIQUEID)<<16); err != nil {
			return err
		}
		v, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT)
		if err != nil {
			return err
		}
		g = &fanoutGroup{id: uint16(v), his: his}
		f.groups[ifindex] = g
	} else if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, int(g.id)|typ<<16); err != nil {
		return err
	}
	g.members++
	kinds := len(g.his) + 1
	workers := (g.members + kinds - 1) / kinds
	prog, err := bpf.Assemble(fanoutProgram(f.Mode, workers, g.his))
	if err != nil {
		return err
	}
	p := unix.SockFprog{Len: uint16(len(prog)), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
	return unix.SetsockoptSockFprog(fd, unix.SOL_PACKET, unix.PACKET_FANOUT_DATA, &p)
}

// fanoutProgram returns the group's program: the socket index
// worker*kinds + kind. It runs on the frame from its network header (the
// kernel has pulled the Ethernet header; his count it), reassembled. Every
// load is guarded by a length test: a program that reads past the frame
// returns 0, which would hand any frame to worker 0's smallest slots.
//
//	M[0] kind, M[1] hash, M[2] scratch
func fanoutProgram(mode FanoutMode, workers int, his []int) []bpf.Instruction {
	var a asm
	kinds := len(his) + 1
	// The kind: the last whose lower bound the frame exceeds.
	a.add(bpf.LoadExtension{Num: bpf.ExtLen})
	for i := len(his) - 1; i >= 0; i-- {
		a.jump(bpf.JumpGreaterThan, uint32(his[i]-14), false, fmt.Sprintf("kind%d", i+1), "")
	}
	a.add(bpf.LoadConstant{Dst: bpf.RegA, Val: 0})
	a.goTo("store")
	for k := 1; k < kinds; k++ {
		a.mark(fmt.Sprintf("kind%d", k))
		a.add(bpf.LoadConstant{Dst: bpf.RegA, Val: uint32(k)})
		a.goTo("store")
	}
	a.mark("store")
	a.add(bpf.StoreScratch{Src: bpf.RegA, N: 0})
	if mode != FanoutHash {
		a.add(bpf.LoadExtension{Num: bpf.ExtCPUID})
	} else {
		flowHash(&a)
	}
	a.add(bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: uint32(workers)},
		bpf.ALUOpConstant{Op: bpf.ALUOpMul, Val: uint32(kinds)},
		bpf.LoadScratch{Dst: bpf.RegX, N: 0},
		bpf.ALUOpX{Op: bpf.ALUOpAdd},
		bpf.RetA{})
	return a.assemble()
}

// flowHash leaves in A a hash of an IPv4 or IPv6 frame's addresses, and
// for TCP and UDP (IPv6: right after the fixed header) of its ports, the
// same in both directions of a flow; 0 for anything else (ARP). An IPv6
// fragment (or a packet with extension headers) is hashed on its
// addresses alone, so every fragment of a datagram reaches one worker
// (golvs reassembles IPv6 itself).
func flowHash(a *asm) {
	a.add(bpf.LoadConstant{Dst: bpf.RegA, Val: 0}, bpf.StoreScratch{Src: bpf.RegA, N: 1},
		bpf.LoadExtension{Num: bpf.ExtProto})
	a.jump(bpf.JumpEqual, 0x86dd, false, "ip6", "")
	a.jump(bpf.JumpNotEqual, 0x0800, false, "mix", "")
	a.add(bpf.LoadExtension{Num: bpf.ExtLen})
	a.jump(bpf.JumpLessThan, 20, false, "mix", "")
	a.add(bpf.LoadAbsolute{Off: 12, Size: 4}, bpf.StoreScratch{Src: bpf.RegA, N: 1},
		bpf.LoadAbsolute{Off: 16, Size: 4}, bpf.LoadScratch{Dst: bpf.RegX, N: 1},
		bpf.ALUOpX{Op: bpf.ALUOpXor}, bpf.StoreScratch{Src: bpf.RegA, N: 1},
		bpf.LoadAbsolute{Off: 9, Size: 1})
	a.jump(bpf.JumpEqual, 6, false, "ports", "")
	a.jump(bpf.JumpNotEqual, 17, false, "mix", "")
	a.mark("ports")
	// The ports only when the frame holds them past the header.
	a.add(bpf.LoadMemShift{Off: 0}, bpf.TXA{}, bpf.ALUOpConstant{Op: bpf.ALUOpAdd, Val: 4}, bpf.TAX{},
		bpf.LoadExtension{Num: bpf.ExtLen})
	a.jump(bpf.JumpLessThan, 0, true, "mix", "")
	// (sport<<16 | dport) folded to 16 bits: sport^dport, symmetric.
	a.add(bpf.LoadMemShift{Off: 0}, bpf.LoadIndirect{Off: 0, Size: 4},
		bpf.StoreScratch{Src: bpf.RegA, N: 2}, bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 16},
		bpf.LoadScratch{Dst: bpf.RegX, N: 2}, bpf.ALUOpX{Op: bpf.ALUOpXor},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xffff},
		bpf.LoadScratch{Dst: bpf.RegX, N: 1}, bpf.ALUOpX{Op: bpf.ALUOpXor},
		bpf.StoreScratch{Src: bpf.RegA, N: 1})
	a.goTo("mix")
	// IPv6: the eight address words folded, then the ports.
	a.mark("ip6")
	a.add(bpf.LoadExtension{Num: bpf.ExtLen})
	a.jump(bpf.JumpLessThan, 40, false, "mix", "")
	a.add(bpf.LoadAbsolute{Off: 8, Size: 4}, bpf.StoreScratch{Src: bpf.RegA, N: 1})
	for off := uint32(12); off < 40; off += 4 {
		a.add(bpf.LoadAbsolute{Off: off, Size: 4}, bpf.LoadScratch{Dst: bpf.RegX, N: 1},
			bpf.ALUOpX{Op: bpf.ALUOpXor}, bpf.StoreScratch{Src: bpf.RegA, N: 1})
	}
	a.add(bpf.LoadAbsolute{Off: 6, Size: 1})
	a.jump(bpf.JumpEqual, 6, false, "ports6", "")
	a.jump(bpf.JumpNotEqual, 17, false, "mix", "")
	a.mark("ports6")
	a.add(bpf.LoadExtension{Num: bpf.ExtLen})
	a.jump(bpf.JumpLessThan, 44, false, "mix", "")
	a.add(bpf.LoadAbsolute{Off: 40, Size: 4},
		bpf.StoreScratch{Src: bpf.RegA, N: 2}, bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 16},
		bpf.LoadScratch{Dst: bpf.RegX, N: 2}, bpf.ALUOpX{Op: bpf.ALUOpXor},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xffff},
		bpf.LoadScratch{Dst: bpf.RegX, N: 1}, bpf.ALUOpX{Op: bpf.ALUOpXor},
		bpf.StoreScratch{Src: bpf.RegA, N: 1})
	a.mark("mix")
	// h ^= h>>16; h *= 0x9e3779b1; h >>= 16: every input bit reaches the
	// bits the modulo keeps.
	a.add(bpf.LoadScratch{Dst: bpf.RegA, N: 1}, bpf.StoreScratch{Src: bpf.RegA, N: 2},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 16}, bpf.LoadScratch{Dst: bpf.RegX, N: 2},
		bpf.ALUOpX{Op: bpf.ALUOpXor}, bpf.ALUOpConstant{Op: bpf.ALUOpMul, Val: 0x9e3779b1},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 16})
}

// asm builds a classic BPF program with forward jumps to labels.
type asm struct {
	ins    []bpf.Instruction
	jumps  map[int][2]string // instruction index -> true, false labels ("": next)
	labels map[string]int
}

func (a *asm) add(ins ...bpf.Instruction) { a.ins = append(a.ins, ins...) }

func (a *asm) mark(l string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[l] = len(a.ins)
}

// jump adds a conditional jump on A against val (or X when x is set).
func (a *asm) jump(c bpf.JumpTest, val uint32, x bool, t, f string) {
	if a.jumps == nil {
		a.jumps = map[int][2]string{}
	}
	a.jumps[len(a.ins)] = [2]string{t, f}
	if x {
		a.add(bpf.JumpIfX{Cond: c})
	} else {
		a.add(bpf.JumpIf{Cond: c, Val: val})
	}
}

func (a *asm) goTo(l string) {
	if a.jumps == nil {
		a.jumps = map[int][2]string{}
	}
	a.jumps[len(a.ins)] = [2]string{l, ""}
	a.add(bpf.Jump{})
}

// skip8 is a conditional jump's skip, which classic BPF keeps in a byte.
func skip8(n uint32) uint8 {
	if n > 255 {
		panic("netio: BPF program: a conditional jump over more than 255 instructions")
	}
	return uint8(n)
}

// assemble resolves the labels (forward only, as classic BPF jumps are).
func (a *asm) assemble() []bpf.Instruction {
	skip := func(from int, l string) uint32 {
		if l == "" {
			return 0
		}
		to, ok := a.labels[l]
		if !ok || to <= from {
			panic("netio: fanout program: bad label " + l)
		}
		return uint32(to - from - 1)
	}
	out := append([]bpf.Instruction(nil), a.ins...)
	for i, j := range a.jumps {
		switch ins := out[i].(type) {
		case bpf.Jump:
			ins.Skip = skip(i, j[0])
			out[i] = ins
		case bpf.JumpIf:
			ins.SkipTrue, ins.SkipFalse = skip8(skip(i, j[0])), skip8(skip(i, j[1]))
			out[i] = ins
		case bpf.JumpIfX:
			ins.SkipTrue, ins.SkipFalse = skip8(skip(i, j[0])), skip8(skip(i, j[1]))
			out[i] = ins
		}
	}
	return out
}
