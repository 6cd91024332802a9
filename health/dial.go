package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Env is where checks run: it makes sockets and starts scripts. Sockets
// belong to the network namespace they were made in, so an Env made for
// another namespace (tests run a director in one) checks real servers
// there; everything after the socket call is the same code.
type Env interface {
	// Socket is socket(2); the flags include SOCK_NONBLOCK|SOCK_CLOEXEC.
	Socket(domain, typ, proto int) (int, error)
	// Start starts a prepared command (exec.Cmd.Start).
	Start(cmd *exec.Cmd) error
}

// HostEnv runs checks in the calling process's network namespace.
type HostEnv struct{}

// Socket implements Env.
func (HostEnv) Socket(domain, typ, proto int) (int, error) { return unix.Socket(domain, typ, proto) }

// Start implements Env.
func (HostEnv) Start(cmd *exec.Cmd) error { return cmd.Start() }

// dialOpts are a checker's socket settings.
type dialOpts struct {
	bind   netip.AddrPort
	bindIf string
	mark   uint32
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// dial connects a TCP ("tcp") or UDP ("udp") socket made by env to
// raddr, bounded by ctx. The connect goes through Go's poller, so the
// deadline and cancellation hold however the peer behaves.
func dial(ctx context.Context, env Env, network string, raddr netip.AddrPort, o dialOpts) (net.Conn, error) {
	raddr = netip.AddrPortFrom(raddr.Addr().Unmap(), raddr.Port())
	domain := unix.AF_INET
	if raddr.Addr().Is6() {
		domain = unix.AF_INET6
	}
	typ := unix.SOCK_STREAM
	if network == "udp" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := env.Socket(domain, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "health-check")
	defer f.Close() // net.FileConn keeps its own copy
	if o.mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(o.mark)); err != nil {
			return nil, fmt.Errorf("fwmark %d: %w", o.mark, err)
		}
	}
	if o.bindIf != "" {
		if err := unix.BindToDevice(fd, o.bindIf); err != nil {
			return nil, fmt.Errorf("bind_if %s: %w", o.bindIf, err)
		}
	}
	if o.bind.Addr().IsValid() || o.bind.Port() != 0 {
		b := o.bind
		if !b.Addr().IsValid() {
			if domain == unix.AF_INET {
				b = netip.AddrPortFrom(netip.IPv4Unspecified(), b.Port())
			} else {
				b = netip.AddrPortFrom(netip.IPv6Unspecified(), b.Port())
			}
		}
		if typ == unix.SOCK_STREAM {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		}
		if err := unix.Bind(fd, sockaddr(b)); err != nil {
			return nil, fmt.Errorf("bindto %s: %w", b, err)
		}
	}
	err = unix.Connect(fd, sockaddr(raddr))
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return nil, fmt.Errorf("connect %s: %w", raddr, err)
	}
	if err != nil {
		if err := waitConnected(ctx, f); err != nil {
			return nil, fmt.Errorf("connect %s: %w", raddr, err)
		}
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", raddr, err)
	}
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	return c, nil
}

// waitConnected waits for a non-blocking connect to finish, as Go's net
// package does: writable, then SO_ERROR, then getpeername against
// spurious wake-ups.
func waitConnected(ctx context.Context, f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok {
		_ = f.SetWriteDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	var cerr error
	werr := rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			cerr = err
			return true
		}
		switch syscall.Errno(v) {
		case 0:
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
			return false
		default:
			cerr = syscall.Errno(v)
			return true
		}
		_, err = unix.Getpeername(int(fd))
		return err == nil
	})
	if cerr != nil {
		return cerr
	}
	if werr != nil {
		if errors.Is(werr, os.ErrDeadlineExceeded) {
			if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return ctx.Err()
			}
			return errTimeout
		}
		return werr
	}
	return nil
}

var errTimeout = errors.New("timeout")
