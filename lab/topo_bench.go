package lab

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Helpers for `golvs bench dataplane`: it builds the NAT lab with BuildNAT
// and then reshapes it for packet-rate measurements. Everything here acts
// inside a namespace the lab created, never in the caller's.

// BenchMAC returns the MAC a benchmark gives real server n (1-based) in the
// director's neighbour table instead of its real one. Frames to it reach
// the real server through a static bridge entry, where the kernel sees a
// frame for another host and drops it silently: the real server never
// answers a flood (no RST, no ICMP), yet a packet socket there sees every
// frame.
func BenchMAC(n int) net.HardwareAddr { return MAC(0xbe, byte(n)) }

// RouteVia adds a route to dst through gw in ns (replacing one that exists).
func RouteVia(ns *NS, dst netip.Prefix, gw netip.Addr) error {
	h, err := netlink.NewHandleAt(ns.Handle)
	if err != nil {
		return fmt.Errorf("lab: netlink in %s: %w", ns.Name, err)
	}
	defer h.Close()
	r := &netlink.Route{
		Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
		Gw:  net.IP(gw.AsSlice()),
	}
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("lab: route %s via %s in %s: %w", dst, gw, ns.Name, err)
	}
	return nil
}

// FlapLink takes link name in ns down and up again, as a cable pulled
// and put back, or a driver reset, would.
func FlapLink(ns *NS, name string) error {
	h, err := netlink.NewHandleAt(ns.Handle)
	if err != nil {
		return fmt.Errorf("lab: netlink in %s: %w", ns.Name, err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err == nil {
		err = h.LinkSetDown(l)
	}
	if err == nil {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		return fmt.Errorf("lab: flapping %s in %s: %w", name, ns.Name, err)
	}
	return nil
}

// WriteSysctl writes a /proc/sys file (path relative to /proc/sys, with
// slashes) inside ns and returns its old value, so the caller can put it
// back.
func WriteSysctl(ns *NS, path, val string) (old string, err error) {
	p := "/proc/sys/" + path
	err = ns.Do(func() error {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("lab: %s in %s: %w", p, ns.Name, err)
		}
		old = strings.TrimSpace(string(b))
		if err := os.WriteFile(p, []byte(val), 0o644); err != nil {
			return fmt.Errorf("lab: %s=%s in %s: %w", p, val, ns.Name, err)
		}
		return nil
	})
	return old, err
}

// StaticNeigh sets a permanent neighbour entry ip -> mac on dev in ns.
func StaticNeigh(ns *NS, dev string, ip netip.Addr, mac net.HardwareAddr) error {
	return withLink(ns, dev, func(h *netlink.Handle, l netlink.Link) error {
		fam := netlink.FAMILY_V4
		if ip.Is6() {
			fam = netlink.FAMILY_V6
		}
		n := &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: fam, State: netlink.NUD_PERMANENT,
			IP: net.IP(ip.AsSlice()), HardwareAddr: mac}
		if err := h.NeighSet(n); err != nil {
			return fmt.Errorf("lab: neighbour %s -> %s on %s/%s: %w", ip, mac, ns.Name, dev, err)
		}
		return nil
	})
}

// StaticFDB pins mac to a bridge port in ns (a static forwarding entry),
// so the bridge sends frames for it to that port only, never floods them.
func StaticFDB(ns *NS, port string, mac net.HardwareAddr) error {
	return withLink(ns, port, func(h *netlink.Handle, l netlink.Link) error {
		if err := h.NeighSet(fdbEntry(l, mac)); err != nil {
			return fmt.Errorf("lab: bridge entry %s -> %s/%s: %w", mac, ns.Name, port, err)
		}
		return nil
	})
}

func fdbEntry(l netlink.Link, mac net.HardwareAddr) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_NOARP,
		Flags: netlink.NTF_MASTER, HardwareAddr: mac}
}

// SteerRPS sets Receive Packet Steering on dev's first receive queue in
// ns, so the kernel's receive processing of its frames runs on cpus. The
// sysfs of a network namespace is only visible where sysfs is mounted from
// inside it: the write happens on a throwaway thread in a private mount
// namespace with its own sysfs mount (WriteSysfs).
func SteerRPS(ns *NS, dev string, cpus []int) error {
	var mask [64]uint32 // up to 2048 CPUs
	top := 0
	for _, c := range cpus {
		if c < 0 || c >= 32*len(mask) {
			return fmt.Errorf("lab: RPS: CPU %d out of range", c)
		}
		mask[c/32] |= 1 << (c % 32)
		top = max(top, c/32)
	}
	// rps_cpus takes comma-separated 32-bit hex words, most significant first.
	words := make([]string, 0, top+1)
	for i := top; i >= 0; i-- {
		words = append(words, fmt.Sprintf("%08x", mask[i]))
	}
	return WriteSysfs(ns, "class/net/"+dev+"/queues/rx-0/rps_cpus", strings.Join(words, ","))
}

// WriteSysfs writes val to /sys/<rel> as ns sees it. The sysfs of a
// network namespace is only visible where sysfs is mounted from inside
// it: the write happens on a throwaway thread in a private mount
// namespace with its own sysfs mount, so no mount is left anywhere.
func WriteSysfs(ns *NS, rel, val string) error {
	return ns.Do(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("lab: sysfs %s in %s: private mount namespace: %w", rel, ns.Name, err)
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("lab: sysfs %s in %s: making mounts private: %w", rel, ns.Name, err)
		}
		if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
			return fmt.Errorf("lab: sysfs %s in %s: mounting sysfs: %w", rel, ns.Name, err)
		}
		if err := os.WriteFile("/sys/"+rel, []byte(val), 0o644); err != nil {
			return fmt.Errorf("lab: sysfs %s in %s: %w", rel, ns.Name, err)
		}
		return nil
		// The thread is never unlocked: it dies with its mount namespace.
	})
}

// DelStaticFDB removes the bridge entry StaticFDB pinned (mac on port).
func DelStaticFDB(ns *NS, port string, mac net.HardwareAddr) error {
	return withLink(ns, port, func(h *netlink.Handle, l netlink.Link) error {
		if err := h.NeighDel(fdbEntry(l, mac)); err != nil {
			return fmt.Errorf("lab: removing bridge entry %s -> %s/%s: %w", mac, ns.Name, port, err)
		}
		return nil
	})
}

// HostAddr adds (add true) or removes ip/32 on dev in ns: a director
// that owns the VIP, for references that are servers (proxies) rather
// than forwarders.
func HostAddr(ns *NS, dev string, ip netip.Addr, add bool) error {
	return withLink(ns, dev, func(h *netlink.Handle, l netlink.Link) error {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}}
		var err error
		if add {
			err = h.AddrAdd(l, a)
		} else {
			err = h.AddrDel(l, a)
		}
		if err != nil {
			return fmt.Errorf("lab: address %s on %s/%s (add %t): %w", ip, ns.Name, dev, add, err)
		}
		return nil
	})
}
