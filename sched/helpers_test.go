package sched

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/golvs/golvs/ipvs"
)

var testKey = ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("10.0.0.1"), Port: 80}

// harness drives a scheduler the way the control plane does: each change
// builds a new Service snapshot (new dests at the head) and then calls
// the callback.
type harness struct {
	t     testing.TB
	s     Scheduler
	svc   *Service
	names map[*ipvs.Dest]string
	sem   ipvs.Semantics // of the dests mk makes
}

func newHarness(t testing.TB, name string) *harness {
	t.Helper()
	return newHarnessSem(t, name, ipvs.Current)
}

// newHarnessSem is newHarness for a director of semantics sem.
func newHarnessSem(t testing.TB, name string, sem ipvs.Semantics) *harness {
	t.Helper()
	s, err := NewFor(name, sem)
	if err != nil {
		t.Fatal(err)
	}
	h := withSched(t, s)
	h.sem = sem
	return h
}

func withSched(t testing.TB, s Scheduler) *harness {
	return &harness{t: t, s: s, svc: &Service{Key: testKey}, names: map[*ipvs.Dest]string{}}
}

// bothSemantics runs f once per semantics, as a subtest named after it.
func bothSemantics(t *testing.T, f func(t *testing.T, sem ipvs.Semantics)) {
	for _, sem := range []ipvs.Semantics{ipvs.Current, ipvs.Classic} {
		t.Run(sem.String(), func(t *testing.T) { f(t, sem) })
	}
}

func (h *harness) snapshot(dests []*ipvs.Dest) {
	h.svc = &Service{Key: h.svc.Key, Flags: h.svc.Flags, Dests: dests}
}

// mk creates a dest named n with address 192.168.0.<i>:80.
func (h *harness) mk(n string, w int32) *ipvs.Dest {
	addr := netip.AddrFrom4([4]byte{192, 168, 0, byte(len(h.names) + 2)})
	d := h.sem.NewDest(testKey, ipvs.DestConfig{Addr: addr, Port: 80, Weight: w})
	h.names[d] = n
	return d
}

func (h *harness) init() {
	h.t.Helper()
	if err := h.s.Init(h.svc); err != nil {
		h.t.Fatal(err)
	}
}

// add adds d at the head of the list and calls AddDest.
func (h *harness) add(d *ipvs.Dest) {
	h.t.Helper()
	h.snapshot(append([]*ipvs.Dest{d}, h.svc.Dests...))
	if err := h.s.AddDest(h.svc, d); err != nil {
		h.t.Fatal(err)
	}
}

// preset puts dests in the list without telling the scheduler (they
// existed before the scheduler was bound); added in the given order.
func (h *harness) preset(ds ...*ipvs.Dest) {
	for _, d := range ds {
		h.snapshot(append([]*ipvs.Dest{d}, h.svc.Dests...))
	}
}

func (h *harness) del(d *ipvs.Dest) {
	h.t.Helper()
	i := slices.Index(h.svc.Dests, d)
	if i < 0 {
		h.t.Fatalf("del: %s not in list", h.names[d])
	}
	h.snapshot(slices.Delete(slices.Clone(h.svc.Dests), i, i+1))
	d.Unlink()
	if err := h.s.DelDest(h.svc, d); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) setWeight(d *ipvs.Dest, w int32) {
	h.t.Helper()
	c := d.Config()
	c.Weight = w
	d.Update(c)
	h.snapshot(h.svc.Dests)
	if err := h.s.UpdDest(h.svc, d); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) name(d *ipvs.Dest) string {
	if d == nil {
		return "-"
	}
	if n, ok := h.names[d]; ok {
		return n
	}
	return d.Addr.String()
}

// picks schedules n times with packet p and returns the names.
func (h *harness) picks(n int, p *Packet) string {
	if p == nil {
		p = &Packet{Proto: ipvs.ProtoTCP, Src: netip.MustParseAddr("10.9.9.9"), Dst: testKey.Addr, SrcPort: 1234, DstPort: 80}
	}
	out := make([]string, n)
	for i := range out {
		out[i] = h.name(h.s.Schedule(h.svc, p))
	}
	return strings.Join(out, " ")
}

func pkt(src string) *Packet {
	return &Packet{Proto: ipvs.ProtoTCP, Src: netip.MustParseAddr(src), Dst: testKey.Addr, SrcPort: 40000, DstPort: 80}
}

func pktTo(dst string) *Packet {
	return &Packet{Proto: ipvs.ProtoTCP, Src: netip.MustParseAddr("10.9.9.9"), Dst: netip.MustParseAddr(dst), SrcPort: 40000, DstPort: 80}
}

// counters sets act/inact on a dest.
func counters(d *ipvs.Dest, act, inact int32) { d.SetCounters(act, inact, 0) }

func ipN(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func destN(i int, w int32) *ipvs.Dest { return destNSem(i, w, ipvs.Current) }

func destNSem(i int, w int32, sem ipvs.Semantics) *ipvs.Dest {
	a := netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)})
	return sem.NewDest(testKey, ipvs.DestConfig{Addr: a, Port: 8080, Weight: w})
}
