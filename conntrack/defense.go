package conntrack

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Defenses against floods: IPVS's drop_entry, drop_packet and secure_tcp
// (spec §3.5, §3.9), and golvs's answer to its own limit, eviction.
//
// IPVS's automatic modes engage when "memory is low": free + buffer
// pages below amemthresh. golvs's table cannot run the host out of
// memory (--conn-max bounds it, and a full table is golvs's only shortage),
// so its "available memory" is the free room of the table: conn-max
// minus the entries in it, compared with AMemThresh entries. The
// default, conn-max/1024, is the kernel's default ratio: 1024 pages
// (4 MiB) is about a thousandth of a director's memory, and the default
// --conn-max of 1048576 gives the kernel's very number, 1024.
//
// Eviction has no IPVS counterpart because IPVS has no limit: it keeps
// creating conns until memory runs out. At golvs's limit a new conn
// replaces the conn of its shard nearest to expiry among a random sample
// of 8 that are half-open (SYN_RECV, SYNACK) or closing (TIME_WAIT,
// CLOSE), and is refused only when the sample holds none: a flood of SYNs
// from random sources can then only push out its own entries (and
// handshakes older than the table's turnover, table size / flood rate),
// never an established conn.

// Defense configures the defenses, with IPVS's sysctl names and values.
type Defense struct {
	// AMemThresh (amemthresh): free table entries below which the
	// automatic modes engage; 0: MaxEntries/1024, at least 1.
	AMemThresh int
	// AmDropRate (am_droprate): drop_packet's rate in mode 3; 0: 10.
	AmDropRate int
	// DropEntry, DropPacket, SecureTCP: 0 off, 1 automatic (engaged,
	// and shown as 2, while the table's free room is under AMemThresh),
	// 2 engaged now (returns to 1 when the room is back), 3 always on.
	DropEntry  int
	DropPacket int
	SecureTCP  int
}

func (d *Defense) check(maxEntries int) error {
	for _, m := range []struct {
		name string
		v    int
	}{{"drop_entry", d.DropEntry}, {"drop_packet", d.DropPacket}, {"secure_tcp", d.SecureTCP}} {
		if m.v < 0 || m.v > 3 {
			return fmt.Errorf("%w: %s %d (allowed 0 off, 1 automatic, 2 engaged, 3 always)", ErrConfig, m.name, m.v)
		}
	}
	if d.AMemThresh < 0 || d.AMemThresh > maxEntries {
		return fmt.Errorf("%w: amemthresh %d (allowed 0..%d, the table's size)", ErrConfig, d.AMemThresh, maxEntries)
	}
	if d.AmDropRate < 0 || d.AmDropRate > 1<<20 {
		return fmt.Errorf("%w: am_droprate %d (allowed 0..%d)", ErrConfig, d.AmDropRate, 1<<20)
	}
	return nil
}

// defense is the defense timer's state: the modes (1 and 2 flip as in
// update_defense_level) and what the packet path reads.
type defense struct {
	amemthresh int64
	amDroprate int32

	dropEntry, dropPacket, secureTCP atomic.Int32

	dropEntryOn atomic.Bool
	dropRate    atomic.Int32 // 1 in dropRate new conns dropped; 0: off
	secureOn    atomic.Bool

	period int64    // ticks between runs: one second
	last   int64    // tick of the last run (Advance only)
	todrop [9]int32 // todrop_entry's counters (Advance only)
	batch  []*Entry // drop_entry's scratch (Advance only)
}

func (d *defense) init(c Defense, maxEntries int, t *Table) {
	d.amemthresh = int64(c.AMemThresh)
	if d.amemthresh == 0 {
		d.amemthresh = max(int64(maxEntries)/1024, 1)
	}
	d.amDroprate = int32(c.AmDropRate)
	if d.amDroprate == 0 {
		d.amDroprate = 10
	}
	d.dropEntry.Store(int32(c.DropEntry))
	d.dropPacket.Store(int32(c.DropPacket))
	d.secureTCP.Store(int32(c.SecureTCP))
	d.period = max(int64(time.Second/t.tick), 1)
	d.update(t, t.max)
}

// DefenseState is what the defenses do now.
type DefenseState struct {
	Available  int64 // free entries: conn-max minus entries
	AMemThresh int64
	// The modes as IPVS shows its sysctls: an automatic mode reads 2
	// while engaged, 1 otherwise.
	DropEntry, DropPacket, SecureTCP int32
	DropRate                         int32 // drop_packet: 1 in DropRate new conns dropped; 0: off
}

// Defense returns the defenses' current state.
func (t *Table) Defense() DefenseState {
	d := &t.def
	return DefenseState{
		Available: t.max - t.count.Load(), AMemThresh: d.amemthresh,
		DropEntry: d.dropEntry.Load(), DropPacket: d.dropPacket.Load(), SecureTCP: d.secureTCP.Load(),
		DropRate: d.dropRate.Load(),
	}
}

// defendIfDue runs the defense timer once a second of ticks (Advance).
func (t *Table) defendIfDue(cur int64) {
	d := &t.def
	if cur-d.last < d.period {
		return
	}
	d.last = cur
	d.update(t, t.max-t.count.Load())
	if d.dropEntryOn.Load() {
		t.randomDropEntry()
	}
}

// update is update_defense_level with the table's free room as available
// memory.
func (d *defense) update(t *Table, avail int64) {
	nomem := avail < d.amemthresh
	// mode moves an automatic mode between 1 and 2 and says whether the
	// defense is engaged.
	mode := func(m *atomic.Int32) bool {
		switch m.Load() {
		case 1:
			if nomem {
				m.Store(2)
				return true
			}
		case 2:
			if nomem {
				return true
			}
			m.Store(1)
		case 3:
			return true
		}
		return false
	}
	d.dropEntryOn.Store(mode(&d.dropEntry))
	switch dp := d.dropPacket.Load(); {
	case dp == 3:
		mode(&d.dropPacket)
		d.dropRate.Store(d.amDroprate)
	case mode(&d.dropPacket):
		// amemthresh / (amemthresh - available), as the kernel computes
		// it: 1 (every new conn) once the table is full.
		d.dropRate.Store(int32(d.amemthresh / (d.amemthresh - max(avail, 0))))
	default:
		d.dropRate.Store(0)
	}
	on := mode(&d.secureTCP)
	if d.secureOn.Load() != on {
		d.secureOn.Store(on)
		t.tmo.setSecure(on)
	}
}

// DropCounter is a worker's drop_packet counter (IPVS's drop_counter):
// one per worker, so that workers share no written state.
type DropCounter struct{ n int32 }

// DropPacket reports whether the drop_packet defense drops the packet of
// a new conn about to be scheduled: one in every drop rate (ip_vs_todrop).
// It is a load and a compare while the defense is off.
func (t *Table) DropPacket(c *DropCounter) bool {
	rate := t.def.dropRate.Load()
	if rate <= 0 {
		return false
	}
	if c.n <= 0 || c.n > rate {
		c.n = rate
	}
	c.n--
	if c.n > 0 {
		return false
	}
	c.n = rate
	return true
}

// randomDropEntry is ip_vs_random_dropentry: every second it scans a
// random 1/32 of the table (a random run of each shard's index) and drops
// the conns in SYN_RECV or SYNACK, and established TCP or other conns that
// todropEntry picks. Templates and conns that control others are kept; a
// dropped conn's template is expired too (it lives on while it controls
// other conns).
func (t *Table) randomDropEntry() {
	d := &t.def
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		x := &s.in
		n := max(x.size/32, 1)
		j := uint32(s.rand() * uint64(x.size) >> 32)
		out := d.batch[:0]
		for range n {
			if x.tags[j] != 0 {
				e := t.entryRef(x.slots[j])
				if t.todrop(e) {
					out = append(out, e)
				}
			}
			j++
			if j == x.size {
				j = 0
			}
		}
		for _, e := range out {
			t.unlinkLocked(s, e, t.hk.sum(&e.In))
			e.word.Or(wDropped)
		}
		s.mu.Unlock()
		t.dropEntry.Add(uint64(len(out)))
		t.teardownAll(s, out)
		d.batch = out
	}
}

// todrop says whether drop_entry drops e (its shard's lock held).
func (t *Table) todrop(e *Entry) bool {
	w := e.word.Load()
	if w&wTemplate != 0 { // a conn's nControl is its sync mark (sync.go)
		return false
	}
	if e.In.Proto == 6 {
		switch uint8(w & wStateMask) {
		case TCPSynRecv, TCPSynAck:
			return true
		case TCPEstablished:
			return t.todropEntry(e, w)
		}
		return false
	}
	return t.todropEntry(e, w)
}

// todropEntry is the kernel's todrop_entry: a conn idle for less than
// 60 s is kept; of the others, those that saw 1 inbound packet are all
// dropped, those with 2 one in two, ... with 8 one in eight, and those
// with more (or none) are kept.
func (t *Table) todropEntry(e *Entry, w uint32) bool {
	left := int64(e.expires.Load()) - t.now.Load()
	if left > t.tmo.ticks(e.timeout.Load())-t.tmo.ticks(60) {
		return false
	}
	i := int(w&wPktMask) >> wPktShift
	if i == 0 || i > 8 {
		return false
	}
	c := &t.def.todrop[i]
	if *c--; *c > 0 {
		return false
	}
	*c = int32(i)
	return true
}

// expireSoon makes a template expire at the next tick (it then lives on in
// 60 s steps if it still controls conns). The caller holds a control
// reference, so tpl is allocated.
func (t *Table) expireSoon(tpl *Entry) {
	s := t.homeOf(tpl)
	s.mu.Lock()
	if tpl.word.Load()&wDead == 0 {
		tpl.expires.Store(int32(t.now.Load()))
		s.refileIfSooner(tpl, t)
	}
	s.mu.Unlock()
}

// evictLocked picks, unlinks (step 1) and returns the conn a new conn
// replaces in a full shard (lock held), or nil: among the first 8 entries
// from a random slot of the in index (more while none of them may go; at
// most 64 entries looked at, however sparse the index: a small table's
// index has room for more than the table holds), the half-open or
// closing TCP conn nearest its expiry. A sample, not a scan:
// each costs a cache miss, and a full table is when they count. Under a
// flood nearly every sample holds flood entries; a young one is chosen
// only if it is the oldest of its sample, so a legitimate handshake
// survives about as long as the flood takes to turn the table over.
func (t *Table) evictLocked(s *shard) *Entry {
	x := &s.in
	if x.n == 0 {
		return nil
	}
	j := uint32(s.rand() * uint64(x.size) >> 32)
	var best *Entry
	var bestExp int32
	seen := 0
	for range x.size {
		if x.tags[j] != 0 {
			e := t.entryRef(x.slots[j])
			if evictable(e) {
				if exp := e.expires.Load(); best == nil || exp < bestExp {
					best, bestExp = e, exp
				}
			}
			// Eight entries are enough when one of them may go; when
			// none may, the scan goes on (at most 64 entries), so a
			// table where replaceable conns are a minority still finds
			// one.
			if seen++; seen >= 8 && best != nil || seen >= 64 {
				break
			}
		}
		j++
		if j == x.size {
			j = 0
		}
	}
	if best != nil {
		t.unlinkLocked(s, best, t.hk.sum(&best.In))
	}
	return best
}

// evictable: a TCP conn (not a template) that is half-open (SYN_RECV,
// SYNACK: no handshake completed) or closing (TIME_WAIT, CLOSE: a new SYN
// would recycle it anyway, conn_reuse_mode).
func evictable(e *Entry) bool {
	w := e.word.Load()
	if w&wTemplate != 0 || e.In.Proto != 6 {
		return false
	}
	switch uint8(w & wStateMask) {
	case TCPSynRecv, TCPSynAck, TCPTimeWait, TCPClose:
		return true
	}
	return false
}

// rand returns 32 random bits (shard lock held): xorshift64*.
func (s *shard) rand() uint64 {
	x := s.rng
	x ^= x >> 12
	x ^= x << 25
	x ^= x >> 27
	s.rng = x
	return (x * 0x2545f4914f6cdd1d) >> 32
}
