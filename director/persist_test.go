package director

import (
	"net/netip"
	"testing"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/packet"
)

// persistDirector has a persistent rr service over two real servers.
func persistDirector(t *testing.T, svc ipvs.ServiceConfig) (*Director, *Worker, *fakeTx) {
	d := newCore(Config{Workers: 1, Conntrack: conntrack.Config{Shards: 8}})
	d.ifMAC[ifExt], d.ifMAC[ifInt] = extMAC, intMAC
	if err := d.AddService(svc); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if err := d.AddDest(svc.ServiceKey, ipvs.DestConfig{Addr: netip.AddrFrom4([4]byte{198, 19, 0, byte(10 + i)}), Method: ipvs.MethodMasq, Weight: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for _, dd := range d.Snapshot().List[0].Dests {
		dd.Next.Store(&ipvs.NextHop{IfIndex: ifInt, SrcMAC: intMAC, DstMAC: rsMAC})
	}
	w := d.newWorker()
	in := &fakeTx{keep: true}
	w.setTx(ifExt, &fakeTx{})
	w.setTx(ifInt, in)
	w.snap = d.snap.Load()
	return d, w, in
}

func destOf(t *testing.T, b []byte) netip.Addr {
	var p packet.Parsed
	packet.Decode(b[10:], &p)
	return netip.AddrFrom4(p.Dst)
}

func TestPersistenceSticksPerClientNetwork(t *testing.T) {
	svc := ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: 6, Addr: vip, Port: 80}, Sched: "rr",
		Flags: ipvs.SvcPersistent, Timeout: 360, Netmask: 0xffffff00}
	d, w, in := persistDirector(t, svc)
	// Two clients of one /24 and many ports: all on one server.
	for i := 0; i < 20; i++ {
		c := netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i%2)})
		w.handle(frame(t, ifExt, cliMAC, extMAC, c, vip, 6, uint16(40000+i), 80, 0x02, nil))
	}
	if len(in.frames) != 20 {
		t.Fatalf("%d forwarded, drops %v", len(in.frames), d.Drops.Get())
	}
	first := destOf(t, in.frames[0])
	for i, f := range in.frames {
		if got := destOf(t, f); got != first {
			t.Fatalf("conn %d went to %s, the template says %s", i, got, first)
		}
	}
	// A client of another network gets the next server (rr).
	w.handle(frame(t, ifExt, cliMAC, extMAC, netip.MustParseAddr("198.18.1.10"), vip, 6, 40000, 80, 0x02, nil))
	if got := destOf(t, in.frames[20]); got == first {
		t.Fatalf("another network reused the template's server %s", got)
	}
	var tpls, persist int32
	d.CT.Walk(func(e *conntrack.Entry) {
		if e.Template() {
			tpls++
		}
	})
	for _, dd := range d.Snapshot().List[0].Dests {
		persist += dd.PersistConns()
	}
	if tpls != 2 || persist != 2 {
		t.Fatalf("%d templates, %d persistconns; want 2 and 2", tpls, persist)
	}
}

func TestPortZeroServiceKeepsPort(t *testing.T) {
	svc := ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: 6, Addr: vip, Port: 0}, Sched: "rr",
		Flags: ipvs.SvcPersistent, Timeout: 360, Netmask: 0xffffffff}
	d, w, in := persistDirector(t, svc)
	w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 443, 0x02, nil))
	w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40001, 8443, 0x02, nil))
	if len(in.frames) != 2 {
		t.Fatalf("%d forwarded, drops %v", len(in.frames), d.Drops.Get())
	}
	var p1, p2 packet.Parsed
	packet.Decode(in.frames[0][10:], &p1)
	packet.Decode(in.frames[1][10:], &p2)
	if p1.DPort != 443 || p2.DPort != 8443 || p1.Dst != p2.Dst {
		t.Fatalf("port-zero service: %v:%d and %v:%d", p1.Dst, p1.DPort, p2.Dst, p2.DPort)
	}
}

func TestExpireNodestConn(t *testing.T) {
	for _, on := range []bool{false, true} {
		d, w, _, in := testDirector(t, true)
		d.c.ExpireNodestConn = on
		w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x02, nil))
		k := ipvs.ServiceKey{Proto: 6, Addr: vip, Port: 80}
		if err := d.AddDest(k, ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.0.12"), Port: 8080, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
			t.Fatal(err)
		}
		for _, dd := range d.Snapshot().List[0].Dests {
			dd.Next.Store(&ipvs.NextHop{IfIndex: ifInt, SrcMAC: intMAC, DstMAC: rsMAC})
		}
		if err := d.DelDest(k, rip, 8080); err != nil {
			t.Fatal(err)
		}
		w.snap = d.snap.Load()
		w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x10, nil))
		switch {
		case !on && (len(in.frames) != 1 || d.Drops[CntDestUnavail].Load() != 1):
			t.Fatalf("expire_nodest_conn=0: %d frames, dest-unavailable %d; want the packet dropped", len(in.frames), d.Drops[CntDestUnavail].Load())
		case on && d.Drops[CntNoConn].Load() != 1:
			// The ACK's conn is expired; an ACK cannot start a new one.
			t.Fatalf("expire_nodest_conn=1: no-conn %d, want the conn expired and the ACK refused", d.Drops[CntNoConn].Load())
		}
	}
}
