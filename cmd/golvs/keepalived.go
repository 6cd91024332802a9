package main

import (
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"syscall"

	"github.com/golvs/golvs/health"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
	"github.com/golvs/golvs/keepalived"
	"github.com/golvs/golvs/metrics"
	"github.com/golvs/golvs/vrrp"
)

// keepalivedSource is `golvs run --keepalived-conf FILE`: the file's
// services go through the health engine, which applies them (in one
// restore) and keeps them in step with their checkers; SIGHUP re-reads
// the file and applies only the difference. The ipvsadm rules (--rules,
// --rule) stay the daemon's own; a service configured both ways is
// refused.
type keepalivedSource struct {
	path   string
	rules  map[ipvs.ServiceKey]bool // services the ipvsadm rules configure
	logger *log.Logger
	eng    *health.Engine
	vrrp   *vrrp.Config // the VRRP configuration the daemon started with
}

// newKeepalivedSource reads the file once, before anything opens, so a
// bad file refuses the start.
func newKeepalivedSource(path, rulesText string, logger *log.Logger) (*keepalivedSource, *keepalived.Config, error) {
	k := &keepalivedSource{path: path, rules: map[ipvs.ServiceKey]bool{}, logger: logger}
	lines, err := ipvsadm.ParseRules(strings.NewReader(withoutMarks(rulesText)))
	if err != nil {
		return nil, nil, err
	}
	for _, l := range lines {
		if l.Cmd.Cmd == ipvsadm.CmdAdd {
			k.rules[ipvsadm.NormKey(l.Cmd.Service.ServiceKey)] = true
		}
	}
	cfg, err := k.read()
	if err != nil {
		return nil, nil, err
	}
	k.vrrp = cfg.VRRP
	return k, cfg, nil
}

func (k *keepalivedSource) read() (*keepalived.Config, error) {
	cfg, err := keepalived.Load(k.path, nil)
	if err != nil {
		return nil, err
	}
	for _, s := range cfg.Services {
		for _, c := range s.Configs {
			if k.rules[ipvsadm.NormKey(c.ServiceKey)] {
				return nil, fmt.Errorf("%s: service %s is configured both here and by the ipvsadm rules (--rules/--rule): configure it one way", s.Pos, c.ServiceKey)
			}
		}
	}
	for _, w := range cfg.Warnings {
		k.logger.Printf("keepalived.conf: warning: %s", w)
	}
	return cfg, nil
}

// start applies the first configuration and reloads on SIGHUP until
// stop is closed. Taking over (adopt non-nil), the services are already
// applied: the engine adopts them as the director holds them, and the
// old daemon's verdicts (handed, JSON; empty: none) where they parse.
func (k *keepalivedSource) start(ctl health.Control, cfg *keepalived.Config, stop <-chan struct{}, adopt []ipvs.ServiceConfig, handed json.RawMessage) error {
	k.eng = health.New(ctl, health.Options{Logf: k.logger.Printf})
	if adopt != nil {
		var h *health.Handoff
		if len(handed) > 0 {
			h = new(health.Handoff)
			if err := json.Unmarshal(handed, h); err != nil {
				k.logger.Printf("takeover: the old daemon's health verdicts do not parse, checks start afresh: %v", err)
				h = nil
			}
		}
		if err := k.eng.Adopt(adopt, h); err != nil {
			k.logger.Printf("takeover: %v; checks start afresh", err)
			if err = k.eng.Adopt(adopt, nil); err != nil {
				k.eng.Close()
				return err
			}
		}
		if h != nil {
			k.logger.Printf("takeover: health checks resume from the old daemon's verdicts (%d virtual servers)", len(h.Services))
		}
	}
	if err := k.eng.Load(cfg.Services); err != nil {
		k.eng.Close()
		return err
	}
	k.logger.Printf("keepalived.conf %s: %d virtual servers, health checks running", k.path, len(cfg.Services))
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-stop:
				return
			case <-hup:
				k.reload()
			}
		}
	}()
	return nil
}

// reload re-reads the file; a file with any error is refused whole and
// the running configuration stays.
func (k *keepalivedSource) reload() {
	cfg, err := k.read()
	if err == nil {
		err = k.eng.Load(cfg.Services)
	}
	if err != nil {
		k.logger.Printf("SIGHUP: keepalived.conf refused, the running configuration stays: %v", err)
		return
	}
	k.logger.Printf("SIGHUP: keepalived.conf %s reloaded: %d virtual servers", k.path, len(cfg.Services))
	if !reflect.DeepEqual(cfg.VRRP, k.vrrp) {
		k.logger.Printf("SIGHUP: the vrrp_instance / vrrp_sync_group blocks changed: VRRP changes take a restart; the running VRRP instances stay as they were")
	}
}

// handoff is the engine's state for a successor, as JSON.
func (k *keepalivedSource) handoff() json.RawMessage {
	b, err := json.Marshal(k.eng.Handoff())
	if err != nil {
		k.logger.Printf("takeover: health verdicts not handed over: %v", err)
		return nil
	}
	return b
}

func (k *keepalivedSource) close() {
	if k != nil && k.eng != nil {
		k.eng.Close()
	}
}

// healthMetrics shows the health engine to the metrics collector: one
// entry per checker and IPVS service, one quorum per IPVS service.
type healthMetrics struct{ eng *health.Engine }

func (h healthMetrics) RealServers() []metrics.RealServerHealth {
	var out []metrics.RealServerHealth
	for _, s := range h.eng.States() {
		for i, k := range s.ServiceKeys {
			out = append(out, metrics.RealServerHealth{
				Service: k, Dest: s.Dests[i], Checker: s.Kind.String(), Up: s.RealUp,
				Checks: s.Checks, Failures: s.Failures, CheckTime: s.CheckTime,
			})
		}
	}
	return out
}

func (h healthMetrics) Quorums() []metrics.QuorumHealth {
	var out []metrics.QuorumHealth
	for _, s := range h.eng.Services() {
		for _, k := range s.ServiceKeys {
			out = append(out, metrics.QuorumHealth{Service: k, Up: s.QuorumUp, Weight: s.LiveWeight, Quorum: s.Quorum, Sorry: s.SorryActive})
		}
	}
	return out
}
