package bench

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
)

// Limits of the conntrack bench.
const (
	MinEntries = 1000
	MaxEntries = 200_000_000
	// EstBytesPerEntry is the estimate used to refuse sizes that do not
	// fit in memory: an entry, its in and out index slots and slack.
	EstBytesPerEntry = 250
	// DefaultLookups is the number of lookups timed at each size.
	DefaultLookups = 1_000_000
)

// DefaultSizes are the table sizes measured by default.
var DefaultSizes = []int{10_000, 1_000_000, 10_000_000}

// ConntrackConfig sets up a conntrack bench.
type ConntrackConfig struct {
	Sizes   []int  // entries, each MinEntries..MaxEntries
	Lookups int    // lookups timed per size (0: DefaultLookups)
	Seed    uint64 // keys and lookup order
	// MemAvailable is the memory the sizes must fit in, in bytes (0: read
	// MemAvailable from /proc/meminfo; if that is unreadable, no check).
	MemAvailable uint64
	Progress     func(done, total int, what string)
}

// ConntrackReport is the outcome of a conntrack bench.
type ConntrackReport struct {
	GOARCH     string          `json:"goarch"`
	GoVersion  string          `json:"go_version"`
	NumCPU     int             `json:"num_cpu"`
	Shards     int             `json:"shards"`
	Sizes      []ConntrackSize `json:"sizes"`
	FixedBytes int64           `json:"fixed_bytes"` // an empty table
}

// ConntrackSize is the measurement at one size. BytesPerEntry is the
// heap growth of the filled table over its entries; MarginalBytes leaves
// out the empty table's fixed cost (shards and timing wheels).
type ConntrackSize struct {
	Entries       int `json:"entries"`
	BytesPerEntry Num `json:"bytes_per_entry"`
	MarginalBytes Num `json:"marginal_bytes_per_entry"`
	InsertNs      Num `json:"insert_ns"`
	LookupNs      Num `json:"lookup_ns"`
	ExpireNs      Num `json:"expire_ns"`
}

// MemAvailable reads MemAvailable from /proc/meminfo, in bytes.
func MemAvailable() (uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemAvailable:" {
			kb, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("bench: /proc/meminfo: %w", err)
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("bench: /proc/meminfo has no MemAvailable")
}

// Validate checks the sizes' range and that the largest fits in memory
// (sizes run one after the other, each table freed before the next).
func (c *ConntrackConfig) Validate() error {
	if len(c.Sizes) == 0 {
		return errors.New("bench: no --sizes given")
	}
	largest := 0
	for _, n := range c.Sizes {
		if n < MinEntries || n > MaxEntries {
			return fmt.Errorf("bench: --sizes entry %d out of range (allowed: %d..%d)", n, MinEntries, MaxEntries)
		}
		largest = max(largest, n)
	}
	if c.Lookups < 0 || c.Lookups > 100_000_000 {
		return fmt.Errorf("bench: --lookups %d out of range (allowed: 0..100000000, 0 for %d)", c.Lookups, DefaultLookups)
	}
	avail := c.MemAvailable
	if avail == 0 {
		if a, err := MemAvailable(); err == nil {
			avail = a
		}
	}
	// The lookup keys are 16 bytes each on top of the table.
	keyBytes := uint64(max(c.Lookups, DefaultLookups)) * 16
	need := uint64(largest)*EstBytesPerEntry + keyBytes
	if avail != 0 && need > avail {
		fits := uint64(0)
		if avail > keyBytes {
			fits = (avail - keyBytes) / EstBytesPerEntry
		}
		return fmt.Errorf("%w: %d entries need about %s (%d bytes/entry) but MemAvailable is %s; the largest size that fits is about %d",
			ErrNoMemory, largest, human(need), EstBytesPerEntry, human(avail), fits)
	}
	return nil
}

func human(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%d KiB", b>>10)
}

// ctKeys makes the keys of entry i: the client address is i times an odd
// constant (a bijection of uint32, so every i < 2^32 is a distinct flow)
// towards one VIP; the out key is the real server's view, as NAT files it.
func ctKeys(i uint32) (in, out conntrack.Key) {
	c := i * 2654435761
	cip := [4]byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)}
	sport := uint16(1024 + i%60000)
	in = conntrack.Key{SrcIP: cip, DstIP: [4]byte{192, 0, 2, 1}, SrcPort: sport, DstPort: 80, Proto: ipvs.ProtoTCP}
	out = conntrack.Key{SrcIP: [4]byte{198, 51, 100, byte(10 + i%4)}, DstIP: cip, SrcPort: 80, DstPort: sport, Proto: ipvs.ProtoTCP}
	return in, out
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

const (
	ctShards  = 256
	ctMaxReps = 20
)

// ctFill makes a table of n entries, as many as it holds, with timeouts
// of 1 s so that one Advance expires everything, and returns the insert
// cost in ns/op.
func ctFill(n int, seed uint64, dests []*ipvs.Dest) (*conntrack.Table, float64, error) {
	t := conntrack.New(conntrack.Config{Shards: ctShards, MaxEntries: n, Seed: seed | 1})
	for s := uint8(0); s < conntrack.NumTCPStates; s++ {
		t.SetStateTimeout(s, 1)
	}
	var nc conntrack.NewConn
	nc.Method = ipvs.MethodMasq
	var h conntrack.Hit
	start := time.Now()
	for i := range n {
		nc.In, nc.Out = ctKeys(uint32(i))
		nc.Dest = dests[i&3]
		if _, err := t.Create(&nc, tcpSYN, &h); err != nil {
			return nil, 0, fmt.Errorf("bench: conntrack insert %d of %d: %w", i, n, err)
		}
	}
	return t, float64(time.Since(start).Nanoseconds()) / float64(n), nil
}

// ctLookups times lookups of random live entries of t, in ns/op.
func ctLookups(t *conntrack.Table, n, count int, seed uint64) (Num, error) {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	keys := make([]conntrack.Key, count)
	for i := range keys {
		keys[i], _ = ctKeys(uint32(r.IntN(n)))
	}
	var h conntrack.Hit
	start := time.Now()
	for i := range keys {
		if t.LookupIn(&keys[i], tcpACK, &h) != conntrack.Found {
			return 0, fmt.Errorf("bench: conntrack lookup of a live entry missed at size %d", n)
		}
	}
	return Num(float64(time.Since(start).Nanoseconds()) / float64(len(keys))), nil
}

// TCP flags of the packets the bench plays.
const (
	tcpSYN = 0x02
	tcpACK = 0x10
)

// RunConntrack measures the real conntrack.Table at each size, one size
// at a time, on one goroutine.
func RunConntrack(c ConntrackConfig) (*ConntrackReport, error) {
	if c.Lookups == 0 {
		c.Lookups = DefaultLookups
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	report := &ConntrackReport{GOARCH: runtime.GOARCH, GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(), Shards: ctShards}
	base := heapAlloc()
	empty := conntrack.New(conntrack.Config{Shards: ctShards, MaxEntries: 1, Seed: c.Seed | 1})
	report.FixedBytes = int64(heapAlloc()) - int64(base)
	runtime.KeepAlive(empty)
	empty = nil

	svc := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: netip.MustParseAddr("192.0.2.1"), Port: 80}
	total := len(c.Sizes) * 3
	step := 0
	progress := func(what string) {
		step++
		if c.Progress != nil {
			c.Progress(step, total, what)
		}
	}
	for _, n := range c.Sizes {
		dests := make([]*ipvs.Dest, 4)
		for i := range dests {
			dests[i] = ipvs.NewDest(svc, ipvs.DestConfig{Addr: netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}), Port: 80, Weight: 1, Method: ipvs.MethodMasq})
		}
		sz := ConntrackSize{Entries: n}
		// Small tables are filled and expired several times (about a
		// million operations in all, at most ctMaxReps times) and the
		// median kept, so that one GC cycle or a busy neighbour does not
		// decide the figure; memory and lookups use the last table.
		reps := min(max(1_000_000/n, 1), ctMaxReps)
		var ins, exp []float64
		var t *conntrack.Table
		for r := range reps {
			last := r == reps-1
			t = nil // the previous round's table must not count below
			var before uint64
			if last {
				before = heapAlloc()
			}
			var err error
			var ns float64
			t, ns, err = ctFill(n, c.Seed, dests)
			if err != nil {
				return nil, err
			}
			ins = append(ins, ns)
			if last {
				used := int64(heapAlloc()) - int64(before)
				sz.BytesPerEntry = Num(float64(used) / float64(n))
				sz.MarginalBytes = Num(float64(used-report.FixedBytes) / float64(n))
				progress(fmt.Sprintf("conntrack %d: insert", n))
				if sz.LookupNs, err = ctLookups(t, n, c.Lookups, c.Seed); err != nil {
					return nil, err
				}
				progress(fmt.Sprintf("conntrack %d: lookup", n))
			}
			start := time.Now()
			t.Advance(time.Now().Add(10 * time.Second))
			el := time.Since(start)
			if t.Len() != 0 {
				return nil, fmt.Errorf("bench: conntrack: %d of %d entries left after expiry", t.Len(), n)
			}
			exp = append(exp, float64(el.Nanoseconds())/float64(n))
		}
		sz.InsertNs = Num(Percentile(ins, 50))
		sz.ExpireNs = Num(Percentile(exp, 50))
		progress(fmt.Sprintf("conntrack %d: expiry", n))
		runtime.KeepAlive(t)
		report.Sizes = append(report.Sizes, sz)
	}
	return report, nil
}

// WriteConntrackTable writes the report as a table.
func WriteConntrackTable(w io.Writer, r *ConntrackReport) error {
	fmt.Fprintf(w, "golvs bench conntrack: %s %s, %d CPUs, %d shards; an empty table holds %s\n",
		r.GoVersion, r.GOARCH, r.NumCPU, r.Shards, human(uint64(max(r.FixedBytes, 0))))
	fmt.Fprintf(w, "insert: Create with a SYN into an empty table (both indices, entry chunks and GC included; the indices are sized for the table up front); lookup: LookupIn of a random live entry with an ACK; expiry: Advance over all entries\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "entries\tbytes/entry\tmarginal\tinsert ns/op\tlookup ns/op\texpiry ns/op\t\n")
	for _, s := range r.Sizes {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t\n", s.Entries, fmtNum(s.BytesPerEntry, "%.0f"), fmtNum(s.MarginalBytes, "%.0f"),
			fmtNum(s.InsertNs, "%.0f"), fmtNum(s.LookupNs, "%.0f"), fmtNum(s.ExpireNs, "%.0f"))
	}
	return tw.Flush()
}

// parseSizes reads "10k,1m,10M,5000" (k and m are thousands and millions).
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		mult := 1
		switch f[len(f)-1] {
		case 'k', 'K':
			mult, f = 1000, f[:len(f)-1]
		case 'm', 'M':
			mult, f = 1_000_000, f[:len(f)-1]
		}
		v, err := strconv.Atoi(f)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bench: --sizes: %q is not a positive count (e.g. 10k,1m,10m)", f)
		}
		if v > MaxEntries/mult {
			return nil, fmt.Errorf("bench: --sizes entry %d%s out of range (allowed: %d..%d)", v, map[int]string{1: "", 1000: "k", 1_000_000: "m"}[mult], MinEntries, MaxEntries)
		}
		out = append(out, v*mult)
	}
	return out, nil
}

// ConntrackMain is "golvs bench conntrack [flags]". It writes a table (or
// JSON with --json) to stdout, a progress bar to stderr when stderr is a
// terminal, and plots to --out when set. It refuses, before allocating
// anything, sizes that would not fit in MemAvailable.
func ConntrackMain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("golvs bench conntrack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		c      ConntrackConfig
		sizes  string
		out    string
		asJSON bool
	)
	fs.StringVar(&sizes, "sizes", "10k,1m,10m", fmt.Sprintf("table sizes to measure, comma-separated, k/m suffixes (each %d..%d)", MinEntries, MaxEntries))
	fs.IntVar(&c.Lookups, "lookups", DefaultLookups, "lookups timed per size (1..100000000)")
	fs.Uint64Var(&c.Seed, "seed", 1, "seed of the table's hash and the lookup order")
	fs.StringVar(&out, "out", "", "folder to write plots to (SVG and PNG), created if missing")
	fs.BoolVar(&asJSON, "json", false, "write the report as JSON instead of a table")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: golvs bench conntrack [flags]\n\nMeasures the connection table's memory per entry and insert, lookup and\nexpiry cost at several sizes.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("bench conntrack: %v", err)
	}
	if fs.NArg() > 0 {
		return usagef("bench conntrack: unexpected argument %q", fs.Arg(0))
	}
	var err error
	if c.Sizes, err = parseSizes(sizes); err != nil {
		return &usageError{err.Error()}
	}
	if c.Lookups < 1 {
		return usagef("bench conntrack: --lookups %d out of range (allowed: 1..100000000)", c.Lookups)
	}
	if err := c.Validate(); err != nil {
		if errors.Is(err, ErrNoMemory) {
			return err
		}
		return &usageError{err.Error()}
	}
	progress, clear := newProgress(stderr)
	c.Progress = progress
	rep, err := RunConntrack(c)
	clear()
	if err != nil {
		return err
	}
	if out != "" {
		if err := PlotConntrack(rep, out); err != nil {
			return err
		}
	}
	if asJSON {
		return writeJSON(stdout, rep)
	}
	return WriteConntrackTable(stdout, rep)
}
