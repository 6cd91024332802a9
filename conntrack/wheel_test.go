package conntrack

import (
	"math/rand/v2"
	"testing"
	"time"
)

// Refreshed conns are re-filed, not expired, when their old slot comes.
func TestRefreshKeepsAlive(t *testing.T) {
	tb := New(Config{Tick: 100 * time.Millisecond, Shards: 2})
	tb.SetTimeouts(0, 0, 1)
	d := testDest()
	k := key(2)
	k.Proto = 17
	if _, err := tb.Create(&NewConn{In: k, Dest: d}, 0, nil); err != nil {
		t.Fatal(err)
	}
	var h Hit
	for i := 1; i <= 30; i++ {
		tb.Advance(tb.start.Add(time.Duration(i) * 500 * time.Millisecond))
		if tb.LookupIn(&k, 0, &h) != Found {
			t.Fatalf("UDP conn refreshed every 0.5s expired at step %d", i)
		}
	}
	if d.InactConns() != 1 || d.ActiveConns() != 0 {
		t.Fatalf("UDP conns are inactive: active %d inactive %d", d.ActiveConns(), d.InactConns())
	}
}

// Every entry expires at its tick, neither before nor after, whether its
// timeout is within one turn of the wheel (16 ticks here) or several
// (re-filed each turn), and whether the clock moves a tick at a time or
// jumps.
func TestWheelExpiresOnTime(t *testing.T) {
	for _, jump := range []int{1, 3, 40} {
		tb := New(Config{Shards: 4, Tick: time.Second, WheelSlots: 16})
		d := testDest()
		r := rand.New(rand.NewPCG(uint64(jump), 9))
		due := map[Key]int{}
		for i := range 300 {
			k := Key{SrcIP: [4]byte{198, 18, byte(i >> 8), byte(i)}, DstIP: [4]byte{198, 18, 0, 100}, DstPort: 80, Proto: 6, Kind: KindTemplate}
			tmo := 1 + r.IntN(100)
			if _, err := tb.Create(&NewConn{In: k, Dest: d, Template: true, Timeout: uint32(tmo)}, 0, nil); err != nil {
				t.Fatal(err)
			}
			due[k] = tmo
		}
		for now := jump; len(due) > 0; now += jump {
			tb.Advance(tb.start.Add(time.Duration(now) * time.Second))
			for k, at := range due {
				alive := false
				if r, _ := tb.LookupTemplate(&k); !r.IsZero() {
					alive = true
				}
				if alive != (now < at) {
					t.Fatalf("jump %d: template due at %d alive %v at %d", jump, at, alive, now)
				}
				if !alive {
					delete(due, k)
				}
			}
		}
		if d.PersistConns() != 0 || tb.Len() != 0 {
			t.Fatalf("jump %d: %d entries, %d persistent left", jump, tb.Len(), d.PersistConns())
		}
	}
}

// A state change that shortens a conn's timeout moves it to an earlier
// slot, whichever side's packet made it: a reply (whose worker holds
// another shard's lock) as well as a request.
func TestWheelRefileSooner(t *testing.T) {
	for _, reply := range []bool{false, true} {
		tb := New(Config{Shards: 8, Tick: time.Second})
		d := testDest()
		in := key(7)
		out := Key{SrcIP: [4]byte{198, 19, 0, 11}, DstIP: in.SrcIP, SrcPort: 80, DstPort: in.SrcPort, Proto: 6}
		var h Hit
		if _, err := tb.Create(&NewConn{In: in, Out: out, Dest: d}, syn, &h); err != nil {
			t.Fatal(err)
		}
		tb.LookupIn(&in, ack, &h) // ESTABLISHED: 900 s
		if reply {
			tb.LookupOut(&out, rst, &h) // CLOSE: 10 s
		} else {
			tb.LookupIn(&in, rst, &h)
		}
		if h.NewState != TCPClose {
			t.Fatalf("state %d, want CLOSE", h.NewState)
		}
		tb.Advance(tb.start.Add(9 * time.Second))
		if tb.Len() != 1 {
			t.Fatal("expired early")
		}
		tb.Advance(tb.start.Add(10 * time.Second))
		if tb.Len() != 0 || d.InactConns() != 0 {
			t.Fatalf("reply %v: CLOSE conn alive at 10 s (slot %d)", reply, tb.Len())
		}
	}
}
