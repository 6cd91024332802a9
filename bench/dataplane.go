package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

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
	MaxDPConns      = 100_000
	MaxStreamBytes  = 64 << 20 // what lab.Serve answers at most
	dpConnTime      = 5 * time.Second
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
	Conns       int // TCP connections of the connection-rate test
	StreamBytes int // bytes of the single-stream test
	Ring        int // golvs's receive ring version (2 or 3; 0: 2)
	CPUProfile  string
	Progress    func(done, total int, what string)
}

// Validate checks every limit and names the one that is broken.
func (c *DataplaneConfig) Validate() error {
	switch {
	case c.Ring != 0 && c.Ring != 2 && c.Ring != 3:
		return fmt.Errorf("bench dataplane: --ring %d: allowed 2 or 3", c.Ring)
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
	case c.Conns < 0 || c.Conns > MaxDPConns:
		return fmt.Errorf("bench dataplane: --conns %d out of range (allowed: 0..%d; 0 skips the TCP tests)", c.Conns, MaxDPConns)
	case c.StreamBytes < 0 || c.StreamBytes > MaxStreamBytes:
		return fmt.Errorf("bench dataplane: --stream-bytes %d out of range (allowed: 0..%d; 0 skips the stream test)", c.StreamBytes, MaxStreamBytes)
	case len(c.Workers) == 0:
		return errors.New("bench dataplane: --workers is empty (want a list such as 1,2)")
	case len(c.Mixes) == 0:
		return errors.New("bench dataplane: --mix is empty (want syn, est, udp)")
	case len(c.Modes) == 0:
		return errors.New("bench dataplane: --modes is empty (want nat, dr, tun, fullnat)")
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
	Forwarder  string            `json:"forwarder"` // golvs-nat-w1, kernel-forward, netio-ceiling, nft-dnat
	Golvs      bool              `json:"golvs"`
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
}

// DPRatio is a golvs cell over a reference cell of the same mix.
type DPRatio struct {
	Golvs     string `json:"golvs"`
	Reference string `json:"reference"`
	Mix       Mix    `json:"mix"`
	PPS       Num    `json:"pps_ratio"`
	P99       Num    `json:"p99_ratio"`
}

// DPTCP is the TCP test of one path.
type DPTCP struct {
	Path        string  `json:"path"` // direct (kernel routing) or golvs-nat-wN
	Conns       int     `json:"conns"`
	Failed      int     `json:"failed"`
	CPS         Num     `json:"conns_per_s"`
	StreamBytes int     `json:"stream_bytes"`
	StreamMBps  Num     `json:"stream_MBps"`
	Error       string  `json:"error,omitempty"`
	Seconds     float64 `json:"seconds"`
}

// DPSkip is a reference or mode that was not measured, and why.
type DPSkip struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// DataplaneReport is the outcome of one run.
type DataplaneReport struct {
	Topology    string    `json:"topology"`
	CPUs        int       `json:"cpus"`
	Pinning     string    `json:"pinning"`
	Duration    float64   `json:"duration_s"`
	Rate        float64   `json:"rate_pps"` // 0: flat out
	LatRate     float64   `json:"latency_rate_pps"`
	Size        int       `json:"frame_bytes"`
	Flows       int       `json:"flows"`
	RealServers int       `json:"real_servers"`
	Cells       []DPCell  `json:"cells"`
	Ratios      []DPRatio `json:"ratios"`
	TCP         []DPTCP   `json:"tcp"`
	TCPRatios   []DPRatio `json:"tcp_ratios"`
	Skipped     []DPSkip  `json:"skipped"`
	Notes       []string  `json:"notes"`
}

// dpRun is the state of a run: the lab and the instruments in it.
type dpRun struct {
	c        DataplaneConfig
	rep      *DataplaneReport
	topo     *lab.Topology
	gen      *generator
	genJobs  chan genJob
	rx       *receiver
	tag      uint16
	synNext  uint64
	dirMAC   [6]byte
	genCPUs  []int
	dirCPUs  []int
	step     int
	steps    int
	fwdSaved string
	peers    map[string]string // optional peers this host has: name -> path
	// nginxModule is the stream module nginx loads ("": built in).
	nginxModule string
	peerExit    string // set by a peer's stop: what it said when it had exited by itself
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
	r.planCPUs()
	topo, err := lab.BuildNAT(lab.Options{Suffix: lab.RandomSuffix(), RealServers: c.RealServers})
	if err != nil {
		return nil, fmt.Errorf("bench dataplane: %w", err)
	}
	r.topo = topo
	defer topo.Close()
	defer pinAll(nil, nil) // every thread back on every CPU

	refs := r.references(hostPeers)
	golvsRuns := len(c.Workers) * len(c.Modes)
	proxies := r.proxies()
	r.steps = 4 + 2*len(proxies) + (len(refs)+golvsRuns)*len(c.Mixes)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i, rs := range topo.RS {
		if _, err := lab.Serve(ctx, rs, fmt.Sprintf("rs%d", i+1), []int{80}, []int{53}); err != nil {
			return nil, fmt.Errorf("bench dataplane: %w", err)
		}
	}
	if err := lab.RouteVia(topo.Client, netip.PrefixFrom(lab.DirIntIP, 24).Masked(), lab.DirExtIP); err != nil {
		return nil, fmt.Errorf("bench dataplane: %w", err)
	}
	if r.fwdSaved, err = lab.WriteSysctl(topo.Director, "net/ipv4/ip_forward", "0"); err != nil {
		return nil, fmt.Errorf("bench dataplane: %w", err)
	}
	if c.Conns > 0 || c.StreamBytes > 0 {
		if err := r.tcpTests(proxies); err != nil {
			return nil, err
		}
	} else {
		r.step += 4 + 2*len(proxies)
		for _, p := range proxies {
			r.skip(p, "the TCP tests are off (--conns 0 --stream-bytes 0)")
		}
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
	for _, ref := range refs {
		if err := ref.run(r); err != nil {
			return nil, err
		}
	}
	for _, mode := range c.Modes {
		for _, w := range c.Workers {
			if err := r.golvsCells(mode, w); err != nil {
				return nil, err
			}
		}
	}
	r.ratios()
	for _, cl := range rep.Cells {
		if !cl.Golvs && c.Rate == 0 && float64(cl.Loss) < 0.01 {
			r.note("%s/%s lost %.1f%% flat out: the generator, not it, set the rate; golvs's ratio to it is an upper bound", cl.Forwarder, cl.Mix, float64(cl.Loss)*100)
		}
	}
	return rep, nil
}

// planCPUs splits the CPUs this process may use: the first for the
// client side (generator, receivers, the bridge), the others for the
// director (golvs's workers, the kernel's forwarding through RPS, the
// netio ceiling).
func (r *dpRun) planCPUs() {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		r.rep.CPUs = runtime.NumCPU()
		r.rep.Pinning = "none (sched_getaffinity: " + err.Error() + ")"
		return
	}
	var cpus []int
	for i := 0; i < 1024; i++ {
		if set.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	r.rep.CPUs = len(cpus)
	if len(cpus) < 2 {
		r.rep.Pinning = "none (one CPU: generator, director and kernel share it)"
		return
	}
	r.genCPUs, r.dirCPUs = cpus[:1], cpus[1:]
	r.rep.Pinning = fmt.Sprintf("generator, receivers and the lan bridge (RPS) on CPU %s; director on CPU %s: golvs workers and every other thread of this process (sched_setaffinity), the kernel's receive processing on ext0 (RPS)",
		cpuList(r.genCPUs), cpuList(r.dirCPUs))
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

// pinSelf pins the calling (locked) thread to the client-side CPUs.
func (r *dpRun) pinSelf() {
	if len(r.genCPUs) > 0 {
		_ = unix.SchedSetaffinity(0, cpuSet(r.genCPUs))
	}
}

// pinDirector puts every thread of the process except the generator's and
// the receivers' on the director's CPUs. golvs's workers are goroutines
// locked to threads the director starts; they are found this way without
// reaching into the director, and threads the runtime starts later inherit
// the mask from the threads that start them.
func (r *dpRun) pinDirector() {
	if len(r.dirCPUs) == 0 {
		return
	}
	pinAll(cpuSet(r.dirCPUs), []int32{r.gen.tid.Load(), r.rx.tid.Load()})
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
	var tx *netio.Tx
	var cmac [6]byte
	err := t.Client.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		copy(cmac[:], ifi.HardwareAddr)
		tx, err = netio.OpenTx("eth0")
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
	if len(r.dirCPUs) > 0 {
		if err := lab.SteerRPS(t.Director, lab.DirExt, r.dirCPUs); err != nil {
			r.note("RPS not set (%v): the kernel's receive processing stays on the sending CPU", err)
		}
		if err := lab.SteerRPS(t.Switch, "p-dir", r.genCPUs); err != nil {
			r.note("RPS not set (%v): the bridge runs on the director's CPU", err)
		}
	}
	go r.rx.run(r.pinSelf)
	r.genJobs = make(chan genJob)
	started := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		r.gen.tid.Store(int32(unix.Gettid()))
		r.pinSelf()
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
	plan := &flowPlan{mix: mix, flows: c.Flows, targets: r.targets(direct), next: r.synNext}
	if mix == MixEst && !noOpen {
		// Open the set first: a SYN per flow, twice, at a pace the
		// slowest forwarder keeps up with.
		open := *plan
		open.open = true
		r.send(&open, 0xffff, 100_000, 10*time.Second, uint64(2*c.Flows))
		time.Sleep(50 * time.Millisecond)
	}
	r.tag++
	if r.tag == 0xffff {
		r.tag = 1
	}
	r.rx.take(r.tag)
	g := r.send(plan, r.tag, c.Rate, c.Duration, c.MaxPackets)
	r.synNext = plan.next
	time.Sleep(dpDrain)
	st := r.rx.take(0)
	lat := st
	if c.Rate == 0 && c.LatRate > 0 {
		// Flat out, latency is the depth of the fullest queue. Measure
		// it again below saturation, where it means the forwarder's own.
		r.tag++
		r.rx.take(r.tag)
		r.send(plan, r.tag, c.LatRate, min(c.Duration, time.Second), c.MaxPackets)
		r.synNext = plan.next
		time.Sleep(dpDrain)
		lat = r.rx.take(0)
	}
	cl := DPCell{Forwarder: name, Mix: mix, Sent: g.Sent, SendErrors: g.Errors, Received: st.Recv, PerRS: st.PerRS,
		Seconds: g.Elapsed.Seconds()}
	cl.SentPPS = Num(float64(g.Sent) / g.Elapsed.Seconds())
	cl.FwdPPS = Num(float64(st.Recv) / g.Elapsed.Seconds())
	cl.Loss = Num(1 - float64(st.Recv)/float64(g.Sent))
	cl.P50us = Num(lat.Hist.percentile(50) / 1e3)
	cl.P90us = Num(lat.Hist.percentile(90) / 1e3)
	cl.P99us = Num(lat.Hist.percentile(99) / 1e3)
	if lat != st {
		cl.LatRate = c.LatRate
		cl.LatLoss = Num(1 - float64(lat.Recv)/(c.LatRate*min(c.Duration, time.Second).Seconds()))
	}
	return cl
}

// reference is a forwarder golvs is compared with.
type reference struct {
	name   string
	direct bool // frames go to the real servers' addresses, not the VIP
	// noOpen: the est mix's flows are not opened with SYNs first (see
	// startNFT).
	noOpen   bool
	optional bool // a peer: one that does not start is skipped
	perCell  bool // started afresh for each mix
	start    func(r *dpRun) (stop func(), err error)
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
func (r *dpRun) references(pf peerFinder) []*reference {
	refs := []*reference{
		{name: "kernel-forward", direct: true, start: startKernelForward},
		{name: "netio-ceiling", start: startCeiling},
	}
	var skips []DPSkip
	r.peers, r.nginxModule, skips = pf.find()
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

// startCeiling runs the netio ceiling forwarder in the director.
func startCeiling(r *dpRun) (func(), error) {
	f := &ceilingForwarder{}
	for i := range r.topo.RS {
		var m [6]byte
		copy(m[:], lab.BenchMAC(i+1))
		f.dsts = append(f.dsts, m)
	}
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
		if f.in, err = netio.OpenRing(lab.DirExt, netio.RingConfig{Filter: flt}); err != nil {
			return err
		}
		if f.out, err = netio.OpenTx(lab.DirInt); err != nil {
			f.in.Close()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.run(stop, func() {
			if len(r.dirCPUs) > 0 {
				_ = unix.SchedSetaffinity(0, cpuSet(r.dirCPUs))
			}
		})
	}()
	return func() { close(stop); <-done; f.close() }, nil
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
func (r *dpRun) startGolvs(mode string, workers int) (*golvsDir, error) {
	method := dpModes[mode]
	cfg := director.Config{
		Interfaces: []director.Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}},
		Workers:    workers,
		Conntrack:  conntrack.Config{MaxEntries: dpConntrackMax},
		FixHost:    true,
		Ring:       netio.RingConfig{Version: r.c.Ring},
	}
	if method == ipvs.MethodFullNAT {
		for i := 0; i < 4; i++ {
			cfg.LocalAddrs = append(cfg.LocalAddrs, lab.LIP(i))
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
		{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 80}, Sched: "rr"},
		{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: lab.VIP, Port: 53}, Sched: "rr"},
	}
	for _, s := range svcs {
		err := d.AddService(s)
		for i := range r.topo.RS {
			if err != nil {
				break
			}
			err = d.AddDest(s.ServiceKey, ipvs.DestConfig{Addr: lab.RIP(i + 1), Port: s.Port, Method: method, Weight: 1})
		}
		if err != nil {
			d.Close()
			return nil, err
		}
	}
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
	return &golvsDir{d: d, stop: stop}, nil
}

// golvsCells measures golvs in one mode with one worker count.
func (r *dpRun) golvsCells(mode string, workers int) error {
	name := fmt.Sprintf("golvs-%s-w%d", mode, workers)
	if r.c.Ring == 3 {
		name += "-v3"
	}
	g, err := r.startGolvs(mode, workers)
	if err != nil {
		r.skip(name, fmt.Sprintf("director did not start: %v", err))
		r.step += len(r.c.Mixes)
		return nil
	}
	defer g.stop()
	for _, mix := range r.c.Mixes {
		before := g.d.Drops.Get()
		cl := r.cell(name, mix, false, false)
		after := g.d.Drops.Get()
		cl.Golvs, cl.Mode, cl.Workers = true, mode, workers
		for i := range after {
			if n := after[i] - before[i]; n > 0 {
				if cl.Drops == nil {
					cl.Drops = map[string]uint64{}
				}
				cl.Drops[director.CounterNames[i]] = n
			}
		}
		r.rep.Cells = append(r.rep.Cells, cl)
	}
	return nil
}

// ratios divides every golvs cell by every reference cell of its mix.
func (r *dpRun) ratios() {
	for _, g := range r.rep.Cells {
		if !g.Golvs {
			continue
		}
		for _, ref := range r.rep.Cells {
			if ref.Golvs || ref.Mix != g.Mix {
				continue
			}
			r.rep.Ratios = append(r.rep.Ratios, DPRatio{Golvs: g.Forwarder, Reference: ref.Forwarder, Mix: g.Mix,
				PPS: Num(float64(g.FwdPPS) / float64(ref.FwdPPS)), P99: Num(float64(g.P99us) / float64(ref.P99us))})
		}
	}
}

// tcpTests measures TCP connections a second and one stream's throughput
// through the kernel as a router (the client talks to a real server's own
// address), through golvs NAT with the first worker count and through
// the proxy peers the host has (HAProxy mode tcp, nginx stream), each
// alone in the director. The real servers keep their real MACs here;
// nothing is pinned.
func (r *dpRun) tcpTests(proxies []string) error {
	r.progress("tcp direct")
	stop, err := startKernelForward(r)
	if err != nil {
		return fmt.Errorf("bench dataplane: %w", err)
	}
	direct := r.tcpPath("direct", netip.AddrPortFrom(lab.RIP(1), 80))
	stop()
	r.progress("tcp direct stream")
	r.rep.TCP = append(r.rep.TCP, direct)
	ratios := func(name string, res DPTCP) {
		r.rep.TCPRatios = append(r.rep.TCPRatios,
			DPRatio{Golvs: name, Reference: "direct", Mix: "cps", PPS: Num(float64(res.CPS) / float64(direct.CPS))},
			DPRatio{Golvs: name, Reference: "direct", Mix: "stream", PPS: Num(float64(res.StreamMBps) / float64(direct.StreamMBps))})
	}

	w := r.c.Workers[0]
	name := fmt.Sprintf("golvs-nat-w%d", w)
	r.progress(name + " tcp")
	var golvs *DPTCP
	if g, err := r.startGolvs("nat", w); err != nil {
		r.rep.TCP = append(r.rep.TCP, DPTCP{Path: name, Error: err.Error()})
	} else {
		res := r.tcpPath(name, netip.AddrPortFrom(lab.VIP, 80))
		g.stop()
		r.rep.TCP = append(r.rep.TCP, res)
		ratios(name, res)
		golvs = &res
	}
	r.progress(name + " stream")
	for _, p := range proxies {
		r.progress(p + " tcp")
		res := r.proxyTCP(p, r.peers[p])
		r.progress(p + " stream")
		r.rep.TCP = append(r.rep.TCP, res)
		ratios(p, res)
		if golvs != nil {
			r.rep.TCPRatios = append(r.rep.TCPRatios,
				DPRatio{Golvs: name, Reference: p, Mix: "cps", PPS: Num(float64(golvs.CPS) / float64(res.CPS))},
				DPRatio{Golvs: name, Reference: p, Mix: "stream", PPS: Num(float64(golvs.StreamMBps) / float64(res.StreamMBps))})
		}
	}
	return nil
}

func (r *dpRun) tcpPath(name string, addr netip.AddrPort) DPTCP {
	res := DPTCP{Path: name, CPS: Num(math.NaN()), StreamMBps: Num(math.NaN())}
	var firstErr error
	start := time.Now()
	if r.c.Conns > 0 {
		_ = r.topo.Client.Do(func() error {
			for res.Conns+res.Failed < r.c.Conns && time.Since(start) < dpConnTime {
				if err := httpGet(addr, "/", 2*time.Second); err != nil {
					res.Failed++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				res.Conns++
			}
			return nil
		})
		el := time.Since(start)
		res.Seconds = el.Seconds()
		res.CPS = Num(float64(res.Conns) / el.Seconds())
	}
	if r.c.StreamBytes > 0 {
		t0 := time.Now()
		resp, n, err := lab.GetPath(r.topo.Client, addr, fmt.Sprintf("/bytes/%d", r.c.StreamBytes), 30*time.Second)
		el := time.Since(t0)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
		} else {
			res.StreamBytes = n
			res.StreamMBps = Num(float64(n) / el.Seconds() / 1e6)
		}
	}
	if firstErr != nil {
		res.Error = firstErr.Error()
	}
	return res
}

// httpGet is one HTTP/1.0 exchange on a new connection, read to the end.
func httpGet(addr netip.AddrPort, path string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp4", addr.String(), timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "HTTP/1.0 200") {
		return fmt.Errorf("bench: bad HTTP status %q", strings.TrimSpace(line))
	}
	_, err = io.Copy(io.Discard, br)
	return err
}
