package labcmd

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/ipvsadm"
	"github.com/golvs/golvs/lab"
)

// ecmpOpts are golvs lab ecmp's flags.
type ecmpOpts struct {
	lab.ECMPRunOptions
	conns    int
	fail     int // director to kill (0: none)
	readd    bool
	asJSON   bool
	interval time.Duration
}

func parseECMP(args []string, stderr io.Writer) (*ecmpOpts, error) {
	fs := flag.NewFlagSet("golvs lab ecmp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &ecmpOpts{}
	fs.IntVar(&o.Directors, "directors", 3, "directors behind the router (1..8), each a golvs run announcing the VIP over BGP")
	fs.IntVar(&o.RealServers, "real-servers", 3, "real servers (1..16)")
	fs.IntVar(&o.Clients, "clients", 50, "client addresses the connections come from (1..200)")
	fs.IntVar(&o.conns, "connections", 300, "long-lived connections (1..2000)")
	failName := fs.String("fail", "", "kill this director (SIGKILL, e.g. director2) while the connections and a new-connection loop run, then report what happened")
	noReadd := fs.Bool("no-readd", false, "with --fail: do not start the failed director again afterwards")
	fs.BoolVar(&o.asJSON, "json", false, "with --fail: print one JSON object instead of the report")
	fs.DurationVar(&o.HoldTime, "hold-time", 3*time.Second, "BGP hold time, bird's and the directors' (3s..90s)")
	fs.StringVar(&o.Suffix, "suffix", "", "suffix for namespace names (tests run labs side by side)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := lab.CheckECMPOptions(o.ECMPOptions); err != nil {
		return nil, err
	}
	if o.conns < 1 || o.conns > 2000 {
		return nil, fmt.Errorf("--connections %d out of range (1..2000)", o.conns)
	}
	if o.HoldTime < 3*time.Second || o.HoldTime > 90*time.Second || o.HoldTime%time.Second != 0 {
		return nil, fmt.Errorf("--hold-time %v: whole seconds, 3s..90s", o.HoldTime)
	}
	if *failName != "" {
		i, err := lab.ParseDirector(*failName, o.Directors)
		if err != nil {
			return nil, fmt.Errorf("--fail: %w", err)
		}
		if o.Directors < 2 {
			return nil, fmt.Errorf("--fail needs at least 2 directors (the others carry the flows)")
		}
		o.fail = i
	} else if o.asJSON || *noReadd {
		return nil, fmt.Errorf("--json and --no-readd go with --fail")
	}
	o.readd = !*noReadd
	o.interval = 500 * time.Millisecond
	o.ShutdownWait, o.Drain = 300*time.Millisecond, 300*time.Millisecond
	return o, nil
}

// ECMPResult is what `golvs lab ecmp --fail D --json` prints.
type ECMPResult struct {
	Directors    int          `json:"directors"`
	Established  int          `json:"established"`
	Survived     int          `json:"survived"`
	NewAttempted int          `json:"new_attempted"`
	NewFailed    int          `json:"new_failed"`
	WithdrawMS   int64        `json:"withdraw_ms"`
	Detail       *ECMPDetails `json:"detail"`
}

// ECMPDetails are the measurements behind the summary.
type ECMPDetails struct {
	Failed      string `json:"failed"`
	HoldTimeMS  int64  `json:"hold_time_ms"`
	Broken      int    `json:"broken"`              // long-lived connections lost
	RSChanged   int    `json:"real_server_changed"` // answered by another real server
	RecoveredMS int64  `json:"recovered_ms"`        // until every connection was heard from again
	// Flows (long-lived connections) by director before the failure, as
	// the router's kernel forwards them, and how many changed director.
	PerDirector   map[string]int `json:"flows_per_director"`
	FlowsOnFailed int            `json:"flows_on_failed"`
	MovedDirector int            `json:"moved_director"`
	// IdealMoved is 1/N: the share of flows an ideal (resilient) hash
	// moves when one of N next hops goes.
	IdealMoved    float64 `json:"ideal_moved_fraction"`
	MovedFraction float64 `json:"moved_fraction"`
	// MovedSeen counts the moved flows found in the connection table of
	// the director the router now sends them to (created there by
	// sloppy_tcp): the router's view checked against the directors'.
	MovedSeen int `json:"moved_seen_on_new_director"`
	// New connections that failed outside the failure window (from
	// the kill to the withdrawal, plus the attempt timeout and a second).
	NewFailedOutside int   `json:"new_failed_outside_window"`
	WindowMS         int64 `json:"window_ms"`
	// The failed director started again (unless --no-readd).
	Readd *ECMPReadd `json:"readd,omitempty"`
}

// ECMPReadd is what adding the director back did.
type ECMPReadd struct {
	RouteMS       int64   `json:"route_ms"` // from the start to the router's ECMP route over it
	Survived      int     `json:"survived"`
	Broken        int     `json:"broken"`
	RSChanged     int     `json:"real_server_changed"`
	MovedDirector int     `json:"moved_director"`
	IdealMoved    float64 `json:"ideal_moved_fraction"` // 1/(N): the returning director's share
	MovedFraction float64 `json:"moved_fraction"`
	NewFailed     int     `json:"new_failed"` // new connections begun after the restart that failed
}

// ecmpObserver lets a test look at the lab at each phase ("up", "failed",
// "readded", "end"); the command passes nil.
type ecmpObserver func(phase string, l *lab.ECMPLab) error

const newConnTimeout = 5 * time.Second

// runECMP runs the experiment and returns its result (nil without
// --fail); report lines go to out.
func runECMP(ctx context.Context, o *ecmpOpts, out io.Writer, observe ecmpObserver) (res *ECMPResult, err error) {
	say := func(format string, args ...any) {
		if !o.asJSON {
			fmt.Fprintf(out, format+"\n", args...)
		}
	}
	step := func(phase string, l *lab.ECMPLab) error {
		if observe != nil {
			return observe(phase, l)
		}
		return ctx.Err()
	}
	say("# golvs lab ecmp: %d directors (golvs run, mh with mh-port, sloppy_tcp, DR) behind a bird2 router that spreads the VIP %s:%d over them by ECMP (L4 hash), learnt over BGP (hold time %v)", o.Directors, lab.VIP, lab.ECMPPort, o.HoldTime)
	start := time.Now()
	l, err := lab.StartECMP(o.ECMPRunOptions)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	say("# up in %v; the router's route to %s:", time.Since(start).Round(time.Millisecond), lab.VIP)
	if r, err := l.Bird.Show("route", "for", lab.VIP.String()); err == nil && !o.asJSON {
		fmt.Fprint(out, indent(r))
	}
	for _, n := range l.Topo.Notes {
		say("# %s", n)
	}
	if err := step("up", l); err != nil {
		return nil, err
	}
	cctx, stopConns := context.WithCancel(ctx)
	defer stopConns()
	timeout := 20 * time.Second
	conns, err := l.OpenLong(cctx, o.conns, o.interval, timeout)
	if err != nil {
		return nil, err
	}
	before, err := l.FlowDirectors(conns)
	if err != nil {
		return nil, err
	}
	per := map[string]int{}
	perRS := map[string]int{}
	for i, d := range before {
		per[fmt.Sprintf("director%d", lab.DirectorIndex(d))]++
		perRS[conns[i].RS]++
	}
	say("# %d long-lived connections from %d client addresses, each asking its real server every %v", len(conns), o.Clients, o.interval)
	say("#   by director (the router's ECMP choice): %s", counts(per))
	if n, err := seenOn(l, conns, before, func(int) bool { return true }); err == nil {
		say("#   %d in the connection table of that director", n)
	}
	say("#   by real server (mh's choice):           %s", counts(perRS))
	if o.fail == 0 {
		return nil, step("end", l)
	}
	loop := l.StartNewConns(2, 20*time.Millisecond, newConnTimeout)
	defer loop.Stop()
	time.Sleep(time.Second)
	failed := lab.ECMPDirectorIP(o.fail)
	var rest []netip.Addr
	for i := 1; i <= o.Directors; i++ {
		if i != o.fail {
			rest = append(rest, lab.ECMPDirectorIP(i))
		}
	}
	det := &ECMPDetails{Failed: fmt.Sprintf("director%d", o.fail), HoldTimeMS: o.HoldTime.Milliseconds(), PerDirector: per,
		IdealMoved: 1 / float64(o.Directors)}
	for _, d := range before {
		if d == failed {
			det.FlowsOnFailed++
		}
	}
	say("# killing director%d (SIGKILL) with %d flows on it; a new-connection loop runs meanwhile", o.fail, det.FlowsOnFailed)
	t0 := time.Now()
	if err := l.KillDirector(o.fail); err != nil {
		return nil, err
	}
	if _, err := l.WaitNextHops(rest, o.HoldTime+10*time.Second); err != nil {
		return nil, err
	}
	t1 := time.Now()
	wd := t1.Sub(t0)
	say("# the router dropped director%d's next hop %v after the kill (hold time %v)", o.fail, wd.Round(time.Millisecond), o.HoldTime)
	if err := step("failed", l); err != nil {
		return nil, err
	}
	oc := lab.AwaitAfter(conns, t1, timeout+5*time.Second)
	det.Broken, det.RSChanged, det.RecoveredMS = oc.Broken, oc.Changed, oc.Waited.Milliseconds()
	after, err := l.FlowDirectors(conns)
	if err != nil {
		return nil, err
	}
	det.MovedDirector = lab.Moved(before, after)
	det.MovedFraction = float64(det.MovedDirector) / float64(len(conns))
	det.MovedSeen, err = seenOn(l, conns, after, func(i int) bool { return before[i] != after[i] })
	if err != nil {
		return nil, err
	}
	say("# long-lived connections: %d of %d survived (%d broken, %d answered by another real server), all heard from %v after the withdrawal", oc.Survived, len(conns), oc.Broken, oc.Changed, oc.Waited.Round(time.Millisecond))
	say("# flows that changed director: %d of %d (%.1f%%; an ideal hash moves 1/N = %.1f%%, the failed director's %d); real servers changed: %d",
		det.MovedDirector, len(conns), 100*det.MovedFraction, 100*det.IdealMoved, det.FlowsOnFailed, oc.Changed)
	say("# of the moved flows, %d are in the connection table of the director the router now uses (created there by sloppy_tcp)", det.MovedSeen)
	res = &ECMPResult{Directors: o.Directors, Established: oc.Established, Survived: oc.Survived, WithdrawMS: wd.Milliseconds(), Detail: det}
	windowEnd := t1.Add(newConnTimeout + time.Second)
	var t2 time.Time
	if o.readd {
		dirsBefore := after
		t2 = time.Now()
		if err := l.StartDirector(o.fail); err != nil {
			return nil, err
		}
		all := append(append([]netip.Addr(nil), rest...), failed)
		if _, err := l.WaitNextHops(all, o.HoldTime+60*time.Second); err != nil {
			return nil, err
		}
		t3 := time.Now()
		rd := t3.Sub(t2)
		if err := step("readded", l); err != nil {
			return nil, err
		}
		oc2 := lab.AwaitAfter(conns, t3, timeout+5*time.Second)
		back, err := l.FlowDirectors(conns)
		if err != nil {
			return nil, err
		}
		ra := &ECMPReadd{RouteMS: rd.Milliseconds(), Survived: oc2.Survived, Broken: oc2.Broken, RSChanged: oc2.Changed,
			MovedDirector: lab.Moved(dirsBefore, back), IdealMoved: 1 / float64(o.Directors)}
		ra.MovedFraction = float64(ra.MovedDirector) / float64(len(conns))
		det.Readd = ra
		say("# director%d started again: in the router's route after %v; connections alive %d of %d (%d broken), real servers changed: %d", o.fail, rd.Round(time.Millisecond), oc2.Survived, len(conns), oc2.Broken, oc2.Changed)
		say("# flows that changed director: %d (%.1f%%; ideal 1/N = %.1f%%)", ra.MovedDirector, 100*ra.MovedFraction, 100*ra.IdealMoved)
	}
	time.Sleep(time.Second)
	attempts := loop.Stop()
	res.NewAttempted = len(attempts)
	lo := t0.Add(-newConnTimeout)
	det.WindowMS = windowEnd.Sub(t0).Milliseconds()
	for _, a := range attempts {
		if a.Err == nil {
			continue
		}
		res.NewFailed++
		if a.Start.Before(lo) || a.Start.After(windowEnd) {
			det.NewFailedOutside++
		}
		if det.Readd != nil && !a.Start.Before(t2) {
			det.Readd.NewFailed++
		}
	}
	say("# new connections: %d attempted, %d failed (%d outside the failure window of %v)", res.NewAttempted, res.NewFailed, det.NewFailedOutside, time.Duration(det.WindowMS)*time.Millisecond)
	if err := step("end", l); err != nil {
		return nil, err
	}
	return res, nil
}

// directorTables reads every running director's connection table: the
// client address and port of each entry, by director address.
func directorTables(l *lab.ECMPLab) (map[netip.Addr]map[netip.AddrPort]bool, error) {
	tables := map[netip.Addr]map[netip.AddrPort]bool{}
	for i := 1; i <= l.O.Directors; i++ {
		if !l.Running(i) {
			continue
		}
		cl, err := control.Dial(l.DirectorSocket(i))
		if err != nil {
			return nil, err
		}
		m := map[netip.AddrPort]bool{}
		err = cl.Conns(func(cs []ipvsadm.Conn) error {
			for _, c := range cs {
				m[netip.AddrPortFrom(c.Client.Addr().Unmap(), c.Client.Port())] = true
			}
			return nil
		})
		cl.Close()
		if err != nil {
			return nil, err
		}
		tables[lab.ECMPDirectorIP(i)] = m
	}
	return tables, nil
}

// seenOn counts the flows (of those selected) that appear in the
// connection table of the director dirs names for them.
func seenOn(l *lab.ECMPLab, conns []*lab.LongConn, dirs []netip.Addr, sel func(i int) bool) (int, error) {
	tables, err := directorTables(l)
	if err != nil {
		return 0, err
	}
	n := 0
	for i, c := range conns {
		if sel(i) && tables[dirs[i]][c.Local] {
			n++
		}
	}
	return n, nil
}

func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// ecmpMain is `golvs lab ecmp`.
func ecmpMain(args []string, stdout, stderr io.Writer) error {
	o, err := parseECMP(args, stderr)
	if err != nil {
		return err
	}
	if err := lab.RequireRoot(); err != nil {
		return err
	}
	if o.Exe, err = os.Executable(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(StateDir), 0o700); err != nil {
		return err
	}
	if o.Dir, err = os.MkdirTemp(filepath.Dir(StateDir), "lab-ecmp"+o.Suffix+"-"); err != nil {
		return err
	}
	defer os.RemoveAll(o.Dir)
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	signal.Ignore(syscall.SIGPIPE)
	res, err := runECMP(ctx, o, stdout, nil)
	if err != nil {
		return err
	}
	if o.asJSON && res != nil {
		b, _ := json.Marshal(res)
		fmt.Fprintf(stdout, "%s\n", b)
	}
	return nil
}
