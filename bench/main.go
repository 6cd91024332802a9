package bench

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/golvs/golvs/ipvs"
)

// Sentinel errors.
var (
	// ErrUsage is matched (errors.Is) by every command-line mistake, so
	// the caller can exit with a usage status.
	ErrUsage = errors.New("bench: usage")
	// ErrNoMemory is matched when a requested conntrack size would not
	// fit in the memory the machine has available (MemAvailable).
	ErrNoMemory = errors.New("bench: not enough memory")
)

type usageError struct{ msg string }

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == ErrUsage }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// Main is "golvs bench <sched|conntrack> [flags]": it dispatches to
// SchedMain or ConntrackMain.
func Main(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("bench: missing subcommand (want: sched, conntrack)")
	}
	switch args[0] {
	case "sched":
		return SchedMain(args[1:], stdout, stderr)
	case "conntrack":
		return ConntrackMain(args[1:], stdout, stderr)
	case "dataplane":
		return DataplaneMain(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintf(stderr, "usage: golvs bench sched [flags]      compare the schedulers in a simulation\n       golvs bench conntrack [flags]  measure the connection table\n")
		return flag.ErrHelp
	}
	return usagef("bench: unknown subcommand %q (want: sched, conntrack)", args[0])
}

// SchedMain is "golvs bench sched [flags]". It writes a table (or, with
// --json, the report as JSON) to stdout, a progress bar to stderr when
// stderr is a terminal, and plots to --out when set. For -h it prints the
// usage and returns flag.ErrHelp.
func SchedMain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("golvs bench sched", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		c      SchedConfig
		scheds string
		out    string
		asJSON bool
	)
	fs.Uint64Var(&c.Seed, "seed", 1, "seed of the workloads (same seed, same report)")
	fs.IntVar(&c.Conns, "conns", DefaultConns, fmt.Sprintf("connections per workload (%d..%d)", MinConns, MaxConns))
	fs.Float64Var(&c.Load, "load", DefaultLoad, fmt.Sprintf("offered load as a fraction of the servers' total capacity (%g..%g)", MinLoad, MaxLoad))
	fs.IntVar(&c.Keys, "keys", DefaultKeys, fmt.Sprintf("flows replayed to measure disruption (%d..%d)", MinKeys, MaxKeys))
	fs.StringVar(&scheds, "sched", "", "comma-separated schedulers to compare (default: all)")
	fs.IntVar(&c.Workers, "workers", 0, "simulations run at once (default: GOMAXPROCS; results do not depend on it)")
	fs.StringVar(&out, "out", "", "folder to write plots to (SVG and PNG), created if missing")
	fs.BoolVar(&asJSON, "json", false, "write the report as JSON instead of a table")
	sems := fs.String("semantics", "both", "kernel semantics to simulate: current, classic, or both (the tables show the first; a section shows where the second chose otherwise)")
	live := fs.Bool("live", false, "instead of the simulation: every scheduler in front of real HTTP servers of different service times in a NAT lab (needs root)")
	lc := DefaultLive
	fs.IntVar(&lc.Requests, "live-requests", DefaultLive.Requests, fmt.Sprintf("--live: requests per scheduler (1..%d)", MaxLiveRequests))
	fs.IntVar(&lc.Concurrency, "live-concurrency", DefaultLive.Concurrency, fmt.Sprintf("--live: clients at once (1..%d)", MaxLiveConcurrency))
	liveServers := fs.String("live-servers", "2ms:4,2ms:4,4ms:2,8ms:1", "--live: each real server's service time and weight, comma-separated (1..16 servers)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: golvs bench sched [flags]\n\nReplays seeded workloads into every scheduler in a discrete-event simulation\nand compares fairness, queueing delay, cache hit ratio and disruption.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("bench sched: %v", err)
	}
	if fs.NArg() > 0 {
		return usagef("bench sched: unexpected argument %q", fs.Arg(0))
	}
	if scheds != "" {
		for _, s := range strings.Split(scheds, ",") {
			if s = strings.TrimSpace(s); s != "" {
				c.Scheds = append(c.Scheds, s)
			}
		}
	}
	if c.Workers < 0 {
		return usagef("bench sched: --workers %d out of range (allowed: 0 or more)", c.Workers)
	}
	switch *sems {
	case "both":
		c.Semantics = []ipvs.Semantics{ipvs.Current, ipvs.Classic}
	default:
		sem, err := ipvs.ParseSemantics(*sems)
		if err != nil {
			return usagef("bench sched: --semantics: %v, or both", err)
		}
		c.Semantics = []ipvs.Semantics{sem}
	}
	if *live {
		// a live run has one director: the first semantics
		lc.Scheds, lc.Semantics = c.Scheds, c.Semantics[0]
		d, w, err := ParseLiveServers(*liveServers)
		if err != nil {
			return &usageError{err.Error()}
		}
		lc.Delays, lc.Weights = d, w
		if err := lc.Validate(); err != nil {
			return &usageError{err.Error()}
		}
		progress, clear := newProgress(stderr)
		rep, err := RunLive(lc, progress)
		clear()
		if err != nil {
			return err
		}
		if asJSON {
			return writeJSON(stdout, rep)
		}
		return WriteLiveTable(stdout, rep)
	}
	if err := c.Validate(); err != nil {
		return &usageError{err.Error()}
	}
	progress, clear := newProgress(stderr)
	c.Progress = progress
	rep, err := RunSched(c)
	clear()
	if err != nil {
		return err
	}
	if out != "" {
		if err := PlotSched(rep, out); err != nil {
			return err
		}
	}
	if asJSON {
		return writeJSON(stdout, rep)
	}
	return WriteSchedTable(stdout, rep)
}

func writeJSON(w io.Writer, v any) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(v)
}
