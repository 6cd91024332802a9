package lab

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Addresses of the wrong-gateway lab's router.
var (
	RouterLanIP    = netip.MustParseAddr("198.19.0.254") // on the real servers' segment
	RouterCliIP    = netip.MustParseAddr("198.18.1.254") // on a second link to the client
	ClientSecondIP = netip.MustParseAddr("198.18.1.10")
)

// wrongGatewayRouter adds the router of the NAT "wrong gateway" mistake:
// it sits on the real servers' segment (198.19.0.254, their default
// gateway in this lab) and has its own link to the client, so replies
// from the real servers reach the client without passing the director:
// un-rewritten, from the RIP, which the client's TCP answers with a reset.
func wrongGatewayRouter(t *Topology, suffix string) error {
	r, err := NewNS("router" + suffix)
	if err != nil {
		return err
	}
	t.all = append(t.all, r)
	if err := r.Do(quietIPv6); err != nil {
		return err
	}
	if err := veth(r, "eth0", MAC(roleRouter, 1), pfx(RouterLanIP, 24), t.Switch, "p-rtr", MAC(roleSwitch, 3), netip.Prefix{}); err != nil {
		return err
	}
	if err := enslave(t.Switch, "p-rtr", "br0"); err != nil {
		return err
	}
	if err := veth(r, "eth1", MAC(roleRouter, 2), pfx(RouterCliIP, 24), t.Client, "eth1", MAC(roleClient, 11), pfx(ClientSecondIP, 24)); err != nil {
		return err
	}
	if err := sysctl(r, "net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	// The router reaches the client's first address over the second link,
	// and the client (which must accept it there) sends its resets back.
	if err := addRoute(r, pfx(CIP, 32), ClientSecondIP); err != nil {
		return err
	}
	for _, p := range []string{"net/ipv4/conf/all/rp_filter", "net/ipv4/conf/eth1/rp_filter", "net/ipv4/conf/eth0/rp_filter"} {
		if err := sysctl(t.Client, p, "0"); err != nil {
			return err
		}
	}
	return addRoute(t.Client, netip.MustParsePrefix("198.19.0.0/24"), RouterCliIP)
}

// FixGateway points every real server's default route at the director's
// DIP, as the NAT lab needs (the fix of the wrong-gateway mistake).
func FixGateway(t *Topology) error {
	for _, rs := range t.RS {
		err := rs.Do(func() error {
			r := &netlink.Route{Dst: nil, Gw: net.IP(DirIntIP.AsSlice())}
			return netlink.RouteReplace(r)
		})
		if err != nil {
			return fmt.Errorf("lab: default route via %s in %s: %w", DirIntIP, rs.Name, err)
		}
	}
	return nil
}

// FixARP sets arp_ignore=1 and arp_announce=2 on the DR lab's real
// servers and makes the client forget the VIP's MAC (the fix of the
// no-arp-ignore mistake).
func FixARP(mt *ModeTopology) error {
	for _, rs := range mt.RS {
		for _, s := range [][2]string{
			{"net/ipv4/conf/all/arp_ignore", "1"}, {"net/ipv4/conf/eth0/arp_ignore", "1"},
			{"net/ipv4/conf/all/arp_announce", "2"}, {"net/ipv4/conf/eth0/arp_announce", "2"},
		} {
			if err := sysctl(rs, s[0], s[1]); err != nil {
				return err
			}
		}
	}
	return ForgetNeighbor(mt.Client, VIP)
}

// ForgetNeighbor removes ip from a namespace's neighbour table.
func ForgetNeighbor(ns *NS, ip netip.Addr) error {
	return eachNeighbor(ns, ip, func(n *netlink.Neigh) { _ = netlink.NeighDel(n) })
}

// NeighborMAC returns the MAC a namespace's neighbour table holds for ip.
func NeighborMAC(ns *NS, ip netip.Addr) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := eachNeighbor(ns, ip, func(n *netlink.Neigh) {
		if len(n.HardwareAddr) == 6 {
			mac = n.HardwareAddr
		}
	})
	return mac, err
}

// eachNeighbor calls fn, inside ns, for every neighbour entry of ip (an
// ARP entry, or an NDP one for an IPv6 address).
func eachNeighbor(ns *NS, ip netip.Addr, fn func(n *netlink.Neigh)) error {
	return ns.Do(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		fam := netlink.FAMILY_V4
		if ip.Is6() {
			fam = netlink.FAMILY_V6
		}
		for _, l := range links {
			neighs, _ := netlink.NeighList(l.Attrs().Index, fam)
			for i := range neighs {
				if a, ok := netip.AddrFromSlice(neighs[i].IP); ok && a.Unmap() == ip {
					fn(&neighs[i])
				}
			}
		}
		return nil
	})
}
