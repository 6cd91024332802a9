package ipvssync

import (
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
)

// The master's timing, as ip_vs_sync.c has it.
const (
	wakeupRate  = 8                     // IPVS_SYNC_WAKEUP_RATE: queued messages that wake the sender
	sendDelay   = 20 * time.Millisecond // IPVS_SYNC_SEND_DELAY (HZ/50): the latest a queued message waits
	checkPeriod = time.Second           // IPVS_SYNC_CHECK_PERIOD: how often the sender looks at the open buffer
	flushTime   = 2 * time.Second       // IPVS_SYNC_FLUSH_TIME: the oldest an open buffer gets

	// clockUnit is the resolution of the master's clock (sync_endtime);
	// its low two bits count retries, as jiffies' do in the kernel.
	clockUnit = 10 * time.Millisecond
)

// master is a running master daemon: the sending rules on the packet
// path (hook) and one queue and sender per thread (sync_ports).
type master struct {
	d     *Daemon
	cfg   Config
	sys   Sysctls
	v0    bool
	epoch time.Time
	since func() time.Duration // time since epoch (tests replace it)
	ms    []*masterThread
	mask  uintptr
	stop  chan struct{}
	wg    sync.WaitGroup
}

// masterThread is one thread's state (struct ipvs_master_sync_state).
type masterThread struct {
	m     *master
	mu    sync.Mutex // sync_buff_lock and sync_lock in one
	open  bool
	cur   *Message
	first time.Duration // the open buffer's creation (firstuse), on the master's clock
	queue []*Message
	qbase []*Message // the queue's array from its start, reused once the queue empties
	delay int        // sync_queue_delay
	wake  chan struct{}
	timer *time.Timer
	out   Sender
	free  []*Message
	_     [64]byte
}

func newMaster(d *Daemon, cfg Config, sys Sysctls, outs []Sender) *master {
	m := &master{d: d, cfg: cfg, sys: sys, v0: sys.Version == 0, epoch: time.Now(), stop: make(chan struct{})}
	m.since = func() time.Duration { return time.Since(m.epoch) }
	m.mask = uintptr(len(outs) - 1)
	for _, o := range outs {
		t := &masterThread{m: m, open: true, wake: make(chan struct{}, 1), out: o}
		t.timer = time.AfterFunc(time.Hour, t.delayed)
		t.timer.Stop()
		m.ms = append(m.ms, t)
	}
	return m
}

func (m *master) start() {
	for _, t := range m.ms {
		m.wg.Add(1)
		go func(t *masterThread) {
			defer m.wg.Done()
			t.run()
		}(t)
	}
}

// close stops the senders; queued and open messages are dropped, as the
// kernel's master thread drops them when it stops.
func (m *master) close() {
	for _, t := range m.ms {
		t.mu.Lock()
		t.open = false
		t.queue, t.qbase, t.cur = nil, nil, nil
		t.mu.Unlock()
		t.timer.Stop()
	}
	close(m.stop)
	m.wg.Wait()
	for _, t := range m.ms {
		t.out.Close()
	}
}

// now is the master's clock in clockUnits, never 0 in practice (it starts
// at 1<<20 so that a zero sync_endtime reads as long ago).
func (m *master) now() uint32 {
	return uint32(m.since()/clockUnit) + 1<<20
}

func units(sec uint32) uint32 {
	if sec > 1<<24 {
		sec = 1 << 24
	}
	return sec * uint32(time.Second/clockUnit)
}

// syncedStates are the TCP states a conn is considered in
// (ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT, TIME_WAIT).
const syncedStates = 1<<conntrack.TCPEstablished | 1<<conntrack.TCPFinWait | 1<<conntrack.TCPClose |
	1<<conntrack.TCPCloseWait | 1<<conntrack.TCPTimeWait

// inPersistence reports whether a template controls e.
func inPersistence(e *conntrack.Entry) bool {
	for c := e.Tpl; c != nil; c = c.Tpl {
		if c.Template() {
			return true
		}
	}
	return false
}

// countTemplates reports whether the rules read templates' packet
// counts: only with sync_period and sync_refresh_period both 0 (a
// template is then synced once, at its threshold-th count). Otherwise a
// template keeps its sync mark in the same bits (conntrack/sync.go).
func (m *master) countTemplates() bool { return m.sys.Period == 0 && m.sys.RefreshPeriod == 0 }

// markOf returns what e's sync mark holds: its sync_endtime as it was
// stored (0: never synced) and, for a conn, old_state. A template that
// counts packets keeps none (ok false).
func (m *master) markOf(e *conntrack.Entry, tpl bool) (stored uint32, old uint8, ok bool) {
	if tpl && m.countTemplates() {
		return 0, 0, false
	}
	stored, old = e.SyncMark()
	return stored, old, true
}

// encodeEnd is sync_endtime n (the master's clock, retries in the low two
// bits) as an entry keeps it: a conn the low 28 bits of n, a template
// the low 14 bits of its second and the retries. 0 means never synced,
// so a value that would be 0 moves on by one step.
func encodeEnd(tpl bool, n uint32) uint32 {
	var v uint32
	if tpl {
		sec := n / uint32(time.Second/clockUnit)
		v = (sec&0x3fff)<<2 | n&3
		if v == 0 {
			v = 1 << 2
		}
		return v
	}
	v = n & (1<<28 - 1)
	if v == 0 {
		v = 4
	}
	return v
}

// expandEnd finds the full sync_endtime an entry's stored value stands
// for: the value with those low bits nearest ref (the new sync_endtime,
// now + timeout), exact while the last sync's was within half the kept
// range of it (15 days for a conn, 2 hours for a template; further off,
// the rules may see it nearer than it is and skip one resend). A conn
// never synced reads as long ago, as a new conn's creation time does in
// the kernel.
func expandEnd(tpl bool, stored, ref uint32) uint32 {
	if stored == 0 {
		return ref - 1<<30
	}
	if tpl {
		per := uint32(time.Second / clockUnit)
		refSec := ref / per
		d := int32((stored>>2-refSec)&0x3fff) << 18 >> 18
		return (refSec+uint32(d))*per | stored&3
	}
	d := int32((stored-ref)&(1<<28-1)) << 4 >> 4
	return ref + uint32(d)
}

// needed is ip_vs_sync_conn_needed: whether e is to be sent now, pkts
// being its inbound packet count (or sync_threshold).
func (m *master) needed(e *conntrack.Entry, pkts uint32) bool {
	st := e.State()
	tpl := e.Template()
	stored, old, mark := m.markOf(e, tpl)
	force := false
	switch {
	case tpl:
	case m.sys.PersistMode && inPersistence(e):
		return false
	case e.In.Proto == ipvs.ProtoTCP:
		if st >= 32 || syncedStates&(1<<st) == 0 {
			return false
		}
		force = st != old
		if force && st != conntrack.TCPEstablished {
			return m.set(e, tpl, mark, st, stored, (m.now()+units(e.Timeout()))&^3, force)
		}
	}
	var n uint32
	rp := uint32(m.sys.RefreshPeriod / clockUnit)
	if rp > 0 {
		now := m.now()
		to := units(e.Timeout())
		n = (now + to) &^ 3
		orig := expandEnd(tpl, stored, n)
		diff := int32(n - orig)
		if diff < 0 {
			diff = -diff
		}
		minDiff := max(to/2, units(10))
		if uint32(diff) < min(rp, minDiff) {
			retries := orig & 3
			if int(retries) >= m.sys.Retries {
				return false
			}
			if int32(now-(orig-to+rp/8)) < 0 { // time_before(now, orig - timeout + rp/8)
				return false
			}
			n |= retries + 1
		}
	}
	// pkts is counted modulo sync_period already (conntrack.SyncCount).
	if m.sys.Period > 0 {
		if !tpl && pkts != uint32(m.sys.Threshold) {
			return false
		}
	} else if rp == 0 && pkts != uint32(m.sys.Threshold) {
		return false
	}
	if rp == 0 {
		n = (m.now() + units(e.Timeout())) &^ 3
	}
	return m.set(e, tpl, mark, st, stored, n, force)
}

// set is the "set:" tail of ip_vs_sync_conn_needed: old_state and
// sync_endtime move together; a concurrent sync of the same template
// that won the exchange sends it instead.
func (m *master) set(e *conntrack.Entry, tpl, mark bool, st uint8, stored, n uint32, force bool) bool {
	if !mark {
		return true // a template counting packets: its count decided
	}
	return e.CASSyncMark(stored, encodeEnd(tpl, n), st) || force
}

// hook is the conntrack sync hook: ip_vs_sync_conn for e and then for its
// controlling template.
func (m *master) hook(e *conntrack.Entry, packet bool) {
	period := uint32(m.sys.Period)
	var pkts uint32
	if packet {
		pkts = e.SyncCount(period)
	} else {
		pkts = uint32(m.sys.Threshold)
	}
	for cp := e; ; {
		if m.needed(cp, pkts) {
			m.add(cp)
		} else if m.v0 {
			return // version 0 syncs the controller only after its conn
		}
		cp = cp.Tpl
		if cp == nil {
			return
		}
		switch {
		case !cp.Template():
			pkts = uint32(m.sys.Threshold)
		case m.countTemplates():
			pkts = cp.SyncCount(period)
		}
	}
}

// EntryConn fills c with e's record as a master sends it (e an entry of
// t, read under its home lock, or a template one of its conns holds).
// It reports false for what the protocol cannot carry: an entry without
// a dest, and a conn whose real server is of another address family
// than its client (a mixed-family tunnel: the kernel refuses such dests
// while a sync daemon runs, and golvs does too).
func EntryConn(t *conntrack.Table, e *conntrack.Entry, c *Conn) bool {
	d := e.Dest
	a6 := t.EntryAddrs6(e)
	if d == nil || d.Addr.Is4() != (a6 == nil) {
		return false
	}
	*c = Conn{}
	c.Proto = e.In.Proto
	c.State = uint16(e.State())
	c.Flags = uint32(e.Method) & FlagFwdMask
	tpl := e.Template()
	if tpl {
		// A template carries its dest's conn flags: INACTIVE, and
		// NOOUTPUT for methods without replies.
		c.Flags |= FlagTemplate | FlagInactive
		if e.Method != ipvs.MethodMasq && e.Method != ipvs.MethodFullNAT {
			c.Flags |= FlagNoOutput
		}
	} else {
		if e.NoOutput() {
			c.Flags |= FlagNoOutput
		}
		if e.In.Proto != ipvs.ProtoTCP || !conntrack.TCPActive(e.State()) {
			c.Flags |= FlagInactive
		}
	}
	if e.Synced() {
		c.Flags |= FlagSync
	}
	c.CPort, c.VPort = e.In.SrcPort, e.In.DstPort
	c.DPort = e.DestPort()
	c.FWMark = d.Svc.FWMark
	c.Timeout = e.Timeout()
	c.DAddr = d.Addr
	if a6 != nil {
		c.CAddr, c.VAddr = netip.AddrFrom16(a6.In.Src), netip.AddrFrom16(a6.In.Dst)
		if !tpl && e.Method == ipvs.MethodFullNAT {
			c.LAddr, c.LPort = netip.AddrFrom16(a6.Out.Dst), e.Out.DstPort
		}
		return true
	}
	c.CAddr = netipFrom4(e.In.SrcIP)
	c.VAddr = netipFrom4(e.In.DstIP)
	if !tpl && e.Method == ipvs.MethodFullNAT {
		c.LAddr, c.LPort = netipFrom4(e.Out.DstIP), e.Out.DstPort
	}
	return true
}

func netipFrom4(a [4]byte) netip.Addr { return netip.AddrFrom4(a) }

// add queues e's record (ip_vs_sync_conn's buffer handling).
func (m *master) add(e *conntrack.Entry) {
	var c Conn
	if !EntryConn(m.d.o.Table, e, &c) || m.v0 && c.V6() {
		return // version 0 carries IPv4 only (ip_vs_sync_conn_v0)
	}
	t := m.ms[(uintptr(unsafe.Pointer(e))>>7)&m.mask]
	t.mu.Lock()
	if !t.open {
		t.mu.Unlock()
		return
	}
	if t.cur != nil {
		if t.cur.V0() != m.v0 || !t.cur.Fits(t.cur.RecordLen(&c)) {
			t.queueLocked(t.cur)
			t.cur = nil
		}
	}
	if t.cur == nil {
		t.cur = t.newMsgLocked()
		t.first = m.since()
	}
	if err := t.cur.Add(&c); err != nil {
		m.d.cnt[cntEncodeErrors].Add(1)
	} else {
		m.d.cnt[cntConnsQueued].Add(1)
	}
	t.mu.Unlock()
}

func (t *masterThread) newMsgLocked() *Message {
	if n := len(t.free); n > 0 {
		msg := t.free[n-1]
		t.free = t.free[:n-1]
		msg.Reset(msg.b, t.m.v0, t.m.cfg.SyncID, t.m.cfg.MaxLen)
		return msg
	}
	return NewMessage(make([]byte, 0, t.m.cfg.MaxLen), t.m.v0, t.m.cfg.SyncID, t.m.cfg.MaxLen)
}

// queueLocked is sb_queue_tail: queue a full (or aged) message, wake the
// sender at the wake-up rate or after the send delay, or drop it when the
// queue is at sync_qlen_max.
func (t *masterThread) queueLocked(msg *Message) {
	if !t.open || len(t.queue) >= t.m.sys.QlenMax {
		t.m.d.cnt[cntQueueFull].Add(1)
		return
	}
	if len(t.queue) == 0 {
		t.timer.Reset(sendDelay)
	}
	c := cap(t.queue)
	t.queue = append(t.queue, msg)
	if cap(t.queue) != c {
		t.qbase = t.queue[:0] // a new array: it starts here
	}
	t.delay++
	if t.delay == wakeupRate {
		t.kick()
	}
}

func (t *masterThread) kick() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// delayed is master_wakeup_work_handler.
func (t *masterThread) delayed() {
	t.mu.Lock()
	if len(t.queue) > 0 && t.delay < wakeupRate {
		t.delay = wakeupRate
		t.kick()
	}
	t.mu.Unlock()
}

// next is next_sync_buff: the oldest queued message, or the open one once
// it is flushTime old.
func (t *masterThread) next() *Message {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.queue) > 0 {
		msg := t.queue[0]
		t.queue[0] = nil
		t.queue = t.queue[1:]
		if len(t.queue) == 0 {
			t.delay = 0
			t.queue = t.qbase
		}
		return msg
	}
	if t.cur != nil && t.m.since()-t.first >= flushTime {
		msg := t.cur
		t.cur = nil
		return msg
	}
	return nil
}

// run is sync_thread_master.
func (t *masterThread) run() {
	tick := time.NewTicker(checkPeriod)
	defer tick.Stop()
	d := t.m.d
	for {
		msg := t.next()
		if msg == nil {
			select {
			case <-t.m.stop:
				return
			case <-t.wake:
			case <-tick.C:
			}
			continue
		}
		select {
		case <-t.m.stop:
			return
		default:
		}
		b := msg.Bytes()
		if _, err := t.out.Write(b); err != nil {
			d.cnt[cntSendErrors].Add(1)
			d.logf("sync master: sending %d bytes: %v", len(b), err)
		} else {
			d.cnt[cntMsgsSent].Add(1)
			d.cnt[cntBytesSent].Add(uint64(len(b)))
			d.cnt[cntConnsSent].Add(uint64(msg.Conns()))
		}
		t.recycle(msg)
	}
}

// recycle keeps a sent message's buffer for the next one (up to 64), so
// a master in steady state allocates nothing.
func (t *masterThread) recycle(msg *Message) {
	t.mu.Lock()
	if len(t.free) < 64 {
		t.free = append(t.free, msg)
	}
	t.mu.Unlock()
}
