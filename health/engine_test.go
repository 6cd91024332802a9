package health

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
)

// modelCtl is a control plane made of ipvsadm's table model: restores
// are parsed and applied as the daemon applies them (atomically).
type modelCtl struct {
	mu       sync.Mutex
	t        *ipvsadm.Table
	restores atomic.Int64
	refuse   string // a restore containing this is refused
}

func newModelCtl() *modelCtl { return &modelCtl{t: ipvsadm.NewTable()} }

func (m *modelCtl) Exec(args []string) error { return m.Restore(strings.Join(args, " ") + "\n") }

func (m *modelCtl) Restore(text string) error {
	m.restores.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refuse != "" && strings.Contains(text, m.refuse) {
		return &ipvsadm.Error{Status: 255, Line: 1, Msg: "refused by the test"}
	}
	lines, err := ipvsadm.ParseRules(strings.NewReader(text))
	if err != nil {
		return err
	}
	return m.t.Restore(lines)
}

// dests returns addr:port -> weight of a service, or nil if it is absent.
func (m *modelCtl) dests(k ipvs.ServiceKey) map[string]int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.t.Service(k)
	if !ok {
		return nil
	}
	out := map[string]int32{}
	for _, d := range s.Dests {
		out[netip.AddrPortFrom(d.Addr, d.Port).String()] = d.Weight
	}
	return out
}

func (m *modelCtl) save() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	_ = ipvsadm.NewLister(ipvsadm.FmtNumeric).WriteSave(&b, m.t.ListServices(), true)
	return b.String()
}

var vip = ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("198.18.0.100"), Port: 80}

func rip(n int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, 0, byte(10 + n)}) }

// flagCheck is a MISC_CHECK that passes while a file exists.
func flagCheck(dir string, n int) Check {
	return Check{
		Kind: MISC, Script: []string{"/bin/sh", "-c", fmt.Sprintf("test -e %s/rs%d", dir, n)},
		UID: -1, GID: -1, Pos: fmt.Sprintf("test:%d", n),
		Timing: Timing{DelayLoop: 40 * time.Millisecond, DelayBeforeRetry: 20 * time.Millisecond, Retry: 1, Rise: 2}, ScriptTimeout: 5 * time.Second,
	}
}

func setFlag(t *testing.T, dir string, n int, on bool) {
	t.Helper()
	p := filepath.Join(dir, fmt.Sprintf("rs%d", n))
	if on {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	} else if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
}

func service(dir string, weights ...int32) Service {
	cfg := ipvs.ServiceConfig{ServiceKey: vip, Sched: "rr", Netmask: 0xffffffff}
	s := Service{Name: "TCP 198.18.0.100:80", Configs: []ipvs.ServiceConfig{cfg}, Quorum: 1, Pos: "test:0"}
	for i, w := range weights {
		s.Reals = append(s.Reals, Real{
			Dest:   ipvs.DestConfig{Addr: rip(i + 1), Port: 80, Method: ipvs.MethodMasq, Weight: w},
			Checks: []Check{flagCheck(dir, i+1)}, Pos: fmt.Sprintf("test:%d", i+1),
		})
	}
	return s
}

// eventually polls cond until it holds or the (generous) deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type logBuf struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuf) logf(format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *logBuf) has(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func newEngine(t *testing.T, ctl Control) (*Engine, *logBuf) {
	lb := &logBuf{}
	e := New(ctl, Options{Logf: lb.logf})
	t.Cleanup(e.Close)
	return e, lb
}

func stateOf(e *Engine, a netip.Addr) CheckState {
	for _, s := range e.States() {
		if s.Real.Addr() == a {
			return s
		}
	}
	return CheckState{}
}

// A failed server leaves after retry+1 failed checks and returns, with
// its configured weight, after rise good ones; each change is logged.
func TestEngineFailAndReturn(t *testing.T) {
	dir := t.TempDir()
	setFlag(t, dir, 1, true)
	setFlag(t, dir, 2, true)
	ctl := newModelCtl()
	e, lb := newEngine(t, ctl)
	if err := e.Load([]Service{service(dir, 3, 1)}); err != nil {
		t.Fatal(err)
	}
	if got := ctl.dests(vip); got["198.19.0.11:80"] != 3 || got["198.19.0.12:80"] != 1 {
		t.Fatalf("initial table %v, want both servers with their weights", got)
	}
	setFlag(t, dir, 1, false)
	eventually(t, "rs1 removed", func() bool { _, ok := ctl.dests(vip)["198.19.0.11:80"]; return !ok })
	if st := stateOf(e, rip(1)); st.Up || st.RealUp || st.Failures < 2 || !strings.Contains(st.LastError, "exited with status 1") {
		t.Fatalf("rs1 state after removal: %+v (want down after 2 failures, reason logged)", st)
	}
	if !lb.has("Removing service 198.19.0.11:80 from VS TCP 198.18.0.100:80") {
		t.Fatalf("no removal log line: %q", lb.lines)
	}
	before := stateOf(e, rip(1)).Checks
	setFlag(t, dir, 1, true)
	eventually(t, "rs1 back", func() bool { return ctl.dests(vip)["198.19.0.11:80"] == 3 })
	if n := stateOf(e, rip(1)).Checks - before; n < 2 {
		t.Fatalf("rs1 came back after %d checks, want rise=2", n)
	}
	if !lb.has("Adding service 198.19.0.11:80 to VS TCP 198.18.0.100:80 (weight 3)") {
		t.Fatalf("no adding log line: %q", lb.lines)
	}
}

// inhibit_on_failure keeps a failed server listed at weight 0.
func TestEngineInhibit(t *testing.T) {
	dir := t.TempDir()
	setFlag(t, dir, 1, true)
	setFlag(t, dir, 2, true)
	s := service(dir, 2, 1)
	s.Reals[0].Inhibit = true
	ctl := newModelCtl()
	e, _ := newEngine(t, ctl)
	if err := e.Load([]Service{s}); err != nil {
		t.Fatal(err)
	}
	setFlag(t, dir, 1, false)
	eventually(t, "rs1 at weight 0", func() bool { w, ok := ctl.dests(vip)["198.19.0.11:80"]; return ok && w == 0 })
	setFlag(t, dir, 1, true)
	eventually(t, "rs1 back at weight 2", func() bool { return ctl.dests(vip)["198.19.0.11:80"] == 2 })
}

// Below the quorum the sorry server takes the service alone; at quorum
// plus hysteresis the real servers return and the sorry server leaves.
func TestEngineQuorumSorry(t *testing.T) {
	dir := t.TempDir()
	for n := 1; n <= 3; n++ {
		setFlag(t, dir, n, true)
	}
	s := service(dir, 2, 2, 2)
	s.Quorum, s.Hysteresis = 4, 1 // lost below 3, gained at 5
	s.Sorry = &Sorry{Dest: ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.0.99"), Port: 80, Method: ipvs.MethodMasq, Weight: 1}}
	up := filepath.Join(dir, "quorum-up")
	down := filepath.Join(dir, "quorum-down")
	s.QuorumUp = []string{"/bin/sh", "-c", "echo up >> " + up}
	s.QuorumDown = []string{"/bin/sh", "-c", "echo down >> " + down}
	ctl := newModelCtl()
	e, lb := newEngine(t, ctl)
	if err := e.Load([]Service{s}); err != nil {
		t.Fatal(err)
	}
	setFlag(t, dir, 1, false)
	eventually(t, "rs1 removed", func() bool { _, ok := ctl.dests(vip)["198.19.0.11:80"]; return !ok })
	if _, ok := ctl.dests(vip)["198.19.0.99:80"]; ok {
		t.Fatal("sorry server added with live weight 4 (quorum 4, hysteresis 1)")
	}
	setFlag(t, dir, 2, false)
	eventually(t, "only the sorry server", func() bool {
		d := ctl.dests(vip)
		return len(d) == 1 && d["198.19.0.99:80"] == 1
	})
	eventually(t, "quorum_down script ran", func() bool { b, _ := os.ReadFile(down); return string(b) == "down\n" })
	setFlag(t, dir, 1, true)
	// live weight 4 < quorum+hysteresis 5: still down.
	eventually(t, "rs1 up again", func() bool { return stateOf(e, rip(1)).RealUp })
	time.Sleep(100 * time.Millisecond)
	if d := ctl.dests(vip); len(d) != 1 {
		t.Fatalf("quorum regained below quorum+hysteresis: %v", d)
	}
	setFlag(t, dir, 2, true)
	eventually(t, "real servers back, sorry gone", func() bool {
		d := ctl.dests(vip)
		_, sorry := d["198.19.0.99:80"]
		return len(d) == 3 && !sorry
	})
	eventually(t, "quorum_up script ran", func() bool { b, _ := os.ReadFile(up); return string(b) == "up\n" })
	if !lb.has("lost quorum 4-1=3 > 2") || !lb.has("gained quorum 4+1=5 <= 6") {
		t.Fatalf("quorum log lines missing: %q", lb.lines)
	}
	if ss := e.Services(); len(ss) != 1 || !ss[0].QuorumUp || ss[0].LiveWeight != 6 {
		t.Fatalf("Services() = %+v", ss)
	}
}

// A reload that changes nothing sends nothing and restarts no checker;
// a reload that changes a weight sends only that edit.
func TestEngineReload(t *testing.T) {
	dir := t.TempDir()
	setFlag(t, dir, 1, true)
	ctl := newModelCtl()
	e, _ := newEngine(t, ctl)
	if err := e.Load([]Service{service(dir, 1, 1)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "rs2 down", func() bool { return !stateOf(e, rip(2)).RealUp })
	n := ctl.restores.Load()
	checks := stateOf(e, rip(1)).Checks
	if err := e.Load([]Service{service(dir, 1, 1)}); err != nil {
		t.Fatal(err)
	}
	if got := ctl.restores.Load(); got != n {
		t.Fatalf("an unchanged reload sent %d restores", got-n)
	}
	if st := stateOf(e, rip(2)); st.RealUp {
		t.Fatal("reload reset rs2's failed state")
	}
	if c := stateOf(e, rip(1)).Checks; c < checks {
		t.Fatalf("reload restarted the checker (checks %d -> %d)", checks, c)
	}
	before := ctl.save()
	s := service(dir, 5, 1)
	if err := e.Load([]Service{s}); err != nil {
		t.Fatal(err)
	}
	if got := ctl.restores.Load(); got != n+1 {
		t.Fatalf("a weight change sent %d restores, want 1", got-n)
	}
	want := strings.Replace(before, "-r 198.19.0.11:80 -m -w 1", "-r 198.19.0.11:80 -m -w 5", 1)
	if got := ctl.save(); got != want {
		t.Fatalf("after reload:\n%s\nwant\n%s", got, want)
	}
	// A refused reload changes nothing.
	ctl.refuse = "-w 7"
	bad := service(dir, 7, 1)
	err := e.Load([]Service{bad})
	if err == nil || !strings.Contains(err.Error(), "test:1: -e -t 198.18.0.100:80 -r 198.19.0.11:80 -m -w 7: refused by the test") {
		t.Fatalf("refused reload: %v", err)
	}
	if got := ctl.save(); got != want {
		t.Fatalf("a refused reload changed the table:\n%s", got)
	}
}

// alpha: a server starts out of the table and enters after its first
// good check (rise 1).
func TestEngineAlpha(t *testing.T) {
	dir := t.TempDir()
	setFlag(t, dir, 1, true)
	s := service(dir, 1)
	s.Reals[0].Checks[0].Alpha = true
	s.Reals[0].Checks[0].Rise = 1
	s.Reals[0].Checks[0].Warmup = 300 * time.Millisecond
	rules, err := InitialRules([]Service{s})
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 1 || rules[0].Args[0] != "-A" {
		t.Fatalf("alpha: initial rules %v, want the service alone", rules)
	}
	ctl := newModelCtl()
	e, _ := newEngine(t, ctl)
	if err := e.Load([]Service{s}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "rs1 added", func() bool { return ctl.dests(vip)["198.19.0.11:80"] == 1 })
}

// misc_dynamic: exit status 2..255 sets the weight to status-2.
func TestEngineMiscDynamic(t *testing.T) {
	dir := t.TempDir()
	st := filepath.Join(dir, "status")
	if err := os.WriteFile(st, []byte("7"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := service(dir, 1)
	c := &s.Reals[0].Checks[0]
	c.Script = []string{"/bin/sh", "-c", "exit $(cat " + st + ")"}
	c.Dynamic = true
	ctl := newModelCtl()
	e, _ := newEngine(t, ctl)
	if err := e.Load([]Service{s}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "weight 5", func() bool { return ctl.dests(vip)["198.19.0.11:80"] == 5 })
	if err := os.WriteFile(st, []byte("1"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "removed on exit 1", func() bool { _, ok := ctl.dests(vip)["198.19.0.11:80"]; return !ok })
}

// A script that never exits is killed with its whole process group at
// misc_timeout, and the check fails saying so.
func TestMiscTimeoutKillsGroup(t *testing.T) {
	dir := t.TempDir()
	pidf := filepath.Join(dir, "child")
	c := Check{Kind: MISC, UID: -1, GID: -1,
		Script:        []string{"/bin/sh", "-c", "sleep 1000 & echo $! > " + pidf + "; wait"},
		ScriptTimeout: 300 * time.Millisecond, Timing: Timing{DelayLoop: time.Second}}
	p, err := newProber(&c, HostEnv{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := p.probe(t.Context(), 0)
	if r.ok || !strings.Contains(r.reason, "timed out after 300ms (process group killed)") {
		t.Fatalf("probe: %+v", r)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("probe took %v", el)
	}
	b, err := os.ReadFile(pidf)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	eventually(t, "the script's child killed", func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return strings.Contains(string(st), ") Z ") // a zombie of init is dead
	})
}

// The engine's state is read while checkers report: invariants hold
// under the race detector.
func TestEngineConcurrentStates(t *testing.T) {
	dir := t.TempDir()
	for n := 1; n <= 4; n++ {
		setFlag(t, dir, n, true)
	}
	ctl := newModelCtl()
	e, _ := newEngine(t, ctl)
	s := service(dir, 1, 1, 1, 1)
	if err := e.Load([]Service{s}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			n := i%4 + 1
			p := filepath.Join(dir, fmt.Sprintf("rs%d", n))
			if i%2 == 0 {
				os.Remove(p)
			} else {
				os.WriteFile(p, nil, 0o600)
			}
			_ = e.Load([]Service{s})
			time.Sleep(7 * time.Millisecond)
		}
	}()
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		live := int64(0)
		for _, st := range e.States() {
			if st.Checks < st.Failures {
				t.Fatalf("checks %d < failures %d", st.Checks, st.Failures)
			}
			if st.RealUp && !st.Up {
				t.Fatalf("real server up with a checker down: %+v", st)
			}
			if st.RealUp {
				live += st.Weight
			}
		}
		for _, ss := range e.Services() {
			if ss.RealsUp > ss.Reals {
				t.Fatalf("services: %+v", ss)
			}
		}
		_ = live
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
}
