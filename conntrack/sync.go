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
//   - the per-entry counters its sending rules keep (in_pkts, old_state,
//     sync_endtime), untouched while no master runs;
//   - Install: a sync backup adds or updates a conn received from the
//     master (ip_vs_proc_conn).

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

// Timeout returns the entry's current timeout in seconds (IPVS's
// cp->timeout: the protocol's timeout for its state, or a template's).
func (e *Entry) Timeout() uint32 { return e.timeout.Load() }

// Synced reports whether the entry was created by a sync backup.
func (e *Entry) Synced() bool { return e.flags.Load()&FlagSync != 0 }

// NoOutput reports whether no reply was seen for the conn (DR, TUN: it
// never is).
func (e *Entry) NoOutput() bool { return e.flags.Load()&FlagNoOutput != 0 }

// SyncPackets counts one more inbound packet for the sync master and
// returns the count (IPVS's atomic_inc_return(&cp->in_pkts)). The count
// is 24 bits wide and wraps.
func (e *Entry) SyncPackets() uint32 { return e.syncPS.Add(1<<8) >> 8 }

// SyncOldState returns the state the conn was in when it was last synced.
func (e *Entry) SyncOldState() uint8 { return uint8(e.syncPS.Load()) }

// SetSyncOldState records the state a sync was sent for.
func (e *Entry) SetSyncOldState(s uint8) {
	for {
		v := e.syncPS.Load()
		if uint8(v) == s || e.syncPS.CompareAndSwap(v, v&^0xff|uint32(s)) {
			return
		}
	}
}

// SyncEnd returns the conn's sync_endtime (the sync master's clock; its
// low two bits count retries).
func (e *Entry) SyncEnd() uint32 { return e.syncEnd.Load() }

// CASSyncEnd sets sync_endtime from old to n, reporting whether it was
// still old (cmpxchg(&cp->sync_endtime, orig, n) == orig).
func (e *Entry) CASSyncEnd(old, n uint32) bool { return e.syncEnd.CompareAndSwap(old, n) }

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
//     timeout, counted as the kernel counts a new conn;
//   - either way in_pkts restarts at c.InPkts, old_state is the state,
//     and the timer is re-armed to now + timeout.
//
// Entries made here carry FlagSync. A full table refuses the conn.
func (t *Table) Install(c *SyncedConn) (InstallResult, error) {
	if c.Timeout == 0 {
		if c.Template {
			c.Timeout = 3 * 60
		} else {
			c.Timeout, _ = t.timeoutFor(c.In.Proto, c.State)
		}
	}
	c.Timeout = min(c.Timeout, maxSyncedTimeout)
	res := Installed
	hk, s := t.locate(&c.In)
	s.mu.Lock()
	if e := t.find(&s.in, hk, &c.In, false); e != nil {
		tpl := e.flags.Load()&FlagTemplate != 0
		if !c.Template && !tpl && (e.Dest == nil || e.Dest.Addr != c.Dest.Addr || destPort(e) != c.DPort) {
			if c.Inactive {
				s.mu.Unlock()
				return IgnoredInactive, nil
			}
			t.unlinkLocked(s, e, hk)
			s.mu.Unlock()
			t.finish(e)
			res = Replaced
			s.mu.Lock()
			if t.find(&s.in, hk, &c.In, false) != nil {
				// Another install won the race; update that one.
				s.mu.Unlock()
				return t.Install(c)
			}
		} else if c.Template == tpl {
			t.updateSyncedLocked(s, e, c)
			s.mu.Unlock()
			return Updated, nil
		} else {
			// A template and a conn never share a key (Kind differs);
			// a record claiming otherwise is refused.
			s.mu.Unlock()
			return Refused, ErrExists
		}
	}
	if t.count.Add(1) > t.max {
		s.mu.Unlock()
		t.count.Add(-1)
		t.dropped.Add(1)
		return Refused, ErrFull
	}
	e := s.alloc()
	if e == nil {
		s.mu.Unlock()
		t.count.Add(-1)
		t.dropped.Add(1)
		return Refused, ErrFull
	}
	e.In, e.Out = c.In, c.Out
	e.Dest, e.Tpl, e.Method = c.Dest, nil, c.Method
	e.ClientIf, e.ClientMAC, e.Aux = 0, [6]byte{}, c.Aux // the client's layer 2 is learnt later (director)
	e.home = uint8(s.idx)
	fl := uint32(FlagSync)
	active := false
	if c.Template {
		fl |= FlagTemplate
	} else if c.In.Proto == 6 && TCPActive(c.State) {
		active = true
	} else {
		fl |= FlagInactive
	}
	if c.NoOutput {
		fl |= FlagNoOutput
	}
	e.flags.Store(fl)
	e.state.Store(uint32(c.State))
	e.nControl.Store(0)
	e.timeout.Store(c.Timeout)
	e.expires.Store(int32(t.now.Load() + t.ticks(c.Timeout)))
	e.syncPS.Store(c.InPkts<<8 | uint32(c.State))
	if c.Dest != nil {
		c.Dest.Bind(c.Template)
		if active {
			c.Dest.SetActive(true)
		}
	}
	ref := s.ref(e)
	t.insert(&s.in, hk, ref, false)
	s.file(e, t)
	s.mu.Unlock()
	t.created.Add(1)
	if !c.Template && c.Out != (Key{}) {
		ho, o := t.locate(&c.Out)
		o.mu.Lock()
		if t.find(&o.out, ho, &c.Out, true) == nil {
			t.insert(&o.out, ho, ref, true)
		}
		o.mu.Unlock()
	}
	return res, nil
}

// updateSyncedLocked applies a record to an existing entry (home shard
// lock held).
func (t *Table) updateSyncedLocked(s *shard, e *Entry, c *SyncedConn) {
	old := uint8(e.state.Swap(uint32(c.State)))
	if !c.Template && e.In.Proto == 6 && e.Dest != nil {
		if wasA, isA := TCPActive(old), TCPActive(c.State); wasA != isA {
			e.Dest.SetActive(isA)
			if isA {
				e.flags.And(^uint32(FlagInactive))
			} else {
				e.flags.Or(FlagInactive)
			}
		}
	}
	e.timeout.Store(c.Timeout)
	e.syncPS.Store(c.InPkts<<8 | uint32(c.State))
	exp := int32(t.now.Load() + t.ticks(c.Timeout))
	if e.expires.Load() != exp {
		e.expires.Store(exp)
		s.refileIfSooner(e, t)
	}
}

// DestPort returns the real server port the entry is bound to, as IPVS
// keeps it in cp->dport and sync messages carry it: a conn's is its
// dest's (the VIP port for a port-0 dest; the out key's for NAT and
// FULLNAT); a template's is its dest's port, or 0 for templates keyed
// without a port (fwmark and port-zero services).
func (e *Entry) DestPort() uint16 {
	if e.flags.Load()&FlagTemplate != 0 {
		if e.In.DstPort == 0 || e.Dest == nil {
			return 0
		}
		return e.Dest.Port
	}
	return destPort(e)
}
