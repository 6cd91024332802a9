package conntrack

import (
	"github.com/golvs/golvs/ipvs"
)

// This file is the table's side of IPVS connection synchronisation
// (package ipvssync), kept to a few named hooks:
//
//   - SetSyncHook: the sync master sees every conn right after an inbound
//     packet was applied to it (ip_vs_in calling ip_vs_sync_conn), and
//     every template re-armed because it still controls conns;
//   - the per-entry state its sending rules keep (IPVS's in_pkts as the
//     rules read it, old_state and sync_endtime), untouched while no
//     master runs;
//   - Install: a sync backup adds or updates a conn received from the
//     master (ip_vs_proc_conn).
//
// The per-entry state costs no memory: it lives in bits the entry does
// not otherwise use (the size test holds the entry at 104 bytes).
//
//   - the packet count, in the word's bits 20..31 (SyncCount): 12 bits,
//     counted modulo sync_period, or saturating when the period is 0
//     (ipvssync refuses periods and thresholds beyond it); bits 18 and 19
//     are left to flags to come;
//   - a conn's sync mark (its sync_endtime and old_state), in nControl,
//     which only templates use: 28 bits of sync_endtime and 4 of state;
//   - a template's sync mark (its sync_endtime), in 16 bits of its word
//     that only conns use (the inbound packet count, bits 8..11, and the
//     packet count's bits 20..31): a template keeps either its packet
//     count or its mark, and the master uses its count only with
//     sync_period and sync_refresh_period both 0, when it needs no mark.
//
// The master reads and writes these from its hook, under the lock of the
// conn's home shard, and for a conn's template without the template's
// lock (the conn's control reference keeps it allocated): every access is
// atomic, so concurrent hooks of one template's conns agree, as the
// kernel's cmpxchg on sync_endtime has them agree.

// The word's sync bits.
const (
	wSync        = FlagSync << wFlagShift
	wFlagBits    = 0xff << wFlagShift // the flags: bits 12..19
	wCountShift  = 20
	wCountMask   = MaxSyncCount << wCountShift
	tplMarkLoMax = 0xf // a template's mark: 4 bits in 8..11 ...
)

// MaxSyncCount is the largest packet count an entry keeps for the sync
// master (12 bits): sync_period is at most MaxSyncCount+1, and with
// period 0 the threshold at most MaxSyncCount-1.
const MaxSyncCount = 1<<12 - 1

// SyncHook is called with an entry under the lock of its home shard:
// packet is true after an inbound packet was applied to a conn (created
// or found), false for a template whose timer was re-armed because conns
// still hang from it. It must not call back into the table or block.
type SyncHook func(e *Entry, packet bool)

// SetSyncHook sets the sync master's hook; nil removes it. A call in
// flight on another worker may still run the old hook once.
func (t *Table) SetSyncHook(h SyncHook) {
	if h == nil {
		t.syncHook.Store(nil)
		return
	}
	t.syncHook.Store(&h)
}

// syncNotify runs the sync hook, if a master set one (home lock held).
func (t *Table) syncNotify(e *Entry, packet bool) {
	if hp := t.syncHook.Load(); hp != nil {
		(*hp)(e, packet)
	}
}

// Timeout returns the entry's current timeout in seconds (IPVS's
// cp->timeout: the protocol's timeout for its state, or a template's).
func (e *Entry) Timeout() uint32 { return e.timeout.Load() }

// Synced reports whether the entry was created by a sync backup.
func (e *Entry) Synced() bool { return e.word.Load()&wSync != 0 }

// NoOutput reports whether no reply was seen for the conn (DR, TUN: it
// never is).
func (e *Entry) NoOutput() bool { return e.word.Load()&wNoOutput != 0 }

// SyncCount counts one more inbound packet for the sync master and
// returns the count (IPVS's atomic_inc_return(&cp->in_pkts)), kept
// modulo period when period is above 0 (the rules compare the count
// modulo sync_period), else saturating at MaxSyncCount. A template's
// count shares its bits with its sync mark (see above).
func (e *Entry) SyncCount(period uint32) uint32 {
	for {
		old := e.word.Load()
		n := (old&wCountMask)>>wCountShift + 1
		switch {
		case period > 0:
			n %= period
		case n > MaxSyncCount:
			return MaxSyncCount
		}
		if e.word.CompareAndSwap(old, old&^wCountMask|n<<wCountShift) {
			return n
		}
	}
}

// SyncEndBits is how many low bits of sync_endtime an entry's sync mark
// keeps: 28 for a conn, 16 for a template. The master stores its clock
// modulo that and finds the full value back from the current time.
func (e *Entry) SyncEndBits() uint {
	if e.Template() {
		return 16
	}
	return 28
}

// tplMark extracts a template's 16-bit mark from its word.
func tplMark(w uint32) uint32 {
	return (w&wPktMask)>>wPktShift | (w&wCountMask)>>wCountShift<<4
}

// withTplMark stores a 16-bit mark into a template's word.
func withTplMark(w, m uint32) uint32 {
	w &^= wPktMask | wCountMask
	return w | (m&tplMarkLoMax)<<wPktShift | (m>>4&MaxSyncCount)<<wCountShift
}

// SyncMark returns what the sync master stored at the entry's last sync:
// its sync_endtime (the low SyncEndBits bits; 0 if it was never synced,
// the master never storing 0 otherwise) and, for a conn, the state it
// was synced in (old_state).
func (e *Entry) SyncMark() (end uint32, oldState uint8) {
	w := e.word.Load()
	if w&wTemplate != 0 {
		return tplMark(w), uint8(w & wStateMask)
	}
	m := uint32(e.nControl.Load())
	return m >> 4, uint8(m & 0xf)
}

// CASSyncMark sets the sync mark to end (its low SyncEndBits bits) and,
// for a conn, old_state to st, if sync_endtime is still oldEnd; it
// reports whether it was (cmpxchg(&cp->sync_endtime, orig, n) == orig).
// The kernel sets old_state whether or not the exchange succeeds; a
// conn's exchange runs under its home lock and always succeeds, so the
// two agree.
func (e *Entry) CASSyncMark(oldEnd, end uint32, st uint8) bool {
	for {
		w := e.word.Load()
		if w&wTemplate != 0 {
			if tplMark(w) != oldEnd&(1<<16-1) {
				return false
			}
			if e.word.CompareAndSwap(w, withTplMark(w, end)) {
				return true
			}
			continue
		}
		m := uint32(e.nControl.Load())
		if m>>4 != oldEnd&(1<<28-1) {
			return false
		}
		if e.nControl.CompareAndSwap(int32(m), int32(end<<4|uint32(st&0xf))) {
			return true
		}
	}
}

// SyncedConn is a conn or template received from a sync master, ready for
// the table: keys built, dest found.
type SyncedConn struct {
	In, Out  Key // Out: NAT and FULLNAT conns only
	Dest     *ipvs.Dest
	DPort    uint16 // the real server port the master bound the conn to
	Method   ipvs.Method
	Aux      uint64
	Template bool
	NoOutput bool
	Inactive bool   // the message's INACTIVE flag
	State    uint8  // as received (range-checked by the decoder)
	Timeout  uint32 // seconds; 0 (version 0 messages): the protocol's timeout for the state, 180 s for a template
	InPkts   uint32 // where in_pkts restarts: sync_threshold
	// A6 is an IPv6 conn's addresses (In has KindV6, its keys from
	// Table.Key6): the in key's and, for NAT and FULLNAT, the out key's.
	A6 Addrs6
}

// maxSyncedTimeout caps a received timeout (the kernel caps it at
// MAX_SCHEDULE_TIMEOUT): about 194 days, well inside the wheel's clock.
const maxSyncedTimeout = 1 << 24

// InstallResult says what Install did.
type InstallResult uint8

const (
	Installed       InstallResult = iota // a new entry
	Updated                              // an existing entry took the state and timeout
	Replaced                             // an entry bound to another real server was expired and replaced
	IgnoredInactive                      // an inactive record for an entry bound elsewhere (already replaced)
	Refused                              // the table is full
)

// destPort is the real server port an entry is bound to, as IPVS keeps
// it in cp->dport: the out key's source port for NAT and FULLNAT, else
// the dest's port (the VIP port for a port-0 dest).
func destPort(e *Entry) uint16 {
	if e.Out != (Key{}) {
		return e.Out.SrcPort
	}
	if e.Dest != nil && e.Dest.Port != 0 {
		return e.Dest.Port
	}
	return e.In.DstPort
}

// DestPort returns the real server port the entry is bound to, as IPVS
// keeps it in cp->dport and sync messages carry it: a conn's is its
// dest's (the VIP port for a port-0 dest; the out key's for NAT and
// FULLNAT); a template's is its dest's port, or 0 for templates keyed
// without a port (fwmark and port-zero services).
func (e *Entry) DestPort() uint16 {
	if e.Template() {
		if e.In.DstPort == 0 || e.Dest == nil {
			return 0
		}
		return e.Dest.Port
	}
	return destPort(e)
}

// Install adds or updates a conn (or template) received from a sync
// master, with ip_vs_proc_conn's rules:
//
//   - a conn already bound to another real server (address or port) is
//     expired and replaced when the record says it is active; an inactive
//     record for it is ignored (the conn was already replaced);
//   - an existing entry takes the record's state and timeout (and the
//     active/inactive counters of its dest move with the state); its
//     other flags stay;
//   - a new entry is bound to c.Dest with the record's state, flags and
//     timeout, counted as the kernel counts a new conn (it hangs from no
//     template: the backup's templates live on their own timers, as in
//     IPVS);
//   - either way in_pkts restarts at c.InPkts, old_state is the state,
//     and the timer is re-armed to now + timeout.
//
// It mirrors Create: the entry comes from the home shard's slab, the in
// index takes it under the home lock, the out index under its own lock
// with the generation check, and a replaced conn ends in the table's
// three steps. Entries made here carry FlagSync. A full table (or shard)
// refuses the conn, counted as dropped; a sync backup does not evict.
func (t *Table) Install(c *SyncedConn) (InstallResult, error) {
	if c.Timeout == 0 {
		if c.Template {
			c.Timeout = 3 * 60
		} else {
			c.Timeout, _ = t.tmo.of(c.In.Proto, c.State)
		}
	}
	c.Timeout = min(c.Timeout, maxSyncedTimeout)
	c.InPkts = min(c.InPkts, MaxSyncCount)
	res := Installed
	v6 := c.In.Kind&KindV6 != 0
	if v6 && (c.Template || c.Out == (Key{})) {
		c.A6.Out = Pair6{}
	}
	hk, s := t.locate(&c.In)
	s.mu.Lock()
	for tries := 0; ; tries++ {
		var e *Entry
		if v6 {
			e = t.findIn6(s, hk, &c.In, &c.A6.In)
		} else {
			e = t.findIn(s, hk, &c.In)
		}
		if e == nil {
			break
		}
		tpl := e.Template()
		switch {
		case c.Template != tpl:
			// A template and a conn never share a key (Kind differs);
			// a record claiming otherwise is refused.
			s.mu.Unlock()
			return Refused, ErrExists
		case !tpl && (e.Dest == nil || c.Dest == nil || e.Dest.Addr != c.Dest.Addr || destPort(e) != c.DPort):
			if c.Inactive {
				s.mu.Unlock()
				return IgnoredInactive, nil
			}
			if tries > 0 {
				// Another master's record keeps winning the key: leave
				// it to that one.
				s.mu.Unlock()
				return Refused, ErrExists
			}
			t.unlinkLocked(s, e, hk)
			s.mu.Unlock()
			t.teardown(e)
			res = Replaced
			s.mu.Lock()
			continue // another install may have taken the key meanwhile
		default:
			t.updateSyncedLocked(s, e, c)
			s.mu.Unlock()
			return Updated, nil
		}
	}
	if t.count.Add(1) > t.max || s.in.n >= s.in.max {
		s.mu.Unlock()
		t.count.Add(-1)
		t.dropped.Add(1)
		return Refused, ErrFull
	}
	e := s.slab.alloc(v6)
	if e == nil {
		s.mu.Unlock()
		t.count.Add(-1)
		t.dropped.Add(1)
		return Refused, ErrFull
	}
	e.In, e.Out = c.In, c.Out
	if c.Template {
		e.Out = Key{}
	}
	e.Dest, e.Tpl, e.Method = c.Dest, nil, c.Method
	e.ClientIf, e.ClientMAC, e.Aux = 0, [6]byte{}, c.Aux // the client's layer 2 is learnt later (director)
	if v6 {
		*s.slab.side6(e.id) = c.A6
	}
	w := wSync | uint32(c.State)
	if c.Template {
		w |= wTemplate
	} else {
		w |= c.InPkts << wCountShift
		e.nControl.Store(int32(c.State & 0xf)) // old_state; never synced from here
	}
	if c.NoOutput && !c.Template {
		w |= wNoOutput
	}
	e.word.Store(w)
	e.timeout.Store(c.Timeout)
	e.expires.Store(int32(t.now.Load() + t.tmo.ticks(c.Timeout)))
	if c.Dest != nil {
		c.Dest.Bind(c.Template)
		if e.active(w) {
			c.Dest.SetActive(true)
		}
	}
	ref := s.ref(e)
	s.in.insert(hk, ref) // room checked above
	s.file(e, t)
	gen := e.gen.Load()
	s.mu.Unlock()
	t.created.Add(1)
	if !c.Template && c.Out != (Key{}) {
		// As in Create: the out index is another shard's; an entry torn
		// down meanwhile (or its slot reused) is not indexed.
		ho, o := t.locate(&c.Out)
		o.mu.Lock()
		if e.word.Load()&wDead == 0 && e.gen.Load() == gen && (v6 && t.findOut6(o, ho, &c.Out, &c.A6.Out) == nil || !v6 && t.findOut(o, ho, &c.Out) == nil) {
			o.out.insert(ho, ref)
		}
		o.mu.Unlock()
	}
	return res, nil
}

// updateSyncedLocked applies a record to an existing entry (home shard
// lock held): the state (the dest's active/inactive counters moving with
// it), the timeout and expiry, in_pkts and old_state. A conn's word may
// change under a reply's lock meanwhile: one compare-and-swap moves it.
func (t *Table) updateSyncedLocked(s *shard, e *Entry, c *SyncedConn) {
	var old, nw uint32
	for {
		old = e.word.Load()
		nw = old&^wStateMask | uint32(c.State)
		if !c.Template {
			nw = nw&^wCountMask | c.InPkts<<wCountShift
		}
		if e.word.CompareAndSwap(old, nw) {
			break
		}
	}
	if wasA, isA := e.active(old), e.active(nw); wasA != isA && e.Dest != nil {
		e.Dest.SetActive(isA)
	}
	if !c.Template {
		end, _ := e.SyncMark()
		e.nControl.Store(int32(end<<4 | uint32(c.State&0xf)))
	}
	e.timeout.Store(c.Timeout)
	exp := int32(t.now.Load() + t.tmo.ticks(c.Timeout))
	if e.expires.Load() != exp {
		e.expires.Store(exp)
		s.refileIfSooner(e, t)
	}
}
