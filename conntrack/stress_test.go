package conntrack

import (
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"
)

// TestRandomOpsMatchModel drives the table with fixed-seed random creates,
// lookups, expiries and clock advances, and checks it against a plain map
// after every step: the open-addressing indices (with backward-shift
// deletion) never lose or invent an entry.
func TestRandomOpsMatchModel(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	tb := New(Config{Shards: 4, MaxEntries: 5000, Tick: time.Second})
	tb.SetTimeouts(0, 0, 5)
	d := testDest()
	model := map[Key]Key{} // in -> out
	now := tb.start
	var h Hit
	for step := 0; step < 40000; step++ {
		i := r.IntN(3000)
		k := Key{SrcIP: [4]byte{198, 18, byte(i >> 8), byte(i)}, DstIP: [4]byte{198, 18, 0, 100}, SrcPort: uint16(i), DstPort: 53, Proto: 17}
		out := Key{SrcIP: [4]byte{198, 19, 0, 11}, DstIP: k.SrcIP, SrcPort: 53, DstPort: k.SrcPort, Proto: 17}
		switch op := r.IntN(10); {
		case op < 4:
			_, err := tb.Create(&NewConn{In: k, Out: out, Dest: d}, 0, nil)
			_, had := model[k]
			if had != (err == ErrExists) {
				t.Fatalf("step %d: create %v, model had %v", step, err, had)
			}
			if err == nil {
				model[k] = out
			}
		case op < 7:
			got := tb.LookupIn(&k, 0, &h) == Found
			if _, had := model[k]; got != had {
				t.Fatalf("step %d: lookup found %v, model %v", step, got, had)
			}
			if got && !tb.LookupOut(&out, 0, &h) {
				t.Fatalf("step %d: reply index lost %v", step, out)
			}
		case op < 9:
			got := tb.Expire(&k)
			if _, had := model[k]; got != had {
				t.Fatalf("step %d: expire %v, model %v", step, got, had)
			}
			delete(model, k)
			if tb.LookupOut(&out, 0, &h) {
				t.Fatalf("step %d: reply index kept an expired conn", step)
			}
		default:
			// Time passes; whatever expired leaves the model too.
			now = now.Add(time.Duration(r.IntN(3)) * time.Second)
			tb.Advance(now)
			for mk := range model {
				mk := mk
				if tb.Peek(&mk, false, &h) == false {
					delete(model, mk)
				}
			}
		}
		if tb.Len() != len(model) {
			t.Fatalf("step %d: table holds %d, model %d", step, tb.Len(), len(model))
		}
	}
	if d.InactConns() != int32(len(model)) {
		t.Fatalf("dest counts %d inactive, model %d conns", d.InactConns(), len(model))
	}
}

// TestEntrySize keeps the entry small: the budget is 128 bytes per conn
// including both index slots (104 bytes, plus 8 for the sync master's
// per-conn state: in_pkts/old_state and sync_endtime).
func TestEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(Entry{}); n > 112 {
		t.Fatalf("Entry is %d bytes, budget 112 (plus ~16 for the index slots)", n)
	}
	t.Logf("Entry: %d bytes", unsafe.Sizeof(Entry{}))
}
