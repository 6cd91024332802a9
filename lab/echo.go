package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// EchoUDP answers every datagram arriving at addr (inside ns; the VIP for
// DR and TUN real servers, 0.0.0.0 or :: otherwise) with the same bytes, up to
// 64 KiB, until ctx is done: datagrams longer than the MTU, fragmented by
// the sender's kernel, come back as long, fragmented by this one's.
func EchoUDP(ctx context.Context, ns *NS, addr netip.AddrPort) error {
	var pc net.PacketConn
	listen := func() error {
		var err error
		pc, err = net.ListenPacket(udpNet(addr.Addr()), addr.String())
		return err
	}
	var err error
	if ns != nil {
		err = ns.Do(listen)
	} else {
		err = listen()
	}
	if err != nil {
		return fmt.Errorf("lab: UDP echo on %s: %w", addr, err)
	}
	go func() {
		<-ctx.Done()
		pc.Close()
	}()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	return nil
}

// PMTUDisc is a UDP socket's path-MTU discovery setting (IP_MTU_DISCOVER).
type PMTUDisc int

// The settings EchoRoundTrip uses: the kernel's default (DF set, the
// datagram fragmented locally when it exceeds the path MTU the kernel
// knows), or DF clear, never set.
const (
	PMTUDefault PMTUDisc = iota
	PMTUDont
)

// ErrEchoMismatch is an answer that differs from what was sent.
var ErrEchoMismatch = errors.New("lab: the echo differs from the datagram sent")

// EchoRoundTrip sends payload to addr from inside ns, tries times at most
// (each waiting up to timeout), and checks that the answer, from addr, is
// the same bytes. It returns how many tries it took.
func EchoRoundTrip(ns *NS, addr netip.AddrPort, payload []byte, pmtu PMTUDisc, tries int, timeout time.Duration) (int, error) {
	used := 0
	err := ns.Do(func() error {
		c, err := net.ListenUDP(udpNet(addr.Addr()), nil)
		if err != nil {
			return err
		}
		defer c.Close()
		if pmtu == PMTUDont && addr.Addr().Is4() { // IPv6 is never fragmented on the way
			rc, err := c.SyscallConn()
			if err != nil {
				return err
			}
			var serr error
			_ = rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
			})
			if serr != nil {
				return serr
			}
		}
		buf := make([]byte, 65536)
		var last error
		for used < tries {
			used++
			if _, err := c.WriteToUDPAddrPort(payload, addr); err != nil {
				last = err
				continue
			}
			_ = c.SetReadDeadline(time.Now().Add(timeout))
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				last = err
				continue
			}
			if from != addr || !bytes.Equal(buf[:n], payload) {
				return fmt.Errorf("%w: %d bytes from %s", ErrEchoMismatch, n, from)
			}
			return nil
		}
		return fmt.Errorf("lab: no echo of %d bytes from %s in %d tries: %w", len(payload), addr, tries, last)
	})
	return used, err
}
