package labcmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/vrrp"
)

// haOpts are `golvs lab ha`'s flags.
type haOpts struct {
	fail         string
	conns        int
	every        time.Duration
	advert       string
	version      int
	nopreempt    bool
	preemptDelay time.Duration
	ret          bool
	hold         time.Duration
	jsonOut      bool
	suffix       string
	workers      int
	vrid         int
}

func parseHA(args []string, stderr io.Writer) (*haOpts, error) {
	fs := flag.NewFlagSet("golvs lab ha", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &haOpts{}
	fs.StringVar(&o.fail, "fail", "master", "which director to kill (SIGKILL) under load: master or backup")
	fs.IntVar(&o.conns, "conns", 500, "long-lived client connections through the VIP, each sending a request every --every (0..5000)")
	fs.DurationVar(&o.every, "every", 100*time.Millisecond, "request interval of each long-lived connection")
	fs.StringVar(&o.advert, "advert-int", "1", "VRRP advertisement interval, seconds (the backup takes over within 3 of them and a skew)")
	fs.IntVar(&o.version, "vrrp-version", 2, "VRRP version, 2 or 3")
	fs.BoolVar(&o.nopreempt, "nopreempt", false, "the killed director, back, does not take the VIPs back from a lower-priority master")
	fs.DurationVar(&o.preemptDelay, "preempt-delay", 0, "the returning director waits this long before preempting (time for connection sync to refill its table)")
	fs.BoolVar(&o.ret, "return", false, "restart the killed director afterwards and report what its return does")
	fs.DurationVar(&o.hold, "hold", 15*time.Second, "how long to watch the connections after a failure at most")
	fs.BoolVar(&o.jsonOut, "json", false, "print one JSON object with the results")
	fs.StringVar(&o.suffix, "suffix", "", "suffix for namespace names (tests run labs side by side)")
	fs.IntVar(&o.workers, "workers", 1, "workers of each director")
	fs.IntVar(&o.vrid, "vrid", 51, "VRRP virtual router id")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.fail != "master" && o.fail != "backup" {
		return nil, fmt.Errorf("--fail %q: master or backup", o.fail)
	}
	if o.conns < 0 || o.conns > lab.MaxHAConns {
		return nil, fmt.Errorf("--conns %d out of range (0..%d)", o.conns, lab.MaxHAConns)
	}
	if o.every < 10*time.Millisecond || o.every > 10*time.Second {
		return nil, fmt.Errorf("--every %v out of range (10ms..10s)", o.every)
	}
	if o.hold < time.Second || o.hold > 5*time.Minute {
		return nil, fmt.Errorf("--hold %v out of range (1s..5m)", o.hold)
	}
	if o.workers < 1 || o.workers > 64 {
		return nil, fmt.Errorf("--workers %d out of range (1..64)", o.workers)
	}
	if o.nopreempt && o.preemptDelay > 0 {
		return nil, errors.New("--nopreempt and --preempt-delay do not go together")
	}
	// The same checks the directors will make, before anything is built.
	iv, err := vrrp.ParseInterval(o.advert)
	if err != nil {
		return nil, err
	}
	c := vrrp.Config{Instances: []vrrp.Instance{{Name: "VI_1", Interface: lab.DirExt, VRID: o.vrid, Interval: iv, Version: o.version, PreemptDelay: o.preemptDelay, Addrs: []vrrp.VAddr{{Addr: lab.VIP}}}}}
	if _, err := c.Check(); err != nil {
		return nil, err
	}
	return o, nil
}

// haResult is `golvs lab ha --json`'s object.
type haResult struct {
	TakeoverMs     int64       `json:"takeover_ms"`
	Established    int         `json:"established"`
	Survived       int         `json:"survived"`
	NewAttempted   int         `json:"new_attempted"`
	NewFailed      int         `json:"new_failed"`
	Failed         string      `json:"failed"` // master or backup
	AdvertIntMs    int64       `json:"advert_int_ms"`
	NewRecoveredMs int64       `json:"new_recovered_ms"` // -1: none succeeded
	NewFailedAfter int         `json:"new_failed_after_recovery"`
	LastNewFailMs  int64       `json:"last_new_failure_ms,omitempty"` // start of the last of those, after the kill
	NewFailNote    string      `json:"new_failure,omitempty"`         // the first of those's error
	Reset          int         `json:"reset"`
	Broken         int         `json:"broken"`
	Stalled        int         `json:"stalled"`
	Moved          int         `json:"moved"`
	LastResumeMs   int64       `json:"last_resume_ms"`
	Sync           bool        `json:"sync"` // connection sync ran between the directors
	SyncNote       string      `json:"sync_note,omitempty"`
	NewMaster      string      `json:"new_master,omitempty"`
	Return         *haReturned `json:"return,omitempty"`
	SurvivorState  string      `json:"survivor_state,omitempty"` // --fail backup: the master's state after
}

// haReturned is what the killed director's return did.
type haReturned struct {
	State          string `json:"state"`    // the returned director's VRRP state at the end
	TookOverMs     int64  `json:"after_ms"` // from its start to its MASTER state (-1: never)
	Established    int    `json:"established"`
	Survived       int    `json:"survived"`
	Reset          int    `json:"reset"`
	Broken         int    `json:"broken"`
	Stalled        int    `json:"stalled"`
	NewAttempted   int    `json:"new_attempted"`
	NewFailed      int    `json:"new_failed"`
	NewRecoveredMs int64  `json:"new_recovered_ms"`
}

// haSession is one HA lab's processes and state.
type haSession struct {
	o     *haOpts
	dir   string
	exe   string
	topo  *lab.HATopology
	st    *State
	procs []*exec.Cmd
	dirs  [2]*exec.Cmd // the directors' current processes
	socks [2]string
	rules string
	iv    time.Duration
}

const haVRRPPass = "golvslab"

func (s *haSession) start(ns *lab.NS, logName string, args ...string) (*exec.Cmd, error) {
	logf, err := os.OpenFile(filepath.Join(s.dir, logName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	c := exec.Command(s.exe, args...)
	c.Stdout, c.Stderr = logf, logf
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := ns.Do(c.Start); err != nil {
		return nil, fmt.Errorf("starting %s in %s: %w", strings.Join(args, " "), ns.Name, err)
	}
	s.procs = append(s.procs, c)
	s.st.Pids = append(s.st.Pids, c.Process.Pid)
	_ = writeState(s.dir, s.st)
	return c, nil
}

func (s *haSession) close() {
	for _, p := range s.procs {
		if p.ProcessState == nil {
			stop(p)
		}
	}
	if s.topo != nil {
		s.topo.Close()
	}
	os.RemoveAll(s.dir)
}

// directorArgs is director n's (0 or 1) `golvs run` command line.
func (s *haSession) directorArgs(n int, startMaster, returning bool) []string {
	o := s.o
	prio := 150
	if n == 1 {
		prio = 100
	}
	a := []string{"run", "-i", lab.DirExt + ":arp", "-i", lab.DirInt, "--fix-host",
		"--rules", filepath.Join(s.dir, "rules"), "--control", s.socks[n], "--workers", strconv.Itoa(o.workers),
		"--vrrp-interface", lab.DirExt, "--vrrp-vrid", strconv.Itoa(o.vrid), "--vrrp-priority", strconv.Itoa(prio),
		"--vrrp-advert-int", o.advert, "--vrrp-version", strconv.Itoa(o.version),
		"--vrrp-vip", lab.VIP.String(), "--vrrp-vip", lab.HAGatewayIP.String() + ":" + lab.DirInt}
	if o.version == 2 {
		a = append(a, "--vrrp-auth-pass", haVRRPPass)
	}
	// Connection sync on the servers' side, its role following VRRP's.
	a = append(a, "--start-daemon", "backup", "--mcast-interface", lab.DirInt, "--syncid", strconv.Itoa(o.vrid))
	if startMaster {
		a = append(a, "--vrrp-state", "master")
	}
	if o.nopreempt {
		a = append(a, "--vrrp-nopreempt")
	}
	if returning && o.preemptDelay > 0 {
		a = append(a, "--vrrp-preempt-delay", o.preemptDelay.String())
	}
	return a
}

// vrrpState asks director n for its VRRP state.
func vrrpState(sock string) (*vrrp.Status, error) {
	cl, err := control.Dial(sock)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	rep, err := cl.Do(&control.Request{Op: "vrrp"})
	if err != nil {
		return nil, err
	}
	if !rep.OK || rep.VRRP == nil || len(rep.VRRP.Instances) == 0 {
		return nil, fmt.Errorf("vrrp: %s", rep.Error)
	}
	return rep.VRRP, nil
}

// waitState waits until director n is in state (bounded).
func (s *haSession) waitState(ctx context.Context, n int, state string, timeout time.Duration) (*vrrp.InstanceStatus, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		st, err := vrrpState(s.socks[n])
		if err == nil {
			in := st.Instances[0]
			if in.State == state {
				return &in, nil
			}
			last = in.State
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, fmt.Sprintf("director%d.log", n+1)))
			return nil, fmt.Errorf("director%d did not reach %s in %v (last: %s); its log:\n%s", n+1, state, timeout, last, log)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startDirector starts director n and waits until its control socket
// answers with every real server resolved.
func (s *haSession) startDirector(ctx context.Context, n int, startMaster, returning bool) error {
	c, err := s.start(s.topo.Directors[n], fmt.Sprintf("director%d.log", n+1), s.directorArgs(n, startMaster, returning)...)
	if err != nil {
		return err
	}
	s.dirs[n] = c
	deadline := time.Now().Add(20 * time.Second)
	for {
		if cl, err := control.Dial(s.socks[n]); err == nil {
			rep, err := cl.Do(&control.Request{Op: "status"})
			cl.Close()
			if err == nil && rep.OK && rep.Resolved {
				return nil
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, fmt.Sprintf("director%d.log", n+1)))
			return fmt.Errorf("director%d did not become ready in 20s; its log:\n%s", n+1, log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// haLab is `golvs lab ha`.
func haLab(args []string, stdout, stderr io.Writer) error {
	o, err := parseHA(args, stderr)
	if err != nil {
		return err
	}
	if err := lab.RequireRoot(); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	signal.Ignore(syscall.SIGPIPE)
	s := &haSession{o: o, dir: StateDir + "-ha" + o.suffix}
	s.iv, _ = vrrp.ParseInterval(o.advert)
	if _, err := os.Stat(filepath.Join(s.dir, "state.json")); err == nil {
		return fmt.Errorf("an HA lab is already running (%s); `golvs lab down` removes it", s.dir)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	if s.exe, err = os.Executable(); err != nil {
		return err
	}
	s.socks = [2]string{filepath.Join(s.dir, "director1.sock"), filepath.Join(s.dir, "director2.sock")}
	s.st = &State{Mode: "ha", Suffix: o.suffix, Socket: s.socks[0], VIP: lab.VIP.String()}
	defer s.close()
	if s.topo, err = lab.BuildHA(lab.Options{Suffix: o.suffix, RealServers: 2}); err != nil {
		return err
	}
	for _, ns := range s.topo.Namespaces() {
		s.st.Namespaces = append(s.st.Namespaces, ns.Name)
	}
	if err := writeState(s.dir, s.st); err != nil {
		return err
	}
	for i, rs := range s.topo.RS {
		if _, err := s.start(rs, fmt.Sprintf("rs%d.log", i+1), "lab", "serve", "--name", fmt.Sprintf("rs%d", i+1), "--tcp", "80", "--udp", "", "--echo", "7"); err != nil {
			return err
		}
	}
	for _, port := range []int{7, 80} {
		s.rules += fmt.Sprintf("-A -t %s:%d -s rr\n", lab.VIP, port)
		for i := range s.topo.RS {
			s.rules += fmt.Sprintf("-a -t %s:%d -r %s:%d -m -w 1\n", lab.VIP, port, lab.RIP(i+1), port)
		}
	}
	if err := os.WriteFile(filepath.Join(s.dir, "rules"), []byte(s.rules), 0o600); err != nil {
		return err
	}
	say := func(format string, a ...any) {
		if !o.jsonOut {
			fmt.Fprintf(stdout, format+"\n", a...)
		}
	}
	say("# HA lab: client %s -> VIP %s -> director1 (%s | %s, priority 150) or director2 (%s | %s, priority 100) -> real servers %s, %s",
		lab.CIP, lab.VIP, lab.HADirExtIP(1), lab.HADirIntIP(1), lab.HADirExtIP(2), lab.HADirIntIP(2), lab.RIP(1), lab.RIP(2))
	say("# VRRP version %d, vrid %d, advert_int %v; floating addresses: %s on ext0, the real servers' gateway %s on int0", o.version, o.vrid, s.iv, lab.VIP, lab.HAGatewayIP)
	// director1 first, so that it is master whatever the preemption mode.
	if err := s.startDirector(ctx, 0, !o.nopreempt, false); err != nil {
		return err
	}
	if _, err := s.waitState(ctx, 0, "MASTER", 10*s.iv+10*time.Second); err != nil {
		return err
	}
	if err := s.startDirector(ctx, 1, false, false); err != nil {
		return err
	}
	if _, err := s.waitState(ctx, 1, "BACKUP", 10*time.Second); err != nil {
		return err
	}
	res := haResult{Failed: o.fail, AdvertIntMs: s.iv.Milliseconds()}
	res.Sync, res.SyncNote = s.startSync()
	say("# director1 MASTER, director2 BACKUP; connection sync: %s", syncWords(res.Sync, res.SyncNote))
	vipEcho := netip.AddrPortFrom(lab.VIP, 7)
	cl, err := lab.StartHAClient(s.topo.Client, vipEcho, o.conns, o.every)
	if err != nil {
		return err
	}
	defer cl.Stop()
	if err := cl.Ready(5, 30*time.Second); err != nil {
		return err
	}
	// 8 dialers whose attempts may take 3 s (the kernel retransmits a
	// lost SYN after 1 s): slow enough for a loaded host; and probes that
	// find the first moment new connections work again.
	cl.StartNew(s.topo.Client, vipEcho, 8, 3*time.Second, 50*time.Millisecond)
	if res.Sync {
		time.Sleep(2 * time.Second) // the sync daemon's messages reach the backup
	}
	say("# %d connections each sending a request every %v, and a new-connection loop; now SIGKILL %s", o.conns, o.every, o.fail)
	victim, other := 0, 1
	if o.fail == "backup" {
		victim, other = 1, 0
	}
	mark := cl.Mark()
	if err := s.dirs[victim].Process.Kill(); err != nil {
		return err
	}
	_, _ = s.dirs[victim].Process.Wait()
	if o.fail == "master" {
		in, err := s.waitState(ctx, other, "MASTER", 3*s.iv+10*time.Second)
		if err != nil {
			return err
		}
		res.TakeoverMs = in.Since.Sub(mark).Milliseconds()
		res.NewMaster = fmt.Sprintf("director%d", other+1)
	} else {
		st, err := vrrpState(s.socks[other])
		if err != nil {
			return err
		}
		res.SurvivorState = st.Instances[0].State
	}
	r := s.watch(ctx, cl, mark)
	res.Established, res.Survived, res.Reset, res.Broken, res.Stalled, res.Moved = r.Established, r.Survived, r.Reset, r.Broken, r.Stalled, r.Moved
	res.NewAttempted, res.NewFailed, res.NewFailedAfter = r.NewAttempted, r.NewFailed, r.NewFailedAfter
	res.NewRecoveredMs = ms(r.NewRecovered)
	res.LastNewFailMs, res.NewFailNote = r.LastNewFailure.Milliseconds(), r.NewFailureNote
	res.LastResumeMs = r.LastResume.Milliseconds()
	if o.fail == "master" {
		skew := 156 * time.Second / 256 // (256 - priority 100) / 256 s
		if o.version == 3 {
			skew = 156 * s.iv / 256
		}
		say("takeover: director2 MASTER %d ms after the kill (its Master_Down_Interval, 3 x advert_int + skew: %v)", res.TakeoverMs, 3*s.iv+skew)
	} else {
		say("director1 stays %s", res.SurvivorState)
	}
	say("established connections: %d, survived %d (reset %d, broken %d, stalled %d, moved %d); the last resumed %d ms after the kill", res.Established, res.Survived, res.Reset, res.Broken, res.Stalled, res.Moved, res.LastResumeMs)
	say("new connections after the kill: %d attempted, %d failed; the first succeeded %d ms after the kill, %d failed after that", res.NewAttempted, res.NewFailed, res.NewRecoveredMs, res.NewFailedAfter)
	if o.ret {
		rr, err := s.returnVictim(ctx, cl, victim, other, res.Sync)
		if err != nil {
			return err
		}
		res.Return = rr
		say("return: director%d back, %s (master after %d ms; -1: not master); established %d, survived %d (reset %d, broken %d, stalled %d); new connections %d attempted, %d failed",
			victim+1, rr.State, rr.TookOverMs, rr.Established, rr.Survived, rr.Reset, rr.Broken, rr.Stalled, rr.NewAttempted, rr.NewFailed)
	}
	if o.jsonOut {
		b, _ := json.Marshal(res)
		fmt.Fprintln(stdout, string(b))
	}
	return nil
}

func ms(d time.Duration) int64 {
	if d < 0 {
		return -1
	}
	return d.Milliseconds()
}

func syncWords(on bool, note string) string {
	if on {
		return "on"
	}
	return "off (" + note + ")"
}

// watch waits until every connection answered again or failed and a new
// connection succeeded, or the hold time passed, and returns the result.
func (s *haSession) watch(ctx context.Context, cl *lab.HAClient, mark time.Time) lab.HAResult {
	for time.Since(mark) < s.o.hold && ctx.Err() == nil {
		time.Sleep(200 * time.Millisecond)
		r := cl.Result()
		if r.Stalled == 0 && r.NewRecovered >= 0 && time.Since(mark) > 3*s.iv {
			break
		}
	}
	return cl.Result()
}

// returnVictim restarts the killed director and reports what its return
// did: with preemption it takes the VIPs back (after --preempt-delay),
// with nopreempt it stays backup.
func (s *haSession) returnVictim(ctx context.Context, cl *lab.HAClient, victim, other int, withSync bool) (*haReturned, error) {
	rr := &haReturned{TookOverMs: -1}
	started := time.Now()
	mark := cl.Mark()
	if err := s.startDirector(ctx, victim, false, true); err != nil {
		return nil, err
	}
	if withSync {
		if note := s.sync(victim); note != "" {
			return nil, fmt.Errorf("connection sync on the returning director: %s", note)
		}
	}
	if s.o.fail == "master" && !s.o.nopreempt {
		in, err := s.waitState(ctx, victim, "MASTER", s.o.preemptDelay+3*s.iv+15*time.Second)
		if err != nil {
			return nil, err
		}
		rr.TookOverMs = in.Since.Sub(started).Milliseconds()
		if _, err := s.waitState(ctx, other, "BACKUP", 3*s.iv+5*time.Second); err != nil {
			return nil, err
		}
	} else {
		// It must not take over: watch for two down intervals.
		deadline := time.Now().Add(2*(3*s.iv+s.iv) + time.Second)
		for time.Now().Before(deadline) {
			st, err := vrrpState(s.socks[victim])
			if err == nil && st.Instances[0].State == "MASTER" && s.o.fail == "master" {
				rr.TookOverMs = st.Instances[0].Since.Sub(started).Milliseconds()
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if st, err := vrrpState(s.socks[victim]); err == nil {
		rr.State = st.Instances[0].State
	}
	r := s.watch(ctx, cl, mark)
	rr.Established, rr.Survived, rr.Reset, rr.Broken, rr.Stalled = r.Established, r.Survived, r.Reset, r.Broken, r.Stalled
	rr.NewAttempted, rr.NewFailed, rr.NewRecoveredMs = r.NewAttempted, r.NewFailed, ms(r.NewRecovered)
	return rr, nil
}

// startSync reports whether both directors run their sync daemon (started
// by --start-daemon, its role following VRRP), and why not.
func (s *haSession) startSync() (bool, string) {
	for n := range s.socks {
		if note := s.sync(n); note != "" {
			return false, note
		}
	}
	return true, ""
}

// sync checks that director n runs a sync daemon ("" when it does).
func (s *haSession) sync(n int) string {
	cl, err := control.Dial(s.socks[n])
	if err != nil {
		return err.Error()
	}
	defer cl.Close()
	rep, err := cl.Do(&control.Request{Op: "list"})
	if err != nil {
		return err.Error()
	}
	if !rep.OK || len(rep.Daemons) == 0 {
		return fmt.Sprintf("director%d runs no connection sync daemon; established connections cannot survive a failover without it", n+1)
	}
	return ""
}
