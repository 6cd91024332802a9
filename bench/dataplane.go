package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/netio"
)

// Limits of "golvs bench dataplane", checked before anything is built.
const (
	MaxDPDuration   = 600 * time.Second
	MinDPRate       = 1000
	MaxDPRate       = 100_000_000
	MaxDPFlows      = setHosts * numPorts
	MaxDPPackets    = 1_000_000_000
	DefaultDPPacket = 100_000_000
	MaxDPWorkers    = 64
	MaxDPServers    = 16
	MaxDPConc       = 1000
	MaxBusyPoll     = director.MaxSpin // golvs run --busy-poll's limit
	MaxStreamBytes  = lab.MaxBulk      // what lab.Serve answers at most
	DefStreamBytes  = 1 << 30          // the stream test's default: 1 GiB, a third of a second direct here
	dpDrain         = 200 * time.Millisecond
	dpConntrackMax  = 1 << 22
)

// The forwarding modes golvs is measured in. All run on the NAT lab's
// topology and are measured in the client -> real server direction only
// (the real servers never answer the flood): NAT rewrites the destination,
// DR only the MACs (the real servers share the director's server-side
// segment), TUN encapsulates in IPIP, FULLNAT rewrites both addresses.
var dpModes = map[string]ipvs.Method{
	"nat": ipvs.MethodMasq, "dr": ipvs.MethodRoute, "tun": ipvs.MethodTunnel, "fullnat": ipvs.MethodFullNAT,
}

// DataplaneConfig is one "golvs bench dataplane" run.
type DataplaneConfig struct {
	Duration    time.Duration // per measurement (cell)
	Rate        float64       // frames a second; 0: flat out
	LatRate     float64       // flat out: the rate latency is measured at afterwards (0: not)
	Size        int           // frame length without FCS
	Flows       int           // flows of the est and udp mixes
	MaxPackets  uint64        // per cell
	Workers     []int         // golvs worker counts to measure
	Mixes       []Mix
	Modes       []string
	RealServers int
	Concurrency []int         // request loops: connections at once (empty: no request loops)
	ReqDuration time.Duration // per request-loop cell (0: Duration)
	StreamBytes int           // bytes of the single-stream test
	Rings       []int         // golvs's receive ring versions to measure (2, 3)
	// BusyPolls are the --busy-poll windows golvs's NAT request loops run
	// with, a row each; every other golvs row uses the first (nil: golvs
	// run's default, director.DefaultSpin).
	BusyPolls  []time.Duration
	Placements []string // "split" (director work on its own CPUs), "inline" (on the generator's)
	NoDropRow  bool     // skip the golvs NAT row without the drop rule
	TxRingRow  bool     // add a golvs NAT row sending through PACKET_TX_RINGs (--tx ring)
	// NextRow adds, to the request loops, a golvs NAT row with fanout
	// next for each worker count above one (golvs run --fanout next).
	NextRow  bool
	Refs     []string // packet-rate references to measure (nil: all the host has)
	NoSearch bool     // skip the lossless-rate search
	// IPv6 adds a golvs row per mode forwarding IPv6 frames (named
	// ...-ipv6) to the IPv6 VIP of a dual-stack lab, beside the IPv4 rows
	// (the references stay IPv4): the ratio of each row to its -ipv6
	// variant is IPv6's cost.
	IPv6       bool
	CPUProfile string
	Progress   func(done, total int, what string)
}

// Validate checks every limit and names the one that is broken.
func (c *DataplaneConfig) Validate() error {
	switch {
	case c.Duration <= 0 || c.Duration > MaxDPDuration:
		return fmt.Errorf("bench dataplane: --duration %s out of range (allowed: more than 0, at most %s)", c.Duration, MaxDPDuration)
	case c.Rate != 0 && (c.Rate < MinDPRate || c.Rate > MaxDPRate):
		return fmt.Errorf("bench dataplane: --rate %g out of range (allowed: 0 for flat out, or %d..%d frames/s)", c.Rate, MinDPRate, MaxDPRate)
	case c.LatRate != 0 && (c.LatRate < MinDPRate || c.LatRate > MaxDPRate):
		return fmt.Errorf("bench dataplane: --lat-rate %g out of range (allowed: 0 to skip, or %d..%d frames/s)", c.LatRate, MinDPRate, MaxDPRate)
	case c.Size < MinFrame || c.Size > MaxFrame:
		return fmt.Errorf("bench dataplane: --size %d out of range (allowed: %d..%d bytes, Ethernet frame without FCS)", c.Size, MinFrame, MaxFrame)
	case c.Flows < 1 || c.Flows > MaxDPFlows:
		return fmt.Errorf("bench dataplane: --flows %d out of range (allowed: 1..%d)", c.Flows, MaxDPFlows)
	case c.MaxPackets < 1 || c.MaxPackets > MaxDPPackets:
		return fmt.Errorf("bench dataplane: --packets %d out of range (allowed: 1..%d per measurement)", c.MaxPackets, MaxDPPackets)
	case c.RealServers < 1 || c.RealServers > MaxDPServers:
		return fmt.Errorf("bench dataplane: --rs %d out of range (allowed: 1..%d)", c.RealServers, MaxDPServers)
	case c.ReqDuration < 0 || c.ReqDuration > MaxDPDuration:
		return fmt.Errorf("bench dataplane: --req-duration %s out of range (allowed: 0 for --duration, at most %s)", c.ReqDuration, MaxDPDuration)
	case len(c.Rings) == 0:
		return errors.New("bench dataplane: --ring is empty (want 2, 3 or 2,3)")
	case len(c.Placements) == 0:
		return errors.New("bench dataplane: --placement is empty (want split, inline)")
	case c.StreamBytes < 0 || c.StreamBytes > MaxStreamBytes:
		return fmt.Errorf("bench dataplane: --stream-bytes %d out of range (allowed: 0..%d; 0 skips the stream test)", c.StreamBytes, MaxStreamBytes)
	case len(c.Workers) == 0:
		return errors.New("bench dataplane: --workers is empty (want a list such as 1,2)")
	case len(c.Modes) == 0:
		return errors.New("bench dataplane: --modes is empty (want nat, dr, tun, fullnat)")
	}
	for _, n := range c.Concurrency {
		if n < 1 || n > MaxDPConc {
			return fmt.Errorf("bench dataplane: --concurrency %d out of range (allowed: 1..%d)", n, MaxDPConc)
		}
	}
	for _, v := range c.Rings {
		if v != 2 && v != 3 {
			return fmt.Errorf("bench dataplane: --ring %d: allowed 2 or 3", v)
		}
	}
	for i, v := range c.BusyPolls {
		if v < 0 || v > MaxBusyPoll {
			return fmt.Errorf("bench dataplane: --busy-poll %s out of range (allowed: 0..%s, as golvs run takes)", v, MaxBusyPoll)
		}
		if slices.Contains(c.BusyPolls[:i], v) {
			return fmt.Errorf("bench dataplane: --busy-poll %s given twice", v)
		}
	}
	for _, ref := range c.Refs {
		if !slices.Contains(allRefs, ref) {
			return fmt.Errorf("bench dataplane: unknown reference %q (want %s)", ref, strings.Join(allRefs, ", "))
		}
	}
	for _, p := range c.Placements {
		if p != placeSplit && p != placeInline {
			return fmt.Errorf("bench dataplane: unknown placement %q (want split, inline)", p)
		}
	}
	for _, w := range c.Workers {
		if w < 1 || w > MaxDPWorkers {
			return fmt.Errorf("bench dataplane: --workers %d out of range (allowed: 1..%d)", w, MaxDPWorkers)
		}
	}
	for _, m := range c.Mixes {
		if m != MixSYN && m != MixEst && m != MixUDP {
			return fmt.Errorf("bench dataplane: unknown mix %q (want syn, est, udp)", m)
		}
	}
	for _, m := range c.Modes {
		if _, ok := dpModes[m]; !ok {
			return fmt.Errorf("bench dataplane: unknown mode %q (want nat, dr, tun, fullnat)", m)
		}
	}
	return nil
}

// DPCell is one forwarder carrying one mix.
type DPCell struct {
	Forwarder  string            `json:"forwarder"` // golvs-nat-w1, kernel-forward, netio-ceiling, nft-dnat, generator-sink
	Placement  string            `json:"placement"` // split or inline
	Golvs      bool              `json:"golvs"`
	Ring       int               `json:"ring,omitempty"`
	NoDropRule bool              `json:"no_drop_rule,omitempty"`
	Mode       string            `json:"mode,omitempty"`
	Workers    int               `json:"workers,omitempty"`
	Mix        Mix               `json:"mix"`
	Sent       uint64            `json:"sent"`
	SendErrors uint64            `json:"send_errors"`
	Received   uint64            `json:"received"`
	PerRS      []uint64          `json:"received_per_rs"`
	Seconds    float64           `json:"seconds"`
	SentPPS    Num               `json:"sent_pps"`
	FwdPPS     Num               `json:"forwarded_pps"`
	Loss       Num               `json:"loss"`
	P50us      Num               `json:"p50_us"`
	P90us      Num               `json:"p90_us"`
	P99us      Num               `json:"p99_us"`
	LatRate    float64           `json:"latency_rate_pps,omitempty"` // flat out: the rate latency was measured at
	LatLoss    Num               `json:"latency_loss"`
	Drops      map[string]uint64 `json:"drops,omitempty"` // golvs's counters, nonzero ones
	// CPUus is the director's CPU time per forwarded frame (split
	// placement: see dirCPU), in microseconds.
	CPUus Num `json:"cpu_us_per_frame"`
	// CPUBusy is the share of the director's CPUs that was busy during
	// the measurement (split placement): near 1 the forwarder used all
	// it had, well below it something else (the generator's side) set
	// the rate.
	CPUBusy Num `json:"director_cpu_busy"`
	// LosslessPPS is the highest offered rate found forwarded with at
	// most searchLoss lost (RFC 2544's throughput, bisected; first
	// placement only).
	LosslessPPS Num `json:"lossless_pps"`
	// LosslessCPUus and LosslessBusy are CPUus and CPUBusy during the
	// search's offer at LosslessPPS (split placement): what a frame
	// costs, and how much of its CPUs the forwarder used, at the rate it
	// keeps up with. A forwarder that keeps up with everything offered
	// with its CPUs well short of busy was not saturated: its lossless
	// rate is the generator's.
	LosslessCPUus Num `json:"lossless_cpu_us_per_frame"`
	LosslessBusy  Num `json:"lossless_director_cpu_busy"`
}

// DPRatio is a golvs cell over a reference cell of the same mix and
// placement.
type DPRatio struct {
	Golvs     string `json:"golvs"`
	Reference string `json:"reference"`
	Placement string `json:"placement"`
	Mix       Mix    `json:"mix"`
	PPS       Num    `json:"pps_ratio"`
	Lossless  Num    `json:"lossless_ratio"`
	P99       Num    `json:"p99_ratio"`
	// AddedP50us is golvs's p50 less the reference's, at the latency
	// rate: what golvs adds per crossing when the reference is the
	// kernel's own forwarding.
	AddedP50us Num `json:"added_p50_us"`
	// CPUPerFrame is golvs's CPU per frame over the reference's, each at
	// its lossless rate (above 1 golvs costs more), and RefBusy the
	// share of the director's CPUs the reference used there: well below
	// 1 the reference was not saturated and Lossless is an upper bound.
	CPUPerFrame Num `json:"lossless_cpu_per_frame_ratio"`
	RefBusy     Num `json:"reference_lossless_cpu_busy"`
}

// DPReq is one request loop: Concurrency connections at once, each
// opening a TCP connection, sending one HTTP request (Connection: close),
// reading the answer to its end, and starting again.
type DPReq struct {
	Path        string            `json:"path"` // direct, golvs-nat-w1, haproxy-tcp, nginx-stream
	Concurrency int               `json:"concurrency"`
	Tool        string            `json:"tool"` // wrk, or the built-in Go loop
	Requests    uint64            `json:"requests"`
	Errors      uint64            `json:"errors"`
	Seconds     float64           `json:"seconds"`
	RPS         Num               `json:"req_per_s"`
	P50us       Num               `json:"p50_us"`
	P99us       Num               `json:"p99_us"`
	Error       string            `json:"error,omitempty"`
	Drops       map[string]uint64 `json:"drops,omitempty"` // golvs's counters that moved
}

// DPStream is one TCP stream's transfer: Bytes each run, the median
// rate of streamRuns runs.
type DPStream struct {
	Path  string `json:"path"`
	Bytes int    `json:"bytes"`
	MBps  Num    `json:"MBps"`
	Error string `json:"error,omitempty"`
}

// DPStreamPair is a path's stream against its direct reference's, run
// alternately, each path started for its one transfer and stopped after
// it: the host's drift over the minutes between two paths' turns, which
// moved direct's own rate 2x between runs, falls on both alike.
type DPStreamPair struct {
	Path      string `json:"path"`
	Reference string `json:"reference"`
	Pairs     int    `json:"pairs"`
	Ratio     Num    `json:"ratio"` // the median of the pairs' ratios
	Min       Num    `json:"min"`
	Max       Num    `json:"max"`
	Error     string `json:"error,omitempty"`
}

// DPPathRatio is a path's request rate (or stream throughput) over
// another's in the same run.
type DPPathRatio struct {
	Path        string `json:"path"`
	Reference   string `json:"reference"`
	Concurrency int    `json:"concurrency,omitempty"` // 0: the stream
	Ratio       Num    `json:"ratio"`
}

// DPSkip is a reference or mode that was not measured, and why.
type DPSkip struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// DataplaneReport is the outcome of one run.
type DataplaneReport struct {
	Topology    string         `json:"topology"`
	CPUs        int            `json:"cpus"`
	Pinning     string         `json:"pinning"`
	Duration    float64        `json:"duration_s"`
	Rate        float64        `json:"rate_pps"` // 0: flat out
	LatRate     float64        `json:"latency_rate_pps"`
	Size        int            `json:"frame_bytes"`
	Flows       int            `json:"flows"`
	RealServers int            `json:"real_servers"`
	Placements  []DPPlacement  `json:"placements"`
	Cells       []DPCell       `json:"cells"`
	Ratios      []DPRatio      `json:"ratios"`
	Requests    []DPReq        `json:"requests"`
	Streams     []DPStream     `json:"streams"`
	StreamPairs []DPStreamPair `json:"stream_pairs,omitempty"`
	PathRatios  []DPPathRatio  `json:"path_ratios"`
	Skipped     []DPSkip       `json:"skipped"`
	Notes       []string       `json:"notes"`
}

// DPPlacement says where a placement put the work.
type DPPlacement struct {
	Name string `json:"name"`
	What string `json:"what"`
}

// dpRun is the state of a run: the lab and the instruments in it.
type dpRun struct {
	v6       bool // the cells now measured send IPv6 frames (golvsRun.v6)
	c        DataplaneConfig
	rep      *DataplaneReport
	topo     *lab.Topology
	gen      *generator
	genJobs  chan genJob
	rx       *receiver
	tag      uint16
	synNext  uint64
	dirMAC   [6]byte
	genCPU   []int      // the generator's CPU (the first), in every placement
	pl       *placement // the current placement
	places   []*placement
	step     int
	steps    int
	fwdSaved string
	peers    map[string]string // optional peers this host has: name -> path
	// nginxModule is the stream module nginx loads ("": built in).
	nginxModule string
	// rsNginx is nginx's path, the real servers' program ("": golvs's
	// lab server stands in, rsNoted once said so); rsRootDir their
	// shared document root (serveRS).
	rsNginx    string
	rsNoted    bool
	rsRootDir  string
	peerExit   string                   // set by a peer's stop: what it said when it had exited by itself
	wrk        string                   // wrk's path ("": the built-in request loop)
	curl       string                   // curl's path, the streams' client ("": lab.Fetch)
	counters   func() map[string]uint64 // the running forwarder's own counters (the netio ceiling's, golvs's)
	fwdThreads func() []int             // the running forwarder's threads (the netio ceiling's, golvs's workers)
	kthreads   []int                    // the running forwarder's kernel threads (xdp-ceiling's NAPI), pinned with fwdThreads
	curGolvs   *golvsDir                // the golvs path the request loops run through
	// releaseProcs gives back the Ps reserved for the generator's and
	// the receivers' threads; procsBase is GOMAXPROCS before it.
	releaseProcs func()
	procsBase    int
}

type genJob struct {
	plan *flowPlan
	tag  uint16
	rate float64
	d    time.Duration
	max  uint64
	res  chan genResult
}

func (r *dpRun) progress(what string) {
	if r.c.Progress != nil {
		r.c.Progress(r.step, r.steps, what)
	}
	r.step++
}

func (r *dpRun) note(format string, a ...any) {
	r.rep.Notes = append(r.rep.Notes, fmt.Sprintf(format, a...))
}

// Placements of the director's work, for the packet-rate cells.
const (
	// placeSplit: every cost of the director on its own CPUs: its
	// threads pinned there, the kernel's receive processing of its
	// client-side interface moved there with RPS; the generator, the
	// lan bridge and the counting receivers on the first CPU.
	placeSplit = "split"
	// placeInline: the director's work on the generator's CPU: its
	// threads pinned there and the kernel's receive processing of the
	// generator's frames done inline, in the generator's send (no RPS);
	// the lan bridge and the receivers on the other CPUs.
	placeInline = "inline"
)

// placement is where a placement puts each piece of work.
type placement struct {
	name    string
	genCPUs []int // the generator
	dirCPUs []int // the director's threads
	rpsCPUs []int // the kernel's receive processing of ext0 (nil: inline, where the frame was sent)
	rxCPUs  []int // the receivers and the lan bridge's receive processing
}

// RunDataplane builds the lab, measures every forwarder and removes the
// lab again, also on error.
func RunDataplane(c DataplaneConfig) (rep *DataplaneReport, err error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := lab.RequireRoot(); err != nil {
		return nil, fmt.Errorf("bench dataplane: %w", err)
	}
	rep = &DataplaneReport{
		Topology: fmt.Sprintf("NAT lab: client %s -> director (%s | %s) -> lan bridge -> %d real servers %s..; VIP %s",
			lab.CIP, lab.DirExtIP, lab.DirIntIP, c.RealServers, lab.RIP(1), lab.VIP),
		Duration: c.Duration.Seconds(), Rate: c.Rate, LatRate: c.LatRate, Size: c.Size, Flows: c.Flows, RealServers: c.RealServers,
	}
	r := &dpRun{c: c, rep: rep}
	places := r.planCPUs()
	topo, err := lab.BuildNAT(lab.Options{Suffix: lab.RandomSuffix(), RealServers: c.RealServers, IPv6: c.IPv6})
	if err != nil {
		return nil, fmt.Errorf("bench dataplane: %w", err)
	}
	r.topo = topo
	defer topo.Close()
	defer func() {
		if r.rsRootDir != "" {
			os.RemoveAll(r.rsRootDir)
		}
	}()
	defer pinAll(nil, nil) // every thread back on every CPU

	refs := r.references(hostPeers)
	if r.rsNginx != "" {
		rep.Topology += "; real servers: nginx, a process each"
	} else {
		rep.Topology += "; real servers: golvs's lab server in the bench's process (no nginx)"
	}
	golvsRuns := r.golvsRuns()
	proxies := r.proxies()
	reqPaths := 2 + len(c.Rings)*max(len(c.BusyPolls), 1) + len(proxies) // direct, golvs nat per ring and busy-poll, fullnat, proxies
	reqPaths += len(c.Workers) - 1 + len(c.nextRows())                   // golvs nat per further worker count, and with fanout next
	if r.kernelNAT() {
		reqPaths++ // nft-dnat
	}
	if !slices.Contains(c.Modes, "fullnat") {
		reqPaths--
	}
	directs := 1 // direct, and direct-MODE in each mode's lab
	for _, m := range []string{"dr", "tun"} {
		if slices.Contains(c.Modes, m) {
			reqPaths += 2 // direct-MODE, golvs-MODE
			directs++
		}
	}
	r.steps = reqPaths*(len(c.Concurrency)+1) + len(places)*(len(refs)+len(golvsRuns))*len(c.Mixes)
	if c.StreamBytes > 0 {
		r.steps += reqPaths - directs + 1 // each path's stream pairs, and the loopback ceiling
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i, rs := range topo.RS {
		// Port 8080 is for the direct request loops: a connection the
		// client opened to RIP:80 itself would leave a TIME_WAIT entry
		// on the real server that a later connection through the VIP,
		// with the same ports but the client's TCP timestamps for
		// another address, runs into.
		stop, err := r.serveRS(ctx, rs, fmt.Sprintf("rs%d", i+1), netip.Addr{}, []int{80, directPort})
		if err != nil {
			return nil, fmt.Errorf("bench dataplane: %w", err)
		}
		defer stop()
	}
	if err := lab.RouteVia(topo.Client, netip.PrefixFrom(lab.DirIntIP, 24).Masked(), lab.DirExtIP); err != nil {
		return nil, fmt.Errorf("bench dataplane: %w", err)
	}
	if r.fwdSaved, err = lab.WriteSysctl(topo.Director, "net/ipv4/ip_forward", "0"); err != nil {
		return nil, fmt.Errorf("bench dataplane: %w", err)
	}
	// The request loops' client closes each connection as soon as its
	// answer is read, so each leaves a TIME_WAIT entry behind: with the
	// default 28,000 ports a loop runs out of them within seconds and
	// connect() slows to a crawl searching for one. A load generator's
	// usual settings: all ports, and TIME_WAIT ports reused (timestamps
	// keep that safe). The same in the director's namespace, for the
	// proxies' connections to the real servers (golvs uses no kernel
	// socket there). The namespaces are the bench's own.
	for _, ns := range []*lab.NS{topo.Client, topo.Director} {
		if err := loadGenSysctls(ns); err != nil {
			return nil, fmt.Errorf("bench dataplane: %w", err)
		}
	}
	if len(c.Concurrency) > 0 || c.StreamBytes > 0 {
		if err := r.tcpTests(proxies); err != nil {
			return nil, err
		}
	} else {
		r.step += reqPaths * (len(c.Concurrency) + 1)
		for _, p := range proxies {
			r.skip(p, "the TCP tests are off (--concurrency '' --stream-bytes 0)")
		}
	}
	if len(c.Mixes) == 0 {
		return rep, nil // no floods
	}
	if err := r.setupPPS(); err != nil {
		return nil, err
	}
	defer r.closePPS()

	if c.CPUProfile != "" {
		f, err := os.Create(c.CPUProfile)
		if err != nil {
			return nil, fmt.Errorf("bench dataplane: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, fmt.Errorf("bench dataplane: cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	r.places = places
	for _, pl := range places {
		r.place(pl)
		for _, ref := range refs {
			if ref.splitOnly && pl.name != placeSplit {
				r.step += len(c.Mixes)
				r.skip(ref.name+" "+pl.name, "its receive runs in a kernel thread (threaded NAPI), which a CPU shared with the generator's thread gives the generator's share of: not a cost of the path (measured split only)")
				continue
			}
			if err := ref.run(r); err != nil {
				return nil, err
			}
		}
		for _, g := range golvsRuns {
			if err := r.golvsCells(g); err != nil {
				return nil, err
			}
		}
	}
	r.ratios()
	sink := map[[2]string]Num{}
	for _, cl := range rep.Cells {
		if cl.Forwarder == fwdSink {
			sink[[2]string{cl.Placement, string(cl.Mix)}] = cl.SentPPS
		}
	}
	for _, cl := range rep.Cells {
		if cl.Forwarder == fwdSink || c.Rate != 0 || float64(cl.Loss) >= 0.01 {
			continue
		}
		// A veth whose receiving end runs XDP stops its sender's queue
		// while its receive ring is full: the generator then offered
		// what the XDP reference took, not what it could send. (The
		// other rows that keep up also see less sent than the sink
		// does: there the generator's CPU, which carries the bridge and
		// the receivers, is the limit.)
		if top, ok := sink[[2]string{cl.Placement, string(cl.Mix)}]; ok && cl.Forwarder == refXDP {
			r.note("%s/%s/%s lost %.1f%% flat out, the generator sending %.0f frames/s (%.0f into the sink): the veth held it back while the XDP program's ring was full, so the rate is what the path took, short of the forwarder's capacity where its CPU was not saturated: compare its CPU per frame", cl.Placement, cl.Forwarder, cl.Mix, float64(cl.Loss)*100, float64(cl.SentPPS), float64(top))
			continue
		}
		r.note("%s/%s/%s lost %.1f%% flat out: it kept up with the generator, which set the rate; ratios to it are upper bounds", cl.Placement, cl.Forwarder, cl.Mix, float64(cl.Loss)*100)
	}
	return rep, nil
}

// directPort is the real servers' second HTTP port, for the direct path.
const directPort = 8080

// golvsRun is one golvs configuration measured in the packet-rate cells.
type golvsRun struct {
	mode    string
	workers int
	ring    int
	noDrop  bool
	txRing  bool
	v6      bool          // IPv6 frames to the IPv6 VIP
	spin    time.Duration // --busy-poll
	next    bool          // --fanout next
}

// nextRows are the worker counts the request loops measure with fanout
// next (NextRow): each above one.
func (c DataplaneConfig) nextRows() []int {
	var out []int
	for _, w := range c.Workers {
		if c.NextRow && w > 1 {
			out = append(out, w)
		}
	}
	return out
}

// spin is the --busy-poll of every golvs row but the NAT request loops'
// (which run each of BusyPolls).
func (r *dpRun) spin() time.Duration {
	if len(r.c.BusyPolls) == 0 {
		return director.DefaultSpin
	}
	return r.c.BusyPolls[0]
}

func (g golvsRun) name() string {
	n := fmt.Sprintf("golvs-%s-w%d", g.mode, g.workers)
	if g.ring == 3 {
		n += "-v3"
	}
	if g.noDrop {
		n += "-nodrop"
	}
	if g.txRing {
		n += "-txring"
	}
	if g.v6 {
		n += "-ipv6"
	}
	if g.spin != director.DefaultSpin {
		n += "-busypoll" + g.spin.String()
	}
	if g.next {
		n += "-next"
	}
	return n
}

// golvsRuns lists golvs's configurations: every mode and worker count
// with the first ring, NAT with the other rings, and NAT without the drop
// rule and with the TX ring (each difference a row of its own).
func (r *dpRun) golvsRuns() []golvsRun {
	var out []golvsRun
	for i, ring := range r.c.Rings {
		for _, mode := range r.c.Modes {
			if i > 0 && mode != "nat" {
				continue
			}
			for _, w := range r.c.Workers {
				out = append(out, golvsRun{mode: mode, workers: w, ring: ring, spin: r.spin()})
			}
		}
	}
	if slices.Contains(r.c.Modes, "nat") {
		if !r.c.NoDropRow {
			out = append(out, golvsRun{mode: "nat", workers: r.c.Workers[0], ring: r.c.Rings[0], noDrop: true, spin: r.spin()})
		}
		if r.c.TxRingRow {
			out = append(out, golvsRun{mode: "nat", workers: r.c.Workers[0], ring: r.c.Rings[0], txRing: true, spin: r.spin()})
		}
	}
	if r.c.IPv6 {
		for _, mode := range r.c.Modes {
			out = append(out, golvsRun{mode: mode, workers: r.c.Workers[0], ring: r.c.Rings[0], v6: true, spin: r.spin()})
		}
	}
	return out
}

// planCPUs lays out the placements over the CPUs this process may use:
// the first CPU is the generator's in both.
func (r *dpRun) planCPUs() []*placement {
	var set unix.CPUSet
	var cpus []int
	if err := unix.SchedGetaffinity(0, &set); err == nil {
		for i := 0; i < 1024; i++ {
			if set.IsSet(i) {
				cpus = append(cpus, i)
			}
		}
	}
	r.rep.CPUs = len(cpus)
	if len(cpus) < 2 {
		r.rep.CPUs = max(r.rep.CPUs, 1)
		r.rep.Pinning = "none (one CPU: generator, director and kernel share it)"
		r.rep.Placements = []DPPlacement{{Name: "shared", What: "one CPU: everything on it"}}
		return []*placement{{name: "shared"}}
	}
	r.rep.Pinning = "sched_setaffinity for threads, RPS (rps_cpus in the namespaces) for the kernel's receive processing"
	first, rest := cpus[:1], cpus[1:]
	r.genCPU = first
	var out []*placement
	for _, name := range r.c.Placements {
		switch name {
		case placeSplit:
			// With three CPUs or more the lan bridge and the receivers
			// get their own, so the generator has one to itself.
			dir, rx := rest, first
			what := "generator, lan bridge (RPS) and receivers on CPU " + cpuList(first)
			if len(rest) >= 2 {
				dir, rx = rest[:len(rest)-1], rest[len(rest)-1:]
				what = fmt.Sprintf("generator on CPU %s, lan bridge (RPS) and receivers on CPU %s", cpuList(first), cpuList(rx))
			}
			out = append(out, &placement{name: name, genCPUs: first, dirCPUs: dir, rpsCPUs: dir, rxCPUs: rx})
			r.rep.Placements = append(r.rep.Placements, DPPlacement{Name: name, What: fmt.Sprintf(
				"all director work on CPU %s (its forwarding threads; the kernel's receive processing of ext0 through RPS); %s; the bench's other threads with the generator", cpuList(dir), what)})
		case placeInline:
			out = append(out, &placement{name: name, genCPUs: first, dirCPUs: first, rxCPUs: rest})
			r.rep.Placements = append(r.rep.Placements, DPPlacement{Name: name, What: fmt.Sprintf(
				"director work inline on the generator's CPU %s (its threads; ext0's receive processing in the generator's send, no RPS); lan bridge (RPS) and receivers on CPU %s",
				cpuList(first), cpuList(rest))})
		}
	}
	return out
}

// place moves the work to pl: RPS of ext0 and of the bridge's port from
// the director, the receivers' thread; the director's threads are pinned
// by each cell (pinDirector), the generator stays where it is.
func (r *dpRun) place(pl *placement) {
	r.pl = pl
	if pl.name == "shared" {
		return
	}
	if err := lab.SteerRPS(r.topo.Director, lab.DirExt, pl.rpsCPUs); err != nil {
		r.note("%s: RPS of %s not set (%v)", pl.name, lab.DirExt, err)
	}
	if err := lab.SteerRPS(r.topo.Switch, "p-dir", pl.rxCPUs); err != nil {
		r.note("%s: RPS of the lan bridge not set (%v)", pl.name, err)
	}
	if tid := r.rx.tid.Load(); tid != 0 {
		_ = unix.SchedSetaffinity(int(tid), cpuSet(pl.rxCPUs))
	}
}

func cpuList(c []int) string {
	s := make([]string, len(c))
	for i, v := range c {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ",")
}

func cpuSet(c []int) *unix.CPUSet {
	var s unix.CPUSet
	for _, v := range c {
		s.Set(v)
	}
	return &s
}

// pinGen pins the calling (locked) thread to the generator's CPU.
func (r *dpRun) pinGen() {
	if len(r.genCPU) > 0 {
		_ = unix.SchedSetaffinity(0, cpuSet(r.genCPU))
	}
}

// pinDirector puts the running forwarder's threads (golvs's workers, the
// netio ceiling's loop) on the placement's director CPUs, and every other
// thread of the process but the generator's and the receivers' (the
// bench's own, the Go runtime's, golvs's control plane) on the
// generator's CPUs; threads the runtime starts later inherit the mask of
// the threads that start them. The bench's threads once shared the
// director's CPU: the generator's pacing (a timer, handed from another
// thread to the generator's) then ran there just as each frame arrived,
// and at 1,000 frames/s added some 50 us to every golvs crossing that the
// kernel's forwarding, done in a softirq, did not pay.
func (r *dpRun) pinDirector() {
	if r.pl == nil || len(r.pl.dirCPUs) == 0 {
		return
	}
	pinAll(cpuSet(r.pl.genCPUs), []int32{r.gen.tid.Load(), r.rx.tid.Load()})
	if r.fwdThreads != nil {
		for _, tid := range r.fwdThreads() {
			_ = unix.SchedSetaffinity(tid, cpuSet(r.pl.dirCPUs))
		}
	}
	for _, tid := range r.kthreads {
		_ = unix.SchedSetaffinity(tid, cpuSet(r.pl.dirCPUs))
	}
}

// checkProcs notes a cell whose locked threads in this process (the
// generator, the receivers, and an in-process forwarder's: golvs's
// workers, the netio ceiling's loop) are more than the Ps reserved for
// them: one of them would then wait in the Go scheduler for another to
// give its P up, and the row would measure that (see ReserveProcs).
func (r *dpRun) checkProcs(name string, mix Mix) {
	locked := 2
	if r.fwdThreads != nil {
		locked += len(r.fwdThreads())
	}
	if got := runtime.GOMAXPROCS(0); got < r.procsBase+locked {
		r.note("%s/%s: GOMAXPROCS %d for %d locked threads beside the process's %d Ps: they waited for each other in the Go scheduler", name, mix, got, locked, r.procsBase)
	}
}

// pinAll sets the affinity of every thread but skip (nil set: all CPUs).
func pinAll(set *unix.CPUSet, skip []int32) {
	if set == nil {
		set = new(unix.CPUSet)
		for i := 0; i < runtime.NumCPU(); i++ {
			set.Set(i)
		}
	}
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
next:
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		for _, s := range skip {
			if int32(tid) == s {
				continue next
			}
		}
		_ = unix.SchedSetaffinity(tid, set)
	}
}

// setupPPS prepares the packet-rate measurements: the real servers get
// stand-in MACs (BenchMAC) so they drop the flood silently, a counting
// ring each, the client a generator, and the CPUs are split.
func (r *dpRun) setupPPS() error {
	t := r.topo
	var rings []*rxRing
	closeRings := func() {
		for _, rg := range rings {
			rg.close()
		}
	}
	for i, rs := range t.RS {
		n := i + 1
		err := lab.StaticNeigh(t.Director, lab.DirInt, lab.RIP(n), lab.BenchMAC(n))
		if err == nil && r.c.IPv6 {
			err = lab.StaticNeigh(t.Director, lab.DirInt, lab.RIP6(n), lab.BenchMAC(n))
		}
		if err == nil {
			err = lab.StaticFDB(t.Switch, fmt.Sprintf("p-rs%d", n), lab.BenchMAC(n))
		}
		if err == nil {
			err = rs.Do(func() error {
				ring, err := openRxRing("eth0")
				if err == nil {
					rings = append(rings, ring)
				}
				return err
			})
		}
		if err != nil {
			closeRings()
			return fmt.Errorf("bench dataplane: %w", err)
		}
	}
	var tx *netio.TxRing
	var cmac [6]byte
	err := t.Client.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		copy(cmac[:], ifi.HardwareAddr)
		tx, err = netio.OpenTxRing("eth0", netio.TxRingConfig{Frames: 4 * genBatch})
		return err
	})
	if err == nil {
		err = t.Director.Do(func() error {
			ifi, err := net.InterfaceByName(lab.DirExt)
			if err == nil {
				copy(r.dirMAC[:], ifi.HardwareAddr)
			}
			return err
		})
	}
	if err != nil {
		if tx != nil {
			tx.Close()
		}
		closeRings()
		return fmt.Errorf("bench dataplane: %w", err)
	}
	r.rx = newReceiver(rings)
	r.gen = newGenerator(tx, cmac, r.dirMAC, r.c.Size, newMonoClock())
	// The receivers and the generator each run on a locked thread of
	// their own: a P each (as golvs's workers have, and the netio
	// ceiling), so that neither waits for the Go scheduler to run, nor
	// makes a forwarder in this process wait (netio.ReserveProcs).
	r.procsBase = runtime.GOMAXPROCS(0)
	_, _, r.releaseProcs = netio.ReserveProcs(2)
	go r.rx.run(nil) // placed by place
	r.genJobs = make(chan genJob)
	started := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		r.gen.tid.Store(int32(unix.Gettid()))
		genThread()
		r.pinGen()
		close(started)
		for j := range r.genJobs {
			j.res <- r.gen.run(j.plan, j.tag, j.rate, j.d, j.max)
		}
	}()
	<-started
	for r.rx.tid.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	return nil
}

func (r *dpRun) closePPS() {
	if r.genJobs != nil {
		close(r.genJobs)
	}
	if r.gen != nil {
		r.gen.tx.Close()
	}
	if r.rx != nil {
		r.rx.close()
	}
	if r.releaseProcs != nil {
		r.releaseProcs()
	}
}

func (r *dpRun) send(plan *flowPlan, tag uint16, rate float64, d time.Duration, max uint64) genResult {
	res := make(chan genResult)
	r.genJobs <- genJob{plan: plan, tag: tag, rate: rate, d: d, max: max, res: res}
	return <-res
}

// targets returns the destination addresses frames go to: the VIP, or
// the real servers' addresses (a plain router).
func (r *dpRun) targets(direct bool) [][4]byte {
	if !direct {
		return [][4]byte{lab.VIP.As4()}
	}
	var t [][4]byte
	for i := range r.topo.RS {
		t = append(t, lab.RIP(i+1).As4())
	}
	return t
}

// cell measures one forwarder (already running) on one mix.
func (r *dpRun) cell(name string, mix Mix, direct, noOpen bool) DPCell {
	c := r.c
	r.progress(name + " " + string(mix))
	r.pinDirector()
	r.checkProcs(name, mix)
	plan := &flowPlan{mix: mix, flows: c.Flows, targets: r.targets(direct), next: r.synNext}
	if r.v6 {
		plan.v6, plan.targets6 = true, [][16]byte{lab.VIP6.As16()}
	}
	if mix == MixEst && !noOpen {
		// Open the set first: a SYN per flow, twice, at a pace the
		// slowest forwarder keeps up with.
		open := *plan
		open.open = true
		var before map[string]uint64
		if r.counters != nil {
			before = r.counters()
		}
		r.send(&open, 0xffff, 100_000, 10*time.Second, uint64(2*c.Flows))
		time.Sleep(50 * time.Millisecond)
		if r.counters != nil {
			// A flow whose SYNs were both lost has no conn: its ACKs
			// count as no-conn and as lost frames in every measurement.
			if n := r.counters()["ring-drops"] - before["ring-drops"]; n > 0 {
				r.note("%s: opening the est flows lost %d of %d SYNs in the director's rings (ring-drops): flows without a conn count as lost frames", name, n, 2*c.Flows)
			}
		}
	}
	r.tag++
	if r.tag == 0xffff {
		r.tag = 1
	}
	r.rx.take(r.tag)
	sink := name == fwdSink
	var rx0 uint64
	if sink {
		rx0 = r.linkRx()
	}
	cpu0 := r.dirCPU()
	var cnt0 map[string]uint64
	if r.counters != nil {
		cnt0 = r.counters()
	}
	g := r.send(plan, r.tag, c.Rate, c.Duration, c.MaxPackets)
	cpu := r.cpuSince(cpu0)
	r.synNext = plan.next
	time.Sleep(dpDrain)
	st := r.rx.take(0)
	if sink {
		// Nothing forwards: what counts is what reached the director
		// (its counter also counts the odd ARP or neighbour frame).
		st = &rxStats{Recv: min(r.linkRx()-rx0, g.Sent)}
	}
	lossless, atLossless := Num(math.NaN()), noCPU
	if c.Rate == 0 && !sink && !c.NoSearch && r.pl == r.places[0] && st.Recv > 0 {
		lossless, atLossless = r.search(plan, float64(st.Recv)/g.Elapsed.Seconds(), float64(g.Sent)/g.Elapsed.Seconds())
	}
	lat := st
	measured := false
	if c.Rate == 0 && c.LatRate > 0 && !sink && r.pl == r.places[0] {
		measured = true
		// Flat out, latency is the depth of the fullest queue. Measure
		// it again below saturation, where it means the forwarder's own.
		r.tag++
		r.rx.take(r.tag)
		r.send(plan, r.tag, c.LatRate, min(c.Duration, time.Second), c.MaxPackets)
		r.synNext = plan.next
		time.Sleep(dpDrain)
		lat = r.rx.take(0)
	}
	cl := DPCell{Forwarder: name, Placement: r.pl.name, Mix: mix, Sent: g.Sent, SendErrors: g.Errors, Received: st.Recv, PerRS: st.PerRS,
		Seconds: g.Elapsed.Seconds()}
	cl.SentPPS = Num(float64(g.Sent) / g.Elapsed.Seconds())
	cl.FwdPPS = Num(float64(st.Recv) / g.Elapsed.Seconds())
	cl.Loss = Num(1 - float64(st.Recv)/float64(g.Sent))
	cl.LatLoss = Num(math.NaN())
	cl.LosslessPPS, cl.LosslessCPUus, cl.LosslessBusy = lossless, atLossless.perFrame, atLossless.busy
	if r.counters != nil {
		// The flat-out run's, as golvs's counters are.
		for k, v := range r.counters() {
			if n := v - cnt0[k]; n > 0 {
				if cl.Drops == nil {
					cl.Drops = map[string]uint64{}
				}
				cl.Drops[k] = n
			}
		}
	}
	u := noCPU
	if !sink {
		u = r.useOf(cpu, g.Elapsed, st.Recv)
	}
	cl.CPUus, cl.CPUBusy = u.perFrame, u.busy
	if !measured && c.Rate == 0 && c.LatRate > 0 {
		// Not measured below saturation here (the latency rate runs in
		// the first placement only): flat-out queueing says nothing.
		lat = &rxStats{}
	}
	cl.P50us = Num(lat.Hist.percentile(50) / 1e3)
	cl.P90us = Num(lat.Hist.percentile(90) / 1e3)
	cl.P99us = Num(lat.Hist.percentile(99) / 1e3)
	if measured {
		cl.LatRate = c.LatRate
		cl.LatLoss = Num(1 - float64(lat.Recv)/(c.LatRate*min(c.Duration, time.Second).Seconds()))
	}
	return cl
}

// The lossless-rate search: searchSteps offers of searchStep each.
const (
	searchSteps = 8
	searchStep  = 400 * time.Millisecond
	searchLoss  = 0.01
)

// search bisects the offered rate for the highest one forwarded with at
// most searchLoss lost, starting from what the forwarder managed flat out
// (fwd) below what the generator offered (sent). Flat out, a forwarder
// that cannot keep up is measured in overload, where what it forwards
// depends on how the CPU is split between the kernel's receive processing
// of frames it will drop and the forwarder itself (and, on two CPUs, on
// how fast the generator is then); the lossless rate does not.
func (r *dpRun) search(plan *flowPlan, fwd, sent float64) (Num, cpuUse) {
	lo, hi := 0.0, max(sent, fwd)
	at := noCPU
	rate := fwd
	for i := 0; i < searchSteps; i++ {
		rate = max(rate, MinDPRate)
		r.tag++
		if r.tag == 0xffff {
			r.tag = 1
		}
		r.rx.take(r.tag)
		cpu0 := r.dirCPU()
		g := r.send(plan, r.tag, rate, min(searchStep, r.c.Duration), r.c.MaxPackets)
		cpu := r.cpuSince(cpu0)
		r.synNext = plan.next
		time.Sleep(dpDrain)
		st := r.rx.take(0)
		if g.Sent > 0 && float64(st.Recv) >= float64(g.Sent)*(1-searchLoss) {
			if got := float64(g.Sent) / g.Elapsed.Seconds(); got > lo {
				lo, at = got, r.useOf(cpu, g.Elapsed, st.Recv)
			}
		} else {
			hi = rate
		}
		rate = (lo + hi) / 2
	}
	if lo == 0 {
		return Num(math.NaN()), at
	}
	return Num(lo), at
}

// cpuUse is the director's CPU during a measurement (split placement).
type cpuUse struct {
	perFrame Num // microseconds a forwarded frame
	busy     Num // the share of the director's CPUs busy
}

// noCPU is a cpuUse not measured.
var noCPU = cpuUse{Num(math.NaN()), Num(math.NaN())}

// useOf turns the director's CPU time over el, in which recv frames
// were forwarded, into a cpuUse (NaN where not measured).
func (r *dpRun) useOf(cpu, el time.Duration, recv uint64) cpuUse {
	u := noCPU
	if cpu <= 0 || r.pl == nil || len(r.pl.dirCPUs) == 0 {
		return u
	}
	if recv > 0 {
		u.perFrame = Num(float64(cpu.Microseconds()) / float64(recv))
	}
	if el > 0 {
		u.busy = Num(min(cpu.Seconds()/(el.Seconds()*float64(len(r.pl.dirCPUs))), 1))
	}
	return u
}

// linkRx returns the frames the director's ext0 has received (its kernel
// counter), 0 when it cannot be read.
func (r *dpRun) linkRx() uint64 {
	var n uint64
	_ = r.topo.Director.Do(func() error {
		l, err := netlink.LinkByName(lab.DirExt)
		if err == nil && l.Attrs().Statistics != nil {
			n = l.Attrs().Statistics.RxPackets
		}
		return err
	})
	return n
}

// fwdSink names the generator's own ceiling: its frames sent into the
// director with nothing forwarding them, counted by ext0's receive
// counter (the director's kernel drops them: not local, forwarding off).
const fwdSink = "generator-sink"

// startSink runs nothing: the director's kernel drops the frames.
func startSink(*dpRun) (func(), error) { return func() {}, nil }

// reference is a forwarder golvs is compared with.
type reference struct {
	name   string
	direct bool // frames go to the real servers' addresses, not the VIP
	// noOpen: the est mix's flows are not opened with SYNs first (see
	// startNFT).
	noOpen   bool
	optional bool // a peer: one that does not start is skipped
	perCell  bool // started afresh for each mix
	// splitOnly: measured in the split placement only.
	splitOnly bool
	start     func(r *dpRun) (stop func(), err error)
}

func (ref *reference) run(r *dpRun) error {
	if ref.perCell {
		for _, mix := range r.c.Mixes {
			if err := ref.runMixes(r, []Mix{mix}); err != nil {
				return err
			}
		}
		return nil
	}
	return ref.runMixes(r, r.c.Mixes)
}

func (ref *reference) runMixes(r *dpRun, mixes []Mix) error {
	r.peerExit = ""
	stop, err := ref.start(r)
	if err != nil && ref.optional {
		// A peer that does not start is a missing reference, not a
		// failed run.
		r.skip(ref.name+" "+string(mixes[0]), fmt.Sprintf("did not start: %v", err))
		r.step += len(mixes)
		return nil
	}
	if err != nil {
		return fmt.Errorf("bench dataplane: starting %s: %w", ref.name, err)
	}
	for _, mix := range mixes {
		r.rep.Cells = append(r.rep.Cells, r.cell(ref.name, mix, ref.direct, ref.noOpen))
	}
	stop()
	if r.peerExit != "" {
		r.note("%s exited during %s, its row counts what it forwarded until then: %s", ref.name, mixes[0], r.peerExit)
	}
	return nil
}

// references lists the packet-rate references this host can run and
// records the optional peers it lacks as skipped, with the package that
// would bring them.
// allRefs names every packet-rate reference, in the order they run.
var allRefs = []string{fwdSink, "kernel-forward", "netio-ceiling", refXDP, peerNFT, peerNetsniff}

func (r *dpRun) references(pf peerFinder) (out []*reference) {
	defer func() {
		if r.c.Refs == nil {
			return
		}
		kept := out[:0]
		for _, ref := range out {
			if slices.Contains(r.c.Refs, ref.name) {
				kept = append(kept, ref)
			}
		}
		out = kept
	}()
	refs := []*reference{
		{name: fwdSink, noOpen: true, start: startSink},
		{name: "kernel-forward", direct: true, start: startKernelForward},
		{name: "netio-ceiling", start: startCeiling},
		// Optional: a kernel without AF_XDP or XDP on veth skips it.
		{name: refXDP, optional: true, splitOnly: true, start: startXDPCeiling},
	}
	var skips []DPSkip
	r.peers, r.nginxModule, skips = pf.find()
	r.rsNginx, _ = pf.look("nginx")
	if p, err := pf.look("wrk"); err == nil {
		r.wrk = p
	}
	if p, err := pf.look("curl"); err == nil {
		r.curl = p
	}
	r.rep.Skipped = append(r.rep.Skipped, skips...)
	if _, ok := r.peers[peerNFT]; ok {
		refs = append(refs, &reference{name: peerNFT, noOpen: true, optional: true, start: startNFT})
	}
	if _, ok := r.peers[peerNetsniff]; ok {
		refs = append(refs, &reference{name: peerNetsniff, optional: true, perCell: true, start: startNetsniff})
	}
	return refs
}

// proxies lists the TCP proxy peers this host has, in order.
func (r *dpRun) proxies() []string {
	var p []string
	for _, n := range []string{peerHAProxy, peerNginx} {
		if _, ok := r.peers[n]; ok {
			p = append(p, n)
		}
	}
	return p
}

func (r *dpRun) skip(name, why string) {
	r.rep.Skipped = append(r.rep.Skipped, DPSkip{Name: name, Reason: why})
}

// startKernelForward makes the director's kernel a plain router.
func startKernelForward(r *dpRun) (func(), error) {
	if _, err := lab.WriteSysctl(r.topo.Director, "net/ipv4/ip_forward", "1"); err != nil {
		return nil, err
	}
	return func() { _, _ = lab.WriteSysctl(r.topo.Director, "net/ipv4/ip_forward", "0") }, nil
}

// rsMACs are the real servers' MACs, in turn for the ceilings.
func (r *dpRun) rsMACs() [][6]byte {
	var out [][6]byte
	for i := range r.topo.RS {
		var m [6]byte
		copy(m[:], lab.BenchMAC(i+1))
		out = append(out, m)
	}
	return out
}

// startCeiling runs the netio ceiling forwarder in the director.
func startCeiling(r *dpRun) (func(), error) {
	// golvs's rows look for frames before they sleep (--busy-poll): a
	// ceiling that slept at once would be no ceiling for them.
	f := &ceilingForwarder{spin: r.spin(), dsts: r.rsMACs()}
	err := r.topo.Director.Do(func() error {
		ifi, err := net.InterfaceByName(lab.DirInt)
		if err != nil {
			return err
		}
		copy(f.src[:], ifi.HardwareAddr)
		flt, err := netio.BuildFilter([]netio.Match{{Addr: lab.VIP.As4()}}, nil, false)
		if err != nil {
			return err
		}
		// The receive path golvs has: a fanout group (of one).
		if f.in, err = netio.OpenRing(lab.DirExt, netio.RingConfig{Filter: flt, Fanout: netio.NewFanout(netio.FanoutCPU)}); err != nil {
			return err
		}
		if f.out, err = netio.OpenTx(lab.DirInt); err != nil {
			f.in.Close()
			return err
		}
		// And golvs's drop rule, for the frames it forwards, so the
		// kernel does not run them through IP as well.
		f.drop, err = netio.OpenDropRule([]string{lab.DirExt})
		if err == nil {
			err = f.drop.Set([]netio.Match{{Addr: lab.VIP.As4()}}, nil)
		}
		if errors.Is(err, netio.ErrNoNftables) {
			r.note("netio-ceiling: no drop rule (%v): the kernel also runs its frames through IP", err)
			f.drop, err = nil, nil
		}
		if err != nil {
			f.close()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return r.startLoop(f.run, f.counters, f.close), nil
}

// startLoop runs an in-process reference forwarder's loop (run) on its
// own locked thread, makes its counters and thread the run's, and
// returns its stop: the loop ends, its P goes back, then closeFn.
func (r *dpRun) startLoop(run func(stop <-chan struct{}, tid chan<- int), counters func() map[string]uint64, closeFn func()) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	tid := make(chan int, 1)
	// A P for its locked thread, as golvs's workers have one each: without
	// it the ceiling, the generator and the receivers, three locked
	// threads, shared two Ps on a 2-CPU host, and each waited in the Go
	// scheduler for one of the others to give its P up.
	_, _, release := netio.ReserveProcs(1)
	go func() {
		defer close(done)
		run(quit, tid)
	}()
	// Its thread, which pinDirector puts on the director's CPUs.
	t := <-tid
	r.counters = counters
	r.fwdThreads = func() []int { return []int{t} }
	return func() { close(quit); <-done; release(); r.counters, r.fwdThreads = nil, nil; closeFn() }
}

// refXDP is the AF_XDP reference's row (see xdpfwd.go).
const refXDP = "xdp-ceiling"

// startXDPCeiling runs the AF_XDP reference forwarder in the director,
// as startCeiling runs netio's.
func startXDPCeiling(r *dpRun) (func(), error) {
	f := &xdpForwarder{spin: r.spin(), dsts: r.rsMACs()}
	err := r.topo.Director.Do(func() error {
		in, err := netlink.LinkByName(lab.DirExt)
		if err != nil {
			return err
		}
		out, err := netlink.LinkByName(lab.DirInt)
		if err != nil {
			return err
		}
		copy(f.src[:], out.Attrs().HardwareAddr)
		return f.open(in.Attrs().Index, out.Attrs().Index, max(in.Attrs().NumRxQueues, 1), lab.VIP)
	})
	if err != nil {
		return nil, err
	}
	// With XDP, veth receives in a NAPI poll scheduled on the sender's
	// CPU (the generator's), which RPS does not move. Threaded NAPI makes
	// it a kernel thread, which pinDirector puts on the director's CPUs
	// with the forwarder: the split placement then holds all the
	// director's work, as for the other rows.
	threaded := func(on string) error {
		return lab.WriteSysfs(r.topo.Director, "class/net/"+lab.DirExt+"/threaded", on)
	}
	// Off (before the program goes: the setting is refused on a link
	// without a NAPI instance), then the forwarder closed.
	closeAll := func() {
		r.kthreads = nil
		if err := threaded("0"); err != nil {
			r.note("%s: threaded NAPI left on: %v", refXDP, err)
		}
		f.close()
	}
	if err := threaded("1"); err != nil {
		f.close()
		return nil, err
	}
	if r.kthreads, err = kthreads("napi/" + lab.DirExt + "-"); err == nil && len(r.kthreads) == 0 {
		err = fmt.Errorf("no NAPI thread napi/%s-* after threaded NAPI was set", lab.DirExt)
	}
	if err != nil {
		closeAll()
		return nil, err
	}
	return r.startLoop(f.run, f.counters, closeAll), nil
}

// kthreads returns the IDs of the kernel threads whose names start with
// prefix.
func kthreads(prefix string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err == nil && strings.HasPrefix(string(b), prefix) {
			out = append(out, pid)
		}
	}
	return out, nil
}

// startNFT makes the director's kernel a NAT: nftables DNAT with
// conntrack, spreading new flows over the real servers in turn. The table
// lives in the director's namespace only and is deleted by stop.
//
// The est mix does not open its flows with SYNs here: the real servers
// never answer, and conntrack marks an ACK that follows an unanswered SYN
// invalid (SYN_SENT + ACK), which leaves it un-NATed. With
// nf_conntrack_tcp_loose (set here, the default) conntrack takes each flow
// up as established from its first ACK instead, and every later frame is
// a lookup of an established entry, as in golvs's est.
func startNFT(r *dpRun) (func(), error) {
	bin := r.peers[peerNFT]
	var m []string
	for i := range r.topo.RS {
		m = append(m, fmt.Sprintf("%d : %s", i, lab.RIP(i+1)))
	}
	mp := fmt.Sprintf("numgen inc mod %d map { %s }", len(m), strings.Join(m, ", "))
	rules := fmt.Sprintf(`table ip golvsbench {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %[1]s tcp dport 80 dnat to %[2]s
		ip daddr %[1]s udp dport 53 dnat to %[2]s
	}
}
`, lab.VIP, mp)
	nft := func(stdin string, args ...string) error {
		return r.topo.Director.Do(func() error {
			cmd := exec.Command(bin, args...)
			cmd.Stdin = strings.NewReader(stdin)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("nft %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
			}
			return nil
		})
	}
	if err := nft(rules, "-f", "-"); err != nil {
		return nil, err
	}
	// Per-namespace conntrack settings, there once the NAT table loaded
	// conntrack; put back by stop.
	var restore []func()
	undo := func() {
		for i := len(restore) - 1; i >= 0; i-- {
			restore[i]()
		}
	}
	for _, kv := range [][2]string{
		{"net/ipv4/ip_forward", "1"},
		{"net/netfilter/nf_conntrack_tcp_loose", "1"},
		{"net/netfilter/nf_conntrack_tcp_be_liberal", "1"}, // the generator's sequence numbers are not a real stream's
	} {
		old, err := lab.WriteSysctl(r.topo.Director, kv[0], kv[1])
		if err != nil {
			undo()
			_ = nft("", "delete", "table", "ip", "golvsbench")
			return nil, err
		}
		restore = append(restore, func() { _, _ = lab.WriteSysctl(r.topo.Director, kv[0], old) })
	}
	return func() {
		var count, maxc int
		_ = r.topo.Director.Do(func() error {
			count = readInt("/proc/sys/net/netfilter/nf_conntrack_count")
			maxc = readInt("/proc/sys/net/netfilter/nf_conntrack_max")
			return nil
		})
		if maxc > 0 && count >= maxc*9/10 {
			r.note("nft-dnat: the director's conntrack table held %d entries at the end, nf_conntrack_max is %d (the host's): new flows evicted unreplied ones or were dropped", count, maxc)
		}
		undo()
		if err := nft("", "delete", "table", "ip", "golvsbench"); err != nil {
			r.note("nft-dnat: %v", err)
		}
	}, nil
}

func readInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// golvsDir is a director running in the lab.
type golvsDir struct {
	d    *director.Director
	stop func()
}

// startGolvs starts a director with TCP VIP:80 and UDP VIP:53 services,
// one dest per real server with the mode's method, and waits for its next
// hops.
func (r *dpRun) startGolvs(g golvsRun) (*golvsDir, error) {
	method := dpModes[g.mode]
	vip, rip := lab.VIP, lab.RIP
	if g.v6 {
		vip, rip = lab.VIP6, lab.RIP6
	}
	cfg := director.Config{
		Interfaces: []director.Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}},
		Workers:    g.workers,
		Conntrack:  conntrack.Config{MaxEntries: dpConntrackMax},
		FixHost:    true,
		Ring:       netio.RingConfig{Version: g.ring},
		NoDropRule: g.noDrop,
		TxRing:     g.txRing,
		Spin:       g.spin,
	}
	if g.next {
		cfg.Fanout = netio.FanoutNext
	}
	if method == ipvs.MethodFullNAT {
		for i := 0; i < 4; i++ {
			cfg.LocalAddrs = append(cfg.LocalAddrs, lab.LIP(i))
			if g.v6 {
				cfg.LocalAddrs = append(cfg.LocalAddrs, lab.LIP6(i))
			}
		}
	}
	var d *director.Director
	err := r.topo.Director.Do(func() (err error) {
		d, err = director.New(cfg)
		if err != nil {
			return err
		}
		if method == ipvs.MethodFullNAT {
			return d.SetLocalAddrs(cfg.LocalAddrs, 0, 0)
		}
		return nil
	})
	if err != nil {
		if d != nil {
			d.Close()
		}
		return nil, err
	}
	svcs := []ipvs.ServiceConfig{
		{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}, Sched: "rr"},
		{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: vip, Port: 53}, Sched: "rr"},
	}
	for _, s := range svcs {
		err := d.AddService(s)
		for i := range r.topo.RS {
			if err != nil {
				break
			}
			err = d.AddDest(s.ServiceKey, ipvs.DestConfig{Addr: rip(i + 1), Port: s.Port, Method: method, Weight: 1})
		}
		if err != nil {
			d.Close()
			return nil, err
		}
	}
	return runGolvs(d)
}

// runGolvs runs a configured director and waits for its next hops.
func runGolvs(d *director.Director) (*golvsDir, error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	stop := func() { cancel(); <-done }
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := d.WaitResolved(wctx); err != nil {
		stop()
		return nil, err
	}
	// The workers' threads, for pinning (pinDirector).
	for len(d.WorkerThreads()) < d.Workers() {
		if wctx.Err() != nil {
			stop()
			return nil, fmt.Errorf("golvs's workers did not start: %w", wctx.Err())
		}
		time.Sleep(time.Millisecond)
	}
	return &golvsDir{d: d, stop: stop}, nil
}

// loadGenSysctls gives a namespace of the bench's own every port and
// TIME_WAIT reuse (see RunDataplane).
func loadGenSysctls(ns *lab.NS) error {
	for _, kv := range [][2]string{{"net/ipv4/ip_local_port_range", "1024\t65535"}, {"net/ipv4/tcp_tw_reuse", "1"}} {
		if _, err := lab.WriteSysctl(ns, kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// golvsCells measures golvs in one configuration, each mix on a director
// started afresh: a mix meets an empty connection table and a full FULLNAT
// port pool, not what the mix before it left (the syn mix's SYN_RECV
// conns hold their local ports for a minute, which left FULLNAT's est
// mix no port to open its flows with).
func (r *dpRun) golvsCells(gr golvsRun) error {
	name := gr.name()
	r.v6 = gr.v6
	defer func() { r.v6 = false }()
	for _, mix := range r.c.Mixes {
		g, err := r.startGolvs(gr)
		if err != nil {
			r.skip(r.pl.name+" "+name+" "+string(mix), fmt.Sprintf("director did not start: %v", err))
			r.step++
			continue
		}
		r.counters = func() map[string]uint64 { return golvsCounters(g.d) }
		r.fwdThreads = g.d.WorkerThreads
		cl := r.cell(name, mix, false, false)
		r.counters, r.fwdThreads = nil, nil
		g.stop()
		cl.Golvs, cl.Mode, cl.Workers, cl.Ring, cl.NoDropRule = true, gr.mode, gr.workers, gr.ring, gr.noDrop
		r.rep.Cells = append(r.rep.Cells, cl)
	}
	return nil
}

// ratios divides every golvs cell by every reference cell of its mix and
// placement.
func (r *dpRun) ratios() {
	for _, g := range r.rep.Cells {
		if !g.Golvs {
			continue
		}
		for _, ref := range r.rep.Cells {
			// The references, and golvs's own variants of this row
			// (golvs-nat-w1 against -v3, -nodrop, -txring).
			variant := ref.Golvs && strings.HasPrefix(ref.Forwarder, g.Forwarder+"-")
			if ref.Golvs && !variant || ref.Mix != g.Mix || ref.Placement != g.Placement {
				continue
			}
			r.rep.Ratios = append(r.rep.Ratios, DPRatio{Golvs: g.Forwarder, Reference: ref.Forwarder, Placement: g.Placement, Mix: g.Mix,
				PPS: Num(float64(g.FwdPPS) / float64(ref.FwdPPS)), P99: Num(float64(g.P99us) / float64(ref.P99us)),
				Lossless:    g.LosslessPPS / ref.LosslessPPS,
				AddedP50us:  g.P50us - ref.P50us,
				CPUPerFrame: g.LosslessCPUus / ref.LosslessCPUus, RefBusy: ref.LosslessBusy})
		}
	}
}
