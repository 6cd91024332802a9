package director

import (
	"fmt"
	"net/netip"
	"sync/atomic"
)

// serving is the director's high-availability switch (issue 15): a VRRP
// master serves (forwards, answers ARP for its VIPs, FULLNAT local
// addresses and floating addresses); a backup serves nothing, so that the
// master's peer on the same segments never answers for the same
// addresses or forwards a packet the master also forwards. Workers load
// the switch once per batch, like the snapshot.
type serving struct {
	backup   atomic.Bool                     // zero value: serving (no VRRP)
	floating atomic.Pointer[map[[4]byte]int] // more addresses to answer ARP for while serving, by ifindex
}

// SetServing turns the data path on (a VRRP master, or no VRRP at all)
// or off (a VRRP backup: every frame is dropped and counted as backup,
// ARP included). It takes effect from the next batch of each worker.
func (d *Director) SetServing(on bool) {
	if d.srv.backup.Swap(!on) == on {
		if on {
			d.logf("serving: on (VRRP master)")
		} else {
			d.logf("serving: off (VRRP backup: no forwarding, no ARP answers)")
		}
	}
}

// Serving reports whether the data path serves.
func (d *Director) Serving() bool { return !d.srv.backup.Load() }

// SetRole is SetServing under the name the VRRP speaker calls its
// followers by (vrrp.Follower).
func (d *Director) SetRole(master bool) { d.SetServing(master) }

// FloatingAddr is an address golvs answers ARP for on one interface
// while serving.
type FloatingAddr struct {
	Addr      netip.Addr
	Interface string
}

// SetFloatingAddrs sets addresses golvs answers ARP for while serving,
// each on its interface, besides its VIPs and FULLNAT local addresses:
// VRRP virtual addresses that are no service's VIP, such as the real
// servers' default gateway in a NAT pair (it must move with the master).
// Like VIPs they must not be assigned to the host, and the interface
// must be one golvs serves.
func (d *Director) SetFloatingAddrs(addrs []FloatingAddr) error {
	m := make(map[[4]byte]int, len(addrs))
	for _, a := range addrs {
		if !a.Addr.Is4() {
			return fmt.Errorf("director: floating address %s is not IPv4", a.Addr)
		}
		idx := d.ifIndex(a.Interface)
		if idx == 0 {
			return fmt.Errorf("director: floating address %s: %s is not an interface golvs serves (-i)", a.Addr, a.Interface)
		}
		if err := d.checkVIPNotLocal(a.Addr); err != nil {
			return err
		}
		m[a.Addr.As4()] = idx
	}
	d.srv.floating.Store(&m)
	return nil
}

// ifIndex returns the index of a served interface by name (0: none).
func (d *Director) ifIndex(name string) int {
	if d.neigh != nil {
		for idx, l := range d.neigh.Links() {
			if l.Name == name {
				return idx
			}
		}
	}
	for idx, n := range d.ifNames {
		if n == name {
			return idx
		}
	}
	return 0
}

// isFloating reports a floating address of the interface (ARP path only).
func (d *Director) isFloating(a [4]byte, ifindex int) bool {
	m := d.srv.floating.Load()
	return m != nil && (*m)[a] == ifindex && ifindex != 0
}
