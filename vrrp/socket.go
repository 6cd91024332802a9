package vrrp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// conn is the raw IP socket (protocol 112) of one interface, shared by
// the instances on it. It is bound to the interface, so it sees only
// that interface's VRRP; over multicast it has joined 224.0.0.18 there
// and does not hear its own packets. The IP header is built here
// (IP_HDRINCL), as keepalived does: TOS 0xc0, TTL 255, our primary
// address as source, the same bytes the version 3 checksum covers.
type conn struct {
	ifname  string
	ifindex int
	pc      *net.IPConn
	raw     syscall.RawConn
	id      uint16
}

// openConn opens the socket in the calling thread's network namespace.
func openConn(ifname string, multicast bool) (*conn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("vrrp: interface %s: %w", ifname, err)
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); serr != nil {
				serr = fmt.Errorf("SO_BINDTODEVICE %s: %w", ifname, serr)
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_HDRINCL, 1); serr != nil {
				serr = fmt.Errorf("IP_HDRINCL: %w", serr)
				return
			}
			// Only the groups this socket joined, not every group some
			// other socket of the host joined.
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0)
			// Network control, as keepalived (SO_PRIORITY 6).
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PRIORITY, 6)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "ip4:112", "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("vrrp: raw socket on %s: %w", ifname, err)
	}
	c := &conn{ifname: ifname, ifindex: ifi.Index, pc: pc.(*net.IPConn)}
	if c.raw, err = c.pc.SyscallConn(); err != nil {
		pc.Close()
		return nil, fmt.Errorf("vrrp: %s: %w", ifname, err)
	}
	if multicast {
		p := ipv4.NewPacketConn(pc)
		if err := p.JoinGroup(ifi, &net.IPAddr{IP: MulticastGroup.AsSlice()}); err != nil {
			pc.Close()
			return nil, fmt.Errorf("vrrp: joining %s on %s: %w", MulticastGroup, ifname, err)
		}
		if err := p.SetMulticastInterface(ifi); err != nil {
			pc.Close()
			return nil, fmt.Errorf("vrrp: multicast interface %s: %w", ifname, err)
		}
		if err := p.SetMulticastLoopback(false); err != nil {
			pc.Close()
			return nil, fmt.Errorf("vrrp: %s: %w", ifname, err)
		}
	}
	return c, nil
}

// read reads one IP packet, header included.
func (c *conn) read(buf []byte) (int, error) {
	var n int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// send sends an advertisement to dst from src.
func (c *conn) send(m *Message, src, dst netip.Addr, buf []byte) error {
	c.id++
	if c.id == 0 { // zero asks the kernel to choose
		c.id = 1
	}
	b := m.AppendPacket(buf[:0], src, dst, c.id)
	_ = c.pc.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := c.pc.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()})
	return err
}

func (c *conn) close() { c.pc.Close() }

// primaryAddr returns the interface's first IPv4 address (the primary, as
// the kernel lists it), which adverts come from.
func primaryAddr(ifname string) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("vrrp: interface %s: %w", ifname, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("vrrp: addresses of %s: %w", ifname, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok && n.IP.To4() != nil {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("vrrp: %s has no IPv4 address to send advertisements from (VRRP needs one; golvs keeps the virtual addresses off the kernel)", ifname)
}

// linkUp reports whether an interface is up with carrier, as keepalived
// watches it for its FAULT state.
func linkUp(ifname string) bool {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return false
	}
	return ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagRunning != 0
}

// garper sends gratuitous ARPs on one interface: keepalived's frame, an
// ARP request from the interface's MAC with sender and target both the
// address, target hardware ff:ff:ff:ff:ff:ff, to the broadcast address.
type garper struct {
	tx  *netio.Tx
	mac [6]byte
	buf [netio.VnetHdrLen + 60]byte
}

func openGarper(ifname string) (*garper, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("vrrp: interface %s: %w", ifname, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("vrrp: %s has no Ethernet address for gratuitous ARPs", ifname)
	}
	tx, err := netio.OpenTx(ifname)
	if err != nil {
		return nil, err
	}
	g := &garper{tx: tx}
	copy(g.mac[:], ifi.HardwareAddr)
	return g, nil
}

func (g *garper) send(a netip.Addr) error {
	// The interface's MAC as it is now: an active-backup bond with
	// fail_over_mac=active changes it on a failover.
	if mac, err := g.tx.MAC(); err == nil {
		g.mac = mac
	}
	for i := range g.buf {
		g.buf[i] = 0
	}
	n := packet.BuildGARP(g.buf[netio.VnetHdrLen:], g.mac, a.As4())
	if n < 60 {
		n = 60 // pad to the Ethernet minimum, as the kernel would
	}
	return g.tx.Send(g.buf[:netio.VnetHdrLen+n])
}

func (g *garper) close() { g.tx.Close() }
