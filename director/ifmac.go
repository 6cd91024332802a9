package director

import (
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// The director's interface MACs are the source of every frame it builds
// and its answer to ARP and Neighbor Solicitations for its addresses. They
// are read at the start and followed when the kernel says one changed
// (netio.NeighConfig.OnMAC): an active-backup bond with
// fail_over_mac=active takes the new active slave's MAC on a failover,
// and an operator can set one (`ip link set dev X address`). The
// interface stays the same one, so its sockets keep serving it; what
// changes is the table the workers read once per batch, and the director
// announces its addresses from the new MAC (gratuitous ARP, unsolicited
// Neighbor Advertisements), as the bond driver does for the kernel's own
// addresses and keepalived does on becoming master: a client whose cache
// still holds the old MAC would otherwise send to a MAC nobody has until
// its entry goes stale.

// announceRounds is how many times the addresses are announced after a
// change, announceGap apart (a first round can be lost while a bond
// switches slaves; the bond driver's num_grat_arp defaults to 1,
// keepalived sends 5 and 5 more later).
const (
	announceRounds = 2
	announceGap    = time.Second
)

// setMACs publishes the MAC table, from what the link watcher has seen
// (Neigh.MAC: a change it saw before the table existed is in it), and
// opens the sockets that announce a change. Called once, from New. It
// holds macMu from the read to the publication, so a change reported
// meanwhile is applied after it (macChanged waits for the lock).
func (d *Director) setMACs(n *netio.Neigh) error {
	d.macMu.Lock()
	defer d.macMu.Unlock()
	macs := map[int][6]byte{}
	names := map[int]string{}
	d.annTx = map[int]*netio.Tx{}
	for idx, l := range n.Links() {
		macs[idx] = n.MAC(l)
		names[idx] = l.Name
		tx, err := netio.OpenTx(l.Name)
		if err != nil {
			return err
		}
		d.annTx[idx] = tx
	}
	d.ifName = names
	t := macTable(macs)
	d.macs.Store(&t)
	return nil
}

// closeAnnounce closes the announcing sockets (Close).
func (d *Director) closeAnnounce() {
	d.macMu.Lock()
	defer d.macMu.Unlock()
	for _, tx := range d.annTx {
		tx.Close()
	}
	d.annTx = nil
}

// macChanged follows a served interface's new MAC (netio.NeighConfig.OnMAC):
// the workers send from it and answer with it from their next batch, and
// the director announces its addresses on that interface from it.
func (d *Director) macChanged(idx int, old, now [6]byte) {
	d.macMu.Lock()
	t := d.macs.Load()
	// Nothing to do before New publishes the table (setMACs reads the
	// MAC then), or when it already read this one.
	if t == nil || idx >= len(*t) || !(*t)[idx].ok || (*t)[idx].mac == now {
		d.macMu.Unlock()
		return
	}
	nt := slices.Clone(*t)
	nt[idx].mac = now
	d.macs.Store(&nt)
	d.macMu.Unlock()
	name := d.ifName[idx]
	if !d.announcing() {
		d.logf("host: %s's MAC changed from %s to %s: golvs sends from it and answers ARP and Neighbor Solicitations with it; nothing announced (not serving)", name, net.HardwareAddr(old[:]), net.HardwareAddr(now[:]))
		return
	}
	sent, failed := d.announce(idx, now)
	d.logf("host: %s's MAC changed from %s to %s: golvs sends from it and answers ARP and Neighbor Solicitations with it; announced its addresses from it (%d: gratuitous ARP, unsolicited NA; %d failed), again in %v", name, net.HardwareAddr(old[:]), net.HardwareAddr(now[:]), sent, failed, announceGap)
	for r := 1; r < announceRounds; r++ {
		time.AfterFunc(time.Duration(r)*announceGap, func() {
			if d.announcing() && d.mac(idx) == now {
				d.announce(idx, now)
			}
		})
	}
}

// mac returns the current MAC of interface idx.
func (d *Director) mac(idx int) [6]byte {
	if t := d.macs.Load(); t != nil && idx < len(*t) {
		return (*t)[idx].mac
	}
	return [6]byte{}
}

// announcing reports that the director serves (not a VRRP or sync backup,
// not a successor waiting for its predecessor), so it may claim its
// addresses.
func (d *Director) announcing() bool {
	return !d.srv.backup.Load() && !d.syncBackup.Load() && !d.handover.standby.Load()
}

// announceAddrs lists what the director answers ARP and Neighbor
// Solicitations for on interface idx: the VIPs where it answers for them
// (-i NAME:arp), FULLNAT local addresses, the interface's floating
// addresses.
func (d *Director) announceAddrs(idx int) (v4 [][4]byte, v6 [][16]byte) {
	if d.ifARP[idx] {
		if s := d.snap.Load(); s != nil {
			for v := range s.vips {
				v4 = append(v4, v)
			}
			for v := range s.vips6 {
				v6 = append(v6, v)
			}
		}
	}
	if pl := d.modes.pool.Load(); pl != nil {
		for _, l := range pl.lips {
			if l.addr.Is4() && !slices.Contains(v4, l.a4) {
				v4 = append(v4, l.a4)
			}
		}
	}
	if pl := d.modes.pool6.Load(); pl != nil {
		for _, l := range pl.lips {
			if !slices.Contains(v6, l.a16) {
				v6 = append(v6, l.a16)
			}
		}
	}
	if m := d.srv.floating.Load(); m != nil {
		for a, i := range *m {
			if i == idx && !slices.Contains(v4, a) {
				v4 = append(v4, a)
			}
		}
	}
	return v4, v6
}

// announce sends one gratuitous ARP (keepalived's frame: a request with
// sender and target the address, to broadcast) per IPv4 address and one
// unsolicited Neighbor Advertisement (override set, to all nodes) per
// IPv6 address of interface idx, from mac.
func (d *Director) announce(idx int, mac [6]byte) (sent, failed int) {
	v4, v6 := d.announceAddrs(idx)
	d.macMu.Lock()
	defer d.macMu.Unlock()
	tx := d.annTx[idx]
	if tx == nil {
		return 0, 0
	}
	var buf [netio.VnetHdrLen + packet.NALen]byte
	send := func(n int) {
		if err := tx.Send(buf[:netio.VnetHdrLen+max(n, 60)]); err != nil {
			failed++
			return
		}
		sent++
	}
	for _, a := range v4 {
		clear(buf[:])
		send(packet.BuildGARP(buf[netio.VnetHdrLen:], mac, a))
	}
	allNodes := netip.MustParseAddr("ff02::1").As16()
	for _, a := range v6 {
		clear(buf[:])
		send(packet.BuildNA(buf[netio.VnetHdrLen:], mac, packet.MulticastMAC(allNodes), allNodes, a, false))
	}
	return sent, failed
}
