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
)

func (m FanoutMode) String() string {
	if m == FanoutHash {
		return "hash"
	}
	return "cpu"
}

// ParseFanoutMode reads "cpu" or "hash".
func ParseFanoutMode(s string) (FanoutMode, error) {
	switch s {
	case "cpu":
		return FanoutCPU, nil
	case "hash":
		return FanoutHash, nil
	}
	return 0, fmt.Errorf("netio: fanout mode %q (allowed: cpu, hash)", s)
}

// Fanout is the set of fanout groups one set of workers shares: a group
// per interface and socket kind (tiny, MTU and aggregate slots). The first socket
// of each group gets a group id from the kernel that no other process
// uses (PACKET_FANOUT_FLAG_UNIQUEID); the rest join it. Every group also
// asks the kernel to reassemble IPv4 fragments before it picks a socket
// (PACKET_FANOUT_FLAG_DEFRAG), so a datagram's fragments reach one worker
// whole.
//
// The kernel indexes a group's sockets in the order they joined, so
// workers that open their rings in the same order get the same index in
// every group: worker i receives what CPU i (FanoutCPU) or flow-hash
// bucket i (FanoutHash) gets, on every interface.
type Fanout struct {
	Mode FanoutMode
	mu   sync.Mutex
	ids  map[fanoutKey]uint16
	n    map[fanoutKey]int // members joined
}

type fanoutKey struct {
	ifindex int
	tier    int
}

// NewFanout makes an empty set of fanout groups.
func NewFanout(mode FanoutMode) *Fanout {
	return &Fanout{Mode: mode, ids: map[fanoutKey]uint16{}, n: map[fanoutKey]int{}}
}

// join puts a ring's socket into its group. With FanoutCPU the three
// sockets of every version 2 ring of an interface (sh.tier 0, 1, 2) share
// one group, whose classic BPF program (PACKET_FANOUT_CBPF) picks the
// socket from the frame's length and the receiving CPU, as three groups
// (one per tier) would with PACKET_FANOUT_CPU: the kernel then runs one
// fanout hook per frame, not three (each one a reference taken on the
// frame, a fragment check that copies its IPv4 header, a pick and a
// filter run, on every frame: about a third of what the receive path
// spent on its way to the rings, in a profile under flood).
func (f *Fanout) join(fd, ifindex int, sh *sockShape) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	merged := sh.v2 && f.Mode == FanoutCPU
	typ := unix.PACKET_FANOUT_CPU
	switch {
	case merged:
		typ = unix.PACKET_FANOUT_CBPF
	case f.Mode == FanoutHash:
		typ = unix.PACKET_FANOUT_HASH
	}
	typ |= unix.PACKET_FANOUT_FLAG_DEFRAG
	k := fanoutKey{ifindex, sh.tier}
	if merged {
		k.tier = -1
	}
	if id, ok := f.ids[k]; ok {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, int(id)|typ<<16); err != nil {
			return err
		}
	} else {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, (typ|unix.PACKET_FANOUT_FLAG_UNIQUEID)<<16); err != nil {
			return err
		}
		v, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT)
		if err != nil {
			return err
		}
		f.ids[k] = uint16(v)
	}
	f.n[k]++
	if !merged {
		return nil
	}
	// The program follows the members: worker w's sockets are w*3+tier
	// (the kernel indexes members in the order they joined, and each
	// ring opens its tiers in order).
	prog, err := tierProgram(max(f.n[k]/maxSocks, 1), sh.tierHi)
	if err != nil {
		return err
	}
	p := unix.SockFprog{Len: uint16(len(prog)), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
	return unix.SetsockoptSockFprog(fd, unix.SOL_PACKET, unix.PACKET_FANOUT_DATA, &p)
}

// tierProgram is the fanout program of a merged group of workers rings:
// the socket of the frame's tier (by length: up to hi[0] bytes, up to
// hi[1], longer) in the ring of the worker of the receiving CPU (CPU
// modulo workers, as PACKET_FANOUT_CPU picks). hi counts the Ethernet
// header, as the sockets' filters do; the fanout program sees the frame
// without it.
func tierProgram(workers int, hi [2]int) ([]bpf.RawInstruction, error) {
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtLen},                                                 // 0: A = length past the MAC header
		bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: uint32(hi[1] - ethHdrLen), SkipTrue: 5}, // 1: -> 7
		bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: uint32(hi[0] - ethHdrLen), SkipTrue: 2}, // 2: -> 5
		bpf.LoadConstant{Dst: bpf.RegX, Val: 0},                                            // 3: tiny
		bpf.Jump{Skip: 3},                                                                  // 4: -> 8
		bpf.LoadConstant{Dst: bpf.RegX, Val: 1},                                            // 5: MTU
		bpf.Jump{Skip: 1},                                                                  // 6: -> 8
		bpf.LoadConstant{Dst: bpf.RegX, Val: 2},                                            // 7: aggregates
		bpf.LoadExtension{Num: bpf.ExtCPUID},                                               // 8: A = CPU
		bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: uint32(workers)},                          // 9
		bpf.ALUOpConstant{Op: bpf.ALUOpMul, Val: maxSocks},                                 // 10
		bpf.ALUOpX{Op: bpf.ALUOpAdd},                                                       // 11: + tier
		bpf.RetA{},                                                                         // 12
	})
}

// ethHdrLen is the MAC header the fanout program does not see.
const ethHdrLen = 14
