package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/sched"
)

// Server is one real server of a simulated service: its IPVS weight and
// its capacity, the number of connections it serves at once (each at the
// same speed; more arrive into a FIFO queue).
type Server struct {
	Weight   int32 `json:"weight"`
	Capacity int   `json:"capacity"`
	// UThreshold and LThreshold are -x and -y (0: none).
	UThreshold uint32 `json:"u_threshold,omitempty"`
	LThreshold uint32 `json:"l_threshold,omitempty"`
}

// Limits of the sched bench's settings.
const (
	MinConns     = 1000
	MaxConns     = 5_000_000
	DefaultConns = 500_000
	MinLoad      = 0.05
	MaxLoad      = 1.5
	DefaultLoad  = 0.8
	DefaultKeys  = 10_000
	MinKeys      = 100
	MaxKeys      = 1_000_000
)

// Constants of the workload model.
const (
	meanService  = 0.1  // seconds of work per connection, on average
	paretoShape  = 1.5  // α: finite mean, infinite variance
	handshake    = 1e-3 // seconds from SYN to ESTABLISHED
	natAddrs     = 8    // client addresses of the "nat" workload
	zipfTargets  = 20000
	zipfS        = 1.1
	cacheEntries = 1000 // per-server LRU cache of the "locality" workload
	movedRemoved = 2    // index of the server that leaves and joins
	linger       = 2.0  // "thresholds": seconds a closed conn stays, inactive (TIME_WAIT)
)

// thresholdServers are defaultServers with -x/-y: closed connections
// linger inactive, so each server's total (active + inactive) is
// mostly lingering connections, around 115 per unit of weight at the
// default load; server 5 is held near its -x 400, server 1 has -x 150 -y 100.
var thresholdServers = []Server{{1, 8, 150, 100}, {1, 8, 0, 0}, {2, 16, 0, 0}, {2, 16, 0, 0}, {4, 24, 400, 0}}

// defaultServers are five servers whose weights follow their capacity,
// except the last, whose weight (4) overstates its capacity (3 units of 8):
// weights are an administrator's guess.
var defaultServers = []Server{{Weight: 1, Capacity: 8}, {Weight: 1, Capacity: 8}, {Weight: 2, Capacity: 16}, {Weight: 2, Capacity: 16}, {Weight: 4, Capacity: 24}}

// SchedConfig sets up a sched bench. Zero values take defaults.
type SchedConfig struct {
	// Semantics are the kernel semantics to run every simulation under
	// (nil: current, then classic): the first gives the report's tables,
	// a second is compared with it connection by connection.
	Semantics []ipvs.Semantics
	Seed      uint64
	Conns     int      // connections per workload
	Load      float64  // offered load over the servers' total capacity
	Keys      int      // flows replayed for the moved fraction
	Scheds    []string // nil: sched.Names()
	// Workers runs that many simulations at once (0: GOMAXPROCS). The
	// results do not depend on it.
	Workers int
	// Progress, if set, is called after each finished simulation.
	Progress func(done, total int, what string)
}

// Validate checks the settings' ranges, naming the limit.
func (c *SchedConfig) Validate() error {
	if c.Conns < MinConns || c.Conns > MaxConns {
		return fmt.Errorf("bench: --conns %d out of range (allowed: %d..%d)", c.Conns, MinConns, MaxConns)
	}
	if !(c.Load >= MinLoad && c.Load <= MaxLoad) {
		return fmt.Errorf("bench: --load %g out of range (allowed: %g..%g)", c.Load, MinLoad, MaxLoad)
	}
	if c.Keys < MinKeys || c.Keys > MaxKeys {
		return fmt.Errorf("bench: --keys %d out of range (allowed: %d..%d)", c.Keys, MinKeys, MaxKeys)
	}
	for _, n := range c.Scheds {
		if err := sched.Check(n); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	if len(c.Semantics) > 2 || len(c.Semantics) == 2 && c.Semantics[0] == c.Semantics[1] {
		return fmt.Errorf("bench: --semantics: one of current, classic, or both")
	}
	return nil
}

func (c *SchedConfig) defaults() {
	if c.Conns == 0 {
		c.Conns = DefaultConns
	}
	if c.Load == 0 {
		c.Load = DefaultLoad
	}
	if c.Keys == 0 {
		c.Keys = DefaultKeys
	}
	if len(c.Scheds) == 0 {
		c.Scheds = sched.Names()
	}
	if len(c.Semantics) == 0 {
		c.Semantics = []ipvs.Semantics{ipvs.Current, ipvs.Classic}
	}
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
}

// Num is a float64 that is written to JSON as null when it is not a
// number (a metric that does not apply, e.g. the fairness of "none").
type Num float64

// MarshalJSON implements json.Marshaler.
func (n Num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return []byte(fmt.Sprintf("%.6g", f)), nil
}

// UnmarshalJSON implements json.Unmarshaler (null reads as NaN).
func (n *Num) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = Num(math.NaN())
		return nil
	}
	var f float64
	_, err := fmt.Sscan(string(b), &f)
	*n = Num(f)
	return err
}

// SchedReport is the outcome of a sched bench.
type SchedReport struct {
	Seed   uint64   `json:"seed"`
	Conns  int      `json:"conns"`
	Load   float64  `json:"load"`
	Scheds []string `json:"scheds"`
	// Semantics is the kernel semantics of Workloads and Disruption;
	// Compared, when set, the other one, whose runs Differences compare
	// with them.
	Semantics   ipvs.Semantics   `json:"semantics"`
	Compared    *ipvs.Semantics  `json:"compared,omitempty"`
	Workloads   []WorkloadReport `json:"workloads"`
	Disruption  Disruption       `json:"disruption"`
	Differences []SemDiff        `json:"differences,omitempty"`
}

// SemDiff is where the two semantics made different choices for one
// scheduler on one workload (the same trace, replayed twice): the
// fraction of connections sent to another server (or refused in one
// and not the other), the first of them, and both runs' outcomes. For the
// disruption experiment (Workload "disruption") Picks compares the three
// replays and Moved gives the leave and join fractions of both.
type SemDiff struct {
	Workload     string `json:"workload"`
	Sched        string `json:"sched"`
	Picks        Num    `json:"picks_differ"`
	First        int64  `json:"first_differ"`
	Shares       []Num  `json:"shares"`
	OtherShares  []Num  `json:"other_shares"`
	Refused      int64  `json:"refused"`
	OtherRefused int64  `json:"other_refused"`
	Jain         Num    `json:"jain"`
	OtherJain    Num    `json:"other_jain"`
	Moved        [4]Num `json:"moved,omitempty"` // disruption: leave, join; other leave, other join
}

// WorkloadReport is one workload replayed into every scheduler.
type WorkloadReport struct {
	Name         string        `json:"name"`
	Description  string        `json:"description"`
	Servers      []Server      `json:"servers"`
	WeightShares []Num         `json:"weight_shares"`
	Duration     Num           `json:"duration_s"` // simulated seconds of arrivals
	Results      []SchedResult `json:"results"`
}

// SchedResult is one scheduler's outcome on one workload. Load is the
// number of connections a server received; fairness metrics are computed
// over load divided by the server's (initial) weight.
type SchedResult struct {
	Sched         string  `json:"sched"`
	Conns         []int64 `json:"conns"`
	Shares        []Num   `json:"shares"`
	Jain          Num     `json:"jain"`
	CV            Num     `json:"cv"`
	Overprovision Num     `json:"overprovision"`
	DelayP50      Num     `json:"delay_p50_ms"`
	DelayP90      Num     `json:"delay_p90_ms"`
	DelayP99      Num     `json:"delay_p99_ms"`
	Refused       int64   `json:"refused"`             // no dest picked
	Misrouted     int64   `json:"misrouted,omitempty"` // sent to a dest with weight 0 or removed
	HitRatio      Num     `json:"hit_ratio"`           // locality workload only
	Affinity      Num     `json:"affinity"`            // nat workload only: client addresses kept on one server
}

// Disruption is the moved-fraction experiment: a fixed set of flows is
// replayed into a fresh instance of each scheduler, then again after one
// server left (DelDest), then again after it came back (AddDest).
type Disruption struct {
	Keys    int          `json:"keys"`
	Servers []Server     `json:"servers"`
	Removed int          `json:"removed"` // index of the server that leaves and joins
	Results []MoveResult `json:"results"`
}

// MoveResult is one scheduler's moved fractions. LeaveMin is the fraction
// of flows that were on the leaving server (they must move); JoinMin is the
// share the joining server takes in the last replay (at least that many
// must move for it to get any). A consistent hash stays close to both.
type MoveResult struct {
	Sched    string `json:"sched"`
	Leave    Num    `json:"leave"`
	LeaveMin Num    `json:"leave_min"`
	Join     Num    `json:"join"`
	JoinMin  Num    `json:"join_min"`
}

// workload is a replayable input: a trace of arrivals and the model's
// settings.
type workload struct {
	name, desc string
	servers    []Server
	trace      []arrival
	duration   float64
	churn      bool // the server-leaves, weight-change events below
	nat        bool // clients behind natAddrs addresses: measure affinity
	locality   bool // targets from a Zipf set: model per-server caches
	thresholds bool // closed conns linger inactive; -x/-y and their edits
}

// arrival is one connection of a trace.
type arrival struct {
	t      float64 // arrival time, seconds
	work   float64 // service time, seconds
	src    [4]byte
	sport  uint16
	target uint32 // locality: index of the requested target
}

// buildWorkloads generates the traces from the seed. Each workload has its
// own generator so that adding one does not change the others.
func buildWorkloads(c *SchedConfig) []*workload {
	capSum := 0
	for _, s := range defaultServers {
		capSum += s.Capacity
	}
	rate := c.Load * float64(capSum) / meanService
	mk := func(i uint64, name, desc string) *workload {
		w := &workload{name: name, desc: desc, servers: slices.Clone(defaultServers)}
		r := rand.New(rand.NewPCG(c.Seed, c.Seed^(0x9e3779b97f4a7c15*(i+1))))
		var z *rand.Zipf
		if name == "locality" {
			z = rand.NewZipf(r, zipfS, 1, zipfTargets-1)
			w.locality = true
		}
		w.nat = name == "nat"
		w.churn = name == "churn"
		if name == "thresholds" {
			w.thresholds = true
			w.servers = slices.Clone(thresholdServers)
		}
		w.trace = make([]arrival, c.Conns)
		t := 0.0
		xm := meanService * (paretoShape - 1) / paretoShape
		for k := range w.trace {
			t += r.ExpFloat64() / rate
			a := &w.trace[k]
			a.t = t
			a.work = xm / math.Pow(1-r.Float64(), 1/paretoShape)
			if w.nat {
				a.src = [4]byte{203, 0, 113, byte(1 + r.IntN(natAddrs))}
			} else {
				a.src = [4]byte{10, byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}
			}
			a.sport = uint16(1024 + r.IntN(64512))
			if z != nil {
				a.target = uint32(z.Uint64())
			}
		}
		w.duration = t
		return w
	}
	return []*workload{
		mk(0, "steady", "Poisson arrivals, Pareto lengths, every client its own address; server 5's weight (4) overstates its capacity (3 units of 8)"),
		mk(1, "churn", "steady, but server 2 gets weight 0 at 25%, is removed at 35%, returns at 55%; server 5's weight goes 4->3 at 75%"),
		mk(2, "nat", fmt.Sprintf("steady, but all clients sit behind %d addresses (affinity: addresses kept on one server)", natAddrs)),
		mk(3, "locality", fmt.Sprintf("steady, requests for %d targets drawn from Zipf(s=%g); each server caches %d (LRU)", zipfTargets, zipfS, cacheEntries)),
		mk(4, "thresholds", fmt.Sprintf("steady, but closed connections stay %g s as inactive (TIME_WAIT), servers 1 and 5 have -x/-y, and server 5's -x is raised to 450 at 40%%, lowered to 300 at 60%%, server 1's -y raised to 140 at 80%% (the edits whose OVERLOAD the semantics treat differently)", linger)),
	}
}

// targetAddr is the address of a locality target.
func targetAddr(i uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(100 + i>>16), byte(i >> 8), byte(i)})
}

var (
	vip     = netip.MustParseAddr("192.0.2.1")
	svcKey  = ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}
	simBase = time.Unix(1_000_000_000, 0)
)

// newScheduler makes a scheduler whose every input is the simulation's:
// lblc and lblcr read the simulated clock, twos draws from the seed.
func newScheduler(name string, sem ipvs.Semantics, seed uint64, now func() time.Time) (sched.Scheduler, error) {
	switch name {
	case "twos":
		return sched.NewTwosSeeded(seed), nil
	case "lblc":
		return sched.NewLBLC(sched.CacheOptions{Now: now, Semantics: sem}), nil
	case "lblcr":
		return sched.NewLBLCR(sched.CacheOptions{Now: now, Semantics: sem}), nil
	}
	return sched.NewFor(name, sem)
}

// pool is a simulated service: its dests and the scheduler's view.
type pool struct {
	s     sched.Scheduler
	svc   *sched.Service
	dests []*ipvs.Dest // by server index
	cfgs  []ipvs.DestConfig
	in    []bool // in the service's list
}

func newPool(name string, sem ipvs.Semantics, seed uint64, servers []Server, now func() time.Time) (*pool, error) {
	s, err := newScheduler(name, sem, seed, now)
	if err != nil {
		return nil, err
	}
	p := &pool{s: s, svc: &sched.Service{Key: svcKey}}
	for i, sv := range servers {
		c := ipvs.DestConfig{Addr: netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}), Port: 80, Method: ipvs.MethodRoute, Weight: sv.Weight,
			UThreshold: sv.UThreshold, LThreshold: sv.LThreshold}
		p.cfgs = append(p.cfgs, c)
		p.dests = append(p.dests, sem.NewDest(svcKey, c))
		p.in = append(p.in, true)
	}
	// Dests were added in server order; the kernel's list is newest first.
	for i := len(p.dests) - 1; i >= 0; i-- {
		p.svc.Dests = append(p.svc.Dests, p.dests[i])
	}
	if err := s.Init(p.svc); err != nil {
		return nil, fmt.Errorf("bench: %s: init: %w", name, err)
	}
	return p, nil
}

func (p *pool) index(d *ipvs.Dest) int {
	for i, x := range p.dests {
		if x == d {
			return i
		}
	}
	return -1
}

// del removes server i from the list (ipvsadm -d): a new list, as the
// control plane publishes a new snapshot.
func (p *pool) del(i int) error {
	d := p.dests[i]
	nl := make([]*ipvs.Dest, 0, len(p.svc.Dests))
	for _, x := range p.svc.Dests {
		if x != d {
			nl = append(nl, x)
		}
	}
	d.Unlink()
	p.in[i] = false
	p.svc.Dests = nl
	return p.s.DelDest(p.svc, d)
}

// add puts server i back (ipvsadm -a), at the head of the list: the
// dest comes back from the trash.
func (p *pool) add(i int) error {
	d := p.dests[i]
	d.Revive(p.cfgs[i])
	p.in[i] = true
	p.svc.Dests = append([]*ipvs.Dest{d}, p.svc.Dests...)
	return p.s.AddDest(p.svc, d)
}

// setWeight changes server i's weight (ipvsadm -e).
func (p *pool) setWeight(i int, w int32) error {
	d := p.dests[i]
	c := d.Config()
	c.Weight = w
	d.Update(c)
	p.svc.Dests = slices.Clone(p.svc.Dests)
	return p.s.UpdDest(p.svc, d)
}

// setThresholds changes server i's -x and -y (ipvsadm -e with the same
// weight).
func (p *pool) setThresholds(i int, u, l uint32) error {
	d := p.dests[i]
	c := d.Config()
	c.UThreshold, c.LThreshold = u, l
	p.cfgs[i] = c
	d.Update(c)
	p.svc.Dests = slices.Clone(p.svc.Dests)
	return p.s.UpdDest(p.svc, d)
}

// Event kinds. At equal times control events run first, then
// completions, then handshakes, then the end of lingering; arrivals come
// after all of them.
const (
	evControl = iota
	evDone
	evEstablished
	evGone
)

type event struct {
	t    float64
	kind uint8
	seq  uint64
	conn int32
}

func (a event) less(b event) bool {
	if a.t != b.t {
		return a.t < b.t
	}
	if a.kind != b.kind {
		return a.kind < b.kind
	}
	return a.seq < b.seq
}

// evHeap is a binary min-heap of events, typed to avoid interface boxing.
type evHeap []event

func (h *evHeap) push(e event) {
	*h = append(*h, e)
	s := *h
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !s[i].less(s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *evHeap) pop() event {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s = s[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && s[r].less(s[l]) {
			m = r
		}
		if !s[m].less(s[i]) {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// control is a configuration change at a point of the run.
type control struct {
	at float64
	do func(p *pool) error
}

func churnEvents(d float64, servers []Server) []control {
	return []control{
		{0.25 * d, func(p *pool) error { return p.setWeight(1, 0) }},
		{0.35 * d, func(p *pool) error { return p.del(1) }},
		{0.55 * d, func(p *pool) error { return p.add(1) }},
		{0.75 * d, func(p *pool) error { return p.setWeight(4, servers[4].Weight*3/4) }},
	}
}

func thresholdEvents(d float64) []control {
	return []control{
		{0.40 * d, func(p *pool) error { return p.setThresholds(4, 450, 0) }},
		{0.60 * d, func(p *pool) error { return p.setThresholds(4, 300, 0) }},
		{0.80 * d, func(p *pool) error { return p.setThresholds(0, 150, 140) }},
	}
}

// server is a simulated real server: a FIFO queue in front of Capacity
// slots, and (locality) a cache.
type server struct {
	cap   int
	busy  int
	queue []int32
	head  int
	cache *lru
}

// runOne replays w into one scheduler under a semantics. It returns the
// server each connection went to (-1: refused), for comparisons.
func runOne(w *workload, name string, sem ipvs.Semantics, seed uint64) (SchedResult, []int8, error) {
	res := SchedResult{Sched: name, HitRatio: Num(math.NaN()), Affinity: Num(math.NaN())}
	var clock float64
	now := func() time.Time { return simBase.Add(time.Duration(clock * float64(time.Second))) }
	p, err := newPool(name, sem, seed, w.servers, now)
	if err != nil {
		return res, nil, err
	}
	n := len(w.servers)
	srv := make([]server, n)
	for i, s := range w.servers {
		srv[i].cap = s.Capacity
		if w.locality {
			srv[i].cache = newLRU(cacheEntries)
		}
	}
	var ctl []control
	if w.churn {
		ctl = churnEvents(w.duration, w.servers)
	}
	if w.thresholds {
		ctl = thresholdEvents(w.duration)
	}
	picks := make([]int8, len(w.trace))
	destOf := make([]int8, len(w.trace))
	established := make([]bool, len(w.trace))
	delays := make([]float64, 0, len(w.trace))
	conns := make([]int64, n)
	var firstSrv [256]int8 // nat: by the client address's last byte
	var moved [256]bool
	for i := range firstSrv {
		firstSrv[i] = -1
	}
	var hits, lookups int64
	var h evHeap
	var seq uint64
	pkt := sched.Packet{Proto: ipvs.ProtoTCP, Dst: vip, DstPort: 80}

	start := func(i int32, s *server) {
		s.busy++
		delays = append(delays, clock-w.trace[i].t)
		seq++
		h.push(event{t: clock + w.trace[i].work, kind: evDone, seq: seq, conn: i})
	}
	next := 0
	for next < len(w.trace) || len(h) > 0 || len(ctl) > 0 {
		// Pick the earliest of: control change, heap event, arrival.
		ta := math.Inf(1)
		if next < len(w.trace) {
			ta = w.trace[next].t
		}
		th := math.Inf(1)
		if len(h) > 0 {
			th = h[0].t
		}
		if len(ctl) > 0 && ctl[0].at <= th && ctl[0].at <= ta {
			clock = ctl[0].at
			if err := ctl[0].do(p); err != nil {
				return res, nil, fmt.Errorf("bench: %s: %w", name, err)
			}
			ctl = ctl[1:]
			continue
		}
		if th <= ta {
			e := h.pop()
			clock = e.t
			di := destOf[e.conn]
			if di < 0 {
				continue // cannot happen: work > handshake
			}
			d := p.dests[di]
			switch e.kind {
			case evEstablished:
				if !established[e.conn] {
					established[e.conn] = true
					d.SetActive(true)
				}
			case evGone:
				d.Unbind(false, false)
				destOf[e.conn] = -1
			case evDone:
				if w.thresholds {
					// closed: inactive until TIME_WAIT ends
					if established[e.conn] {
						d.SetActive(false)
					}
					seq++
					h.push(event{t: clock + linger, kind: evGone, seq: seq, conn: e.conn})
				} else {
					d.Unbind(false, established[e.conn])
					destOf[e.conn] = -1
				}
				established[e.conn] = false
				s := &srv[di]
				s.busy--
				if s.head < len(s.queue) {
					j := s.queue[s.head]
					s.head++
					if s.head == len(s.queue) {
						s.queue, s.head = s.queue[:0], 0
					}
					start(j, s)
				}
			}
			continue
		}
		i := int32(next)
		a := &w.trace[next]
		next++
		clock = a.t
		pkt.Src = netip.AddrFrom4(a.src)
		pkt.SrcPort = a.sport
		if w.locality {
			pkt.Dst = targetAddr(a.target)
		}
		d := p.s.Schedule(p.svc, &pkt)
		if d == nil {
			res.Refused++
			destOf[i], picks[i] = -1, -1
			continue
		}
		di := p.index(d)
		if di < 0 {
			return res, nil, fmt.Errorf("bench: %s picked a dest that is not in the service", name)
		}
		picks[i] = int8(di)
		if !p.in[di] || d.Weight() == 0 {
			res.Misrouted++
		}
		destOf[i] = int8(di)
		conns[di]++
		d.Bind(false)
		seq++
		h.push(event{t: clock + handshake, kind: evEstablished, seq: seq, conn: i})
		if w.locality {
			lookups++
			if srv[di].cache.access(a.target) {
				hits++
			}
		}
		if w.nat {
			c := a.src[3]
			if firstSrv[c] < 0 {
				firstSrv[c] = int8(di)
			} else if firstSrv[c] != int8(di) {
				moved[c] = true
			}
		}
		s := &srv[di]
		if s.busy < s.cap {
			start(i, s)
		} else {
			s.queue = append(s.queue, i)
		}
	}
	res.Conns = conns
	var total int64
	for _, c := range conns {
		total += c
	}
	norm := make([]float64, n)
	res.Shares = make([]Num, n)
	for i, c := range conns {
		res.Shares[i] = Num(math.NaN())
		if total > 0 {
			res.Shares[i] = Num(float64(c) / float64(total))
		}
		norm[i] = float64(c) / float64(w.servers[i].Weight)
	}
	res.Jain = Num(Jain(norm))
	res.CV = Num(CV(norm))
	res.Overprovision = Num(Overprovision(norm))
	ps := Percentiles(delays, 50, 90, 99)
	res.DelayP50, res.DelayP90, res.DelayP99 = Num(ps[0]*1000), Num(ps[1]*1000), Num(ps[2]*1000)
	if w.locality && lookups > 0 {
		res.HitRatio = Num(float64(hits) / float64(lookups))
	}
	if w.nat {
		seen, kept := 0, 0
		for c := range firstSrv {
			if firstSrv[c] >= 0 {
				seen++
				if !moved[c] {
					kept++
				}
			}
		}
		if seen > 0 {
			res.Affinity = Num(float64(kept) / float64(seen))
		}
	}
	return res, picks, nil
}

// moveKey is a flow of the disruption experiment.
type moveKey struct {
	src, dst [4]byte
	sport    uint16
}

// replay schedules every key once on an idle service, binding each flow
// to its dest (so least-connection schedulers spread them as they would a
// burst), then releases them all. It returns key index -> server index
// (-1: refused).
func replay(p *pool, keys []moveKey) map[int]int {
	m := make(map[int]int, len(keys))
	pkt := sched.Packet{Proto: ipvs.ProtoTCP, DstPort: 80}
	for i, k := range keys {
		pkt.Src, pkt.Dst, pkt.SrcPort = netip.AddrFrom4(k.src), netip.AddrFrom4(k.dst), k.sport
		d := p.s.Schedule(p.svc, &pkt)
		di := -1
		if d != nil {
			di = p.index(d)
			d.Bind(false)
			d.SetActive(true)
		}
		m[i] = di
	}
	for _, d := range p.dests {
		d.SetCounters(0, 0, 0)
	}
	return m
}

func moveKeys(seed uint64, n int) []moveKey {
	r := rand.New(rand.NewPCG(seed, seed^0x6a09e667f3bcc909))
	keys := make([]moveKey, n)
	for i := range keys {
		keys[i] = moveKey{
			src:   [4]byte{10, byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())},
			dst:   targetAddr(uint32(r.IntN(zipfTargets))).As4(),
			sport: uint16(1024 + r.IntN(64512)),
		}
	}
	return keys
}

func share(m map[int]int, srv int) float64 {
	if len(m) == 0 {
		return math.NaN()
	}
	n := 0
	for _, v := range m {
		if v == srv {
			n++
		}
	}
	return float64(n) / float64(len(m))
}

// runMoved is the disruption experiment for one scheduler under a
// semantics; it also returns the three replays' choices, one after the
// other, for comparisons.
func runMoved(name string, sem ipvs.Semantics, seed uint64, keys []moveKey) (MoveResult, []int8, error) {
	res := MoveResult{Sched: name}
	clock := simBase
	p, err := newPool(name, sem, seed, defaultServers, func() time.Time { return clock })
	if err != nil {
		return res, nil, err
	}
	before := replay(p, keys)
	clock = clock.Add(time.Second)
	if err := p.del(movedRemoved); err != nil {
		return res, nil, fmt.Errorf("bench: %s: %w", name, err)
	}
	left := replay(p, keys)
	clock = clock.Add(time.Second)
	if err := p.add(movedRemoved); err != nil {
		return res, nil, fmt.Errorf("bench: %s: %w", name, err)
	}
	back := replay(p, keys)
	res.Leave, res.Join = Num(math.NaN()), Num(math.NaN())
	res.LeaveMin, res.JoinMin = Num(share(before, movedRemoved)), Num(share(back, movedRemoved))
	if share(before, -1) < 1 {
		res.Leave = Num(MovedFraction(before, left))
		res.Join = Num(MovedFraction(left, back))
	} else {
		res.LeaveMin, res.JoinMin = Num(math.NaN()), Num(math.NaN())
	}
	return res, append(append(mapPicks(before), mapPicks(left)...), mapPicks(back)...), nil
}

// diffPicks compares two runs' choices, connection by connection.
func diffPicks(a, b []int8) (frac float64, first int64) {
	first = -1
	n := 0
	for i := range a {
		if a[i] != b[i] {
			if first < 0 {
				first = int64(i)
			}
			n++
		}
	}
	if len(a) == 0 {
		return math.NaN(), first
	}
	return float64(n) / float64(len(a)), first
}

func mapPicks(m map[int]int) []int8 {
	out := make([]int8, len(m))
	for k, v := range m {
		out[k] = int8(v)
	}
	return out
}

// RunSched runs the sched bench. The report depends only on the
// configuration (seed included), not on timing or Workers.
func RunSched(c SchedConfig) (*SchedReport, error) {
	c.defaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	ws := buildWorkloads(&c)
	rep := &SchedReport{Seed: c.Seed, Conns: c.Conns, Load: c.Load, Scheds: c.Scheds, Semantics: c.Semantics[0]}
	if len(c.Semantics) == 2 {
		rep.Compared = &c.Semantics[1]
	}
	// diffs[w][s]: nil when the semantics agreed (or only one ran)
	diffs := make([][]*SemDiff, len(ws)+1)
	for i := range diffs {
		diffs[i] = make([]*SemDiff, len(c.Scheds))
	}
	rep.Workloads = make([]WorkloadReport, len(ws))
	var wsum int32
	for _, s := range defaultServers {
		wsum += s.Weight
	}
	for i, w := range ws {
		wr := &rep.Workloads[i]
		wr.Name, wr.Description, wr.Servers, wr.Duration = w.name, w.desc, w.servers, Num(w.duration)
		for _, s := range w.servers {
			wr.WeightShares = append(wr.WeightShares, Num(float64(s.Weight)/float64(wsum)))
		}
		wr.Results = make([]SchedResult, len(c.Scheds))
	}
	keys := moveKeys(c.Seed, c.Keys)
	rep.Disruption = Disruption{Keys: c.Keys, Servers: slices.Clone(defaultServers), Removed: movedRemoved, Results: make([]MoveResult, len(c.Scheds))}

	// One job per (workload, scheduler), plus one disruption job per
	// scheduler; each writes its own slot, so the order of completion
	// does not matter.
	type job struct{ w, s int } // w == len(ws): disruption
	jobs := make(chan job)
	total := (len(ws) + 1) * len(c.Scheds)
	var (
		mu       sync.Mutex
		done     int
		firstErr error
		wg       sync.WaitGroup
	)
	for range min(c.Workers, total) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				name := c.Scheds[j.s]
				var err error
				what := name + "/disruption"
				if j.w < len(ws) {
					what = name + "/" + ws[j.w].name
					diffs[j.w][j.s], err = runCompared(ws[j.w], name, c.Semantics, c.Seed, &rep.Workloads[j.w].Results[j.s])
				} else {
					diffs[j.w][j.s], err = runMovedCompared(name, c.Semantics, c.Seed, keys, &rep.Disruption.Results[j.s])
				}
				mu.Lock()
				done++
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if c.Progress != nil {
					c.Progress(done, total, what)
				}
				mu.Unlock()
			}
		}()
	}
	for w := 0; w <= len(ws); w++ {
		for s := range c.Scheds {
			jobs <- job{w, s}
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	for _, ds := range diffs {
		for _, d := range ds {
			if d != nil {
				rep.Differences = append(rep.Differences, *d)
			}
		}
	}
	return rep, nil
}

// runCompared runs a workload into one scheduler under the first
// semantics, writing the result to res, and, if there is a second, again
// under it; it returns where the two differ (nil if nowhere).
func runCompared(w *workload, name string, sems []ipvs.Semantics, seed uint64, res *SchedResult) (*SemDiff, error) {
	a, pa, err := runOne(w, name, sems[0], seed)
	if err != nil {
		return nil, err
	}
	*res = a
	if len(sems) < 2 {
		return nil, nil
	}
	b, pb, err := runOne(w, name, sems[1], seed)
	if err != nil {
		return nil, err
	}
	frac, first := diffPicks(pa, pb)
	if first < 0 {
		return nil, nil
	}
	return &SemDiff{Workload: w.name, Sched: name, Picks: Num(frac), First: first,
		Shares: a.Shares, OtherShares: b.Shares, Refused: a.Refused, OtherRefused: b.Refused, Jain: a.Jain, OtherJain: b.Jain,
		Moved: [4]Num{Num(math.NaN()), Num(math.NaN()), Num(math.NaN()), Num(math.NaN())}}, nil
}

// runMovedCompared is runCompared for the disruption experiment.
func runMovedCompared(name string, sems []ipvs.Semantics, seed uint64, keys []moveKey, res *MoveResult) (*SemDiff, error) {
	a, pa, err := runMoved(name, sems[0], seed, keys)
	if err != nil {
		return nil, err
	}
	*res = a
	if len(sems) < 2 {
		return nil, nil
	}
	b, pb, err := runMoved(name, sems[1], seed, keys)
	if err != nil {
		return nil, err
	}
	frac, first := diffPicks(pa, pb)
	if first < 0 {
		return nil, nil
	}
	return &SemDiff{Workload: "disruption", Sched: name, Picks: Num(frac), First: first,
		Jain: Num(math.NaN()), OtherJain: Num(math.NaN()), Moved: [4]Num{a.Leave, a.Join, b.Leave, b.Join}}, nil
}

// lru is a fixed-size least-recently-used set of target indices, kept in
// index-linked arrays so that an access allocates nothing.
type lru struct {
	idx        map[uint32]int32
	key        []uint32
	prev, next []int32 // slot 0 is the list head (sentinel)
	n          int
}

func newLRU(size int) *lru {
	l := &lru{idx: make(map[uint32]int32, size), key: make([]uint32, size+1),
		prev: make([]int32, size+1), next: make([]int32, size+1)}
	return l
}

func (l *lru) unlink(i int32) {
	l.next[l.prev[i]] = l.next[i]
	l.prev[l.next[i]] = l.prev[i]
}

func (l *lru) front(i int32) {
	l.prev[i] = 0
	l.next[i] = l.next[0]
	l.prev[l.next[0]] = i
	l.next[0] = i
}

// access reports whether k was cached and makes it the most recent.
func (l *lru) access(k uint32) bool {
	if i, ok := l.idx[k]; ok {
		l.unlink(i)
		l.front(i)
		return true
	}
	var i int32
	if l.n < len(l.key)-1 {
		l.n++
		i = int32(l.n)
	} else {
		i = l.prev[0] // the least recent
		l.unlink(i)
		delete(l.idx, l.key[i])
	}
	l.key[i] = k
	l.idx[k] = i
	l.front(i)
	return false
}
