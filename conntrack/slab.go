package conntrack

import (
	"math/bits"
	"unsafe"
)

// chunkBits sizes the chunks entries are allocated in: 256 entries, 26 KiB.
const (
	chunkBits = 8
	chunkSize = 1 << chunkBits
)

// chunkBytes is the memory of one chunk; sideBytes that of an IPv6
// chunk's address array.
const (
	chunkBytes = int64(chunkSize * unsafe.Sizeof(Entry{}))
	sideBytes  = int64(chunkSize * unsafe.Sizeof(Addrs6{}))
)

// slab is a shard's entry allocator: a fixed array of chunk pointers
// (entries never move, so ids and pointers stay valid), each chunk with
// its own free list and live count.
//
// Memory follows the live table, not its high-water mark: alloc takes the
// lowest-numbered chunk with a free entry, so live entries gather in the
// low chunks, and a chunk whose last entry is freed goes back to the Go
// heap (one empty chunk is kept as a spare, so a conn that comes and goes
// at a chunk boundary does not allocate each time). After a flood, the
// chunks it filled are returned as its entries expire.
//
// A chunk holds IPv4 or IPv6 entries, never both: an IPv6 chunk has an
// array of its entries' full addresses beside it (side), so IPv4 entries
// stay 104 bytes and an IPv6 one takes 104 + 64. Each family has its own
// availability bitmap; a chunk not allocated is available to both.
//
// All methods run under the shard's lock.
type slab struct {
	chunks []*[chunkSize]Entry  // fixed length; nil: not allocated
	side   []*[chunkSize]Addrs6 // an IPv6 chunk's addresses; nil for an IPv4 chunk
	live   []uint16             // live entries per chunk
	free   []uint32             // free list head (an id) per chunk; 0: empty
	avail  []uint64             // bit c: chunk c is IPv4 with a free entry, or not allocated
	avail6 []uint64             // bit c: chunk c is IPv6 with a free entry, or not allocated
	spare  *[chunkSize]Entry
	spare6 *[chunkSize]Addrs6
	inUse  int // chunks allocated (the spare not counted)
	inUse6 int // of them, IPv6 chunks
	home   uint8
}

func newSlab(maxEntries int, home uint8) slab {
	n := (maxEntries + chunkSize - 1) / chunkSize
	s := slab{chunks: make([]*[chunkSize]Entry, n), side: make([]*[chunkSize]Addrs6, n), live: make([]uint16, n), free: make([]uint32, n),
		avail: make([]uint64, (n+63)/64), avail6: make([]uint64, (n+63)/64), home: home}
	for c := range n {
		s.avail[c/64] |= 1 << (c % 64)
		s.avail6[c/64] |= 1 << (c % 64)
	}
	return s
}

// side6 returns the address record of an entry of an IPv6 chunk.
func (s *slab) side6(id uint32) *Addrs6 {
	id--
	return &s.side[id>>chunkBits][id&(chunkSize-1)]
}

// entry returns the entry with id (1-based) of an allocated chunk.
func (s *slab) entry(id uint32) *Entry {
	id--
	return &s.chunks[id>>chunkBits][id&(chunkSize-1)]
}

// alloc takes a free entry of an IPv4 chunk (v6: of an IPv6 chunk, with
// its address record), or returns nil when every chunk is full. The
// entry is zero but for its id, home and generation.
func (s *slab) alloc(v6 bool) *Entry {
	avail := s.avail
	if v6 {
		avail = s.avail6
	}
	c := -1
	for w, word := range avail {
		if word != 0 {
			c = w*64 + bits.TrailingZeros64(word)
			break
		}
	}
	if c < 0 {
		return nil
	}
	if s.chunks[c] == nil {
		s.newChunk(c, v6)
	}
	id := s.free[c]
	e := s.entry(id)
	s.free[c] = e.next
	e.next = 0
	s.live[c]++
	if s.live[c] == chunkSize {
		avail[c/64] &^= 1 << (c % 64)
	}
	return e
}

// newChunk allocates chunk c (or reuses the spare) and threads its free
// list. Generations carry over in a reused spare, so a Ref to an entry of
// its former life still fails its check.
func (s *slab) newChunk(c int, v6 bool) {
	ch := s.spare
	s.spare = nil
	if v6 {
		sd := s.spare6
		s.spare6 = nil
		if sd == nil {
			sd = new([chunkSize]Addrs6)
		}
		s.side[c] = sd
		s.avail[c/64] &^= 1 << (c % 64) // an IPv6 chunk now
		s.inUse6++
	} else {
		s.avail6[c/64] &^= 1 << (c % 64)
	}
	if ch == nil {
		ch = new([chunkSize]Entry)
		for i := range ch {
			// Written once: a stale Ref may read its entry's home
			// without a lock (to find the lock), and a spare is only
			// ever reused by the shard it came from.
			ch[i].home = s.home
		}
	}
	base := uint32(c) << chunkBits
	for i := range ch {
		e := &ch[i]
		e.id = base + uint32(i) + 1
		e.next = e.id + 1
	}
	ch[chunkSize-1].next = 0
	s.chunks[c] = ch
	s.free[c] = base + 1
	s.live[c] = 0
	s.inUse++
}

// release returns an entry that no index, wheel slot or conn reaches any
// more: it is zeroed, its generation bumped, and its chunk given back
// when it was the chunk's last live entry.
func (s *slab) release(e *Entry) {
	c := int((e.id - 1) >> chunkBits)
	// The generation moves before the word is cleared: a goroutine that
	// reads the word and then the generation without this lock (Create's
	// out step) sees either the old dead word or the new generation.
	e.gen.Add(1)
	e.word.Store(0)
	e.expires.Store(0)
	e.slot.Store(0)
	e.timeout.Store(0)
	e.nControl.Store(0)
	e.In, e.Out = Key{}, Key{}
	e.Dest, e.Tpl, e.Aux = nil, nil, 0
	e.prev, e.next = 0, s.free[c]
	e.ClientIf, e.ClientMAC, e.Method = 0, [6]byte{}, 0
	s.free[c] = e.id
	s.live[c]--
	sd := s.side[c]
	if sd != nil {
		sd[(e.id-1)&(chunkSize-1)] = Addrs6{}
		s.avail6[c/64] |= 1 << (c % 64)
	} else {
		s.avail[c/64] |= 1 << (c % 64)
	}
	if s.live[c] == 0 {
		// Every entry of the chunk is free: give it back. Only the spare
		// (one chunk, and one address array) outlives its use. The chunk
		// is then available to either family.
		if s.spare == nil {
			s.spare = s.chunks[c]
		}
		if sd != nil {
			if s.spare6 == nil {
				s.spare6 = sd
			}
			s.side[c] = nil
			s.inUse6--
		}
		s.chunks[c] = nil
		s.free[c] = 0
		s.inUse--
		s.avail[c/64] |= 1 << (c % 64)
		s.avail6[c/64] |= 1 << (c % 64)
	}
}

// bytes is the memory the slab holds: its chunks, the spare and the
// fixed arrays.
func (s *slab) bytes() int64 {
	n := int64(s.inUse)*chunkBytes + int64(s.inUse6)*sideBytes
	if s.spare != nil {
		n += chunkBytes
	}
	if s.spare6 != nil {
		n += sideBytes
	}
	return n + int64(len(s.chunks))*(8+8+2+4) + int64(len(s.avail))*16
}
