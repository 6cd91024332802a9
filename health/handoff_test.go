package health

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/golvs/golvs/ipvs"
)

// current lists a control plane's services with their dests, as the new
// director of a takeover holds them.
func (m *modelCtl) current(t *testing.T) []ipvs.ServiceConfig {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []ipvs.ServiceConfig
	for _, ls := range m.t.ListServices() {
		s, ok := m.t.Service(ls.Config.ServiceKey)
		if !ok {
			t.Fatalf("listed service %v not found", ls.Config.ServiceKey)
		}
		out = append(out, s)
	}
	return out
}

// TestEngineHandoff: a successor engine adopts the table the director
// holds and the old engine's verdicts (through JSON, as a takeover sends
// them): its first Load changes nothing, a server found down stays down
// until its checker passes, one found up stays up (alpha would take it
// out), and the checkers run on from there.
func TestEngineHandoff(t *testing.T) {
	dir := t.TempDir()
	setFlag(t, dir, 1, true)
	s := service(dir, 1, 1)
	for i := range s.Reals {
		s.Reals[i].Checks[0].Alpha = true
		s.Reals[i].Checks[0].Rise = 1
	}
	ctl1 := newModelCtl()
	e1, _ := newEngine(t, ctl1)
	if err := e1.Load([]Service{s}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "rs1 up, rs2 never", func() bool {
		d := ctl1.dests(vip)
		return len(d) == 1 && d["198.19.0.11:80"] == 1 && stateOf(e1, rip(2)).Checks >= 2
	})
	b, err := json.Marshal(e1.Handoff())
	if err != nil {
		t.Fatal(err)
	}
	checks2 := stateOf(e1, rip(2)).Checks
	e1.Close()
	var h Handoff
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}

	// The new director holds what the old one did.
	ctl2 := newModelCtl()
	if err := ctl2.Restore(ctl1.save()); err != nil {
		t.Fatal(err)
	}
	e2, lb := newEngine(t, ctl2)
	if err := e2.Adopt(ctl2.current(t), &h); err != nil {
		t.Fatal(err)
	}
	if err := e2.Adopt(ctl2.current(t), &h); !errors.Is(err, ErrAdopt) {
		t.Fatalf("a second Adopt: %v, want ErrAdopt", err)
	}
	before := ctl2.restores.Load()
	if err := e2.Load([]Service{s}); err != nil {
		t.Fatal(err)
	}
	if n := ctl2.restores.Load() - before; n != 0 {
		t.Fatalf("the first Load after adopting sent %d restores, want none:\n%s", n, ctl2.save())
	}
	if st := stateOf(e2, rip(1)); !st.Up || st.Checks < 1 {
		t.Errorf("rs1 %+v: want up, with the old checks counted", st)
	}
	if st := stateOf(e2, rip(2)); st.Up || st.Checks < checks2 {
		t.Errorf("rs2 %+v: want down, with at least the old %d checks", st, checks2)
	}
	if lb.has("starting with quorum") {
		t.Errorf("the adopted VS was started afresh: %q", lb.lines)
	}
	// The checkers run: rs2's coming back is seen, and nothing else moved.
	setFlag(t, dir, 2, true)
	eventually(t, "rs2 added by the successor's checker", func() bool { return ctl2.dests(vip)["198.19.0.12:80"] == 1 })
	if w, ok := ctl2.dests(vip)["198.19.0.11:80"]; !ok || w != 1 {
		t.Fatalf("rs1 moved:\n%s", ctl2.save())
	}
	if err := e2.Adopt(nil, nil); !errors.Is(err, ErrAdopt) {
		t.Fatalf("Adopt after Load: %v, want ErrAdopt", err)
	}
}

// TestEngineHandoffOwned: a service the old engine configured that the
// new configuration drops is removed, as a reload would; one the
// configuration does not name and the old engine did not own (ipvsadm
// rules) is left alone.
func TestEngineHandoffOwned(t *testing.T) {
	dir := t.TempDir()
	setFlag(t, dir, 1, true)
	ctl := newModelCtl()
	other := "-A -t 198.18.0.101:80 -s rr\n-a -t 198.18.0.101:80 -r 198.19.0.11:80 -m -w 1\n"
	if err := ctl.Restore(other + "-A -t 198.18.0.100:80 -s rr\n-a -t 198.18.0.100:80 -r 198.19.0.11:80 -m -w 1\n"); err != nil {
		t.Fatal(err)
	}
	h := &Handoff{Owned: []ipvs.ServiceKey{vip}}
	e, _ := newEngine(t, ctl)
	if err := e.Adopt(ctl.current(t), h); err != nil {
		t.Fatal(err)
	}
	if err := e.Load(nil); err != nil {
		t.Fatal(err)
	}
	if d := ctl.dests(vip); d != nil {
		t.Errorf("the dropped service is still there: %v", d)
	}
	if d := ctl.dests(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip.Addr.Next(), Port: 80}); len(d) != 1 {
		t.Errorf("the rules' service was touched: %v\n%s", d, ctl.save())
	}
}

// TestEngineAdoptBounds: a handoff beyond the bounds is refused whole.
func TestEngineAdoptBounds(t *testing.T) {
	e, _ := newEngine(t, newModelCtl())
	h := &Handoff{Services: []HandedVS{{Name: "x", Reals: []HandedReal{{ID: "198.19.0.11:80", Checks: make([]HandedCheck, maxHandedChecks+1)}}}}}
	err := e.Adopt(nil, h)
	if err == nil || !strings.Contains(err.Error(), "checkers, at most") {
		t.Fatalf("Adopt of %d checkers on one real server: %v", maxHandedChecks+1, err)
	}
	if err := e.Adopt(nil, nil); err != nil {
		t.Fatalf("Adopt after a refused one: %v", err)
	}
}
