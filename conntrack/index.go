package conntrack

import "unsafe"

// index is an open-addressing hash index (linear probing, backward-shift
// deletion, so no tombstones) of 4-byte entry references, with a byte of
// each key's hash kept beside its slot: a probe scans tags and reads an
// entry only on a tag match, so most lookups touch one slot and one entry.
//
// It is sized once, from the most entries it may ever hold (its shard's
// share of --conn-max, see capFor), with the load kept at or under 3/4,
// and never grows: growing meant rehashing a whole shard under its spin
// lock, milliseconds at 10 million entries, on the packet path. The slot
// count need not be a power of two: a hash's high 32 bits are mapped onto
// [0, size) with a multiply (Lemire's fastrange), so the size follows the
// capacity closely instead of doubling.
//
// The index knows nothing of entries: a lookup (Table.findIn, findOut;
// written out there, on the per-packet path) probes from home(h) to the
// first empty slot, reading the entry of each slot whose tag matches and
// comparing its key; deletion is told where a reference's key hashes to.
type index struct {
	slots []uint32 // entry references; 0: empty
	tags  []uint8  // tagOf(hash) of each slot's key; 0: empty
	size  uint32   // len(slots)
	n     int      // references held
	max   int      // capacity: insert refuses beyond it
}

// newIndex makes an index for up to capacity references, its memory
// faulted in (see prefault).
func newIndex(capacity int) index {
	size := capacity + capacity/3 + 1 // load <= 3/4 when full
	x := index{slots: make([]uint32, size), tags: make([]uint8, size), size: uint32(size), max: capacity}
	prefault(x.slots)
	prefault(x.tags)
	return x
}

// pageSize is the smallest page a write may fault in.
const pageSize = 4096

// prefault writes a zero into each page of s, so that the kernel backs
// it now and not on the packet path. A large slice comes fresh from the
// kernel, untouched: each insert lands on a random slot, so until every
// page of an index had been written once, nearly every new connection
// took a page fault in each of its two indices (some microseconds each
// on a VM): a director just started handled its first thousands of
// SYNs at about 6.7 us each, and a TPACKET_V3 ring (--ring 3, whose 16
// blocks hold 16 ms of frames at low rates) dropped 5,500 of 8,192 SYNs
// sent at 100,000 a second. The kernel's IPVS allocates its connection
// table the same way, backed at load. The zero stores are not elided:
// the compiler keeps stores to heap memory.
func prefault[T uint32 | uint8](s []T) {
	var z T
	step := pageSize / int(unsafe.Sizeof(z))
	for i := 0; i < len(s); i += step {
		s[i] = 0
	}
}

// tagOf is the byte of a key hash kept beside its slot; never 0.
func tagOf(h uint64) uint8 { return uint8(h>>16) | 0x80 }

// home is the slot a hash's probe starts at.
func (x *index) home(h uint64) uint32 { return uint32((h >> 32) * uint64(x.size) >> 32) }

// insert adds a reference under hash h (the key is absent). It reports
// false, changing nothing, when the index holds its capacity.
func (x *index) insert(h uint64, ref uint32) bool {
	if x.n >= x.max {
		return false
	}
	i := x.home(h)
	for x.tags[i] != 0 {
		i++
		if i == x.size {
			i = 0
		}
	}
	x.slots[i], x.tags[i] = ref, tagOf(h)
	x.n++
	return true
}

// remove deletes a reference stored under hash h and shifts the rest of
// its cluster back so that every probe chain stays unbroken; homeOf says
// where a reference's key hashes to. It reports whether ref was there.
func (x *index) remove(h uint64, ref uint32, homeOf func(ref uint32) uint32) bool {
	i := x.home(h)
	for x.slots[i] != ref {
		if x.tags[i] == 0 {
			return false
		}
		i++
		if i == x.size {
			i = 0
		}
	}
	j := i
	for {
		j++
		if j == x.size {
			j = 0
		}
		r := x.slots[j]
		if x.tags[j] == 0 {
			break
		}
		k := homeOf(r)
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

// clear empties the index (Flush), keeping its memory.
func (x *index) clear() {
	clear(x.slots)
	clear(x.tags)
	x.n = 0
}

// bytes is the index's memory.
func (x *index) bytes() int64 { return int64(x.size) * 5 }
