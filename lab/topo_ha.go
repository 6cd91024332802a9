package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
)

// The HA lab's addresses: two directors on the same two segments as the
// NAT lab's one, and the real servers' gateway (the DIP) as an address
// that moves to whichever director is master.
var (
	HAGatewayIP = DirIntIP // 198.19.0.1: the floating DIP, the real servers' default gateway
)

// HADirExtIP and HADirIntIP are director n's (1 or 2) own addresses.
func HADirExtIP(n int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(1 + n)}) }
func HADirIntIP(n int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, 0, byte(1 + n)}) }

// HATopology is the HA lab: a client, two directors and real servers; the
// client segment (198.18.0.0/24) and the servers' (198.19.0.0/24) are
// bridges in the lan namespace, and both directors sit on both (ext0,
// int0), so either can serve the VIP and sync connections to the other.
type HATopology struct {
	*Topology
	Directors [2]*NS
}

// HANames returns the namespace names of an HA lab.
func HANames(suffix string, realServers int) []string {
	n := []string{"client" + suffix, "director1" + suffix, "director2" + suffix, "lan" + suffix}
	for i := 1; i <= realServers; i++ {
		n = append(n, fmt.Sprintf("rs%d%s", i, suffix))
	}
	return n
}

// BuildHA builds the HA lab (NAT): the real servers' default gateway is
// HAGatewayIP, given to no director yet (SetGateway gives it).
func BuildHA(o Options) (ht *HATopology, err error) {
	if err := checkRS(&o); err != nil {
		return nil, err
	}
	t := &Topology{Mode: "ha", Suffix: o.Suffix}
	ht = &HATopology{Topology: t}
	defer func() {
		if err != nil {
			t.Close()
			ht = nil
		}
	}()
	names := HANames(o.Suffix, o.RealServers)
	if t.Client, err = t.mk(names[0]); err != nil {
		return ht, err
	}
	for i := range ht.Directors {
		if ht.Directors[i], err = t.mk(names[1+i]); err != nil {
			return ht, err
		}
	}
	t.Director = ht.Directors[0]
	if t.Switch, err = t.mk(names[3]); err != nil {
		return ht, err
	}
	for i := 1; i <= o.RealServers; i++ {
		rs, err := t.mk(names[3+i])
		if err != nil {
			return ht, err
		}
		t.RS = append(t.RS, rs)
	}
	for _, br := range []string{"br0", "br1"} {
		if err := bridge(t.Switch, br); err != nil {
			return ht, err
		}
	}
	plug := func(ns *NS, dev string, mac net.HardwareAddr, addr netip.Prefix, port, br string, pmac net.HardwareAddr) error {
		if err := veth(ns, dev, mac, addr, t.Switch, port, pmac, netip.Prefix{}); err != nil {
			return err
		}
		return enslave(t.Switch, port, br)
	}
	if err := plug(t.Client, "eth0", MAC(roleClient, 10), pfx(CIP, clientNet), "p-cli", "br1", MAC(roleSwitch, 2)); err != nil {
		return ht, err
	}
	for i, d := range ht.Directors {
		n := i + 1
		if err := plug(d, DirExt, MAC(roleDirector, byte(0x10*n+1)), pfx(HADirExtIP(n), 24), fmt.Sprintf("p-d%d-ext", n), "br1", MAC(roleSwitch, byte(0x10*n+1))); err != nil {
			return ht, err
		}
		if err := plug(d, DirInt, MAC(roleDirector, byte(0x10*n+2)), pfx(HADirIntIP(n), 24), fmt.Sprintf("p-d%d-int", n), "br0", MAC(roleSwitch, byte(0x10*n+2))); err != nil {
			return ht, err
		}
	}
	for i, rs := range t.RS {
		if err := plug(rs, "eth0", MAC(roleRS, byte(i+1)), pfx(RIP(i+1), 24), fmt.Sprintf("p-rs%d", i+1), "br0", MAC(roleSwitch, byte(0x40+i))); err != nil {
			return ht, err
		}
		if err := defaultRoute(rs, HAGatewayIP); err != nil {
			return ht, err
		}
	}
	return ht, nil
}

// SetGateway gives the real servers' gateway address (HAGatewayIP) to
// director n (1 or 2), taking it from the other, and makes the client and
// the real servers forget the old owners' MACs for the gateway and the
// VIP (the lab's stand-in for a VRRP takeover's gratuitous ARP).
func (ht *HATopology) SetGateway(n int) error {
	gw := pfx(HAGatewayIP, 24)
	for i, d := range ht.Directors {
		err := withLink(d, DirInt, func(h *netlink.Handle, l netlink.Link) error {
			a := &netlink.Addr{IPNet: &net.IPNet{IP: gw.Addr().AsSlice(), Mask: net.CIDRMask(gw.Bits(), 32)}}
			if i+1 == n {
				return h.AddrReplace(l, a)
			}
			if err := h.AddrDel(l, a); err != nil && !isNoAddr(err) {
				return err
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("lab: gateway on %s: %w", d.Name, err)
		}
	}
	if err := forget(ht.Client, "eth0", VIP); err != nil {
		return err
	}
	for _, rs := range ht.RS {
		if err := forget(rs, "eth0", HAGatewayIP); err != nil {
			return err
		}
	}
	return nil
}

func isNoAddr(err error) bool {
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.ENOENT)
}

// forget drops a neighbour entry (the next packet asks ARP again).
func forget(ns *NS, dev string, ip netip.Addr) error {
	return withLink(ns, dev, func(h *netlink.Handle, l netlink.Link) error {
		err := h.NeighDel(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, IP: ip.AsSlice()})
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("lab: forgetting %s in %s: %w", ip, ns.Name, err)
		}
		return nil
	})
}

// Partition cuts (on) or restores (off) the directors' client-side link
// to each other while both still reach the client: their bridge ports
// become isolated ports, which forward to every port but each other. The
// VRRP adverts stop crossing, so each director elects itself: a split
// brain, as a broken switch between two directors makes one.
func (t *HATopology) Partition(on bool) error {
	h, err := netlink.NewHandleAt(t.Switch.Handle)
	if err != nil {
		return fmt.Errorf("lab: netlink in %s: %w", t.Switch.Name, err)
	}
	defer h.Close()
	for _, p := range []string{"p-d1-ext", "p-d2-ext"} {
		l, err := h.LinkByName(p)
		if err != nil {
			return fmt.Errorf("lab: %s/%s: %w", t.Switch.Name, p, err)
		}
		if err := h.LinkSetIsolated(l, on); err != nil {
			return fmt.Errorf("lab: isolating %s: %w", p, err)
		}
	}
	return nil
}
