package conntrack

import "time"

// Expiry never stops the world: each shard has a timing wheel of one-tick
// slots, each a doubly linked list of entry ids threaded through the
// entries. A packet only stores its entry's new expiry tick; when the
// entry's slot comes round, the wheel either re-files it (it was
// refreshed) or expires it. A shard's wheel is touched only under its
// lock, one slot at a time, and holds only live entries: an entry leaves
// its slot the moment it is unlinked (table.go).

// file puts e into the wheel slot of its expiry tick (home lock held),
// capped at one turn of the wheel: a farther entry is re-filed when its
// slot comes round.
func (s *shard) file(e *Entry, t *Table) {
	at := int64(e.expires.Load())
	now := t.now.Load()
	if at <= s.done {
		at = s.done + 1
	}
	if at > now+t.nslots-1 {
		at = now + t.nslots - 1
	}
	e.slot.Store(int32(at))
	i := at % t.nslots
	e.prev = 0
	e.next = s.wheel[i]
	if e.next != 0 {
		s.slab.entry(e.next).prev = e.id
	}
	s.wheel[i] = e.id
}

// unfile takes e out of its wheel slot (home lock held).
func (s *shard) unfile(e *Entry, t *Table) {
	if e.prev != 0 {
		s.slab.entry(e.prev).next = e.next
	} else {
		i := int64(e.slot.Load()) % t.nslots
		if s.wheel[i] == e.id {
			s.wheel[i] = e.next
		}
	}
	if e.next != 0 {
		s.slab.entry(e.next).prev = e.prev
	}
	e.next, e.prev = 0, 0
}

// refileIfSooner moves e to an earlier wheel slot when a state change
// shortened its timeout (home lock held), so it expires on time.
func (s *shard) refileIfSooner(e *Entry, t *Table) {
	if e.expires.Load() < e.slot.Load() {
		s.unfile(e, t)
		s.file(e, t)
	}
}

// Advance moves the coarse clock to now and expires what is due, one
// shard and one slot at a time: a shard is locked only while one of its
// wheel slots is processed, and what expired is torn down after. Once a
// second it also runs the defense timer (defense.go). Calls are
// serialised.
func (t *Table) Advance(now time.Time) {
	cur := int64(now.Sub(t.start) / t.tick)
	t.advMu.Lock()
	defer t.advMu.Unlock()
	if cur <= t.now.Load() {
		return
	}
	t.now.Store(cur)
	for i := range t.shards {
		s := &t.shards[i]
		for {
			s.mu.Lock()
			if s.done >= cur {
				s.mu.Unlock()
				break
			}
			// Never let the wheel fall more than one turn behind.
			if cur-s.done > t.nslots {
				s.done = cur - t.nslots
			}
			s.done++
			t.batch = s.expireSlot(t, t.batch[:0])
			s.mu.Unlock()
			t.teardownAll(s, t.batch)
		}
	}
	t.defendIfDue(cur)
}

// expireSlot processes the wheel slot of tick s.done (home lock held):
// refreshed entries are re-filed, templates that still control conns
// live on in 60 s steps (spec §3.4, §4.4), the rest are unlinked and
// appended to out for teardown.
func (s *shard) expireSlot(t *Table, out []*Entry) []*Entry {
	// Detach the slot's list first: an entry re-filed now may land in
	// this very slot (a turn later) when the wheel is catching up.
	idx := s.done % t.nslots
	id := s.wheel[idx]
	s.wheel[idx] = 0
	for id != 0 {
		e := s.slab.entry(id)
		id = e.next
		e.next, e.prev = 0, 0
		switch {
		case int64(e.expires.Load()) > s.done:
			t.rescans.Add(1)
			s.file(e, t)
		case e.word.Load()&wTemplate != 0 && e.nControl.Load() > 0:
			e.timeout.Store(60)
			e.expires.Store(int32(s.done + t.tmo.ticks(60)))
			s.file(e, t)
			t.syncNotify(e, false) // IPVS syncs a template re-armed this way
		default:
			// Already out of the wheel: step 1 is the index and the flag.
			t.removeIn(s, t.hk.sum(&e.In), s.ref(e))
			e.word.Or(wDead)
			out = append(out, e)
		}
	}
	return out
}

// teardownAll runs steps 2 and 3 for entries of shard s that were
// unlinked together, taking s's lock once for all of step 3.
func (t *Table) teardownAll(s *shard, es []*Entry) {
	if len(es) == 0 {
		return
	}
	for _, e := range es {
		t.finish(e)
	}
	s.mu.Lock()
	for _, e := range es {
		t.freeLocked(s, e)
	}
	s.mu.Unlock()
	clear(es)
}
