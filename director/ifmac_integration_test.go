package director

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
)

// TestMACChangeFollowed changes the MAC of the director's client-side
// interface while golvs serves (as an active-backup bond with
// fail_over_mac=active does on a failover). The evidence is the client's:
// its kernel's ARP entry for the VIP moves to the new MAC with no traffic
// sent (only the gratuitous ARP can do that), a request through the VIP
// is answered in frames from the new MAC (a capture decoded by gopacket),
// and an ARP entry resolved afresh holds the new MAC.
func TestMACChangeFollowed(t *testing.T) {
	nl := startNAT(t, 1, 8080, 53)
	d := nl.d
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 80}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddDest(k, ipvs.DestConfig{Addr: lab.RIP(1), Port: 8080, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	get := func(when string) {
		t.Helper()
		r, _, err := lab.GetPath(nl.topo.Client, netip.AddrPortFrom(lab.VIP, 80), "/", 5*time.Second)
		if err == nil {
			err = r.Err
		}
		if err != nil || r.Body != "rs1" {
			t.Fatalf("%s: %q, %v (drops %v)", when, r.Body, err, d.Drops.Get())
		}
	}
	var ext netlink.Link
	var old net.HardwareAddr
	err := nl.topo.Director.Do(func() (err error) {
		ext, err = netlink.LinkByName(lab.DirExt)
		if err == nil {
			old = ext.Attrs().HardwareAddr
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	get("before the change")
	if mac, err := lab.NeighborMAC(nl.topo.Client, lab.VIP); err != nil || mac.String() != old.String() {
		t.Fatalf("the client's ARP entry for the VIP: %v, %v; want %v", mac, err, old)
	}
	// The kernel lets an ARP frame override an entry only once it is
	// older than locktime (1 s by default).
	time.Sleep(1200 * time.Millisecond)

	mac := net.HardwareAddr{0x02, 0x00, 0x5e, 0x44, 0x55, 0x66}
	if err := nl.topo.Director.Do(func() error { return netlink.LinkSetHardwareAddr(ext, mac) }); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got, err := lab.NeighborMAC(nl.topo.Client, lab.VIP)
		if err == nil && got.String() == mac.String() {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("10 s after %s's MAC changed to %v, the client's entry for the VIP holds %v (%v); logs %q", lab.DirExt, mac, got, err, nl.logLines())
		}
	}
	if want := "announced its addresses from it (1:"; !nl.logged(want) {
		t.Errorf("no %q in %q", want, nl.logLines())
	}

	// The answers come from the new MAC, and none from the old one.
	srcIs := func(want net.HardwareAddr) func([]byte) bool {
		return func(f []byte) bool {
			p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.NoCopy)
			eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			return eth != nil && ip != nil && ip.SrcIP.Equal(lab.VIP.AsSlice()) && eth.SrcMAC.String() == want.String()
		}
	}
	fromNew := countFrames(t, nl.topo.Client, "eth0", srcIs(mac))
	fromOld := countFrames(t, nl.topo.Client, "eth0", srcIs(old))
	get("after the change")
	for end := time.Now().Add(5 * time.Second); fromNew.n.Load() == 0 && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
	}
	if fromNew.n.Load() == 0 || fromOld.n.Load() != 0 {
		t.Errorf("answers from the VIP: %d frames from %v (the new MAC), %d from %v (the old)", fromNew.n.Load(), mac, fromOld.n.Load(), old)
	}

	// Resolved afresh: golvs answers ARP with the new MAC.
	if err := lab.ForgetNeighbor(nl.topo.Client, lab.VIP); err != nil {
		t.Fatal(err)
	}
	get("after the client forgot the VIP's MAC")
	if got, err := lab.NeighborMAC(nl.topo.Client, lab.VIP); err != nil || got.String() != mac.String() {
		t.Fatalf("the client's ARP entry for the VIP resolved afresh: %v, %v; want %v", got, err, mac)
	}
}

// logLines returns what the director logged so far.
func (nl *natLab) logLines() []string {
	nl.logMu.Lock()
	defer nl.logMu.Unlock()
	return append([]string(nil), nl.logs...)
}
