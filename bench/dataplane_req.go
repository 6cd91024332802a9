package bench

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/rstun"
)

// golvsCounters reads golvs's drop counters and the mode counters that
// count traffic it dropped (director.DroppingModeCounters), by name.
func golvsCounters(d *director.Director) map[string]uint64 {
	drops, modes := d.Drops.Get(), d.ModeCounters()
	m := make(map[string]uint64, len(drops)+len(director.DroppingModeCounters))
	for i, n := range drops {
		m[director.CounterNames[i]] = n
	}
	for _, i := range director.DroppingModeCounters {
		m[director.ModeCounterNames[i]] = modes[i]
	}
	return m
}

// dropDiff names golvs's counters that moved from before to after.
func dropDiff(before, after map[string]uint64) map[string]uint64 {
	var m map[string]uint64
	for k, v := range after {
		if n := v - before[k]; n > 0 {
			if m == nil {
				m = map[string]uint64{}
			}
			m[k] = n
		}
	}
	return m
}

// reqPath is one way from the client to an HTTP server, measured with
// request loops and one stream.
type reqPath struct {
	name   string
	addr   netip.AddrPort
	start  func() (stop func() error, err error)
	direct string // the path it is compared with ("": direct)
}

// tcpTests runs the request loops at each concurrency and the stream on
// every path, one path at a time in the director: the kernel routing to
// a real server (direct, to its port 8080), golvs NAT with each ring,
// golvs FULLNAT, the proxy peers the host has (HAProxy mode tcp, nginx
// stream) and the kernel's NAT (nftables DNAT, when the host has nft).
// The real servers keep their real MACs here; nothing is pinned by the
// bench (golvs pins its workers as it does by default).
func (r *dpRun) tcpTests(proxies []string) error {
	vip := netip.AddrPortFrom(lab.VIP, 80)
	paths := []reqPath{{name: "direct", addr: netip.AddrPortFrom(lab.RIP(1), directPort), start: func() (func() error, error) {
		stop, err := startKernelForward(r)
		if err != nil {
			return nil, err
		}
		return func() error { stop(); return nil }, nil
	}}}
	golvsPath := func(g golvsRun) reqPath {
		p := reqPath{name: g.name(), addr: vip}
		p.start = func() (func() error, error) {
			d, err := r.startGolvs(g)
			if err != nil {
				return nil, err
			}
			r.curGolvs = d
			return func() error { r.curGolvs = nil; d.stop(); return nil }, nil
		}
		return p
	}
	w := r.c.Workers[0]
	spins := r.c.BusyPolls
	if len(spins) == 0 {
		spins = []time.Duration{director.DefaultSpin}
	}
	for _, ring := range r.c.Rings {
		for _, spin := range spins {
			paths = append(paths, golvsPath(golvsRun{mode: "nat", workers: w, ring: ring, spin: spin}))
		}
	}
	// Every other worker count: golvs run's default is one per CPU.
	for _, n := range r.c.Workers[1:] {
		paths = append(paths, golvsPath(golvsRun{mode: "nat", workers: n, ring: r.c.Rings[0], spin: r.spin()}))
	}
	// With fanout next: on this host the client and the real servers send
	// from the director's CPUs, and a veth's frame is received on its
	// sender's CPU.
	for _, n := range r.c.nextRows() {
		paths = append(paths, golvsPath(golvsRun{mode: "nat", workers: n, ring: r.c.Rings[0], spin: r.spin(), next: true}))
	}
	for _, m := range r.c.Modes {
		if m == "fullnat" {
			paths = append(paths, golvsPath(golvsRun{mode: m, workers: w, ring: r.c.Rings[0], spin: r.spin()}))
		}
	}
	for _, p := range proxies {
		bin := r.peers[p]
		paths = append(paths, reqPath{name: p, addr: vip, start: func() (func() error, error) { return r.startProxy(p, bin) }})
	}
	// The kernel's own NAT (nftables DNAT with conntrack) on the same
	// path: what a kernel load balancer costs on this host, the bar the
	// 0.8-of-direct target stands for.
	refs := proxies
	if r.kernelNAT() {
		paths = append(paths, reqPath{name: peerNFT, addr: vip, start: func() (func() error, error) {
			stop, err := startNFT(r)
			if err != nil {
				return nil, err
			}
			return func() error { stop(); return nil }, nil
		}})
		refs = append(slices.Clone(proxies), peerNFT)
	}
	if r.wrk == "" {
		r.note("request loops: wrk is not installed (apt-get install wrk): the built-in Go client ran them, which costs the client more per request than wrk")
	}
	if r.c.StreamBytes > 0 && r.curl == "" {
		r.note("streams: curl is not installed (apt-get install curl): golvs's Go client (lab.Fetch) in the bench's process read them, which limits direct (2,249 MB/s with it against 3,849 with curl on the NAT lab)")
	}
	if r.c.StreamBytes > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		r.rep.Streams = append(r.rep.Streams, r.loopbackStream(ctx))
		cancel()
	}
	r.runPaths(paths)
	for _, m := range []string{"dr", "tun"} {
		if !slices.Contains(r.c.Modes, m) {
			continue
		}
		mp, err := r.modeLoops(m)
		if err != nil {
			r.skip("golvs-"+m+" request loops", err.Error())
		}
		paths = append(paths, mp...)
	}
	r.pathRatios(paths, refs)
	return nil
}

// kernelNAT reports that the host has nft, so the request loops run
// through the kernel's NAT too.
func (r *dpRun) kernelNAT() bool {
	_, ok := r.peers[peerNFT]
	return ok
}

// runPaths runs every path's request loops and stream, one path at a time.
func (r *dpRun) runPaths(paths []reqPath) {
	for _, p := range paths {
		stop, err := p.start()
		if err != nil {
			for _, n := range r.c.Concurrency {
				r.progress(fmt.Sprintf("%s c%d", p.name, n))
				r.rep.Requests = append(r.rep.Requests, DPReq{Path: p.name, Concurrency: n, RPS: Num(math.NaN()), P50us: Num(math.NaN()), P99us: Num(math.NaN()), Error: err.Error()})
			}
			r.progress(p.name + " stream")
			r.rep.Streams = append(r.rep.Streams, DPStream{Path: p.name, MBps: Num(math.NaN()), Error: err.Error()})
			continue
		}
		for _, n := range r.c.Concurrency {
			r.progress(fmt.Sprintf("%s c%d", p.name, n))
			var before map[string]uint64
			if r.curGolvs != nil {
				before = golvsCounters(r.curGolvs.d)
			}
			res := r.reqLoop(p.addr, n)
			res.Path = p.name
			if r.curGolvs != nil {
				res.Drops = dropDiff(before, golvsCounters(r.curGolvs.d))
			}
			r.rep.Requests = append(r.rep.Requests, res)
		}
		r.progress(p.name + " stream")
		if r.c.StreamBytes > 0 {
			r.rep.Streams = append(r.rep.Streams, r.stream(p.name, p.addr))
		}
		if err := stop(); err != nil {
			r.note("%s: %v", p.name, err)
		}
	}
	if r.c.StreamBytes > 0 {
		r.pairStreams(paths)
	}
}

func isDirect(name string) bool { return name == "direct" || strings.HasPrefix(name, "direct-") }

// pairStreams runs each path's stream against its direct reference's
// (direct, or the mode lab's direct-MODE), alternately, streamRuns pairs.
func (r *dpRun) pairStreams(paths []reqPath) {
	byName := map[string]reqPath{}
	for _, p := range paths {
		byName[p.name] = p
	}
	for _, p := range paths {
		ref, ok := byName[cmp.Or(p.direct, "direct")]
		if isDirect(p.name) || !ok {
			continue
		}
		r.progress(p.name + " stream pairs")
		res := DPStreamPair{Path: p.name, Reference: ref.name, Ratio: Num(math.NaN()), Min: Num(math.NaN()), Max: Num(math.NaN())}
		var ratios []float64
		for range streamRuns {
			d, err := r.oneStream(ref)
			var g float64
			if err == nil {
				g, err = r.oneStream(p)
			}
			if err != nil {
				res.Error = err.Error()
				break
			}
			ratios = append(ratios, g/d)
		}
		res.Pairs = len(ratios)
		if res.Error == "" {
			sort.Float64s(ratios)
			res.Ratio, res.Min, res.Max = Num(ratios[len(ratios)/2]), Num(ratios[0]), Num(ratios[len(ratios)-1])
		}
		r.rep.StreamPairs = append(r.rep.StreamPairs, res)
	}
}

// oneStream starts p, sends one small request through it (the first
// packets of a path resolve neighbours and fill caches), times one
// StreamBytes transfer and stops p: the MB/s.
func (r *dpRun) oneStream(p reqPath) (mbps float64, err error) {
	stop, err := p.start()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", p.name, err)
	}
	defer func() {
		if e := stop(); e != nil && err == nil {
			err = fmt.Errorf("%s: %w", p.name, e)
		}
	}()
	if _, _, err := r.fetch(p.addr, streamWarmup); err != nil {
		return 0, fmt.Errorf("%s: %w", p.name, err)
	}
	if _, mbps, err = r.fetch(p.addr, r.c.StreamBytes); err != nil {
		return 0, fmt.Errorf("%s: %w", p.name, err)
	}
	return mbps, nil
}

// modeLoops runs the request loops of DR or TUN in a lab of that mode
// (the NAT lab is set aside meanwhile), where the real servers answer the
// client themselves: golvs in that mode against direct-MODE, the client
// talking to a real server's own address (port 8080) the way the lab
// routes it. DR: the client, the director and the real servers on one
// segment, the VIP on the real servers' loopback. TUN: the real servers
// behind a router, the director's IPIP tunnel to them ended by golvs's
// userspace decapsulator (rstun) in each, which holds the VIP; the
// client reaches their own addresses through the router.
func (r *dpRun) modeLoops(mode string) ([]reqPath, error) {
	o := lab.Options{Suffix: lab.RandomSuffix(), RealServers: r.c.RealServers}
	build, rip := lab.BuildDR, lab.DRRIP
	if mode == "tun" {
		build, rip = lab.BuildTUN, lab.TUNRIP
	}
	mt, err := build(o)
	if err != nil {
		return nil, err
	}
	defer mt.Close()
	nat := r.topo
	r.topo = mt.Topology
	defer func() { r.topo = nat }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i, ns := range mt.RS {
		if mode == "tun" {
			var ep *rstun.Endpoint
			if err := ns.Do(func() (err error) {
				ep, err = rstun.Open(rstun.Config{Interface: "eth0", VIPs: []netip.Addr{lab.VIP}})
				return err
			}); err != nil {
				return nil, fmt.Errorf("rs-tun in %s: %w", ns.Name, err)
			}
			defer ep.Close()
			go func() { _ = ep.Run(ctx) }()
		}
		stop, err := r.serveRS(ctx, ns, fmt.Sprintf("rs%d", i+1), lab.VIP, []int{80, directPort})
		if err != nil {
			return nil, err
		}
		defer stop()
	}
	if mode == "tun" {
		if err := lab.RouteVia(mt.Client, netip.PrefixFrom(lab.TUNRIP(1), 24).Masked(), lab.RouterClientIP); err != nil {
			return nil, err
		}
	}
	if err := loadGenSysctls(mt.Client); err != nil {
		return nil, err
	}
	direct := "direct-" + mode
	g := golvsRun{mode: mode, workers: r.c.Workers[0], ring: r.c.Rings[0], spin: r.spin()}
	paths := []reqPath{
		{name: direct, addr: netip.AddrPortFrom(rip(1), directPort), start: func() (func() error, error) {
			return func() error { return nil }, nil
		}},
		{name: g.name(), addr: netip.AddrPortFrom(lab.VIP, 80), direct: direct, start: func() (func() error, error) {
			d, err := r.startMode(mt, g, rip)
			if err != nil {
				return nil, err
			}
			r.curGolvs = d
			return func() error { r.curGolvs = nil; d.stop(); return nil }, nil
		}},
	}
	r.runPaths(paths)
	return paths, nil
}

// startMode starts golvs DR or TUN in that mode's lab: the VIP's ARP
// answered on ext0 (TUN also sends through int0, towards the router),
// each real server a dest of TCP VIP:80 in the mode.
func (r *dpRun) startMode(mt *lab.ModeTopology, g golvsRun, rip func(int) netip.Addr) (*golvsDir, error) {
	ifaces := []director.Interface{{Name: lab.DirExt, ARP: true}}
	method := ipvs.MethodRoute
	if g.mode == "tun" {
		ifaces = append(ifaces, director.Interface{Name: lab.DirInt})
		method = ipvs.MethodTunnel
	}
	var d *director.Director
	err := mt.Director.Do(func() (err error) {
		d, err = director.New(director.Config{
			Interfaces: ifaces,
			Workers:    g.workers,
			Ring:       netio.RingConfig{Version: g.ring},
			FixHost:    true,
			Spin:       g.spin,
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	svc := ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 80}, Sched: "rr"}
	err = d.AddService(svc)
	for i := range mt.RS {
		if err == nil {
			err = d.AddDest(svc.ServiceKey, ipvs.DestConfig{Addr: rip(i + 1), Port: 80, Method: method, Weight: 1})
		}
	}
	if err != nil {
		d.Close()
		return nil, err
	}
	return runGolvs(d)
}

// pathRatios divides each path's request rate by direct's and golvs's by
// each reference's (the proxies, the kernel's NAT), per concurrency, and
// the streams likewise.
func (r *dpRun) pathRatios(paths []reqPath, refPaths []string) {
	req := func(path string, n int) Num {
		for _, q := range r.rep.Requests {
			if q.Path == path && q.Concurrency == n {
				return q.RPS
			}
		}
		return Num(math.NaN())
	}
	str := func(path string) Num {
		for _, s := range r.rep.Streams {
			if s.Path == path {
				return s.MBps
			}
		}
		return Num(math.NaN())
	}
	for _, p := range paths {
		if isDirect(p.name) {
			continue
		}
		refs := []string{"direct"}
		if p.direct != "" {
			refs = []string{p.direct} // another lab: the proxies ran in the NAT lab
		} else if strings.HasPrefix(p.name, "golvs-") {
			refs = append(refs, refPaths...)
		}
		for _, ref := range refs {
			for _, n := range r.c.Concurrency {
				r.rep.PathRatios = append(r.rep.PathRatios, DPPathRatio{Path: p.name, Reference: ref, Concurrency: n, Ratio: req(p.name, n) / req(ref, n)})
			}
			if r.c.StreamBytes > 0 {
				ratio := str(p.name) / str(ref)
				for _, pr := range r.rep.StreamPairs {
					if pr.Path == p.name && pr.Reference == ref {
						ratio = pr.Ratio // against its direct reference: the pairs'
					}
				}
				r.rep.PathRatios = append(r.rep.PathRatios, DPPathRatio{Path: p.name, Reference: ref, Ratio: ratio})
			}
		}
	}
}

// reqLoop runs n request loops against addr from the client for the
// request duration, with wrk when the host has it.
func (r *dpRun) reqLoop(addr netip.AddrPort, n int) DPReq {
	d := r.c.ReqDuration
	if d == 0 {
		d = r.c.Duration
	}
	res := DPReq{Concurrency: n, RPS: Num(math.NaN()), P50us: Num(math.NaN()), P99us: Num(math.NaN())}
	if r.wrk != "" {
		res.Tool = "wrk"
		w, err := r.runWrk(addr, n, d)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		res.Requests, res.Errors, res.Seconds = w.Requests, w.Errors, w.Duration.Seconds()
		res.RPS = Num(float64(w.Requests) / w.Duration.Seconds())
		res.P50us, res.P99us = Num(w.P50us), Num(w.P99us)
		return res
	}
	res.Tool = "go"
	g := r.goLoop(addr, n, d)
	res.Requests, res.Errors, res.Seconds = g.reqs, g.errs, g.el.Seconds()
	res.RPS = Num(float64(g.reqs) / g.el.Seconds())
	res.P50us, res.P99us = Num(g.hist.percentile(50)/1e3), Num(g.hist.percentile(99)/1e3)
	if g.first != nil {
		res.Error = g.first.Error()
	}
	return res
}

// wrkScript makes wrk ask for Connection: close and print its totals in
// one line that parseWrk reads.
const wrkScript = `wrk.headers["Connection"] = "close"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("golvs-wrk requests=%d duration_us=%d errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`

// wrkResult is what parseWrk reads.
type wrkResult struct {
	Requests, Errors uint64
	Duration         time.Duration
	P50us, P99us     float64
}

// parseWrk reads the line wrkScript prints from wrk's output.
func parseWrk(out string) (wrkResult, error) {
	var w wrkResult
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "golvs-wrk" {
			continue
		}
		seen := 0
		for _, kv := range f[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return w, fmt.Errorf("bench: wrk: bad field %q", kv)
			}
			n, err := strconv.ParseUint(v, 10, 63)
			if err != nil {
				return w, fmt.Errorf("bench: wrk: %s: %w", k, err)
			}
			switch k {
			case "requests":
				w.Requests = n
			case "duration_us":
				w.Duration = time.Duration(n) * time.Microsecond
			case "errors":
				w.Errors = n
			case "p50_us":
				w.P50us = float64(n)
			case "p99_us":
				w.P99us = float64(n)
			default:
				return w, fmt.Errorf("bench: wrk: unknown field %q", k)
			}
			seen++
		}
		if seen != 5 || w.Duration <= 0 {
			return w, fmt.Errorf("bench: wrk: incomplete totals %q", line)
		}
		return w, nil
	}
	return w, errors.New("bench: wrk printed no totals")
}

// runWrk runs wrk in the client's namespace, bounded in time.
func (r *dpRun) runWrk(addr netip.AddrPort, n int, d time.Duration) (wrkResult, error) {
	dir, err := os.MkdirTemp("", "golvs-bench-wrk-")
	if err != nil {
		return wrkResult{}, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "totals.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
		return wrkResult{}, err
	}
	threads := min(n, 2)
	// wrk counts time in whole seconds.
	secs := max(int((d+time.Second-1)/time.Second), 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second+15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.wrk, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(n),
		"-d", fmt.Sprintf("%ds", secs), "--timeout", "2s", "-s", script, "http://"+addr.String()+"/")
	var out []byte
	err = r.topo.Client.Do(func() error {
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return parseWrk(string(out))
}

// goResult is what goLoop measured.
type goResult struct {
	hist       *latHist
	reqs, errs uint64
	first      error // the first failure
	el         time.Duration
}

// goLoop is the request loop without wrk: n goroutines, each on a thread
// of its own in the client's namespace, for d.
func (r *dpRun) goLoop(addr netip.AddrPort, n int, d time.Duration) goResult {
	hist := new(latHist)
	var reqs, errs uint64
	var first error
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var h latHist
			var ok, bad uint64
			var ferr error
			_ = r.topo.Client.Do(func() error {
				for time.Now().Before(end) {
					t0 := time.Now()
					if err := httpGet(addr, "/", 2*time.Second); err != nil {
						bad++
						if ferr == nil {
							ferr = err
						}
						continue
					}
					h.add(uint64(time.Since(t0)))
					ok++
				}
				return nil
			})
			mu.Lock()
			for j := range h.b {
				hist.b[j] += h.b[j]
			}
			hist.n += h.n
			reqs += ok
			errs += bad
			if first == nil {
				first = ferr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return goResult{hist: hist, reqs: reqs, errs: errs, first: first, el: time.Since(start)}
}

// streamRuns is how many times each path's stream runs: one transfer
// lasts a fraction of a second here, and its rate moved 2x between runs;
// the median of seven moves much less.
const streamRuns = 7

// stream fetches StreamBytes on one connection, streamRuns times, and
// reports the median rate.
func (r *dpRun) stream(name string, addr netip.AddrPort) DPStream {
	res := DPStream{Path: name, MBps: Num(math.NaN())}
	var rates []float64
	for range streamRuns {
		n, mbps, err := r.fetch(addr, r.c.StreamBytes)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		res.Bytes = n
		rates = append(rates, mbps)
	}
	sort.Float64s(rates)
	res.MBps = Num(rates[len(rates)/2])
	return res
}

// fetch gets n bytes from addr's HTTP server on one new connection from
// the client: the bytes read and the rate in MB/s, dial to last byte.
// It reads with curl (curlFetch), else lab.Fetch; neither keeps the body
// (the client-loopback row shows the client outruns every path).
func (r *dpRun) fetch(addr netip.AddrPort, n int) (int, float64, error) {
	path := fmt.Sprintf("/bytes/%d", n)
	var got int64
	var el time.Duration
	var err error
	if r.curl != "" {
		got, el, err = r.curlFetch(addr, path, int64(n))
	} else {
		got, el, err = lab.Fetch(r.topo.Client, addr, path, streamTimeout)
	}
	if err != nil {
		return 0, 0, err
	}
	return int(got), float64(got) / el.Seconds() / 1e6, nil
}

// loopbackStream is the stream's ceiling on this host: the same client
// and server in the client's own namespace, to its own address (over
// loopback), with no director and no link between them. A path whose
// rate comes near it is limited by the client or the server, not by what
// it measures.
func (r *dpRun) loopbackStream(ctx context.Context) DPStream {
	r.progress(streamCeiling + " stream")
	stop, err := r.serveRS(ctx, r.topo.Client, streamCeiling, netip.Addr{}, []int{loopbackPort})
	if err != nil {
		return DPStream{Path: streamCeiling, MBps: Num(math.NaN()), Error: err.Error()}
	}
	defer stop()
	// Its own address: the kernel routes it over loopback.
	return r.stream(streamCeiling, netip.AddrPortFrom(lab.CIP, loopbackPort))
}

// streamCeiling names the loopback stream row; loopbackPort is its
// server's port in the client's namespace.
const (
	streamCeiling = "client-loopback"
	loopbackPort  = 8081
)

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
	if !lab.StatusOK(strings.TrimRight(line, "\r\n")) {
		return fmt.Errorf("bench: bad HTTP status %q", strings.TrimSpace(line))
	}
	_, err = io.Copy(io.Discard, br)
	return err
}
