// Package netio moves Ethernet frames between the wire and golvs: AF_PACKET
// receive rings (TPACKET_V3, shared by workers with PACKET_FANOUT), a
// classic BPF filter in the kernel so that only frames golvs must handle
// are copied up, batched transmit with sendmmsg, and next-hop MAC
// resolution (the kernel's neighbour table over netlink, and ARP).
//
// Frames carry a virtio-net header (PACKET_VNET_HDR) in both directions, so
// checksum-offloaded and GSO/GRO frames pass through whole: netio never
// completes a checksum or segments a packet itself.
//
// netio never decides anything about a frame; it must never block the
// packet path on a slow consumer, and never hands a frame up that the ring
// may still overwrite.
package netio

import (
	"errors"
	"fmt"
	"net"

	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// VnetHdrLen is the size of struct virtio_net_hdr.
const VnetHdrLen = 10

// virtio_net_hdr flags and GSO types.
const (
	VnetNeedsCsum = 1
	VnetDataValid = 2
	GSONone       = 0
	GSOTCPv4      = 1
	GSOUDP        = 3
	GSOTCPv6      = 4
)

// Headroom reserved in front of every received frame (PACKET_RESERVE), so a
// tunnel header can be prepended in place.
const Headroom = 64

// RingConfig sizes a receive ring. Zero values take defaults.
type RingConfig struct {
	BlockSize    int           // default 1 MiB: holds a 64 KiB GSO frame whole
	Blocks       int           // default 16
	BlockTimeout time.Duration // how long the kernel fills a block before handing it over; default 1ms
	FanoutID     uint16        // 0: no fanout
	Filter       []bpf.RawInstruction
	// Version is the ring layout: 3 (TPACKET_V3, the default: the kernel
	// fills whole blocks, which batches well but hands a block over only
	// when it is full or BlockTimeout, at least 1 ms, has passed) or 2
	// (TPACKET_V2: one slot per frame, each handed over at once, for low
	// latency; the worker still takes every ready frame in one pass).
	Version int
	// Frames is the number of frame slots of a version 2 ring (default
	// 128); each slot holds a 64 KiB GSO frame whole.
	Frames int
}

// v2FrameSize is a version 2 ring's slot: header, reserve, virtio header
// and a 64 KiB frame, rounded to pages.
const v2FrameSize = 17 * 4096

// Frame is one received frame, valid until the ring block it sits in is
// released. Data starts at the Ethernet header; Vnet is the 10-byte virtio
// header just in front of it, and Room the headroom in front of that.
type Frame struct {
	Data    []byte
	Vnet    []byte
	IfIndex int
	Trunc   bool // the frame was longer than the ring could hold
	// PktType is the kernel's classification of the destination MAC
	// (sll_pkttype): PacketHost, or another host's unicast, broadcast,
	// multicast. VLAN is the 802.1Q tag the kernel stripped (veth and
	// most NICs take it out of the frame), valid when HasVLAN is set.
	PktType uint8
	HasVLAN bool
	VLAN    uint16 // TCI: priority, DEI and VLAN ID
	room    []byte
}

// Packet types (sll_pkttype), as the kernel classifies a received frame by
// its destination MAC.
const (
	PacketHost      = unix.PACKET_HOST
	PacketBroadcast = unix.PACKET_BROADCAST
	PacketMulticast = unix.PACKET_MULTICAST
	PacketOtherHost = unix.PACKET_OTHERHOST
)

// Buf returns the frame with its virtio header in front, as Send takes it.
func (f *Frame) Buf() []byte {
	return unsafe.Slice(&f.Vnet[0], VnetHdrLen+len(f.Data))
}

// Grow extends the frame n bytes into its headroom (to prepend an outer
// header) and returns the new frame start; Vnet moves with it. It returns
// false when there is not enough room.
func (f *Frame) Grow(n int) bool {
	if len(f.room) < n {
		return false
	}
	off := len(f.room) - n
	var hdr [VnetHdrLen]byte
	copy(hdr[:], f.Vnet)
	base := unsafe.Slice(&f.room[0], len(f.room)+VnetHdrLen+len(f.Data))
	f.Vnet = base[off : off+VnetHdrLen]
	copy(f.Vnet, hdr[:])
	f.Data = base[off+VnetHdrLen:]
	f.room = f.room[:off]
	return true
}

// Ring is one TPACKET_V3 receive socket and its mmap'd ring.
type Ring struct {
	fd      int
	ifindex int
	mem     []byte
	bsize   int
	nblocks int
	cur     int
	v2      bool // TPACKET_V2: bsize is the frame slot, nblocks the slots
	pfd     [1]unix.PollFd
	closed  atomic.Bool
	// Drops counts frames the kernel dropped because the ring was full.
}

// Errors.
var (
	ErrNoInterface = errors.New("netio: no such interface")
	ErrPermission  = errors.New("netio: permission denied (golvs needs root or CAP_NET_RAW and CAP_NET_ADMIN)")
)

func opErr(op, ifname string, err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%s on %s: %w", op, ifname, ErrPermission)
	}
	return fmt.Errorf("netio: %s on %s: %w", op, ifname, err)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// InterfaceByName wraps net.InterfaceByName with a clear error.
func InterfaceByName(name string) (*net.Interface, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %q", ErrNoInterface, name)
	}
	return ifi, nil
}

// OpenRing opens a receive ring on an interface. The filter is attached
// before the socket is bound, so no unfiltered frame is ever queued.
func OpenRing(ifname string, c RingConfig) (*Ring, error) {
	ifi, err := InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	if c.BlockSize == 0 {
		c.BlockSize = 1 << 20
	}
	if c.Blocks == 0 {
		c.Blocks = 16
	}
	if c.BlockTimeout == 0 {
		c.BlockTimeout = time.Millisecond
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, opErr("socket", ifname, err)
	}
	r := &Ring{fd: fd, ifindex: ifi.Index, bsize: c.BlockSize, nblocks: c.Blocks}
	fail := func(op string, err error) (*Ring, error) {
		unix.Close(fd)
		return nil, opErr(op, ifname, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fail("PACKET_VNET_HDR", err)
	}
	ver := unix.TPACKET_V3
	if c.Version == 2 {
		ver = unix.TPACKET_V2
		r.v2 = true
	} else if c.Version != 0 && c.Version != 3 {
		return fail("PACKET_VERSION", fmt.Errorf("ring version %d (allowed: 2 or 3)", c.Version))
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, ver); err != nil {
		return fail("PACKET_VERSION", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_RESERVE, Headroom); err != nil {
		return fail("PACKET_RESERVE", err)
	}
	if c.Filter != nil {
		if err := attach(fd, c.Filter); err != nil {
			return fail("SO_ATTACH_FILTER", err)
		}
	}
	if r.v2 {
		if c.Frames <= 0 {
			c.Frames = 128
		}
		c.BlockSize, c.Blocks = v2FrameSize, c.Frames
		r.bsize, r.nblocks = c.BlockSize, c.Blocks
		req := unix.TpacketReq{Block_size: v2FrameSize, Block_nr: uint32(c.Frames), Frame_size: v2FrameSize, Frame_nr: uint32(c.Frames)}
		if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
			return fail("PACKET_RX_RING", err)
		}
	} else {
		req := unix.TpacketReq3{
			Block_size:     uint32(c.BlockSize),
			Block_nr:       uint32(c.Blocks),
			Frame_size:     2048,
			Frame_nr:       uint32(c.BlockSize / 2048 * c.Blocks),
			Retire_blk_tov: uint32(c.BlockTimeout / time.Millisecond),
		}
		if req.Retire_blk_tov == 0 {
			req.Retire_blk_tov = 1
		}
		if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
			return fail("PACKET_RX_RING", err)
		}
	}
	mem, err := unix.Mmap(fd, 0, c.BlockSize*c.Blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_LOCKED|unix.MAP_POPULATE)
	if err != nil {
		mem, err = unix.Mmap(fd, 0, c.BlockSize*c.Blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return fail("mmap", err)
		}
	}
	r.mem = mem
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Munmap(mem)
		return fail("bind", err)
	}
	if c.FanoutID != 0 {
		v := int(c.FanoutID) | (unix.PACKET_FANOUT_HASH|unix.PACKET_FANOUT_FLAG_DEFRAG)<<16
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, v); err != nil {
			unix.Munmap(mem)
			return fail("PACKET_FANOUT", err)
		}
	}
	r.pfd[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN | unix.POLLERR}
	return r, nil
}

// IfIndex returns the ring's interface index.
func (r *Ring) IfIndex() int { return r.ifindex }

// SetFilter replaces the socket's BPF filter atomically.
func (r *Ring) SetFilter(f []bpf.RawInstruction) error {
	return attach(r.fd, f)
}

func attach(fd int, f []bpf.RawInstruction) error {
	if len(f) == 0 {
		return errors.New("empty filter")
	}
	p := unix.SockFprog{Len: uint16(len(f)), Filter: (*unix.SockFilter)(unsafe.Pointer(&f[0]))}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &p)
}

// Offsets in struct tpacket_block_desc and struct tpacket3_hdr.
const (
	bdStatus   = 8
	bdNumPkts  = 12
	bdFirstOff = 16
	hNext      = 0
	hSnaplen   = 12
	hLen       = 16
	hStatus    = 20
	hMac       = 24
	hVLAN      = 32 // hv1.tp_vlan_tci (after tp_rxhash)
)

func (r *Ring) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&r.mem[off])) }

func loadStatus(r *Ring) uint32 {
	if r.v2 {
		return atomic.LoadUint32(r.u32(r.cur * r.bsize)) // tp_status
	}
	return atomic.LoadUint32(r.u32(r.cur*r.bsize + bdStatus))
}

// Block is one ring block handed to userspace: a batch of frames.
type Block struct {
	r    *Ring
	base int
	n    int
	i    int
	off  int
}

// Next waits up to timeout for a block of frames. ok is false on timeout or
// when the ring was closed. The block must be released before Next is
// called again.
func (r *Ring) Next(timeout time.Duration, b *Block) (ok bool, err error) {
	base := r.cur * r.bsize
	off := bdStatus
	if r.v2 {
		off = 0
	}
	st := r.u32(base + off)
	if atomic.LoadUint32(st)&unix.TP_STATUS_USER == 0 {
		if r.closed.Load() {
			return false, nil
		}
		ms := int(timeout / time.Millisecond)
		r.pfd[0].Revents = 0
		_, err := unix.Poll(r.pfd[:], ms)
		if err != nil && err != unix.EINTR {
			return false, err
		}
		if atomic.LoadUint32(st)&unix.TP_STATUS_USER == 0 {
			return false, nil
		}
	}
	b.r = r
	b.base = base
	b.i = 0
	if r.v2 {
		// A "block" of a version 2 ring is the run of ready slots from
		// the cursor, at most a quarter of the ring.
		b.n = 0
		b.off = r.cur
		for b.n < r.nblocks/4+1 && atomic.LoadUint32(r.u32(((r.cur+b.n)%r.nblocks)*r.bsize))&unix.TP_STATUS_USER != 0 {
			b.n++
		}
		return true, nil
	}
	b.n = int(atomic.LoadUint32(r.u32(base + bdNumPkts)))
	b.off = base + int(*r.u32(base + bdFirstOff))
	return true, nil
}

// Offsets in struct tpacket2_hdr.
const (
	h2Len     = 4
	h2Snaplen = 8
	h2Mac     = 12
	h2VLAN    = 24 // tp_vlan_tci
)

// fillMeta sets the frame's packet type, from the struct sockaddr_ll that
// follows the tpacket header at sll (sll_pkttype at offset 10), and its
// VLAN tag from the header's status and tp_vlan_tci.
func (r *Ring) fillMeta(f *Frame, sll int, status uint32, vlan int) {
	f.PktType = r.mem[sll+10]
	f.HasVLAN = status&unix.TP_STATUS_VLAN_VALID != 0
	f.VLAN = 0
	if f.HasVLAN {
		f.VLAN = uint16(*r.u32(vlan))
	}
}

func (b *Block) frameV2(f *Frame) bool {
	if b.i >= b.n {
		return false
	}
	r := b.r
	h := ((b.off + b.i) % r.nblocks) * r.bsize
	r.fill(f, h, unix.SizeofTpacket2Hdr, h2Snaplen, h2Len, h2Mac)
	r.fillMeta(f, h+unix.SizeofTpacket2Hdr, *r.u32(h), h+h2VLAN)
	b.i++
	return true
}

// fill points f at the frame whose tpacket header is at h (the offsets of
// its snaplen, len and mac fields differ between versions).
func (r *Ring) fill(f *Frame, h, hdrSize, snapOff, lenOff, macOff int) {
	snap := int(*r.u32(h + snapOff))
	wire := int(*r.u32(h + lenOff))
	mac := h + int(*(*uint16)(unsafe.Pointer(&r.mem[h+macOff])))
	f.Data = r.mem[mac : mac+snap : mac+snap]
	f.Vnet = r.mem[mac-VnetHdrLen : mac : mac]
	// The room in front of the virtio header: what PACKET_RESERVE left
	// beyond the tpacket header.
	start := h + hdrSize
	if mac-VnetHdrLen > start {
		f.room = r.mem[start : mac-VnetHdrLen : mac-VnetHdrLen]
	} else {
		f.room = nil
	}
	f.IfIndex = r.ifindex
	f.Trunc = snap < wire
}

// Len returns the number of frames in the block.
func (b *Block) Len() int { return b.n }

// Frame fills f with the block's next frame; false when none is left.
func (b *Block) Frame(f *Frame) bool {
	if b.r.v2 {
		return b.frameV2(f)
	}
	if b.i >= b.n {
		return false
	}
	r := b.r
	h := b.off
	r.fill(f, h, unix.SizeofTpacket3Hdr, hSnaplen, hLen, hMac)
	r.fillMeta(f, h+unix.SizeofTpacket3Hdr, *r.u32(h + hStatus), h+hVLAN)
	b.i++
	b.off = h + int(*r.u32(h + hNext))
	return true
}

// Release hands the block back to the kernel.
func (b *Block) Release() {
	r := b.r
	if r.v2 {
		for i := 0; i < b.n; i++ {
			atomic.StoreUint32(r.u32(((b.off+i)%r.nblocks)*r.bsize), unix.TP_STATUS_KERNEL)
		}
		r.cur = (r.cur + b.n) % r.nblocks
		return
	}
	atomic.StoreUint32(r.u32(b.base+bdStatus), unix.TP_STATUS_KERNEL)
	r.cur = (r.cur + 1) % r.nblocks
}

// Stats returns the kernel's counters for the socket (packets seen and
// dropped since the last call).
func (r *Ring) Stats() (packets, drops uint32, err error) {
	s, err := unix.GetsockoptTpacketStatsV3(r.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return 0, 0, err
	}
	return s.Packets, s.Drops, nil
}

// Close closes the ring. A worker blocked in Next returns within its
// poll timeout.
func (r *Ring) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	err := unix.Close(r.fd)
	unix.Munmap(r.mem)
	return err
}
