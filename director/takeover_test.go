package director

import (
	"net/netip"
	"testing"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
)

// handOver moves a's model and table to b as a graceful restart does
// (control/takeover.go carries the same calls over the socket).
func handOver(t *testing.T, a, b *Director) int {
	t.Helper()
	if err := b.Apply(a.Model()); err != nil {
		t.Fatal(err)
	}
	dests, index := a.HandedDests()
	bound := b.BindHanded(dests)
	n := 0
	for _, tpl := range []bool{true, false} {
		err := a.CT.Export(nil, func(fl uint32) bool { return (fl&conntrack.FlagTemplate != 0) == tpl }, func(rs []conntrack.Record) error {
			for _, r := range rs {
				r.Dest = bound[index[r.Dest]]
				if err := b.ImportConn(&r); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// A FULLNAT conn handed over keeps its local address and port, and the
// new pool does not give that port to anyone else: with two ports in the
// range and one taken over, exactly one new conn fits.
func TestHandOverFullNATPorts(t *testing.T) {
	a, wa, _, ina := modeDirector(t, ipvs.MethodFullNAT, false)
	lip := netip.MustParseAddr("198.19.0.200")
	if err := a.SetLocalAddrs([]netip.Addr{lip}, 5000, 5001); err != nil {
		t.Fatal(err)
	}
	if !send(wa, ina, t, 40000, 0x02) {
		t.Fatalf("FULLNAT SYN not forwarded (drops %v)", a.Drops.Get())
	}
	var port uint16
	a.CT.Walk(func(e *conntrack.Entry) { port = e.Out.DstPort })
	b, wb, _, inb := modeDirector(t, ipvs.MethodFullNAT, false)
	if err := b.SetLocalAddrs([]netip.Addr{lip}, 5000, 5001); err != nil {
		t.Fatal(err)
	}
	if err := b.DelService(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}); err != nil {
		t.Fatal(err)
	}
	if n := handOver(t, a, b); n != 1 {
		t.Fatalf("%d entries handed over, want 1", n)
	}
	resolveAll(b)
	if got := b.LocalAddrs(); len(got) != 1 || got[0].Conns != 1 {
		t.Fatalf("local address use after the handover: %+v, want 1 port in use", got)
	}
	var got conntrack.Key
	b.CT.Walk(func(e *conntrack.Entry) { got = e.Out })
	if got.DstPort != port || got.DstIP != lip.As4() {
		t.Fatalf("handed conn uses %v, want local port %d", got, port)
	}
	if !send(wb, inb, t, 40000, 0x10) {
		t.Fatalf("the handed conn is not forwarded (drops %v)", b.Drops.Get())
	}
	if !send(wb, inb, t, 40001, 0x02) || send(wb, inb, t, 40002, 0x02) {
		t.Fatalf("with one of two ports taken over, want exactly one new conn (drops %v, modes %v)", b.Drops.Get(), b.ModeCounters())
	}
	var ports []uint16
	b.CT.Walk(func(e *conntrack.Entry) { ports = append(ports, e.Out.DstPort) })
	if len(ports) != 2 || ports[0] == ports[1] {
		t.Fatalf("local ports in use %v, want two different", ports)
	}
}

// Persistence templates and conns to a removed (trashed) real server are
// handed over too: the template keeps pointing the client at its server,
// and the trashed dest is revived on the new side when it is added back.
func TestHandOverTemplatesAndTrash(t *testing.T) {
	a, wa, _, ina := testDirector(t, false)
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}
	if err := a.EditService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr", Flags: ipvs.SvcPersistent, Timeout: 300, Netmask: 0xffffffff}); err != nil {
		t.Fatal(err)
	}
	if !send(wa, ina, t, 40000, 0x02) || !send(wa, ina, t, 40000, 0x10) {
		t.Fatalf("conn not forwarded (drops %v)", a.Drops.Get())
	}
	if err := a.DelDest(k, rip, 8080); err != nil {
		t.Fatal(err)
	}
	b, wb, _, inb := testDirector(t, false)
	b.Clear()
	if n := handOver(t, a, b); n != 2 {
		t.Fatalf("%d entries handed over, want a template and a conn", n)
	}
	if st := b.Trash(); st.Dests != 1 {
		t.Fatalf("the trashed dest was not handed over: %+v", st)
	}
	if send(wb, inb, t, 40000, 0x10) {
		t.Fatal("a conn to a removed real server was forwarded after the handover")
	}
	if err := b.AddDest(k, ipvs.DestConfig{Addr: rip, Port: 8080, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	resolveAll(b)
	dd := b.Snapshot().List[0].Dests[0]
	if dd.ActiveConns() != 1 || dd.PersistConns() != 1 {
		t.Fatalf("revived dest counters active %d persist %d, want 1 and 1", dd.ActiveConns(), dd.PersistConns())
	}
	if !send(wb, inb, t, 40000, 0x10) {
		t.Fatalf("the handed conn does not carry on once its server is back (drops %v)", b.Drops.Get())
	}
	var tpls, conns int
	b.CT.Walk(func(e *conntrack.Entry) {
		if e.Template() {
			tpls++
		} else if e.Tpl != nil {
			conns++
		}
	})
	if tpls != 1 || conns != 1 {
		t.Fatalf("%d templates, %d conns under one, want 1 and 1", tpls, conns)
	}
}
