package director

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/sched"
)

// send hands one frame to the worker with the current snapshot and
// reports whether it went out on tx.
func send(w *Worker, tx *fakeTx, t *testing.T, sport uint16, flags uint8) bool {
	t.Helper()
	w.snap = w.d.snap.Load()
	n := tx.n
	w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, sport, 80, flags, nil))
	return tx.n == n+1
}

// resolveAll gives every dest of the snapshot a next hop.
func resolveAll(d *Director) {
	for _, sv := range d.Snapshot().List {
		for _, dd := range sv.Dests {
			if dd.Next.Load() == nil {
				dd.Next.Store(&ipvs.NextHop{IfIndex: ifInt, SrcMAC: intMAC, DstMAC: rsMAC})
			}
		}
	}
}

// IPVS's trash (spec §4.6): a removed real server keeps its connections
// pointing at it; their packets are dropped while it is gone, and adding
// it back (alone, or with its service after -D or -C) revives the same
// object, counters included, so they carry on. A model applied again as
// it is changes nothing at all.
func TestTrashRevival(t *testing.T) {
	d, w, _, in := testDirector(t, false)
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}
	if !send(w, in, t, 40000, 0x02) || !send(w, in, t, 40000, 0x10) {
		t.Fatalf("the conn does not start (drops %v)", d.Drops.Get())
	}
	dest := d.Snapshot().List[0].Dests[0]
	full := d.Model()
	steps := []struct {
		name   string
		remove func() error
		add    func() error
	}{
		{"-d then -a", func() error { return d.DelDest(k, rip, 8080) },
			func() error {
				return d.AddDest(k, ipvs.DestConfig{Addr: rip, Port: 8080, Method: ipvs.MethodMasq, Weight: 1})
			}},
		{"-D then -A -a", func() error { return d.DelService(k) },
			func() error {
				if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
					return err
				}
				return d.AddDest(k, ipvs.DestConfig{Addr: rip, Port: 8080, Method: ipvs.MethodMasq, Weight: 1})
			}},
		{"-C then -R", func() error { d.Clear(); return nil }, func() error { return d.Apply(full) }},
	}
	for _, s := range steps {
		if err := s.remove(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if dest.Available() || send(w, in, t, 40000, 0x10) {
			t.Fatalf("%s: a packet of a conn to a removed real server was forwarded", s.name)
		}
		if got := d.Trash(); got.Dests < 1 {
			t.Fatalf("%s: trash %+v, want the dest in it", s.name, got)
		}
		if err := s.add(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		var back *ipvs.Dest
		for _, sv := range d.Snapshot().List {
			if sv.Config.ServiceKey == k {
				back = sv.Dests[0]
			}
		}
		if back != dest || !dest.Available() {
			t.Fatalf("%s: the real server came back as a new object (%p, was %p)", s.name, back, dest)
		}
		if !send(w, in, t, 40000, 0x10) {
			t.Fatalf("%s: the conn does not carry on after the re-add (drops %v)", s.name, d.Drops.Get())
		}
		if dest.Stats.Conns.Load() != 1 || dest.ActiveConns() != 1 {
			t.Fatalf("%s: the revived dest lost its counters: conns %d active %d", s.name, dest.Stats.Conns.Load(), dest.ActiveConns())
		}
	}
	// The same model again changes nothing, not even the snapshot.
	before := d.Snapshot()
	if err := d.Apply(d.Model()); err != nil {
		t.Fatal(err)
	}
	after := d.Snapshot()
	if after != before {
		t.Fatal("applying the running model again published a new snapshot")
	}
	for i := range before.List {
		if before.List[i].Sched != after.List[i].Sched || before.List[i].Stats != after.List[i].Stats || !slices.Equal(before.List[i].Dests, after.List[i].Dests) {
			t.Fatalf("service %d changed identity when its model did not", i)
		}
	}
	if got := d.Trash(); got.Dests != 0 || got.Services != 0 {
		t.Fatalf("trash after every revival: %+v", got)
	}
}

// A service revived from the trash starts with zeroed counters (a new
// service, as in IPVS); within one Apply a service removed and added back
// (ipvsadm-restore's -C first) is the same service, counters and
// scheduler state kept: rr carries on where it was (newest first, §2.1).
func TestRestoreKeepsSchedulerAndCounters(t *testing.T) {
	d := newCore(Config{Workers: 1})
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}
	m := Model{Services: []ipvs.ServiceConfig{{ServiceKey: k, Sched: "rr", Dests: []ipvs.DestConfig{
		{Addr: netip.MustParseAddr("198.19.0.13"), Port: 80, Weight: 1},
		{Addr: netip.MustParseAddr("198.19.0.12"), Port: 80, Weight: 1},
		{Addr: netip.MustParseAddr("198.19.0.11"), Port: 80, Weight: 1},
	}}}, Timeouts: d.Model().Timeouts}
	if err := d.Apply(m); err != nil {
		t.Fatal(err)
	}
	pick := func() string {
		sv := d.Snapshot().List[0]
		return sv.Sched.Schedule(sv.View, &sched.Packet{Proto: 6}).Addr.String()
	}
	if p := pick(); p != "198.19.0.13" {
		t.Fatalf("first rr pick %s, want the newest dest", p)
	}
	d.Snapshot().List[0].Stats.Conns.Add(5)
	if err := d.Apply(m); err != nil { // what -C then -R of the same table computes
		t.Fatal(err)
	}
	if p := pick(); p != "198.19.0.12" {
		t.Fatalf("rr after a restore of the same table picked %s, want 198.19.0.12 (it carries on)", p)
	}
	if n := d.Snapshot().List[0].Stats.Conns.Load(); n != 5 {
		t.Fatalf("service counters after the restore: %d, want 5", n)
	}
	if err := d.DelService(k); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(m); err != nil {
		t.Fatal(err)
	}
	if n := d.Snapshot().List[0].Stats.Conns.Load(); n != 0 {
		t.Fatalf("a service revived from the trash kept its counters: %d", n)
	}
	if p := pick(); p != "198.19.0.13" {
		t.Fatalf("a revived service's new rr picked %s first, want the newest dest", p)
	}
}

// Apply checks the whole model before changing anything: one bad real
// server among good changes leaves the running configuration, snapshot
// and runtime as they were.
func TestApplyAllOrNothing(t *testing.T) {
	d, _, _, _ := testDirector(t, false)
	before := d.Snapshot()
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}
	bad := []struct {
		name string
		edit func(m *Model)
		want string
	}{
		{"IPv6 real server", func(m *Model) {
			m.Services[0].Dests = append(m.Services[0].Dests, ipvs.DestConfig{Addr: netip.MustParseAddr("2001:db8::1"), Port: 80, Method: ipvs.MethodMasq})
		}, "another address family"},
		{"unknown scheduler", func(m *Model) { m.Services[1].Sched = "fastest" }, "Scheduler or persistence engine not found"},
		{"SCTP service", func(m *Model) {
			m.Services = append(m.Services, ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoSCTP, Addr: vip, Port: 9}})
		}, "not supported"},
		{"duplicate service", func(m *Model) { m.Services = append(m.Services, m.Services[0]) }, "listed twice"},
		{"duplicate real server", func(m *Model) {
			m.Services[0].Dests = append(m.Services[0].Dests, m.Services[0].Dests[0])
		}, "listed twice"},
		{"mh over its table", func(m *Model) {
			m.Services[0].Sched = "mh"
			for i := 0; i < 4100; i++ { // the kernel's default M is 4093
				m.Services[0].Dests = append(m.Services[0].Dests, ipvs.DestConfig{Addr: netip.AddrFrom4([4]byte{198, 19, 1 + byte(i/250), byte(1 + i%250)}), Port: 80, Weight: 1})
			}
		}, "slots of the mh table"},
	}
	for _, c := range bad {
		m := d.Model()
		// good changes first: a new service, a weight edit
		m.Services = append(m.Services, ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 443}, Sched: "wlc"})
		m.Services[0].Dests[0].Weight = 7
		c.edit(&m)
		err := d.Apply(m)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: Apply gave %v, want an error with %q", c.name, err, c.want)
		}
		if d.Snapshot() != before {
			t.Fatalf("%s: a refused model was published", c.name)
		}
		if w := d.Snapshot().List[0].Dests[0].Weight(); w != 1 {
			t.Fatalf("%s: a refused model changed a weight to %d", c.name, w)
		}
	}
	if err := d.EditDest(k, ipvs.DestConfig{Addr: rip, Port: 9999, Method: ipvs.MethodMasq}); !errors.Is(err, ipvs.ErrNoDest) {
		t.Fatalf("editing a missing dest: %v", err)
	}
}

// The trash is bounded: beyond maxTrash removed dests the oldest unused
// are freed and counted; a dest no conn used for trashPeriod is freed.
func TestTrashBounded(t *testing.T) {
	d := newCore(Config{Workers: 1})
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}
	sc := ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}
	n := maxTrash + 100
	for i := 0; i < n; i++ {
		sc.Dests = append(sc.Dests, ipvs.DestConfig{Addr: netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), Port: 80, Weight: 1})
	}
	if err := d.Apply(Model{Services: []ipvs.ServiceConfig{sc}, Timeouts: d.Model().Timeouts}); err != nil {
		t.Fatal(err)
	}
	busy := d.Snapshot().List[0].Dests[n-1]
	busy.Bind(false) // a conn still uses this one
	d.Clear()
	if got := d.Trash(); got.Dests != maxTrash || got.Evicted != 100 || got.Services != 1 {
		t.Fatalf("trash %+v, want %d dests, 100 evicted, 1 service", got, maxTrash)
	}
	d.cfg.mu.Lock()
	d.purgeTrashLocked(time.Now().Add(trashPeriod + time.Second))
	d.cfg.mu.Unlock()
	if got := d.Trash(); got.Dests != 1 || got.Services != 1 {
		t.Fatalf("after the trash period: %+v, want only the dest a conn uses", got)
	}
	busy.Unbind(false, false)
	d.cfg.mu.Lock()
	d.purgeTrashLocked(time.Now().Add(2*trashPeriod + time.Second))
	d.cfg.mu.Unlock()
	if got := d.Trash(); got.Dests != 0 || got.Services != 0 {
		t.Fatalf("after its last conn and the period: %+v", got)
	}
}

// Configuration changes race with the data path and with listings (run
// under -race): every snapshot a reader loads lists exactly the services
// and real servers of the model it carries, in its order.
func TestApplyConcurrent(t *testing.T) {
	d, w, _, in := testDirector(t, false)
	full := d.Model()
	k := full.Services[0].ServiceKey
	extra := ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.0.12"), Port: 8080, Method: ipvs.MethodMasq, Weight: 2}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 4)
	wg.Add(2)
	go func() { // writer: restores, edits, removals
		defer wg.Done()
		defer close(stop)
		for i := 0; i < 300; i++ {
			var err error
			switch i % 4 {
			case 0:
				err = d.Apply(full)
			case 1:
				err = d.AddDest(k, extra)
			case 2:
				err = d.Update(func(m *Model) error { m.Services[0].Dests[0].Weight = int32(i); return nil })
			case 3:
				d.Clear()
			}
			if err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() { // reader: what a listing does
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			s := d.Snapshot()
			if len(s.List) != len(s.Model.Services) {
				errs <- fmt.Errorf("snapshot lists %d services, its model %d", len(s.List), len(s.Model.Services))
				return
			}
			for i, sv := range s.List {
				ms := s.Model.Services[i]
				if sv.Config.ServiceKey != ms.ServiceKey || len(sv.Dests) != len(ms.Dests) {
					errs <- fmt.Errorf("snapshot service %d %s/%d dests, model %s/%d", i, sv.Config.ServiceKey, len(sv.Dests), ms.ServiceKey, len(ms.Dests))
					return
				}
				for j, dd := range sv.Dests {
					if dd.Addr != ms.Dests[j].Addr || dd.Port != ms.Dests[j].Port {
						errs <- fmt.Errorf("snapshot dest %d of %s is %s, model %s", j, ms.ServiceKey, dd.Addr, ms.Dests[j].Addr)
						return
					}
					_ = dd.Config()
				}
			}
			_ = d.Trash()
		}
	}()
	// The data path: new conns and packets of old ones, all the while.
	for port := uint16(1); ; port++ {
		select {
		case <-stop:
			wg.Wait()
			select {
			case err := <-errs:
				t.Fatal(err)
			default:
			}
			return
		default:
		}
		resolveAll(d)
		send(w, in, t, 20000+port%5000, 0x02)
		send(w, in, t, 20000+(port/2)%5000, 0x10)
	}
}

// sloppy_tcp (spec §3.8): without it only a SYN creates a conn; with it
// any TCP packet without RST does, mid-flow, and the conn starts where
// such a packet puts it (an ACK: ESTABLISHED).
func TestSloppyTCP(t *testing.T) {
	for _, sloppy := range []bool{false, true} {
		d, w, _, in := testDirector(t, false)
		d.c.SloppyTCP = sloppy
		ack := send(w, in, t, 40000, 0x10)
		rst := send(w, in, t, 40001, 0x04|0x10)
		if ack != sloppy || rst {
			t.Fatalf("sloppy %v: an ACK created a conn: %v, a RST: %v (drops %v)", sloppy, ack, rst, d.Drops.Get())
		}
		if !sloppy {
			if d.Drops[CntNoConn].Load() != 2 {
				t.Fatalf("without sloppy_tcp: no-conn %d, want 2", d.Drops[CntNoConn].Load())
			}
			continue
		}
		dd := d.Snapshot().List[0].Dests[0]
		if d.CT.Len() != 1 || dd.ActiveConns() != 1 {
			t.Fatalf("sloppy: %d conns, %d active; want the ACK's conn, ESTABLISHED", d.CT.Len(), dd.ActiveConns())
		}
	}
}
