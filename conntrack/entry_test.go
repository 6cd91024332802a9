package conntrack

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// TestEntrySize keeps the entry small: the budget is 128 bytes per conn
// including both index slots.
func TestEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(Entry{}); n > 104 {
		t.Fatalf("Entry is %d bytes, budget 104 (plus ~16 for the index slots)", n)
	}
	t.Logf("Entry: %d bytes", unsafe.Sizeof(Entry{}))
}

// Keys are two aligned words: the hash reads them so, and comparisons
// compile to two loads (aligned as a uint64 is: 8 bytes on 64-bit
// machines, 4 on 386 and arm, where a uint64 is read as two words).
func TestKeyLayout(t *testing.T) {
	if s, a := unsafe.Sizeof(Key{}), unsafe.Alignof(Key{}); s != 16 || a != unsafe.Alignof(uint64(0)) {
		t.Fatalf("Key: %d bytes aligned %d, want 16 and %d", s, a, unsafe.Alignof(uint64(0)))
	}
	if o := unsafe.Offsetof(Entry{}.Out); o != 16 {
		t.Fatalf("Entry.Out at offset %d, want 16", o)
	}
}

// The word keeps state, packet count and flags apart: counting packets
// saturates without touching the state or the flags.
func TestEntryWord(t *testing.T) {
	var e Entry
	e.word.Store(wNoOutput | uint32(TCPSynRecv))
	for range 40 {
		w := e.word.Load()
		if w&wPktMask != wPktMask {
			e.word.Store(w + 1<<wPktShift)
		}
	}
	if e.State() != TCPSynRecv || e.Flags() != FlagNoOutput || e.InPkts() != 15 {
		t.Fatalf("state %d flags %#x packets %d, want %d %#x 15", e.State(), e.Flags(), e.InPkts(), TCPSynRecv, FlagNoOutput)
	}
}

// TestConnKey4 holds ConnKey4's word-wise build to the struct literal it
// stands for, over random fields (the protocol's byte and the padding
// included).
func TestConnKey4(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 10000 {
		var src, dst [4]byte
		binary.LittleEndian.PutUint32(src[:], r.Uint32())
		binary.LittleEndian.PutUint32(dst[:], r.Uint32())
		sp, dp, pr := uint16(r.Uint32()), uint16(r.Uint32()), uint8(r.Uint32())
		want := Key{SrcIP: src, DstIP: dst, SrcPort: sp, DstPort: dp, Proto: pr}
		if got := ConnKey4(src, dst, sp, dp, pr); got != want {
			t.Fatalf("ConnKey4(%v, %v, %d, %d, %d) = %+v, want %+v", src, dst, sp, dp, pr, got, want)
		}
	}
}
