package conntrack

import (
	"sync/atomic"

	"github.com/golvs/golvs/ipvs"
)

// Key is a packed flow key: source and destination address and port and
// the protocol. It is 16 bytes, comparable, pointer-free and 8-byte
// aligned, so it compares as two words, hashes as two words (hash.go) and
// keeps the table free of GC scanning. An IPv4 key holds the addresses; an
// IPv6 key (Kind has KindV6) holds a keyed 32-bit digest of each, and the
// entry's full addresses live beside it (v6.go).
type Key struct {
	_       [0]uint64 // alignment only: the hash reads the key as two uint64
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

// Key kinds: KindV6 is a flag on either.
const (
	KindConn     = 0
	KindTemplate = 1
	KindV6       = 2
)

// Entry flags, as Flags returns them.
const (
	FlagTemplate = 1 << iota // a persistence template
	FlagNoOutput             // DR/TUN: replies bypass the director (cleared by the first reply seen)
	FlagDead                 // left the in index: being torn down, unreachable by new lookups
	FlagDone                 // torn down (out index, counters); freed once no conn controls it
	flagDropped              // dropped by the drop_entry defense (expire its template too)
	FlagSync                 // created by a sync backup from a master's message (sync.go)
)

// The entry word packs what changes per packet into one atomic, so that
// one compare-and-swap moves the state, counts the packet and clears
// NOOUTPUT together, and a packet that changes none of them writes
// nothing:
//
//	bits  0..7   protocol state (a template: 0 NONE, 1 ASSURED)
//	bits  8..11  inbound packets seen, saturating at 15 (IPVS's in_pkts,
//	             read by drop_entry's todrop_entry)
//	bits 12..19  flags (12..17 used)
//	bits 20..31  the sync master's packet count (sync.go)
const (
	wStateMask = 0xff
	wPktShift  = 8
	wPktMask   = 0xf << wPktShift
	wFlagShift = 12

	wTemplate = FlagTemplate << wFlagShift
	wNoOutput = FlagNoOutput << wFlagShift
	wDead     = FlagDead << wFlagShift
	wDone     = FlagDone << wFlagShift
	wDropped  = flagDropped << wFlagShift
)

// Entry is one connection (or persistence template). Fields set at
// creation (keys, Dest, Tpl, Method, the client's layer 2, Aux) never
// change while the entry is allocated; they are read by whoever holds the
// lock of a shard that indexes it (its home shard for the in key, another
// for the out key). The word, expiry and timeout change under those locks
// with atomics, because the in and out indices of one entry usually sit
// in different shards.
//
// Entries live in chunks of their home shard's slab (slab.go) and are
// linked by 32-bit ids, not pointers, to keep them small (see the size
// test): 104 bytes, plus a slot and a tag byte in each index.
type Entry struct {
	In  Key
	Out Key

	Dest *ipvs.Dest // its service's counters are Dest.SvcStats
	Tpl  *Entry     // the controlling template, if any (held by nControl)

	// Aux is free for forwarding methods that keep per-conn data (e.g. a
	// FULLNAT local port); the table never reads it.
	Aux uint64

	word     atomic.Uint32 // state, in_pkts, flags (see above)
	expires  atomic.Int32  // in ticks of the table's coarse clock
	slot     atomic.Int32  // the wheel tick this entry is filed under
	timeout  atomic.Uint32 // seconds, as IPVS's cp->timeout
	nControl atomic.Int32  // conns controlled by this template (changed under its home lock)
	gen      atomic.Uint32 // bumped each time the slot is freed: stale Refs are refused

	id   uint32 // within the home shard, 1-based
	next uint32 // wheel list / free list
	prev uint32 // wheel list

	// The client side's layer 2, learnt from the frame that created the
	// conn, so replies go back the way the request came.
	ClientIf  int32
	ClientMAC [6]byte
	Method    ipvs.Method
	home      uint8 // the home shard's index
}

// State returns the protocol state.
func (e *Entry) State() uint8 { return uint8(e.word.Load() & wStateMask) }

// Flags returns the entry flags.
func (e *Entry) Flags() uint32 { return e.word.Load() & wFlagBits >> wFlagShift }

// Template reports whether e is a persistence template.
func (e *Entry) Template() bool { return e.word.Load()&wTemplate != 0 }

// InPkts returns how many inbound packets the conn has seen, up to 15.
func (e *Entry) InPkts() int { return int(e.word.Load()&wPktMask) >> wPktShift }

// active reports whether a conn in word w counts in its dest's
// activeconns: only TCP states do (spec §3.3); a UDP conn stays inactive.
func (e *Entry) active(w uint32) bool {
	return w&wTemplate == 0 && e.In.Proto == 6 && TCPActive(uint8(w&wStateMask))
}

// Ref names one entry for as long as it is allocated: the table checks
// its generation under the entry's shard lock, so a Ref kept past the
// entry's end is refused instead of touching whatever reuses the slot.
// The zero Ref names nothing.
type Ref struct {
	e   *Entry
	gen uint32
}

// IsZero reports whether r names nothing.
func (r Ref) IsZero() bool { return r.e == nil }

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
	// A6 is an IPv6 entry's full addresses (filled by the IPv6 lookups
	// only; an IPv4 lookup leaves it as it was).
	A6 Addrs6
}

// fill copies e into h. It reads each pointer of e once: the quiet
// lookups (table.go) call it without a lock, and check afterwards that
// nothing changed, but a pointer read twice could be nil the second time.
func fill(e *Entry, h *Hit) {
	h.In, h.Out = e.In, e.Out
	d := e.Dest
	h.Dest, h.Method = d, e.Method
	h.SvcStats = nil
	if d != nil {
		h.SvcStats = d.SvcStats
	}
	h.ClientIf, h.ClientMAC, h.Aux = e.ClientIf, e.ClientMAC, e.Aux
}

// NewConn describes a conn (or template) to create.
type NewConn struct {
	In, Out   Key
	Dest      *ipvs.Dest
	Tpl       Ref // the controlling template (LookupTemplate, or Create of one)
	Method    ipvs.Method
	ClientIf  int32
	ClientMAC [6]byte
	Aux       uint64
	Template  bool
	Timeout   uint32 // templates: the persistence timeout in seconds
	NoOutput  bool
	// A6 is an IPv6 conn's (or template's) full addresses, whose digests
	// its keys hold (In has KindV6); ignored for IPv4.
	A6 Addrs6
}
