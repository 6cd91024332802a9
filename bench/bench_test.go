package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/sched"
)

// tinySched is a sched bench small enough for every test run.
var tinySched = []string{"--conns", "5000", "--keys", "500"}

func runSchedJSON(t *testing.T, args ...string) (*SchedReport, []byte) {
	t.Helper()
	var out, errb bytes.Buffer
	if err := SchedMain(append(append([]string{"--json"}, tinySched...), args...), &out, &errb); err != nil {
		t.Fatalf("SchedMain: %v (stderr %q)", err, errb.String())
	}
	if errb.Len() != 0 {
		t.Errorf("stderr is not a terminal, want no progress bar: got %q", errb.String())
	}
	var r SchedReport
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("decoding the JSON report: %v", err)
	}
	return &r, out.Bytes()
}

func TestSchedDeterministic(t *testing.T) {
	_, a := runSchedJSON(t, "--seed", "7", "--workers", "1")
	_, b := runSchedJSON(t, "--seed", "7", "--workers", "4")
	if !bytes.Equal(a, b) {
		t.Errorf("same seed, different JSON:\n%s", cmp.Diff(string(a), string(b)))
	}
	_, c := runSchedJSON(t, "--seed", "8")
	if bytes.Equal(a, c) {
		t.Errorf("seeds 7 and 8 gave the same report")
	}
}

func findWorkload(t *testing.T, r *SchedReport, name string) *WorkloadReport {
	t.Helper()
	for i := range r.Workloads {
		if r.Workloads[i].Name == name {
			return &r.Workloads[i]
		}
	}
	t.Fatalf("no workload %q in the report", name)
	return nil
}

func result(t *testing.T, w *WorkloadReport, s string) *SchedResult {
	t.Helper()
	for i := range w.Results {
		if w.Results[i].Sched == s {
			return &w.Results[i]
		}
	}
	t.Fatalf("workload %s: no result for %q", w.Name, s)
	return nil
}

func TestSchedSmoke(t *testing.T) {
	dir := t.TempDir()
	r, _ := runSchedJSON(t, "--out", dir)
	names := sched.Names()
	if diff := cmp.Diff(names, r.Scheds); diff != "" {
		t.Errorf("schedulers (-want +got):\n%s", diff)
	}
	for _, w := range r.Workloads {
		for _, n := range names {
			res := result(t, &w, n)
			if n == "none" {
				if res.Refused != int64(r.Conns) {
					t.Errorf("%s/none: refused %d, want %d", w.Name, res.Refused, r.Conns)
				}
				continue
			}
			var sum int64
			for _, c := range res.Conns {
				sum += c
			}
			if sum+res.Refused != int64(r.Conns) {
				t.Errorf("%s/%s: %d scheduled + %d refused, want %d", w.Name, n, sum, res.Refused, r.Conns)
			}
			if j := float64(res.Jain); !(j >= 0.2-1e-9 && j <= 1+1e-9) {
				t.Errorf("%s/%s: Jain %v, want within [1/n, 1]", w.Name, n, j)
			}
			if o := float64(res.Overprovision); !(o >= 1-1e-9 && o <= 5+1e-9) {
				t.Errorf("%s/%s: overprovision %v, want within [1, n]", w.Name, n, o)
			}
			if p50, p99 := float64(res.DelayP50), float64(res.DelayP99); !(p50 >= 0 && p99 >= p50) {
				t.Errorf("%s/%s: delay p50 %v p99 %v, want 0 <= p50 <= p99", w.Name, n, p50, p99)
			}
		}
	}
	steady := findWorkload(t, r, "steady")
	for i, s := range result(t, steady, "rr").Shares {
		if math.Abs(float64(s)-0.2) > 1e-9 {
			t.Errorf("rr share of server %d: got %v, want 0.2 (rr ignores weights)", i+1, s)
		}
	}
	for i, s := range result(t, steady, "wrr").Shares {
		if want := float64(steady.WeightShares[i]); math.Abs(float64(s)-want) > 0.01 {
			t.Errorf("wrr share of server %d: got %v, want %v ± 0.01", i+1, s, want)
		}
	}
	nat := findWorkload(t, r, "nat")
	for _, n := range []string{"sh", "mh"} {
		if a := result(t, nat, n).Affinity; a != 1 {
			t.Errorf("nat/%s affinity: got %v, want 1 (a client address stays on one server)", n, a)
		}
	}
	loc := findWorkload(t, r, "locality")
	if dh, rr := result(t, loc, "dh").HitRatio, result(t, loc, "rr").HitRatio; !(dh > rr) {
		t.Errorf("locality: dh hit ratio %v, want above rr's %v", dh, rr)
	}
	churn := findWorkload(t, r, "churn")
	for _, res := range churn.Results {
		if res.Misrouted != 0 {
			t.Errorf("churn/%s: %d connections sent to a server with weight 0 or removed", res.Sched, res.Misrouted)
		}
	}
	for _, m := range r.Disruption.Results {
		if m.Sched == "mh" && !(float64(m.Leave) < float64(m.LeaveMin)+0.05) {
			t.Errorf("mh moved %v of flows when a server left, want near the minimum %v", m.Leave, m.LeaveMin)
		}
		if m.Sched != "none" && !(float64(m.Leave) >= float64(m.LeaveMin)-1e-9) {
			t.Errorf("%s moved %v, less than the %v that were on the leaving server", m.Sched, m.Leave, m.LeaveMin)
		}
	}
	for _, f := range []string{"sched_jain", "sched_cv", "sched_overprovision", "sched_delay", "sched_moved", "sched_hit_ratio", "sched_jain_workloads"} {
		for _, ext := range []string{".svg", ".png"} {
			if st, err := os.Stat(filepath.Join(dir, f+ext)); err != nil || st.Size() == 0 {
				t.Errorf("plot %s%s: %v", f, ext, err)
			}
		}
	}
}

func TestSchedTable(t *testing.T) {
	var out bytes.Buffer
	if err := SchedMain(append([]string{"--sched", "rr,wrr,sh"}, tinySched...), &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"== steady", "== churn", "== nat", "== locality", "== thresholds", "== disruption", "jain", "p99", "affinity", "hit", "misrouted", "== current vs classic"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
	// Each scheduler has a row in each of the six tables.
	for _, n := range []string{"rr", "wrr", "sh"} {
		rows := 0
		for _, line := range strings.Split(s, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == n {
				rows++
			}
		}
		if rows != 6 {
			t.Errorf("scheduler %s: got %d rows, want 6:\n%s", n, rows, s)
		}
	}
}

func TestSchedFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"too few conns", []string{"--conns", "10"}, "1000..5000000"},
		{"too many conns", []string{"--conns", "6000000"}, "1000..5000000"},
		{"load", []string{"--load", "2"}, "0.05..1.5"},
		{"keys", []string{"--keys", "1"}, "100..1000000"},
		{"unknown sched", []string{"--sched", "rr,nope"}, "nope"},
		{"workers", []string{"--workers", "-1"}, "0 or more"},
		{"argument", []string{"extra"}, "unexpected argument"},
		{"bad flag", []string{"--nope"}, "nope"},
		{"semantics", []string{"--semantics", "modern"}, `unknown semantics "modern" (allowed: current, classic), or both`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var errb bytes.Buffer
			err := SchedMain(tc.args, &bytes.Buffer{}, &errb)
			if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want a usage error naming %q", err, tc.want)
			}
		})
	}
	if err := SchedMain([]string{"-h"}, &bytes.Buffer{}, &bytes.Buffer{}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: got %v, want flag.ErrHelp", err)
	}
}

func TestConntrackSmoke(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if err := ConntrackMain([]string{"--sizes", "10k", "--lookups", "20000", "--json", "--out", dir}, &out, &errb); err != nil {
		t.Fatalf("ConntrackMain: %v (stderr %q)", err, errb.String())
	}
	var r ConntrackReport
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Sizes) != 1 || r.Sizes[0].Entries != 10_000 {
		t.Fatalf("sizes: got %+v, want one of 10000 entries", r.Sizes)
	}
	s := r.Sizes[0]
	// An entry with its two index slots is well over 100 bytes; at 10k
	// entries the empty table's wheels add some 800 bytes each.
	if b := float64(s.MarginalBytes); !(b > 100 && b < 2000) {
		t.Errorf("marginal bytes/entry: got %v, want 100..2000", b)
	}
	if b := float64(s.BytesPerEntry); !(b >= float64(s.MarginalBytes)) {
		t.Errorf("bytes/entry %v below marginal %v", b, s.MarginalBytes)
	}
	for name, v := range map[string]Num{"insert": s.InsertNs, "lookup": s.LookupNs, "expiry": s.ExpireNs} {
		if !(v > 0 && v < 1e6) {
			t.Errorf("%s: got %v ns/op, want 0..1ms", name, v)
		}
	}
	for _, f := range []string{"conntrack_cost", "conntrack_memory"} {
		for _, ext := range []string{".svg", ".png"} {
			if _, err := os.Stat(filepath.Join(dir, f+ext)); err != nil {
				t.Errorf("plot: %v", err)
			}
		}
	}
	var tab bytes.Buffer
	if err := WriteConntrackTable(&tab, &r); err != nil || !strings.Contains(tab.String(), "10000") || !strings.Contains(tab.String(), "lookup ns/op") {
		t.Errorf("table: %v\n%s", err, tab.String())
	}
}

func TestConntrackRefusesMemory(t *testing.T) {
	c := ConntrackConfig{Sizes: []int{10_000, 10_000_000}, MemAvailable: 1 << 30}
	err := c.Validate()
	if !errors.Is(err, ErrNoMemory) || !strings.Contains(err.Error(), "MemAvailable is 1.0 GiB") || !strings.Contains(err.Error(), "10000000 entries") {
		t.Errorf("got %v, want ErrNoMemory naming the size and MemAvailable", err)
	}
	c.MemAvailable = 64 << 30
	if err := c.Validate(); err != nil {
		t.Errorf("64 GiB available: got %v, want nil", err)
	}
}

func TestConntrackFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"too small", []string{"--sizes", "10"}, "1000..200000000"},
		{"too large", []string{"--sizes", "1000m"}, "1000..200000000"},
		{"not a number", []string{"--sizes", "10x"}, "not a positive count"},
		{"lookups", []string{"--lookups", "0"}, "1..100000000"},
		{"argument", []string{"extra"}, "unexpected argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ConntrackMain(tc.args, &bytes.Buffer{}, &bytes.Buffer{})
			if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want a usage error naming %q", err, tc.want)
			}
		})
	}
	got, err := parseSizes("10k, 1m,2500")
	if err != nil || !cmp.Equal(got, []int{10_000, 1_000_000, 2500}) {
		t.Errorf("parseSizes: got %v, %v; want [10000 1000000 2500]", got, err)
	}
}

func TestProgressBar(t *testing.T) {
	var b bytes.Buffer
	p := &progressBar{w: &b}
	p.update(15, 30, "wlc/steady")
	if got, want := b.String(), "\r[###############...............] 15/30 wlc/steady"; !strings.HasPrefix(got, want) {
		t.Errorf("got %q, want prefix %q", got, want)
	}
	if update, _ := newProgress(&b); update != nil {
		t.Errorf("a buffer is not a terminal: got a progress bar")
	}
}

func TestMainDispatch(t *testing.T) {
	tests := []struct {
		args []string
		want error
	}{
		{nil, ErrUsage},
		{[]string{"nope"}, ErrUsage},
		{[]string{"help"}, flag.ErrHelp},
		{[]string{"sched", "-h"}, flag.ErrHelp},
		{[]string{"conntrack", "--sizes", "1"}, ErrUsage},
	}
	for _, tc := range tests {
		if err := Main(tc.args, &bytes.Buffer{}, &bytes.Buffer{}); !errors.Is(err, tc.want) {
			t.Errorf("Main(%q): got %v, want %v", tc.args, err, tc.want)
		}
	}
}

// TestSchedSemantics: the bench runs every simulation under both
// semantics and reports where they chose differently. Each semantics run
// alone gives the tables the comparison quotes (the comparison is not a
// third computation), and the thresholds workload, whose servers hold
// many inactive connections and whose -x/-y are edited, separates lc and
// wlc (overhead 257 vs 256 per active conn, spec §1.3) as it must.
func TestSchedSemantics(t *testing.T) {
	const big = "20000" // lc's picks differ only when inactive counts differ by exactly 257·Δactive
	both, _ := runSchedJSON(t, "--sched", "lc,wlc,rr", "--conns", big)
	if both.Semantics != ipvs.Current || both.Compared == nil || *both.Compared != ipvs.Classic {
		t.Fatalf("default: semantics %v compared %v, want current then classic", both.Semantics, both.Compared)
	}
	cur, _ := runSchedJSON(t, "--sched", "lc,wlc,rr", "--conns", big, "--semantics", "current")
	cla, _ := runSchedJSON(t, "--sched", "lc,wlc,rr", "--conns", big, "--semantics", "classic")
	if cur.Compared != nil || len(cur.Differences) != 0 || cla.Semantics != ipvs.Classic {
		t.Fatalf("one semantics: compared %v, %d differences, classic run's semantics %v", cur.Compared, len(cur.Differences), cla.Semantics)
	}
	numEq := cmp.Comparer(func(a, b Num) bool { return a == b || a != a && b != b })
	if d := cmp.Diff(cur.Workloads, both.Workloads, numEq); d != "" {
		t.Errorf("the tables of --semantics both are not those of current alone:\n%s", d)
	}
	found := map[string]bool{}
	for _, d := range both.Differences {
		found[d.Workload+"/"+d.Sched] = true
		if d.Workload == "disruption" {
			continue
		}
		w := findWorkload(t, cla, d.Workload)
		other := result(t, w, d.Sched)
		if !cmp.Equal(d.OtherShares, other.Shares, numEq) || d.OtherRefused != other.Refused {
			t.Errorf("%s/%s: compared shares %v (refused %d), classic alone %v (%d)", d.Workload, d.Sched, d.OtherShares, d.OtherRefused, other.Shares, other.Refused)
		}
		if !(d.Picks > 0 && d.First >= 0) {
			t.Errorf("%s/%s: a difference with differ %v first %d", d.Workload, d.Sched, d.Picks, d.First)
		}
	}
	for _, want := range []string{"thresholds/lc", "thresholds/wlc"} {
		if !found[want] {
			t.Errorf("no difference reported for %s: %+v", want, both.Differences)
		}
	}
}
