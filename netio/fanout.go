package netio

import (
	"fmt"
	"sync"

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
}

type fanoutKey struct {
	ifindex int
	tier    int
}

// NewFanout makes an empty set of fanout groups.
func NewFanout(mode FanoutMode) *Fanout {
	return &Fanout{Mode: mode, ids: map[fanoutKey]uint16{}}
}

func (f *Fanout) join(fd, ifindex, tier int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	typ := unix.PACKET_FANOUT_CPU
	if f.Mode == FanoutHash {
		typ = unix.PACKET_FANOUT_HASH
	}
	typ |= unix.PACKET_FANOUT_FLAG_DEFRAG
	k := fanoutKey{ifindex, tier}
	if id, ok := f.ids[k]; ok {
		return unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, int(id)|typ<<16)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, (typ|unix.PACKET_FANOUT_FLAG_UNIQUEID)<<16); err != nil {
		return err
	}
	v, err := unix.GetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT)
	if err != nil {
		return err
	}
	f.ids[k] = uint16(v)
	return nil
}
