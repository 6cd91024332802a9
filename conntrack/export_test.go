package conntrack

import (
	"testing"
	"time"

	"github.com/golvs/golvs/ipvs"
)

// A table exported and imported into another (a graceful restart) holds
// the same entries: keys, states, flags, timeouts, templates, time left
// within a tick; the new dests' counters are what the states imply (spec
// §3.3: ESTABLISHED, SYN_SENT, SYN_RECV and SYNACK are active, templates
// count as persistent); NAT replies find their conns.
func TestExportImport(t *testing.T) {
	a := New(Config{Tick: 100 * time.Millisecond, Shards: 8, Seed: 1})
	b := New(Config{Tick: 100 * time.Millisecond, Shards: 4, Seed: 2})
	da, db := testDest(), testDest()
	natOut := func(k Key) Key {
		return Key{SrcIP: [4]byte{198, 19, 0, 11}, DstIP: k.SrcIP, SrcPort: 80, DstPort: k.SrcPort, Proto: k.Proto}
	}
	tplKey := Key{SrcIP: [4]byte{198, 18, 0, 0}, DstIP: [4]byte{198, 18, 0, 100}, DstPort: 80, Proto: 6, Kind: KindTemplate}
	tpl, err := a.Create(&NewConn{In: tplKey, Dest: da, Template: true, Timeout: 360}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	type conn struct {
		k     Key
		flags []uint8 // inbound packets after the SYN
		tpl   bool
		dr    bool
	}
	var conns []conn
	for i := 0; i < 200; i++ {
		c := conn{k: key(i)}
		switch i % 5 {
		case 0: // established
			c.flags = []uint8{ack}
		case 1: // SYN_RECV
		case 2: // FIN_WAIT (DR, input only)
			c.flags, c.dr = []uint8{ack, fin | ack}, true
		case 3: // UDP
			c.k.Proto = 17
		case 4: // established under the template
			c.flags, c.tpl = []uint8{ack}, true
		}
		conns = append(conns, c)
		nc := &NewConn{In: c.k, Dest: da, Method: ipvs.MethodMasq, ClientIf: 2, ClientMAC: [6]byte{2, 0, 0, 0, 0, byte(i)}, Aux: uint64(i)}
		if c.dr {
			nc.Method, nc.NoOutput = ipvs.MethodRoute, true
		} else {
			nc.Out = natOut(c.k)
		}
		if c.tpl {
			nc.Tpl = tpl
		}
		if _, err := a.Create(nc, syn, nil); err != nil {
			t.Fatal(err)
		}
		var h Hit
		for _, f := range c.flags {
			a.LookupIn(&c.k, f, &h)
		}
	}
	// Templates first, then conns, as a takeover sends them.
	for _, tplFirst := range []bool{true, false} {
		err := a.Export(nil, func(fl uint32) bool { return (fl&FlagTemplate != 0) == tplFirst }, func(rs []Record) error {
			for _, r := range rs {
				if r.Dest != da {
					t.Fatalf("record %v: dest %p, want %p", r.In, r.Dest, da)
				}
				r.Dest = db
				var tp Ref
				if r.Tpl != (Key{}) {
					if tp, _ = b.LookupTemplate(&r.Tpl); tp.IsZero() {
						t.Fatalf("conn %v: template %v not imported first", r.In, r.Tpl)
					}
				}
				if _, err := b.Import(&r, tp); err != nil {
					t.Fatal(err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if a.Len() != 201 || b.Len() != a.Len() {
		t.Fatalf("entries: %d exported, %d imported, want 201", a.Len(), b.Len())
	}
	// Independent expectation of the counters, from the states.
	var wantAct, wantInact int32
	for _, c := range conns {
		st := TCPSynRecv
		switch {
		case c.k.Proto == 17:
			wantInact++
			continue
		case len(c.flags) == 1:
			st = TCPEstablished
		case len(c.flags) == 2:
			st = TCPFinWait
		}
		if TCPActive(st) {
			wantAct++
		} else {
			wantInact++
		}
	}
	if wantAct != 120 || wantInact != 80 {
		t.Fatalf("test arithmetic: %d active, %d inactive", wantAct, wantInact)
	}
	for _, d := range []*ipvs.Dest{da, db} {
		if d.ActiveConns() != wantAct || d.InactConns() != wantInact || d.PersistConns() != 1 {
			t.Fatalf("dest counters active=%d inactive=%d persist=%d, want %d %d 1", d.ActiveConns(), d.InactConns(), d.PersistConns(), wantAct, wantInact)
		}
	}
	recs := map[Key]Record{}
	_ = a.Export(nil, nil, func(rs []Record) error {
		for _, r := range rs {
			recs[r.In] = r
		}
		return nil
	})
	n := 0
	_ = b.Export(nil, nil, func(rs []Record) error {
		for _, r := range rs {
			w, ok := recs[r.In]
			if !ok {
				t.Fatalf("imported %v was never exported", r.In)
			}
			if d := r.Expires - w.Expires; d < -100*time.Millisecond || d > 100*time.Millisecond {
				t.Fatalf("%v: %v left, want %v", r.In, r.Expires, w.Expires)
			}
			r.Dest, r.Expires, w.Expires = da, 0, 0
			if r != w {
				t.Fatalf("imported %+v\nwant     %+v", r, w)
			}
			n++
		}
		return nil
	})
	if n != 201 {
		t.Fatalf("%d imported entries listed", n)
	}
	var h Hit
	k := conns[0].k
	if !b.LookupOut(&Key{SrcIP: [4]byte{198, 19, 0, 11}, DstIP: k.SrcIP, SrcPort: 80, DstPort: k.SrcPort, Proto: 6}, ack, &h) || h.In != k || h.Dest != db {
		t.Fatalf("a NAT reply does not find its imported conn: %+v", h)
	}
	// The same key again is refused and changes nothing.
	r := recs[k]
	r.Dest = db
	if _, err := b.Import(&r, Ref{}); err != ErrExists || b.Len() != 201 || db.ActiveConns() != wantAct {
		t.Fatalf("importing a duplicate: %v, %d entries, %d active", err, b.Len(), db.ActiveConns())
	}
	// Expiry still works: everything goes, counters back to zero.
	b.Flush()
	if b.Len() != 0 || db.ActiveConns() != 0 || db.InactConns() != 0 {
		t.Fatalf("after flush: %d entries, active %d inactive %d", b.Len(), db.ActiveConns(), db.InactConns())
	}
}
