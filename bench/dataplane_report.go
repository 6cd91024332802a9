package bench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// DataplaneMain is "golvs bench dataplane [flags]": it builds the NAT lab,
// floods golvs and the references with the same traffic, and writes a
// table (or, with --json, the report) to stdout, a progress bar to stderr
// when it is a terminal, and plots to --out when set.
func DataplaneMain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("golvs bench dataplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := DataplaneConfig{}
	var (
		workers, mixes, modes string
		out                   string
		asJSON                bool
		packets               uint64
	)
	fs.DurationVar(&c.Duration, "duration", 5*time.Second, fmt.Sprintf("traffic time per measurement (at most %s)", MaxDPDuration))
	fs.Float64Var(&c.Rate, "rate", 0, fmt.Sprintf("frames a second the generator offers (0: flat out; else %d..%d)", MinDPRate, MaxDPRate))
	fs.Float64Var(&c.LatRate, "lat-rate", 20000, fmt.Sprintf("flat out, measure latency afterwards for up to 1s at this rate, below saturation (0: skip; else %d..%d)", MinDPRate, MaxDPRate))
	fs.IntVar(&c.Size, "size", MinFrame, fmt.Sprintf("frame length in bytes, without FCS (%d..%d)", MinFrame, MaxFrame))
	fs.IntVar(&c.Flows, "flows", 4096, fmt.Sprintf("flows of the est and udp mixes (1..%d; syn makes a new flow per frame)", MaxDPFlows))
	fs.Uint64Var(&packets, "packets", DefaultDPPacket, fmt.Sprintf("most frames sent per measurement (1..%d)", MaxDPPackets))
	fs.StringVar(&workers, "workers", "1", "golvs worker counts to measure, comma-separated (e.g. 1,2,4,8 on a larger machine)")
	fs.StringVar(&mixes, "mix", "syn,est,udp", "traffic mixes: syn (new TCP flows), est (ACKs of open flows), udp")
	fs.StringVar(&modes, "modes", "nat,dr,tun,fullnat", "golvs forwarding modes: nat, dr, tun, fullnat (comma-separated)")
	fs.IntVar(&c.Ring, "ring", 2, "golvs's receive ring: 2 (TPACKET_V2, golvs's default: each frame handed over at once) or 3 (TPACKET_V3: 1 MiB blocks, up to 1 ms of delay below flood rates)")
	fs.IntVar(&c.RealServers, "rs", 2, fmt.Sprintf("real servers (1..%d)", MaxDPServers))
	fs.IntVar(&c.Conns, "conns", 2000, fmt.Sprintf("TCP connections of the connection-rate test (0..%d, also bounded by %s)", MaxDPConns, dpConnTime))
	fs.IntVar(&c.StreamBytes, "stream-bytes", MaxStreamBytes, fmt.Sprintf("bytes of the single-stream test (0..%d)", MaxStreamBytes))
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile (runtime/pprof) of the packet-rate measurements to this file")
	fs.StringVar(&out, "out", "", "folder to write plots to (SVG and PNG), created if missing")
	fs.BoolVar(&asJSON, "json", false, "write the report as JSON instead of a table")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: golvs bench dataplane [flags]\n\nBuilds the NAT lab in network namespaces, floods the director with generated\nframes from the client and counts what reaches the real servers: golvs with\neach worker count, and in the same run the kernel as a router, the kernel's\nNAT (nftables), netsniff-ng's rx-to-tx forwarding and netio's own ceiling.\nThen TCP connections a second and one stream's throughput, golvs NAT against\nthe kernel routing, HAProxy mode tcp and nginx stream. A peer this host lacks\nis skipped, naming its package. Needs root.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("bench dataplane: %v", err)
	}
	if fs.NArg() > 0 {
		return usagef("bench dataplane: unexpected argument %q", fs.Arg(0))
	}
	c.MaxPackets = packets
	for _, s := range splitList(workers) {
		w, err := strconv.Atoi(s)
		if err != nil {
			return usagef("bench dataplane: --workers %q: not a number", s)
		}
		c.Workers = append(c.Workers, w)
	}
	for _, s := range splitList(mixes) {
		c.Mixes = append(c.Mixes, Mix(s))
	}
	c.Modes = splitList(modes)
	if err := c.Validate(); err != nil {
		return &usageError{err.Error()}
	}
	progress, clear := newProgress(stderr)
	c.Progress = progress
	rep, err := RunDataplane(c)
	clear()
	if err != nil {
		return err
	}
	if out != "" {
		if err := PlotDataplane(rep, out); err != nil {
			return err
		}
	}
	if asJSON {
		return writeJSON(stdout, rep)
	}
	return WriteDataplaneTable(stdout, rep)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// WriteDataplaneTable writes the report as tables.
func WriteDataplaneTable(w io.Writer, r *DataplaneReport) error {
	rate := "flat out"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%.0f frames/s offered", r.Rate)
	}
	fmt.Fprintf(w, "golvs bench dataplane: %s\n", r.Topology)
	fmt.Fprintf(w, "%d-byte frames (no FCS), %gs per measurement, %s, %d flows (est, udp); syn: a new flow per frame\n", r.Size, r.Duration, rate, r.Flows)
	fmt.Fprintf(w, "cpus: %d; pinning: %s\n", r.CPUs, r.Pinning)
	fmt.Fprintf(w, "fwd/s = frames reaching the real servers a second; latency = a CLOCK_MONOTONIC stamp in the payload to the kernel's receive time at the real server")
	if r.Rate == 0 && r.LatRate > 0 {
		fmt.Fprintf(w, ",\nmeasured after each flat-out run for up to 1s at %.0f frames/s (lat loss: frames lost then)", r.LatRate)
	}
	fmt.Fprintf(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "forwarder\tmix\tsent/s\tfwd/s\tloss\tp50 us\tp90 us\tp99 us\tlat loss\tgolvs drops\t\n")
	for _, c := range r.Cells {
		ll := "-"
		if c.LatRate > 0 {
			ll = fmtNum(max(c.LatLoss, 0)*100, "%.1f%%")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", c.Forwarder, c.Mix,
			fmtNum(c.SentPPS, "%.0f"), fmtNum(c.FwdPPS, "%.0f"), fmtNum(c.Loss*100, "%.1f%%"),
			fmtNum(c.P50us, "%.1f"), fmtNum(c.P90us, "%.1f"), fmtNum(c.P99us, "%.1f"), ll, fmtDrops(c.Drops))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintf(w, "\nratios, golvs / reference, same run (fwd/s: above 1 golvs forwards more; p99: above 1 golvs is slower)\n")
		fmt.Fprintf(tw, "golvs\treference\tmix\tfwd/s\tp99\t\n")
		for _, x := range r.Ratios {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", x.Golvs, x.Reference, x.Mix, fmtNum(x.PPS, "%.3f"), fmtNum(x.P99, "%.2f"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(r.TCP) > 0 {
		fmt.Fprintf(w, "\nTCP (unpinned; direct = client to a real server's own address, the director's kernel routing)\n")
		fmt.Fprintf(tw, "path\tconns\tfailed\tconns/s\tstream MB\tstream MB/s\terror\t\n")
		for _, t := range r.TCP {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.1f\t%s\t%s\t\n", t.Path, t.Conns, t.Failed, fmtNum(t.CPS, "%.0f"),
				float64(t.StreamBytes)/1e6, fmtNum(t.StreamMBps, "%.0f"), t.Error)
		}
		for _, x := range r.TCPRatios {
			fmt.Fprintf(tw, "%s / %s\t%s\t\t%s\t\t\t\t\n", x.Golvs, x.Reference, x.Mix, fmtNum(x.PPS, "%.3f"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintf(w, "\nskipped:\n")
		for _, s := range r.Skipped {
			fmt.Fprintf(w, "  %s: %s\n", s.Name, s.Reason)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	return nil
}

func fmtDrops(d map[string]uint64) string {
	if len(d) == 0 {
		return "-"
	}
	var parts []string
	for k, v := range d {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// PlotDataplane writes dataplane_pps and dataplane_latency (SVG and PNG)
// to dir: forwarded frames a second per forwarder and mix, and latency
// percentiles per forwarder and mix.
func PlotDataplane(r *DataplaneReport, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	var fwds []string
	var mixes []Mix
	seenF, seenM := map[string]bool{}, map[Mix]bool{}
	for _, c := range r.Cells {
		if !seenF[c.Forwarder] {
			seenF[c.Forwarder] = true
			fwds = append(fwds, c.Forwarder)
		}
		if !seenM[c.Mix] {
			seenM[c.Mix] = true
			mixes = append(mixes, c.Mix)
		}
	}
	if len(fwds) == 0 {
		return nil
	}
	cell := func(f string, m Mix) *DPCell {
		for i := range r.Cells {
			if r.Cells[i].Forwarder == f && r.Cells[i].Mix == m {
				return &r.Cells[i]
			}
		}
		return nil
	}
	var pps []series
	for _, m := range mixes {
		v := make([]float64, len(fwds))
		for i, f := range fwds {
			if c := cell(f, m); c != nil {
				v[i] = float64(c.FwdPPS) / 1e3
			}
		}
		pps = append(pps, series{string(m), v})
	}
	if err := barChart(dir, "dataplane_pps", fmt.Sprintf("Forwarded frames (%d bytes), golvs vs references", r.Size),
		"thousand frames/s", fwds, pps, false, 0); err != nil {
		return err
	}
	var cats []string
	var p50, p90, p99 []float64
	for _, f := range fwds {
		for _, m := range mixes {
			c := cell(f, m)
			if c == nil {
				continue
			}
			cats = append(cats, f+"/"+string(m))
			p50 = append(p50, float64(c.P50us))
			p90 = append(p90, float64(c.P90us))
			p99 = append(p99, float64(c.P99us))
		}
	}
	return barChart(dir, "dataplane_latency", "Latency client -> real server", "us (log)", cats,
		[]series{{"p50", p50}, {"p90", p90}, {"p99", p99}}, true, 1)
}
