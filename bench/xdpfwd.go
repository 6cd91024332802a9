package bench

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/packet"
)

// The AF_XDP reference (row xdp-ceiling) answers one question for
// whoever decides golvs's receive path: what would forwarding cost on
// this host over AF_XDP instead of AF_PACKET? It does what the netio
// ceiling does (set the MACs, pick the next real server's in turn, no
// other per-frame work) through AF_XDP sockets: an XDP program on the
// director's outside link redirects the frames to the VIP (and nothing
// else) to an XSK per receive queue, in copy mode (veth has no zero-copy
// AF_XDP), and a transmit-only XSK on the inside link sends them. The
// XDP program consumes what it redirects, so it needs no drop rule.
// golvs itself does not use AF_XDP: it is outside the design card.

// xdpFrame is the size of one umem frame: an MTU frame and the
// headroom the kernel keeps in copy mode fit.
const xdpFrame = 2048

// xdpRing is one of an XSK's four rings, mapped from the kernel. The
// producer and consumer are free-running 32-bit indices.
type xdpRing struct {
	mem        []byte
	prod, cons *uint32
	desc       unsafe.Pointer
	mask       uint32
}

func (q *xdpRing) addr(i uint32) *uint64 {
	return (*uint64)(unsafe.Add(q.desc, uintptr(i&q.mask)*8))
}

func (q *xdpRing) xdesc(i uint32) *unix.XDPDesc {
	return (*unix.XDPDesc)(unsafe.Add(q.desc, uintptr(i&q.mask)*unsafe.Sizeof(unix.XDPDesc{})))
}

// xsk is one AF_XDP socket with a umem of its own.
type xsk struct {
	fd     int
	umem   []byte
	fill   xdpRing
	comp   xdpRing
	rx, tx xdpRing
	free   []uint64 // transmit: umem frames not in flight
}

func xdpSockopt(fd, opt int, p unsafe.Pointer, n uintptr) error {
	if _, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), n, 0); e != 0 {
		return e
	}
	return nil
}

// openXSK opens an XSK bound to queue of ifindex (in the calling
// thread's namespace), with n umem frames and rings of n entries. An rx
// socket hands every frame to the fill ring; a transmit socket keeps
// them in its free list.
func openXSK(ifindex, queue, n int, rx bool) (_ *xsk, err error) {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("AF_XDP socket: %w", err)
	}
	s := &xsk{fd: fd}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.umem, err = unix.Mmap(-1, 0, n*xdpFrame, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE); err != nil {
		return nil, fmt.Errorf("umem: %w", err)
	}
	reg := unix.XDPUmemReg{Addr: uint64(uintptr(unsafe.Pointer(&s.umem[0]))), Len: uint64(len(s.umem)), Size: xdpFrame}
	if err = xdpSockopt(fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return nil, fmt.Errorf("XDP_UMEM_REG: %w", err)
	}
	opts := []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_TX_RING}
	if rx {
		opts = append(opts, unix.XDP_RX_RING)
	}
	for _, o := range opts {
		if err = unix.SetsockoptInt(fd, unix.SOL_XDP, o, n); err != nil {
			return nil, fmt.Errorf("AF_XDP ring option %d: %w", o, err)
		}
	}
	var off unix.XDPMmapOffsets
	sz := uint32(unsafe.Sizeof(off))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS, uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&sz)), 0); e != 0 {
		return nil, fmt.Errorf("XDP_MMAP_OFFSETS: %w", e)
	}
	mapRing := func(q *xdpRing, o unix.XDPRingOffset, pgoff int64, desc uintptr) error {
		m, err := unix.Mmap(fd, pgoff, int(o.Desc)+n*int(desc), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return fmt.Errorf("AF_XDP ring mmap: %w", err)
		}
		q.mem = m
		q.prod = (*uint32)(unsafe.Pointer(&m[o.Producer]))
		q.cons = (*uint32)(unsafe.Pointer(&m[o.Consumer]))
		q.desc = unsafe.Pointer(&m[o.Desc])
		q.mask = uint32(n - 1)
		return nil
	}
	if err = mapRing(&s.fill, off.Fr, unix.XDP_UMEM_PGOFF_FILL_RING, 8); err != nil {
		return nil, err
	}
	if err = mapRing(&s.comp, off.Cr, unix.XDP_UMEM_PGOFF_COMPLETION_RING, 8); err != nil {
		return nil, err
	}
	if err = mapRing(&s.tx, off.Tx, unix.XDP_PGOFF_TX_RING, unsafe.Sizeof(unix.XDPDesc{})); err != nil {
		return nil, err
	}
	if rx {
		if err = mapRing(&s.rx, off.Rx, unix.XDP_PGOFF_RX_RING, unsafe.Sizeof(unix.XDPDesc{})); err != nil {
			return nil, err
		}
		for i := 0; i < n; i++ {
			*s.fill.addr(uint32(i)) = uint64(i * xdpFrame)
		}
		atomic.StoreUint32(s.fill.prod, uint32(n))
	} else {
		for i := 0; i < n; i++ {
			s.free = append(s.free, uint64(i*xdpFrame))
		}
	}
	if err = unix.Bind(fd, &unix.SockaddrXDP{Flags: unix.XDP_COPY, Ifindex: uint32(ifindex), QueueID: uint32(queue)}); err != nil {
		return nil, fmt.Errorf("AF_XDP bind to queue %d: %w", queue, err)
	}
	return s, nil
}

// stats reads the socket's XDP_STATISTICS.
func (s *xsk) stats() (st unix.XDPStatistics) {
	sz := uint32(unsafe.Sizeof(st))
	_, _, _ = unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(s.fd), unix.SOL_XDP, unix.XDP_STATISTICS, uintptr(unsafe.Pointer(&st)), uintptr(unsafe.Pointer(&sz)), 0)
	return st
}

func (s *xsk) close() {
	for _, q := range []*xdpRing{&s.fill, &s.comp, &s.rx, &s.tx} {
		if q.mem != nil {
			_ = unix.Munmap(q.mem)
			q.mem = nil
		}
	}
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
	if s.umem != nil {
		_ = unix.Munmap(s.umem)
		s.umem = nil
	}
}

// xdpProgram returns the XDP program: an IPv4 frame to vip goes to the
// XSK of its receive queue (and, if that queue has none, on to the
// kernel: XDP_PASS); every other frame passes.
func xdpProgram(xsks *ebpf.Map, vip netip.Addr) asm.Instructions {
	a := vip.As4()
	daddr := int32(uint32(a[0]) | uint32(a[1])<<8 | uint32(a[2])<<16 | uint32(a[3])<<24) // as loaded, little endian
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 34), // Ethernet and an IPv4 header without options
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JNE.Imm(asm.R5, 0x0008, "pass"), // ETH_P_IP, as loaded
		asm.LoadMem(asm.R5, asm.R2, 30, asm.Word),
		asm.JNE.Imm32(asm.R5, daddr, "pass"),
		asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), // rx_queue_index
		asm.LoadMapPtr(asm.R1, xsks.FD()),
		asm.Mov.Imm(asm.R3, 2), // XDP_PASS where the queue has no XSK
		asm.FnRedirectMap.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"),
		asm.Return(),
	}
}

// xdpForwarder is the AF_XDP reference forwarder.
type xdpForwarder struct {
	rx   []*xsk
	tx   *xsk
	prog *ebpf.Program
	xsks *ebpf.Map
	lnk  link.Link
	src  [6]byte
	dsts [][6]byte
	spin time.Duration
	Fwd  uint64
	// Drops counts frames received with no transmit slot free (read
	// by counters while run runs).
	Drops atomic.Uint64
}

// xdpRingSize is each XSK's ring and umem size, in frames: golvs's
// default receive ring holds 4,096 frames too.
const xdpRingSize = 4096

// open sets the reference up on in (receive) and out (transmit), in
// the calling thread's namespace.
func (f *xdpForwarder) open(in, out int, queues int, vip netip.Addr) (err error) {
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	if f.xsks, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: uint32(queues)}); err != nil {
		return fmt.Errorf("XSKMAP: %w", err)
	}
	if f.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: xdpProgram(f.xsks, vip), License: "GPL"}); err != nil {
		return fmt.Errorf("XDP program: %w", err)
	}
	for q := 0; q < queues; q++ {
		s, err := openXSK(in, q, xdpRingSize, true)
		if err != nil {
			if q > 0 && errors.Is(err, unix.EINVAL) {
				break // past the link's real receive queues
			}
			return err
		}
		f.rx = append(f.rx, s)
		if err := f.xsks.Put(uint32(q), uint32(s.fd)); err != nil {
			return fmt.Errorf("XSKMAP entry %d: %w", q, err)
		}
	}
	if f.tx, err = openXSK(out, 0, xdpRingSize, false); err != nil {
		return err
	}
	// Native (driver) mode: veth runs it in its NAPI poll. The link goes
	// with its file descriptor, so a killed bench leaves no program.
	if f.lnk, err = link.AttachXDP(link.XDPOptions{Program: f.prog, Interface: in, Flags: link.XDPDriverMode}); err != nil {
		return fmt.Errorf("attach XDP: %w", err)
	}
	return nil
}

// run forwards until stop closes, on a thread of its own, whose ID it
// sends on tid first. It looks for frames for f.spin after the last,
// then sleeps in poll(2), as golvs's workers do.
func (f *xdpForwarder) run(stop <-chan struct{}, tid chan<- int) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid <- unix.Gettid()
	pfds := make([]unix.PollFd, len(f.rx))
	for i, s := range f.rx {
		pfds[i] = unix.PollFd{Fd: int32(s.fd), Events: unix.POLLIN}
	}
	n := len(f.dsts)
	next := 0
	last := time.Now()
	for {
		got := 0
		for _, s := range f.rx {
			got += f.batch(s, &next, n)
		}
		f.reclaim()
		if got > 0 {
			last = time.Now()
			continue
		}
		if time.Since(last) < f.spin {
			continue
		}
		select {
		case <-stop:
			return
		default:
		}
		_, _ = unix.Poll(pfds, 100)
		last = time.Now()
	}
}

// batch forwards what one receive ring holds (64 frames at most) and
// kicks the transmit socket once.
func (f *xdpForwarder) batch(s *xsk, next *int, n int) int {
	cons := *s.rx.cons
	avail := atomic.LoadUint32(s.rx.prod) - cons
	if avail == 0 {
		return 0
	}
	avail = min(avail, 64)
	tx := f.tx
	tprod := *tx.tx.prod
	fprod := *s.fill.prod
	for i := uint32(0); i < avail; i++ {
		d := s.rx.xdesc(cons + i)
		fr := s.umem[d.Addr : d.Addr+uint64(d.Len)]
		if len(tx.free) == 0 || len(fr) < 14 {
			f.Drops.Add(1)
		} else {
			a := tx.free[len(tx.free)-1]
			tx.free = tx.free[:len(tx.free)-1]
			b := tx.umem[a : a+uint64(len(fr))]
			copy(b, fr)
			packet.Eth(b).SetMACs(f.src, f.dsts[*next])
			if *next++; *next == n {
				*next = 0
			}
			td := tx.tx.xdesc(tprod)
			td.Addr, td.Len, td.Options = a, uint32(len(fr)), 0
			tprod++
			f.Fwd++
		}
		// The receive frame goes straight back to the fill ring: it
		// has room for every frame of the umem.
		*s.fill.addr(fprod) = d.Addr &^ (xdpFrame - 1)
		fprod++
	}
	atomic.StoreUint32(s.rx.cons, cons+avail)
	atomic.StoreUint32(s.fill.prod, fprod)
	atomic.StoreUint32(tx.tx.prod, tprod)
	f.kick()
	return int(avail)
}

// kick has the kernel send what the transmit ring holds: in copy mode
// each sendto sends a bounded batch, so it is called until the ring is
// empty or the link refuses.
func (f *xdpForwarder) kick() {
	for try := 0; try < 16 && atomic.LoadUint32(f.tx.tx.cons) != *f.tx.tx.prod; try++ {
		_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(f.tx.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		if e != 0 && e != unix.EAGAIN && e != unix.EBUSY && e != unix.ENOBUFS {
			return
		}
	}
}

// reclaim returns sent frames to the transmit free list.
func (f *xdpForwarder) reclaim() {
	c := &f.tx.comp
	cons := *c.cons
	prod := atomic.LoadUint32(c.prod)
	for i := cons; i != prod; i++ {
		f.tx.free = append(f.tx.free, *c.addr(i))
	}
	atomic.StoreUint32(c.cons, prod)
}

// counters are the reference's counters, by golvs's names where they
// mean the same.
func (f *xdpForwarder) counters() map[string]uint64 {
	var st unix.XDPStatistics
	for _, s := range f.rx {
		x := s.stats()
		st.Rx_dropped += x.Rx_dropped
		st.Rx_ring_full += x.Rx_ring_full
		st.Rx_fill_ring_empty_descs += x.Rx_fill_ring_empty_descs
	}
	return map[string]uint64{"xsk-rx-dropped": st.Rx_dropped, "xsk-rx-ring-full": st.Rx_ring_full,
		"xsk-fill-empty": st.Rx_fill_ring_empty_descs, "tx-dropped": f.Drops.Load()}
}

func (f *xdpForwarder) close() {
	if f.lnk != nil {
		f.lnk.Close()
		f.lnk = nil
	}
	for _, s := range f.rx {
		s.close()
	}
	f.rx = nil
	if f.tx != nil {
		f.tx.close()
		f.tx = nil
	}
	if f.prog != nil {
		f.prog.Close()
		f.prog = nil
	}
	if f.xsks != nil {
		f.xsks.Close()
		f.xsks = nil
	}
}
