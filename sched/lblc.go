package sched

import (
	"net/netip"
	"sync"
	"time"

	"github.com/golvs/golvs/ipvs"
)

// Constants of ip_vs_lblc.c and ip_vs_lblcr.c.
const (
	lblcTabBits = 10 // CONFIG_IP_VS_LBLC_TAB_BITS, CONFIG_IP_VS_LBLCR_TAB_BITS
	lblcTabSize = 1 << lblcTabBits
	lblcTabMask = lblcTabSize - 1
	// LBLCMaxEntries is the table's max_size, IP_VS_LBLC_TAB_SIZE·16.
	LBLCMaxEntries = lblcTabSize * 16
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
	Register("lblc", func() Scheduler { return NewLBLC(CacheOptions{}) })
	Register("lblcr", func() Scheduler { return NewLBLCR(CacheOptions{}) })
}

// CacheOptions configure lblc and lblcr. The zero value is the kernel's
// defaults.
type CacheOptions struct {
	// Now is the clock (nil: time.Now). Tests inject a fake one, so the
	// expiry rules run without sleeping.
	Now func() time.Time
	// Expiration is the lblc_expiration / lblcr_expiration sysctl
	// (0: 24 h).
	Expiration time.Duration
	// MaxEntries caps the number of cache entries: beyond it a miss
	// still uses the dest it picked but creates no entry (spec §2.12).
	// 0 means LBLCMaxEntries; a negative value means no cap, as in
	// kernels that only trim the table from the GC timer.
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
	case o.MaxEntries == 0:
		return LBLCMaxEntries
	case o.MaxEntries < 0:
		return int(^uint(0) >> 1)
	}
	return o.MaxEntries
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
	buckets [lblcTabSize]int32
	entries []cacheEntry
	free    int32
	n       int
}

func (t *cacheTable) init(o CacheOptions) {
	t.max = maxEntries(o)
	t.clk.init(o)
	t.entries = make([]cacheEntry, 0, 64)
}

func (t *cacheTable) reset() {
	t.buckets = [lblcTabSize]int32{}
	t.entries, t.free, t.n = t.entries[:0], 0, 0
}

// tick returns now, first running the GC timer for every period that
// has ended, each with the time it would have run at. More than an hour
// behind, the older runs are skipped: they would find the same entries.
func (t *cacheTable) tick() int64 {
	now := t.clk.ticks()
	c := &t.clk
	if now >= c.nextCheck {
		const keep = 2 * countForFullExpiration
		if behind := (now-c.nextCheck)/int64(LBLCCheckInterval) + 1; behind > keep {
			c.nextCheck += (behind - keep) * int64(LBLCCheckInterval)
		}
		for c.nextCheck <= now {
			t.checkExpire(c.nextCheck)
			c.nextCheck += int64(LBLCCheckInterval)
		}
	}
	return now
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
// when the cache is full.
func (t *cacheTable) add(a netip.Addr, now int64) *cacheEntry {
	if t.n >= t.max {
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
	// ip_vs_lblc_new: keep an entry that points at d, repoint one that
	// points elsewhere (the kernel frees it and adds a new one with
	// lastuse = now), else create one unless the cache is full.
	if e != nil {
		e.dest = d
	} else if e = s.t.add(p.Dst, now); e != nil {
		e.dest = d
	}
	return d
}
