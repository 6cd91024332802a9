package conntrack

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/golvs/golvs/ipvs"
)

func addr6(i uint64) [16]byte {
	var a [16]byte
	binary.BigEndian.PutUint64(a[0:], 0x20010db800180000)
	binary.BigEndian.PutUint64(a[8:], i)
	return a
}

var vip6 = addr6(0x100)

func testDest6() *ipvs.Dest {
	return ipvs.NewDest(ipvs.ServiceKey{Proto: 6, Addr: netip.AddrFrom16(vip6), Port: 80}, ipvs.DestConfig{Addr: netip.MustParseAddr("2001:db8:19::11"), Port: 8080, Weight: 1, Method: ipvs.MethodMasq})
}

// nat6 is an IPv6 NAT conn of client i: its NewConn with keys and
// addresses.
func nat6(tb *Table, d *ipvs.Dest, i uint64, port uint16) NewConn {
	in := Pair6{Src: addr6(i), Dst: vip6}
	out := Pair6{Src: d.Addr.As16(), Dst: in.Src}
	return NewConn{
		In: tb.Key6(&in, port, 80, 6, KindConn), Out: tb.Key6(&out, 8080, port, 6, KindConn),
		Dest: d, Method: ipvs.MethodMasq, A6: Addrs6{In: in, Out: out},
	}
}

// TestV6Lifecycle: an IPv6 conn is found both ways by its addresses,
// never by an IPv4 flow whose addresses equal its digests, and leaves no
// trace.
func TestV6Lifecycle(t *testing.T) {
	tb := New(Config{Tick: 100 * time.Millisecond, Shards: 4})
	d := testDest6()
	nc := nat6(tb, d, 0x10, 40000)
	var h Hit
	if _, err := tb.Create(&nc, syn, &h); err != nil {
		t.Fatal(err)
	}
	if h.A6 != nc.A6 || h.NewState != TCPSynRecv {
		t.Fatalf("Create filled %+v", h)
	}
	if _, err := tb.Create(&nc, syn, &h); err != ErrExists {
		t.Fatalf("second Create: %v", err)
	}
	var h2 Hit
	if v := tb.LookupIn6(&nc.In, &nc.A6.In, ack, &h2); v != Found || h2.A6 != nc.A6 || h2.NewState != TCPEstablished {
		t.Fatalf("LookupIn6: %d %+v", v, h2)
	}
	k4 := nc.In
	k4.Kind = KindConn // an IPv4 flow whose addresses equal the digests
	if v := tb.LookupIn(&k4, ack, &h2); v != Miss {
		t.Fatalf("an IPv4 key equal to the digests found it")
	}
	other := Pair6{Src: addr6(0x11), Dst: vip6}
	if v := tb.LookupIn6(&nc.In, &other, ack, &h2); v != Miss {
		t.Fatalf("another client's addresses under the same key found it")
	}
	if !tb.LookupOut6(&nc.Out, &nc.A6.Out, ack, &h2) || h2.In != nc.In {
		t.Fatalf("LookupOut6 missed")
	}
	if !tb.Peek6(&nc.Out, &nc.A6.Out, true, &h2) || !tb.Peek6(&nc.In, &nc.A6.In, false, &h2) {
		t.Fatalf("Peek6 missed")
	}
	var seen *Addrs6
	tb.Walk(func(e *Entry) { seen = tb.EntryAddrs6(e) })
	if seen == nil || *seen != nc.A6 {
		t.Fatalf("EntryAddrs6 %v", seen)
	}
	if !tb.Expire6(&nc.In, &nc.A6.In) || tb.Len() != 0 || d.ActiveConns()+d.InactConns() != 0 {
		t.Fatalf("Expire6: len %d active %d", tb.Len(), d.ActiveConns())
	}
	if tb.LookupOut6(&nc.Out, &nc.A6.Out, ack, &h2) {
		t.Fatalf("found after expiry")
	}
}

// TestV6DigestCollision: two IPv6 clients whose addresses have the same
// 32-bit digest (found by brute force), with the same ports, get the same
// key; each conn is found by its own addresses only, both ways, and one
// ending leaves the other.
func TestV6DigestCollision(t *testing.T) {
	tb := New(Config{Shards: 4, Seed: 7})
	seen := map[[4]byte]uint64{}
	var a, b uint64
	for i := uint64(1); ; i++ {
		x := addr6(i)
		dg := tb.hk.digest(&x)
		if j, ok := seen[dg]; ok {
			a, b = j, i
			break
		}
		seen[dg] = i
		if i > 1<<22 {
			t.Fatal("no digest collision in 4M addresses")
		}
	}
	d := testDest6()
	ca, cb := nat6(tb, d, a, 40000), nat6(tb, d, b, 40000)
	if ca.In != cb.In || ca.Out != cb.Out || ca.A6 == cb.A6 {
		t.Fatalf("not a collision: %v %v", ca.In, cb.In)
	}
	var h Hit
	for _, nc := range []*NewConn{&ca, &cb} {
		if _, err := tb.Create(nc, syn, &h); err != nil {
			t.Fatalf("create %x: %v", nc.A6.In.Src, err)
		}
	}
	for _, nc := range []*NewConn{&ca, &cb} {
		if tb.LookupIn6(&nc.In, &nc.A6.In, ack, &h) != Found || h.A6 != nc.A6 {
			t.Fatalf("in lookup of %x found %x", nc.A6.In.Src, h.A6.In.Src)
		}
		if !tb.LookupOut6(&nc.Out, &nc.A6.Out, ack, &h) || h.A6 != nc.A6 {
			t.Fatalf("out lookup of %x found %x", nc.A6.Out.Dst, h.A6.Out.Dst)
		}
	}
	tb.Expire6(&ca.In, &ca.A6.In)
	if tb.LookupIn6(&ca.In, &ca.A6.In, ack, &h) != Miss || tb.LookupIn6(&cb.In, &cb.A6.In, ack, &h) != Found || !tb.LookupOut6(&cb.Out, &cb.A6.Out, ack, &h) {
		t.Fatalf("expiring one colliding conn disturbed the other")
	}
}

// TestV6Budget: the IPv4 key and entry keep their sizes; IPv6 entries
// take chunks of their own with their addresses beside them, and their
// memory goes back as they end.
func TestV6Budget(t *testing.T) {
	if unsafe.Sizeof(Key{}) != 16 || unsafe.Sizeof(Entry{}) > 104 || unsafe.Sizeof(Addrs6{}) != 64 {
		t.Fatalf("key %d, entry %d, IPv6 addresses %d bytes", unsafe.Sizeof(Key{}), unsafe.Sizeof(Entry{}), unsafe.Sizeof(Addrs6{}))
	}
	tb := New(Config{Shards: 1, MaxEntries: 4096})
	empty := tb.Bytes()
	d, d6 := testDest(), testDest6()
	var h Hit
	for i := 0; i < 1000; i++ {
		k := key(i)
		if _, err := tb.Create(&NewConn{In: k, Dest: d}, syn, &h); err != nil {
			t.Fatal(err)
		}
		nc := nat6(tb, d6, uint64(i), 40000)
		if _, err := tb.Create(&nc, syn, &h); err != nil {
			t.Fatal(err)
		}
	}
	sl := &tb.shards[0].slab
	v4, v6 := 0, 0
	for c, ch := range sl.chunks {
		if ch == nil {
			continue
		}
		if sl.side[c] != nil {
			v6++
		} else {
			v4++
		}
	}
	if v4 != 4 || v6 != 4 || sl.inUse6 != 4 {
		t.Fatalf("1000 IPv4 and 1000 IPv6 entries in %d IPv4 and %d IPv6 chunks (counted %d)", v4, v6, sl.inUse6)
	}
	full := tb.Bytes() - empty
	want := int64(8)*chunkBytes + 4*sideBytes
	if full != want {
		t.Fatalf("entries take %d bytes, want %d", full, want)
	}
	tb.Flush()
	if sl.inUse != 0 || sl.inUse6 != 0 {
		t.Fatalf("chunks left after the flush: %d (%d IPv6)", sl.inUse, sl.inUse6)
	}
	// the spares (one entry chunk, one address array) stay
	if got := tb.Bytes() - empty; got != chunkBytes+sideBytes {
		t.Fatalf("after the flush %d bytes held, want the spares' %d", got, chunkBytes+sideBytes)
	}
	t.Logf("per entry: IPv4 %d bytes, IPv6 %d bytes (plus two index slots each)", unsafe.Sizeof(Entry{}), unsafe.Sizeof(Entry{})+unsafe.Sizeof(Addrs6{}))
}

// TestV6ExportImport: IPv6 conns and templates survive an export into a
// fresh table (a graceful restart) with their addresses.
func TestV6ExportImport(t *testing.T) {
	a := New(Config{Shards: 4, Seed: 1})
	b := New(Config{Shards: 4, Seed: 2}) // another key: digests differ
	d := testDest6()
	tp := Pair6{Src: addr6(0), Dst: vip6}
	tk := a.Key6(&tp, 0, 80, 6, KindTemplate)
	tpl, err := a.Create(&NewConn{In: tk, Dest: d, Method: ipvs.MethodMasq, Template: true, Timeout: 300, A6: Addrs6{In: tp}}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc := nat6(a, d, 0x10, 40000)
	nc.Tpl = tpl
	var h Hit
	if _, err := a.Create(&nc, syn, &h); err != nil {
		t.Fatal(err)
	}
	var recs []Record
	_ = a.Export(nil, nil, func(rs []Record) error { recs = append(recs, rs...); return nil })
	if len(recs) != 2 {
		t.Fatalf("%d records", len(recs))
	}
	// templates first, as a restart imports them
	if !recs[0].Template() {
		recs[0], recs[1] = recs[1], recs[0]
	}
	for i := range recs {
		r := &recs[i]
		if !r.V6() {
			t.Fatalf("record %d is not IPv6", i)
		}
		// the new table has its own key: rebuild the digests
		r.In = b.Key6(&r.A6.In, r.In.SrcPort, r.In.DstPort, r.In.Proto, r.In.Kind&^KindV6)
		if !r.Template() {
			r.Out = b.Key6(&r.A6.Out, r.Out.SrcPort, r.Out.DstPort, r.Out.Proto, KindConn)
		}
		var ref Ref
		if r.TplA6 != (Pair6{}) {
			k := b.Key6(&r.TplA6, 0, 80, 6, KindTemplate)
			ref, _ = b.LookupTemplate6(&k, &r.TplA6)
			if ref.IsZero() {
				t.Fatalf("template of record %d not found", i)
			}
		}
		if _, err := b.Import(r, ref); err != nil {
			t.Fatal(err)
		}
	}
	in := b.Key6(&nc.A6.In, 40000, 80, 6, KindConn)
	if b.LookupIn6(&in, &nc.A6.In, ack, &h) != Found || h.A6 != nc.A6 {
		t.Fatalf("imported conn not found")
	}
}

// TestV6Install: a sync backup installs IPv6 conns and templates (sync.go)
// as Create makes them: found both ways by their full addresses only (two
// records whose digests collide are two conns), updated in place by a
// record for the same real server, replaced by an active record for
// another, and a template keyed by the client's network.
func TestV6Install(t *testing.T) {
	tb := New(Config{Shards: 4, Seed: 7})
	seen := map[[4]byte]uint64{}
	var a, b uint64
	for i := uint64(1); a == 0; i++ {
		x := addr6(i)
		dg := tb.hk.digest(&x)
		if j, ok := seen[dg]; ok {
			a, b = j, i
		}
		seen[dg] = i
	}
	d := testDest6()
	sync := func(i uint64, d *ipvs.Dest, st uint8) *SyncedConn {
		nc := nat6(tb, d, i, 40000)
		nc.Out.SrcPort, nc.Out = d.Port, tb.Key6(&Pair6{Src: d.Addr.As16(), Dst: addr6(i)}, d.Port, 40000, 6, KindConn)
		nc.A6.Out.Src = d.Addr.As16()
		return &SyncedConn{In: nc.In, Out: nc.Out, A6: nc.A6, Dest: d, DPort: d.Port, Method: ipvs.MethodMasq, State: st, Timeout: 100}
	}
	ca, cb := sync(a, d, TCPEstablished), sync(b, d, TCPTimeWait)
	if ca.In != cb.In {
		t.Fatal("not a collision")
	}
	for _, c := range []*SyncedConn{ca, cb} {
		if res, err := tb.Install(c); err != nil || res != Installed {
			t.Fatalf("install %x: %v %v", c.A6.In.Src, res, err)
		}
	}
	var h Hit
	for _, c := range []*SyncedConn{ca, cb} {
		if !tb.Peek6(&c.In, &c.A6.In, false, &h) || h.A6 != c.A6 || h.NewState != c.State {
			t.Fatalf("in lookup of %x: %+v", c.A6.In.Src, h)
		}
		if !tb.LookupOut6(&c.Out, &c.A6.Out, ack, &h) || h.A6 != c.A6 {
			t.Fatalf("out lookup of %x found %x", c.A6.Out.Dst, h.A6.Out.Dst)
		}
	}
	if tb.Len() != 2 || d.ActiveConns() != 1 || d.InactConns() != 1 {
		t.Fatalf("%d entries, dest active %d inactive %d", tb.Len(), d.ActiveConns(), d.InactConns())
	}
	// The same real server: updated (TIME_WAIT -> ESTABLISHED moves the
	// dest's counters).
	if res, err := tb.Install(sync(b, d, TCPEstablished)); err != nil || res != Updated || d.ActiveConns() != 2 {
		t.Fatalf("update: %v %v, active %d", res, err, d.ActiveConns())
	}
	// Another real server: the conn is replaced; an inactive record for
	// the old one afterwards is ignored.
	d2 := ipvs.NewDest(d.Svc, ipvs.DestConfig{Addr: netip.MustParseAddr("2001:db8:19::12"), Port: 8080, Weight: 1, Method: ipvs.MethodMasq})
	if res, err := tb.Install(sync(a, d2, TCPEstablished)); err != nil || res != Replaced {
		t.Fatalf("replace: %v %v", res, err)
	}
	old := sync(a, d, TCPEstablished)
	old.Inactive = true
	if res, _ := tb.Install(old); res != IgnoredInactive {
		t.Fatalf("stale inactive record: %v", res)
	}
	if !tb.Peek6(&ca.In, &ca.A6.In, false, &h) || h.Dest != d2 || !tb.Peek6(&cb.In, &cb.A6.In, false, &h) || h.Dest != d {
		t.Fatal("the replace touched the colliding conn, or missed its own")
	}
	// A template: the client's /64 and the VIP, no ports.
	tp := Pair6{Src: addr6(0), Dst: vip6}
	tc := &SyncedConn{In: tb.Key6(&tp, 0, 80, 6, KindTemplate), A6: Addrs6{In: tp, Out: Pair6{Src: vip6}}, Dest: d, DPort: d.Port, Method: ipvs.MethodMasq, Template: true, Timeout: 300}
	if res, err := tb.Install(tc); err != nil || res != Installed {
		t.Fatalf("template: %v %v", res, err)
	}
	if ref, td := tb.LookupTemplate6(&tc.In, &tp); ref.IsZero() || td != d {
		t.Fatal("installed template not found")
	}
	if a6 := tb.EntryAddrs6(tb.mustFindIn6(t, &tc.In, &tp)); a6.Out != (Pair6{}) {
		t.Fatalf("a template keeps out addresses %x", a6.Out)
	}
}

func (t *Table) mustFindIn6(tt *testing.T, k *Key, a *Pair6) *Entry {
	hk, s := t.locate(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := t.findIn6(s, hk, k, a)
	if e == nil {
		tt.Fatal("not found")
	}
	return e
}
