package conntrack

import (
	"sync"
	"sync/atomic"
	"time"
)

// This file is the glue between the table and IPVS's connection
// semantics: per-packet state steps (state.go's tables), the
// active/inactive accounting on the dest, templates turning ASSURED, and
// the per-state timeouts (ipvsadm --set, and secure_tcp's shorter ones).

// timeouts holds the per-state timeouts: the configured ones (ipvsadm
// --set) and the effective ones the packet path reads, in seconds and in
// ticks (kept beside each other so the per-packet refresh does not
// divide). They differ only while secure_tcp is on.
type timeouts struct {
	mu     sync.Mutex // setters and the secure_tcp switch
	tick   time.Duration
	secure bool // under mu

	tcp [NumTCPStates]uint32 // configured, under mu
	udp uint32

	tcpSec [NumTCPStates]atomic.Uint32
	tcpTk  [NumTCPStates]atomic.Int64
	udpSec atomic.Uint32
	udpTk  atomic.Int64
}

func (m *timeouts) init(t *Table) {
	m.tick = t.tick
	m.tcp = DefaultTCPTimeouts
	m.udp = DefaultUDPTimeout
	m.apply()
}

// ticks converts seconds to ticks, rounding up.
func (m *timeouts) ticks(sec uint32) int64 {
	d := time.Duration(sec) * time.Second
	return int64((d + m.tick - 1) / m.tick)
}

// apply recomputes the effective timeouts (mu held).
func (m *timeouts) apply() {
	for s := range m.tcp {
		sec := m.tcp[s]
		if m.secure {
			sec = min(sec, SecureTCPTimeouts[s])
		}
		m.tcpSec[s].Store(sec)
		m.tcpTk[s].Store(m.ticks(sec))
	}
	sec := m.udp
	if m.secure {
		sec = min(sec, SecureUDPTimeout)
	}
	m.udpSec.Store(sec)
	m.udpTk.Store(m.ticks(sec))
}

// setSecure switches secure_tcp's timeouts on or off.
func (m *timeouts) setSecure(on bool) {
	m.mu.Lock()
	if m.secure != on {
		m.secure = on
		m.apply()
	}
	m.mu.Unlock()
}

// of returns the effective timeout of a state of proto.
func (m *timeouts) of(proto uint8, state uint8) (sec uint32, ticks int64) {
	if proto == 6 {
		if state < NumTCPStates {
			return m.tcpSec[state].Load(), m.tcpTk[state].Load()
		}
		return 2, m.ticks(2)
	}
	return m.udpSec.Load(), m.udpTk.Load()
}

// SetTimeouts sets the TCP ESTABLISHED, TCP FIN_WAIT and UDP timeouts in
// seconds; 0 leaves a value unchanged (ipvsadm --set). They apply to each
// conn at its next packet, as in IPVS.
func (t *Table) SetTimeouts(tcp, tcpfin, udp uint32) {
	m := &t.tmo
	m.mu.Lock()
	if tcp != 0 {
		m.tcp[TCPEstablished] = tcp
	}
	if tcpfin != 0 {
		m.tcp[TCPFinWait] = tcpfin
	}
	if udp != 0 {
		m.udp = udp
	}
	m.apply()
	m.mu.Unlock()
}

// SetStateTimeout sets one TCP state's timeout (tests use short ones).
func (t *Table) SetStateTimeout(state uint8, sec uint32) {
	m := &t.tmo
	m.mu.Lock()
	m.tcp[state] = sec
	m.apply()
	m.mu.Unlock()
}

// Timeouts returns the configured TCP ESTABLISHED, FIN_WAIT and UDP
// timeouts (ipvsadm -L --timeout; secure_tcp does not change them).
func (t *Table) Timeouts() (tcp, tcpfin, udp uint32) {
	m := &t.tmo
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tcp[TCPEstablished], m.tcp[TCPFinWait], m.udp
}

// step applies one packet to a conn (under the lock of a shard indexing
// it): the TCP state transition of its direction (with secure_tcp's table
// while that defense is on), the inbound packet count, NOOUTPUT cleared
// by a reply, the dest's active/inactive counters and the expiry.
//
// State, count and flags share one word changed by one compare-and-swap,
// so concurrent in and out workers agree on one sequence of states and
// the counters move exactly once per change; a packet that changes
// nothing (an established flow's, once 15 packets were counted) writes
// nothing at all: an atomic write is a locked instruction and dirties a
// line the other direction's worker reads.
func (t *Table) step(e *Entry, out bool, tcpFlags uint8, h *Hit) {
	proto := e.In.Proto
	tbl := &tcpTrans
	if t.def.secureOn.Load() {
		tbl = &tcpTransSecure
	}
	var old, nw uint32
	var st, ns uint8
	for {
		old = e.word.Load()
		nw = old
		st = uint8(old & wStateMask)
		ns = st
		if proto == 6 {
			dir := DirInput
			if out {
				dir = DirOutput
			} else if old&wNoOutput != 0 {
				dir = DirInputOnly
			}
			ns = tcpNext(tbl, dir, tcpFlags, st)
			nw = nw&^wStateMask | uint32(ns)
		}
		if out {
			nw &^= wNoOutput // a reply was seen: the normal tables from now on
		} else if nw&wPktMask != wPktMask {
			nw += 1 << wPktShift
		}
		if nw == old || e.word.CompareAndSwap(old, nw) {
			break
		}
	}
	h.OldState, h.NewState = st, ns
	if ns != st && proto == 6 {
		if wasA, isA := TCPActive(st), TCPActive(ns); wasA != isA && e.Dest != nil {
			e.Dest.SetActive(isA)
		}
		if ns == TCPEstablished && e.Tpl != nil {
			assure(e.Tpl)
		}
	}
	if proto == 17 && out && e.Tpl != nil {
		assure(e.Tpl)
	}
	sec, ticks := t.tmo.of(proto, ns)
	// Stored only when the value changes: most packets of a flow fall in
	// the same tick.
	if e.timeout.Load() != sec {
		e.timeout.Store(sec)
	}
	if exp := int32(t.now.Load() + ticks); e.expires.Load() != exp {
		e.expires.Store(exp)
	}
}

// assure marks a template ASSURED (its conn reached ESTABLISHED, or a UDP
// reply came back), writing only the first time.
func assure(tpl *Entry) {
	if tpl.word.Load()&wStateMask != uint32(TplAssured) {
		tpl.word.Or(uint32(TplAssured))
	}
}
