package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
)

// Addresses of the DR, TUN and FULLNAT labs (lab-plan.md).
var (
	RouterClientIP = netip.MustParseAddr("198.18.0.254") // TUN router, client side
	RouterDirIP    = netip.MustParseAddr("198.19.0.254") // TUN router, director side
	RouterRSIP     = netip.MustParseAddr("198.19.1.254") // TUN router, real servers' side
)

// DRRIP returns the DR-lab address of real server n (one segment with the
// client and the director).
func DRRIP(n int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + n)}) }

// TUNRIP returns the TUN-lab address of real server n (behind the router).
func TUNRIP(n int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, 1, byte(10 + n)}) }

// LIP returns FULLNAT local address n (0-based: 198.19.0.200 ...).
func LIP(n int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, 0, byte(200 + n)}) }

// ModeTopology is a DR, TUN or FULLNAT lab: the NAT lab's roles plus a
// router (TUN), and the host settings the lab made, for printing.
type ModeTopology struct {
	*Topology
	Router *NS
	RIPs   []netip.Addr
	RIPs6  []netip.Addr // dual-stack labs: the real servers' IPv6 addresses
	Notes  []string
}

// ModeNames returns the namespace names of a mode's lab.
func ModeNames(mode, suffix string, realServers int) []string {
	n := Names(suffix, realServers)
	if mode == "tun" {
		n = append(n, "router"+suffix, "rslan"+suffix)
	}
	return n
}

func (t *Topology) mk(name string) (*NS, error) {
	if _, e := os.Stat("/var/run/netns/" + name); e == nil {
		return nil, fmt.Errorf("lab: network namespace %s already exists (a lab is running? `golvs lab down` removes it)", name)
	}
	ns, err := NewNS(name)
	if err != nil {
		return nil, err
	}
	t.all = append(t.all, ns)
	if err := ns.Do(t.ipv6Setting); err != nil {
		return nil, err
	}
	return ns, nil
}

func sysctl(ns *NS, path, val string) error {
	return ns.Do(func() error {
		if err := os.WriteFile("/proc/sys/"+path, []byte(val), 0o644); err != nil {
			return fmt.Errorf("lab: %s: sysctl %s=%s: %w", ns.Name, path, val, err)
		}
		return nil
	})
}

func addAddr(ns *NS, dev string, p netip.Prefix) error {
	return ns.Do(func() error {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		return netlink.AddrAdd(l, nlAddr(p))
	})
}

func addRoute(ns *NS, dst netip.Prefix, gw netip.Addr) error {
	return ns.Do(func() error {
		r := &netlink.Route{Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}, Gw: net.IP(gw.AsSlice())}
		if err := netlink.RouteAdd(r); err != nil {
			return fmt.Errorf("lab: route %s via %s in %s: %w", dst, gw, ns.Name, err)
		}
		return nil
	})
}

func (t *ModeTopology) note(format string, args ...any) {
	t.Notes = append(t.Notes, fmt.Sprintf(format, args...))
}

func checkRS(o *Options) error {
	if err := RequireRoot(); err != nil {
		return err
	}
	if o.RealServers <= 0 {
		o.RealServers = 2
	}
	if o.RealServers > 200 {
		return fmt.Errorf("lab: at most 200 real servers (asked for %d)", o.RealServers)
	}
	return nil
}

// BuildDR builds the DR lab: client, director (ext0 only) and real servers
// on one segment (198.18.0.0/24, the lan bridge). Each real server holds
// the VIP on lo with arp_ignore=1 and arp_announce=2, so it accepts the
// VIP's packets but never answers ARP for it; its replies go straight to
// the client.
func BuildDR(o Options) (mt *ModeTopology, err error) {
	if err := checkRS(&o); err != nil {
		return nil, err
	}
	t := &Topology{Mode: "dr", Suffix: o.Suffix, IPv6: o.IPv6}
	mt = &ModeTopology{Topology: t}
	defer func() {
		if err != nil {
			t.Close()
			mt = nil
		}
	}()
	names := Names(o.Suffix, o.RealServers)
	if t.Client, err = t.mk(names[0]); err != nil {
		return mt, err
	}
	if t.Director, err = t.mk(names[1]); err != nil {
		return mt, err
	}
	if t.Switch, err = t.mk(names[2]); err != nil {
		return mt, err
	}
	if err := bridge(t.Switch, "br0"); err != nil {
		return mt, err
	}
	plug := func(ns *NS, dev string, mac net.HardwareAddr, addr netip.Prefix, port string, pmac net.HardwareAddr) error {
		if err := veth(ns, dev, mac, addr, t.Switch, port, pmac, netip.Prefix{}); err != nil {
			return err
		}
		return enslave(t.Switch, port, "br0")
	}
	if err := plug(t.Client, "eth0", MAC(roleClient, 10), pfx(CIP, 24), "p-cli", MAC(roleSwitch, 2)); err != nil {
		return mt, err
	}
	if err := plug(t.Director, DirExt, MAC(roleDirector, 1), pfx(DirExtIP, 24), "p-dir", MAC(roleSwitch, 1)); err != nil {
		return mt, err
	}
	for i := 1; i <= o.RealServers; i++ {
		rs, err := t.mk(names[2+i])
		if err != nil {
			return mt, err
		}
		t.RS = append(t.RS, rs)
		mt.RIPs = append(mt.RIPs, DRRIP(i))
		if err := plug(rs, "eth0", MAC(roleRS, byte(i)), pfx(DRRIP(i), 24), fmt.Sprintf("p-rs%d", i), MAC(roleSwitch, byte(10+i))); err != nil {
			return mt, err
		}
		if err := addAddr(rs, "lo", pfx(VIP, 32)); err != nil {
			return mt, fmt.Errorf("lab: VIP on %s/lo: %w", rs.Name, err)
		}
		if o.Mistake == "no-arp-ignore" {
			mt.note("%s: VIP %s/32 on lo; arp_ignore and arp_announce left at 0 (THE MISTAKE: it answers ARP for the VIP)", rs.Name, VIP)
			continue
		}
		for _, s := range [][2]string{
			{"net/ipv4/conf/all/arp_ignore", "1"}, {"net/ipv4/conf/eth0/arp_ignore", "1"},
			{"net/ipv4/conf/all/arp_announce", "2"}, {"net/ipv4/conf/eth0/arp_announce", "2"},
		} {
			if err := sysctl(rs, s[0], s[1]); err != nil {
				return mt, err
			}
		}
		mt.note("%s: VIP %s/32 on lo; net.ipv4.conf.{all,eth0}.arp_ignore=1 (never answer ARP for the VIP), arp_announce=2 (never announce it as an ARP source)", rs.Name, VIP)
	}
	if o.IPv6 {
		if err := mt.drIPv6(); err != nil {
			return mt, err
		}
	}
	return mt, nil
}

// BuildTUN builds the TUN lab: client, director ext0 and the router's
// client side on the lan bridge (198.18.0.0/24); the director's int0
// (198.19.0.1) on a link to the router (198.19.0.254); real servers on
// 198.19.1.0/24 behind the router (198.19.1.254), their default route.
// The director reaches the real servers only through the router, and
// their replies (from the VIP, which `golvs rs-tun` puts on a TUN device)
// go through the router straight to the client. The real servers get no
// tunnel endpoint here: the caller starts rs-tun in each.
func BuildTUN(o Options) (mt *ModeTopology, err error) {
	if err := checkRS(&o); err != nil {
		return nil, err
	}
	t := &Topology{Mode: "tun", Suffix: o.Suffix, IPv6: o.IPv6}
	mt = &ModeTopology{Topology: t}
	defer func() {
		if err != nil {
			t.Close()
			mt = nil
		}
	}()
	names := ModeNames("tun", o.Suffix, o.RealServers)
	if t.Client, err = t.mk(names[0]); err != nil {
		return mt, err
	}
	if t.Director, err = t.mk(names[1]); err != nil {
		return mt, err
	}
	if t.Switch, err = t.mk(names[2]); err != nil {
		return mt, err
	}
	if mt.Router, err = t.mk(names[len(names)-2]); err != nil {
		return mt, err
	}
	rslan, err := t.mk(names[len(names)-1])
	if err != nil {
		return mt, err
	}
	if err := bridge(t.Switch, "br0"); err != nil {
		return mt, err
	}
	if err := bridge(rslan, "br0"); err != nil {
		return mt, err
	}
	plug := func(sw *NS, ns *NS, dev string, mac net.HardwareAddr, addr netip.Prefix, port string, pmac net.HardwareAddr) error {
		if err := veth(ns, dev, mac, addr, sw, port, pmac, netip.Prefix{}); err != nil {
			return err
		}
		return enslave(sw, port, "br0")
	}
	if err := plug(t.Switch, t.Client, "eth0", MAC(roleClient, 10), pfx(CIP, 24), "p-cli", MAC(roleSwitch, 2)); err != nil {
		return mt, err
	}
	if err := plug(t.Switch, t.Director, DirExt, MAC(roleDirector, 1), pfx(DirExtIP, 24), "p-dir", MAC(roleSwitch, 1)); err != nil {
		return mt, err
	}
	if err := plug(t.Switch, mt.Router, "eth0", MAC(0x70, 1), pfx(RouterClientIP, 24), "p-rtr", MAC(roleSwitch, 3)); err != nil {
		return mt, err
	}
	if err := veth(t.Director, DirInt, MAC(roleDirector, 2), pfx(DirIntIP, 24), mt.Router, "eth1", MAC(0x70, 2), pfx(RouterDirIP, 24)); err != nil {
		return mt, err
	}
	if err := plug(rslan, mt.Router, "eth2", MAC(0x70, 3), pfx(RouterRSIP, 24), "p-rtr", MAC(roleSwitch, 4)); err != nil {
		return mt, err
	}
	for _, s := range []string{"net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter"} {
		v := "1"
		if s != "net/ipv4/ip_forward" {
			v = "0"
		}
		if err := sysctl(mt.Router, s, v); err != nil {
			return mt, err
		}
	}
	if err := addRoute(t.Director, netip.MustParsePrefix("198.19.1.0/24"), RouterDirIP); err != nil {
		return mt, err
	}
	for i := 1; i <= o.RealServers; i++ {
		rs, err := t.mk(names[2+i])
		if err != nil {
			return mt, err
		}
		t.RS = append(t.RS, rs)
		mt.RIPs = append(mt.RIPs, TUNRIP(i))
		if err := plug(rslan, rs, "eth0", MAC(roleRS, byte(i)), pfx(TUNRIP(i), 24), fmt.Sprintf("p-rs%d", i), MAC(roleSwitch, byte(10+i))); err != nil {
			return mt, err
		}
		if err := defaultRoute(rs, RouterRSIP); err != nil {
			return mt, err
		}
	}
	mt.note("router: ip_forward=1; director: route 198.19.1.0/24 via %s; real servers: default route via %s (replies bypass the director)", RouterDirIP, RouterRSIP)
	if o.IPv6 {
		if err := mt.tunIPv6(rslan); err != nil {
			return mt, err
		}
	}
	return mt, nil
}

// BuildFullNAT builds the FULLNAT lab: the NAT lab's wiring, but the real
// servers have no route off their own network at all, so only rewritten
// replies (to a local address, 198.19.0.200-.203) can reach the client.
func BuildFullNAT(o Options) (*ModeTopology, error) {
	t, err := BuildNAT(o)
	if err != nil {
		return nil, err
	}
	t.Mode = "fullnat"
	mt := &ModeTopology{Topology: t}
	for i, rs := range t.RS {
		mt.RIPs = append(mt.RIPs, RIP(i+1))
		if o.IPv6 {
			mt.RIPs6 = append(mt.RIPs6, RIP6(i+1))
		}
		err := rs.Do(func() error {
			if err := netlink.RouteDel(&netlink.Route{Gw: net.IP(DirIntIP.AsSlice())}); err != nil {
				return err
			}
			if o.IPv6 {
				return netlink.RouteDel(&netlink.Route{Gw: net.IP(DirIntIP6.AsSlice())})
			}
			return nil
		})
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("lab: removing the default route of %s: %w", rs.Name, err)
		}
	}
	mt.note("real servers: no default route (they reach only 198.19.0.0/24; the client is unreachable to them)")
	return mt, nil
}

// ServeAt is Serve with the UDP sockets bound to host (the VIP, for DR and
// TUN real servers: an unbound UDP socket would answer from the real
// server's own address, which the client does not expect; TCP answers
// from the address it was reached at anyway).
func ServeAt(ctx context.Context, ns *NS, name string, host netip.Addr, tcpPorts, udpPorts []int) (*Server, error) {
	s, err := Serve(ctx, ns, name, tcpPorts, nil)
	if err != nil {
		return nil, err
	}
	do := func(f func() error) error { return f() }
	if ns != nil {
		do = ns.Do
	}
	err = do(func() error {
		if host.Is6() { // the TCP ports for IPv6 too
			for _, p := range tcpPorts {
				l, err := net.Listen("tcp6", fmt.Sprintf("[::]:%d", p))
				if err != nil {
					return fmt.Errorf("lab: %s listening on tcp6/%d: %w", name, p, err)
				}
				s.ls = append(s.ls, l)
				go s.acceptLoop(l)
			}
		}
		for _, p := range udpPorts {
			pc, err := net.ListenPacket(udpNet(host), netip.AddrPortFrom(host, uint16(p)).String())
			if err != nil {
				return fmt.Errorf("lab: %s listening on udp %s:%d: %w", name, host, p, err)
			}
			s.pcs = append(s.pcs, pc)
			go s.udpLoop(pc)
		}
		return nil
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	go func() {
		<-ctx.Done()
		s.Close()
	}()
	return s, nil
}
