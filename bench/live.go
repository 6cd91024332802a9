package bench

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/sched"
)

// LiveConfig is `golvs bench sched --live`: every scheduler in turn in
// front of real HTTP servers in a NAT lab, the servers answering after a
// service time that differs between them (their capacity), with a fixed
// number of concurrent clients making a bounded number of requests.
type LiveConfig struct {
	Scheds      []string
	Requests    int             // per scheduler
	Concurrency int             // clients at once
	Delays      []time.Duration // service time of each real server
	Weights     []int32         // their weights (the operator's estimate of capacity)
	Semantics   ipvs.Semantics  // the director's kernel semantics
}

// DefaultLive is a mix of two fast, one medium and one slow server,
// weighted by their speed.
var DefaultLive = LiveConfig{
	Requests:    400,
	Concurrency: 16,
	Delays:      []time.Duration{2 * time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 8 * time.Millisecond},
	Weights:     []int32{4, 4, 2, 1},
}

// ParseLiveServers reads "2ms:4,8ms:1": each real server's service time
// and weight.
func ParseLiveServers(spec string) ([]time.Duration, []int32, error) {
	var ds []time.Duration
	var ws []int32
	for _, f := range strings.Split(spec, ",") {
		dt, wt, ok := strings.Cut(strings.TrimSpace(f), ":")
		d, err1 := time.ParseDuration(dt)
		w, err2 := strconv.Atoi(wt)
		if !ok || err1 != nil || err2 != nil || d < 0 || d > 10*time.Second || w < 0 || w > 65535 {
			return nil, nil, fmt.Errorf("bench sched --live: --live-servers %q: %q is not SERVICE-TIME:WEIGHT (a duration up to 10s, a weight 0..65535)", spec, f)
		}
		ds, ws = append(ds, d), append(ws, int32(w))
	}
	if len(ds) > 16 {
		return nil, nil, fmt.Errorf("bench sched --live: --live-servers %q: at most 16 real servers", spec)
	}
	return ds, ws, nil
}

// Limits of the live mode.
const (
	MaxLiveRequests    = 20000
	MaxLiveConcurrency = 256
)

// Validate names the first broken limit.
func (c *LiveConfig) Validate() error {
	switch {
	case c.Requests < 1 || c.Requests > MaxLiveRequests:
		return fmt.Errorf("bench sched --live: --live-requests %d out of range (1..%d)", c.Requests, MaxLiveRequests)
	case c.Concurrency < 1 || c.Concurrency > MaxLiveConcurrency:
		return fmt.Errorf("bench sched --live: --live-concurrency %d out of range (1..%d)", c.Concurrency, MaxLiveConcurrency)
	case len(c.Delays) == 0 || len(c.Delays) != len(c.Weights):
		return fmt.Errorf("bench sched --live: one service time and one weight per real server")
	}
	for _, s := range c.Scheds {
		if err := sched.Check(s); err != nil {
			return err
		}
	}
	return nil
}

// LiveResult is one scheduler's measurement.
type LiveResult struct {
	Sched  string         `json:"sched"`
	OK     int            `json:"ok"`
	Failed int            `json:"failed"`
	P50    float64        `json:"p50_ms"`
	P90    float64        `json:"p90_ms"`
	P99    float64        `json:"p99_ms"`
	Mean   float64        `json:"mean_ms"`
	Shares map[string]int `json:"shares"`
	Wall   float64        `json:"wall_s"`
}

// LiveReport is the whole live run.
type LiveReport struct {
	Config  LiveConfig   `json:"config"`
	Results []LiveResult `json:"results"`
}

// RunLive builds the lab, runs every scheduler and tears the lab down.
func RunLive(c LiveConfig, progress func(done, total int, what string)) (*LiveReport, error) {
	if len(c.Scheds) == 0 {
		c.Scheds = sched.Names()
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	topo, err := lab.BuildNAT(lab.Options{Suffix: lab.RandomSuffix(), RealServers: len(c.Delays)})
	if err != nil {
		return nil, err
	}
	defer topo.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i, ns := range topo.RS {
		srv, err := lab.Serve(ctx, ns, fmt.Sprintf("rs%d", i+1), []int{80}, nil)
		if err != nil {
			return nil, err
		}
		srv.SetDelay(c.Delays[i])
	}
	var d *director.Director
	err = topo.Director.Do(func() error {
		var err error
		d, err = director.New(director.Config{
			Interfaces: []director.Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}},
			Workers:    1, FixHost: true, Semantics: c.Semantics,
			Conntrack: conntrack.Config{Tick: 100 * time.Millisecond},
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	rep := &LiveReport{Config: c}
	vip := netip.AddrPortFrom(lab.VIP, 80)
	key := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: lab.VIP, Port: 80}
	for n, s := range c.Scheds {
		if progress != nil {
			progress(n, len(c.Scheds), s)
		}
		d.Clear()
		if err := d.AddService(ipvs.ServiceConfig{ServiceKey: key, Sched: s}); err != nil {
			return nil, err
		}
		for i := range c.Delays {
			if err := d.AddDest(key, ipvs.DestConfig{Addr: lab.RIP(i + 1), Port: 80, Method: ipvs.MethodMasq, Weight: c.Weights[i]}); err != nil {
				return nil, err
			}
		}
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		err := d.WaitResolved(wctx)
		wcancel()
		if err != nil {
			return nil, err
		}
		start := time.Now()
		resp, err := lab.GetParallel(topo.Client, vip, c.Requests, c.Concurrency, 5*time.Second)
		if err != nil {
			return nil, err
		}
		r := LiveResult{Sched: s, Shares: map[string]int{}, Wall: time.Since(start).Seconds()}
		var lat []float64
		for _, x := range resp {
			if x.Err != nil {
				r.Failed++
				continue
			}
			r.OK++
			r.Shares[x.Body]++
			lat = append(lat, float64(x.Latency)/float64(time.Millisecond))
		}
		if len(lat) > 0 {
			sort.Float64s(lat)
			r.P50, r.P90, r.P99 = Percentile(lat, 50), Percentile(lat, 90), Percentile(lat, 99)
			r.Mean = Mean(lat)
		}
		rep.Results = append(rep.Results, r)
	}
	if progress != nil {
		progress(len(c.Scheds), len(c.Scheds), "")
	}
	return rep, nil
}

// WriteLiveTable prints the live report.
func WriteLiveTable(w io.Writer, rep *LiveReport) error {
	c := rep.Config
	fmt.Fprintf(w, "golvs bench sched --live: NAT lab, %d real servers with service times", len(c.Delays))
	for i, d := range c.Delays {
		fmt.Fprintf(w, " rs%d=%s(w%d)", i+1, d, c.Weights[i])
	}
	fmt.Fprintf(w, "; %d requests per scheduler, %d at once, one connection each; %s kernel semantics\n", c.Requests, c.Concurrency, c.Semantics)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "sched\tok\tfailed\tp50 ms\tp90 ms\tp99 ms\tmean ms\treq/s\tshares rs1..\t")
	for _, r := range rep.Results {
		shares := ""
		for i := range c.Delays {
			shares += fmt.Sprintf(" %d", r.Shares[fmt.Sprintf("rs%d", i+1)])
		}
		rate := 0.0
		if r.Wall > 0 {
			rate = float64(r.OK) / r.Wall
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t%s\t\n", r.Sched, r.OK, r.Failed, r.P50, r.P90, r.P99, r.Mean, rate, shares)
	}
	return tw.Flush()
}
