package vrrp

import (
	"net/netip"
	"time"
)

// State is an instance's VRRP state.
type State uint8

// The states (RFC 5798 §6.4, and keepalived's FAULT for a link that is
// down).
const (
	StateInit State = iota
	StateBackup
	StateMaster
	StateFault
)

var stateNames = [...]string{"INIT", "BACKUP", "MASTER", "FAULT"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "?"
}

// effects is what one step of the machine asks its driver to do.
type effects struct {
	send     bool  // send an advertisement now, at prio
	prio     uint8 // the priority to advertise (0: resigning)
	changed  bool  // the state changed (to machine.state)
	garp     int   // send this many gratuitous ARPs per address now
	garpLate bool  // and schedule the second round (garp_master_delay)
}

// machine is one instance's state machine, as RFC 5798 §6.4 and
// keepalived's vrrp_state_backup / vrrp_state_master_rx run it. It is
// pure: time comes in as arguments, packets as decoded adverts, and what
// must happen goes out as effects, so elections are tested without
// sockets or sleeping.
type machine struct {
	c     *Instance
	src   netip.Addr // our primary address: ties between equal priorities
	state State
	prio  uint8 // effective priority

	masterAdv  uint16    // Master_Adver_Interval, centiseconds
	downAt     time.Time // backup: Master_Down_Timer's expiry
	advAt      time.Time // master: the next advertisement
	preemptAt  time.Time // preempt_delay: no preemption before (zero: none running)
	refreshAt  time.Time // master: the next gratuitous ARP refresh
	since      time.Time // when the state was entered
	masterAddr netip.Addr
	masterPrio uint8

	// counters
	sent, received, becameMaster, prioZeroSent, prioZeroRecv uint64
}

func newMachine(c *Instance, src netip.Addr) *machine {
	return &machine{c: c, src: src, prio: uint8(c.Priority), masterAdv: c.centis()}
}

func cs(n uint32) time.Duration { return time.Duration(n) * 10 * time.Millisecond }

// skew is Skew_Time: version 3 scales it with Master_Adver_Interval
// ((256-Priority) * Master_Adver_Interval / 256, in centiseconds),
// version 2 is (256-Priority)/256 seconds.
func (m *machine) skew() time.Duration {
	if m.c.Version == 3 {
		return cs((256 - uint32(m.prio)) * uint32(m.masterAdv) / 256)
	}
	return time.Duration(256-int(m.prio)) * time.Second / 256
}

// downInterval is Master_Down_Interval: 3 * Master_Adver_Interval + Skew_Time.
func (m *machine) downInterval() time.Duration {
	return 3*cs(uint32(m.masterAdv)) + m.skew()
}

// skewMin is keepalived's shortest skew, for `state MASTER` at start.
func (m *machine) skewMin() time.Duration {
	if m.c.Version == 3 {
		return cs(uint32(m.masterAdv) / 256)
	}
	return time.Second / 256
}

func (m *machine) adv() time.Duration { return cs(uint32(m.c.centis())) }

// start leaves INIT: the address owner becomes master at once; `state
// MASTER` waits one interval (plus the least skew) for a better master;
// everyone else waits Master_Down_Interval.
func (m *machine) start(now time.Time) effects {
	if m.c.PreemptDelay > 0 {
		m.preemptAt = now.Add(m.c.PreemptDelay)
	}
	if m.prio == 255 { // the address owner: keepalived forces `state MASTER`
		return m.toMaster(now)
	}
	m.toBackup(now)
	if m.c.StartMaster {
		m.downAt = now.Add(m.adv() + m.skewMin())
	}
	return effects{changed: true}
}

// next returns when the machine next needs a timer call.
func (m *machine) next() time.Time {
	var t time.Time
	switch m.state {
	case StateBackup:
		t = m.downAt
	case StateMaster:
		t = m.advAt
		if !m.refreshAt.IsZero() && m.refreshAt.Before(t) {
			t = m.refreshAt
		}
	}
	return t
}

func (m *machine) toBackup(now time.Time) {
	m.state = StateBackup
	m.since = now
	m.masterAdv = m.c.centis()
	m.downAt = now.Add(m.downInterval())
	m.advAt, m.refreshAt = time.Time{}, time.Time{}
}

func (m *machine) toMaster(now time.Time) effects {
	m.state = StateMaster
	m.since = now
	m.becameMaster++
	m.masterAdv = m.c.centis()
	m.masterAddr, m.masterPrio = m.src, m.prio
	m.advAt = now.Add(m.adv())
	m.refreshAt = time.Time{}
	if m.c.GARP.MasterRefresh > 0 {
		m.refreshAt = now.Add(m.c.GARP.MasterRefresh)
	}
	m.sent++
	return effects{send: true, prio: m.prio, changed: true, garp: m.c.GARP.MasterRepeat, garpLate: m.c.GARP.MasterDelay > 0}
}

// timer runs what is due at now: a master's advertisement (and ARP
// refresh), a backup's Master_Down_Timer.
func (m *machine) timer(now time.Time) effects {
	switch m.state {
	case StateBackup:
		if !now.Before(m.downAt) {
			return m.toMaster(now)
		}
	case StateMaster:
		var e effects
		if !m.refreshAt.IsZero() && !now.Before(m.refreshAt) {
			e.garp = m.c.GARP.RefreshRepeat
			m.refreshAt = now.Add(m.c.GARP.MasterRefresh)
		}
		if !now.Before(m.advAt) {
			m.advAt = m.advAt.Add(m.adv())
			if m.advAt.Before(now) { // we were held up: do not burst
				m.advAt = now.Add(m.adv())
			}
			e.send, e.prio = true, m.prio
			m.sent++
		}
		return e
	}
	return effects{}
}

// holdBackup keeps a backup that wanted to become master (its sync group
// cannot go master yet) waiting another Master_Down_Interval.
func (m *machine) holdBackup(now time.Time) {
	m.state = StateBackup
	m.downAt = now.Add(m.downInterval())
}

// receive runs a checked advertisement from another router.
func (m *machine) receive(now time.Time, a *Advert) effects {
	m.received++
	if a.Priority == 0 {
		m.prioZeroRecv++
	}
	switch m.state {
	case StateBackup:
		return m.backupRx(now, a)
	case StateMaster:
		return m.masterRx(now, a)
	}
	return effects{}
}

func (m *machine) backupRx(now time.Time, a *Advert) effects {
	if a.Priority == 0 {
		// The master resigns: take over after Skew_Time only.
		m.downAt = now.Add(m.skew())
		return effects{}
	}
	delayed := m.c.PreemptDelay > 0 && (m.preemptAt.IsZero() || now.Before(m.preemptAt))
	if m.c.NoPreempt || a.Priority >= m.prio || delayed {
		if m.c.Version == 3 && a.Interval > 0 {
			m.masterAdv = a.Interval
		}
		m.downAt = now.Add(m.downInterval())
		m.masterAddr, m.masterPrio = a.Src, a.Priority
		if m.c.PreemptDelay > 0 {
			if a.Priority >= m.prio {
				m.preemptAt = time.Time{}
			} else if m.preemptAt.IsZero() {
				m.preemptAt = now.Add(m.c.PreemptDelay)
			}
		}
		return effects{}
	}
	// A lower-priority master and we may preempt: ignore it; the down
	// timer (not reset) makes us master.
	m.masterAddr, m.masterPrio = a.Src, a.Priority
	return effects{}
}

// addrCmp compares the advert's source with ours (RFC 5798: the higher
// primary address wins a tie of priorities).
func addrCmp(theirs, ours netip.Addr) int { return theirs.Compare(ours) }

func (m *machine) masterRx(now time.Time, a *Advert) effects {
	if a.Priority == 0 {
		// Another master resigns: assert ourselves at once.
		m.sent++
		m.advAt = now.Add(m.adv())
		return effects{send: true, prio: m.prio}
	}
	cmp := addrCmp(a.Src, m.src)
	if a.Priority == m.prio && m.prio == 255 && cmp != 0 {
		// Two address owners: a configuration error; keepalived lowers
		// its own priority to 254 so that an election can happen.
		m.prio = 254
	}
	if a.Priority < m.prio || a.Priority == m.prio && cmp < 0 {
		// A lower-priority master (after a partition heals, or a
		// restarted router): force a new election by advertising now,
		// and refresh the ARP caches the other master may have taken.
		m.sent++
		m.advAt = now.Add(m.adv())
		return effects{send: true, prio: m.prio, garp: m.c.GARP.LowerPrioRepeat}
	}
	if a.Priority > m.prio || a.Priority == m.prio && cmp > 0 {
		m.toBackup(now)
		if m.c.Version == 3 && a.Interval > 0 {
			m.masterAdv = a.Interval
			m.downAt = now.Add(m.downInterval())
		}
		m.masterAddr, m.masterPrio = a.Src, a.Priority
		return effects{changed: true}
	}
	return effects{}
}

// force puts the machine in a state because its sync group moved there.
func (m *machine) force(now time.Time, s State) effects {
	if m.state == s || m.state == StateFault {
		return effects{}
	}
	switch s {
	case StateMaster:
		return m.toMaster(now)
	case StateBackup:
		m.toBackup(now)
		return effects{changed: true}
	}
	return effects{}
}

// fault is the interface going down (true) or coming back (false).
func (m *machine) fault(now time.Time, down bool) effects {
	if down {
		if m.state == StateFault {
			return effects{}
		}
		wasMaster := m.state == StateMaster
		m.state = StateFault
		m.since = now
		m.advAt, m.downAt, m.refreshAt = time.Time{}, time.Time{}, time.Time{}
		if wasMaster {
			m.prioZeroSent++
			return effects{send: true, prio: 0, changed: true}
		}
		return effects{changed: true}
	}
	if m.state != StateFault {
		return effects{}
	}
	if m.prio == 255 {
		return m.toMaster(now)
	}
	m.toBackup(now)
	if m.c.PreemptDelay > 0 {
		m.preemptAt = now.Add(m.c.PreemptDelay)
	}
	return effects{changed: true}
}

// stop is shutdown: a master resigns with priority 0 so that a backup
// takes over after Skew_Time instead of Master_Down_Interval.
func (m *machine) stop(now time.Time) effects {
	if m.state != StateMaster {
		m.state = StateInit
		return effects{}
	}
	m.state = StateInit
	m.since = now
	m.prioZeroSent++
	return effects{send: true, prio: 0, changed: true}
}

// setPriority changes the priority at run time (an operator draining a
// director, as keepalived's tracked scripts do by weight). A master that
// drops below a backup loses the next election: it advertises at once.
func (m *machine) setPriority(now time.Time, p uint8) effects {
	m.prio = p
	if m.state == StateMaster {
		m.masterPrio = p
		m.sent++
		m.advAt = now.Add(m.adv())
		return effects{send: true, prio: p}
	}
	return effects{}
}
