package bench

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// series is one set of bars (or one line) of a chart.
type series struct {
	label  string
	values []float64
}

// finite maps NaN and ±Inf to 0 (a bar that does not apply is not drawn).
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// save writes p as name.svg and name.png in dir.
func save(p *plot.Plot, dir, name string, w, h vg.Length) error {
	for _, ext := range []string{".svg", ".png"} {
		if err := p.Save(w, h, filepath.Join(dir, name+ext)); err != nil {
			return fmt.Errorf("bench: plot %s: %w", name+ext, err)
		}
	}
	return nil
}

// barChart draws grouped bars, one group per category. With logY the
// Y axis is logarithmic, values are clamped to floor and drawn as markers.
func barChart(dir, name, title, ylabel string, cats []string, ss []series, logY bool, floor float64) error {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	width := vg.Points(float64(60) / float64(len(ss)+1))
	if width > vg.Points(14) {
		width = vg.Points(14)
	}
	for i, s := range ss {
		if logY {
			// Bars grow from 0, which a log axis cannot place: draw
			// points instead, one column of markers per category.
			pts := make(plotter.XYs, len(s.values))
			for j, v := range s.values {
				pts[j].X = float64(j) + (float64(i)-float64(len(ss)-1)/2)*0.2
				pts[j].Y = max(finite(v), floor)
			}
			sc, err := plotter.NewScatter(pts)
			if err != nil {
				return fmt.Errorf("bench: plot %s: %w", name, err)
			}
			sc.Color = plotutil.Color(i)
			sc.Shape = plotutil.Shape(i)
			sc.Radius = vg.Points(3)
			p.Add(sc)
			p.Legend.Add(s.label, sc)
			continue
		}
		vals := make(plotter.Values, len(s.values))
		for j, v := range s.values {
			vals[j] = finite(v)
		}
		b, err := plotter.NewBarChart(vals, width)
		if err != nil {
			return fmt.Errorf("bench: plot %s: %w", name, err)
		}
		b.LineStyle.Width = 0
		b.Color = plotutil.Color(i)
		b.Offset = vg.Length(float64(i)-float64(len(ss)-1)/2) * width
		p.Add(b)
		if len(ss) > 1 {
			p.Legend.Add(s.label, b)
		}
	}
	if len(ss) > 1 && !logY {
		// Leave room above the bars for the legend.
		top := 0.0
		for _, s := range ss {
			for _, v := range s.values {
				top = max(top, finite(v))
			}
		}
		p.Y.Min, p.Y.Max = 0, top*1.35
	}
	if logY {
		p.Y.Label.Text += fmt.Sprintf(" (values below %g drawn at %g)", floor, floor)
	}
	p.Legend.Top = true
	p.NominalX(cats...)
	p.Add(plotter.NewGrid())
	return save(p, dir, name, vg.Points(40*float64(len(cats))+120), 4*vg.Inch)
}

// PlotSched writes the scheduler comparison charts to dir (SVG and PNG):
// fairness, CV and overprovision on the steady workload, queueing delay
// percentiles on steady, fairness of every workload, cache hit ratio on
// locality, and the disruption moved fractions.
func PlotSched(r *SchedReport, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	names := r.Scheds
	pick := func(w *WorkloadReport, f func(*SchedResult) Num) []float64 {
		v := make([]float64, len(w.Results))
		for i := range w.Results {
			v[i] = float64(f(&w.Results[i]))
		}
		return v
	}
	var steady *WorkloadReport
	for i := range r.Workloads {
		if r.Workloads[i].Name == "steady" {
			steady = &r.Workloads[i]
		}
	}
	if steady != nil {
		charts := []struct {
			name, title, y string
			f              func(*SchedResult) Num
		}{
			{"sched_jain", "Jain's fairness index (steady; 1 = fair)", "Jain index", func(s *SchedResult) Num { return s.Jain }},
			{"sched_cv", "Coefficient of variation (steady; 0 = fair)", "CV", func(s *SchedResult) Num { return s.CV }},
			{"sched_overprovision", "Overprovision factor, max/mean (steady; 1 = fair)", "max / mean load", func(s *SchedResult) Num { return s.Overprovision }},
		}
		for _, c := range charts {
			if err := barChart(dir, c.name, c.title, c.y, names, []series{{c.title, pick(steady, c.f)}}, false, 0); err != nil {
				return err
			}
		}
		err := barChart(dir, "sched_delay", "Queueing delay (steady)", "ms (log)", names, []series{
			{"p50", pick(steady, func(s *SchedResult) Num { return s.DelayP50 })},
			{"p90", pick(steady, func(s *SchedResult) Num { return s.DelayP90 })},
			{"p99", pick(steady, func(s *SchedResult) Num { return s.DelayP99 })},
		}, true, 0.01)
		if err != nil {
			return err
		}
	}
	var jain []series
	for i := range r.Workloads {
		w := &r.Workloads[i]
		jain = append(jain, series{w.Name, pick(w, func(s *SchedResult) Num { return s.Jain })})
		if w.Name == "locality" {
			err := barChart(dir, "sched_hit_ratio", "Cache hit ratio (locality)", "hit ratio", names,
				[]series{{"hit", pick(w, func(s *SchedResult) Num { return s.HitRatio })}}, false, 0)
			if err != nil {
				return err
			}
		}
	}
	if err := barChart(dir, "sched_jain_workloads", "Jain's fairness index per workload", "Jain index", names, jain, false, 0); err != nil {
		return err
	}
	var leave, lmin, join, jmin []float64
	for _, m := range r.Disruption.Results {
		leave = append(leave, float64(m.Leave))
		lmin = append(lmin, float64(m.LeaveMin))
		join = append(join, float64(m.Join))
		jmin = append(jmin, float64(m.JoinMin))
	}
	return barChart(dir, "sched_moved", "Fraction of flows moved when a server leaves / joins", "moved fraction", names,
		[]series{{"leave", leave}, {"leave min", lmin}, {"join", join}, {"join min", jmin}}, false, 0)
}

// PlotConntrack writes the conntrack charts to dir: cost per operation and
// bytes per entry against the table size.
func PlotConntrack(r *ConntrackReport, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	line := func(name, title, ylabel string, ss []series) error {
		p := plot.New()
		p.Title.Text = title
		p.X.Label.Text = "entries (log)"
		p.Y.Label.Text = ylabel
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Add(plotter.NewGrid())
		for i, s := range ss {
			pts := make(plotter.XYs, len(r.Sizes))
			for j, sz := range r.Sizes {
				pts[j].X, pts[j].Y = float64(sz.Entries), finite(s.values[j])
			}
			l, sc, err := plotter.NewLinePoints(pts)
			if err != nil {
				return fmt.Errorf("bench: plot %s: %w", name, err)
			}
			l.Color = plotutil.Color(i)
			sc.Color = plotutil.Color(i)
			sc.Shape = plotutil.Shape(i)
			p.Add(l, sc)
			p.Legend.Add(s.label, l, sc)
		}
		p.Legend.Top = true
		p.Legend.Left = true
		p.Y.Min = 0
		return save(p, dir, name, 6*vg.Inch, 4*vg.Inch)
	}
	var ins, look, exp, mem []float64
	for _, s := range r.Sizes {
		ins = append(ins, float64(s.InsertNs))
		look = append(look, float64(s.LookupNs))
		exp = append(exp, float64(s.ExpireNs))
		mem = append(mem, float64(s.BytesPerEntry))
	}
	if err := line("conntrack_cost", "conntrack cost per operation vs table size", "ns/op",
		[]series{{"insert", ins}, {"lookup", look}, {"expiry", exp}}); err != nil {
		return err
	}
	return line("conntrack_memory", "conntrack memory per entry vs table size", "bytes/entry", []series{{"bytes/entry", mem}})
}

// hbarChart draws grouped horizontal bars, one group per category, the
// categories' names down the left (long names never overlap) and the
// values along the bottom. With logX the axis is logarithmic and values
// are drawn as markers. NaN values (no measurement) are not drawn.
func hbarChart(dir, name, title, xlabel string, cats []string, ss []series, logX bool) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	// The first category at the top, as in the tables.
	rev := make([]string, len(cats))
	for i, c := range cats {
		rev[len(cats)-1-i] = c
	}
	pos := func(j int) int { return len(cats) - 1 - j }
	rowH := 16.0
	group := rowH * float64(len(ss)) // points per category
	width := vg.Points(rowH * 0.75)
	top, bottom := 0.0, math.Inf(1)
	for _, s := range ss {
		for _, v := range s.values {
			if v > 0 && !math.IsInf(v, 0) {
				top = max(top, v)
				bottom = min(bottom, v)
			}
		}
	}
	if logX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
		p.X.Min, p.X.Max = 1, 10 // nothing measured: an empty axis
		if top > 0 {
			p.X.Min = math.Pow(10, math.Floor(math.Log10(bottom)))
			p.X.Max = math.Pow(10, math.Ceil(math.Log10(top*1.01)))
			if p.X.Max/top < 3 {
				p.X.Max *= 10 // room for the legend on the right
			}
		}
	} else {
		p.X.Min, p.X.Max = 0, max(top, 1e-9)*1.4 // room for the legend at the top right
	}
	for i, s := range ss {
		off := (float64(len(ss)-1)/2 - float64(i)) / float64(len(ss)) * 0.8 // the first series on top
		if logX {
			var pts plotter.XYs
			for j, v := range s.values {
				if v > 0 && !math.IsInf(v, 0) {
					pts = append(pts, plotter.XY{X: v, Y: float64(pos(j)) + off})
				}
			}
			if len(pts) == 0 {
				continue
			}
			sc, err := plotter.NewScatter(pts)
			if err != nil {
				return fmt.Errorf("bench: plot %s: %w", name, err)
			}
			sc.Color = plotutil.Color(i)
			sc.Shape = plotutil.Shape(i)
			sc.Radius = vg.Points(3.5)
			p.Add(sc)
			p.Legend.Add(s.label, sc)
			continue
		}
		vals := make(plotter.Values, len(s.values))
		for j, v := range s.values {
			vals[pos(j)] = finite(v)
		}
		b, err := plotter.NewBarChart(vals, width)
		if err != nil {
			return fmt.Errorf("bench: plot %s: %w", name, err)
		}
		b.Horizontal = true
		b.LineStyle.Width = 0
		b.Color = plotutil.Color(i)
		b.Offset = vg.Points(off * group)
		p.Add(b)
		if len(ss) > 1 {
			p.Legend.Add(s.label, b)
		}
	}
	p.Legend.Top = true
	p.NominalY(rev...)
	p.Add(plotter.NewGrid())
	h := vg.Points(group*float64(len(cats))*1.15 + 110)
	return save(p, dir, name, 8*vg.Inch, h)
}
