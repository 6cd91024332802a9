// Package rstun is `golvs rs-tun`: the real-server end of golvs's TUN
// method, in userspace, for hosts without the ipip/ip6_tunnel modules. It
// receives the director's tunnel packets with a netio receive ring (IPIP,
// IPv6 in IPv4, ip6ip6, IPv4 in IPv6, and GUE over either family), strips
// the outer headers and writes the untouched inner packet into a TUN
// device that holds the VIPs, so the local stack accepts it as addressed
// to itself and the reply leaves with the VIP as source, straight to the
// client through the host's own routes.
//
// It must never forward an inner packet whose destination is not one of
// its VIPs (it would be an open relay), and it keeps the kernel quiet
// about the outer packets: raw sockets for protocols 4 and 41 (IPv4 and
// IPv6) and UDP sockets on the GUE port that accept nothing stop it
// answering "protocol (port) unreachable" to the director.
package rstun

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// Config sets up an endpoint.
type Config struct {
	Interface string       // where the tunnel packets arrive (eth0)
	VIPs      []netip.Addr // put on the TUN device; only these are delivered
	Device    string       // TUN device name; default golvs-tun0
	GUEPort   uint16       // accept GUE on this UDP port too (0: IPIP only)
	Logf      func(format string, args ...any)
}

// Stats are the endpoint's counters.
type Stats struct {
	Delivered uint64 // inner packets written to the TUN device
	NotVIP    uint64 // inner destination is not one of the VIPs: dropped
	Bad       uint64 // not IPIP/GUE or malformed
}

// Endpoint is a running rs-tun.
type Endpoint struct {
	c                      Config
	ring                   *netio.Ring
	tun                    *os.File
	tfd                    int // tun's descriptor, taken once at Open
	closeOnce              sync.Once
	closed                 atomic.Bool
	mu                     sync.Mutex // running, and closing the ring
	running                bool       // Run owns the ring: it closes it when it returns
	quiet                  []int
	vips                   [][4]byte
	vips6                  [][16]byte
	Settings               []string // what Open changed on the host
	delivered, notVIP, bad atomic.Uint64
}

// Errors.
var ErrNoVIP = errors.New("rstun: give at least one VIP (--vip)")

const vnetLen = 10

// Open creates the TUN device with the VIPs and the sockets, in the
// calling thread's network namespace.
func Open(c Config) (*Endpoint, error) {
	if len(c.VIPs) == 0 {
		return nil, ErrNoVIP
	}
	if c.Device == "" {
		c.Device = "golvs-tun0"
	}
	if _, err := net.InterfaceByName(c.Interface); err != nil {
		return nil, fmt.Errorf("rstun: interface %q: %w", c.Interface, err)
	}
	e := &Endpoint{c: c}
	for _, v := range c.VIPs {
		switch {
		case v.Is4():
			e.vips = append(e.vips, v.As4())
		case v.Is6() && !v.Is4In6() && v.Zone() == "":
			e.vips6 = append(e.vips6, v.As16())
		default:
			return nil, fmt.Errorf("rstun: VIP %s: not an IPv4 or IPv6 address", v)
		}
	}
	if err := e.openTUN(); err != nil {
		e.Close()
		return nil, err
	}
	ring, err := netio.OpenRing(c.Interface, netio.RingConfig{Protocol: unix.ETH_P_ALL, Filter: filter(c.GUEPort)})
	e.ring = ring
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("rstun: %w", err)
	}
	// Keep the kernel from answering the tunnel packets itself: raw
	// sockets of both tunnel protocols in both families (the kernel has
	// neither ipip nor ip6_tunnel here, and would send "protocol
	// unreachable" or a parameter problem), UDP on the GUE port.
	drop, _ := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		for _, proto := range []int{unix.IPPROTO_IPIP, unix.IPPROTO_IPV6} {
			if q, err := unix.Socket(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err == nil {
				_ = attach(q, drop)
				e.quiet = append(e.quiet, q)
			}
		}
	}
	if c.GUEPort != 0 {
		for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
			q, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				if fam == unix.AF_INET6 {
					continue // no IPv6 on this host
				}
				e.Close()
				return nil, fmt.Errorf("rstun: GUE socket: %w", err)
			}
			_ = attach(q, drop)
			var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(c.GUEPort)}
			if fam == unix.AF_INET6 {
				_ = unix.SetsockoptInt(q, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
				sa = &unix.SockaddrInet6{Port: int(c.GUEPort)}
			}
			if err := unix.Bind(q, sa); err != nil {
				unix.Close(q)
				if fam == unix.AF_INET6 {
					continue
				}
				e.Close()
				return nil, fmt.Errorf("rstun: GUE port %d: %w", c.GUEPort, err)
			}
			e.quiet = append(e.quiet, q)
		}
	}
	return e, nil
}

func (e *Endpoint) openTUN() error {
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("rstun: /dev/net/tun: %w", err)
	}
	e.tun = f
	e.tfd = int(f.Fd())
	ifr, err := unix.NewIfreq(e.c.Device)
	if err != nil {
		return fmt.Errorf("rstun: device name %q: %w", e.c.Device, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(int(f.Fd()), unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("rstun: TUNSETIFF %s: %w", e.c.Device, err)
	}
	l, err := netlink.LinkByName(e.c.Device)
	if err != nil {
		return fmt.Errorf("rstun: %s: %w", e.c.Device, err)
	}
	for _, v := range e.c.VIPs {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: v.AsSlice(), Mask: net.CIDRMask(v.BitLen(), v.BitLen())}}
		if v.Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(l, a); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("rstun: VIP %s on %s: %w", v, e.c.Device, err)
		}
		e.Settings = append(e.Settings, fmt.Sprintf("VIP %s/%d on %s", v, v.BitLen(), e.c.Device))
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("rstun: %s up: %w", e.c.Device, err)
	}
	// The inner packets come from clients the device has no route to:
	// strict reverse-path filtering would drop them.
	for _, n := range []string{"all", e.c.Device} {
		p := "/proc/sys/net/ipv4/conf/" + n + "/rp_filter"
		if b, err := os.ReadFile(p); err == nil && len(b) > 0 && b[0] == '1' {
			if err := os.WriteFile(p, []byte("2"), 0o644); err == nil {
				e.Settings = append(e.Settings, "net.ipv4.conf."+n+".rp_filter=2 (loose)")
			}
		}
	}
	return nil
}

// filter accepts tunnel packets of either family: IPv4 with protocol 4
// or 41, IPv6 with next header 4 or 41 (right after its fixed header, as
// golvs sends them), and UDP to the GUE port of either when one is set.
func filter(gue uint16) []bpf.RawInstruction {
	const accept, drop = 262144, 0
	prog := []bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 4 /* PACKET_OUTGOING */, SkipTrue: 0, SkipFalse: 1},
		bpf.RetConstant{Val: drop},
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x0800, SkipTrue: 0, SkipFalse: 8},
		// IPv4
		bpf.LoadAbsolute{Off: 14 + 9, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 4, SkipTrue: 14, SkipFalse: 0},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 41, SkipTrue: 13, SkipFalse: 0},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 17, SkipTrue: 0, SkipFalse: 13},
		bpf.LoadMemShift{Off: 14},
		bpf.LoadIndirect{Off: 14 + 2, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(gue), SkipTrue: 9, SkipFalse: 10},
		bpf.RetConstant{Val: drop}, // (unreached)
		// IPv6
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x86dd, SkipTrue: 0, SkipFalse: 8},
		bpf.LoadAbsolute{Off: 14 + 6, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 4, SkipTrue: 5, SkipFalse: 0},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 41, SkipTrue: 4, SkipFalse: 0},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 17, SkipTrue: 0, SkipFalse: 4},
		bpf.LoadAbsolute{Off: 14 + 40 + 2, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(gue), SkipTrue: 1, SkipFalse: 2},
		bpf.RetConstant{Val: drop}, // (unreached)
		bpf.RetConstant{Val: accept},
		bpf.RetConstant{Val: drop},
	}
	if gue == 0 { // no GUE: UDP is never a tunnel packet
		for i, ins := range prog {
			if j, ok := ins.(bpf.JumpIf); ok && j.Val == 0 {
				j.Val = 0x10000 // a port no header holds
				prog[i] = j
			}
		}
	}
	raw, _ := bpf.Assemble(prog)
	return raw
}

func attach(fd int, f []bpf.RawInstruction) error {
	p := unix.SockFprog{Len: uint16(len(f)), Filter: (*unix.SockFilter)(unsafe.Pointer(&f[0]))}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &p); err != nil {
		return fmt.Errorf("rstun: attaching filter: %w", err)
	}
	return nil
}

// Run decapsulates until ctx is done.
func (e *Endpoint) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.closed.Load() || e.running {
		e.mu.Unlock()
		return nil
	}
	e.running = true
	e.mu.Unlock()
	// A P of its own while it runs (netio.ReserveProcs, as a director's
	// workers have): woken by a frame in poll(), it needs a P to go on,
	// and in a process with busy goroutines it waited behind them. In
	// the bench, whose process then also ran the real servers, TUN one
	// connection at a time made 4,049-4,217 req/s without it and
	// 5,843-5,917 with (2026-12-05; direct-tun level).
	_, _, release := netio.ReserveProcs(1)
	defer release()
	defer func() {
		e.mu.Lock()
		e.running = false
		if e.closed.Load() {
			e.ring.Close()
		}
		e.mu.Unlock()
	}()
	var b netio.Block
	var f netio.Frame
	for ctx.Err() == nil && !e.closed.Load() {
		ok, err := e.ring.Next(200*time.Millisecond, &b)
		if err != nil {
			if e.closed.Load() {
				return nil
			}
			return fmt.Errorf("rstun: receive: %w", err)
		}
		if !ok {
			continue
		}
		for b.Frame(&f) {
			if f.Trunc {
				e.bad.Add(1)
				continue
			}
			e.handle(e.tfd, f.Buf())
		}
		b.Release()
	}
	return nil
}

// handle decapsulates one frame (virtio header first) into the TUN device;
// the virtio header is rewritten in place in front of the inner packet.
func (e *Endpoint) handle(tfd int, b []byte) {
	if len(b) < vnetLen+packet.EthLen+packet.IP4MinLen {
		e.bad.Add(1)
		return
	}
	frame := b[vnetLen:]
	if et := binary.BigEndian.Uint16(frame[12:]); et != packet.EtherTypeIP4 && et != packet.EtherTypeIP6 {
		e.bad.Add(1)
		return
	}
	inner, ok := forward.Decap(frame[packet.EthLen:], e.c.GUEPort)
	if !ok {
		e.bad.Add(1)
		return
	}
	if !e.isVIP(inner) {
		e.notVIP.Add(1)
		return
	}
	off := cap(frame) - cap(inner) // inner's offset in the frame
	var hdr [vnetLen]byte
	copy(hdr[:], b[:vnetLen])
	if hdr[0]&1 != 0 { // NEEDS_CSUM: csum_start counts from the frame start
		cs := binary.LittleEndian.Uint16(hdr[6:])
		binary.LittleEndian.PutUint16(hdr[6:], cs-uint16(off))
	}
	if hdr[1] != 0 { // GSO: the header length shrinks by the outer headers
		hl := binary.LittleEndian.Uint16(hdr[2:])
		if int(hl) > off {
			binary.LittleEndian.PutUint16(hdr[2:], hl-uint16(off))
		}
	}
	out := b[off : vnetLen+off+len(inner)] // virtio header just in front of inner
	copy(out[:vnetLen], hdr[:])
	if _, err := unix.Write(tfd, out); err != nil {
		e.bad.Add(1)
		return
	}
	e.delivered.Add(1)
}

// isVIP reports whether an inner packet (IPv4 or IPv6) is for a VIP.
func (e *Endpoint) isVIP(inner []byte) bool {
	if inner[0]>>4 == 6 {
		a := [16]byte(inner[24:40])
		for _, v := range e.vips6 {
			if v == a {
				return true
			}
		}
		return false
	}
	a := [4]byte(inner[16:20])
	for _, v := range e.vips {
		if v == a {
			return true
		}
	}
	return false
}

// Stats returns the counters.
func (e *Endpoint) Stats() Stats {
	return Stats{Delivered: e.delivered.Load(), NotVIP: e.notVIP.Load(), Bad: e.bad.Load()}
}

// Close releases the sockets and removes the TUN device; a Run in
// progress returns within 200 ms.
func (e *Endpoint) Close() {
	e.closeOnce.Do(func() {
		e.closed.Store(true)
		e.mu.Lock()
		if e.ring != nil && !e.running {
			e.ring.Close() // else Run does, as it returns
		}
		e.mu.Unlock()
		for _, q := range e.quiet {
			unix.Close(q)
		}
		if e.tun != nil {
			e.tun.Close()
		}
	})
}
