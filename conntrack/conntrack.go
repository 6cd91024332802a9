// Package conntrack is golvs's connection table: which real server each
// connection (and each persistence template) is bound to, its IPVS
// protocol state and when it expires.
//
// The table is split into shards, each a pair of maps under one mutex: the
// "in" index, keyed by the client's view of the flow (client -> VIP), where
// every entry lives, and the "out" index, keyed by the real server's view
// (RIP -> client), where NAT replies find their entry. Keys are packed,
// pointer-free values; the shard is chosen with a seeded xxhash of the key
// (seeded so that a client cannot aim its flows at one shard).
//
// Expiry never stops the world: each shard has a timing wheel of one-tick
// slots. A packet only stores its entry's new expiry time; when the entry's
// slot comes round, the wheel either re-files it (it was refreshed) or
// expires it. Entries are never freed while any index still holds them, so
// a worker holding a shard lock never sees a recycled entry.
//
// On the packet path the table never allocates for an established flow;
// creating a connection takes an entry from the shard's free list, which
// grows in slabs, and a full table (the configured maximum) refuses new
// connections and counts them instead of growing.
package conntrack

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"

	"github.com/golvs/golvs/ipvs"
)

// Key is a packed flow key: source and destination address and port and
// the protocol. Addresses are IPv4 for now. It is 16 bytes, comparable and
// pointer-free, so it hashes fast and keeps the maps free of GC scanning.
type Key struct {
	SrcIP   [4]byte
	DstIP   [4]byte
	SrcPort uint16
	DstPort uint16
	Proto   uint8
	// Kind separates persistence templates (KindTemplate) from conns in
	// the same index; a template's SrcIP is the masked client network.
	Kind uint8
	_    [2]byte // explicit padding, always zero
}

// Key kinds.
const (
	KindConn     = 0
	KindTemplate = 1
)

// Entry flags.
const (
	FlagTemplate = 1 << iota // a persistence template
	FlagNoOutput             // DR/TUN: replies bypass the director
	FlagInactive             // counted in inactconns
	FlagDead                 // unlinked; waits in the wheel to be freed
	FlagOnePacket
	FlagNoCPort // a template: matches any client port
	FlagSync    // created by a sync backup from a master's message (sync.go)
)

// Entry is one connection (or template). Fields set at creation are read
// freely by workers that hold the lock of a shard indexing the entry;
// state and expiry change under those locks with atomics, because the in
// and out indices of one entry usually sit in different shards.
//
// Entries live in fixed chunks of their home shard and are linked by
// 32-bit ids, not pointers, to keep them small (see the size test).
type Entry struct {
	In  Key
	Out Key

	Dest *ipvs.Dest // its service's counters are Dest.SvcStats
	Tpl  *Entry     // the controlling template, if any

	// Aux is free for forwarding methods that keep per-conn data (e.g. a
	// FULLNAT local port); the table never reads it.
	Aux uint64

	state    atomic.Uint32
	flags    atomic.Uint32
	expires  atomic.Int32 // in ticks of the table's coarse clock
	slot     atomic.Int32 // the wheel tick this entry is filed under
	timeout  atomic.Uint32
	nControl atomic.Int32 // conns controlled by this template

	id   uint32 // within the home shard, 1-based
	next uint32 // wheel list / free list
	prev uint32 // wheel list

	// The sync master's per-conn state (sync.go), touched only while a
	// master runs: in_pkts<<8 | old_state, and sync_endtime.
	syncPS  atomic.Uint32
	syncEnd atomic.Uint32

	// The client side's layer 2, learnt from the frame that created the
	// conn, so replies go back the way the request came.
	ClientIf  int32
	ClientMAC [6]byte
	Method    ipvs.Method
	home      uint8 // low bits of the home shard index (see shardOfEntry)
}

// State returns the protocol state.
func (e *Entry) State() uint8 { return uint8(e.state.Load()) }

// Flags returns the entry flags.
func (e *Entry) Flags() uint32 { return e.flags.Load() }

// Template reports whether e is a persistence template.
func (e *Entry) Template() bool { return e.flags.Load()&FlagTemplate != 0 }

// Errors.
var (
	ErrFull   = errors.New("conntrack: table full")
	ErrExists = errors.New("conntrack: connection exists")
	ErrConfig = errors.New("conntrack: bad configuration")
)

// Config sets up a table. Zero values take defaults.
type Config struct {
	Shards     int           // power of two, at most 256; default 256
	MaxEntries int           // default 1<<20
	Tick       time.Duration // wheel granularity; default 1s
	WheelSlots int           // default 4096 ticks
	Seed       uint64        // 0: random
}

// Stats are the table's counters.
type Stats struct {
	Entries int64
	Created uint64
	Expired uint64
	Dropped uint64 // new conns refused because the table was full
	Reused  uint64 // conns expired early by a new SYN (conn_reuse_mode)
	Rescans uint64 // wheel entries re-filed because they were refreshed
}

// Table is the connection table.
type Table struct {
	shards    []shard
	shardBits uint
	seed      uint64
	max       int64
	tick      time.Duration
	nslots    int64
	start     time.Time

	now     atomic.Int64 // coarse clock in ticks, advanced by Advance
	count   atomic.Int64
	created atomic.Uint64
	expired atomic.Uint64
	dropped atomic.Uint64
	reused  atomic.Uint64
	rescans atomic.Uint64

	// Timeouts in seconds, changeable at run time (ipvsadm --set).
	tcpTimeouts [NumTCPStates]atomic.Uint32
	udpTimeout  atomic.Uint32
	// The same in ticks, kept beside the seconds so the per-packet
	// refresh does not divide.
	tcpTicks [NumTCPStates]atomic.Int64
	udpTicks atomic.Int64

	// OnExpire, if set, is called (without locks held) for every entry
	// that expires or is dropped, after it left the indices.
	OnExpire func(e *Entry)

	syncHook atomic.Pointer[SyncHook] // the sync master's (sync.go)
}

// chunkBits sizes the chunks entries are allocated in.
const (
	chunkBits = 8
	chunkSize = 1 << chunkBits
)

// refBits: an index slot holds shard<<refBits | id, so the out index can
// point at entries of other shards.
const refBits = 24

type shard struct {
	mu     spinLock
	in     index
	out    index
	chunks []*[chunkSize]Entry // fixed length; filled under mu, never moved
	nalloc uint32              // entries handed out so far (ids 1..nalloc)
	free   uint32              // free list head (an id), 0: empty
	wheel  []uint32
	done   int64 // last tick processed
	idx    uint32
	_      [40]byte // keep shard locks on separate cache lines
}

// index is an open-addressing hash index (linear probing, backward-shift
// deletion) of 4-byte entry references. A probe compares the full key in
// the entry; with the load kept under 3/4, most lookups touch one slot and
// one entry.
type index struct {
	slots []uint32
	tags  []uint8 // a byte of each slot's key hash (0: empty), scanned before any entry is read
	n     int
}

// tagOf is the byte of a key hash kept beside its slot; never 0.
func tagOf(h uint64) uint8 { return uint8(h>>16) | 0x80 }

// New creates a table.
func New(c Config) *Table {
	t, err := NewChecked(c)
	if err != nil {
		panic(err)
	}
	return t
}

// NewChecked creates a table, or says why the configuration cannot work.
func NewChecked(c Config) (*Table, error) {
	if c.Shards <= 0 {
		c.Shards = 256
	}
	n := 1
	bits := uint(0)
	for n < c.Shards {
		n <<= 1
		bits++
	}
	if n > 256 {
		return nil, fmt.Errorf("%w: %d shards (at most 256)", ErrConfig, c.Shards)
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = 1 << 20
	}
	perShard := c.MaxEntries/n*2 + 2*chunkSize // room for an uneven spread
	if perShard >= 1<<refBits || c.MaxEntries > 1<<31 {
		return nil, fmt.Errorf("%w: %d entries over %d shards (at most %d per shard)", ErrConfig, c.MaxEntries, n, 1<<(refBits-1))
	}
	if c.Tick <= 0 {
		c.Tick = time.Second
	}
	if c.WheelSlots <= 0 {
		c.WheelSlots = 4096
	}
	if c.Seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		c.Seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	t := &Table{
		shards:    make([]shard, n),
		shardBits: bits,
		seed:      c.Seed,
		max:       int64(c.MaxEntries),
		tick:      c.Tick,
		nslots:    int64(c.WheelSlots),
		start:     time.Now(),
	}
	nchunks := (perShard + chunkSize - 1) / chunkSize
	for i := range t.shards {
		s := &t.shards[i]
		s.idx = uint32(i)
		s.chunks = make([]*[chunkSize]Entry, nchunks)
		s.wheel = make([]uint32, c.WheelSlots)
	}
	for i, v := range DefaultTCPTimeouts {
		t.tcpTimeouts[i].Store(v)
		t.tcpTicks[i].Store(t.ticks(v))
	}
	t.udpTimeout.Store(DefaultUDPTimeout)
	t.udpTicks.Store(t.ticks(DefaultUDPTimeout))
	return t, nil
}

// Tick returns the wheel granularity.
func (t *Table) Tick() time.Duration { return t.tick }

// Now returns the coarse clock, in ticks.
func (t *Table) Now() int64 { return t.now.Load() }

// ticks converts seconds to ticks, rounding up.
func (t *Table) ticks(sec uint32) int64 {
	d := time.Duration(sec) * time.Second
	return int64((d + t.tick - 1) / t.tick)
}

// ExpiresIn returns how long until e expires.
func (t *Table) ExpiresIn(e *Entry) time.Duration {
	d := time.Duration(int64(e.expires.Load())-t.now.Load()) * t.tick
	if d < 0 {
		d = 0
	}
	return d
}

// SetTimeouts sets the TCP ESTABLISHED, TCP FIN_WAIT and UDP timeouts in
// seconds; 0 leaves a value unchanged (ipvsadm --set).
func (t *Table) SetTimeouts(tcp, tcpfin, udp uint32) {
	if tcp != 0 {
		t.tcpTimeouts[TCPEstablished].Store(tcp)
		t.tcpTicks[TCPEstablished].Store(t.ticks(tcp))
	}
	if tcpfin != 0 {
		t.tcpTimeouts[TCPFinWait].Store(tcpfin)
		t.tcpTicks[TCPFinWait].Store(t.ticks(tcpfin))
	}
	if udp != 0 {
		t.udpTimeout.Store(udp)
		t.udpTicks.Store(t.ticks(udp))
	}
}

// SetStateTimeout sets one TCP state's timeout (tests use short ones).
func (t *Table) SetStateTimeout(state uint8, sec uint32) {
	t.tcpTimeouts[state].Store(sec)
	t.tcpTicks[state].Store(t.ticks(sec))
}

// Timeouts returns the TCP ESTABLISHED, FIN_WAIT and UDP timeouts.
func (t *Table) Timeouts() (tcp, tcpfin, udp uint32) {
	return t.tcpTimeouts[TCPEstablished].Load(), t.tcpTimeouts[TCPFinWait].Load(), t.udpTimeout.Load()
}

func (t *Table) timeoutFor(proto uint8, state uint8) (sec uint32, ticks int64) {
	if proto == 6 {
		if state < NumTCPStates {
			return t.tcpTimeouts[state].Load(), t.tcpTicks[state].Load()
		}
		return 2, t.ticks(2)
	}
	return t.udpTimeout.Load(), t.udpTicks.Load()
}

// hash is a seeded xxhash of the packed key: seeded so that clients
// cannot aim their flows at one shard or one probe chain.
func (t *Table) hash(k *Key) uint64 {
	var b [24]byte
	binary.LittleEndian.PutUint64(b[:8], t.seed)
	*(*Key)(unsafe.Pointer(&b[8])) = *k
	return xxhash.Sum64(b[:])
}

// locate hashes a key and picks its shard: the low bits of the hash (the
// index uses the high bits).
func (t *Table) locate(k *Key) (uint64, *shard) {
	h := t.hash(k)
	return h, &t.shards[h&uint64(len(t.shards)-1)]
}

// shardOf picks the shard of a key.
func (t *Table) shardOf(k *Key) *shard {
	_, s := t.locate(k)
	return s
}

func (t *Table) entryRef(ref uint32) *Entry {
	return t.shards[ref>>refBits].entry(ref & (1<<refBits - 1))
}

func (s *shard) entry(id uint32) *Entry {
	id--
	return &s.chunks[id>>chunkBits][id&(chunkSize-1)]
}

func (s *shard) ref(e *Entry) uint32 { return s.idx<<refBits | e.id }

func (t *Table) homeOf(e *Entry) *shard { return &t.shards[e.home] }

// find looks a key up in an index of shard s (lock held).
func (t *Table) find(x *index, h uint64, k *Key, out bool) *Entry {
	if x.n == 0 {
		return nil
	}
	mask := uint64(len(x.slots) - 1)
	tag := tagOf(h)
	for i := (h >> 32) & mask; ; i = (i + 1) & mask {
		tg := x.tags[i]
		if tg == 0 {
			return nil
		}
		if tg != tag {
			continue
		}
		e := t.entryRef(x.slots[i])
		if out {
			if e.Out == *k {
				return e
			}
		} else if e.In == *k {
			return e
		}
	}
}

// insert adds a reference under key hash h (lock held; the key is absent).
// Growing the index is the one allocation of the insert path.
func (t *Table) insert(x *index, h uint64, ref uint32, out bool) {
	if (x.n+1)*4 > len(x.slots)*3 {
		t.grow(x, out)
	}
	mask := uint64(len(x.slots) - 1)
	i := (h >> 32) & mask
	for x.tags[i] != 0 {
		i = (i + 1) & mask
	}
	x.slots[i], x.tags[i] = ref, tagOf(h)
	x.n++
}

func (t *Table) keyHash(r uint32, out bool) uint64 {
	e := t.entryRef(r)
	if out {
		return t.hash(&e.Out)
	}
	return t.hash(&e.In)
}

func (t *Table) grow(x *index, out bool) {
	old := x.slots
	n := len(old) * 2
	if n < 16 {
		n = 16
	}
	x.slots, x.tags = make([]uint32, n), make([]uint8, n)
	mask := uint64(n - 1)
	for _, r := range old {
		if r == 0 {
			continue
		}
		h := t.keyHash(r, out)
		i := (h >> 32) & mask
		for x.tags[i] != 0 {
			i = (i + 1) & mask
		}
		x.slots[i], x.tags[i] = r, tagOf(h)
	}
}

// remove deletes a reference (lock held) with backward-shift deletion, so
// probe chains stay unbroken without tombstones.
func (t *Table) remove(x *index, h uint64, ref uint32, out bool) bool {
	if x.n == 0 {
		return false
	}
	mask := uint64(len(x.slots) - 1)
	i := (h >> 32) & mask
	for x.slots[i] != ref {
		if x.slots[i] == 0 {
			return false
		}
		i = (i + 1) & mask
	}
	j := i
	for {
		j = (j + 1) & mask
		r := x.slots[j]
		if r == 0 {
			break
		}
		k := (t.keyHash(r, out) >> 32) & mask
		// Move r back to i unless its home k lies cyclically in (i, j].
		if (j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j)) {
			x.slots[i], x.tags[i] = r, x.tags[j]
			i = j
		}
	}
	x.slots[i], x.tags[i] = 0, 0
	x.n--
	return true
}

// Stats returns the table's counters.
func (t *Table) Stats() Stats {
	return Stats{
		Entries: t.count.Load(), Created: t.created.Load(), Expired: t.expired.Load(),
		Dropped: t.dropped.Load(), Reused: t.reused.Load(), Rescans: t.rescans.Load(),
	}
}

// Len returns the number of live entries (templates included).
func (t *Table) Len() int { return int(t.count.Load()) }

// Limit returns the most entries the table holds (Config.MaxEntries).
func (t *Table) Limit() int { return int(t.max) }

// Hit is what a lookup copies out of an entry, under the shard lock, for
// the rewriter: the entry itself may be recycled once the lock is gone.
type Hit struct {
	In, Out   Key
	Dest      *ipvs.Dest
	SvcStats  *ipvs.Stats
	Method    ipvs.Method
	ClientIf  int32
	ClientMAC [6]byte
	Aux       uint64
	OldState  uint8
	NewState  uint8
}

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
	s.mu.Lock()
	e := t.find(&s.in, hk, k, false)
	if e == nil {
		s.mu.Unlock()
		return Miss
	}
	if k.Proto == 6 && tcpFlags&0x06 == 0x02 && e.Tpl == nil {
		if st := uint8(e.state.Load()); st == TCPTimeWait || st == TCPClose {
			t.unlinkLocked(s, e, hk)
			s.mu.Unlock()
			t.reused.Add(1)
			t.finish(e)
			return Reused
		}
	}
	dir := DirInput
	if e.flags.Load()&FlagNoOutput != 0 {
		dir = DirInputOnly
	}
	t.transition(e, dir, tcpFlags, h)
	s.refileIfSooner(e, t)
	fill(e, h)
	if hp := t.syncHook.Load(); hp != nil {
		(*hp)(e, true)
	}
	s.mu.Unlock()
	return Found
}

// LookupOut finds the conn of a reply (RIP -> client) packet, applies the
// OUTPUT transition, refreshes the expiry and fills h.
func (t *Table) LookupOut(k *Key, tcpFlags uint8, h *Hit) bool {
	hk, s := t.locate(k)
	s.mu.Lock()
	e := t.find(&s.out, hk, k, true)
	if e == nil {
		s.mu.Unlock()
		return false
	}
	e.flags.And(^uint32(FlagNoOutput))
	t.transition(e, DirOutput, tcpFlags, h)
	fill(e, h)
	sooner := e.expires.Load() < e.slot.Load()
	home := t.homeOf(e)
	s.mu.Unlock()
	if sooner {
		// The wheel belongs to the home shard: move the entry under its
		// lock, after checking it is still the live entry of its key.
		home.mu.Lock()
		if t.find(&home.in, t.hash(&h.In), &h.In, false) == e {
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
		e = t.find(&s.out, hk, k, true)
	} else if e = t.find(&s.in, hk, k, false); e != nil && e.flags.Load()&FlagTemplate != 0 {
		e = nil
	}
	if e == nil {
		s.mu.Unlock()
		return false
	}
	fill(e, h)
	st := uint8(e.state.Load())
	h.OldState, h.NewState = st, st
	s.mu.Unlock()
	return true
}

func fill(e *Entry, h *Hit) {
	h.In, h.Out = e.In, e.Out
	h.Dest, h.Method = e.Dest, e.Method
	h.SvcStats = nil
	if e.Dest != nil {
		h.SvcStats = e.Dest.SvcStats
	}
	h.ClientIf, h.ClientMAC, h.Aux = e.ClientIf, e.ClientMAC, e.Aux
}

// transition moves e to its next state for a packet and re-arms its
// expiry. The CAS loop makes concurrent in and out workers agree on one
// sequence of states, and the active/inactive counters move exactly once
// per change.
func (t *Table) transition(e *Entry, dir int, tcpFlags uint8, h *Hit) {
	proto := e.In.Proto
	for {
		old := e.state.Load()
		nw := old
		if proto == 6 {
			nw = uint32(TCPNext(dir, tcpFlags, uint8(old)))
		}
		if nw == old || e.state.CompareAndSwap(old, nw) {
			h.OldState, h.NewState = uint8(old), uint8(nw)
			if nw != old && proto == 6 && e.Dest != nil {
				wasA, isA := TCPActive(uint8(old)), TCPActive(uint8(nw))
				if wasA != isA {
					e.Dest.SetActive(isA)
					if isA {
						e.flags.And(^uint32(FlagInactive))
					} else {
						e.flags.Or(FlagInactive)
					}
				}
				if nw == uint32(TCPEstablished) && e.Tpl != nil {
					e.Tpl.state.Store(uint32(TplAssured))
				}
			}
			if proto == 17 && dir == DirOutput && e.Tpl != nil {
				e.Tpl.state.Store(uint32(TplAssured))
			}
			to, ticks := t.timeoutFor(proto, uint8(nw))
			// Stores only when the value changes: most packets of a flow
			// fall in the same tick, and an atomic store is an XCHG.
			if e.timeout.Load() != to {
				e.timeout.Store(to)
			}
			if exp := int32(t.now.Load() + ticks); e.expires.Load() != exp {
				e.expires.Store(exp)
			}
			return
		}
	}
}

// NewConn describes a conn to create.
type NewConn struct {
	In, Out   Key
	Dest      *ipvs.Dest
	Tpl       *Entry
	Method    ipvs.Method
	ClientIf  int32
	ClientMAC [6]byte
	Aux       uint64
	Template  bool
	Timeout   uint32 // templates: the persistence timeout in seconds
	NoOutput  bool
}

// Create inserts a conn, binds it to its dest (counted inactive, as IPVS
// starts every conn, or in persistconns for a template) and, for a normal
// conn, applies the first packet's state transition, filling h.
// It returns ErrFull when the table is at its maximum and ErrExists (with
// nothing changed) when the in key is taken.
func (t *Table) Create(c *NewConn, tcpFlags uint8, h *Hit) (*Entry, error) {
	if t.count.Add(1) > t.max {
		t.count.Add(-1)
		t.dropped.Add(1)
		return nil, ErrFull
	}
	hk, s := t.locate(&c.In)
	s.mu.Lock()
	if t.find(&s.in, hk, &c.In, false) != nil {
		s.mu.Unlock()
		t.count.Add(-1)
		return nil, ErrExists
	}
	e := s.alloc()
	if e == nil {
		s.mu.Unlock()
		t.count.Add(-1)
		t.dropped.Add(1)
		return nil, ErrFull
	}
	e.In, e.Out = c.In, c.Out
	e.Dest, e.Tpl, e.Method = c.Dest, c.Tpl, c.Method
	e.ClientIf, e.ClientMAC, e.Aux = c.ClientIf, c.ClientMAC, c.Aux
	e.home = uint8(s.idx)
	var fl uint32
	if c.Template {
		fl |= FlagTemplate
	} else {
		fl |= FlagInactive
	}
	if c.NoOutput {
		fl |= FlagNoOutput
	}
	e.flags.Store(fl)
	e.state.Store(0)
	e.nControl.Store(0)
	if c.Dest != nil {
		c.Dest.Bind(c.Template)
	}
	if c.Tpl != nil {
		c.Tpl.nControl.Add(1)
	}
	if c.Template {
		e.timeout.Store(c.Timeout)
		e.expires.Store(int32(t.now.Load() + t.ticks(c.Timeout)))
	} else {
		dir := DirInput
		if c.NoOutput {
			dir = DirInputOnly
		}
		var tmp Hit
		if h == nil {
			h = &tmp
		}
		t.transition(e, dir, tcpFlags, h)
		fill(e, h)
	}
	ref := s.ref(e)
	t.insert(&s.in, hk, ref, false)
	s.file(e, t)
	if hp := t.syncHook.Load(); hp != nil && !c.Template {
		(*hp)(e, true)
	}
	s.mu.Unlock()
	t.created.Add(1)
	if !c.Template && c.Out != (Key{}) {
		ho, o := t.locate(&c.Out)
		o.mu.Lock()
		if t.find(&o.out, ho, &c.Out, true) == nil {
			t.insert(&o.out, ho, ref, true)
		}
		o.mu.Unlock()
	}
	return e, nil
}

// LookupTemplate finds a live template by its key (spec §4.2).
func (t *Table) LookupTemplate(k *Key) *Entry {
	hk, s := t.locate(k)
	s.mu.Lock()
	e := t.find(&s.in, hk, k, false)
	if e != nil && e.flags.Load()&FlagTemplate == 0 {
		e = nil
	}
	s.mu.Unlock()
	return e
}

// RefreshTemplate re-arms a template's timer to now + its timeout, as a new
// conn created through it does (spec §4.4).
func (t *Table) RefreshTemplate(e *Entry) {
	e.expires.Store(int32(t.now.Load() + t.ticks(e.timeout.Load())))
}

// Expire expires the conn with in key k now, if there is one (IPVS's
// expire_nodest_conn and friends). It reports whether it did.
func (t *Table) Expire(k *Key) bool {
	hk, s := t.locate(k)
	s.mu.Lock()
	e := t.find(&s.in, hk, k, false)
	if e == nil {
		s.mu.Unlock()
		return false
	}
	t.unlinkLocked(s, e, hk)
	s.mu.Unlock()
	t.finish(e)
	return true
}

// Invalidate expires an entry now (e.g. a template whose dest is gone):
// it leaves the indices at once and is freed by the wheel.
func (t *Table) Invalidate(e *Entry) {
	s := t.homeOf(e)
	s.mu.Lock()
	k := e.In
	hk := t.hash(&k)
	if t.find(&s.in, hk, &k, false) != e {
		s.mu.Unlock()
		return
	}
	t.unlinkLocked(s, e, hk)
	s.mu.Unlock()
	t.finish(e)
}

// alloc takes a free entry of the shard (lock held); chunks are added as
// needed, up to the shard's fixed number.
func (s *shard) alloc() *Entry {
	if s.free != 0 {
		e := s.entry(s.free)
		s.free = e.next
		e.next = 0
		return e
	}
	id := s.nalloc + 1
	c := (id - 1) >> chunkBits
	if int(c) >= len(s.chunks) {
		return nil
	}
	if s.chunks[c] == nil {
		s.chunks[c] = new([chunkSize]Entry)
	}
	s.nalloc = id
	e := s.entry(id)
	e.id = id
	return e
}

// release returns a dead entry to the free list (lock held).
func (s *shard) release(e *Entry) {
	id := e.id
	*e = Entry{id: id, next: s.free}
	s.free = id
}

// file puts e into the wheel slot of its expiry tick (capped at one turn
// of the wheel; a farther entry is re-filed when its slot comes round).
func (s *shard) file(e *Entry, t *Table) {
	at := int64(e.expires.Load())
	now := t.now.Load()
	if at <= s.done {
		at = s.done + 1
	}
	if at > now+t.nslots-1 {
		at = now + t.nslots - 1
	}
	e.slot.Store(int32(at))
	i := at % t.nslots
	e.prev = 0
	e.next = s.wheel[i]
	if e.next != 0 {
		s.entry(e.next).prev = e.id
	}
	s.wheel[i] = e.id
}

// unfile takes e out of its wheel slot (home shard lock held).
func (s *shard) unfile(e *Entry, t *Table) {
	if e.prev != 0 {
		s.entry(e.prev).next = e.next
	} else {
		i := int64(e.slot.Load()) % t.nslots
		if s.wheel[i] == e.id {
			s.wheel[i] = e.next
		}
	}
	if e.next != 0 {
		s.entry(e.next).prev = e.prev
	}
	e.next, e.prev = 0, 0
}

// refileIfSooner moves e to an earlier wheel slot when a state change
// shortened its timeout (home shard lock held), so it expires on time.
func (s *shard) refileIfSooner(e *Entry, t *Table) {
	if e.expires.Load() < e.slot.Load() {
		s.unfile(e, t)
		s.file(e, t)
	}
}

// unlinkLocked removes e from its shard's in index (lock held) and marks
// it dead; the out index and the counters are handled by finish, with no
// lock held. The entry itself stays filed in the wheel until freed.
func (t *Table) unlinkLocked(s *shard, e *Entry, hk uint64) {
	t.remove(&s.in, hk, s.ref(e), false)
	e.flags.Or(FlagDead)
}

// finish completes an unlink outside the home shard's lock: drop the out
// index, unbind the dest and the template, count it.
func (t *Table) finish(e *Entry) {
	if e.flags.Load()&FlagTemplate == 0 && e.Out != (Key{}) {
		ho, o := t.locate(&e.Out)
		ref := t.homeOf(e).ref(e)
		o.mu.Lock()
		t.remove(&o.out, ho, ref, true)
		o.mu.Unlock()
	}
	fl := e.flags.Load()
	if e.Dest != nil {
		tpl := fl&FlagTemplate != 0
		e.Dest.Unbind(tpl, !tpl && fl&FlagInactive == 0)
	}
	if e.Tpl != nil {
		e.Tpl.nControl.Add(-1)
	}
	t.count.Add(-1)
	t.expired.Add(1)
	if t.OnExpire != nil {
		t.OnExpire(e)
	}
}

// Advance moves the coarse clock to now and expires what is due, one
// shard at a time: no lock is ever held across shards, and a shard is
// locked only while one wheel slot is processed.
func (t *Table) Advance(now time.Time) {
	cur := int64(now.Sub(t.start) / t.tick)
	if cur <= t.now.Load() {
		return
	}
	t.now.Store(cur)
	var expired []*Entry
	for i := range t.shards {
		s := &t.shards[i]
		for {
			s.mu.Lock()
			if s.done >= cur {
				s.mu.Unlock()
				break
			}
			// Never let the wheel fall more than one turn behind.
			if cur-s.done > t.nslots {
				s.done = cur - t.nslots
			}
			s.done++
			idx := s.done % t.nslots
			id := s.wheel[idx]
			s.wheel[idx] = 0
			for id != 0 {
				e := s.entry(id)
				id = e.next
				e.next, e.prev = 0, 0
				fl := e.flags.Load()
				switch {
				case fl&FlagDead != 0 && fl&FlagTemplate != 0 && e.nControl.Load() > 0:
					// A dead template stays allocated while conns still
					// point at it.
					e.expires.Store(int32(s.done + t.ticks(60)))
					s.file(e, t)
				case fl&FlagDead != 0:
					s.release(e)
				case int64(e.expires.Load()) > s.done:
					t.rescans.Add(1)
					s.file(e, t)
				case fl&FlagTemplate != 0 && e.nControl.Load() > 0:
					// Templates that still control conns live on in 60 s
					// steps (spec §3.4, §4.4).
					e.timeout.Store(60)
					e.expires.Store(int32(s.done + t.ticks(60)))
					s.file(e, t)
					if hp := t.syncHook.Load(); hp != nil {
						(*hp)(e, false) // IPVS syncs a template re-armed this way
					}
				default:
					t.unlinkLocked(s, e, t.hash(&e.In))
					expired = append(expired, e)
					// File it again as dead so the next turn frees it,
					// after finish has run.
					e.expires.Store(int32(s.done + 1))
					s.file(e, t)
				}
			}
			s.mu.Unlock()
			for _, e := range expired {
				t.finish(e)
			}
			expired = expired[:0]
		}
	}
}

// Walk calls fn for every live entry, one shard at a time (for listings;
// never on the packet path). fn must not call back into the table.
func (t *Table) Walk(fn func(e *Entry)) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for _, r := range s.in.slots {
			if r != 0 {
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
		for s.in.n > 0 {
			var e *Entry
			for _, r := range s.in.slots {
				if r != 0 {
					e = t.entryRef(r)
					break
				}
			}
			t.unlinkLocked(s, e, t.hash(&e.In))
			all = append(all, e)
		}
		s.mu.Unlock()
	}
	for _, e := range all {
		t.finish(e)
	}
}

// spinLock guards a shard. Critical sections are a few dozen nanoseconds
// and rarely contended (flows spread over 256 shards), so a CAS to take it
// and a plain release store to drop it beat sync.Mutex's atomic add on
// the per-packet path; a waiter yields instead of burning its core.
type spinLock struct{ v atomic.Uint32 }

func (l *spinLock) Lock() {
	for !l.v.CompareAndSwap(0, 1) {
		for i := 0; l.v.Load() != 0; i++ {
			if i > 16 {
				runtime.Gosched()
				i = 0
			}
		}
	}
}

func (l *spinLock) Unlock() { l.v.Store(0) }
