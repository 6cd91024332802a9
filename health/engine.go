package health

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
)

// Control is the part of the control plane the engine drives, as
// keepalived drives IPVS: ipvsadm command lines, and a restore that
// applies a batch of them atomically. control.Server implements it.
type Control interface {
	Exec(args []string) error
	Restore(text string) error
}

// Options tune an engine. Zero values take defaults.
type Options struct {
	// Logf receives one line per state change; nil: the log package.
	Logf func(format string, args ...any)
	// Env is where checks open sockets and start scripts; nil: this
	// process's network namespace.
	Env Env
	// ScriptTimeout bounds notify and quorum scripts (default 30 s); a
	// script still running then is killed with its process group.
	ScriptTimeout time.Duration
	// MaxScripts bounds notify and quorum scripts running at once
	// (default 16); beyond it a script is not started, and counted.
	MaxScripts int
}

// Errors.
var (
	ErrClosed    = errors.New("health: engine closed")
	ErrDuplicate = errors.New("health: service configured twice")
)

// Engine runs the checkers of a set of services and keeps the control
// plane's table in step with their verdicts.
type Engine struct {
	ctl  Control
	o    Options
	logf func(format string, args ...any)
	env  Env

	mu      sync.Mutex
	svcs    []*svcState
	applied *table
	dirty   bool   // the last apply failed: retry at the next report
	lastErr string // the last apply error logged (logged once)
	closed  bool
	noStart bool // InitialRules: compute, run nothing

	// Adopt, consumed by the first Load (handoff.go).
	adopting     bool
	adoptCurrent []ipvs.ServiceConfig
	adoptOwned   []ipvs.ServiceKey
	adoptSvcs    []*svcState // the handed verdicts; no checker runs

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	scripts        chan struct{}
	scriptsDropped atomic.Uint64
	scriptsWG      sync.WaitGroup
}

type svcState struct {
	spec     Service
	id       string
	reals    []*realState
	quorumUp bool
	since    time.Time
}

type realState struct {
	spec   Real
	id     string
	checks []*checkState
	alive  bool
	dyn    int64 // misc_dynamic weight, -1: none
	since  time.Time
}

type checkState struct {
	spec   Check
	fp     string // everything: an identical checker keeps running across a reload
	id     string // what it checks: a changed checker of the same id keeps its verdict
	svc    *svcState
	rs     *realState
	cancel context.CancelFunc

	up, hasRun, stopped bool
	retryIt, rises      int
	checks, failures    uint64
	latency, total      time.Duration
	reason              string
	since               time.Time
}

// New creates an engine over a control plane. It runs nothing until Load.
func New(ctl Control, o Options) *Engine {
	if o.ScriptTimeout <= 0 {
		o.ScriptTimeout = 30 * time.Second
	}
	if o.MaxScripts <= 0 {
		o.MaxScripts = 16
	}
	e := &Engine{ctl: ctl, o: o, logf: o.Logf, env: o.Env, applied: newTable(), scripts: make(chan struct{}, o.MaxScripts)}
	if e.logf == nil {
		e.logf = log.Printf
	}
	if e.env == nil {
		e.env = HostEnv{}
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	return e
}

func svcID(s *Service) string {
	keys := make([]string, len(s.Configs))
	for i := range s.Configs {
		keys[i] = ipvsadm.NormKey(s.Configs[i].ServiceKey).String()
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func realID(r *Real) string { return addrPortString(r.Dest.Addr, r.Dest.Port) }

// checkID is what a checker checks; checkFP is all of its settings.
func checkID(c *Check) string {
	return fmt.Sprintf("%v|%v|%v|%v|%q|%q|%d|%q", c.Kind, c.Target, c.Bind, c.URLs, c.Script, c.QName, c.QType, c.Protocol)
}

func checkFP(c *Check) string {
	x := *c
	x.Pos, x.Summary = "", ""
	return fmt.Sprintf("%#v|%#v", x, c.TLS)
}

// Rule is one ipvsadm command line the engine sends, and where what it
// configures was configured.
type Rule struct {
	Args   []string
	Origin string
}

// InitialRules returns the commands a first Load of specs sends: every
// service with its real servers as they start (up, or down with alpha:
// absent, or at weight 0 with inhibit_on_failure), and the sorry server
// where the quorum starts lost. It runs nothing.
func InitialRules(specs []Service) ([]Rule, error) {
	e := New(nopControl{}, Options{Logf: func(string, ...any) {}})
	defer e.Close()
	var out []Rule
	e.ctl = ruleRecorder{&out}
	e.noStart = true
	if err := e.Load(specs); err != nil {
		return nil, err
	}
	return out, nil
}

type nopControl struct{}

func (nopControl) Exec([]string) error  { return nil }
func (nopControl) Restore(string) error { return nil }

type ruleRecorder struct{ out *[]Rule }

func (ruleRecorder) Exec([]string) error  { return nil }
func (ruleRecorder) Restore(string) error { return nil }

// Load applies a configuration: the first one, or a reload. Services,
// real servers and checkers that exist before and after keep their health
// state (and identical checkers keep running untouched); the table
// changes by the difference only, in one atomic restore, so a reload that
// changes nothing sends nothing. If the control plane refuses the change,
// nothing changes and the error names where the refused part was
// configured.
func (e *Engine) Load(specs []Service) error {
	seen := map[ipvs.ServiceKey]string{}
	for i := range specs {
		if err := specs[i].Validate(); err != nil {
			return err
		}
		for _, c := range specs[i].Configs {
			k := ipvsadm.NormKey(c.ServiceKey)
			if p, ok := seen[k]; ok {
				return fmt.Errorf("%s: %w: %s (also at %s)", specs[i].Pos, ErrDuplicate, k, p)
			}
			seen[k] = specs[i].Pos
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	now := time.Now()
	oldSvcs := map[string]*svcState{}
	for _, s := range e.svcs {
		oldSvcs[s.id] = s
	}
	prevApplied := e.applied
	if e.adopting {
		e.applied = e.adoptedTable(specs)
		for _, s := range e.adoptSvcs {
			oldSvcs[s.id] = s
		}
	}
	var next []*svcState
	carried := map[*checkState]bool{}
	type newCheck struct {
		cs   *checkState
		warm bool
	}
	var starts []newCheck
	for i := range specs {
		ss := &svcState{spec: specs[i], id: svcID(&specs[i]), since: now}
		old := oldSvcs[ss.id]
		oldReals := map[string]*realState{}
		if old != nil {
			for _, r := range old.reals {
				oldReals[r.id] = r
			}
		}
		for j := range ss.spec.Reals {
			rs := &realState{spec: ss.spec.Reals[j], id: realID(&ss.spec.Reals[j]), dyn: -1, since: now}
			or := oldReals[rs.id]
			var oldChecks []*checkState
			if or != nil {
				rs.dyn, rs.since = or.dyn, or.since
				oldChecks = slices.Clone(or.checks)
			}
			for k := range rs.spec.Checks {
				c := rs.spec.Checks[k]
				c.Summary = c.describe(netip.AddrPortFrom(rs.spec.Dest.Addr, rs.spec.Dest.Port))
				fp, id := checkFP(&c), checkID(&c)
				var cs *checkState
				// An identical checker keeps running; one that changed
				// but checks the same thing keeps its verdict.
				for n, oc := range oldChecks {
					if oc != nil && oc.fp == fp {
						cs, oldChecks[n] = oc, nil
						carried[oc] = true
						break
					}
				}
				if cs == nil {
					cs = &checkState{spec: c, fp: fp, id: id, up: !c.Alpha, since: now}
					for n, oc := range oldChecks {
						if oc != nil && oc.id == id {
							cs.up, cs.hasRun, cs.since, cs.checks, cs.failures = oc.up, oc.hasRun, oc.since, oc.checks, oc.failures
							oldChecks[n] = nil
							break
						}
					}
					starts = append(starts, newCheck{cs, or == nil})
				}
				rs.checks = append(rs.checks, cs)
			}
			rs.alive = allUp(rs.checks)
			if or != nil && or.alive != rs.alive {
				rs.since = now
			}
			ss.reals = append(ss.reals, rs)
		}
		if old != nil {
			ss.quorumUp, ss.since = old.quorumUp, old.since
		} else {
			ss.quorumUp = ss.liveWeight() >= ss.spec.Quorum+ss.spec.Hysteresis
		}
		next = append(next, ss)
	}
	want := desired(next)
	// Quorum thresholds may have changed on a reload.
	for _, ss := range next {
		if oldSvcs[ss.id] != nil {
			if up, _ := ss.quorumNext(); up != ss.quorumUp {
				ss.quorumUp = up
				want = desired(next)
			}
		}
	}
	if err := e.apply(want); err != nil {
		e.applied = prevApplied
		return err
	}
	e.adopting, e.adoptCurrent, e.adoptOwned, e.adoptSvcs = false, nil, nil, nil
	// Committed: from here nothing fails.
	for _, s := range e.svcs {
		for _, r := range s.reals {
			for _, c := range r.checks {
				if !carried[c] {
					c.stopped = true
					c.cancel()
				}
			}
		}
	}
	for _, ss := range next {
		old := oldSvcs[ss.id]
		delete(oldSvcs, ss.id)
		for _, rs := range ss.reals {
			for _, c := range rs.checks {
				c.svc, c.rs = ss, rs
			}
		}
		if old == nil {
			e.logf("health: VS %s (%s): %d real servers, quorum %d (hysteresis %d), starting with quorum %s",
				ss.spec.Name, ss.spec.Pos, len(ss.reals), ss.spec.Quorum, ss.spec.Hysteresis, upDown(ss.quorumUp))
			if !ss.quorumUp && ss.spec.Sorry != nil {
				e.logf("health: VS %s: sorry server %s in the pool", ss.spec.Name, addrPortString(ss.spec.Sorry.Dest.Addr, ss.spec.Sorry.Dest.Port))
				e.script(ss.spec.QuorumDown, "quorum_down of VS "+ss.spec.Name)
			}
		} else if old.quorumUp != ss.quorumUp {
			e.quorumChanged(ss)
		}
	}
	for _, old := range oldSvcs {
		e.logf("health: VS %s removed", old.spec.Name)
	}
	e.svcs = next
	if !e.noStart {
		for _, n := range starts {
			e.start(n.cs, n.warm)
		}
	}
	return nil
}

func allUp(cs []*checkState) bool {
	for _, c := range cs {
		if !c.up {
			return false
		}
	}
	return true
}

func upDown(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

// weight is a real server's effective weight: misc_dynamic's when set.
func (r *realState) weight() int64 {
	if r.dyn >= 0 {
		return r.dyn
	}
	return int64(r.spec.Dest.Weight)
}

func (s *svcState) liveWeight() int64 {
	var sum int64
	for _, r := range s.reals {
		if r.alive {
			sum += r.weight()
		}
	}
	return sum
}

// quorumNext is keepalived's update_quorum_state: a service that has
// quorum loses it below quorum-hysteresis (or at zero live weight); one
// without gains it at quorum+hysteresis.
func (s *svcState) quorumNext() (bool, int64) {
	sum := s.liveWeight()
	if s.quorumUp {
		if sum == 0 || sum < s.spec.Quorum-s.spec.Hysteresis {
			return false, sum
		}
		return true, sum
	}
	return sum >= s.spec.Quorum+s.spec.Hysteresis, sum
}

// desired is the table the services' states call for: live real servers
// with their weight; failed ones absent, or at weight 0 when inhibited;
// with quorum lost and a sorry server, only the sorry server (inhibited
// real servers stay at weight 0); sorry_server_inhibit keeps the sorry
// server at weight 0 while it is not needed.
func desired(svcs []*svcState) *table {
	t := newTable()
	for _, s := range svcs {
		sorryActive := s.spec.Sorry != nil && !s.quorumUp
		for i := range s.spec.Configs {
			cfg := s.spec.Configs[i]
			cfg.Dests = nil
			ts := &tableSvc{cfg: cfg, origin: s.spec.Pos}
			for _, r := range s.reals {
				d := DestFor(&cfg, r.spec.Dest)
				switch {
				case r.alive && !sorryActive:
					d.Weight = int32(r.weight())
				case r.spec.Inhibit:
					d.Weight = 0
				default:
					continue
				}
				ts.dests = append(ts.dests, d)
				ts.dorig = append(ts.dorig, r.spec.Pos)
			}
			if s.spec.Sorry != nil && (sorryActive || s.spec.Sorry.Inhibit) {
				d := DestFor(&cfg, s.spec.Sorry.Dest)
				if !sorryActive {
					d.Weight = 0
				}
				ts.dests = append(ts.dests, d)
				ts.dorig = append(ts.dorig, s.spec.Pos)
			}
			t.add(ts)
		}
	}
	return t
}

// apply sends the difference between what is applied and want, as one
// restore. Called with e.mu held.
func (e *Engine) apply(want *table) error {
	cmds := diff(e.applied, want)
	if len(cmds) == 0 {
		e.applied, e.dirty = want, false
		return nil
	}
	if rr, ok := e.ctl.(ruleRecorder); ok {
		for _, c := range cmds {
			*rr.out = append(*rr.out, Rule{Args: c.args, Origin: c.origin})
		}
	}
	if err := e.ctl.Restore(restoreText(cmds)); err != nil {
		var ie *ipvsadm.Error
		if errors.As(err, &ie) && ie.Line > 0 && ie.Line <= len(cmds) {
			c := cmds[ie.Line-1]
			return fmt.Errorf("%s: %s: %s", c.origin, strings.Join(c.args, " "), ie.Msg)
		}
		return fmt.Errorf("health: applying %d changes: %w", len(cmds), err)
	}
	e.applied, e.dirty = want, false
	return nil
}

// reconcile applies the current state; a failure is logged once and
// retried at the next report. Called with e.mu held.
func (e *Engine) reconcile() {
	if err := e.apply(desired(e.svcs)); err != nil {
		e.dirty = true
		if err.Error() != e.lastErr {
			e.lastErr = err.Error()
			e.logf("health: the control plane refused a change (retrying at the next check): %v", err)
		}
		return
	}
	e.lastErr = ""
}

// start runs a checker's loop. Called with e.mu held.
func (e *Engine) start(cs *checkState, warm bool) {
	ctx, cancel := context.WithCancel(e.ctx)
	cs.cancel = cancel
	p, err := newProber(&cs.spec, e.env)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		if err != nil {
			// A checker that cannot be built fails every check with why.
			p = failProber{err}
		}
		var wait time.Duration
		if warm && cs.spec.Warmup > 0 {
			wait = rand.N(cs.spec.Warmup)
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			start := time.Now()
			r := p.probe(ctx, cs.spec.ConnectTimeout)
			if ctx.Err() != nil {
				return
			}
			r.latency = time.Since(start)
			wait, ok := e.report(cs, r)
			if !ok {
				return
			}
			t.Reset(wait)
		}
	}()
}

// result is one check's outcome.
type result struct {
	ok      bool
	reason  string        // why it failed
	weight  int64         // misc_dynamic: the new weight; -1: none
	latency time.Duration // set by the loop
}

// report folds one check's outcome into the checker's state with
// keepalived's retry rules and golvs's rise count, carries a change of
// verdict to the real server, its service's quorum and the table, and
// returns when the next check is due.
func (e *Engine) report(cs *checkState, r result) (time.Duration, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if cs.stopped || e.closed {
		return 0, false
	}
	sp := &cs.spec
	cs.checks++
	cs.latency = r.latency
	cs.total += r.latency
	next := sp.DelayLoop
	changed := false
	if r.ok {
		cs.retryIt = 0
		cs.reason = ""
		if r.weight >= 0 && cs.rs.dyn != r.weight {
			e.logf("health: changing weight from %d to %d for %s of VS %s (%s)", cs.rs.weight(), r.weight, cs.rs.id, cs.svc.spec.Name, sp.Summary)
			cs.rs.dyn = r.weight
			changed = true
		}
		if !cs.up {
			cs.rises++
			if cs.rises >= sp.Rise {
				cs.up, cs.rises, cs.since = true, 0, time.Now()
				e.logf("health: %s of %s (VS %s): up after %d good check(s)", sp.Summary, cs.rs.id, cs.svc.spec.Name, sp.Rise)
				changed = true
			}
		}
	} else {
		cs.failures++
		cs.rises = 0
		cs.reason = r.reason
		if cs.up && cs.retryIt < sp.Retry {
			cs.retryIt++
			next = sp.DelayBeforeRetry
			if sp.LogAllFailures {
				e.logf("health: %s of %s (VS %s): failed (%s), retry %d of %d", sp.Summary, cs.rs.id, cs.svc.spec.Name, r.reason, cs.retryIt, sp.Retry)
			}
		} else {
			cs.retryIt = 0
			if cs.up || !cs.hasRun {
				if cs.up {
					cs.since = time.Now()
				}
				cs.up = false
				how := "failed"
				if sp.Retry > 0 {
					how = fmt.Sprintf("failed after %d retries", sp.Retry)
				}
				e.logf("health: %s of %s (VS %s): down, %s: %s", sp.Summary, cs.rs.id, cs.svc.spec.Name, how, r.reason)
				changed = true
			} else if sp.LogAllFailures {
				e.logf("health: %s of %s (VS %s): still failing: %s", sp.Summary, cs.rs.id, cs.svc.spec.Name, r.reason)
			}
		}
	}
	cs.hasRun = true
	if changed {
		e.realChanged(cs.svc, cs.rs)
	} else if e.dirty {
		e.reconcile()
	}
	if next <= 0 {
		next = time.Millisecond
	}
	return next, true
}

// realChanged recomputes a real server's verdict and its service's
// quorum, logs and notifies what changed, and reconciles the table.
func (e *Engine) realChanged(ss *svcState, rs *realState) {
	alive := allUp(rs.checks)
	if alive != rs.alive {
		rs.alive, rs.since = alive, time.Now()
		verb := map[[2]bool]string{{true, false}: "Adding", {true, true}: "Enabling", {false, false}: "Removing", {false, true}: "Disabling"}[[2]bool{alive, rs.spec.Inhibit}]
		prep := map[[2]bool]string{{true, false}: "to", {true, true}: "of", {false, false}: "from", {false, true}: "of"}[[2]bool{alive, rs.spec.Inhibit}]
		e.logf("health: %s service %s %s VS %s (weight %d)", verb, rs.id, prep, ss.spec.Name, rs.weight())
		if alive {
			e.script(rs.spec.NotifyUp, "notify_up of "+rs.id)
		} else {
			e.script(rs.spec.NotifyDown, "notify_down of "+rs.id)
		}
	}
	if up, _ := ss.quorumNext(); up != ss.quorumUp {
		ss.quorumUp, ss.since = up, time.Now()
		e.quorumChanged(ss)
	}
	e.reconcile()
}

func (e *Engine) quorumChanged(ss *svcState) {
	sum := ss.liveWeight()
	if ss.quorumUp {
		e.logf("health: gained quorum %d+%d=%d <= %d for VS %s", ss.spec.Quorum, ss.spec.Hysteresis, ss.spec.Quorum+ss.spec.Hysteresis, sum, ss.spec.Name)
		if s := ss.spec.Sorry; s != nil {
			e.logf("health: removing sorry server %s from VS %s", addrPortString(s.Dest.Addr, s.Dest.Port), ss.spec.Name)
		}
		e.script(ss.spec.QuorumUp, "quorum_up of VS "+ss.spec.Name)
		return
	}
	e.logf("health: lost quorum %d-%d=%d > %d for VS %s", ss.spec.Quorum, ss.spec.Hysteresis, ss.spec.Quorum-ss.spec.Hysteresis, sum, ss.spec.Name)
	if s := ss.spec.Sorry; s != nil {
		e.logf("health: adding sorry server %s to VS %s", addrPortString(s.Dest.Addr, s.Dest.Port), ss.spec.Name)
	}
	e.script(ss.spec.QuorumDown, "quorum_down of VS "+ss.spec.Name)
}

// Close stops every checker and waits for them. With omega, a service's
// live real servers get their notify_down and the service its
// quorum_down, as keepalived does at shutdown; the table is left as it is.
func (e *Engine) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	for _, s := range e.svcs {
		if !s.spec.Omega {
			continue
		}
		for _, r := range s.reals {
			if r.alive {
				e.script(r.spec.NotifyDown, "notify_down of "+r.id+" (omega)")
			}
		}
		if s.quorumUp {
			e.script(s.spec.QuorumDown, "quorum_down of VS "+s.spec.Name+" (omega)")
		}
	}
	e.cancel()
	e.mu.Unlock()
	e.wg.Wait()
	e.scriptsWG.Wait()
}

// ScriptsDropped counts notify and quorum scripts not started because
// MaxScripts were running.
func (e *Engine) ScriptsDropped() uint64 { return e.scriptsDropped.Load() }

// CheckState is one checker's state, for metrics and status.
type CheckState struct {
	Service     string            // the virtual server's name, e.g. "TCP 198.18.0.100:80"
	ServiceKeys []ipvs.ServiceKey // its IPVS services
	Dests       []netip.AddrPort  // the real server as each of them lists it
	Real        netip.AddrPort    // as configured (port 0: the service's)
	Check       string            // e.g. "HTTP_GET", "TCP_CHECK to 198.19.0.11:8080"
	Kind        Kind
	Up          bool // this checker's verdict
	RealUp      bool // the real server's: all its checkers up
	Weight      int64
	Checks      uint64 // checks run
	Failures    uint64 // checks failed
	LastLatency time.Duration
	CheckTime   time.Duration // all checks' time together
	LastError   string        // why the last check failed ("" if it passed)
	Since       time.Time
	QuorumUp    bool
}

// ServiceState is one virtual server's quorum state.
type ServiceState struct {
	Service     string
	ServiceKeys []ipvs.ServiceKey
	QuorumUp    bool
	LiveWeight  int64
	Quorum      int64
	Hysteresis  int64
	SorryActive bool
	RealsUp     int
	Reals       int
	Since       time.Time
}

// States returns every checker's state, in configuration order.
func (e *Engine) States() []CheckState {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []CheckState
	for _, s := range e.svcs {
		keys := s.keys()
		for _, r := range s.reals {
			dests := make([]netip.AddrPort, len(s.spec.Configs))
			for i := range s.spec.Configs {
				d := DestFor(&s.spec.Configs[i], r.spec.Dest)
				dests[i] = netip.AddrPortFrom(d.Addr, d.Port)
			}
			for _, c := range r.checks {
				out = append(out, CheckState{
					Service: s.spec.Name, ServiceKeys: keys, Dests: dests, CheckTime: c.total,
					Real:  netip.AddrPortFrom(r.spec.Dest.Addr, r.spec.Dest.Port),
					Check: c.spec.Summary, Kind: c.spec.Kind, Up: c.up, RealUp: r.alive, Weight: r.weight(),
					Checks: c.checks, Failures: c.failures, LastLatency: c.latency, LastError: c.reason,
					Since: c.since, QuorumUp: s.quorumUp,
				})
			}
		}
	}
	return out
}

// Services returns every virtual server's quorum state.
func (e *Engine) Services() []ServiceState {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []ServiceState
	for _, s := range e.svcs {
		st := ServiceState{Service: s.spec.Name, ServiceKeys: s.keys(), QuorumUp: s.quorumUp, LiveWeight: s.liveWeight(),
			Quorum: s.spec.Quorum, Hysteresis: s.spec.Hysteresis, SorryActive: s.spec.Sorry != nil && !s.quorumUp,
			Reals: len(s.reals), Since: s.since}
		for _, r := range s.reals {
			if r.alive {
				st.RealsUp++
			}
		}
		out = append(out, st)
	}
	return out
}

func (s *svcState) keys() []ipvs.ServiceKey {
	k := make([]ipvs.ServiceKey, len(s.spec.Configs))
	for i := range s.spec.Configs {
		k[i] = s.spec.Configs[i].ServiceKey
	}
	return k
}
