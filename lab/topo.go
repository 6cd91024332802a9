// Package lab builds LVS experiments in network namespaces: a client, a
// director and real servers wired with veth pairs and a bridge, addressed
// from 198.18.0.0/15 as ../shared/lab-plan.md lays out, built through
// netlink (no iproute2 needed), plus the small servers and client the
// experiments use. Tests build the same topologies with a random suffix on
// every namespace name.
//
// A lab must never touch the namespace it was started from: every link and
// address it makes lives in a namespace it created, and Close removes them
// all.
package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The addressing plan (lab-plan.md).
var (
	CIP       = netip.MustParseAddr("198.18.0.10")
	VIP       = netip.MustParseAddr("198.18.0.100")
	DirExtIP  = netip.MustParseAddr("198.18.0.1")
	DirIntIP  = netip.MustParseAddr("198.19.0.1")
	clientNet = 24
)

// RIP returns the NAT-lab address of real server n (1-based).
func RIP(n int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, 0, byte(10 + n)}) }

// MAC returns a fixed, locally administered MAC for a lab role, so traces
// and pcaps read the same from run to run.
func MAC(role byte, n byte) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, role, n}
}

// Roles in MACs.
const (
	roleClient   = 0x0c
	roleDirector = 0xd1
	roleRS       = 0x5e
	roleSwitch   = 0xb0
	roleRouter   = 0x7e
)

// Interface names inside the director namespace.
const (
	DirExt = "ext0"
	DirInt = "int0"
)

// Topology is a built lab.
type Topology struct {
	Mode     string
	Suffix   string
	IPv6     bool // dual-stack (Options.IPv6)
	Client   *NS
	Director *NS
	Switch   *NS
	RS       []*NS
	all      []*NS
}

// Options shape a lab.
type Options struct {
	// Suffix is appended to every namespace name ("" for the plain names
	// of an interactive lab; tests pass a random one).
	Suffix      string
	RealServers int // default 2
	// Mistake builds a classic misconfiguration for the teaching labs:
	// "wrong-gateway" (NAT: the real servers' default gateway is a
	// router, not the director), "no-arp-ignore" (DR: the real servers
	// answer ARP for the VIP).
	Mistake string
	// IPv6 makes the lab dual-stack (topo6.go): every address gets its
	// IPv6 twin from 2001:db8:18::/64 (client side) and 2001:db8:19::/64
	// (server side), the VIP 2001:db8:18::100, with the same routes.
	// Without it IPv6 is off in every namespace (no chatter).
	IPv6 bool
}

// Mistakes are the misconfigurations the labs can build, by mode.
var Mistakes = map[string]string{
	"wrong-gateway": "nat",
	"no-arp-ignore": "dr",
	"no-pmtu":       "tun",
}

// Names returns the namespace names a lab with this suffix uses.
func Names(suffix string, realServers int) []string {
	n := []string{"client" + suffix, "director" + suffix, "lan" + suffix}
	for i := 1; i <= realServers; i++ {
		n = append(n, fmt.Sprintf("rs%d%s", i, suffix))
	}
	return n
}

// BuildNAT builds the NAT lab: client -- director(ext0 | int0) -- lan
// bridge -- rs1..rsN, the real servers' default gateway being the DIP.
func BuildNAT(o Options) (t *Topology, err error) {
	if err := RequireRoot(); err != nil {
		return nil, err
	}
	if o.RealServers <= 0 {
		o.RealServers = 2
	}
	if o.RealServers > 200 {
		return nil, fmt.Errorf("lab: at most 200 real servers (asked for %d)", o.RealServers)
	}
	if o.Mistake != "" && o.Mistake != "wrong-gateway" {
		return nil, fmt.Errorf("lab: mistake %q is not one of the NAT lab's (wrong-gateway)", o.Mistake)
	}
	t = &Topology{Mode: "nat", Suffix: o.Suffix, IPv6: o.IPv6}
	defer func() {
		if err != nil {
			t.Close()
			t = nil
		}
	}()
	names := Names(o.Suffix, o.RealServers)
	for _, n := range names {
		if _, e := os.Stat("/var/run/netns/" + n); e == nil {
			return t, fmt.Errorf("lab: network namespace %s already exists (a lab is running? `golvs lab down` removes it)", n)
		}
	}
	mk := func(name string) (*NS, error) {
		ns, err := NewNS(name)
		if err != nil {
			return nil, err
		}
		t.all = append(t.all, ns)
		return ns, nil
	}
	if t.Client, err = mk(names[0]); err != nil {
		return t, err
	}
	if t.Director, err = mk(names[1]); err != nil {
		return t, err
	}
	if t.Switch, err = mk(names[2]); err != nil {
		return t, err
	}
	for i := 1; i <= o.RealServers; i++ {
		rs, err := mk(names[2+i])
		if err != nil {
			return t, err
		}
		t.RS = append(t.RS, rs)
	}
	for _, ns := range t.all {
		if err := ns.Do(t.ipv6Setting); err != nil {
			return t, err
		}
	}
	// client eth0 <-> director ext0
	if err := veth(t.Client, "eth0", MAC(roleClient, 10), pfx(CIP, clientNet),
		t.Director, DirExt, MAC(roleDirector, 1), pfx(DirExtIP, 24)); err != nil {
		return t, err
	}
	// the lan bridge
	if err := bridge(t.Switch, "br0"); err != nil {
		return t, err
	}
	if err := t.plugDirInt(); err != nil {
		return t, err
	}
	for i, rs := range t.RS {
		port := fmt.Sprintf("p-rs%d", i+1)
		if err := veth(rs, "eth0", MAC(roleRS, byte(i+1)), pfx(RIP(i+1), 24),
			t.Switch, port, MAC(roleSwitch, byte(10+i)), netip.Prefix{}); err != nil {
			return t, err
		}
		if err := enslave(t.Switch, port, "br0"); err != nil {
			return t, err
		}
		gw := DirIntIP
		if o.Mistake == "wrong-gateway" {
			gw = RouterLanIP
		}
		if err := defaultRoute(rs, gw); err != nil {
			return t, err
		}
	}
	if o.IPv6 {
		if err := t.natIPv6(); err != nil {
			return t, err
		}
	}
	if o.Mistake == "wrong-gateway" {
		if err := wrongGatewayRouter(t, o.Suffix); err != nil {
			return t, err
		}
	}
	return t, nil
}

// Close deletes every namespace of the lab (their links go with them).
func (t *Topology) Close() {
	for i := len(t.all) - 1; i >= 0; i-- {
		t.all[i].Delete()
	}
	t.all = nil
}

// Namespaces lists the lab's namespaces.
func (t *Topology) Namespaces() []*NS { return t.all }

// ReplugDirInt removes the director's lan interface and makes it again,
// as ifdown and ifup of a VLAN or a bond do: the same name, MAC and
// address, plugged into the lan bridge again, but a new interface to the
// kernel (another index). For tests of a director that outlives it.
func (t *Topology) ReplugDirInt() error {
	if err := withLink(t.Director, DirInt, func(h *netlink.Handle, l netlink.Link) error {
		return h.LinkDel(l) // its peer on the bridge goes with it
	}); err != nil {
		return fmt.Errorf("lab: removing %s: %w", DirInt, err)
	}
	return t.plugDirInt()
}

// plugDirInt makes the director's lan interface and plugs its peer into
// the lan bridge.
func (t *Topology) plugDirInt() error {
	if err := veth(t.Director, DirInt, MAC(roleDirector, 2), pfx(DirIntIP, 24),
		t.Switch, "p-dir", MAC(roleSwitch, 1), netip.Prefix{}); err != nil {
		return err
	}
	return enslave(t.Switch, "p-dir", "br0")
}

// DeleteByNames removes namespaces left by a kept lab; missing ones are
// skipped. It returns the names it removed.
func DeleteByNames(names []string) []string {
	var done []string
	for _, n := range names {
		if _, err := os.Stat("/var/run/netns/" + n); err != nil {
			continue
		}
		if err := netns.DeleteNamed(n); err == nil {
			done = append(done, n)
		}
	}
	return done
}

func pfx(a netip.Addr, bits int) netip.Prefix { return netip.PrefixFrom(a, bits) }

func quietIPv6() error {
	for _, p := range []string{"/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6"} {
		if err := os.WriteFile(p, []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("lab: %s: %w", p, err)
		}
	}
	return nil
}

func linkUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("lab: link %s: %w", name, err)
	}
	return netlink.LinkSetUp(l)
}

// veth makes a veth pair between two namespaces, with MACs, optional
// addresses, both ends up.
func veth(a *NS, an string, amac net.HardwareAddr, aaddr netip.Prefix, b *NS, bn string, bmac net.HardwareAddr, baddr netip.Prefix) error {
	h, err := netlink.NewHandleAt(a.Handle)
	if err != nil {
		return fmt.Errorf("lab: netlink in %s: %w", a.Name, err)
	}
	defer h.Close()
	v := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: an, HardwareAddr: amac, MTU: 1500},
		PeerName:         bn,
		PeerHardwareAddr: bmac,
		PeerNamespace:    netlink.NsFd(int(b.Handle)),
	}
	if err := h.LinkAdd(v); err != nil {
		return fmt.Errorf("lab: veth %s/%s - %s/%s: %w", a.Name, an, b.Name, bn, err)
	}
	if err := setup(a, an, aaddr); err != nil {
		return err
	}
	return setup(b, bn, baddr)
}

func setup(ns *NS, name string, addr netip.Prefix) error {
	return withLink(ns, name, func(h *netlink.Handle, l netlink.Link) error {
		if addr.IsValid() {
			if err := h.AddrAdd(l, nlAddr(addr)); err != nil {
				return fmt.Errorf("lab: address %s on %s/%s: %w", addr, ns.Name, name, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("lab: %s/%s up: %w", ns.Name, name, err)
		}
		return nil
	})
}

// withLink runs fn with a netlink handle in ns and the link named dev.
func withLink(ns *NS, dev string, fn func(h *netlink.Handle, l netlink.Link) error) error {
	h, err := netlink.NewHandleAt(ns.Handle)
	if err != nil {
		return fmt.Errorf("lab: netlink in %s: %w", ns.Name, err)
	}
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("lab: %s/%s: %w", ns.Name, dev, err)
	}
	return fn(h, l)
}

func bridge(ns *NS, name string) error {
	h, err := netlink.NewHandleAt(ns.Handle)
	if err != nil {
		return err
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("lab: bridge %s in %s: %w", name, ns.Name, err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	return h.LinkSetUp(l)
}

func enslave(ns *NS, port, br string) error {
	h, err := netlink.NewHandleAt(ns.Handle)
	if err != nil {
		return err
	}
	defer h.Close()
	p, err := h.LinkByName(port)
	if err != nil {
		return err
	}
	b, err := h.LinkByName(br)
	if err != nil {
		return err
	}
	if err := h.LinkSetMaster(p, b); err != nil {
		return fmt.Errorf("lab: %s into %s: %w", port, br, err)
	}
	return nil
}

func defaultRoute(ns *NS, gw netip.Addr) error {
	h, err := netlink.NewHandleAt(ns.Handle)
	if err != nil {
		return err
	}
	defer h.Close()
	r := &netlink.Route{Gw: net.IP(gw.AsSlice())}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("lab: default route via %s in %s: %w", gw, ns.Name, err)
	}
	return nil
}

// RandomSuffix returns a short random suffix for test namespace names.
func RandomSuffix() string {
	b := make([]byte, 3)
	f, err := os.Open("/dev/urandom")
	if err == nil {
		_, _ = f.Read(b)
		f.Close()
	}
	return "-" + strings.ToLower(fmt.Sprintf("%x", b))
}
