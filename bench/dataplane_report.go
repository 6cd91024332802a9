package bench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/golvs/golvs/director"
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
	var rings, spins, places, conc, refs string
	fs.DurationVar(&c.Duration, "duration", 2*time.Second, fmt.Sprintf("traffic time per packet-rate measurement (at most %s)", MaxDPDuration))
	fs.DurationVar(&c.ReqDuration, "req-duration", 0, "time per request-loop measurement (0: --duration)")
	fs.Float64Var(&c.Rate, "rate", 0, fmt.Sprintf("frames a second the generator offers (0: flat out; else %d..%d)", MinDPRate, MaxDPRate))
	fs.Float64Var(&c.LatRate, "lat-rate", 1000, fmt.Sprintf("flat out, measure latency afterwards for up to 1s at this rate, below saturation (0: skip; else %d..%d)", MinDPRate, MaxDPRate))
	fs.IntVar(&c.Size, "size", MinFrame, fmt.Sprintf("frame length in bytes, without FCS (%d..%d)", MinFrame, MaxFrame))
	fs.IntVar(&c.Flows, "flows", 4096, fmt.Sprintf("flows of the est and udp mixes (1..%d; syn makes a new flow per frame)", MaxDPFlows))
	fs.Uint64Var(&packets, "packets", DefaultDPPacket, fmt.Sprintf("most frames sent per measurement (1..%d)", MaxDPPackets))
	fs.StringVar(&workers, "workers", "1", "golvs worker counts to measure, comma-separated (e.g. 1,2,4,8 on a larger machine)")
	fs.StringVar(&mixes, "mix", "syn,est,udp", "traffic mixes: syn (new TCP flows), est (ACKs of open flows), udp (empty: no floods)")
	fs.StringVar(&modes, "modes", "nat,dr,tun,fullnat", "golvs forwarding modes: nat, dr, tun, fullnat (comma-separated)")
	fs.StringVar(&spins, "busy-poll", director.DefaultSpin.String(), "golvs's --busy-poll for every golvs row (its default: golvs run's), or a comma-separated list (e.g. 0,50us) for a golvs NAT request-loop row each, to show what looking for frames after traffic buys per crossing; the floods and other rows use the first")
	fs.StringVar(&rings, "ring", "2", "golvs's receive rings to measure, comma-separated: 2 (TPACKET_V2, golvs's default: each frame handed over at once), 3 (TPACKET_V3: 1 MiB blocks, up to 1 ms of delay below flood rates)")
	fs.StringVar(&places, "placement", "split,inline", "where the director's work runs: split (its threads and its kernel receive processing on their own CPU), inline (on the generator's CPU)")
	fs.StringVar(&refs, "refs", strings.Join(allRefs, ","), "packet-rate references to measure, comma-separated (those the host lacks are skipped)")
	fs.BoolVar(&c.NextRow, "fanout-next-row", true, "add to the request loops a golvs NAT row with fanout next (golvs run --fanout next) for each --workers count above 1")
	fs.BoolVar(&c.TxRingRow, "tx-ring-row", true, "add a golvs NAT row whose workers send through PACKET_TX_RINGs (golvs run --tx ring) instead of sendmmsg")
	fs.BoolVar(&c.NoSearch, "no-search", false, "skip the search for each forwarder's lossless rate (highest offered rate forwarded with at most 1% lost; first placement)")
	fs.BoolVar(&c.IPv6, "ipv6", false, "also measure golvs over IPv6: a row per mode (named ...-ipv6) forwarding IPv6 frames (at least 84 bytes) to the IPv6 VIP of a dual-stack lab; the ratio of a row to its -ipv6 variant is IPv6's cost (the references stay IPv4)")
	fs.BoolVar(&c.NoDropRow, "no-drop-row", false, "skip the golvs NAT row without the drop rule (--no-drop-rule), whose gap to the default row is the rule's gain")
	fs.IntVar(&c.RealServers, "rs", 2, fmt.Sprintf("real servers (1..%d)", MaxDPServers))
	fs.StringVar(&conc, "concurrency", "1,10,50", fmt.Sprintf("request loops: connections at once, comma-separated (each 1..%d; empty: no request loops)", MaxDPConc))
	fs.IntVar(&c.StreamBytes, "stream-bytes", DefStreamBytes, fmt.Sprintf("bytes of the single-stream test (0..%d)", MaxStreamBytes))
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile (runtime/pprof) of the packet-rate measurements to this file")
	fs.StringVar(&out, "out", "", "folder to write the table (dataplane.txt), the report (dataplane.json) and the plots (SVG and PNG) to, created if missing")
	fs.BoolVar(&asJSON, "json", false, "write the report as JSON instead of a table")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: golvs bench dataplane [flags]\n\nBuilds the NAT lab in network namespaces. Request loops first: wrk (or a\nbuilt-in client) at each --concurrency, Connection: close, and one stream,\nthrough the kernel routing (direct), golvs NAT and FULLNAT, HAProxy mode tcp,\nnginx stream and the kernel's NAT (nftables DNAT). Then floods: pre-built frames from the client's TX ring,\ncounted at the real servers, through golvs in each mode and ring, and in\nthe same run the generator into a sink (its own ceiling), the kernel as a\nrouter, the kernel's NAT (nftables), netsniff-ng, netio's own no-work\nceiling and the same over AF_XDP (xdp-ceiling, split placement only), in\neach --placement. A peer this host lacks is skipped, naming its\npackage. Needs root.\n\n")
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
	for _, v := range splitList(rings) {
		n, err := strconv.Atoi(v)
		if err != nil {
			return usagef("bench dataplane: --ring %q: not a number", v)
		}
		c.Rings = append(c.Rings, n)
	}
	for _, v := range splitList(spins) {
		d, err := time.ParseDuration(v)
		if err != nil {
			return usagef("bench dataplane: --busy-poll %q: not a duration (e.g. 0, 50us)", v)
		}
		c.BusyPolls = append(c.BusyPolls, d)
	}
	c.Placements = splitList(places)
	c.Refs = splitList(refs)
	if c.Refs == nil {
		c.Refs = []string{} // --refs '': none
	}
	for _, v := range splitList(conc) {
		n, err := strconv.Atoi(v)
		if err != nil {
			return usagef("bench dataplane: --concurrency %q: not a number", v)
		}
		c.Concurrency = append(c.Concurrency, n)
	}
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
		var tb, js strings.Builder
		if err := WriteDataplaneTable(&tb, rep); err != nil {
			return err
		}
		if err := writeJSON(&js, rep); err != nil {
			return err
		}
		for name, text := range map[string]string{"dataplane.txt": tb.String(), "dataplane.json": js.String()} {
			if err := os.WriteFile(filepath.Join(out, name), []byte(text), 0o644); err != nil {
				return fmt.Errorf("bench: %w", err)
			}
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
	fmt.Fprintf(w, "cpus: %d; pinning: %s\n", r.CPUs, r.Pinning)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if len(r.Requests) > 0 || len(r.Streams) > 0 {
		fmt.Fprintf(w, "\nrequest loops: each connection opens, sends one HTTP request (Connection: close), reads the answer and closes, over and over;\n")
		fmt.Fprintf(w, "direct = the client to a real server's own address (port %d), the director's kernel routing; nothing pinned by the bench\n", directPort)
		fmt.Fprintf(w, "latency: wrk's (request written to answer read; the connect is in req/s), or the built-in client's (dial to answer read)\n")
		fmt.Fprintf(tw, "path\tconns\ttool\treq/s\tp50 us\tp99 us\trequests\terrors\tgolvs counters\terror\t\n")
		for _, q := range r.Requests {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t\n", q.Path, q.Concurrency, q.Tool, fmtNum(q.RPS, "%.0f"),
				fmtNum(q.P50us, "%.0f"), fmtNum(q.P99us, "%.0f"), q.Requests, q.Errors, fmtDrops(q.Drops), q.Error)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(r.Streams) > 0 {
			fmt.Fprintf(w, "\none TCP stream (one connection, the answer's body; the median rate of %d runs); %s: the same client and server in the\nclient's namespace over loopback, no director (the ceiling of the client and server themselves)\n", streamRuns, streamCeiling)
			fmt.Fprintf(tw, "path\tMB\tMB/s\terror\t\n")
			for _, st := range r.Streams {
				fmt.Fprintf(tw, "%s\t%.1f\t%s\t%s\t\n", st.Path, float64(st.Bytes)/1e6, fmtNum(st.MBps, "%.0f"), st.Error)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if len(r.StreamPairs) > 0 {
			fmt.Fprintf(w, "\none TCP stream against direct, paired: the path and its direct reference alternately, each started for its one\ntransfer (after a 1 KiB request) and stopped after it, %d pairs; ratio = the median of the pairs' ratios (the stream ratio to direct below)\n", streamRuns)
			fmt.Fprintf(tw, "path\treference\tpairs\tratio\tmin\tmax\terror\t\n")
			for _, x := range r.StreamPairs {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t\n", x.Path, x.Reference, x.Pairs, fmtNum(x.Ratio, "%.3f"), fmtNum(x.Min, "%.3f"), fmtNum(x.Max, "%.3f"), x.Error)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if len(r.PathRatios) > 0 {
			fmt.Fprintf(w, "\nratios, same run (req/s at each concurrency, or the stream's MB/s; above 1 the path is faster)\n")
			fmt.Fprintf(tw, "path\treference\tconns\tratio\t\n")
			for _, x := range r.PathRatios {
				c := "stream"
				if x.Concurrency > 0 {
					c = strconv.Itoa(x.Concurrency)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", x.Path, x.Reference, c, fmtNum(x.Ratio, "%.3f"))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	if len(r.Cells) == 0 {
		return writeSkips(w, r)
	}
	fmt.Fprintf(w, "\npacket rates: %d-byte frames (no FCS), %gs per measurement, %s, %d flows (est, udp); syn: a new flow per frame;\n", r.Size, r.Duration, rate, r.Flows)
	fmt.Fprintf(w, "frames pre-built and sent from the client's TX ring (PACKET_TX_RING); %s: the generator's frames reaching the director's ext0 with nothing forwarding them (its own ceiling)\n", fwdSink)
	for _, p := range r.Placements {
		fmt.Fprintf(w, "placement %s: %s\n", p.Name, p.What)
	}
	fmt.Fprintf(w, "cpu us/fwd (split only) = the director's CPU time per forwarded frame: the time its CPUs were not idle (wall time less /proc/stat's idle,\n"+
		"iowait, steal), which hold its forwarding threads and the kernel's receive processing of ext0 (all of a kernel forwarder's work); below\n"+
		"saturation it includes golvs's look for frames after traffic; dir cpu = the share of the director's CPUs busy; @lossless: both during the\n"+
		"search's offer at the lossless rate, flat out otherwise. A forwarder that keeps up with its lossless rate with its CPU well short of 100%%\n"+
		"was not saturated: the generator's CPU, which also carries the lan bridge and the receivers, set that rate\n")
	fmt.Fprintf(w, "lossless/s (first placement) = the highest offered rate forwarded with at most %.0f%% lost, bisected in %d offers of %s (RFC 2544's throughput): flat out, a\nforwarder in overload shares its CPU with the kernel's receive processing of frames it then drops, so fwd/s depends on how fast the generator was\n", searchLoss*100, searchSteps, searchStep)
	fmt.Fprintf(w, "fwd/s = frames reaching the real servers a second; latency = a CLOCK_MONOTONIC stamp in the payload to the kernel's receive time at the real server")
	if r.Rate == 0 && r.LatRate > 0 {
		fmt.Fprintf(w, ",\nmeasured after each flat-out run for up to 1s at %.0f frames/s, in the first placement (lat loss: frames lost then)", r.LatRate)
	}
	fmt.Fprintf(w, "\n\n")
	fmt.Fprintf(tw, "placement\tforwarder\tmix\tsent/s\tfwd/s\tloss\tlossless/s\tcpu us@lossless\tdir cpu@lossless\tcpu us/fwd\tdir cpu\tp50 us\tp90 us\tp99 us\tlat loss\tgolvs counters\t\n")
	for _, c := range r.Cells {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", c.Placement, c.Forwarder, c.Mix,
			fmtNum(c.SentPPS, "%.0f"), fmtNum(c.FwdPPS, "%.0f"), fmtNum(c.Loss*100, "%.1f%%"), fmtNum(c.LosslessPPS, "%.0f"),
			fmtNum(c.LosslessCPUus, "%.2f"), fmtNum(c.LosslessBusy*100, "%.0f%%"), fmtNum(c.CPUus, "%.2f"), fmtNum(c.CPUBusy*100, "%.0f%%"),
			fmtNum(c.P50us, "%.1f"), fmtNum(c.P90us, "%.1f"), fmtNum(c.P99us, "%.1f"), fmtNum(max(c.LatLoss, 0)*100, "%.1f%%"), fmtDrops(c.Drops))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintf(w, "\nratios, golvs / reference, same run and placement (fwd/s: above 1 golvs forwards more; p99: above 1 golvs is slower;\nadded p50: golvs's p50 less the reference's at the latency rate, per crossing when the reference is kernel-forward; cpu/fwd: golvs's CPU per\nframe over the reference's, each at its lossless rate, above 1 golvs costs more; ref cpu: the reference's dir cpu there, well below 100%%\nit was not saturated and the lossless ratio is an upper bound)\n")
		fmt.Fprintf(tw, "placement\tgolvs\treference\tmix\tfwd/s\tlossless/s\tcpu/fwd@lossless\tref cpu@lossless\tp99\tadded p50 us\t\n")
		for _, x := range r.Ratios {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", x.Placement, x.Golvs, x.Reference, x.Mix, fmtNum(x.PPS, "%.3f"), fmtNum(x.Lossless, "%.3f"),
				fmtNum(x.CPUPerFrame, "%.2f"), fmtNum(x.RefBusy*100, "%.0f%%"), fmtNum(x.P99, "%.2f"), fmtNum(x.AddedP50us, "%.0f"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return writeSkips(w, r)
}

func writeSkips(w io.Writer, r *DataplaneReport) error {
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

// PlotDataplane writes to dir (SVG and PNG): dataplane_pps_PLACEMENT
// (forwarded frames a second per forwarder and mix), dataplane_latency
// (p50 and p99 at the latency rate, split placement), dataplane_requests
// (req/s per path and concurrency) and dataplane_req_latency (p50 and p99
// of one connection at a time).
func PlotDataplane(r *DataplaneReport, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	var places, fwds []string
	var mixes []Mix
	for _, c := range r.Cells {
		if !slices.Contains(places, c.Placement) {
			places = append(places, c.Placement)
		}
		if !slices.Contains(fwds, c.Forwarder) {
			fwds = append(fwds, c.Forwarder)
		}
		if !slices.Contains(mixes, c.Mix) {
			mixes = append(mixes, c.Mix)
		}
	}
	cell := func(p, f string, m Mix) *DPCell {
		for i := range r.Cells {
			if c := &r.Cells[i]; c.Placement == p && c.Forwarder == f && c.Mix == m {
				return c
			}
		}
		return nil
	}
	for _, pl := range places {
		var ss []series
		for _, m := range mixes {
			v := make([]float64, len(fwds))
			for i, f := range fwds {
				v[i] = math.NaN()
				if c := cell(pl, f, m); c != nil {
					v[i] = float64(c.FwdPPS) / 1e3
				}
			}
			ss = append(ss, series{string(m), v})
		}
		err := hbarChart(dir, "dataplane_pps_"+pl, fmt.Sprintf("Forwarded %d-byte frames, flat out (%s placement)", r.Size, pl),
			"thousand frames/s reaching the real servers", fwds, ss, false)
		if err != nil {
			return err
		}
	}
	if len(places) > 0 {
		var ss []series
		any := false
		for _, m := range mixes {
			v := make([]float64, len(fwds))
			for i, f := range fwds {
				v[i] = math.NaN()
				if c := cell(places[0], f, m); c != nil {
					v[i] = float64(c.LosslessPPS) / 1e3
					any = any || !math.IsNaN(v[i])
				}
			}
			ss = append(ss, series{string(m), v})
		}
		if any {
			err := hbarChart(dir, "dataplane_lossless", fmt.Sprintf("Highest rate forwarded with at most %.0f%% lost, %d-byte frames (%s placement)", searchLoss*100, r.Size, places[0]),
				"thousand frames/s offered and forwarded", fwds, ss, false)
			if err != nil {
				return err
			}
		}
	}
	if len(places) > 0 && r.LatRate > 0 {
		pl := places[0]
		m := mixes[0]
		if slices.Contains(mixes, MixUDP) {
			m = MixUDP
		}
		var cats []string
		var p50, p99 []float64
		for _, f := range fwds {
			if c := cell(pl, f, m); c != nil && f != fwdSink {
				cats = append(cats, f)
				p50 = append(p50, float64(c.P50us))
				p99 = append(p99, float64(c.P99us))
			}
		}
		err := hbarChart(dir, "dataplane_latency", fmt.Sprintf("Latency client -> real server at %.0f frames/s (%s, %s placement)", r.LatRate, m, pl),
			"microseconds (log scale)", cats, []series{{"p50", p50}, {"p99", p99}}, true)
		if err != nil {
			return err
		}
	}
	if len(r.Requests) == 0 {
		return nil
	}
	var paths []string
	var concs []int
	for _, q := range r.Requests {
		if !slices.Contains(paths, q.Path) {
			paths = append(paths, q.Path)
		}
		if !slices.Contains(concs, q.Concurrency) {
			concs = append(concs, q.Concurrency)
		}
	}
	req := func(p string, n int) *DPReq {
		for i := range r.Requests {
			if q := &r.Requests[i]; q.Path == p && q.Concurrency == n {
				return q
			}
		}
		return nil
	}
	var ss []series
	for _, n := range concs {
		v := make([]float64, len(paths))
		for i, p := range paths {
			v[i] = math.NaN()
			if q := req(p, n); q != nil {
				v[i] = float64(q.RPS) / 1e3
			}
		}
		ss = append(ss, series{fmt.Sprintf("%d at once", n), v})
	}
	if err := hbarChart(dir, "dataplane_requests", "HTTP requests, a new connection each (Connection: close)",
		"thousand requests/s", paths, ss, false); err != nil {
		return err
	}
	n := concs[0]
	var p50, p99 []float64
	for _, p := range paths {
		q := req(p, n)
		if q == nil {
			p50, p99 = append(p50, math.NaN()), append(p99, math.NaN())
			continue
		}
		p50, p99 = append(p50, float64(q.P50us)), append(p99, float64(q.P99us))
	}
	return hbarChart(dir, "dataplane_req_latency", fmt.Sprintf("Request latency, %d connection(s) at a time", n),
		"microseconds (log scale)", paths, []series{{"p50", p50}, {"p99", p99}}, true)
}
