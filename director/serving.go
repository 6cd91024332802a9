package director

import (
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
	standby  atomic.Bool                      // zero value: serving (no VRRP)
	floating atomic.Pointer[map[[4]byte]bool] // more addresses to answer ARP for while serving
}

// SetServing turns the data path on (a VRRP master, or no VRRP at all)
// or off (a VRRP backup: every frame is dropped and counted as standby,
// ARP included). It takes effect from the next batch of each worker.
func (d *Director) SetServing(on bool) {
	if d.srv.standby.Swap(!on) == on {
		if on {
			d.logf("serving: on (VRRP master)")
		} else {
			d.logf("serving: off (VRRP backup: no forwarding, no ARP answers)")
		}
	}
}

// Serving reports whether the data path serves.
func (d *Director) Serving() bool { return !d.srv.standby.Load() }

// SetRole is SetServing under the name the VRRP speaker calls its
// followers by (vrrp.Follower).
func (d *Director) SetRole(master bool) { d.SetServing(master) }

// SetFloatingAddrs sets addresses golvs answers ARP for on every served
// interface while serving, besides its VIPs and FULLNAT local addresses:
// VRRP virtual addresses that are no service's VIP, such as the real
// servers' default gateway in a NAT pair (it must move with the master).
// Like VIPs, they must not be assigned to the host.
func (d *Director) SetFloatingAddrs(addrs []netip.Addr) {
	m := make(map[[4]byte]bool, len(addrs))
	for _, a := range addrs {
		if a.Is4() {
			m[a.As4()] = true
		}
	}
	d.srv.floating.Store(&m)
}

// isFloating reports a floating address (ARP path only).
func (d *Director) isFloating(a [4]byte) bool {
	m := d.srv.floating.Load()
	return m != nil && (*m)[a]
}
