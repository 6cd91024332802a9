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

// TestConcurrentModel drives a small table with a fast wheel from several
// goroutines at once (creating NAT conns and persistence templates,
// looking them up both ways with SYN, ACK, FIN and RST, expiring,
// invalidating and flushing them while the clock races on), and stops
// the world every few milliseconds to check the table against its own
// live set:
//   - every entry reachable from either index is live, and the in and out
//     indices agree (each NAT entry is in both, under its own keys);
//   - each dest's active, inactive and persistent counters equal the live
//     conns bound to it (active by their TCP state), and the entry count
//     equals the live set;
//   - every live template's control count equals its live conns;
//   - no lookup ever returns an entry other than the one it asked for;
//   - every conn created was torn down exactly once, when it left the
//     table (counted by OnExpire), nothing more;
//   - with a sync master's hook counting packets and setting sync marks
//     (on conns and, without their lock, on their templates) and a sync
//     backup installing, updating and replacing conns and templates
//     (sync.go), live entries keep only their own flags and states.
//
// Each case runs for 1 s (0.5 s with -short) and at least 20 checks and 2000
// conns, at most 20 s, and checks invariants, not timing: load only
// changes how many operations it sees.
func TestConcurrentModel(t *testing.T) {
	t.Run("roomy", func(t *testing.T) { runCModel(t, Config{MaxEntries: 200}) })
	// A table too small for the flows, with drop_entry always on: new
	// conns evict half-open and closing ones, or are refused, and the
	// defense timer drops entries on every tick, all concurrently.
	t.Run("full+drop_entry", func(t *testing.T) {
		runCModel(t, Config{MaxEntries: 30, Defense: Defense{DropEntry: 3, SecureTCP: 3}})
	})
}

func runCModel(t *testing.T, c Config) {
	dur := time.Second
	if testing.Short() {
		dur = 500 * time.Millisecond
	}
	m := newCModel(t, c)
	var pause sync.RWMutex // ops hold it shared; the checker holds it alone
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failed atomic.Bool
	var errMu sync.Mutex
	var firstErr error
	fail := func(err error) {
		if failed.CompareAndSwap(false, true) {
			errMu.Lock()
			firstErr = err
			errMu.Unlock()
		}
	}
	worker := func(seed uint64, op func(r *rand.Rand) error) {
		defer wg.Done()
		r := rand.New(rand.NewPCG(seed, seed*7+1))
		for {
			select {
			case <-stop:
				return
			default:
			}
			pause.RLock()
			err := op(r)
			pause.RUnlock()
			if err != nil {
				fail(err)
				return
			}
		}
	}
	for i := range 3 {
		wg.Add(1)
		go worker(uint64(i+1), m.packetOp)
	}
	wg.Add(1)
	go worker(10, m.installOp)
	wg.Add(1)
	go worker(11, m.expireOp)
	wg.Add(1)
	go worker(12, m.flushOp)
	wg.Add(1)
	go worker(13, m.advanceOp)

	// Run for dur and until enough happened (a busy machine only makes it
	// take longer), but never past a hard bound.
	checks := 0
	start := time.Now()
	enough := func() bool {
		return time.Since(start) >= dur && checks >= 20 && m.tb.Stats().Created >= 2000
	}
	for !enough() && time.Since(start) < 20*time.Second && !failed.Load() {
		time.Sleep(2 * time.Millisecond)
		pause.Lock()
		if err := m.check(); err != nil {
			fail(fmt.Errorf("check %d: %w", checks, err))
		}
		checks++
		pause.Unlock()
	}
	close(stop)
	wg.Wait()
	if failed.Load() {
		t.Fatal(firstErr)
	}
	// Everything flushed: nothing left anywhere.
	m.tb.Flush()
	m.drainWheel()
	if err := m.check(); err != nil {
		t.Fatalf("after the final flush: %v", err)
	}
	for _, d := range m.dests {
		if d.ActiveConns() != 0 || d.InactConns() != 0 || d.PersistConns() != 0 {
			t.Fatalf("dest %s keeps %d active, %d inactive, %d persistent after the flush", d.Addr, d.ActiveConns(), d.InactConns(), d.PersistConns())
		}
	}
	for i := range m.tb.shards {
		if n := m.tb.shards[i].slab.inUse; n != 0 {
			t.Fatalf("shard %d keeps %d chunks of an empty table", i, n)
		}
	}
	st := m.tb.Stats()
	t.Logf("%d checks; %d created, %d expired, %d reused, %d evicted, %d refused, %d dropped by drop_entry, %d ops",
		checks, st.Created, st.Expired, st.Reused, st.Evicted, st.Dropped, st.DropEntry, m.ops.Load())
	if st.Created < 2000 || checks < 20 {
		t.Fatalf("only %d conns created and %d checks in 20 s: the model exercised too little", st.Created, checks)
	}
}

// cModel is the concurrent test's world: a 4-shard table (200 or 30
// entries) whose clock is driven by advanceOp, three NAT dests, 40 client
// ports on 4 client addresses (so tuples are reused all the time) and a
// persistence template per client address. Clients 2 and 3 are IPv6
// (their entries in IPv6 chunks, their full addresses beside them).
type cModel struct {
	t     *testing.T
	tb    *Table
	dests []*ipvs.Dest
	now   atomic.Int64 // synthetic seconds since tb.start
	torn  atomic.Int64 // OnExpire calls
	ops   atomic.Int64
}

func newCModel(t *testing.T, c Config) *cModel {
	c.Shards, c.Tick, c.WheelSlots = 4, time.Second, 16
	m := &cModel{t: t, tb: New(c)}
	for s := range NumTCPStates {
		m.tb.SetStateTimeout(s, uint32(1+s%3))
	}
	m.tb.SetTimeouts(0, 0, 2)
	for i := range 3 {
		m.dests = append(m.dests, ipvs.NewDest(ipvs.ServiceKey{Proto: 6}, ipvs.DestConfig{Addr: netip.AddrFrom4([4]byte{198, 19, 0, byte(11 + i)}), Port: 80, Weight: 1, Method: ipvs.MethodMasq}))
	}
	m.tb.OnExpire = func(e *Entry) { m.torn.Add(1) }
	// A sync master's hook, as ipvssync's reads and writes the entries:
	// the packet count, then the sync mark of the conn and its template
	// (the template's without its lock).
	m.tb.SetSyncHook(func(e *Entry, packet bool) {
		for cp := e; cp != nil; cp = cp.Tpl {
			if packet {
				cp.SyncCount(5)
			}
			end, _ := cp.SyncMark()
			cp.CASSyncMark(end, end+4, cp.State())
		}
	})
	return m
}

// installOp is a sync backup: it installs a conn or a template received
// from a master, bound to some dest, in some state; an existing entry is
// updated, or replaced when bound elsewhere.
func (m *cModel) installOp(r *rand.Rand) error {
	m.ops.Add(1)
	c := r.IntN(4) // clients 2 and 3 are IPv6
	d := m.dests[r.IntN(len(m.dests))]
	sc := SyncedConn{Dest: d, DPort: d.Port, Method: ipvs.MethodMasq, Inactive: r.IntN(3) == 0, InPkts: 3}
	var in6 *Pair6
	if r.IntN(4) == 0 {
		sc.In, in6 = m.tplKey(c)
		sc.Template, sc.State, sc.Timeout = true, uint8(r.IntN(2)), 2
	} else {
		sc.In, in6 = m.inKey(c, r.IntN(10), 6)
		var out6 *Pair6
		sc.Out, out6 = m.outKey(sc.In, in6, d)
		if out6 != nil {
			sc.A6.Out = *out6
		}
		sc.State = uint8(r.IntN(int(NumTCPStates)))
	}
	if in6 != nil {
		sc.A6.In = *in6
	}
	if _, err := m.tb.Install(&sc); err != nil && err != ErrFull && err != ErrExists {
		return fmt.Errorf("Install(%v): %v", sc.In, err)
	}
	return nil
}

// cAddr6 is client c's IPv6 address (the VIP's and the dests' are
// derived the same way).
func cAddr6(b byte) [16]byte { return [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 15: b} }

func (m *cModel) v6(c int) bool { return c >= 2 }

// flow is client c's flow from port p: its in key and, for IPv6, its
// addresses (nil for IPv4).
func (m *cModel) inKey(c, p int, proto uint8) (Key, *Pair6) {
	if m.v6(c) {
		a := &Pair6{Src: cAddr6(byte(c)), Dst: cAddr6(100)}
		return m.tb.Key6(a, uint16(1000+p), 80, proto, KindConn), a
	}
	return Key{SrcIP: [4]byte{198, 18, 1, byte(c)}, DstIP: [4]byte{198, 18, 0, 100}, SrcPort: uint16(1000 + p), DstPort: 80, Proto: proto}, nil
}

func (m *cModel) tplKey(c int) (Key, *Pair6) {
	if m.v6(c) {
		a := &Pair6{Src: cAddr6(byte(c)), Dst: cAddr6(100)}
		return m.tb.Key6(a, 0, 80, 6, KindTemplate), a
	}
	return Key{SrcIP: [4]byte{198, 18, 1, byte(c)}, DstIP: [4]byte{198, 18, 0, 100}, DstPort: 80, Proto: 6, Kind: KindTemplate}, nil
}

// outKey is the out key of an in key on dest d (a6 the in addresses of
// an IPv6 flow, whose out addresses it returns).
func (m *cModel) outKey(in Key, a6 *Pair6, d *ipvs.Dest) (Key, *Pair6) {
	if a6 != nil {
		o := &Pair6{Src: cAddr6(d.Addr.As4()[3]), Dst: a6.Src}
		return m.tb.Key6(o, d.Port, in.SrcPort, in.Proto, KindConn), o
	}
	return Key{SrcIP: d.Addr.As4(), DstIP: in.SrcIP, SrcPort: d.Port, DstPort: in.SrcPort, Proto: in.Proto}, nil
}

var cFlags = []uint8{syn, syn, ack, ack, ack, fin | ack, rst, syn | ack}

// packetOp plays one packet: inbound (creating the conn on a miss, half
// the time through a persistence template) or a reply.
func (m *cModel) packetOp(r *rand.Rand) error {
	m.ops.Add(1)
	c, p := r.IntN(4), r.IntN(10)
	proto := uint8(6)
	if r.IntN(8) == 0 {
		proto = 17
	}
	k, a6 := m.inKey(c, p, proto)
	fl := cFlags[r.IntN(len(cFlags))]
	if proto == 17 {
		fl = 0
	}
	var h Hit
	if r.IntN(3) == 0 {
		// A reply, from whichever dest the conn may be on.
		d := m.dests[r.IntN(len(m.dests))]
		out, o6 := m.outKey(k, a6, d)
		var found bool
		if a6 != nil {
			found = m.tb.LookupOut6(&out, o6, fl, &h) && (h.A6.Out != *o6 || h.A6.In != *a6)
		} else {
			found = m.tb.LookupOut(&out, fl, &h)
		}
		if found && (h.Out != out || h.In != k || h.Dest != d) {
			return fmt.Errorf("LookupOut(%v) returned the conn %v -> %v on %v", out, h.In, h.Out, h.Dest.Addr)
		}
		return nil
	}
	var v Verdict
	if a6 != nil {
		v = m.tb.LookupIn6(&k, a6, fl, &h)
	} else {
		v = m.tb.LookupIn(&k, fl, &h)
	}
	if v == Found {
		out, o6 := m.outKey(k, a6, h.Dest)
		if h.In != k || h.Out != out || a6 != nil && (h.A6.In != *a6 || h.A6.Out != *o6) {
			return fmt.Errorf("LookupIn(%v) returned the conn %v -> %v", k, h.In, h.Out)
		}
		return nil
	}
	if proto == 6 && fl&(syn|rst) != syn {
		return nil
	}
	return m.create(r, c, k, a6, fl)
}

func (m *cModel) lookupTemplate(k *Key, a6 *Pair6) (Ref, *ipvs.Dest) {
	if a6 != nil {
		return m.tb.LookupTemplate6(k, a6)
	}
	return m.tb.LookupTemplate(k)
}

func (m *cModel) create(r *rand.Rand, c int, k Key, a6 *Pair6, fl uint8) error {
	var h Hit
	nc := NewConn{In: k, Method: ipvs.MethodMasq}
	if a6 != nil {
		nc.A6.In = *a6
	}
	if r.IntN(2) == 0 {
		tk, t6 := m.tplKey(c)
		tpl, dest := m.lookupTemplate(&tk, t6)
		if !tpl.IsZero() && r.IntN(4) == 0 {
			m.tb.Invalidate(tpl) // as persistence does when the dest went away
			tpl = Ref{}
		}
		if tpl.IsZero() {
			dest = m.dests[r.IntN(len(m.dests))]
			var err error
			tc := NewConn{In: tk, Dest: dest, Method: ipvs.MethodMasq, Template: true, Timeout: 2}
			if t6 != nil {
				tc.A6.In = *t6
			}
			tpl, err = m.tb.Create(&tc, 0, nil)
			if err == ErrExists {
				tpl, dest = m.lookupTemplate(&tk, t6)
			}
			if tpl.IsZero() {
				return nil
			}
		}
		nc.Tpl = tpl
		nc.Dest = dest
		if dest == nil {
			return fmt.Errorf("template %v has no dest: freed while in use", tk)
		}
	} else {
		nc.Dest = m.dests[r.IntN(len(m.dests))]
	}
	var o6 *Pair6
	nc.Out, o6 = m.outKey(k, a6, nc.Dest)
	if o6 != nil {
		nc.A6.Out = *o6
	}
	_, err := m.tb.Create(&nc, fl, &h)
	if err == nil && (h.In != k || h.Out != nc.Out || a6 != nil && h.A6 != nc.A6) {
		return fmt.Errorf("Create(%v) filled the conn %v -> %v", k, h.In, h.Out)
	}
	return nil
}

func (m *cModel) expireOp(r *rand.Rand) error {
	k, a6 := m.inKey(r.IntN(4), r.IntN(10), 6)
	if a6 != nil {
		m.tb.Expire6(&k, a6)
	} else {
		m.tb.Expire(&k)
	}
	return nil
}

func (m *cModel) flushOp(r *rand.Rand) error {
	time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
	m.tb.Flush()
	return nil
}

// advanceOp moves the clock on by one tick, as fast as it can.
func (m *cModel) advanceOp(r *rand.Rand) error {
	s := m.now.Add(1)
	m.tb.Advance(m.tb.start.Add(time.Duration(s) * time.Second))
	return nil
}

func (m *cModel) drainWheel() {
	for range 40 {
		m.advanceOp(nil)
	}
}

// check compares the table with its live set (the world is stopped).
func (m *cModel) check() error {
	tb := m.tb
	type cnt struct{ act, inact, pers int32 }
	counts := map[*ipvs.Dest]*cnt{}
	for _, d := range m.dests {
		counts[d] = &cnt{}
	}
	live := map[*Entry]bool{}
	ctl := map[*Entry]int32{}
	for si := range tb.shards {
		s := &tb.shards[si]
		for j, ref := range s.in.slots {
			if s.in.tags[j] == 0 {
				continue
			}
			e := tb.entryRef(ref)
			if e.word.Load()&wDead != 0 {
				return fmt.Errorf("in index of shard %d holds a dead entry %v", si, e.In)
			}
			if tb.shardOf(&e.In) != s {
				return fmt.Errorf("in index of shard %d holds %v, a key of another shard (freed and reused?)", si, e.In)
			}
			if live[e] {
				return fmt.Errorf("%v indexed twice", e.In)
			}
			live[e] = true
			if fl := e.Flags(); fl&^(FlagTemplate|FlagNoOutput|FlagSync) != 0 {
				return fmt.Errorf("live entry %v has flags %#x", e.In, fl)
			}
			if st := e.State(); e.Template() && st > TplAssured || st >= NumTCPStates {
				return fmt.Errorf("live entry %v (template %v) is in state %d", e.In, e.Template(), st)
			}
			c := counts[e.Dest]
			if c == nil {
				return fmt.Errorf("entry %v has dest %v", e.In, e.Dest)
			}
			switch {
			case e.Template():
				c.pers++
			case e.In.Proto == 6 && TCPActive(e.State()):
				c.act++
			default:
				c.inact++
			}
			if e.Tpl != nil {
				ctl[e.Tpl]++
			}
			v6 := e.In.Kind&KindV6 != 0
			if v6 != (tb.shards[e.home].slab.side[(e.id-1)>>chunkBits] != nil) {
				return fmt.Errorf("entry %v (IPv6 %v) in a chunk of the other family", e.In, v6)
			}
			if v6 {
				a := tb.side(e)
				if k := tb.Key6(&a.In, e.In.SrcPort, e.In.DstPort, e.In.Proto, e.In.Kind&^KindV6); k != e.In {
					return fmt.Errorf("IPv6 entry %v holds addresses %x whose key is %v", e.In, a.In, k)
				}
			}
			if !e.Template() {
				o := tb.shardOf(&e.Out)
				var got *Entry
				if v6 {
					got = tb.findOut6(o, tb.hk.sum(&e.Out), &e.Out, &tb.side(e).Out)
				} else {
					got = tb.findOut(o, tb.hk.sum(&e.Out), &e.Out)
				}
				if got != e {
					return fmt.Errorf("live NAT conn %v -> %v is not in the out index (found %p, want %p)", e.In, e.Out, got, e)
				}
			}
		}
	}
	nout := 0
	for si := range tb.shards {
		s := &tb.shards[si]
		for j, ref := range s.out.slots {
			if s.out.tags[j] == 0 {
				continue
			}
			nout++
			e := tb.entryRef(ref)
			if !live[e] {
				return fmt.Errorf("out index of shard %d reaches an entry that is not live: %v -> %v (dead flag %v)", si, e.In, e.Out, e.word.Load()&wDead != 0)
			}
		}
	}
	conns := 0
	orphans := map[*Entry]bool{} // torn-down templates that live conns still hold
	for e := range live {
		if !e.Template() {
			conns++
		}
		if e.Tpl != nil && !live[e.Tpl] {
			orphans[e.Tpl] = true
		}
	}
	if nout != conns {
		return fmt.Errorf("out indices hold %d references, %d NAT conns are live", nout, conns)
	}
	// Nothing reachable is free, and nothing free or forgotten is kept:
	// the slabs hold exactly the live entries and the orphaned templates.
	free := map[*Entry]bool{}
	allocated := 0
	for si := range tb.shards {
		sl := &tb.shards[si].slab
		for c, ch := range sl.chunks {
			if ch == nil {
				continue
			}
			n := 0
			for id := sl.free[c]; id != 0; id = sl.entry(id).next {
				free[sl.entry(id)] = true
				n++
			}
			if n+int(sl.live[c]) != chunkSize {
				return fmt.Errorf("shard %d chunk %d: %d free and %d live entries", si, c, n, sl.live[c])
			}
			allocated += int(sl.live[c])
		}
	}
	for e := range live {
		if free[e] || (e.Tpl != nil && free[e.Tpl]) {
			return fmt.Errorf("entry %v (or its template) is reachable and free", e.In)
		}
	}
	for e := range orphans {
		if e.word.Load()&wDone == 0 || e.nControl.Load() == 0 {
			return fmt.Errorf("template %v is out of the index but not torn down (word %#x, controls %d)", e.In, e.word.Load(), e.nControl.Load())
		}
		if e.nControl.Load() != ctl[e] {
			return fmt.Errorf("torn-down template %v controls %d conns, counts %d", e.In, ctl[e], e.nControl.Load())
		}
	}
	if allocated != len(live)+len(orphans) {
		return fmt.Errorf("slabs hold %d entries; %d live and %d orphaned templates", allocated, len(live), len(orphans))
	}
	for _, d := range m.dests {
		c := counts[d]
		if d.ActiveConns() != c.act || d.InactConns() != c.inact || d.PersistConns() != c.pers {
			return fmt.Errorf("dest %s counts %d active, %d inactive, %d persistent; live set %d, %d, %d",
				d.Addr, d.ActiveConns(), d.InactConns(), d.PersistConns(), c.act, c.inact, c.pers)
		}
	}
	for e := range live {
		if e.Template() && e.nControl.Load() != ctl[e] {
			return fmt.Errorf("template %v controls %d conns, counts %d", e.In, ctl[e], e.nControl.Load())
		}
	}
	if n := tb.Len(); n != len(live) {
		return fmt.Errorf("table counts %d entries, live set %d", n, len(live))
	}
	st := tb.Stats()
	if torn := m.torn.Load(); uint64(torn) != st.Created-uint64(len(live)) {
		return fmt.Errorf("%d entries torn down, %d created, %d live", torn, st.Created, len(live))
	}
	return nil
}
