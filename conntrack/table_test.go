package conntrack

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/golvs/golvs/ipvs"
)

func testDest() *ipvs.Dest {
	return ipvs.NewDest(ipvs.ServiceKey{Proto: 6}, ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.0.11"), Port: 80, Weight: 1})
}

func key(i int) Key {
	return Key{SrcIP: [4]byte{198, 18, byte(i >> 8), byte(i)}, DstIP: [4]byte{198, 18, 0, 100}, SrcPort: uint16(1024 + i), DstPort: 80, Proto: 6}
}

// A conn starts inactive, turns active on its SYN, moves back on FIN, and
// its counters return to zero when it expires; nothing expires before its
// timeout, without any global sweep.
func TestLifecycleAndCounters(t *testing.T) {
	tb := New(Config{Tick: 100 * time.Millisecond, Shards: 4})
	d := testDest()
	start := tb.start
	var h Hit
	k := key(1)
	if _, err := tb.Create(&NewConn{In: k, Dest: d}, syn, &h); err != nil {
		t.Fatal(err)
	}
	if h.NewState != TCPSynRecv || d.ActiveConns() != 1 || d.InactConns() != 0 {
		t.Fatalf("after SYN: state %d active %d inactive %d", h.NewState, d.ActiveConns(), d.InactConns())
	}
	if v := tb.LookupIn(&k, ack, &h); v != Found || h.NewState != TCPEstablished {
		t.Fatalf("ACK: verdict %d state %d", v, h.NewState)
	}
	if v := tb.LookupIn(&k, fin|ack, &h); v != Found || h.NewState != TCPCloseWait {
		t.Fatalf("FIN: verdict %d state %d", v, h.NewState)
	}
	if d.ActiveConns() != 0 || d.InactConns() != 1 {
		t.Fatalf("after FIN: active %d inactive %d", d.ActiveConns(), d.InactConns())
	}
	tb.SetStateTimeout(TCPCloseWait, 2)
	tb.LookupIn(&k, ack, &h) // re-arm with the 2 s timeout
	tb.Advance(start.Add(1500 * time.Millisecond))
	if tb.Len() != 1 {
		t.Fatalf("expired before its timeout")
	}
	tb.Advance(start.Add(2500 * time.Millisecond))
	if tb.Len() != 0 || d.InactConns() != 0 || d.ActiveConns() != 0 {
		t.Fatalf("after timeout: len %d active %d inactive %d", tb.Len(), d.ActiveConns(), d.InactConns())
	}
	if st := tb.Stats(); st.Created != 1 || st.Expired != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A full table with nothing to evict refuses new conns, counts them, and
// never grows.
func TestMaxEntries(t *testing.T) {
	tb := New(Config{MaxEntries: 100, Shards: 8, NoEvict: true})
	d := testDest()
	for i := 0; i < 150; i++ {
		k := key(i)
		_, err := tb.Create(&NewConn{In: k, Dest: d}, syn, nil)
		if i < 100 && err != nil {
			t.Fatalf("conn %d refused: %v", i, err)
		}
		if i >= 100 && err != ErrFull {
			t.Fatalf("conn %d: err %v, want ErrFull", i, err)
		}
	}
	if tb.Len() != 100 || tb.Stats().Dropped != 50 {
		t.Fatalf("len %d dropped %d", tb.Len(), tb.Stats().Dropped)
	}
	if _, err := tb.Create(&NewConn{In: key(1), Dest: d}, syn, nil); err != ErrFull && err != ErrExists {
		t.Fatalf("duplicate: %v", err)
	}
}

// The reply index finds NAT conns; it is gone once the conn expires.
func TestReplyIndex(t *testing.T) {
	tb := New(Config{Tick: 100 * time.Millisecond})
	d := testDest()
	in := key(3)
	out := Key{SrcIP: [4]byte{198, 19, 0, 11}, DstIP: in.SrcIP, SrcPort: 8080, DstPort: in.SrcPort, Proto: 6}
	if _, err := tb.Create(&NewConn{In: in, Out: out, Dest: d}, syn, nil); err != nil {
		t.Fatal(err)
	}
	var h Hit
	if !tb.LookupOut(&out, syn|ack, &h) || h.In != in {
		t.Fatalf("reply not found")
	}
	tb.Expire(&in)
	if tb.LookupOut(&out, ack, &h) {
		t.Fatalf("reply index outlived its conn")
	}
}

// A SYN on a TIME_WAIT conn expires it (conn_reuse_mode).
func TestConnReuse(t *testing.T) {
	tb := New(Config{})
	d := testDest()
	k := key(4)
	if _, err := tb.Create(&NewConn{In: k, Dest: d, NoOutput: true}, syn, nil); err != nil {
		t.Fatal(err)
	}
	var h Hit
	tb.LookupIn(&k, ack, &h)
	tb.LookupIn(&k, fin, &h)
	tb.LookupIn(&k, fin, &h) // FW+fin stays FW on the INPUT-ONLY table
	hk, s := tb.locate(&k)
	e := tb.findIn(s, hk, &k)
	e.word.Store(e.word.Load()&^wStateMask | uint32(TCPTimeWait))
	if v := tb.LookupIn(&k, syn, &h); v != Reused {
		t.Fatalf("SYN on TIME_WAIT: verdict %d, want Reused", v)
	}
	if tb.Len() != 0 {
		t.Fatalf("reused conn still in the table")
	}
}

// Templates live while they control conns, then die (spec §4.4).
func TestTemplateLife(t *testing.T) {
	tb := New(Config{Tick: time.Second})
	d := testDest()
	tk := Key{SrcIP: [4]byte{198, 18, 0, 0}, DstIP: [4]byte{198, 18, 0, 100}, DstPort: 80, Proto: 6, Kind: KindTemplate}
	tpl, err := tb.Create(&NewConn{In: tk, Dest: d, Template: true, Timeout: 5}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.PersistConns() != 1 || d.InactConns() != 0 {
		t.Fatalf("template counted as %d persist, %d inactive", d.PersistConns(), d.InactConns())
	}
	k := key(5)
	if _, err := tb.Create(&NewConn{In: k, Dest: d, Tpl: tpl}, syn, nil); err != nil {
		t.Fatal(err)
	}
	// Past the template's timeout it lives on while its conn does.
	tb.Advance(tb.start.Add(10 * time.Second))
	if r, _ := tb.LookupTemplate(&tk); r.IsZero() {
		t.Fatal("template died while controlling a conn")
	}
	tb.Expire(&k)
	tb.Advance(tb.start.Add(80 * time.Second))
	if r, _ := tb.LookupTemplate(&tk); !r.IsZero() || d.PersistConns() != 0 {
		t.Fatalf("template outlived its conns (persist %d)", d.PersistConns())
	}
}

func TestLookupDoesNotAllocate(t *testing.T) {
	tb := New(Config{})
	d := testDest()
	k := key(6)
	if _, err := tb.Create(&NewConn{In: k, Dest: d}, syn, nil); err != nil {
		t.Fatal(err)
	}
	var h Hit
	if n := testing.AllocsPerRun(1000, func() { tb.LookupIn(&k, ack, &h) }); n != 0 {
		t.Fatalf("LookupIn allocates %.1f", n)
	}
}

func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tb := New(Config{MaxEntries: n + 1})
			d := testDest()
			for i := 0; i < n; i++ {
				k := key(i)
				k.DstPort = uint16(i >> 16)
				if _, err := tb.Create(&NewConn{In: k, Dest: d}, syn, nil); err != nil {
					b.Fatal(err)
				}
			}
			var h Hit
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				k := key(i % n)
				k.DstPort = uint16((i % n) >> 16)
				tb.LookupIn(&k, ack, &h)
			}
		})
	}
}

// BenchmarkLookupOut: a NAT reply's lookup of an established conn (the
// reply path's conntrack share); "in+out" runs a client and a server
// worker on the same conns at once, as two cores do.
func BenchmarkLookupOut(b *testing.B) {
	const n = 1024
	tb := New(Config{MaxEntries: 2 * n})
	d := testDest()
	ins, outs := make([]Key, n), make([]Key, n)
	var h Hit
	for i := range n {
		ins[i] = key(i)
		outs[i] = Key{SrcIP: [4]byte{198, 19, 0, 11}, DstIP: ins[i].SrcIP, SrcPort: 80, DstPort: ins[i].SrcPort, Proto: 6}
		if _, err := tb.Create(&NewConn{In: ins[i], Out: outs[i], Dest: d}, syn, &h); err != nil {
			b.Fatal(err)
		}
		tb.LookupIn(&ins[i], ack, &h)
	}
	b.Run("out", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			tb.LookupOut(&outs[i&(n-1)], ack, &h)
		}
	})
	b.Run("in+out", func(b *testing.B) {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			var h Hit
			for i := 0; i < b.N; i++ {
				tb.LookupIn(&ins[i&(n-1)], ack, &h)
			}
		}()
		for i := 0; i < b.N; i++ {
			tb.LookupOut(&outs[i&(n-1)], ack, &h)
		}
		wg.Wait()
	})
}

// BenchmarkFill fills a table of 1M entries and reports the slowest
// single insert and how many took over 50 µs: an index that grows
// rehashes a whole shard inside one insert; a presized one never does
// (what remains is the machine: preemption, GC assists).
func BenchmarkFill(b *testing.B) {
	const n = 1 << 20
	for range b.N {
		tb := New(Config{MaxEntries: n, Seed: 1})
		d := testDest()
		var worst time.Duration
		slow := 0
		for i := range n {
			k := Key{SrcIP: [4]byte{198, 18 + byte(i>>24), byte(i >> 16), byte(i >> 8)}, DstIP: [4]byte{198, 18, 0, 100}, SrcPort: uint16(i), DstPort: 80, Proto: 6}
			t0 := time.Now()
			if _, err := tb.Create(&NewConn{In: k, Dest: d}, syn, nil); err != nil {
				b.Fatal(err)
			}
			el := time.Since(t0)
			worst = max(worst, el)
			if el > 50*time.Microsecond {
				slow++
			}
		}
		b.ReportMetric(float64(worst.Microseconds()), "worst-insert-µs")
		b.ReportMetric(float64(slow), "inserts>50µs")
	}
}
