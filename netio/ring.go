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
	"sync"
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
// Version 2 (the default) is three TPACKET_V2 sockets, which the kernel
// fills frame by frame (no timer: a frame is in userspace as soon as the
// worker looks): one with TinyFrames slots of 256 bytes for frames up to 96
// bytes (TCP control segments, 64-byte floods), one with Frames slots sized
// for the interface's MTU, and one with BigFrames slots of 68 KiB for what
// an MTU slot cannot hold (GSO and GRO aggregates, datagrams the kernel
// reassembled). A length test in front of each socket's filter sends every
// frame to exactly one of them, and a worker takes them in the order the
// kernel received them (by their receive timestamps). Small slots for small
// frames keep the ring deep for floods of them: the 16 MiB of the defaults
// hold 16,384 small frames, 4,096 MTU frames and 60 aggregates.
//
// Version 3 is one TPACKET_V3 socket of Blocks blocks: the kernel fills a
// whole block before handing it over, or gives up after BlockTimeout (at
// least 1 ms). That batches well under flood, but at ordinary rates every
// frame waits for the timer.
type RingConfig struct {
	Version int // 2 (default) or 3

	TinyFrames int // version 2: 256-byte slots (default 16384, 4 MiB)
	Frames     int // version 2: MTU slots (default: as many as fit 8 MiB)
	FrameSize  int // version 2: MTU slot size in bytes (default: from the MTU, at least 2048)
	BigFrames  int // version 2: 68 KiB slots for aggregates (default 60, 4 MiB)

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
	v2MacRoom      = 160
	tinyFrameSize  = 256
	defaultTinyNum = 16384
	minFrameSize   = 2048
	smallRingMem   = 8 << 20
	minFrames      = 256
	maxFrames      = 1 << 20
	smallBlock     = 4096
	bigBlock       = 1 << 20
	bigFrameSize   = (bigBlock / 15) &^ 15 // 15 slots of 69,904 bytes a block
	bigPerBlock    = bigBlock / bigFrameSize
	defaultBigNum  = 4 * bigPerBlock
	maxSocks       = 3
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
	socks   []*rxSock // version 2: the tiny, MTU and aggregate rings
	closed  atomic.Bool
	mcMu    sync.Mutex
	mc      map[[6]byte]bool // multicast groups joined (SetMulticast)
	errs    atomic.Uint64    // socket errors the kernel reported (takeErr), since Stats last read them
	lastErr atomic.Int32
}

// takeErr reads, and so clears, the pending error of the ring's socket
// fd, which poll() reported (POLLERR). The kernel sets ENETDOWN on every
// packet socket of a link that goes down or is removed, and poll()
// reports it until it is read: a worker that did not read it would find
// its socket ready forever and never sleep again (a link down and up
// again left golvs's worker at 100% of a CPU). A link that comes back
// up delivers to the socket again by itself.
func (r *Ring) takeErr(fd int) {
	e, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil || e == 0 {
		return
	}
	r.errs.Add(1)
	r.lastErr.Store(int32(e))
}

// takeErrIf takes the error of the socket of poll entry pfd, if poll()
// reported one.
func (r *Ring) takeErrIf(pfd *unix.PollFd) {
	if pfd.Revents&unix.POLLERR != 0 {
		r.takeErr(int(pfd.Fd))
	}
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
	lo, hi  int // version 2: the filter lets in frames of lo < length <= hi (hi 0: any)
	tier    int // version 2: 0 tiny, 1 MTU, 2 aggregates (its index in its worker's share of the fanout group)
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
		if c.TinyFrames == 0 {
			c.TinyFrames = defaultTinyNum
		}
		if c.BigFrames == 0 {
			c.BigFrames = defaultBigNum
		}
		switch {
		case c.Frames < 16 || c.Frames > maxFrames:
			return nil, opErr("PACKET_RX_RING", ifname, fmt.Errorf("%d frames (allowed: 16..%d)", c.Frames, maxFrames))
		case c.TinyFrames < 16 || c.TinyFrames > maxFrames:
			return nil, opErr("PACKET_RX_RING", ifname, fmt.Errorf("%d tiny frames (allowed: 16..%d)", c.TinyFrames, maxFrames))
		case c.BigFrames < 1 || c.BigFrames > 4096:
			return nil, opErr("PACKET_RX_RING", ifname, fmt.Errorf("%d aggregate frames (allowed: 1..4096)", c.BigFrames))
		}
		tiny, mtu := tinyFrameSize-v2MacRoom, c.FrameSize-v2MacRoom
		his := []int{tiny, mtu} // the fanout program's split (fanout.go)
		for _, sh := range []*sockShape{
			{v2: true, fsize: tinyFrameSize, bsize: smallBlock, n: c.TinyFrames, lo: 0, hi: tiny, tier: 0, his: his},
			{v2: true, fsize: c.FrameSize, bsize: max(c.FrameSize, smallBlock), n: c.Frames, lo: tiny, hi: mtu, tier: 1, his: his},
			{v2: true, fsize: bigFrameSize, bsize: bigBlock, n: c.BigFrames, lo: mtu, hi: 0, tier: 2, his: his},
		} {
			sk, err := openSock(ifname, ifi.Index, c, sh)
			if err != nil {
				r.closeSocks()
				return nil, err
			}
			r.socks = append(r.socks, sk)
		}
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

// sockShape is one socket's ring geometry. A version 2 socket takes
// frames of lo < length <= hi (hi 0: no upper bound).
type sockShape struct {
	v2     bool
	fsize  int
	bsize  int
	n      int // version 2: frames; version 3: blocks
	lo, hi int
	tier   int
	his    []int // every version 2 kind's upper bound but the last
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
	s := &rxSock{fd: fd, v2: sh.v2, lo: sh.lo, hi: sh.hi, tier: sh.tier, ifindex: ifindex}
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
		if err := c.Fanout.join(fd, ifindex, sh.tier, sh.his); err != nil {
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

// SetMulticast makes the interface receive frames to the given Ethernet
// multicast addresses (joining what is new, leaving what is gone, through
// the ring's first socket: PACKET_ADD_MEMBERSHIP): the solicited-node
// groups of the IPv6 addresses golvs answers Neighbor Solicitations for,
// which a NIC's filter would otherwise drop. Memberships end with the
// socket.
func (r *Ring) SetMulticast(macs [][6]byte) error {
	r.mcMu.Lock()
	defer r.mcMu.Unlock()
	if len(r.socks) == 0 {
		return nil
	}
	want := map[[6]byte]bool{}
	for _, m := range macs {
		want[m] = true
	}
	fd := r.socks[0].fd
	mreq := func(m [6]byte) *unix.PacketMreq {
		q := &unix.PacketMreq{Ifindex: int32(r.ifindex), Type: unix.PACKET_MR_MULTICAST, Alen: 6}
		copy(q.Address[:], m[:])
		return q
	}
	for m := range r.mc {
		if !want[m] {
			_ = unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_DROP_MEMBERSHIP, mreq(m))
			delete(r.mc, m)
		}
	}
	for m := range want {
		if r.mc[m] {
			continue
		}
		if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, mreq(m)); err != nil {
			return fmt.Errorf("netio: joining multicast %x on interface %d: %w", m, r.ifindex, err)
		}
		if r.mc == nil {
			r.mc = map[[6]byte]bool{}
		}
		r.mc[m] = true
	}
	return nil
}

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
const FilterReserve = 4

func (s *rxSock) setFilter(f []bpf.RawInstruction) error {
	if len(f) == 0 {
		return errors.New("netio: empty filter")
	}
	if s.v2 {
		// ld len; jgt hi -> ret 0; jgt lo -> f; ret 0; f...
		hi := uint32(s.hi)
		if s.hi == 0 {
			hi = ^uint32(0)
		}
		g := make([]bpf.RawInstruction, 0, len(f)+FilterReserve)
		g = append(g,
			bpf.RawInstruction{Op: unix.BPF_LD | unix.BPF_W | unix.BPF_LEN},
			bpf.RawInstruction{Op: unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K, Jt: 1, Jf: 0, K: hi},
			bpf.RawInstruction{Op: unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K, Jt: 1, Jf: 0, K: uint32(s.lo)},
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
	h2Sec     = 16
	h2Nsec    = 20
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

// Block is a batch of frames handed to userspace: a version 3 block, or
// the runs of ready slots of a version 2 ring's sockets, merged in the
// order the kernel received their frames.
type Block struct {
	// version 3
	s    *rxSock
	base int
	n    int
	i    int
	off  int
	// version 2
	runs [maxSocks]run
	nr   int
}

// run is the ready slots of one version 2 socket: n from slot off.
type run struct {
	s      *rxSock
	off, n int
	i      int
	next   uint64 // receive time of frame i (seconds<<30 | ns)
}

// maxRun is the most version 2 slots one Block takes from a socket.
const maxRun = MaxBatch

// readyRun counts s's ready slots from its cursor, up to lim.
func (s *rxSock) readyRun(lim int) int {
	n := 0
	for n < lim && atomic.LoadUint32(s.u32(s.slot((s.cur+n)%s.nframes)))&unix.TP_STATUS_USER != 0 {
		n++
	}
	return n
}

// stamp is the receive time of version 2 slot h, as one ordered number.
func (s *rxSock) stamp(h int) uint64 {
	return uint64(*s.u32(h + h2Sec))<<30 | uint64(*s.u32(h + h2Nsec))
}

// TryNext fills b with the ring's ready frames, without waiting; false
// when there are none.
func (r *Ring) TryNext(b *Block) bool {
	if r.closed.Load() {
		return false
	}
	if !r.socks[0].v2 {
		s := r.socks[0]
		if !s.ready() {
			return false
		}
		b.s, b.nr, b.i = s, 0, 0
		b.base = s.cur * s.bsize
		b.n = int(atomic.LoadUint32(s.u32(b.base + bdNumPkts)))
		b.off = b.base + int(*s.u32(b.base + bdFirstOff))
		return true
	}
	b.s, b.nr = nil, 0
	for _, s := range r.socks {
		if n := s.readyRun(min(maxRun, s.nframes/2)); n > 0 {
			rn := &b.runs[b.nr]
			*rn = run{s: s, off: s.cur, n: n}
			rn.next = s.stamp(s.slot(s.cur))
			b.nr++
		}
	}
	return b.nr > 0
}

// Sockets returns the number of packet sockets behind the ring.
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
	var pfd [maxSocks]unix.PollFd
	for i, s := range r.socks {
		pfd[i] = unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN | unix.POLLERR}
	}
	n, err := unix.Poll(pfd[:len(r.socks)], int(timeout/time.Millisecond))
	if err != nil && err != unix.EINTR {
		return false, err
	}
	for i := 0; n > 0 && i < len(r.socks); i++ {
		r.takeErrIf(&pfd[i])
	}
	return r.TryNext(b), nil
}

// Len returns the number of frames in the block.
func (b *Block) Len() int {
	if b.s != nil {
		return b.n
	}
	n := 0
	for i := 0; i < b.nr; i++ {
		n += b.runs[i].n
	}
	return n
}

// Frame fills f with the block's next frame; false when none is left.
func (b *Block) Frame(f *Frame) bool {
	if b.s != nil {
		return b.frameV3(f)
	}
	// The run whose next frame the kernel received first.
	var rn *run
	for i := 0; i < b.nr; i++ {
		x := &b.runs[i]
		if x.i < x.n && (rn == nil || x.next < rn.next) {
			rn = x
		}
	}
	if rn == nil {
		return false
	}
	s := rn.s
	h := s.slot((rn.off + rn.i) % s.nframes)
	st := *s.u32(h + h2Status)
	s.fill(f, h, unix.SizeofTpacket2Hdr, h2Snaplen, h2Len, h2Mac)
	f.PktType = s.mem[h+h2PktType]
	f.VLANValid = st&unix.TP_STATUS_VLAN_VALID != 0
	f.VLANTCI = *(*uint16)(unsafe.Pointer(&s.mem[h+h2VLANTCI]))
	rn.i++
	if rn.i < rn.n && b.nr > 1 {
		rn.next = s.stamp(s.slot((rn.off + rn.i) % s.nframes))
	}
	return true
}

func (b *Block) frameV3(f *Frame) bool {
	if b.i >= b.n {
		return false
	}
	s := b.s
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
	if s := b.s; s != nil {
		atomic.StoreUint32(s.u32(b.base+bdStatus), unix.TP_STATUS_KERNEL)
		s.cur = (s.cur + 1) % s.nblocks
		b.s = nil
		return
	}
	for i := 0; i < b.nr; i++ {
		rn := &b.runs[i]
		s := rn.s
		for j := 0; j < rn.n; j++ {
			atomic.StoreUint32(s.u32(s.slot((rn.off+j)%s.nframes)), unix.TP_STATUS_KERNEL)
		}
		s.cur = (s.cur + rn.n) % s.nframes
	}
	b.nr = 0
}

// RingStats are the kernel's counters of a ring's sockets
// (PACKET_STATISTICS).
type RingStats struct {
	Packets uint64 // frames the filter let in, dropped ones included
	Drops   uint64 // frames lost because the ring was full
	Freezes uint64 // times a version 3 ring froze its queue (full, waiting for userspace)
	// Errors the kernel reported on the ring's sockets (ENETDOWN: its
	// link went down or was removed; see takeErr), the last of them in
	// LastErr.
	Errors  uint64
	LastErr unix.Errno
}

// Add adds o to s.
func (s *RingStats) Add(o RingStats) {
	s.Packets += o.Packets
	s.Drops += o.Drops
	s.Freezes += o.Freezes
	s.Errors += o.Errors
	if o.Errors > 0 {
		s.LastErr = o.LastErr
	}
}

// Stats returns the kernel's counters since the last call: reading them
// resets them, so a ring's stats have one reader.
func (r *Ring) Stats() (RingStats, error) {
	var out RingStats
	if r.closed.Load() {
		return out, nil
	}
	if out.Errors = r.errs.Swap(0); out.Errors > 0 {
		out.LastErr = unix.Errno(r.lastErr.Load())
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
	tiny, mtu, big := r.socks[0], r.socks[1], r.socks[2]
	return fmt.Sprintf("TPACKET_V2 (each frame handed over at once), %d slots of %d bytes for frames up to %d bytes, %d of %d bytes up to %d bytes, %d of %d KiB for aggregates",
		tiny.nframes, tiny.fsize, tiny.hi, mtu.nframes, mtu.fsize, mtu.hi, big.nframes, big.fsize>>10)
}

func (s *rxSock) close() {
	unix.Close(s.fd)
	unix.Munmap(s.mem)
}

func (r *Ring) closeSocks() {
	for _, s := range r.socks {
		s.close()
	}
	r.socks = nil
}

// Close closes the ring. A worker blocked in Next returns within its
// poll timeout.
func (r *Ring) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	r.closeSocks()
	return nil
}
