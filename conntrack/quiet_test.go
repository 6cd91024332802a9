package conntrack

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golvs/golvs/ipvs"
)

// quiet reports whether fn ran without taking the lock of shard s: the
// lock word moves on with every critical section.
func quiet(s *shard, fn func()) bool {
	before := s.mu.seq()
	fn()
	return s.mu.seq() == before
}

// The quiet path runs exactly for packets that change nothing, and
// returns what the locked path returned for the same packet: a packet
// that moves the state, counts an inbound packet, clears NOOUTPUT, moves
// the expiry, or meets a sync master's hook takes the lock; after it,
// the same packet again is quiet. A miss is quiet. IPv4 and IPv6, both
// directions.
func TestQuietLookups(t *testing.T) {
	if !optimistic {
		t.Skip("the quiet path is compiled out on this architecture or under the race detector (lock_other.go)")
	}
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			tb := New(Config{Tick: time.Second, Shards: 4})
			d := testDest()
			in, out := key(7), Key{SrcIP: [4]byte{198, 19, 0, 11}, DstIP: [4]byte{198, 18, 0, 7}, SrcPort: 80, DstPort: 1031, Proto: 6}
			var a6 Addrs6
			if v6 {
				a6.In = Pair6{Src: cAddr6(7), Dst: cAddr6(100)}
				a6.Out = Pair6{Src: cAddr6(11), Dst: cAddr6(7)}
				in = tb.Key6(&a6.In, in.SrcPort, in.DstPort, 6, KindConn)
				out = tb.Key6(&a6.Out, out.SrcPort, out.DstPort, 6, KindConn)
			}
			lookIn := func(flags uint8, h *Hit) Verdict {
				if v6 {
					return tb.LookupIn6(&in, &a6.In, flags, h)
				}
				return tb.LookupIn(&in, flags, h)
			}
			lookOut := func(flags uint8, h *Hit) bool {
				if v6 {
					return tb.LookupOut6(&out, &a6.Out, flags, h)
				}
				return tb.LookupOut(&out, flags, h)
			}
			si, so := tb.shardOf(&in), tb.shardOf(&out)
			if _, err := tb.Create(&NewConn{In: in, Out: out, Dest: d, Method: ipvs.MethodMasq, Aux: 42, A6: a6}, syn, nil); err != nil {
				t.Fatal(err)
			}
			// expect runs one packet and checks whether it was quiet,
			// its verdict and its states; a quiet packet's Hit must
			// equal the locked path's for the packet before it.
			var last Hit
			expect := func(what string, outDir bool, flags uint8, wantQuiet bool, old, nw uint8) {
				t.Helper()
				var h Hit
				var found bool
				s := si
				if outDir {
					s = so
				}
				q := quiet(s, func() {
					if outDir {
						found = lookOut(flags, &h)
					} else {
						found = lookIn(flags, &h) == Found
					}
				})
				if !found {
					t.Fatalf("%s: not found", what)
				}
				if q != wantQuiet {
					t.Fatalf("%s: quiet %v, want %v", what, q, wantQuiet)
				}
				if h.OldState != old || h.NewState != nw {
					t.Fatalf("%s: states %d -> %d, want %d -> %d", what, h.OldState, h.NewState, old, nw)
				}
				if h.In != in || h.Out != out || h.Dest != d || h.SvcStats != d.SvcStats || h.Aux != 42 || h.Method != ipvs.MethodMasq || v6 && h.A6 != a6 {
					t.Fatalf("%s: hit %+v does not describe the conn", what, h)
				}
				if wantQuiet {
					last.OldState, last.NewState = old, nw
					if h != last {
						t.Fatalf("%s: quiet hit %+v, the locked path's %+v", what, h, last)
					}
				}
				last = h
			}
			// The SYN counted one inbound packet; 14 more are counted
			// under the lock, then the count saturates.
			expect("first ACK", false, ack, false, TCPSynRecv, TCPEstablished)
			for i := 0; i < 12; i++ {
				expect("counted ACK", false, ack, false, TCPEstablished, TCPEstablished)
			}
			expect("the 15th packet", false, ack, false, TCPEstablished, TCPEstablished)
			expect("ACK, count saturated", false, ack, true, TCPEstablished, TCPEstablished)
			expect("again", false, ack|0x08, true, TCPEstablished, TCPEstablished)
			expect("a reply", true, ack, true, TCPEstablished, TCPEstablished)
			// The clock moves a tick: the expiry moves once.
			tb.Advance(tb.start.Add(1500 * time.Millisecond))
			expect("ACK after a tick", false, ack, false, TCPEstablished, TCPEstablished)
			expect("ACK in the same tick", false, ack, true, TCPEstablished, TCPEstablished)
			tb.Advance(tb.start.Add(2500 * time.Millisecond))
			expect("reply after a tick", true, ack, false, TCPEstablished, TCPEstablished)
			expect("reply in the same tick", true, ack, true, TCPEstablished, TCPEstablished)
			// A new timeout for the state: the next packet stores it.
			tb.SetTimeouts(1000, 0, 0)
			expect("ACK after a timeout change", false, ack, false, TCPEstablished, TCPEstablished)
			expect("ACK after it", false, ack, true, TCPEstablished, TCPEstablished)
			// A sync master's hook runs on every inbound packet, under
			// the lock; replies stay quiet.
			var hooked atomic.Int64
			tb.SetSyncHook(func(e *Entry, packet bool) { hooked.Add(1) })
			expect("ACK with a sync hook", false, ack, false, TCPEstablished, TCPEstablished)
			expect("reply with a sync hook", true, ack, true, TCPEstablished, TCPEstablished)
			if hooked.Load() != 1 {
				t.Fatalf("the sync hook ran %d times, want 1", hooked.Load())
			}
			tb.SetSyncHook(nil)
			// A FIN moves the state, under the lock, and so does the
			// reply's FIN; ACKs in between and after are quiet again.
			expect("FIN", false, fin|ack, false, TCPEstablished, TCPCloseWait)
			expect("ACK in CLOSE_WAIT", false, ack, true, TCPCloseWait, TCPCloseWait)
			expect("reply FIN", true, fin|ack, false, TCPCloseWait, TCPTimeWait)
			expect("ACK in TIME_WAIT", false, ack, true, TCPTimeWait, TCPTimeWait)
			// A SYN on a closed conn is never quiet: it reuses the tuple.
			var h Hit
			if q := quiet(si, func() {
				if v := lookIn(syn, &h); v != Reused {
					t.Fatalf("SYN on a closed conn: verdict %d, want Reused", v)
				}
			}); q {
				t.Fatal("a SYN reused a closed conn without the lock")
			}
			// A DR conn's first reply clears NOOUTPUT, under the lock.
			if _, err := tb.Create(&NewConn{In: in, Out: out, Dest: d, Method: ipvs.MethodMasq, Aux: 42, A6: a6, NoOutput: true}, syn, nil); err != nil {
				t.Fatal(err)
			}
			for q := range 2 {
				if got := quiet(so, func() {
					if !lookOut(syn|ack, &h) {
						t.Fatal("the reply of a NOOUTPUT conn was not found")
					}
				}); got != (q == 1) {
					t.Fatalf("reply %d of a NOOUTPUT conn: quiet %v", q+1, got)
				}
			}
			if !tb.Expire(&in) {
				t.Fatal("the NOOUTPUT conn was not there to expire")
			}
			// Gone: a miss is answered without the lock, both ways.
			if q := quiet(si, func() {
				if v := lookIn(ack, &h); v != Miss {
					t.Fatalf("after reuse: verdict %d, want Miss", v)
				}
			}); !q {
				t.Fatal("a miss took the lock")
			}
			if q := quiet(so, func() {
				if lookOut(ack, &h) {
					t.Fatal("after reuse: the reply found a conn")
				}
			}); !q {
				t.Fatal("a reply's miss took the lock")
			}
		})
	}
}

// TestQuietLookupsConcurrent: lookups of established conns race with
// their expiry and with new conns taking the same tuples and the same
// entry slots (one shard, every key hashing to one home slot, so the
// conns form one cluster of the index and each expiry shifts the conns
// behind it back while lookups probe through them). Every hit returned
// must describe one incarnation of the conn asked for: its in key, and
// the dest, out key and aux of one Create, never a mix (an incarnation's
// aux names its dest and is written into its out key, so a hit read
// across a reuse of the entry shows); and a conn the churner is not
// touching must be found both ways. Replies race the same way. Taking
// out the quiet path's checks of the lock word (for a hit, or before
// using the entry it found under the lock) fails this within a run. It
// checks invariants, not timing: load only changes how many lookups meet
// a reuse. Under the race detector the quiet path is compiled out and
// this checks the locked one.
func TestQuietLookupsConcurrent(t *testing.T) {
	const nkeys = 24
	tb := New(Config{Shards: 1, MaxEntries: nkeys + 8, Tick: time.Hour, NoEvict: true, Seed: 5})
	var dests []*ipvs.Dest
	for i := range 4 {
		dests = append(dests, ipvs.NewDest(ipvs.ServiceKey{Proto: 6}, ipvs.DestConfig{Addr: netip.AddrFrom4([4]byte{198, 19, 0, byte(11 + i)}), Port: 80, Weight: 1, Method: ipvs.MethodMasq}))
	}
	// Every key hashes to the same home slot: the conns form one
	// cluster of the in index, and each expiry shifts the conns behind
	// it back by a slot while lookups probe through them.
	var keys []Key
	k0 := key(0)
	h0, _ := tb.locate(&k0)
	for n := 0; len(keys) < nkeys && n < 1<<20; n++ {
		k := key(n)
		if h, _ := tb.locate(&k); tb.shards[0].in.home(h) == tb.shards[0].in.home(h0) {
			keys = append(keys, k)
		}
	}
	if len(keys) < nkeys {
		t.Fatalf("only %d keys share a home slot", len(keys))
	}
	// outOf is the out key of incarnation aux: its dest's address, and
	// aux's count in the client's address and port (out keys need only
	// be unique: aux is).
	outOf := func(aux uint64) Key {
		d := dests[aux%4]
		return Key{SrcIP: d.Addr.As4(), DstIP: [4]byte{198, 18, byte(aux >> 26), byte(aux >> 18)}, SrcPort: 80, DstPort: uint16(aux >> 2), Proto: 6}
	}
	check := func(h *Hit, k Key) error {
		if h.In != k {
			return fmt.Errorf("asked for %v, got a hit for %v", k, h.In)
		}
		if h.Dest != dests[h.Aux%4] || h.SvcStats != h.Dest.SvcStats || h.Out != outOf(h.Aux) {
			return fmt.Errorf("a hit mixes incarnations: aux %d, dest %p (%p), out %v", h.Aux, h.Dest, dests[h.Aux%4], h.Out)
		}
		return nil
	}
	// The conn the churner works on, with a count of its moves from one
	// conn to the next (cur: count<<8 | conn), and each conn's live
	// incarnation (its aux; 0: none), published for the lookups.
	var cur atomic.Uint64
	var auxOf [nkeys]atomic.Uint64
	// establish drives a new conn past the packets that write (its
	// first 15 inbound, its first reply), so lookups of it can be quiet.
	establish := func(i int, aux uint64) {
		var h Hit
		o := outOf(aux)
		for range 16 {
			tb.LookupIn(&keys[i], ack, &h)
		}
		tb.LookupOut(&o, ack, &h)
	}
	var next uint64
	create := func(r *rand.Rand, i int) uint64 {
		next++
		aux := next<<2 | uint64(r.IntN(4))
		if _, err := tb.Create(&NewConn{In: keys[i], Out: outOf(aux), Dest: dests[aux%4], Method: ipvs.MethodMasq, Aux: aux}, syn, nil); err != nil {
			return 0
		}
		establish(i, aux)
		return aux
	}
	r0 := rand.New(rand.NewPCG(1, 2))
	for i := range nkeys {
		auxOf[i].Store(create(r0, i))
	}
	const (
		minLookups = 1_000_000
		minChurns  = 50_000
		maxTime    = 20 * time.Second
	)
	var stop atomic.Bool
	var failed atomic.Pointer[error]
	var lookups, hits, replies, churns, steady, spin atomic.Int64
	var wg sync.WaitGroup
	fail := func(err error) {
		failed.CompareAndSwap(nil, &err)
		stop.Store(true)
	}
	// One lookup goroutine (two would starve the churner of a core on
	// a two-core machine): the conn being churned, inbound by its key
	// and back by its out key, over and over; and each time another
	// conn, which the churner is not touching, so it must be found
	// both ways (while entries of its cluster are deleted and shifted).
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(3, 4))
		var h Hit
		for !stop.Load() {
			c0 := cur.Load()
			i := int(c0 & 0xff)
			for range 4 {
				if tb.LookupIn(&keys[i], ack, &h) == Found {
					hits.Add(1)
					if err := check(&h, keys[i]); err != nil {
						fail(err)
						return
					}
				}
			}
			if aux := auxOf[i].Load(); aux != 0 {
				o := outOf(aux)
				if tb.LookupOut(&o, ack, &h) {
					replies.Add(1)
					if err := check(&h, h.In); err != nil {
						fail(err)
						return
					}
					if h.Out != o {
						fail(fmt.Errorf("reply for %v found %v", o, h.Out))
						return
					}
				}
			}
			j := (i + 1 + r.IntN(nkeys-1)) % nkeys
			o := outOf(auxOf[j].Load())
			fin, fout := tb.LookupIn(&keys[j], ack, &h) == Found, false
			if fin {
				if err := check(&h, keys[j]); err != nil {
					fail(err)
					return
				}
			}
			if fout = tb.LookupOut(&o, ack, &h); fout {
				if err := check(&h, keys[j]); err != nil {
					fail(err)
					return
				}
			}
			if cur.Load() == c0 {
				if !fin || !fout {
					fail(fmt.Errorf("conn %d, live and untouched, not found (in %v, out %v)", j, fin, fout))
					return
				}
				steady.Add(1)
			}
			lookups.Add(1)
		}
	}()
	// The churner: expire a conn and create the same tuple again on
	// another dest (the freed entry is the next one allocated), the
	// same conn a few times over before moving on.
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(7, 8))
		for n := uint64(1); !stop.Load(); n++ {
			i := r.IntN(nkeys)
			cur.Store(n<<8 | uint64(i))
			for range 8 {
				tb.Expire(&keys[i])
				auxOf[i].Store(0)
				// The freed entry stays zeroed a moment, for lookups
				// in flight to meet it (a count, not a time).
				for k := 0; k < 64; k++ {
					spin.Add(1)
				}
				auxOf[i].Store(create(r, i))
				churns.Add(1)
			}
		}
	}()
	start := time.Now()
	for time.Since(start) < maxTime && failed.Load() == nil && (lookups.Load() < minLookups || churns.Load() < minChurns) {
		time.Sleep(5 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if p := failed.Load(); p != nil {
		t.Fatal(*p)
	}
	t.Logf("%d lookups (%d inbound hits, %d reply hits of the churned conn; %d of another checked found) against %d expire-and-recreate cycles", lookups.Load(), hits.Load(), replies.Load(), steady.Load(), churns.Load())
	if hits.Load() == 0 || replies.Load() == 0 || steady.Load() == 0 || churns.Load() < 1000 {
		t.Fatalf("too little ran to mean anything: %d hits, %d replies, %d churns", hits.Load(), replies.Load(), churns.Load())
	}
}
