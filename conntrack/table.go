package conntrack

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/golvs/golvs/ipvs"
)

// Errors.
var (
	ErrFull   = errors.New("conntrack: table full")
	ErrExists = errors.New("conntrack: connection exists")
	ErrConfig = errors.New("conntrack: bad configuration")
)

// Config sets up a table. Zero values take defaults.
type Config struct {
	Shards     int           // power of two, at most 256; default 256
	MaxEntries int           // --conn-max; default 1<<20
	Tick       time.Duration // wheel granularity; default 1s
	WheelSlots int           // default 4096 ticks
	Seed       uint64        // the hash key's seed; 0: random (tests pass one to reproduce)
	// Defense: IPVS's amemthresh, am_droprate, drop_entry, drop_packet
	// and secure_tcp (defense.go).
	Defense Defense
	// NoEvict refuses a new conn when the table is full instead of
	// replacing a half-open or closing one (defense.go). Only tests that
	// show the difference set it.
	NoEvict bool
}

// Stats are the table's counters.
type Stats struct {
	Entries int64
	Created uint64
	Expired uint64 // entries torn down, for any reason
	Dropped uint64 // new conns refused because the table was full
	Reused  uint64 // conns expired early by a new SYN (conn_reuse_mode)
	Rescans uint64 // wheel entries re-filed because they were refreshed
	Evicted uint64 // half-open or closing conns replaced by a new conn at the limit
	// DropEntry counts conns the drop_entry defense dropped.
	DropEntry uint64
	// Bytes is the memory the table holds (indices, wheels, entry chunks).
	Bytes int64
}

// Table is the connection table.
type Table struct {
	shards  []shard
	hk      hashKey
	max     int64
	tick    time.Duration
	nslots  int64
	start   time.Time
	noEvict bool

	now atomic.Int64 // coarse clock in ticks, advanced by Advance; read by every packet

	// Written by every new or ending conn: kept off the cache lines every
	// packet reads (the clock above, the timeouts below).
	_         [56]byte
	count     atomic.Int64
	created   atomic.Uint64
	expired   atomic.Uint64
	dropped   atomic.Uint64
	reused    atomic.Uint64
	rescans   atomic.Uint64
	evicted   atomic.Uint64
	dropEntry atomic.Uint64
	_         [64]byte

	tmo      timeouts                 // ipvsglue.go
	def      defense                  // defense.go
	syncHook atomic.Pointer[SyncHook] // the sync master's (sync.go)

	advMu sync.Mutex // one Advance at a time
	batch []*Entry   // Advance's scratch

	// OnExpire, if set, is called for every entry torn down (expired,
	// reused, flushed, evicted or dropped), with no lock held, after it
	// left both indices and its dest's counters and before its memory is
	// reused. It must not call back into the table.
	OnExpire func(e *Entry)
}

// refBits: an index slot holds shard<<refBits | id, so the out index can
// point at entries of other shards.
const refBits = 24

type shard struct {
	mu    spinLock
	in    index
	out   index
	slab  slab
	wheel []uint32
	done  int64  // last tick processed
	rng   uint64 // sampling for eviction and drop_entry (under mu)
	idx   uint32
	_     [40]byte // keep shard locks on separate cache lines
}

// capFor is a shard's capacity: its share of maxEntries plus room for an
// uneven spread. With a keyed hash the per-shard count is binomial, so 8
// standard deviations (and 64 for tiny tables) cover it for certain in
// practice.
func capFor(maxEntries, shards int) int {
	avg := (maxEntries + shards - 1) / shards
	return avg + 8*int(math.Ceil(math.Sqrt(float64(avg)))) + 64
}

// inFlight is slab room beyond a shard's capacity for entries that left
// the indices but are still being torn down (and for an eviction's new
// entry before its victim is freed).
const inFlight = 64

// maxEntries is the most --conn-max may ask for (an int64, so that the
// check also compiles where int has 32 bits: there, an int cannot exceed
// it anyway).
const maxEntries int64 = 1 << 31

// New creates a table.
func New(c Config) *Table {
	t, err := NewChecked(c)
	if err != nil {
		panic(err)
	}
	return t
}

// normalize applies the defaults and checks a configuration, returning
// it with the shard count rounded up to a power of two and the per-shard
// capacity.
func (c Config) normalize() (Config, int, error) {
	if c.Shards <= 0 {
		c.Shards = 256
	}
	n := 1
	for n < c.Shards {
		n <<= 1
	}
	if n > 256 {
		return c, 0, fmt.Errorf("%w: %d shards (at most 256)", ErrConfig, c.Shards)
	}
	c.Shards = n
	if c.MaxEntries <= 0 {
		c.MaxEntries = 1 << 20
	}
	if int64(c.MaxEntries) > maxEntries {
		return c, 0, fmt.Errorf("%w: %d entries (at most %d)", ErrConfig, c.MaxEntries, int64(maxEntries))
	}
	perShard := capFor(c.MaxEntries, n)
	if perShard+inFlight >= 1<<refBits {
		return c, 0, fmt.Errorf("%w: %d entries over %d shards (at most %d per shard)", ErrConfig, c.MaxEntries, n, 1<<refBits-inFlight)
	}
	if c.Tick <= 0 {
		c.Tick = time.Second
	}
	if c.WheelSlots <= 0 {
		c.WheelSlots = 4096
	}
	if err := c.Defense.check(c.MaxEntries); err != nil {
		return c, 0, err
	}
	return c, perShard, nil
}

// Memory is what a table of a configuration takes.
type Memory struct {
	Fixed    int64 // the indices and wheels, allocated when the table is made
	PerEntry int64 // each live entry, in its chunk
	Full     int64 // Fixed plus MaxEntries entries
}

// CheckConfig checks a configuration as NewChecked does, without making
// the table, and says how much memory the table takes.
func CheckConfig(c Config) (Memory, error) {
	c, perShard, err := c.normalize()
	if err != nil {
		return Memory{}, err
	}
	idx := int64(perShard+perShard/3+1) * 5 // one index: a slot and a tag each
	fixed := int64(c.Shards) * (2*idx + int64(c.WheelSlots)*4)
	per := int64(unsafe.Sizeof(Entry{}))
	return Memory{Fixed: fixed, PerEntry: per, Full: fixed + per*int64(c.MaxEntries)}, nil
}

// NewChecked creates a table, or says why the configuration cannot work.
// The indices are sized for MaxEntries up front and never grow; entry
// memory is allocated in chunks as the table fills and given back as it
// empties.
func NewChecked(c Config) (*Table, error) {
	c, perShard, err := c.normalize()
	if err != nil {
		return nil, err
	}
	n := c.Shards
	t := &Table{
		shards:  make([]shard, n),
		hk:      newHashKey(c.Seed),
		max:     int64(c.MaxEntries),
		tick:    c.Tick,
		nslots:  int64(c.WheelSlots),
		start:   time.Now(),
		noEvict: c.NoEvict,
	}
	for i := range t.shards {
		s := &t.shards[i]
		s.idx = uint32(i)
		s.in = newIndex(perShard)
		s.out = newIndex(perShard)
		s.slab = newSlab(perShard+inFlight, uint8(i))
		s.wheel = make([]uint32, c.WheelSlots)
		prefault(s.wheel) // as the indices (index.go)
		s.rng = t.hk.k2 ^ uint64(i+1)*0x9e3779b97f4a7c15
	}
	t.tmo.init(t)
	t.def.init(c.Defense, c.MaxEntries, t)
	return t, nil
}

// Tick returns the wheel granularity.
func (t *Table) Tick() time.Duration { return t.tick }

// Now returns the coarse clock, in ticks.
func (t *Table) Now() int64 { return t.now.Load() }

// Limit returns the most entries the table holds (Config.MaxEntries,
// --conn-max).
func (t *Table) Limit() int { return int(t.max) }

// ExpiresIn returns how long until e expires.
func (t *Table) ExpiresIn(e *Entry) time.Duration {
	d := time.Duration(int64(e.expires.Load())-t.now.Load()) * t.tick
	if d < 0 {
		d = 0
	}
	return d
}

// locate hashes a key and picks its shard: the low bits of the hash (the
// index uses the high bits).
func (t *Table) locate(k *Key) (uint64, *shard) {
	h := t.hk.sum(k)
	return h, &t.shards[h&uint64(len(t.shards)-1)]
}

// shardOf picks the shard of a key.
func (t *Table) shardOf(k *Key) *shard {
	_, s := t.locate(k)
	return s
}

func (t *Table) entryRef(ref uint32) *Entry {
	return t.shards[ref>>refBits].slab.entry(ref & (1<<refBits - 1))
}

func (s *shard) ref(e *Entry) uint32 { return s.idx<<refBits | e.id }

func (t *Table) homeOf(e *Entry) *shard { return &t.shards[e.home] }

// findIn looks an in key up in shard s (lock held): the probe of
// index.go (from the hash's home slot to the first empty one), written
// out here because it is the per-packet path: tags first, an entry read
// only on a tag match.
func (t *Table) findIn(s *shard, h uint64, k *Key) *Entry {
	x := &s.in
	tag := tagOf(h)
	for i := x.home(h); ; {
		if tg := x.tags[i]; tg == tag {
			if e := t.entryRef(x.slots[i]); e.In == *k {
				return e
			}
		} else if tg == 0 {
			return nil
		}
		if i++; i == x.size {
			i = 0
		}
	}
}

// findOut looks an out key up in shard s (lock held). Entries being torn
// down (dead, their out reference not yet removed) are passed over: a new
// conn with the same out key may already be indexed behind them.
func (t *Table) findOut(s *shard, h uint64, k *Key) *Entry {
	x := &s.out
	tag := tagOf(h)
	for i := x.home(h); ; {
		if tg := x.tags[i]; tg == tag {
			if e := t.entryRef(x.slots[i]); e.Out == *k && e.word.Load()&wDead == 0 {
				return e
			}
		} else if tg == 0 {
			return nil
		}
		if i++; i == x.size {
			i = 0
		}
	}
}

// removeIn and removeOut delete a reference from an index (lock held),
// saying where each shifted reference's key hashes to.
func (t *Table) removeIn(s *shard, h uint64, ref uint32) bool {
	return s.in.remove(h, ref, func(r uint32) uint32 { return s.in.home(t.hk.sum(&t.entryRef(r).In)) })
}

func (t *Table) removeOut(s *shard, h uint64, ref uint32) bool {
	return s.out.remove(h, ref, func(r uint32) uint32 { return s.out.home(t.hk.sum(&t.entryRef(r).Out)) })
}

// Stats returns the table's counters.
func (t *Table) Stats() Stats {
	return Stats{
		Entries: t.count.Load(), Created: t.created.Load(), Expired: t.expired.Load(),
		Dropped: t.dropped.Load(), Reused: t.reused.Load(), Rescans: t.rescans.Load(),
		Evicted: t.evicted.Load(), DropEntry: t.dropEntry.Load(), Bytes: t.Bytes(),
	}
}

// Bytes returns the memory the table holds: the indices and wheels, fixed
// by --conn-max at creation, and the entry chunks, which follow the live
// entries.
func (t *Table) Bytes() int64 {
	var n int64
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += s.in.bytes() + s.out.bytes() + int64(len(s.wheel))*4 + s.slab.bytes()
		s.mu.Unlock()
	}
	return n
}

// Len returns the number of live entries (templates included).
func (t *Table) Len() int { return int(t.count.Load()) }

// Verdict of an inbound lookup.
type Verdict uint8

const (
	Miss   Verdict = iota // no conn: schedule a new one
	Found                 // an existing conn; Hit is filled
	Reused                // a new SYN hit a conn in TIME_WAIT/CLOSE: it was expired, schedule anew
)

// LookupIn finds the conn of an inbound (client -> VIP) packet, applies
// its TCP state transition, refreshes its expiry and fills h. A SYN on a
// conn in TIME_WAIT or CLOSE that no template controls expires the conn and
// returns Reused (IPVS's conn_reuse_mode 1).
func (t *Table) LookupIn(k *Key, tcpFlags uint8, h *Hit) Verdict {
	hk, s := t.locate(k)
	e, r := t.lookup(s, hk, k, nil, false, tcpFlags, h)
	if r != lookLocked {
		return Verdict(r) // lookHit: Found, lookMiss: Miss
	}
	if k.Proto == 6 && tcpFlags&0x06 == 0x02 && e.Tpl == nil {
		if st := e.State(); st == TCPTimeWait || st == TCPClose {
			t.unlinkLocked(s, e, hk)
			s.mu.Unlock()
			t.reused.Add(1)
			t.teardown(e)
			return Reused
		}
	}
	t.step(e, false, tcpFlags, h)
	s.refileIfSooner(e, t)
	fill(e, h)
	t.syncNotify(e, true)
	s.mu.Unlock()
	return Found
}

// LookupOut finds the conn of a reply (RIP -> client) packet, applies the
// OUTPUT transition, refreshes the expiry and fills h.
func (t *Table) LookupOut(k *Key, tcpFlags uint8, h *Hit) bool {
	hk, s := t.locate(k)
	e, r := t.lookup(s, hk, k, nil, true, tcpFlags, h)
	if r != lookLocked {
		return r == lookHit
	}
	t.step(e, true, tcpFlags, h)
	fill(e, h)
	sooner := e.expires.Load() < e.slot.Load()
	gen := e.gen.Load()
	home := t.homeOf(e)
	s.mu.Unlock()
	if sooner {
		// The wheel belongs to the home shard: move the entry under its
		// lock, if it is still the same live entry (the out index held it
		// allocated until now; the generation says it still is).
		home.mu.Lock()
		if e.gen.Load() == gen && e.word.Load()&wDead == 0 {
			home.refileIfSooner(e, t)
		}
		home.mu.Unlock()
	}
	return true
}

// Peek finds a conn by its in key (out false) or out key (out true) and
// fills h, without a state transition or a refresh: related ICMP errors
// are matched to their conn this way (IPVS neither moves the state nor
// re-arms the timer for them).
func (t *Table) Peek(k *Key, out bool, h *Hit) bool {
	hk, s := t.locate(k)
	s.mu.Lock()
	var e *Entry
	if out {
		e = t.findOut(s, hk, k)
	} else if e = t.findIn(s, hk, k); e != nil && e.Template() {
		e = nil
	}
	if e == nil {
		s.mu.Unlock()
		return false
	}
	fill(e, h)
	st := e.State()
	h.OldState, h.NewState = st, st
	s.mu.Unlock()
	return true
}

// Create inserts a conn, binds it to its dest (counted inactive, as IPVS
// starts every conn, or in persistconns for a template) and, for a normal
// conn, applies the first packet's state transition, filling h. A conn
// through a template takes a control reference on it and restarts its
// timer (spec §4.4); if the template ended since it was looked up, the
// conn is made without one (IPVS would hold the ended template; the next
// conn of the client makes a new one either way).
//
// At the limit (--conn-max) a new conn replaces a half-open or closing
// conn of its shard (defense.go); when there is none it returns ErrFull
// and counts it. It returns ErrExists (with nothing changed) when the in
// key is taken.
func (t *Table) Create(c *NewConn, tcpFlags uint8, h *Hit) (Ref, error) {
	var tpl *Entry
	if !c.Tpl.IsZero() && t.acquire(c.Tpl) {
		tpl = c.Tpl.e
	}
	full := t.count.Add(1) > t.max
	v6 := c.In.Kind&KindV6 != 0
	hk, s := t.locate(&c.In)
	s.mu.Lock()
	if v6 && t.findIn6(s, hk, &c.In, &c.A6.In) != nil || !v6 && t.findIn(s, hk, &c.In) != nil {
		s.mu.Unlock()
		t.count.Add(-1)
		t.releaseControl(tpl)
		return Ref{}, ErrExists
	}
	var victim *Entry
	if full || s.in.n >= s.in.max {
		if !t.noEvict {
			victim = t.evictLocked(s)
		}
		if victim == nil {
			s.mu.Unlock()
			t.count.Add(-1)
			t.dropped.Add(1)
			t.releaseControl(tpl)
			return Ref{}, ErrFull
		}
	}
	e := s.slab.alloc(v6)
	if e == nil {
		s.mu.Unlock()
		t.count.Add(-1)
		t.dropped.Add(1)
		if victim != nil {
			t.evicted.Add(1)
			t.teardown(victim)
		}
		t.releaseControl(tpl)
		return Ref{}, ErrFull
	}
	e.In, e.Out = c.In, c.Out
	e.Dest, e.Tpl, e.Method = c.Dest, tpl, c.Method
	e.ClientIf, e.ClientMAC, e.Aux = c.ClientIf, c.ClientMAC, c.Aux
	if v6 {
		*s.slab.side6(e.id) = c.A6
	}
	var w uint32
	if c.Template {
		w |= wTemplate
	}
	if c.NoOutput {
		w |= wNoOutput
	}
	e.word.Store(w)
	if c.Dest != nil {
		c.Dest.Bind(c.Template)
	}
	if c.Template {
		e.timeout.Store(c.Timeout)
		e.expires.Store(int32(t.now.Load() + t.tmo.ticks(c.Timeout)))
		if h != nil {
			fill(e, h)
			if v6 {
				h.A6 = c.A6
			}
		}
	} else if h == nil {
		var tmp Hit // only here: a Hit is zeroed where it is declared
		t.step(e, false, tcpFlags, &tmp)
	} else {
		t.step(e, false, tcpFlags, h)
		fill(e, h)
		if v6 {
			h.A6 = c.A6
		}
	}
	ref := s.ref(e)
	s.in.insert(hk, ref) // room checked above
	s.file(e, t)
	if !c.Template {
		t.syncNotify(e, true)
	}
	gen := e.gen.Load()
	s.mu.Unlock()
	t.created.Add(1)
	if victim != nil {
		t.evicted.Add(1)
		t.teardown(victim)
	}
	if !c.Template && c.Out != (Key{}) {
		// The out index lives in another shard: one lock at a time. If
		// the conn was torn down meanwhile (its teardown's out step ran
		// or will run under this same lock), it must not be indexed: the
		// word is read before the generation, so a reuse of the slot is
		// seen as a generation change.
		ho, o := t.locate(&c.Out)
		o.mu.Lock()
		if e.word.Load()&wDead == 0 && e.gen.Load() == gen && (v6 && t.findOut6(o, ho, &c.Out, &c.A6.Out) == nil || !v6 && t.findOut(o, ho, &c.Out) == nil) {
			o.out.insert(ho, ref)
		}
		o.mu.Unlock()
	}
	return Ref{e, gen}, nil
}

// LookupTemplate finds a live template by its key (spec §4.2) and returns
// a Ref to it with its dest, read under the lock (the Ref may outlive the
// template; the dest pointer stays valid).
func (t *Table) LookupTemplate(k *Key) (Ref, *ipvs.Dest) {
	hk, s := t.locate(k)
	s.mu.Lock()
	e := t.findIn(s, hk, k)
	if e == nil || !e.Template() {
		s.mu.Unlock()
		return Ref{}, nil
	}
	r, d := Ref{e, e.gen.Load()}, e.Dest
	s.mu.Unlock()
	return r, d
}

// acquire takes a control reference on a template for a new conn and
// restarts its timer, if r still names it.
func (t *Table) acquire(r Ref) bool {
	e := r.e
	s := t.homeOf(e)
	s.mu.Lock()
	ok := e.gen.Load() == r.gen && e.word.Load()&wTemplate != 0
	if ok {
		e.nControl.Add(1)
		e.expires.Store(int32(t.now.Load() + t.tmo.ticks(e.timeout.Load())))
	}
	s.mu.Unlock()
	return ok
}

// releaseControl drops a control reference on a template (nil: none); the
// last one frees a template that was already torn down. Both happen under
// the template's home lock, so exactly one goroutine frees it.
func (t *Table) releaseControl(tpl *Entry) {
	if tpl == nil {
		return
	}
	s := t.homeOf(tpl)
	s.mu.Lock()
	if tpl.nControl.Add(-1) == 0 && tpl.word.Load()&wDone != 0 {
		s.slab.release(tpl)
	}
	s.mu.Unlock()
}

// Expire expires the conn with in key k now, if there is one (IPVS's
// expire_nodest_conn and friends). It reports whether it did.
func (t *Table) Expire(k *Key) bool {
	hk, s := t.locate(k)
	s.mu.Lock()
	e := t.findIn(s, hk, k)
	if e == nil {
		s.mu.Unlock()
		return false
	}
	t.unlinkLocked(s, e, hk)
	s.mu.Unlock()
	t.teardown(e)
	return true
}

// Invalidate expires the entry r names now (e.g. a template whose dest is
// gone), if it is still live. A template that still controls conns stays
// allocated, out of the indices, until the last of them ends.
func (t *Table) Invalidate(r Ref) bool {
	if r.IsZero() {
		return false
	}
	e := r.e
	s := t.homeOf(e)
	s.mu.Lock()
	if e.gen.Load() != r.gen || e.word.Load()&wDead != 0 {
		s.mu.Unlock()
		return false
	}
	t.unlinkLocked(s, e, t.hk.sum(&e.In))
	s.mu.Unlock()
	t.teardown(e)
	return true
}

// An entry's end runs in three steps, each under one lock, by the one
// goroutine that unlinked it:
//
//  1. unlinkLocked, home lock: out of the in index and the wheel, marked
//     dead. No lookup by in key, and no wheel turn, can reach it any more.
//  2. teardown, the out key's shard lock: out of the out index (LookupOut
//     treats a dead entry as a miss meanwhile). Then, with no lock, its
//     dest's counters (by its final state: nothing can move it now), its
//     template's control count and OnExpire.
//  3. teardown, home lock again: marked done and freed (a template only
//     once no conn holds it).
//
// Nothing frees an entry but step 3 (or the last releaseControl of a
// done template), so an entry can never be freed, zeroed or reused while
// its teardown still reads it, and a reference in either index always
// points at an allocated entry.

// unlinkLocked is step 1 (home lock held; e is in s.in under hash hk).
func (t *Table) unlinkLocked(s *shard, e *Entry, hk uint64) {
	t.removeIn(s, hk, s.ref(e))
	s.unfile(e, t)
	e.word.Or(wDead)
}

// teardown is steps 2 and 3 (no lock held).
func (t *Table) teardown(e *Entry) {
	t.finish(e)
	s := t.homeOf(e)
	s.mu.Lock()
	t.freeLocked(s, e)
	s.mu.Unlock()
}

// finish is step 2.
func (t *Table) finish(e *Entry) {
	home := t.homeOf(e)
	w := e.word.Load()
	if w&wTemplate == 0 && e.Out != (Key{}) {
		ho, o := t.locate(&e.Out)
		o.mu.Lock()
		t.removeOut(o, ho, home.ref(e))
		o.mu.Unlock()
	}
	w = e.word.Load() // final: no lookup reaches e any more
	if e.Dest != nil {
		e.Dest.Unbind(w&wTemplate != 0, e.active(w))
	}
	t.count.Add(-1)
	t.expired.Add(1)
	if t.OnExpire != nil {
		t.OnExpire(e)
	}
	if tpl := e.Tpl; tpl != nil {
		if w&wDropped != 0 {
			// drop_entry drops a conn's template with it (it lives on in
			// 60 s steps while other conns still use it).
			t.expireSoon(tpl)
		}
		t.releaseControl(tpl)
	}
}

// freeLocked is step 3 (home lock held).
func (t *Table) freeLocked(s *shard, e *Entry) {
	e.word.Or(wDone)
	if e.word.Load()&wTemplate == 0 || e.nControl.Load() == 0 {
		s.slab.release(e)
	}
}

// Walk calls fn for every live entry, one shard at a time, under that
// shard's lock (for listings and exports; never on the packet path). fn
// must not call back into the table or keep e.
func (t *Table) Walk(fn func(e *Entry)) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for j, r := range s.in.slots {
			if s.in.tags[j] != 0 {
				fn(t.entryRef(r))
			}
		}
		s.mu.Unlock()
	}
}

// Flush expires every entry now.
func (t *Table) Flush() {
	var all []*Entry
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		all = all[:0]
		for j, r := range s.in.slots {
			if s.in.tags[j] != 0 {
				e := t.entryRef(r)
				s.unfile(e, t)
				e.word.Or(wDead)
				all = append(all, e)
			}
		}
		s.in.clear()
		s.mu.Unlock()
		t.teardownAll(s, all)
	}
}

// The quiet path. Most packets of a flow change nothing in its entry:
// once a TCP conn is established and 15 inbound packets are counted, a
// packet moves no state, counts nothing and, within one tick of the
// coarse clock, leaves the expiry as it is; step then writes nothing.
// For such a packet a lookup need not take the shard's lock, which is a
// locked instruction and a write to a line every worker of the shard
// reads. It reads the index and the entry between two reads of the
// lock's word instead (a sequence lock: the word is odd while the lock
// is held and moves on with every critical section): if no critical
// section of the shard ran in between, what it read was a consistent
// state, as good as one read under the lock; a miss read so is as good
// as one under the lock too. Anything the quiet path cannot settle (a
// packet that changes the entry, a critical section meanwhile, a sync
// master's hook, which writes on every packet) is left to the locked
// path, which is exactly what ran before.
//
// Why a quiet read is safe, step by step:
//   - the index's slices never grow or move (index.go), and every slot
//     ever written holds 0 or a reference: quietFind bounds-checks each
//     reference and each chunk before it reads an entry, so a racing
//     writer can make it read stale or mixed values, never out of bounds
//     or through nil;
//   - an entry's fixed fields change only when it is allocated or freed,
//     both under its home lock, and the in index lives in the home shard:
//     an unchanged home word means the entry read was the one indexed;
//   - an entry reached through the out index (another shard's) is freed
//     only after its out reference is removed under that shard's lock,
//     and filled in before the reference is inserted: an unchanged word
//     of the out shard means it stayed allocated and whole;
//   - the word, expiry and timeout are atomics, read as the locked path
//     reads them (which holds only one of the two shards' locks too);
//   - ordering: on amd64 loads are not reordered with loads, and Go's
//     atomic loads order the compiler's, so the reads between the two
//     loads of the word happen between them. Elsewhere, and under the
//     race detector (to which these reads are races by design), the
//     quiet path is compiled out (optimistic, lock_amd64.go).

// How a lookup's search ended (lookup). lookHit and lookMiss are the
// Verdicts Found and Miss.
const (
	lookMiss   = int(Miss)  // absent; no lock held
	lookHit    = int(Found) // found quietly, h filled; no lock taken
	lookLocked = -1         // found, and the lock is held: the packet writes
)

// lookup finds the entry of a packet's key (a6 not nil: IPv6; out: a
// reply's key, in the out index) in shard s: quietly when it can (the
// quiet path above), else under the lock. A packet that writes to its
// entry still saves the second probe: the lock is taken from the word
// read before the quiet probe (lockFrom), which succeeds only if no
// critical section ran since, so the entry found is still the one
// indexed. A miss is as good as one under the lock once the word is
// found unchanged.
func (t *Table) lookup(s *shard, hk uint64, k *Key, a6 *Pair6, out bool, tcpFlags uint8, h *Hit) (*Entry, int) {
	if optimistic {
		if seq := s.mu.seq(); seq&1 == 0 {
			e, ad, absent := t.quietFind(s, hk, k, a6, out)
			if e == nil {
				if absent && s.mu.seq() == seq {
					return nil, lookMiss
				}
				return t.lookupLocked(s, hk, k, a6, out)
			}
			// A sync master's hook runs under the home lock on every
			// inbound packet: those take the lock.
			if (out || t.syncHook.Load() == nil) && t.quietStep(e, out, tcpFlags, h) {
				fill(e, h)
				if ad != nil {
					h.A6 = *ad
				}
				if s.mu.seq() == seq {
					return nil, lookHit
				}
			} else if s.mu.lockFrom(seq) {
				return e, lookLocked
			}
		}
	}
	return t.lookupLocked(s, hk, k, a6, out)
}

// lookupLocked is lookup's search under the lock.
func (t *Table) lookupLocked(s *shard, hk uint64, k *Key, a6 *Pair6, out bool) (*Entry, int) {
	s.mu.Lock()
	var e *Entry
	switch {
	case a6 == nil && !out:
		e = t.findIn(s, hk, k)
	case a6 == nil:
		e = t.findOut(s, hk, k)
	case !out:
		e = t.findIn6(s, hk, k, a6)
	default:
		e = t.findOut6(s, hk, k, a6)
	}
	if e == nil {
		s.mu.Unlock()
		return nil, lookMiss
	}
	return e, lookLocked
}

// quietFind is findIn (out: findOut; a6 not nil: findIn6, findOut6)
// without the lock of s: the entry, or nil with absent true when the
// probe reached an empty slot, or nil with absent false when a
// reference read was not an allocated entry's. For an IPv6 key it
// returns the entry's addresses too (read through the chunk it found,
// never through the entry's id, which a racing reuse may change).
func (t *Table) quietFind(s *shard, hk uint64, k *Key, a6 *Pair6, out bool) (e *Entry, ad *Addrs6, absent bool) {
	x, sl := &s.in, &s.slab // the in index holds only its own shard's entries
	if out {
		x = &s.out
	}
	tag := tagOf(hk)
	for i, n := x.home(hk), uint32(0); n < x.size; n++ {
		tg := x.tags[i]
		if tg == 0 {
			return nil, nil, true
		}
		if tg == tag {
			ref := x.slots[i]
			id := ref&(1<<refBits-1) - 1
			if out {
				sh := ref >> refBits
				if sh >= uint32(len(t.shards)) {
					return nil, nil, false
				}
				sl = &t.shards[sh].slab
			}
			c := id >> chunkBits
			if c >= uint32(len(sl.chunks)) {
				return nil, nil, false
			}
			ch := sl.chunks[c]
			if ch == nil {
				return nil, nil, false
			}
			e = &ch[id&(chunkSize-1)]
			if !out && e.In == *k || out && e.Out == *k && e.word.Load()&wDead == 0 {
				if a6 == nil {
					return e, nil, false
				}
				sd := sl.side[c]
				if sd == nil {
					return nil, nil, false
				}
				if ad = &sd[id&(chunkSize-1)]; !out && ad.In == *a6 || out && ad.Out == *a6 {
					return e, ad, false
				}
			}
		}
		if i++; i == x.size {
			i = 0
		}
	}
	return nil, nil, false
}

// quietStep reports whether step would write nothing for this packet,
// setting h's states as step would. (Kept in step with step and with
// LookupIn's reuse of a closed conn.)
func (t *Table) quietStep(e *Entry, out bool, tcpFlags uint8, h *Hit) bool {
	w := e.word.Load()
	st := uint8(w & wStateMask)
	proto := e.In.Proto
	if proto == 6 {
		if !out && tcpFlags&0x06 == 0x02 && (st == TCPTimeWait || st == TCPClose) {
			return false // a new SYN may reuse the closed conn's tuple
		}
		tbl := &tcpTrans
		if t.def.secureOn.Load() {
			tbl = &tcpTransSecure
		}
		dir := DirInput
		if out {
			dir = DirOutput
		} else if w&wNoOutput != 0 {
			dir = DirInputOnly
		}
		if tcpNext(tbl, dir, tcpFlags, st) != st {
			return false
		}
	}
	if out {
		if w&wNoOutput != 0 {
			return false
		}
		if tpl := e.Tpl; proto == 17 && tpl != nil && tpl.word.Load()&wStateMask != uint32(TplAssured) {
			return false // the reply assures the template (one pointer read: see fill)
		}
	} else if w&wPktMask != wPktMask {
		return false
	}
	sec, ticks := t.tmo.of(proto, st)
	exp := e.expires.Load()
	if e.timeout.Load() != sec || exp != int32(t.now.Load()+ticks) || exp < e.slot.Load() {
		return false
	}
	h.OldState, h.NewState = st, st
	return true
}
