package conntrack

import (
	"testing"
	"time"
	"unsafe"
)

// A slab hands out distinct entries up to its capacity, lowest chunk
// first, and gives chunks back as they empty.
func TestSlabAllocRelease(t *testing.T) {
	s := newSlab(3*chunkSize, 5)
	var es []*Entry
	seen := map[uint32]bool{}
	for range 3 * chunkSize {
		e := s.alloc(false)
		if e == nil {
			t.Fatalf("alloc %d of %d failed", len(es), 3*chunkSize)
		}
		if seen[e.id] || e.home != 5 || s.entry(e.id) != e {
			t.Fatalf("entry id %d: duplicate %v, home %d", e.id, seen[e.id], e.home)
		}
		seen[e.id] = true
		es = append(es, e)
	}
	if s.alloc(false) != nil || s.inUse != 3 {
		t.Fatalf("allocated past capacity (%d chunks)", s.inUse)
	}
	// Free chunk 2 entirely and half of chunk 0: chunk 2 goes back (as the
	// spare), and new entries come from chunk 0 first.
	for _, e := range es[2*chunkSize:] {
		s.release(e)
	}
	for _, e := range es[:chunkSize/2] {
		s.release(e)
	}
	if s.inUse != 2 || s.spare == nil {
		t.Fatalf("%d chunks in use, spare %v: want 2 and a spare", s.inUse, s.spare != nil)
	}
	for range chunkSize / 2 {
		if e := s.alloc(false); (e.id-1)>>chunkBits != 0 {
			t.Fatalf("allocated from chunk %d while chunk 0 had room", (e.id-1)>>chunkBits)
		}
	}
	// The next one needs chunk 2 again: the spare is reused, with the
	// generations its entries had, so a Ref of their former life stays
	// stale.
	e := s.alloc(false)
	if (e.id-1)>>chunkBits != 2 || s.spare != nil || e.gen.Load() != 1 {
		t.Fatalf("entry %d gen %d, spare %v: want chunk 2 reused, gen 1", e.id, e.gen.Load(), s.spare != nil)
	}
}

// An empty table gives back every chunk it filled: after a flood has come
// and gone, the table holds what it held before it.
func TestMemoryFollowsLiveTable(t *testing.T) {
	tb := New(Config{Shards: 16, MaxEntries: 30_000, Tick: time.Second})
	empty := tb.Bytes()
	d := testDest()
	for i := range 30_000 {
		k := Key{SrcIP: [4]byte{198, 18, byte(i >> 16), byte(i >> 8)}, DstIP: [4]byte{198, 18, 0, 100}, SrcPort: uint16(i), DstPort: 80, Proto: 6}
		if _, err := tb.Create(&NewConn{In: k, Dest: d}, syn, nil); err != nil {
			t.Fatal(err)
		}
	}
	full := tb.Bytes()
	// Keep a few conns alive, let the rest expire.
	for i := 0; i < 30_000; i += 3_000 {
		k := Key{SrcIP: [4]byte{198, 18, byte(i >> 16), byte(i >> 8)}, DstIP: [4]byte{198, 18, 0, 100}, SrcPort: uint16(i), DstPort: 80, Proto: 6}
		tb.LookupIn(&k, ack, &Hit{})
	}
	tb.Advance(tb.start.Add(61 * time.Second)) // SYN_RECV: 60 s
	after := tb.Bytes()
	perShardSpare := int64(len(tb.shards)) * chunkBytes
	t.Logf("empty %d KiB, 30k entries %d KiB, 10 left %d KiB", empty>>10, full>>10, after>>10)
	if tb.Len() != 10 || after > empty+perShardSpare+10*chunkBytes {
		t.Fatalf("%d entries left hold %d bytes; empty table %d", tb.Len(), after, empty)
	}
	if full-empty < 30_000*int64(unsafe.Sizeof(Entry{})) {
		t.Fatalf("30k entries counted as %d bytes", full-empty)
	}
}
