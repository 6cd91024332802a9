package netio

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaxBatch is the most frames one Tx queues before it must flush.
const MaxBatch = 256

// TxSndBuf is the send buffer a Tx asks for (SO_SNDBUFFORCE, else
// SO_SNDBUF up to the host's wmem_max): room for a full batch of MTU
// frames many times over, and for a batch of GSO frames.
const TxSndBuf = 8 << 20

// Tx is a transmit socket on one interface with a batch of queued frames,
// sent with one non-blocking sendmmsg per flush. Each frame carries its
// virtio header (PACKET_VNET_HDR), so offload requests travel on with it.
// A Tx belongs to one worker; it is not safe for concurrent use, but its
// counters may be read from anywhere.
//
// A flush never waits: when the socket's send buffer or the device queue
// is full (EAGAIN, ENOBUFS), the rest of the batch is tried once more and
// what still does not go is dropped and counted. A frame the kernel
// refuses (a bad virtio header, longer than the MTU) is counted and
// skipped, and the rest of the batch goes on.
type Tx struct {
	fd      int
	ifindex int
	iov     [MaxBatch]unix.Iovec
	msgs    [MaxBatch]unix.Mmsghdr
	n       int
	// Counters, written by the owner only.
	sent, errors, dropped atomic.Uint64
	lastErr               atomic.Int32 // errno of the last refused frame
}

// TxStats are a Tx's counters.
type TxStats struct {
	Sent    uint64 // frames the kernel took
	Errors  uint64 // frames it refused (counted and skipped)
	Dropped uint64 // frames not sent because the socket or device was full
	LastErr unix.Errno
}

// OpenTx opens a transmit socket bound to an interface. It receives
// nothing (protocol 0), and bypasses the qdisc layer where the kernel
// allows it, as a forwarding plane does.
func OpenTx(ifname string) (*Tx, error) {
	ifi, err := InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, opErr("socket", ifname, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		unix.Close(fd)
		return nil, opErr("PACKET_VNET_HDR", ifname, err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, TxSndBuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, TxSndBuf)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: 0, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, opErr("bind", ifname, err)
	}
	t := &Tx{fd: fd, ifindex: ifi.Index}
	for i := range t.msgs {
		t.msgs[i].Hdr.Iov = &t.iov[i]
		t.msgs[i].Hdr.Iovlen = 1
	}
	return t, nil
}

// IfIndex returns the interface the Tx sends on.
func (t *Tx) IfIndex() int { return t.ifindex }

// MAC returns the interface's MAC as it is now: the kernel reads it from
// the device when asked (getsockname on the bound socket), so it follows
// a changed address, and asks nothing of any namespace.
func (t *Tx) MAC() ([6]byte, error) {
	sa, err := unix.Getsockname(t.fd)
	if err != nil {
		return [6]byte{}, fmt.Errorf("netio: getsockname on interface %d: %w", t.ifindex, err)
	}
	ll, ok := sa.(*unix.SockaddrLinklayer)
	if !ok || ll.Halen != 6 {
		return [6]byte{}, fmt.Errorf("netio: interface %d has no Ethernet address", t.ifindex)
	}
	return [6]byte(ll.Addr[:6]), nil
}

// Queue adds a frame (virtio header first, as Frame.Buf returns it) to the
// batch. The bytes must stay valid until Flush; a full batch flushes.
func (t *Tx) Queue(buf []byte) {
	if t.n == MaxBatch {
		t.Flush()
	}
	t.iov[t.n].Base = &buf[0]
	t.iov[t.n].SetLen(len(buf))
	t.n++
}

// Pending returns the number of queued frames.
func (t *Tx) Pending() int { return t.n }

func add(c *atomic.Uint64, n uint64) { c.Store(c.Load() + n) }

// Flush sends the queued frames.
func (t *Tx) Flush() {
	off := 0
	retried := false
	for off < t.n {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(t.fd), uintptr(unsafe.Pointer(&t.msgs[off])), uintptr(t.n-off), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			add(&t.sent, uint64(r))
			off += int(r)
		case unix.EINTR:
		case unix.EAGAIN, unix.ENOBUFS:
			if !retried {
				retried = true
				continue
			}
			add(&t.dropped, uint64(t.n-off))
			off = t.n
		default:
			// The frame at off was refused: count it and go on.
			add(&t.errors, 1)
			t.lastErr.Store(int32(e))
			off++
		}
	}
	t.n = 0
}

// Stats returns the counters.
func (t *Tx) Stats() TxStats {
	return TxStats{Sent: t.sent.Load(), Errors: t.errors.Load(), Dropped: t.dropped.Load(), LastErr: unix.Errno(t.lastErr.Load())}
}

// Send sends one frame at once (control-plane frames: ARP).
func (t *Tx) Send(buf []byte) error {
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(t.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return fmt.Errorf("netio: send on ifindex %d: %w", t.ifindex, e)
	}
	return nil
}

// Close closes the socket.
func (t *Tx) Close() error { return unix.Close(t.fd) }
