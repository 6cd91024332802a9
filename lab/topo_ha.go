package lab

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// The HA lab (issue 15): two directors on the same two segments, a VRRP
// pair. Each director keeps its own kernel address on both segments (VRRP
// adverts come from it); the VIP and the real servers' gateway
// (198.19.0.1, the plan's DIP) are the pair's floating addresses, owned by
// the master's golvs and never by a kernel.
var (
	HAGatewayIP = DirIntIP // 198.19.0.1: the floating DIP, the real servers' default gateway
)

// HADirExtIP returns director n's (1 or 2) own client-side address.
func HADirExtIP(n int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(1 + n)}) }

// HADirIntIP returns director n's own server-side address.
func HADirIntIP(n int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, 0, byte(1 + n)}) }

// HATopology is the HA lab: client -- br1 -- director1, director2 -- br0
// -- rs1..rsN, both bridges in the lan namespace.
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

// BuildHA builds the HA lab. The directors get ext0 (198.18.0.2, .3) and
// int0 (198.19.0.2, .3); the real servers route via the floating gateway
// 198.19.0.1.
func BuildHA(o Options) (t *HATopology, err error) {
	if err := RequireRoot(); err != nil {
		return nil, err
	}
	if o.RealServers <= 0 {
		o.RealServers = 2
	}
	if o.RealServers > 50 {
		return nil, fmt.Errorf("lab: at most 50 real servers (asked for %d)", o.RealServers)
	}
	t = &HATopology{Topology: &Topology{Mode: "ha", Suffix: o.Suffix}}
	defer func() {
		if err != nil {
			t.Close()
			t = nil
		}
	}()
	names := HANames(o.Suffix, o.RealServers)
	if t.Client, err = t.mk(names[0]); err != nil {
		return t, err
	}
	for i := range t.Directors {
		if t.Directors[i], err = t.mk(names[1+i]); err != nil {
			return t, err
		}
	}
	t.Director = t.Directors[0]
	if t.Switch, err = t.mk(names[3]); err != nil {
		return t, err
	}
	for i := 1; i <= o.RealServers; i++ {
		rs, err := t.mk(names[3+i])
		if err != nil {
			return t, err
		}
		t.RS = append(t.RS, rs)
	}
	for _, br := range []string{"br0", "br1"} { // servers' side, clients' side
		if err := bridge(t.Switch, br); err != nil {
			return t, err
		}
	}
	plug := func(ns *NS, dev string, mac net.HardwareAddr, addr netip.Prefix, port, br string, pmac net.HardwareAddr) error {
		if err := veth(ns, dev, mac, addr, t.Switch, port, pmac, netip.Prefix{}); err != nil {
			return err
		}
		return enslave(t.Switch, port, br)
	}
	if err := plug(t.Client, "eth0", MAC(roleClient, 10), pfx(CIP, clientNet), "p-cli", "br1", MAC(roleSwitch, 2)); err != nil {
		return t, err
	}
	for i, d := range t.Directors {
		n := i + 1
		if err := plug(d, DirExt, MAC(roleDirector, byte(0x10*n+1)), pfx(HADirExtIP(n), 24), fmt.Sprintf("p-d%d-ext", n), "br1", MAC(roleSwitch, byte(0x10*n+1))); err != nil {
			return t, err
		}
		if err := plug(d, DirInt, MAC(roleDirector, byte(0x10*n+2)), pfx(HADirIntIP(n), 24), fmt.Sprintf("p-d%d-int", n), "br0", MAC(roleSwitch, byte(0x10*n+2))); err != nil {
			return t, err
		}
	}
	for i, rs := range t.RS {
		if err := plug(rs, "eth0", MAC(roleRS, byte(i+1)), pfx(RIP(i+1), 24), fmt.Sprintf("p-rs%d", i+1), "br0", MAC(roleSwitch, byte(0x40+i))); err != nil {
			return t, err
		}
		if err := defaultRoute(rs, HAGatewayIP); err != nil {
			return t, err
		}
	}
	return t, nil
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
