// Package netio moves Ethernet frames between the wire and golvs: AF_PACKET
// receive rings (TPACKET_V2 slots handed over one frame at a time by
// default, or TPACKET_V3 blocks), shared by workers with PACKET_FANOUT; a
// classic BPF filter in the kernel so that only frames golvs must handle
// are copied up; batched, non-blocking transmit with sendmmsg; an
// nftables drop rule at netdev ingress so the kernel does not also run the
// frames golvs forwards through its IP stack; and next-hop MAC resolution
// (the kernel's neighbour table over netlink, and ARP).
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

// RingConfig shapes the receive path of one interface. Zero values take
// defaults.
//
// Version 2 (the default) is two TPACKET_V2 sockets: one with Frames slots
// sized for the interface's MTU, which the kernel hands over frame by frame
// (no timer: a frame is in userspace as soon as the worker looks), and one
// with BigFrames slots of 68 KiB for what does not fit an MTU slot (GSO and
// GRO aggregates, datagrams the kernel reassembled). A length test in front
// of the socket filter sends each frame to exactly one of the two.
//
// Version 3 is one TPACKET_V3 socket of Blocks blocks: the kernel fills a
// whole block before handing it over, or gives up after BlockTimeout (at
// least 1 ms). That batches well under flood, but at ordinary rates every
// frame waits for the timer.
type RingConfig struct {
	Version int // 2 (default) or 3

	Frames    int // version 2: MTU slots (default: as many as fit 8 MiB)
	FrameSize int // version 2: slot size in bytes (default: from the MTU, at least 2048)
	BigFrames int // version 2: 68 KiB slots for aggregates (default 60, 4 MiB)

	BlockSize    int           // version 3: default 1 MiB (holds a 64 KiB GSO frame whole)
	Blocks       int           // version 3: default 16
	BlockTimeout time.Duration // version 3: default 1 ms

	// Fanout, when set, puts the ring's sockets into the fanout groups
	// it keeps for the interface, so several workers share its frames.
	Fanout *Fanout
	Filter []bpf.RawInstruction
	// Protocol is the EtherType taken (host order); 0: every frame
	// (ETH_P_ALL, seen before the kernel's netdev ingress hook).
	Protocol uint16
}

// Sizes of a version 2 ring.
const (
	// v2MacRoom is what a V2 slot spends in front of the frame: the
	// tpacket2 header and sockaddr_ll (52, aligned with a 16-byte MAC
	// allowance to 80), PACKET_RESERVE and the virtio header (the kernel
	// puts the frame at 140 for a 14-byte Ethernet header), plus slack.
	v2MacRoom     = 160
	minFrameSize  = 2048
	smallRingMem  = 8 << 20
	minFrames     = 256
	maxFrames     = 1 << 20
	smallBlock    = 64 << 10
	bigBlock      = 1 << 20
	bigFrameSize  = (bigBlock / 15) &^ 15 // 15 slots of 69,904 bytes a block
	bigPerBlock   = bigBlock / bigFrameSize
	defaultBigNum = 4 * bigPerBlock
)

// Frame is one received frame, valid until the block it sits in is
// released. Data starts at the Ethernet header; Vnet is the 10-byte virtio
// header just in front of it, and Room the headroom in front of that.
type Frame struct {
	Data    []byte
	Vnet    []byte
	IfIndex int
	Trunc   bool // the frame was longer than the ring could hold
	// PktType is the kernel's classification of the frame by its
	// destination MAC (sll_pkttype): PacketHost, PacketBroadcast,
	// PacketMulticast, PacketOtherHost, PacketOutgoing.
	PktType uint8
	// VLANValid says the NIC (or veth) stripped an 802.1Q tag into the
	// packet's metadata: VLANTCI holds it, and Data is untagged.
	VLANValid bool
	VLANTCI   uint16
	room      []byte
}

// Packet types (sll_pkttype).
const (
	PacketHost      = unix.PACKET_HOST
	PacketBroadcast = unix.PACKET_BROADCAST
	PacketMulticast = unix.PACKET_MULTICAST
	PacketOtherHost = unix.PACKET_OTHERHOST
	PacketOutgoing  = unix.PACKET_OUTGOING
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

// Ring is the receive path of one interface: one or two packet sockets
// with their mmap'd rings. A Ring belongs to one worker.
type Ring struct {
	ifindex int
	socks   []*rxSock // version 2: the aggregate ring, then the MTU ring
	next    int       // the socket TryNext looks at first (they take turns)
	closed  atomic.Bool
}

// rxSock is one packet socket and its ring.
type rxSock struct {
	fd      int
	mem     []byte
	v2      bool
	fsize   int // version 2: slot size
	fpb     int // version 2: slots per block
	bsize   int // block size
	nblocks int // version 3: blocks
	nframes int // version 2: slots
	cur     int // version 2: next slot; version 3: next block
	gate    int // version 2: the longest frame the filter lets in (0: any)
	big     bool
	ifindex int
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

// FrameSizeFor is the version 2 slot size for an MTU: the smallest power
// of two that holds the slot's headers and a VLAN-tagged frame.
func FrameSizeFor(mtu int) int {
	n := minFrameSize
	for n < mtu+14+4+v2MacRoom {
		n <<= 1
	}
	return n
}

// OpenRing opens the receive path of an interface. The filter is attached
// before the sockets are bound, so no unfiltered frame is ever queued.
func OpenRing(ifname string, c RingConfig) (*Ring, error) {
	ifi, err := InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	r := &Ring{ifindex: ifi.Index}
	switch c.Version {
	case 0, 2:
		if c.FrameSize == 0 {
			c.FrameSize = FrameSizeFor(ifi.MTU)
		}
		if c.FrameSize < minFrameSize || c.FrameSize > bigBlock || c.FrameSize&(c.FrameSize-1) != 0 {
			return nil, opErr("PACKET_RX_RING", ifname, fmt.Errorf("frame size %d (allowed: a power of two, %d..%d)", c.FrameSize, minFrameSize, bigBlock))
		}
		if c.Frames == 0 {
			c.Frames = max(smallRingMem/c.FrameSize, minFrames)
		}
		if c.Frames < 16 || c.Frames > maxFrames {
			return nil, opErr("PACKET_RX_RING", ifname, fmt.Errorf("%d frames (allowed: 16..%d)", c.Frames, maxFrames))
		}
		if c.BigFrames == 0 {
			c.BigFrames = defaultBigNum
		}
		if c.BigFrames < 1 || c.BigFrames > 4096 {
			return nil, opErr("PACKET_RX_RING", ifname, fmt.Errorf("%d aggregate frames (allowed: 1..4096)", c.BigFrames))
		}
		gate := c.FrameSize - v2MacRoom
		big, err := openSock(ifname, ifi.Index, c, &sockShape{v2: true, fsize: bigFrameSize, bsize: bigBlock, n: c.BigFrames, gate: -gate, big: true})
		if err != nil {
			return nil, err
		}
		r.socks = append(r.socks, big)
		small, err := openSock(ifname, ifi.Index, c, &sockShape{v2: true, fsize: c.FrameSize, bsize: max(c.FrameSize, smallBlock), n: c.Frames, gate: gate})
		if err != nil {
			big.close()
			return nil, err
		}
		r.socks = append(r.socks, small)
	case 3:
		if c.BlockSize == 0 {
			c.BlockSize = 1 << 20
		}
		if c.Blocks == 0 {
			c.Blocks = 16
		}
		if c.BlockTimeout == 0 {
			c.BlockTimeout = time.Millisecond
		}
		s, err := openSock(ifname, ifi.Index, c, &sockShape{bsize: c.BlockSize, n: c.Blocks})
		if err != nil {
			return nil, err
		}
		r.socks = append(r.socks, s)
	default:
		return nil, opErr("PACKET_VERSION", ifname, fmt.Errorf("ring version %d (allowed: 2 or 3)", c.Version))
	}
	return r, nil
}

// sockShape is one socket's ring geometry. gate > 0 lets in frames up to
// gate bytes, gate < 0 frames longer than -gate, 0 every frame.
type sockShape struct {
	v2    bool
	fsize int
	bsize int
	n     int // version 2: frames; version 3: blocks
	gate  int
	big   bool
}

func openSock(ifname string, ifindex int, c RingConfig, sh *sockShape) (*rxSock, error) {
	proto := uint16(unix.ETH_P_ALL)
	if c.Protocol != 0 {
		proto = c.Protocol
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, opErr("socket", ifname, err)
	}
	s := &rxSock{fd: fd, v2: sh.v2, gate: sh.gate, big: sh.big, ifindex: ifindex}
	fail := func(op string, err error) (*rxSock, error) {
		if s.mem != nil {
			unix.Munmap(s.mem)
		}
		unix.Close(fd)
		return nil, opErr(op, ifname, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fail("PACKET_VNET_HDR", err)
	}
	ver := unix.TPACKET_V3
	if sh.v2 {
		ver = unix.TPACKET_V2
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, ver); err != nil {
		return fail("PACKET_VERSION", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_RESERVE, Headroom); err != nil {
		return fail("PACKET_RESERVE", err)
	}
	// Until the caller's filter is there, the socket takes nothing.
	filter := c.Filter
	if filter == nil {
		filter = acceptAll
	}
	if err := s.setFilter(filter); err != nil {
		return fail("SO_ATTACH_FILTER", err)
	}
	var size int
	if sh.v2 {
		s.fsize, s.bsize = sh.fsize, sh.bsize
		s.fpb = s.bsize / s.fsize
		nblocks := (sh.n + s.fpb - 1) / s.fpb
		s.nframes = nblocks * s.fpb
		req := unix.TpacketReq{Block_size: uint32(s.bsize), Block_nr: uint32(nblocks), Frame_size: uint32(s.fsize), Frame_nr: uint32(s.nframes)}
		if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
			return fail("PACKET_RX_RING", err)
		}
		size = s.bsize * nblocks
	} else {
		s.bsize, s.nblocks = sh.bsize, sh.n
		req := unix.TpacketReq3{
			Block_size:     uint32(s.bsize),
			Block_nr:       uint32(s.nblocks),
			Frame_size:     2048,
			Frame_nr:       uint32(s.bsize / 2048 * s.nblocks),
			Retire_blk_tov: uint32(max(c.BlockTimeout/time.Millisecond, 1)),
		}
		if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
			return fail("PACKET_RX_RING", err)
		}
		size = s.bsize * s.nblocks
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_LOCKED|unix.MAP_POPULATE)
	if err != nil {
		mem, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return fail("mmap", err)
		}
	}
	s.mem = mem
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifindex}); err != nil {
		return fail("bind", err)
	}
	if c.Fanout != nil {
		if err := c.Fanout.join(fd, ifindex, sh.big); err != nil {
			return fail("PACKET_FANOUT", err)
		}
	}
	return s, nil
}

// acceptAll is the filter of a ring opened without one.
var acceptAll = func() []bpf.RawInstruction {
	raw, _ := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 262144}})
	return raw
}()

// IfIndex returns the ring's interface index.
func (r *Ring) IfIndex() int { return r.ifindex }

// SetFilter replaces the filter of the ring's sockets, each atomically.
func (r *Ring) SetFilter(f []bpf.RawInstruction) error {
	for _, s := range r.socks {
		if err := s.setFilter(f); err != nil {
			return err
		}
	}
	return nil
}

// FilterReserve is how many instructions a ring adds in front of a filter
// (its length test); BuildFilter leaves room for them.
const FilterReserve = 3

func (s *rxSock) setFilter(f []bpf.RawInstruction) error {
	if len(f) == 0 {
		return errors.New("netio: empty filter")
	}
	if s.gate != 0 {
		// ld len; jgt gate; ret 0 (the other socket's frame); then f.
		g := make([]bpf.RawInstruction, 0, len(f)+FilterReserve)
		jt, jf := uint8(0), uint8(1) // longer than the gate: refuse
		val := uint32(s.gate)
		if s.gate < 0 {
			jt, jf, val = 1, 0, uint32(-s.gate) // not longer: refuse
		}
		g = append(g,
			bpf.RawInstruction{Op: unix.BPF_LD | unix.BPF_W | unix.BPF_LEN},
			bpf.RawInstruction{Op: unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K, Jt: jt, Jf: jf, K: val},
			bpf.RawInstruction{Op: unix.BPF_RET | unix.BPF_K, K: 0})
		f = append(g, f...)
	}
	if len(f) > maxInsns {
		return fmt.Errorf("netio: filter of %d instructions (the kernel takes %d)", len(f), maxInsns)
	}
	p := unix.SockFprog{Len: uint16(len(f)), Filter: (*unix.SockFilter)(unsafe.Pointer(&f[0]))}
	return unix.SetsockoptSockFprog(s.fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &p)
}

// Offsets in struct tpacket_block_desc, struct tpacket3_hdr and struct
// tpacket2_hdr, and of sll_pkttype in the sockaddr_ll that follows each
// header.
const (
	bdStatus   = 8
	bdNumPkts  = 12
	bdFirstOff = 16

	h3Next    = 0
	h3Snaplen = 12
	h3Len     = 16
	h3Status  = 20
	h3Mac     = 24
	h3VLANTCI = 32
	h3PktType = 48 + 10

	h2Status  = 0
	h2Len     = 4
	h2Snaplen = 8
	h2Mac     = 12
	h2VLANTCI = 24
	h2PktType = 32 + 10
)

func (s *rxSock) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&s.mem[off])) }

// slot is the offset of version 2 frame i.
func (s *rxSock) slot(i int) int { return i/s.fpb*s.bsize + i%s.fpb*s.fsize }

// ready says whether the socket has a frame (version 2) or block (version
// 3) for userspace at its cursor.
func (s *rxSock) ready() bool {
	if s.v2 {
		return atomic.LoadUint32(s.u32(s.slot(s.cur)))&unix.TP_STATUS_USER != 0
	}
	return atomic.LoadUint32(s.u32(s.cur*s.bsize+bdStatus))&unix.TP_STATUS_USER != 0
}

func (r *Ring) ready() bool {
	for _, s := range r.socks {
		if s.ready() {
			return true
		}
	}
	return false
}

// Block is a batch of frames handed to userspace: a version 3 block, or a
// run of ready version 2 slots.
type Block struct {
	s    *rxSock
	base int
	n    int
	i    int
	off  int
}

// maxRun is the most version 2 slots one Block takes.
const maxRun = MaxBatch

// take fills b from the socket's cursor, which must be ready.
func (s *rxSock) take(b *Block) {
	b.s = s
	b.i = 0
	if s.v2 {
		b.off = s.cur
		b.n = 0
		lim := min(maxRun, s.nframes/2)
		for b.n < lim && atomic.LoadUint32(s.u32(s.slot((s.cur+b.n)%s.nframes)))&unix.TP_STATUS_USER != 0 {
			b.n++
		}
		return
	}
	b.base = s.cur * s.bsize
	b.n = int(atomic.LoadUint32(s.u32(b.base + bdNumPkts)))
	b.off = b.base + int(*s.u32(b.base + bdFirstOff))
}

// TryNext fills b with the ring's next batch if one is ready, without
// waiting. A ring's sockets take turns, so a busy one never starves the
// other.
func (r *Ring) TryNext(b *Block) bool {
	if r.closed.Load() {
		return false
	}
	n := len(r.socks)
	for k := 0; k < n; k++ {
		i := r.next + k
		if i >= n {
			i -= n
		}
		if s := r.socks[i]; s.ready() {
			s.take(b)
			if r.next = i + 1; r.next == n {
				r.next = 0
			}
			return true
		}
	}
	return false
}

// Sockets returns the number of packet sockets behind the ring (a worker
// that drains it takes up to that many batches a pass).
func (r *Ring) Sockets() int { return len(r.socks) }

// Next waits up to timeout for a batch of frames. ok is false on timeout or
// when the ring was closed. The block must be released before Next is
// called again.
func (r *Ring) Next(timeout time.Duration, b *Block) (ok bool, err error) {
	if r.TryNext(b) {
		return true, nil
	}
	if r.closed.Load() {
		return false, nil
	}
	var pfd [2]unix.PollFd
	for i, s := range r.socks {
		pfd[i] = unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN | unix.POLLERR}
	}
	_, err = unix.Poll(pfd[:len(r.socks)], int(timeout/time.Millisecond))
	if err != nil && err != unix.EINTR {
		return false, err
	}
	return r.TryNext(b), nil
}

// Len returns the number of frames in the block.
func (b *Block) Len() int { return b.n }

// Frame fills f with the block's next frame; false when none is left.
func (b *Block) Frame(f *Frame) bool {
	if b.i >= b.n {
		return false
	}
	s := b.s
	if s.v2 {
		h := s.slot((b.off + b.i) % s.nframes)
		st := *s.u32(h + h2Status)
		s.fill(f, h, unix.SizeofTpacket2Hdr, h2Snaplen, h2Len, h2Mac)
		f.PktType = s.mem[h+h2PktType]
		f.VLANValid = st&unix.TP_STATUS_VLAN_VALID != 0
		f.VLANTCI = *(*uint16)(unsafe.Pointer(&s.mem[h+h2VLANTCI]))
		b.i++
		return true
	}
	h := b.off
	st := *s.u32(h + h3Status)
	s.fill(f, h, unix.SizeofTpacket3Hdr, h3Snaplen, h3Len, h3Mac)
	f.PktType = s.mem[h+h3PktType]
	f.VLANValid = st&unix.TP_STATUS_VLAN_VALID != 0
	f.VLANTCI = uint16(*s.u32(h + h3VLANTCI))
	b.i++
	b.off = h + int(*s.u32(h + h3Next))
	return true
}

// fill points f at the frame whose tpacket header is at h (the offsets of
// its snaplen, len and mac fields differ between versions).
func (s *rxSock) fill(f *Frame, h, hdrSize, snapOff, lenOff, macOff int) {
	snap := int(*s.u32(h + snapOff))
	wire := int(*s.u32(h + lenOff))
	mac := h + int(*(*uint16)(unsafe.Pointer(&s.mem[h+macOff])))
	f.Data = s.mem[mac : mac+snap : mac+snap]
	f.Vnet = s.mem[mac-VnetHdrLen : mac : mac]
	// The room in front of the virtio header: what PACKET_RESERVE left
	// beyond the tpacket header.
	start := h + hdrSize
	if mac-VnetHdrLen > start {
		f.room = s.mem[start : mac-VnetHdrLen : mac-VnetHdrLen]
	} else {
		f.room = nil
	}
	f.IfIndex = s.ifindex
	f.Trunc = snap < wire
}

// Release hands the block's frames back to the kernel.
func (b *Block) Release() {
	s := b.s
	if s == nil {
		return
	}
	if s.v2 {
		for i := 0; i < b.n; i++ {
			atomic.StoreUint32(s.u32(s.slot((b.off+i)%s.nframes)), unix.TP_STATUS_KERNEL)
		}
		s.cur = (s.cur + b.n) % s.nframes
	} else {
		atomic.StoreUint32(s.u32(b.base+bdStatus), unix.TP_STATUS_KERNEL)
		s.cur = (s.cur + 1) % s.nblocks
	}
	b.s = nil
}

// RingStats are the kernel's counters of a ring's sockets
// (PACKET_STATISTICS).
type RingStats struct {
	Packets uint64 // frames the filter let in, dropped ones included
	Drops   uint64 // frames lost because the ring was full
	Freezes uint64 // times a version 3 ring froze its queue (full, waiting for userspace)
}

// Add adds o to s.
func (s *RingStats) Add(o RingStats) {
	s.Packets += o.Packets
	s.Drops += o.Drops
	s.Freezes += o.Freezes
}

// Stats returns the kernel's counters since the last call: reading them
// resets them, so a ring's stats have one reader.
func (r *Ring) Stats() (RingStats, error) {
	var out RingStats
	if r.closed.Load() {
		return out, nil
	}
	for _, s := range r.socks {
		if s.v2 {
			st, err := unix.GetsockoptTpacketStats(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
			if err != nil {
				return out, fmt.Errorf("netio: PACKET_STATISTICS: %w", err)
			}
			out.Packets += uint64(st.Packets)
			out.Drops += uint64(st.Drops)
			continue
		}
		st, err := unix.GetsockoptTpacketStatsV3(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if err != nil {
			return out, fmt.Errorf("netio: PACKET_STATISTICS: %w", err)
		}
		out.Packets += uint64(st.Packets)
		out.Drops += uint64(st.Drops)
		out.Freezes += uint64(st.Freeze_q_cnt)
	}
	return out, nil
}

// Describe says, for logs, how the ring is laid out.
func (r *Ring) Describe() string {
	if len(r.socks) == 1 {
		s := r.socks[0]
		return fmt.Sprintf("TPACKET_V3, %d blocks of %d KiB (a block is handed over when full or after its timer)", s.nblocks, s.bsize>>10)
	}
	big, small := r.socks[0], r.socks[1]
	return fmt.Sprintf("TPACKET_V2, %d slots of %d bytes for frames up to %d bytes and %d slots of %d KiB for aggregates, each frame handed over at once", small.nframes, small.fsize, small.gate, big.nframes, big.fsize>>10)
}

func (s *rxSock) close() {
	unix.Close(s.fd)
	unix.Munmap(s.mem)
}

// Close closes the ring. A worker blocked in Next returns within its
// poll timeout.
func (r *Ring) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	for _, s := range r.socks {
		s.close()
	}
	return nil
}
