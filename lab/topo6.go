package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The IPv6 half of the addressing plan (lab-plan.md): 2001:db8:18::/64 on
// the client side, 2001:db8:19::/64 on the server side, the VIP
// 2001:db8:18::100. Each host keeps the digits of its IPv4 address's last
// byte (198.19.0.11 is 2001:db8:19::11), so traces of both families read
// alike; the TUN lab's real servers, behind the router, are on
// 2001:db8:19:1::/64 as they are on 198.19.1.0/24.
var (
	CIP6            = netip.MustParseAddr("2001:db8:18::10")
	VIP6            = netip.MustParseAddr("2001:db8:18::100")
	DirExtIP6       = netip.MustParseAddr("2001:db8:18::1")
	DirIntIP6       = netip.MustParseAddr("2001:db8:19::1")
	RouterClientIP6 = netip.MustParseAddr("2001:db8:18::254")
	RouterDirIP6    = netip.MustParseAddr("2001:db8:19::254")
	RouterRSIP6     = netip.MustParseAddr("2001:db8:19:1::254")
)

// host6 is an address of prefix pre whose last group reads as the
// decimal number n (2001:db8:19::11 for 11).
func host6(pre string, n int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("%s%d", pre, n))
}

// RIP6 is real server n's IPv6 address in the NAT and FULLNAT labs.
func RIP6(n int) netip.Addr { return host6("2001:db8:19::", 10+n) }

// DRRIP6 is real server n's IPv6 address in the DR lab.
func DRRIP6(n int) netip.Addr { return host6("2001:db8:18::", 10+n) }

// TUNRIP6 is real server n's IPv6 address in the TUN lab.
func TUNRIP6(n int) netip.Addr { return host6("2001:db8:19:1::", 10+n) }

// LIP6 is FULLNAT IPv6 local address n (0-based: 2001:db8:19::200 ...).
func LIP6(n int) netip.Addr { return host6("2001:db8:19::", 200+n) }

// nlAddr is a netlink address for p; an IPv6 one skips duplicate address
// detection (a lab's addresses are unique by construction, and DAD would
// hold them unusable for a second or two).
func nlAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// ipv6Setting runs in each of the lab's namespaces as it is made: IPv6
// off (quietIPv6), or on for a dual-stack lab, without duplicate address
// detection, router solicitations or autoconfiguration (the addresses
// are static, and a quiet link keeps traces readable).
func (t *Topology) ipv6Setting() error {
	if !t.IPv6 {
		return quietIPv6()
	}
	for _, c := range []string{"all", "default"} {
		for _, s := range [][2]string{{"disable_ipv6", "0"}, {"accept_dad", "0"}, {"dad_transmits", "0"}, {"router_solicitations", "0"}, {"accept_ra", "0"}, {"autoconf", "0"}} {
			p := "/proc/sys/net/ipv6/conf/" + c + "/" + s[0]
			if err := os.WriteFile(p, []byte(s[1]), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("lab: %s: %w", p, err)
			}
		}
	}
	return nil
}

func addAddrs6(pairs ...any) error {
	for i := 0; i < len(pairs); i += 3 {
		ns, dev, p := pairs[i].(*NS), pairs[i+1].(string), pairs[i+2].(netip.Prefix)
		if err := addAddr(ns, dev, p); err != nil {
			return fmt.Errorf("lab: %s on %s/%s: %w", p, ns.Name, dev, err)
		}
	}
	return nil
}

// natIPv6 gives the NAT (and FULLNAT) lab its IPv6 addresses and the real
// servers their IPv6 default route through the director.
func (t *Topology) natIPv6() error {
	if err := addAddrs6(t.Client, "eth0", pfx(CIP6, 64), t.Director, DirExt, pfx(DirExtIP6, 64), t.Director, DirInt, pfx(DirIntIP6, 64)); err != nil {
		return err
	}
	for i, rs := range t.RS {
		if err := addAddrs6(rs, "eth0", pfx(RIP6(i+1), 64)); err != nil {
			return err
		}
		if err := defaultRoute(rs, DirIntIP6); err != nil {
			return err
		}
	}
	return nil
}

// drIPv6: the DR lab's IPv6 addresses, and the VIP on each real server's
// lo. An IPv6 host answers Neighbor Solicitations only for addresses of
// the interface they arrive on, so the VIP on lo needs no arp_ignore.
func (mt *ModeTopology) drIPv6() error {
	t := mt.Topology
	if err := addAddrs6(t.Client, "eth0", pfx(CIP6, 64), t.Director, DirExt, pfx(DirExtIP6, 64)); err != nil {
		return err
	}
	for i, rs := range t.RS {
		mt.RIPs6 = append(mt.RIPs6, DRRIP6(i+1))
		if err := addAddrs6(rs, "eth0", pfx(DRRIP6(i+1), 64), rs, "lo", pfx(VIP6, 128)); err != nil {
			return err
		}
	}
	mt.note("IPv6: VIP %s/128 on each real server's lo (a host answers Neighbor Solicitations only on the interface that holds the address: nothing like arp_ignore is needed)", VIP6)
	return nil
}

// tunIPv6: the TUN lab's IPv6 addresses and routes (the router forwards
// IPv6 too; the director reaches 2001:db8:19:1::/64 through it).
func (mt *ModeTopology) tunIPv6(rslan *NS) error {
	t := mt.Topology
	if err := addAddrs6(t.Client, "eth0", pfx(CIP6, 64), t.Director, DirExt, pfx(DirExtIP6, 64), t.Director, DirInt, pfx(DirIntIP6, 64),
		mt.Router, "eth0", pfx(RouterClientIP6, 64), mt.Router, "eth1", pfx(RouterDirIP6, 64), mt.Router, "eth2", pfx(RouterRSIP6, 64)); err != nil {
		return err
	}
	if err := sysctl(mt.Router, "net/ipv6/conf/all/forwarding", "1"); err != nil {
		return err
	}
	if err := addRoute(t.Director, netip.MustParsePrefix("2001:db8:19:1::/64"), RouterDirIP6); err != nil {
		return err
	}
	for i, rs := range t.RS {
		mt.RIPs6 = append(mt.RIPs6, TUNRIP6(i+1))
		if err := addAddrs6(rs, "eth0", pfx(TUNRIP6(i+1), 64)); err != nil {
			return err
		}
		if err := defaultRoute(rs, RouterRSIP6); err != nil {
			return err
		}
	}
	mt.note("IPv6: router forwarding=1; director: route 2001:db8:19:1::/64 via %s; real servers: default route via %s", RouterDirIP6, RouterRSIP6)
	return nil
}
