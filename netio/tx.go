package netio

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaxBatch is the most frames one Tx queues before it must flush.
const MaxBatch = 256

// Tx is a transmit socket on one interface with a batch of queued frames,
// sent with one sendmmsg per flush. Each frame carries its virtio header
// (PACKET_VNET_HDR), so offload requests travel on with it. A Tx belongs
// to one worker; it is not safe for concurrent use.
type Tx struct {
	fd      int
	ifindex int
	iov     [MaxBatch]unix.Iovec
	msgs    [MaxBatch]unix.Mmsghdr
	n       int
	Sent    uint64
	Errors  uint64
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

// Flush sends the queued frames.
func (t *Tx) Flush() {
	off := 0
	for off < t.n {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(t.fd), uintptr(unsafe.Pointer(&t.msgs[off])), uintptr(t.n-off), 0, 0, 0)
		if e != 0 {
			if e == unix.EINTR {
				continue
			}
			// The frame at off was refused (e.g. a bad virtio header or
			// no buffer): count it and go on with the rest.
			t.Errors++
			off++
			continue
		}
		t.Sent += uint64(r)
		off += int(r)
	}
	t.n = 0
}

// Send queues one frame and flushes at once (control-plane frames: ARP).
func (t *Tx) Send(buf []byte) error {
	r, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(t.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0, 0)
	if e != 0 {
		return fmt.Errorf("netio: send on ifindex %d: %w", t.ifindex, e)
	}
	_ = r
	return nil
}

// Close closes the socket.
func (t *Tx) Close() error { return unix.Close(t.fd) }
