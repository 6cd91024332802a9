package ipvssync

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Sender sends one message; Receiver reads them. UDP sockets are both.
type (
	Sender interface {
		Write(b []byte) (int, error)
		Close() error
	}
	Receiver interface {
		ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
		Close() error
	}
)

// Transport opens a daemon's sockets: c's defaults filled in for its
// interface, one Sender (master) or Receiver (backup) per thread
// (sys.Ports). UDP is the real one; MemTransport connects daemons in one
// process for tests and benchmarks.
type Transport interface {
	Open(c Config, sys Sysctls) (Config, []Sender, []Receiver, error)
}

// UDP is the kernel-compatible transport: multicast (or golvs's unicast)
// UDP sockets on the configured interface.
var UDP Transport = udpTransport{}

type udpTransport struct{}

// Open fills in c's defaults for its interface and opens one socket per
// thread (sync_ports), as make_send_sock and make_receive_sock do. It
// runs in the director's network namespace.
func (udpTransport) Open(c Config, sys Sysctls) (Config, []Sender, []Receiver, error) {
	if c.Ifname == "" {
		c.Ifname = DefaultIfname
	}
	ifi, err := net.InterfaceByName(c.Ifname)
	if err != nil {
		return c, nil, nil, fmt.Errorf("%w (interface %q: %v)", ErrNoDevice, c.Ifname, err)
	}
	cfg, err := c.fill(ifi.MTU)
	if err != nil {
		return c, nil, nil, err
	}
	var outs []Sender
	var ins []Receiver
	closeAll := func() {
		for _, o := range outs {
			o.Close()
		}
		for _, r := range ins {
			r.Close()
		}
	}
	for id := 0; id < sys.Ports; id++ {
		port := int(cfg.Port) + id
		if port > 65535 {
			closeAll()
			return c, nil, nil, fmt.Errorf("%w (port %d + thread %d is past 65535)", ErrInvalid, cfg.Port, id)
		}
		if cfg.Role == Master {
			o, err := sendSocket(cfg, ifi, port, sys.SockSize)
			if err != nil {
				closeAll()
				return c, nil, nil, err
			}
			outs = append(outs, o)
		} else {
			r, err := receiveSocket(cfg, ifi, port, sys.SockSize)
			if err != nil {
				closeAll()
				return c, nil, nil, err
			}
			ins = append(ins, r)
		}
	}
	return cfg, outs, ins, nil
}

// firstIPv4 is inet_select_addr(dev, 0, RT_SCOPE_UNIVERSE): the
// interface's first IPv4 address, or none.
func firstIPv4(ifi *net.Interface) netip.Addr {
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok && !ip.IsLoopback() {
				return ip
			}
		}
	}
	return netip.Addr{}
}

// sendSocket is make_send_sock: a UDP socket with the multicast
// interface, no multicast loop, the TTL, fragmentation allowed
// (IP_PMTUDISC_DONT) and an optional send buffer size, bound to the
// interface's first IPv4 address and connected to group:port (or to the
// unicast peer).
func sendSocket(c Config, ifi *net.Interface, port, sockSize int) (*net.UDPConn, error) {
	dst := c.Group
	if c.Peer.IsValid() {
		dst = c.Peer
	}
	v6 := dst.Is6()
	var serr error
	ctl := func(_, _ string, rc syscall.RawConn) error {
		err := rc.Control(func(fd uintptr) {
			f := int(fd)
			if v6 {
				serr = errors.Join(
					unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifi.Index),
					unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0),
					unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, int(c.TTL)),
					unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT))
			} else {
				serr = errors.Join(
					unix.SetsockoptIPMreqn(f, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(ifi.Index)}),
					unix.SetsockoptInt(f, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0),
					unix.SetsockoptInt(f, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, int(c.TTL)),
					unix.SetsockoptInt(f, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT))
			}
			if serr == nil && sockSize > 0 {
				serr = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_SNDBUF, sockSize)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
	dialer := net.Dialer{Control: ctl}
	network := "udp4"
	if v6 {
		network = "udp6"
	} else if a := firstIPv4(ifi); a.IsValid() {
		dialer.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0))
	}
	raddr := netip.AddrPortFrom(dst, uint16(port))
	if v6 && (dst.IsLinkLocalMulticast() || dst.IsLinkLocalUnicast()) {
		raddr = netip.AddrPortFrom(dst.WithZone(ifi.Name), uint16(port))
	}
	conn, err := dialer.DialContext(context.Background(), network, raddr.String())
	if err != nil {
		return nil, fmt.Errorf("ipvssync: master socket to %s on %s: %w", raddr, ifi.Name, err)
	}
	return conn.(*net.UDPConn), nil
}

// receiveSocket is make_receive_sock: a UDP socket with address reuse,
// an optional receive buffer size, bound to the interface and to
// group:port, member of the group on that interface. In golvs's unicast
// mode it is bound to the port on the interface instead, and joins
// nothing.
func receiveSocket(c Config, ifi *net.Interface, port, sockSize int) (*net.UDPConn, error) {
	v6 := c.Group.Is6()
	var serr error
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		err := rc.Control(func(fd uintptr) {
			f := int(fd)
			serr = errors.Join(
				unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1),
				unix.BindToDevice(f, ifi.Name))
			if serr == nil && sockSize > 0 {
				serr = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_RCVBUF, sockSize)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	network := "udp4"
	bind := netip.AddrPortFrom(c.Group, uint16(port))
	if v6 {
		network = "udp6"
		if c.Group.IsLinkLocalMulticast() {
			bind = netip.AddrPortFrom(c.Group.WithZone(ifi.Name), uint16(port))
		}
	}
	if c.Peer.IsValid() {
		if v6 {
			bind = netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(port))
		} else {
			bind = netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(port))
		}
	}
	pc, err := lc.ListenPacket(context.Background(), network, bind.String())
	if err != nil {
		return nil, fmt.Errorf("ipvssync: backup socket on %s %s: %w", ifi.Name, bind, err)
	}
	conn := pc.(*net.UDPConn)
	if !c.Peer.IsValid() {
		group := &net.UDPAddr{IP: c.Group.AsSlice()}
		if v6 {
			err = ipv6.NewPacketConn(conn).JoinGroup(ifi, group)
		} else {
			err = ipv4.NewPacketConn(conn).JoinGroup(ifi, group)
		}
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("ipvssync: joining %s on %s: %w", c.Group, ifi.Name, err)
		}
	}
	return conn, nil
}
