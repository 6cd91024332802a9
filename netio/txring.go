package netio

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TxRing is a transmit socket with a TPACKET_V2 PACKET_TX_RING: frames are
// written into slots of a ring shared with the kernel, and one
// non-blocking send() (a "kick") hands every written slot to the kernel,
// which sends them in order without a system call per frame or a copy of
// a message header. It is what trafgen and netsniff-ng send with. Like
// Tx it bypasses the qdisc layer (PACKET_QDISC_BYPASS), carries a virtio
// header in front of each frame (PACKET_VNET_HDR) and never blocks: a
// frame for which no slot is free after one kick is dropped and counted.
//
// A TxRing belongs to one goroutine; its counters may be read from
// anywhere. Frames longer than a slot (GSO aggregates) are sent with a
// plain send() after the ring is kicked, so they keep their order.
type TxRing struct {
	fd      int
	ifindex int
	mem     []byte
	fsize   int // slot size
	fpb     int // slots per block
	bsize   int
	nframes int
	cur     int // next slot to fill
	head    int // the oldest slot not yet given back to userspace
	kh      int // the kernel's cursor: the first slot it has not taken yet
	queued  int // slots from head to cur (written, not yet given back)
	untaken int // slots from kh to cur (written, not yet taken)
	poison  int // a slot dropped after the device refused it, for the kernel to skip (-1: none)
	// Counters, written by the owner only.
	sent, errors, dropped atomic.Uint64
	skipped               atomic.Uint64 // refused frames counted in sent as well
	lastErr               atomic.Int32
	big                   *Tx // frames longer than a slot
}

// TxRingConfig shapes a TxRing; zero values take defaults.
type TxRingConfig struct {
	Frames    int // slots (default 4096)
	FrameSize int // slot size, a power of two (default 2048: an MTU 1500 frame with a VLAN tag and the virtio header)
}

// Sizes of a TX ring.
const (
	// txDataOff is where a V2 TX slot's frame starts: the tpacket2
	// header aligned to 16 (TPACKET2_HDRLEN less the sockaddr_ll).
	txDataOff        = 32
	defaultTxFrames  = 4096
	defaultTxSlot    = 2048
	txBlock          = 1 << 16
	minTxSlot        = 128
	maxTxFrames      = 1 << 18
	txStatusSendReq  = unix.TP_STATUS_SEND_REQUEST
	txStatusSending  = unix.TP_STATUS_SENDING
	txStatusAvail    = unix.TP_STATUS_AVAILABLE
	txStatusWrongFmt = unix.TP_STATUS_WRONG_FORMAT
)

// OpenTxRing opens a transmit ring on an interface.
func OpenTxRing(ifname string, c TxRingConfig) (*TxRing, error) {
	ifi, err := InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	if c.Frames == 0 {
		c.Frames = defaultTxFrames
	}
	if c.FrameSize == 0 {
		c.FrameSize = defaultTxSlot
	}
	switch {
	case c.FrameSize < minTxSlot || c.FrameSize > txBlock || c.FrameSize&(c.FrameSize-1) != 0:
		return nil, opErr("PACKET_TX_RING", ifname, fmt.Errorf("slot size %d (allowed: a power of two, %d..%d)", c.FrameSize, minTxSlot, txBlock))
	case c.Frames < 16 || c.Frames > maxTxFrames:
		return nil, opErr("PACKET_TX_RING", ifname, fmt.Errorf("%d slots (allowed: 16..%d)", c.Frames, maxTxFrames))
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, opErr("socket", ifname, err)
	}
	t := &TxRing{fd: fd, ifindex: ifi.Index, fsize: c.FrameSize, bsize: max(c.FrameSize, txBlock), poison: -1}
	fail := func(op string, err error) (*TxRing, error) {
		if t.mem != nil {
			unix.Munmap(t.mem)
		}
		unix.Close(fd)
		return nil, opErr(op, ifname, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return fail("PACKET_VERSION", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fail("PACKET_VNET_HDR", err)
	}
	// A frame the kernel refuses is skipped (and its slot freed) instead
	// of stopping the ring at it.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_LOSS, 1); err != nil {
		return fail("PACKET_LOSS", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
	t.fpb = t.bsize / t.fsize
	nblocks := (c.Frames + t.fpb - 1) / t.fpb
	t.nframes = nblocks * t.fpb
	// The send buffer holds every slot in flight: the kernel charges
	// each frame's buffer to it until the device is done with it, and a
	// ring that outruns it stalls.
	snd := t.nframes * (t.fsize + 1024)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, snd) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, snd)
	}
	req := unix.TpacketReq{Block_size: uint32(t.bsize), Block_nr: uint32(nblocks), Frame_size: uint32(t.fsize), Frame_nr: uint32(t.nframes)}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &req); err != nil {
		return fail("PACKET_TX_RING", err)
	}
	size := t.bsize * nblocks
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_LOCKED|unix.MAP_POPULATE)
	if err != nil {
		mem, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return fail("mmap", err)
		}
	}
	t.mem = mem
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: 0, Ifindex: ifi.Index}); err != nil {
		return fail("bind", err)
	}
	if t.big, err = OpenTx(ifname); err != nil {
		unix.Munmap(t.mem)
		unix.Close(fd)
		return nil, err
	}
	return t, nil
}

// IfIndex returns the interface the ring sends on.
func (t *TxRing) IfIndex() int { return t.ifindex }

// Slots returns the ring's number of slots.
func (t *TxRing) Slots() int { return t.nframes }

// SlotCap is the most bytes (virtio header and frame) a slot holds.
func (t *TxRing) SlotCap() int { return t.fsize - txDataOff }

func (t *TxRing) off(i int) int { return i/t.fpb*t.bsize + i%t.fpb*t.fsize }

func (t *TxRing) status(i int) *uint32 { return (*uint32)(unsafe.Pointer(&t.mem[t.off(i)])) }

// reclaim moves head past the slots the kernel is done with. Only slots
// the kernel has taken are looked at: one it has not reached is waiting,
// whatever its status.
func (t *TxRing) reclaim() {
	for t.queued > t.untaken {
		st := atomic.LoadUint32(t.status(t.head))
		if st&txStatusSending != 0 {
			return // the device still has it
		}
		if st&txStatusWrongFmt != 0 {
			// Refused (without PACKET_LOSS it would stop the ring
			// here); it was counted as taken.
			add(&t.errors, 1)
			add(&t.skipped, 1)
			atomic.StoreUint32(t.status(t.head), txStatusAvail)
		}
		t.head = (t.head + 1) % t.nframes
		t.queued--
	}
}

// Slot returns the next free slot's bytes, for a frame (virtio header
// first) to be written in place and handed over with Commit; nil when
// every slot is in use. Nothing is sent before the next Flush.
func (t *TxRing) Slot() []byte {
	if t.queued == t.nframes {
		t.reclaim()
		if t.queued == t.nframes {
			return nil
		}
	}
	o := t.off(t.cur)
	return t.mem[o+txDataOff : o+t.fsize : o+t.fsize]
}

// Commit hands the first n bytes of the slot Slot returned to the kernel.
func (t *TxRing) Commit(n int) {
	o := t.off(t.cur)
	*(*uint32)(unsafe.Pointer(&t.mem[o+h2Len])) = uint32(n)
	*(*uint32)(unsafe.Pointer(&t.mem[o+h2Snaplen])) = uint32(n)
	atomic.StoreUint32(t.status(t.cur), txStatusSendReq)
	t.cur = (t.cur + 1) % t.nframes
	t.queued++
	t.untaken++
}

// Queue copies a frame (virtio header first, as Frame.Buf returns it) into
// the ring. When the ring is full it is kicked once; a frame that still
// finds no slot is dropped and counted. A frame longer than a slot is
// sent on its own after the ring is kicked.
func (t *TxRing) Queue(buf []byte) {
	if len(buf) > t.SlotCap() {
		// Every send on a socket with a TX ring only kicks the ring:
		// the frame goes through a socket of its own.
		t.Flush()
		t.big.Queue(buf)
		t.big.Flush()
		return
	}
	s := t.Slot()
	if s == nil {
		t.Flush()
		if s = t.Slot(); s == nil {
			add(&t.dropped, 1)
			return
		}
	}
	t.Commit(copy(s, buf))
}

// Pending returns the number of frames written and not yet taken by the
// kernel.
func (t *TxRing) Pending() int { return t.untaken }

// Flush kicks the kernel, without waiting: it sends the slots written
// so far, in order. When the device refuses the frame at the kernel's
// cursor (its queue is full, or the frame does not fit it: ENOBUFS) the
// kernel keeps that slot and would offer it again at every kick, so
// Flush drops it, as Tx drops what a full device does not take, and
// kicks once more for the rest; whatever still does not go waits in the
// ring for the next Flush, and when the ring is full new frames are
// dropped (Queue). It never waits.
func (t *TxRing) Flush() {
	for attempt := 0; attempt < 2 && t.untaken > 0; attempt++ {
		var r uintptr
		var e unix.Errno
		for {
			r, _, e = unix.Syscall6(unix.SYS_SENDTO, uintptr(t.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
			if e != unix.EINTR {
				break
			}
		}
		if e == unix.EAGAIN && t.kh != t.poison && atomic.LoadUint32(t.status(t.kh)) == txStatusAvail {
			// The kernel had no buffer for the first frame (EAGAIN
			// comes from nowhere else): it gave the slot back unsent
			// and its cursor stays there. Ask again at the next kick.
			atomic.StoreUint32(t.status(t.kh), txStatusSendReq)
			break
		}
		// Move to the kernel's cursor: past every slot it took.
		var took, n uint64
		for t.untaken > 0 && atomic.LoadUint32(t.status(t.kh))&txStatusSendReq == 0 {
			if t.kh == t.poison {
				t.poison = -1 // skipped: counted as dropped
			} else {
				// The kernel counts frames without their virtio header.
				took += uint64(*(*uint32)(unsafe.Pointer(&t.mem[t.off(t.kh)+h2Len]))) - VnetHdrLen
				n++
			}
			t.kh = (t.kh + 1) % t.nframes
			t.untaken--
		}
		add(&t.sent, n)
		if e == 0 {
			if uint64(r) < took {
				// PACKET_LOSS skipped a frame the kernel refused (at
				// least one: the kernel says how many bytes it sent,
				// not frames).
				add(&t.errors, 1)
				add(&t.skipped, 1)
				t.lastErr.Store(int32(unix.EINVAL))
			}
			break
		}
		if e != unix.ENOBUFS || t.untaken == 0 || t.poison >= 0 {
			if e != unix.EAGAIN && e != unix.ENOBUFS {
				t.lastErr.Store(int32(e)) // the link is down, say: frames wait
			}
			break
		}
		// Drop the refused frame: a length shorter than its virtio
		// header makes the kernel skip it (PACKET_LOSS) at the next kick.
		*(*uint32)(unsafe.Pointer(&t.mem[t.off(t.kh)+h2Len])) = 1
		t.poison = t.kh
		add(&t.dropped, 1)
	}
	t.reclaim()
}

// Stats returns the counters: Sent counts frames the kernel took from the
// ring and sent, Errors those it refused.
func (t *TxRing) Stats() TxStats {
	sent, skipped := t.sent.Load(), t.skipped.Load()
	b := t.big.Stats()
	le := unix.Errno(t.lastErr.Load())
	if le == 0 {
		le = b.LastErr
	}
	return TxStats{Sent: sent - min(skipped, sent) + b.Sent, Errors: t.errors.Load() + b.Errors, Dropped: t.dropped.Load() + b.Dropped, LastErr: le}
}

// Close closes the socket and unmaps the ring.
func (t *TxRing) Close() error {
	err := unix.Close(t.fd)
	unix.Munmap(t.mem)
	t.big.Close()
	return err
}
