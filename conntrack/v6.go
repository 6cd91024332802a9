package conntrack

import (
	"encoding/binary"

	"github.com/golvs/golvs/ipvs"
)

// IPv6 entries. The design keeps IPv4's budget whole: the Key stays 16
// bytes and the Entry 104, and an IPv4 packet runs exactly the code it
// ran before. An IPv6 flow is indexed in the same shards, indices, wheel
// and slab, under a Key whose address fields hold a 32-bit digest of each
// IPv6 address (keyed with the table's secret, so a client cannot make
// its addresses collide on purpose) and whose Kind has KindV6. Its full
// addresses live in an Addrs6 beside the entry: IPv6 entries take chunks
// of their own, each with an array of 256 Addrs6 (slab.go). A lookup
// matches the Key first, then the full addresses, and goes on probing
// past an entry whose digests collide, so a collision costs a compare,
// never a wrong match.
//
// Cost: an IPv6 entry is 104 + 64 bytes; an IPv6 lookup adds two digests
// (two multiplications each) and a 32-byte compare to IPv4's lookup; an
// IPv4 entry, key, lookup and chunk are unchanged.

// Pair6 is the two IPv6 addresses of one side of a flow.
type Pair6 struct{ Src, Dst [16]byte }

// Addrs6 is an IPv6 entry's full addresses: the in key's (client ->
// VIP) and the out key's (real server -> client or local address).
type Addrs6 struct{ In, Out Pair6 }

// mulDigest is a second odd constant, so a digest is not the key hash.
const mulDigest = 0xa0761d6478bd642f

// digest folds an IPv6 address into 32 bits with the table's secret.
func (hk *hashKey) digest(a *[16]byte) [4]byte {
	x := binary.LittleEndian.Uint64(a[0:])
	y := binary.LittleEndian.Uint64(a[8:])
	h := mum(mum(x^hk.k1, y^hk.k2)^hk.k0, mulDigest)
	var d [4]byte
	binary.LittleEndian.PutUint32(d[:], uint32(h^h>>32))
	return d
}

// Key6 makes the key of an IPv6 flow (or template, with kind
// KindTemplate): the addresses' digests, the ports and the protocol.
func (t *Table) Key6(a *Pair6, sport, dport uint16, proto, kind uint8) Key {
	return Key{SrcIP: t.hk.digest(&a.Src), DstIP: t.hk.digest(&a.Dst), SrcPort: sport, DstPort: dport, Proto: proto, Kind: kind | KindV6}
}

func (t *Table) side(e *Entry) *Addrs6 { return t.shards[e.home].slab.side6(e.id) }

// EntryAddrs6 returns an IPv6 entry's addresses, nil for an IPv4 one. It
// may be called wherever the entry may be read (under a lock of a shard
// that indexes it, in Walk, or in OnExpire).
func (t *Table) EntryAddrs6(e *Entry) *Addrs6 {
	if e.In.Kind&KindV6 == 0 {
		return nil
	}
	return t.side(e)
}

// findIn6 is findIn for an IPv6 key: the full addresses must match too.
func (t *Table) findIn6(s *shard, h uint64, k *Key, a *Pair6) *Entry {
	x := &s.in
	tag := tagOf(h)
	for i := x.home(h); ; {
		if tg := x.tags[i]; tg == tag {
			if e := t.entryRef(x.slots[i]); e.In == *k && t.side(e).In == *a {
				return e
			}
		} else if tg == 0 {
			return nil
		}
		if i++; i == x.size {
			i = 0
		}
	}
}

// findOut6 is findOut for an IPv6 key.
func (t *Table) findOut6(s *shard, h uint64, k *Key, a *Pair6) *Entry {
	x := &s.out
	tag := tagOf(h)
	for i := x.home(h); ; {
		if tg := x.tags[i]; tg == tag {
			if e := t.entryRef(x.slots[i]); e.Out == *k && e.word.Load()&wDead == 0 && t.side(e).Out == *a {
				return e
			}
		} else if tg == 0 {
			return nil
		}
		if i++; i == x.size {
			i = 0
		}
	}
}

func (t *Table) fill6(e *Entry, h *Hit) {
	fill(e, h)
	h.A6 = *t.side(e)
}

// LookupIn6 is LookupIn for an IPv6 packet: k from Key6, a its addresses.
// (Kept in step with LookupIn.)
func (t *Table) LookupIn6(k *Key, a *Pair6, tcpFlags uint8, h *Hit) Verdict {
	hk, s := t.locate(k)
	e, r := t.lookup(s, hk, k, a, false, tcpFlags, h)
	if r != lookLocked {
		return Verdict(r) // lookHit: Found, lookMiss: Miss
	}
	if k.Proto == 6 && tcpFlags&0x06 == 0x02 && e.Tpl == nil {
		if st := e.State(); st == TCPTimeWait || st == TCPClose {
			t.unlinkLocked(s, e, hk)
			s.mu.Unlock()
			t.reused.Add(1)
			t.teardown(e)
			return Reused
		}
	}
	t.step(e, false, tcpFlags, h)
	s.refileIfSooner(e, t)
	t.fill6(e, h)
	t.syncNotify(e, true)
	s.mu.Unlock()
	return Found
}

// LookupOut6 is LookupOut for an IPv6 reply. (Kept in step with
// LookupOut.)
func (t *Table) LookupOut6(k *Key, a *Pair6, tcpFlags uint8, h *Hit) bool {
	hk, s := t.locate(k)
	e, r := t.lookup(s, hk, k, a, true, tcpFlags, h)
	if r != lookLocked {
		return r == lookHit
	}
	t.step(e, true, tcpFlags, h)
	t.fill6(e, h)
	sooner := e.expires.Load() < e.slot.Load()
	gen := e.gen.Load()
	home := t.homeOf(e)
	s.mu.Unlock()
	if sooner {
		home.mu.Lock()
		if e.gen.Load() == gen && e.word.Load()&wDead == 0 {
			home.refileIfSooner(e, t)
		}
		home.mu.Unlock()
	}
	return true
}

// Peek6 is Peek for an IPv6 key.
func (t *Table) Peek6(k *Key, a *Pair6, out bool, h *Hit) bool {
	hk, s := t.locate(k)
	s.mu.Lock()
	var e *Entry
	if out {
		e = t.findOut6(s, hk, k, a)
	} else if e = t.findIn6(s, hk, k, a); e != nil && e.Template() {
		e = nil
	}
	if e == nil {
		s.mu.Unlock()
		return false
	}
	t.fill6(e, h)
	st := e.State()
	h.OldState, h.NewState = st, st
	s.mu.Unlock()
	return true
}

// Expire6 is Expire for an IPv6 key.
func (t *Table) Expire6(k *Key, a *Pair6) bool {
	hk, s := t.locate(k)
	s.mu.Lock()
	e := t.findIn6(s, hk, k, a)
	if e == nil {
		s.mu.Unlock()
		return false
	}
	t.unlinkLocked(s, e, hk)
	s.mu.Unlock()
	t.teardown(e)
	return true
}

// LookupTemplate6 is LookupTemplate for an IPv6 template key (Key6 with
// KindTemplate; a holds the masked client network and the VIP).
func (t *Table) LookupTemplate6(k *Key, a *Pair6) (Ref, *ipvs.Dest) {
	hk, s := t.locate(k)
	s.mu.Lock()
	e := t.findIn6(s, hk, k, a)
	if e == nil || !e.Template() {
		s.mu.Unlock()
		return Ref{}, nil
	}
	r, d := Ref{e, e.gen.Load()}, e.Dest
	s.mu.Unlock()
	return r, d
}
