package health

import (
	"errors"
	"fmt"
	"time"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
)

// A takeover (golvs run --takeover, SIGUSR2) hands the running director to
// a new process with its services already applied. The new process's
// engine must not start from nothing: it would add services that exist
// (refused: no health checks at all), and its fresh checkers would put a
// real server the old ones found down back in the pool, or, with alpha,
// take every live one out, until they had run. So the old engine hands
// over its verdicts (Handoff) and the new one adopts them and the table as
// the new director holds it (Adopt), before its first Load.

// Handoff is an engine's state for its successor.
type Handoff struct {
	// Owned are the IPVS services the engine configured.
	Owned    []ipvs.ServiceKey `json:"owned"`
	Services []HandedVS        `json:"services"`
}

// HandedVS is one virtual server's state.
type HandedVS struct {
	ID       string       `json:"id"` // its IPVS services, as svcID
	Name     string       `json:"name"`
	QuorumUp bool         `json:"quorum_up"`
	Since    time.Time    `json:"since"`
	Reals    []HandedReal `json:"reals"`
}

// HandedReal is one real server's state.
type HandedReal struct {
	ID     string        `json:"id"`  // address:port, as realID
	Dyn    int64         `json:"dyn"` // misc_dynamic weight, -1: none
	Since  time.Time     `json:"since"`
	Checks []HandedCheck `json:"checks"`
}

// HandedCheck is one checker's verdict.
type HandedCheck struct {
	ID       string    `json:"id"` // what it checks, as checkID
	Up       bool      `json:"up"`
	HasRun   bool      `json:"has_run"`
	Checks   uint64    `json:"checks"`
	Failures uint64    `json:"failures"`
	Since    time.Time `json:"since"`
}

// Handoff returns the engine's verdicts and the services it configured.
func (e *Engine) Handoff() *Handoff {
	e.mu.Lock()
	defer e.mu.Unlock()
	h := &Handoff{Owned: append([]ipvs.ServiceKey(nil), e.applied.order...)}
	for _, s := range e.svcs {
		vs := HandedVS{ID: s.id, Name: s.spec.Name, QuorumUp: s.quorumUp, Since: s.since}
		for _, r := range s.reals {
			hr := HandedReal{ID: r.id, Dyn: r.dyn, Since: r.since}
			for _, c := range r.checks {
				hr.Checks = append(hr.Checks, HandedCheck{ID: c.id, Up: c.up, HasRun: c.hasRun, Checks: c.checks, Failures: c.failures, Since: c.since})
			}
			vs.Reals = append(vs.Reals, hr)
		}
		h.Services = append(h.Services, vs)
	}
	return h
}

// Limits on a handoff (it comes from another process).
const (
	maxHandedVS     = 1 << 16
	maxHandedReals  = 1 << 16
	maxHandedChecks = 64
)

// ErrAdopt is returned by Adopt on an engine that has loaded already.
var ErrAdopt = errors.New("health: adopt: the engine has loaded a configuration already")

// Adopt takes over from a previous engine, before the first Load: current
// is the director's table now (its services with their dests), h the
// previous engine's Handoff (nil: none, verdicts start afresh). The first
// Load then treats the services current holds that the previous engine
// configured or the configuration names as already applied, changing
// only what differs, and its checkers start from the handed verdicts
// (matched by virtual server, real server and what each checks), as on a
// reload.
func (e *Engine) Adopt(current []ipvs.ServiceConfig, h *Handoff) error {
	if h != nil {
		if len(h.Services) > maxHandedVS || len(h.Owned) > maxHandedVS {
			return fmt.Errorf("health: adopt: %d virtual servers handed over, at most %d", len(h.Services), maxHandedVS)
		}
		for _, vs := range h.Services {
			if len(vs.Reals) > maxHandedReals {
				return fmt.Errorf("health: adopt: VS %s: %d real servers, at most %d", vs.Name, len(vs.Reals), maxHandedReals)
			}
			for _, r := range vs.Reals {
				if len(r.Checks) > maxHandedChecks {
					return fmt.Errorf("health: adopt: VS %s real server %s: %d checkers, at most %d", vs.Name, r.ID, len(r.Checks), maxHandedChecks)
				}
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if len(e.svcs) > 0 || len(e.applied.order) > 0 || e.adopting {
		return ErrAdopt
	}
	e.adopting = true
	e.adoptCurrent = current
	if h == nil {
		return nil
	}
	for _, k := range h.Owned {
		e.adoptOwned = append(e.adoptOwned, ipvsadm.NormKey(k))
	}
	for _, vs := range h.Services {
		ss := &svcState{spec: Service{Name: vs.Name}, id: vs.ID, quorumUp: vs.QuorumUp, since: vs.Since}
		for _, r := range vs.Reals {
			rs := &realState{id: r.ID, dyn: r.Dyn, since: r.Since}
			for _, c := range r.Checks {
				// No fingerprint: Load never takes these for running
				// checkers, only their verdicts (by id); nothing runs.
				cs := &checkState{id: c.ID, up: c.Up, hasRun: c.HasRun, checks: c.Checks, failures: c.Failures, since: c.Since,
					svc: ss, rs: rs}
				rs.checks = append(rs.checks, cs)
			}
			rs.alive = allUp(rs.checks)
			ss.reals = append(ss.reals, rs)
		}
		e.adoptSvcs = append(e.adoptSvcs, ss)
	}
	return nil
}

// adoptedTable is the applied table of an adopting engine's first Load:
// the services of current that the previous engine configured or specs
// name, as current holds them. Called with e.mu held.
func (e *Engine) adoptedTable(specs []Service) *table {
	want := map[ipvs.ServiceKey]bool{}
	for _, k := range e.adoptOwned {
		want[k] = true
	}
	for i := range specs {
		for _, c := range specs[i].Configs {
			want[ipvsadm.NormKey(c.ServiceKey)] = true
		}
	}
	t := newTable()
	for _, c := range e.adoptCurrent {
		if !want[ipvsadm.NormKey(c.ServiceKey)] {
			continue
		}
		ts := &tableSvc{cfg: c, dests: c.Dests, origin: "the adopted configuration"}
		ts.cfg.Dests = nil
		ts.dorig = make([]string, len(ts.dests))
		for i := range ts.dorig {
			ts.dorig[i] = ts.origin
		}
		t.add(ts)
	}
	return t
}
