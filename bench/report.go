package bench

import (
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"
)

// fmtNum renders a metric for the terminal: "-" when it does not apply.
func fmtNum(n Num, format string) string {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "-"
	}
	return fmt.Sprintf(format, f)
}

func fmtShares(s []Num) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = fmtNum(v, "%.3f")
	}
	return strings.Join(parts, " ")
}

// WriteSchedTable writes the report as tables, one per workload and one
// for the disruption experiment.
func WriteSchedTable(w io.Writer, r *SchedReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "golvs bench sched: seed %d, %d connections per workload, offered load %.2f of capacity, %s kernel semantics\n", r.Seed, r.Conns, r.Load, r.Semantics)
	fmt.Fprintf(w, "fairness (jain, cv, overprov) is over connections per server divided by weight; delays are queueing delays in ms\n")
	for _, wr := range r.Workloads {
		var caps, ws []string
		for _, s := range wr.Servers {
			caps = append(caps, fmt.Sprint(s.Capacity))
			ws = append(ws, fmt.Sprint(s.Weight))
		}
		fmt.Fprintf(w, "\n== %s: %s\n   servers 1..%d: capacity %s, weight %s (weight shares %s)%s; %.0f s simulated\n",
			wr.Name, wr.Description, len(wr.Servers), strings.Join(caps, " "), strings.Join(ws, " "), fmtShares(wr.WeightShares), thresholds(wr.Servers), float64(wr.Duration))
		extra := ""
		switch wr.Name {
		case "churn":
			extra = "misrouted\t"
		case "nat":
			extra = "affinity\t"
		case "locality":
			extra = "hit\t"
		}
		fmt.Fprintf(tw, "sched\tjain\tcv\toverprov\tp50\tp90\tp99\trefused\t%sshares\t\n", extra)
		for _, res := range wr.Results {
			ex := ""
			switch wr.Name {
			case "churn":
				ex = fmt.Sprintf("%d\t", res.Misrouted)
			case "nat":
				ex = fmtNum(res.Affinity, "%.3f") + "\t"
			case "locality":
				ex = fmtNum(res.HitRatio, "%.3f") + "\t"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s%s\t\n", res.Sched,
				fmtNum(res.Jain, "%.4f"), fmtNum(res.CV, "%.4f"), fmtNum(res.Overprovision, "%.3f"),
				fmtNum(res.DelayP50, "%.1f"), fmtNum(res.DelayP90, "%.1f"), fmtNum(res.DelayP99, "%.1f"),
				res.Refused, ex, fmtShares(res.Shares))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	d := r.Disruption
	fmt.Fprintf(w, "\n== disruption: %d flows replayed on an idle service; server %d (weight %d) leaves, then joins again\n   moved = fraction of flows whose server changed; min = fraction that must move\n",
		d.Keys, d.Removed+1, d.Servers[d.Removed].Weight)
	fmt.Fprintf(tw, "sched\tleave\tmin\tjoin\tmin\t\n")
	for _, m := range d.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", m.Sched, fmtNum(m.Leave, "%.4f"), fmtNum(m.LeaveMin, "%.4f"),
			fmtNum(m.Join, "%.4f"), fmtNum(m.JoinMin, "%.4f"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return writeDifferences(w, r)
}

// thresholds lists the servers' -x/-y, if any.
func thresholds(ss []Server) string {
	var parts []string
	for i, s := range ss {
		if s.UThreshold != 0 || s.LThreshold != 0 {
			parts = append(parts, fmt.Sprintf("server %d -x %d -y %d", i+1, s.UThreshold, s.LThreshold))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "; " + strings.Join(parts, ", ")
}

// writeDifferences writes the semantics comparison: for each workload and
// scheduler where the two semantics chose differently on the same trace,
// how many connections went elsewhere, from which one on, and the shares
// (or, for the disruption experiment, the moved fractions) of both.
func writeDifferences(w io.Writer, r *SchedReport) error {
	if r.Compared == nil {
		return nil
	}
	a, b := r.Semantics.String(), r.Compared.String()
	fmt.Fprintf(w, "\n== %s vs %s: the same traces replayed under both kernel semantics; where their choices differ\n", a, b)
	fmt.Fprintf(w, "   differ = connections sent to another server (or refused in one only); first = the first such connection\n")
	if len(r.Differences) == 0 {
		fmt.Fprintf(w, "   none: every scheduler made the same choices under both\n")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "workload\tsched\tdiffer\tfirst\t%s shares (refused)\t%s shares (refused)\t\n", a, b)
	same := map[string]bool{}
	for _, n := range r.Scheds {
		same[n] = true
	}
	for _, d := range r.Differences {
		same[d.Sched] = false
		if d.Workload == "disruption" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\tmoved leave %s join %s\tmoved leave %s join %s\t\n", d.Workload, d.Sched, fmtNum(d.Picks, "%.4f"), d.First,
				fmtNum(d.Moved[0], "%.4f"), fmtNum(d.Moved[1], "%.4f"), fmtNum(d.Moved[2], "%.4f"), fmtNum(d.Moved[3], "%.4f"))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s (%d)\t%s (%d)\t\n", d.Workload, d.Sched, fmtNum(d.Picks, "%.4f"), d.First,
			fmtShares(d.Shares), d.Refused, fmtShares(d.OtherShares), d.OtherRefused)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var none []string
	for _, n := range r.Scheds {
		if same[n] {
			none = append(none, n)
		}
	}
	if len(none) > 0 {
		fmt.Fprintf(w, "   the same choices everywhere: %s\n", strings.Join(none, " "))
	}
	return nil
}

// isTerminal reports whether w is a character device (a terminal), so that
// the progress bar is only drawn where a person watches.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressBar draws "[#####.....] 12/56 what" on w, rewriting its line.
type progressBar struct {
	w io.Writer
}

func (p *progressBar) update(done, total int, what string) {
	const width = 30
	if total <= 0 {
		return
	}
	n := done * width / total
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d %-28.28s", strings.Repeat("#", n), strings.Repeat(".", width-n), done, total, what)
}

func (p *progressBar) finish() {
	fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", 80))
}

// newProgress returns a progress callback that draws on stderr when it is
// a terminal, and a function to clear the bar; both are no-ops otherwise.
func newProgress(stderr io.Writer) (func(done, total int, what string), func()) {
	if !isTerminal(stderr) {
		return nil, func() {}
	}
	p := &progressBar{w: stderr}
	return p.update, p.finish
}
