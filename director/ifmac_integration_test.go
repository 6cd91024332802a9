package director

import (
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
// interface while golvs serves both families (as an active-backup bond
// with fail_over_mac=active does on a failover). The evidence is the
// client's: its kernel's ARP entry for the VIP and its NDP entry for the
// IPv6 VIP move to the new MAC with no traffic sent (only the gratuitous
// ARP and the unsolicited Neighbor Advertisement can do that), a request
// through each VIP is answered in frames from the new MAC and none from
// the old (a capture decoded by gopacket), and entries resolved afresh
// hold the new MAC.
func TestMACChangeFollowed(t *testing.T) {
	ml := startModeLab(t, "nat", 1, []Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}}, []int{8080}, []int{53}, true)
	ml.addServicesAt(t, lab.VIP, 80, func(int) ipvs.DestConfig {
		return ipvs.DestConfig{Addr: lab.RIP(1), Port: 8080, Method: ipvs.MethodMasq, Weight: 1}
	})
	ml.addServicesAt(t, lab.VIP6, 80, func(int) ipvs.DestConfig {
		return ipvs.DestConfig{Addr: lab.RIP6(1), Port: 8080, Method: ipvs.MethodMasq, Weight: 1}
	})
	client := ml.mt.Client
	vips := []netip.Addr{lab.VIP, lab.VIP6}
	get := func(vip netip.Addr, when string) {
		t.Helper()
		r, _, err := lab.GetPath(client, netip.AddrPortFrom(vip, 80), "/", 5*time.Second)
		if err == nil {
			err = r.Err
		}
		if err != nil || r.Body != "rs1" {
			t.Fatalf("%s, %s: %q, %v (drops %v)", vip, when, r.Body, err, ml.d.Drops.Get())
		}
	}
	entries := func(want net.HardwareAddr) bool {
		for _, vip := range vips {
			if mac, err := lab.NeighborMAC(client, vip); err != nil || mac.String() != want.String() {
				return false
			}
		}
		return true
	}
	var ext netlink.Link
	var old net.HardwareAddr
	err := ml.mt.Director.Do(func() (err error) {
		ext, err = netlink.LinkByName(lab.DirExt)
		if err == nil {
			old = ext.Attrs().HardwareAddr
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, vip := range vips {
		get(vip, "before the change")
	}
	if !entries(old) {
		t.Fatalf("before the change, the client's entries for the VIPs do not hold %v", old)
	}
	// The kernel lets an ARP frame override an entry only once it is
	// older than locktime (1 s by default).
	time.Sleep(1200 * time.Millisecond)

	mac := net.HardwareAddr{0x02, 0x00, 0x5e, 0x44, 0x55, 0x66}
	if err := ml.mt.Director.Do(func() error { return netlink.LinkSetHardwareAddr(ext, mac) }); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); !entries(mac); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			m4, _ := lab.NeighborMAC(client, lab.VIP)
			m6, _ := lab.NeighborMAC(client, lab.VIP6)
			t.Fatalf("10 s after %s's MAC changed to %v, the client's entries hold %v (VIP) and %v (IPv6 VIP)", lab.DirExt, mac, m4, m6)
		}
	}

	// The answers come from the new MAC, and none from the old one.
	srcIs := func(want net.HardwareAddr) func([]byte) bool {
		return func(f []byte) bool {
			p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.NoCopy)
			eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			if eth == nil || eth.SrcMAC.String() != want.String() {
				return false
			}
			if ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
				return ip.SrcIP.Equal(lab.VIP.AsSlice())
			}
			ip, ok := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			return ok && ip.SrcIP.Equal(lab.VIP6.AsSlice()) && p.Layer(layers.LayerTypeTCP) != nil
		}
	}
	fromNew := countFrames(t, client, "eth0", srcIs(mac))
	fromOld := countFrames(t, client, "eth0", srcIs(old))
	for _, vip := range vips {
		get(vip, "after the change")
	}
	for end := time.Now().Add(5 * time.Second); fromNew.n.Load() < 2 && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
	}
	if fromNew.n.Load() < 2 || fromOld.n.Load() != 0 {
		t.Errorf("answers from the VIPs: %d frames from %v (the new MAC), %d from %v (the old)", fromNew.n.Load(), mac, fromOld.n.Load(), old)
	}

	// Resolved afresh: golvs answers ARP and Neighbor Solicitations with
	// the new MAC.
	for _, vip := range vips {
		if err := lab.ForgetNeighbor(client, vip); err != nil {
			t.Fatal(err)
		}
		get(vip, "after the client forgot the VIP's MAC")
	}
	if !entries(mac) {
		m4, _ := lab.NeighborMAC(client, lab.VIP)
		m6, _ := lab.NeighborMAC(client, lab.VIP6)
		t.Fatalf("resolved afresh, the client's entries hold %v (VIP) and %v (IPv6 VIP); want %v", m4, m6, mac)
	}
}
