package conntrack

import (
	"time"

	"github.com/golvs/golvs/ipvs"
)

// Record is a copy of one live entry: what listings show and what a
// graceful restart hands to the next process (Export, Import).
type Record struct {
	In, Out   Key
	Dest      *ipvs.Dest
	Tpl       Key // in key of the controlling template; zero: none
	Method    ipvs.Method
	ClientIf  int32
	ClientMAC [6]byte
	Aux       uint64
	State     uint8
	// Flags are the entry's Flag* bits (FlagDead never appears).
	Flags   uint32
	Timeout uint32        // seconds, as listings show the state's timeout
	Expires time.Duration // time left
	// An IPv6 entry (In has KindV6): its full addresses, and those of its
	// template's in key.
	A6    Addrs6
	TplA6 Pair6
}

// V6 reports an IPv6 entry.
func (r *Record) V6() bool { return r.In.Kind&KindV6 != 0 }

// Template reports whether the record is a persistence template.
func (r *Record) Template() bool { return r.Flags&FlagTemplate != 0 }

// Export calls fn with copies of the live entries, one shard at a time:
// they are copied into buf (grown as needed, reused from shard to shard)
// under the shard's lock, and fn runs with no lock held, so a slow
// consumer never holds up the data path and memory stays bounded by the
// largest shard. want, if not nil, selects entries by their flags. An
// error from fn ends the walk and is returned.
func (t *Table) Export(buf []Record, want func(flags uint32) bool, fn func([]Record) error) error {
	for i := range t.shards {
		s := &t.shards[i]
		buf = buf[:0]
		now := t.now.Load()
		s.mu.Lock()
		for j, ref := range s.in.slots {
			if s.in.tags[j] == 0 {
				continue
			}
			e := t.entryRef(ref)
			w := e.word.Load()
			fl := w & wFlagBits >> wFlagShift
			if want != nil && !want(fl) {
				continue
			}
			r := Record{
				In: e.In, Out: e.Out, Dest: e.Dest, Method: e.Method,
				ClientIf: e.ClientIf, ClientMAC: e.ClientMAC, Aux: e.Aux,
				State: uint8(w & wStateMask), Flags: fl, Timeout: e.timeout.Load(),
			}
			if e.Tpl != nil {
				r.Tpl = e.Tpl.In
				if r.Tpl.Kind&KindV6 != 0 {
					r.TplA6 = t.side(e.Tpl).In
				}
			}
			if e.In.Kind&KindV6 != 0 {
				r.A6 = *t.side(e)
			}
			if left := int64(e.expires.Load()) - now; left > 0 {
				r.Expires = time.Duration(left) * t.tick
			}
			buf = append(buf, r)
		}
		s.mu.Unlock()
		if len(buf) == 0 {
			continue
		}
		if err := fn(buf); err != nil {
			return err
		}
	}
	return nil
}

// Import inserts an entry exported from another table: the same keys,
// dest, method, client link, state, flags, timeout and time left, hung
// from tpl (a Ref to the live template of r.Tpl in this table, from
// LookupTemplate; zero: none). The dest's counters count it as its state
// says (active or inactive, or persistent for a template). It returns
// ErrExists, changing nothing, when the in key is taken, and ErrFull when
// the table is.
func (t *Table) Import(r *Record, tpl Ref) (Ref, error) {
	nc := NewConn{
		In: r.In, Out: r.Out, Dest: r.Dest, Tpl: tpl, Method: r.Method,
		ClientIf: r.ClientIf, ClientMAC: r.ClientMAC, Aux: r.Aux,
		Template: r.Template(), Timeout: r.Timeout, NoOutput: r.Flags&FlagNoOutput != 0,
		A6: r.A6,
	}
	if r.Template() {
		nc.Out, nc.A6.Out = Key{}, Pair6{}
	}
	// No TCP flags: the first transition leaves a conn inactive, and the
	// recorded state is set below.
	ref, err := t.Create(&nc, 0, nil)
	if err != nil {
		return Ref{}, err
	}
	e := ref.e
	s := t.homeOf(e)
	s.mu.Lock()
	if e.gen.Load() == ref.gen && e.word.Load()&wDead == 0 {
		var old, nw uint32
		for {
			old = e.word.Load()
			nw = old&^wStateMask | uint32(r.State)
			if e.word.CompareAndSwap(old, nw) {
				break
			}
		}
		if wasA, isA := e.active(old), e.active(nw); wasA != isA && e.Dest != nil {
			e.Dest.SetActive(isA)
		}
		e.timeout.Store(r.Timeout)
		e.expires.Store(int32(t.now.Load() + int64((r.Expires+t.tick-1)/t.tick)))
		s.refileIfSooner(e, t)
	}
	s.mu.Unlock()
	return ref, nil
}
