package director

import (
	"net/netip"
	"testing"

	"github.com/golvs/golvs/netio"
)

// TestServingSwitch: a VRRP backup forwards nothing and answers no ARP
// for its VIPs, FULLNAT local addresses or floating addresses; the same
// director as master does all three.
func TestServingSwitch(t *testing.T) {
	d, w, ext, in := testDirector(t, true)
	lip := netip.MustParseAddr("198.19.0.200")
	gw := netip.MustParseAddr("198.19.0.1")
	if err := d.SetLocalAddrs([]netip.Addr{lip}, 0, 0); err != nil {
		t.Fatal(err)
	}
	d.ifNames = map[int]string{ifExt: "ext0", ifInt: "int0"}
	if err := d.SetFloatingAddrs([]FloatingAddr{{Addr: gw, Interface: "int0"}}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetFloatingAddrs([]FloatingAddr{{Addr: gw, Interface: "eth9"}}); err == nil {
		t.Fatal("a floating address on an interface golvs does not serve was accepted")
	}
	arp := func(ifindex int, target netip.Addr) {
		req := make([]byte, netio.VnetHdrLen+60)
		buildARPReq(req[netio.VnetHdrLen:], cliMAC, cip, target)
		w.handle(&netio.Frame{Data: req[netio.VnetHdrLen:], Vnet: req[:netio.VnetHdrLen], IfIndex: ifindex})
	}
	run := func() (forwarded, answered int) {
		ext.frames, in.frames = nil, nil
		w.load()
		w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40001, 80, 0x02, nil))
		forwarded = len(in.frames)
		ext.frames, in.frames = nil, nil
		arp(ifExt, vip)
		arp(ifExt, lip)
		arp(ifInt, gw)
		arp(ifExt, gw)                                 // not on this interface
		arp(ifExt, netip.MustParseAddr("198.18.0.99")) // nobody's
		return forwarded, len(ext.frames) + len(in.frames)
	}
	if !d.Serving() {
		t.Fatal("a director without VRRP must serve")
	}
	d.SetServing(false)
	if f, a := run(); f != 0 || a != 0 {
		t.Fatalf("backup: forwarded %d, answered %d ARP requests; want none", f, a)
	}
	if got := d.Drops[CntBackup].Load(); got != 6 {
		t.Fatalf("backup counter %d, want 6 (a SYN and five ARP requests)", got)
	}
	if d.CT.Len() != 0 {
		t.Fatal("a backup created a connection")
	}
	d.SetRole(true) // as the VRRP speaker calls it
	if f, a := run(); f != 1 || a != 3 {
		t.Fatalf("master: forwarded %d, answered %d; want the SYN and the VIP, LIP and floating address", f, a)
	}
	// A worker in the middle of a batch keeps the value it loaded.
	d.SetServing(false)
	w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40002, 80, 0x02, nil))
	if d.CT.Len() != 2 {
		t.Fatal("the switch changed inside a batch")
	}
}

func TestServingAllocs(t *testing.T) {
	d, w, _, _ := testDirector(t, false)
	d.SetServing(false)
	w.load()
	f := frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x02, nil)
	if n := testing.AllocsPerRun(100, func() { w.handle(f) }); n != 0 {
		t.Fatalf("standby drop allocates %v times", n)
	}
}
