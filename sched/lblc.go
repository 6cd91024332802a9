package sched

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golvs/golvs/ipvs"
)

// Constants of ip_vs_lblc.c and ip_vs_lblcr.c.
const (
	lblcTabBits = 10 // CONFIG_IP_VS_LBLC_TAB_BITS, CONFIG_IP_VS_LBLCR_TAB_BITS
	lblcTabSize = 1 << lblcTabBits
	lblcTabMask = lblcTabSize - 1
	// LBLCMaxEntries is the table's max_size, IP_VS_LBLC_TAB_SIZE·16:
	// the size the GC timer trims the cache toward (never a limit).
	LBLCMaxEntries = lblcTabSize * 16
	// LBLCCurrentCap is where current kernels (6.1.191+) stop adding
	// entries: max_size·3/2.
	LBLCCurrentCap = LBLCMaxEntries * 3 / 2
	// LBLCMemoryBound is where a classic cache stops adding entries.
	// Classic kernels have no cap: they stop only when memory runs out
	// (the GFP_ATOMIC allocation fails, and the pick is still served).
	// golvs bounds what a stream of new destination addresses can grow
	// the same way, at a fixed budget (about 100 MB per service), far
	// above anything the GC lets a sane workload reach.
	LBLCMemoryBound = 1 << 20
	// LBLCCheckInterval is CHECK_EXPIRE_INTERVAL, the GC timer's period.
	LBLCCheckInterval = 60 * time.Second
	// LBLCEntryTimeout is ENTRY_TIMEOUT, the idle time after which the
	// partial GC may drop an entry.
	LBLCEntryTimeout = 6 * time.Minute
	// LBLCDefaultExpiration is the default of the lblc_expiration and
	// lblcr_expiration sysctls (24 h).
	LBLCDefaultExpiration  = 24 * time.Hour
	countForFullExpiration = 30
)

func init() {
	Register("lblc", func(s ipvs.Semantics) Scheduler { return NewLBLC(CacheOptions{Semantics: s}) })
	Register("lblcr", func(s ipvs.Semantics) Scheduler { return NewLBLCR(CacheOptions{Semantics: s}) })
}

// CacheOptions configure lblc and lblcr. The zero value is the current
// kernel's defaults.
type CacheOptions struct {
	// Semantics selects the cache rules (spec §2.12, §2.13): current
	// stops adding entries at LBLCCurrentCap and counts lblc entries
	// exactly; classic has no cap and counts each lblc replacement as
	// one more entry (the kernel bug 6.1.191 fixed), which the GC reads.
	Semantics ipvs.Semantics
	// Now is the clock (nil: time.Now). Tests inject a fake one, so the
	// expiry rules run without sleeping.
	Now func() time.Time
	// Expiration is the lblc_expiration / lblcr_expiration sysctl
	// (0: 24 h).
	Expiration time.Duration
	// MaxEntries caps the number of cache entries: at the cap a miss
	// still uses the dest it picked but creates no entry (spec §2.12).
	// 0 means the semantics' rule (current: LBLCCurrentCap, classic:
	// none but LBLCMemoryBound); a negative value means no cap at all,
	// as in kernels before 6.1.191 (6.1.183-6.1.190 pair it with the
	// current overhead). Entries not made for the cap are counted
	// (NotCached).
	MaxEntries int
}

// cacheClock turns the clock into nanoseconds since the scheduler was
// made (the jiffies of the kernel code) and holds the GC timer's state.
// The timer runs lazily: the first Schedule after a 60 s boundary does the
// work of the kernel's periodic_timer for each period that ended, without
// a goroutine.
type cacheClock struct {
	now       func() time.Time
	base      time.Time
	nextCheck int64
	expire    int64
	counter   int
	rover     int
}

func (c *cacheClock) init(o CacheOptions) {
	c.now = o.Now
	if c.now == nil {
		c.now = time.Now
	}
	c.base = c.now()
	c.nextCheck = int64(LBLCCheckInterval)
	c.expire = int64(o.Expiration)
	if c.expire <= 0 {
		c.expire = int64(LBLCDefaultExpiration)
	}
	c.counter = 1
}

func (c *cacheClock) ticks() int64 { return int64(c.now().Sub(c.base)) }

func maxEntries(o CacheOptions) int {
	switch {
	case o.MaxEntries == 0 && o.Semantics == ipvs.Current:
		return LBLCCurrentCap
	case o.MaxEntries == 0:
		return LBLCMemoryBound
	case o.MaxEntries < 0:
		return int(^uint(0) >> 1)
	}
	return o.MaxEntries
}

// CacheCounter is implemented by lblc and lblcr: NotCached counts the
// picks that created no cache entry because the cache was at its cap
// (the pick itself was served).
type CacheCounter interface {
	NotCached() uint64
}

func lblcHash(a netip.Addr) uint32 { return hash32(fold(a), lblcTabBits) }

// lblcOverloaded is is_overloaded of lblc and lblcr: act(d) > w(d) and
// some dest of the service is below half its weight.
func lblcOverloaded(d *ipvs.Dest, dests []*ipvs.Dest) bool {
	if d.ActiveConns() > d.Weight() {
		for _, m := range dests {
			if int64(m.ActiveConns())*2 < int64(m.Weight()) {
				return true
			}
		}
	}
	return false
}

// cacheEntry is one lblc or lblcr cache entry (lblc uses dest, lblcr
// set). Entries live in one slice and are linked by index (next: 0 = end,
// i+1 = entries[i]), so the table holds no per-entry heap objects, and
// freed entries (with their set's backing array) are reused from a free
// list.
type cacheEntry struct {
	addr    netip.Addr
	dest    *ipvs.Dest   // lblc
	set     []*ipvs.Dest // lblcr: newest member first
	lastuse int64
	lastmod int64 // lblcr: last change of set
	next    int32
}

// cacheTable is the hash table and GC state both schedulers share.
type cacheTable struct {
	clk     cacheClock
	max     int
	phantom bool // classic lblc: a replacement counts as one more entry
	buckets [lblcTabSize]int32
	entries []cacheEntry
	free    int32
	n       int // the kernel's tbl->entries, which the GC reads
	live    int // entries in the table
	// notCached counts entries not made at the cap (read by exporters
	// without the scheduler's lock).
	notCached atomic.Uint64
}

func (t *cacheTable) init(o CacheOptions) {
	t.max = maxEntries(o)
	t.clk.init(o)
	t.entries = make([]cacheEntry, 0, 64)
}

func (t *cacheTable) reset() {
	t.buckets = [lblcTabSize]int32{}
	t.entries, t.free, t.n, t.live = t.entries[:0], 0, 0, 0
}

// tick returns now, first running the GC timer for every period that
// has ended, each with the time it would have run at.
func (t *cacheTable) tick() int64 {
	now := t.clk.ticks()
	if now >= t.clk.nextCheck {
		t.catchUp(now)
	}
	return now
}

// catchUp does the work of every timer run due by now, with the counter
// arithmetic of each (spec §2.12, Expiry), and the same results as
// running them one by one: a run that would remove nothing changes only
// the counter (a whole-table sweep brings the rover back to where it
// was), so runs of those are skipped in O(1); only runs that remove
// entries sweep. After a long idle time this costs a few sweeps, not one
// per minute.
func (t *cacheTable) catchUp(now int64) {
	c := &t.clk
	const period = int64(LBLCCheckInterval)
	oldest, known := int64(0), false // the least lastuse, if live > 0
	for c.nextCheck <= now {
		at := c.nextCheck
		left := (now-at)/period + 1 // runs due, this one included
		if !known {
			oldest, known = t.oldest(), true
		}
		switch {
		case t.live == 0 && t.n <= LBLCMaxEntries:
			// An empty table: every run is counter arithmetic, 1..30
			// then the (empty) full check back to 1.
			c.counter = (c.counter-1+int(left%countForFullExpiration))%countForFullExpiration + 1
			c.nextCheck += left * period
		case c.counter%countForFullExpiration == 0:
			if t.live > 0 && at >= oldest+c.expire {
				t.checkExpire(at)
				known = false
			} else {
				c.counter = 1 // the full check finds nothing to drop
			}
			c.nextCheck += period
		case t.n <= LBLCMaxEntries:
			// counter++ on each run up to the next full check
			k := int64(countForFullExpiration - c.counter%countForFullExpiration)
			k = min(k, left)
			c.counter += int(k)
			c.nextCheck += k * period
		case t.live > 0 && at >= oldest+int64(LBLCEntryTimeout):
			t.checkExpire(at) // a partial GC that removes entries
			known = false
			c.nextCheck += period
		default:
			// Partial GCs that find nothing idle for 6 minutes; the
			// counter stays, so skip to the first run that can remove
			// an entry (none, with no live entries).
			k := left
			if t.live > 0 {
				k = min(k, (oldest+int64(LBLCEntryTimeout)-at+period-1)/period)
			}
			c.nextCheck += k * period
		}
	}
}

// oldest returns the least lastuse of the live entries (0 when none).
func (t *cacheTable) oldest() int64 {
	var m int64
	first := true
	for i := range t.entries {
		if e := &t.entries[i]; e.addr.IsValid() && (first || e.lastuse < m) {
			m, first = e.lastuse, false
		}
	}
	return m
}

func (t *cacheTable) get(a netip.Addr) *cacheEntry {
	for i := t.buckets[lblcHash(a)]; i != 0; i = t.entries[i-1].next {
		if e := &t.entries[i-1]; e.addr == a {
			return e
		}
	}
	return nil
}

// add links a new entry for a at the head of its bucket, or returns nil
// when the cache is at its cap (current kernels: entries >= 24576).
func (t *cacheTable) add(a netip.Addr, now int64) *cacheEntry {
	if t.n >= t.max {
		t.notCached.Add(1)
		return nil
	}
	var i int32
	if t.free != 0 {
		i = t.free
		t.free = t.entries[i-1].next
	} else {
		t.entries = append(t.entries, cacheEntry{})
		i = int32(len(t.entries))
	}
	h := lblcHash(a)
	e := &t.entries[i-1]
	*e = cacheEntry{addr: a, set: e.set[:0], lastuse: now, lastmod: now, next: t.buckets[h]}
	t.buckets[h] = i
	t.n++
	t.live++
	return e
}

// sweep removes from bucket j the entries idle for idle or longer
// (now ≥ lastuse + idle) and returns how many went.
func (t *cacheTable) sweep(j int, now, idle int64) int {
	removed := 0
	link := &t.buckets[j]
	for i := *link; i != 0; {
		e := &t.entries[i-1]
		next := e.next
		if now >= e.lastuse+idle {
			*link = next
			clear(e.set)
			*e = cacheEntry{set: e.set[:0], next: t.free}
			t.free = i
			t.n--
			t.live--
			removed++
		} else {
			link = &e.next
		}
		i = next
	}
	return removed
}

// checkExpire is one run of ip_vs_lblc_check_expire (and lblcr's, which
// is the same with its own sysctl).
func (t *cacheTable) checkExpire(now int64) {
	c := &t.clk
	if c.counter%countForFullExpiration == 0 {
		// full check: drop entries idle ≥ the expiration
		for i := 0; i < lblcTabSize; i++ {
			c.rover = (c.rover + 1) & lblcTabMask
			t.sweep(c.rover, now, c.expire)
		}
		c.counter = 1
		return
	}
	if t.n <= LBLCMaxEntries {
		c.counter++
		return
	}
	goal := (t.n - LBLCMaxEntries) * 4 / 3
	if goal > LBLCMaxEntries/2 {
		goal = LBLCMaxEntries / 2
	}
	for i := 0; i < lblcTabSize; i++ {
		c.rover = (c.rover + 1) & lblcTabMask
		goal -= t.sweep(c.rover, now, int64(LBLCEntryTimeout))
		if goal <= 0 {
			break
		}
	}
}

// LBLC is locality-based least connection (spec §2.12, ip_vs_lblc.c): a
// cache from destination address to dest, 1024 buckets keyed by
// hash_32(addr, 10); a miss (or an unusable cached dest) picks by wlc and
// (re)writes the entry.
//
// Allocation: a hit allocates nothing. A miss takes an entry from the
// free list; only when that is empty does the entry slice grow (append,
// amortised; never once the cache has reached its working size).
// Schedule is O(1) on a hit whose dest is not above its weight, O(n)
// otherwise (the overload test and wlc walk the dests, as in the kernel).
// The GC timer's work runs inside the first Schedule after each 60 s
// period, with the injected clock.
type LBLC struct {
	mu    sync.Mutex
	dests []*ipvs.Dest
	t     cacheTable
}

// NewLBLC returns an lblc scheduler with the given options.
func NewLBLC(o CacheOptions) *LBLC {
	s := &LBLC{}
	s.t.init(o)
	s.t.phantom = o.Semantics == ipvs.Classic
	return s
}

// Name implements Scheduler.
func (*LBLC) Name() string { return "lblc" }

func (s *LBLC) relist(svc *Service) {
	s.mu.Lock()
	s.dests = cloneDests(svc.Dests)
	s.mu.Unlock()
}

// Init implements Scheduler. The cache starts empty.
func (s *LBLC) Init(svc *Service) error {
	s.mu.Lock()
	s.t.reset()
	s.mu.Unlock()
	s.relist(svc)
	return nil
}

// AddDest implements Scheduler (the kernel has no callback: it reads the
// live list; golvs refreshes its copy).
func (s *LBLC) AddDest(svc *Service, _ *ipvs.Dest) error { s.relist(svc); return nil }

// DelDest implements Scheduler. Entries that point at the dest stay; the
// dest is no longer AVAILABLE, so they are rescheduled when next used.
func (s *LBLC) DelDest(svc *Service, _ *ipvs.Dest) error { s.relist(svc); return nil }

// UpdDest implements Scheduler.
func (s *LBLC) UpdDest(svc *Service, _ *ipvs.Dest) error { s.relist(svc); return nil }

// Len returns the number of cache entries.
func (s *LBLC) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t.live
}

// NotCached implements CacheCounter.
func (s *LBLC) NotCached() uint64 { return s.t.notCached.Load() }

// Counter returns the kernel's entry counter (tbl->entries), which the GC
// reads: Len in current kernels; in classic ones also one per
// replacement since the table was made.
func (s *LBLC) Counter() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t.n
}

// Schedule implements Scheduler.
func (s *LBLC) Schedule(_ *Service, p *Packet) *ipvs.Dest {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.t.tick()
	e := s.t.get(p.Dst)
	if e != nil {
		e.lastuse = now
		d := e.dest
		if d.Available() && d.Weight() > 0 && !lblcOverloaded(d, s.dests) {
			return d
		}
	}
	d := wlcPick(s.dests)
	if d == nil {
		return nil
	}
	// ip_vs_lblc_new: keep an entry that points at d; repoint one that
	// points elsewhere (the kernel frees it and adds a new one with
	// lastuse = now: classic kernels forgot to decrement the counter
	// for the freed one, and at the current cap the delete makes room
	// for the new one); else create one unless the cache is at its cap.
	if e != nil {
		if e.dest != d {
			e.dest = d
			if s.t.phantom {
				s.t.n++
			}
		}
	} else if e = s.t.add(p.Dst, now); e != nil {
		e.dest = d
	}
	return d
}
