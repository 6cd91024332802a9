package vrrp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/golvs/golvs/internal/ratelog"
)

// Follower is told the speaker's role: master (some instance is master)
// or not. The director's serving switch and the connection sync daemon
// follow it, as keepalived's lvs_sync_daemon follows its instance: the
// master forwards, answers ARP for the virtual addresses and sends sync;
// a backup forwards nothing and receives sync. SetRole is called from the
// speaker's loop and must not call back into the speaker.
type Follower interface {
	SetRole(master bool)
}

// FollowerFunc adapts a function to Follower.
type FollowerFunc func(master bool)

// SetRole calls f.
func (f FollowerFunc) SetRole(master bool) { f(master) }

// Options are a speaker's hooks. Zero values are fine.
type Options struct {
	// Logf reports state changes and problems (rate-limited); nil: quiet.
	Logf func(format string, args ...any)
	// Resume names instances that start as master at once, with no
	// election: they were master in the golvs this one took over from
	// (a graceful restart), which stopped without resigning (Handover).
	Resume []string
}

// Speaker runs a configuration's instances: one goroutine drives every
// state machine, one reader per interface socket feeds it decoded
// adverts, one sender paces gratuitous ARPs.
type Speaker struct {
	cfg  *Config
	logs *ratelog.Limiter

	mu        sync.Mutex // held while the loop handles an event; Status takes it
	insts     []*inst
	byIf      map[string][]*inst
	conns     map[string]*conn
	garps     map[string]*garper
	nl        *netlink.Handle
	followers []Follower
	master    bool
	opened    bool
	resume    []string
	handover  bool // stopping for a successor: no priority 0, followers left as they are

	drops  [NumReasons]atomic.Uint64 // refused before an instance was found
	rx     chan rxPacket
	ctl    chan func(time.Time)
	garpQ  chan garpJob
	garpOK atomic.Uint64
	garpEr atomic.Uint64
	wg     sync.WaitGroup
}

type inst struct {
	c      *Instance
	m      *machine
	conn   *conn
	group  []*inst // the other members of its sync group
	garpAt time.Time
	drops  [NumReasons]uint64
	msg    Message
	buf    []byte
	linkOK bool
}

type rxPacket struct {
	conn *conn
	a    Advert
	at   time.Time
}

type garpJob struct {
	addrs []VAddr
	dflt  string
	n     int
	gap   time.Duration
}

// New checks a configuration and makes a speaker; nothing is opened yet.
func New(c Config, o Options) (*Speaker, error) {
	cfg, err := c.Check()
	if err != nil {
		return nil, err
	}
	s := &Speaker{
		cfg:   cfg,
		logs:  ratelog.New(o.Logf, ratelog.Config{}),
		byIf:  map[string][]*inst{},
		conns: map[string]*conn{},
		garps: map[string]*garper{},
		rx:    make(chan rxPacket, 256),
		ctl:   make(chan func(time.Time)),
		garpQ: make(chan garpJob, 64),
	}
	s.resume = o.Resume
	names := map[string]*inst{}
	for i := range cfg.Instances {
		in := &inst{c: &cfg.Instances[i], linkOK: true}
		s.insts = append(s.insts, in)
		s.byIf[in.c.Interface] = append(s.byIf[in.c.Interface], in)
		names[in.c.Name] = in
	}
	for _, g := range cfg.Groups {
		for _, a := range g.Members {
			for _, b := range g.Members {
				if a != b {
					names[a].group = append(names[a].group, names[b])
				}
			}
		}
	}
	return s, nil
}

// Config returns the checked configuration the speaker runs.
func (s *Speaker) Config() *Config { return s.cfg }

// AddFollower registers a follower; call before Run.
func (s *Speaker) AddFollower(f Follower) { s.followers = append(s.followers, f) }

// Open opens the sockets (raw IP per VRRP interface, packet sockets for
// gratuitous ARPs) in the network namespace of the calling thread, and
// finds each instance's source address.
func (s *Speaker) Open() (err error) {
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()
	if s.nl, err = netlink.NewHandle(); err != nil {
		return fmt.Errorf("vrrp: netlink: %w", err)
	}
	for ifname, ins := range s.byIf {
		multicast := false
		for _, in := range ins {
			multicast = multicast || len(in.c.UnicastPeers) == 0
		}
		c, err := openConn(ifname, multicast)
		if err != nil {
			return err
		}
		s.conns[ifname] = c
		for _, in := range ins {
			in.conn = c
			src := in.c.UnicastSrc
			if !src.IsValid() {
				if src, err = primaryAddr(ifname); err != nil {
					return err
				}
			}
			in.m = newMachine(in.c, src)
			in.msg = Message{Version: uint8(in.c.Version), VRID: uint8(in.c.VRID), Interval: in.c.centis()}
			for _, a := range in.c.Addrs {
				in.msg.Addrs = append(in.msg.Addrs, a.Addr)
			}
			if in.c.AuthPass != "" {
				in.msg.AuthType, in.msg.Auth = AuthPass, PassAuth(in.c.AuthPass)
			}
			in.buf = make([]byte, 0, ipLen+in.msg.Len())
		}
	}
	for _, in := range s.insts {
		for _, a := range in.c.Owned() {
			dev := a.Dev
			if dev == "" {
				dev = in.c.Interface
			}
			if s.garps[dev] == nil {
				g, err := openGarper(dev)
				if err != nil {
					return err
				}
				s.garps[dev] = g
			}
		}
	}
	s.opened = true
	return nil
}

func (s *Speaker) closeAll() {
	for _, c := range s.conns {
		c.close()
	}
	for _, g := range s.garps {
		g.close()
	}
	if s.nl != nil {
		s.nl.Close()
		s.nl = nil
	}
}

func (s *Speaker) logf(format string, args ...any) { s.logs.Logf(format, args...) }

// Run drives the instances until ctx is done; then a master resigns
// (priority 0, so a backup takes over at once), followers are told
// backup, and the sockets close.
func (s *Speaker) Run(ctx context.Context) error {
	if !s.opened {
		return errors.New("vrrp: Run before Open")
	}
	for _, c := range s.conns {
		s.wg.Add(1)
		go s.reader(c)
	}
	garpDone := make(chan struct{})
	go s.garpLoop(garpDone)
	defer func() {
		close(s.garpQ)
		<-garpDone
		s.closeAll()
		s.wg.Wait()
	}()
	now := time.Now()
	s.mu.Lock()
	for _, in := range s.insts {
		in.linkOK = s.linkUp(in.c.Interface)
		if !in.linkOK {
			in.m.state = StateFault
			in.m.since = now
			s.logf("vrrp: (%s) %s is down: FAULT", in.c.Name, in.c.Interface)
			continue
		}
		if slices.Contains(s.resume, in.c.Name) {
			s.logf("vrrp: (%s) resuming as MASTER (taken over from the previous golvs)", in.c.Name)
			s.apply(now, in, in.m.toMaster(now))
			continue
		}
		s.apply(now, in, in.m.start(now))
	}
	s.updateRole()
	s.mu.Unlock()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	links := time.NewTicker(250 * time.Millisecond)
	defer links.Stop()
	for {
		s.mu.Lock()
		next := s.nextDue()
		s.mu.Unlock()
		if !next.IsZero() {
			d := time.Until(next)
			if d < 0 {
				d = 0
			}
			timer.Reset(d)
		}
		select {
		case <-ctx.Done():
			s.shutdown()
			return nil
		case p := <-s.rx:
			s.mu.Lock()
			s.onPacket(p)
			s.updateRole()
			s.mu.Unlock()
		case <-timer.C:
			s.mu.Lock()
			s.onTimer(time.Now())
			s.updateRole()
			s.mu.Unlock()
		case <-links.C:
			s.mu.Lock()
			s.checkLinks(time.Now())
			s.updateRole()
			s.mu.Unlock()
			s.logs.Flush()
		case f := <-s.ctl:
			s.mu.Lock()
			f(time.Now())
			s.updateRole()
			s.mu.Unlock()
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

func (s *Speaker) nextDue() time.Time {
	var t time.Time
	for _, in := range s.insts {
		for _, x := range []time.Time{in.m.next(), in.garpAt} {
			if !x.IsZero() && (t.IsZero() || x.Before(t)) {
				t = x
			}
		}
	}
	return t
}

func (s *Speaker) onTimer(now time.Time) {
	for _, in := range s.insts {
		if n := in.m.next(); !n.IsZero() && !now.Before(n) {
			if in.m.state == StateBackup && s.groupFaulted(in) {
				// keepalived's vrrp_sync_can_goto_master: not while a
				// member of the sync group is in FAULT.
				in.m.holdBackup(now)
				continue
			}
			s.apply(now, in, in.m.timer(now))
		}
		if !in.garpAt.IsZero() && !now.Before(in.garpAt) {
			in.garpAt = time.Time{}
			if in.m.state == StateMaster {
				s.garp(in, in.c.GARP.MasterRepeat)
			}
		}
	}
}

func (s *Speaker) groupFaulted(in *inst) bool {
	for _, o := range in.group {
		if o.m.state == StateFault {
			return true
		}
	}
	return false
}

func (s *Speaker) onPacket(p rxPacket) {
	var in *inst
	for _, x := range s.byIf[p.conn.ifname] {
		if int(p.a.VRID) == x.c.VRID {
			in = x
			break
		}
	}
	if in == nil {
		s.drops[DropVRID].Add(1)
		return
	}
	if p.a.Src == in.m.src {
		in.drops[DropOwn]++
		return
	}
	if err := in.c.accept(&p.a, in.m.masterAddr); err != nil {
		in.drops[ReasonOf(err)]++
		s.logf("vrrp: (%s) %v", in.c.Name, err)
		return
	}
	s.apply(p.at, in, in.m.receive(p.at, &p.a))
}

func (s *Speaker) checkLinks(now time.Time) {
	for _, in := range s.insts {
		up := s.linkUp(in.c.Interface)
		if up == in.linkOK {
			continue
		}
		in.linkOK = up
		if !up {
			s.logf("vrrp: (%s) %s went down: FAULT", in.c.Name, in.c.Interface)
		} else {
			s.logf("vrrp: (%s) %s came back", in.c.Name, in.c.Interface)
		}
		s.apply(now, in, in.m.fault(now, !up))
	}
}

func (s *Speaker) linkUp(ifname string) bool {
	if s.nl == nil {
		return linkUp(ifname)
	}
	l, err := s.nl.LinkByName(ifname)
	if err != nil {
		return false
	}
	a := l.Attrs()
	return a.Flags&net.FlagUp != 0 && a.RawFlags&0x10000 != 0 // IFF_LOWER_UP: carrier
}

// apply carries out a machine's effects, keeping its sync group together.
func (s *Speaker) apply(now time.Time, in *inst, e effects) {
	if e.changed {
		switch in.m.state {
		case StateMaster:
			s.logf("vrrp: (%s) entering MASTER state (priority %d)", in.c.Name, in.m.prio)
		case StateBackup:
			if in.m.masterAddr.IsValid() {
				s.logf("vrrp: (%s) entering BACKUP state (master %s, priority %d)", in.c.Name, in.m.masterAddr, in.m.masterPrio)
			} else {
				s.logf("vrrp: (%s) entering BACKUP state (no master heard yet)", in.c.Name)
			}
			in.garpAt = time.Time{}
		case StateFault:
			s.logf("vrrp: (%s) entering FAULT state", in.c.Name)
			in.garpAt = time.Time{}
		}
	}
	if e.send {
		s.send(in, e.prio)
	}
	if e.changed {
		target := in.m.state
		if target == StateFault {
			target = StateBackup
		}
		for _, o := range in.group {
			if o.m.state != target && o.m.state != StateFault && target != StateInit {
				s.apply(now, o, o.m.force(now, target))
			}
		}
		s.updateRole() // serving on before the gratuitous ARPs go out
	}
	if e.garp > 0 {
		s.garp(in, e.garp)
	}
	if e.garpLate {
		in.garpAt = now.Add(in.c.GARP.MasterDelay)
	}
}

func (s *Speaker) send(in *inst, prio uint8) {
	in.msg.Priority = prio
	dsts := in.c.UnicastPeers
	if len(dsts) == 0 {
		dsts = []netip.Addr{MulticastGroup}
	}
	for _, d := range dsts {
		if err := in.conn.send(&in.msg, in.m.src, d, in.buf); err != nil {
			s.logf("vrrp: (%s) sending to %s: %v", in.c.Name, d, err)
		}
	}
}

func (s *Speaker) garp(in *inst, n int) {
	owned := in.c.Owned()
	if n <= 0 || len(owned) == 0 {
		return
	}
	select {
	case s.garpQ <- garpJob{addrs: owned, dflt: in.c.Interface, n: n, gap: in.c.GARP.Interval}:
	default:
		s.logf("vrrp: (%s) gratuitous ARP queue full, a round skipped", in.c.Name)
	}
}

func (s *Speaker) garpLoop(done chan struct{}) {
	defer close(done)
	for j := range s.garpQ {
		for i := 0; i < j.n; i++ {
			for _, a := range j.addrs {
				dev := a.Dev
				if dev == "" {
					dev = j.dflt
				}
				g := s.garps[dev]
				if g == nil {
					continue
				}
				if err := g.send(a.Addr); err != nil {
					s.garpEr.Add(1)
					s.logf("vrrp: gratuitous ARP for %s on %s: %v", a.Addr, dev, err)
				} else {
					s.garpOK.Add(1)
				}
				if j.gap > 0 {
					time.Sleep(j.gap)
				}
			}
		}
	}
}

// updateRole tells the followers when the role changed.
func (s *Speaker) updateRole() {
	m := false
	for _, in := range s.insts {
		m = m || in.m.state == StateMaster
	}
	if m == s.master {
		return
	}
	s.master = m
	for _, f := range s.followers {
		f.SetRole(m)
	}
}

func (s *Speaker) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handover {
		s.logf("vrrp: stopping for the golvs that takes over: no priority 0, it resumes as master")
		return
	}
	now := time.Now()
	for _, in := range s.insts {
		if e := in.m.stop(now); e.send {
			s.send(in, 0)
			s.logf("vrrp: (%s) stopping: sent priority 0", in.c.Name)
		}
	}
	s.updateRole()
}

// reader decodes what one socket receives and hands it to the loop. A
// packet that does not decode is counted here and goes no further.
func (s *Speaker) reader(c *conn) {
	defer s.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, err := c.read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.logf("vrrp: reading on %s: %v", c.ifname, err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var p rxPacket
		if err := Decode(buf[:n], &p.a); err != nil {
			s.drops[ReasonOf(err)].Add(1)
			s.logf("vrrp: on %s: %v", c.ifname, err)
			continue
		}
		p.conn, p.at = c, time.Now()
		select {
		case s.rx <- p:
		default:
			s.drops[DropQueue].Add(1)
		}
	}
}

// do runs f in the loop and waits for it.
func (s *Speaker) do(ctx context.Context, f func(time.Time) error) error {
	errc := make(chan error, 1)
	select {
	case s.ctl <- func(now time.Time) { errc <- f(now) }:
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-errc
}

// SetPriority changes an instance's priority at run time ("" names the
// only instance): lowering a master's below its backup's hands the
// virtual addresses over; raising a backup's above the master's takes
// them (with preemption).
func (s *Speaker) SetPriority(ctx context.Context, name string, prio int) error {
	if prio < 1 || prio > 254 {
		return fmt.Errorf("%w: priority %d out of range (1..254; 255 is the address owner's, set in the configuration)", ErrConfig, prio)
	}
	return s.do(ctx, func(now time.Time) error {
		var found *inst
		for _, in := range s.insts {
			if in.c.Name == name || name == "" && len(s.insts) == 1 {
				found = in
			}
		}
		if found == nil {
			return fmt.Errorf("%w: no VRRP instance %q (instances: %s)", ErrConfig, name, s.names())
		}
		if found.m.prio == 255 {
			return fmt.Errorf("%w: instance %s is the address owner (priority 255); its priority is fixed", ErrConfig, found.c.Name)
		}
		s.logf("vrrp: (%s) priority %d -> %d", found.c.Name, found.m.prio, prio)
		s.apply(now, found, found.m.setPriority(now, uint8(prio)))
		return nil
	})
}

func (s *Speaker) names() string {
	var n []string
	for _, in := range s.insts {
		n = append(n, in.c.Name)
	}
	sort.Strings(n)
	return fmt.Sprint(n)
}

// Handover prepares the speaker to stop for a successor (a graceful
// restart): from now on the followers are told nothing more, and when
// Run ends it sends no priority 0, so the peers keep waiting for adverts
// (their Master_Down_Interval) while the successor resumes as master. It
// returns the instances in MASTER state, for the successor's Resume.
func (s *Speaker) Handover(ctx context.Context) ([]string, error) {
	var names []string
	err := s.do(ctx, func(time.Time) error {
		s.handover = true
		s.followers = nil
		for _, in := range s.insts {
			if in.m.state == StateMaster {
				names = append(names, in.c.Name)
			}
		}
		return nil
	})
	return names, err
}

// Master reports whether some instance is master.
func (s *Speaker) Master() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.master
}

// InstanceStatus is one instance as `golvs adm --vrrp` shows it.
type InstanceStatus struct {
	Name          string            `json:"name"`
	Interface     string            `json:"interface"`
	VRID          int               `json:"vrid"`
	Version       int               `json:"version"`
	State         string            `json:"state"`
	Since         time.Time         `json:"since"`
	Priority      int               `json:"priority"`
	Configured    int               `json:"configured_priority"`
	IntervalMs    int64             `json:"advert_int_ms"`
	Preempt       bool              `json:"preempt"`
	PreemptDelayS float64           `json:"preempt_delay_s,omitempty"`
	Source        string            `json:"source"`
	Master        string            `json:"master,omitempty"`
	MasterPrio    int               `json:"master_priority,omitempty"`
	Addrs         []string          `json:"addresses"`
	Excluded      []string          `json:"excluded_addresses,omitempty"`
	Unicast       []string          `json:"unicast_peers,omitempty"`
	Auth          string            `json:"auth,omitempty"`
	Group         string            `json:"sync_group,omitempty"`
	Sent          uint64            `json:"adverts_sent"`
	Received      uint64            `json:"adverts_received"`
	BecameMaster  uint64            `json:"became_master"`
	PrioZeroSent  uint64            `json:"priority0_sent"`
	PrioZeroRecv  uint64            `json:"priority0_received"`
	Drops         map[string]uint64 `json:"drops,omitempty"`
}

// Status is the speaker as the control plane reports it.
type Status struct {
	Master    bool              `json:"master"`
	Instances []InstanceStatus  `json:"instances"`
	Drops     map[string]uint64 `json:"drops,omitempty"` // before an instance was found
	GARPSent  uint64            `json:"garp_sent"`
	GARPError uint64            `json:"garp_errors,omitempty"`
}

// Status returns the current state and counters.
func (s *Speaker) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Master: s.master, GARPSent: s.garpOK.Load(), GARPError: s.garpEr.Load()}
	group := map[string]string{}
	for _, g := range s.cfg.Groups {
		for _, m := range g.Members {
			group[m] = g.Name
		}
	}
	for r := DropShort; r < NumReasons; r++ {
		if v := s.drops[r].Load(); v != 0 {
			if st.Drops == nil {
				st.Drops = map[string]uint64{}
			}
			st.Drops[r.String()] = v
		}
	}
	for _, in := range s.insts {
		is := InstanceStatus{
			Name: in.c.Name, Interface: in.c.Interface, VRID: in.c.VRID, Version: in.c.Version,
			Configured: in.c.Priority, IntervalMs: in.c.Interval.Milliseconds(),
			Preempt: !in.c.NoPreempt, PreemptDelayS: in.c.PreemptDelay.Seconds(), Group: group[in.c.Name],
			State: StateInit.String(), Priority: in.c.Priority,
		}
		if in.c.AuthPass != "" {
			is.Auth = "PASS"
		}
		for _, a := range in.c.Addrs {
			is.Addrs = append(is.Addrs, a.String())
		}
		for _, a := range in.c.Excluded {
			is.Excluded = append(is.Excluded, a.String())
		}
		for _, p := range in.c.UnicastPeers {
			is.Unicast = append(is.Unicast, p.String())
		}
		if m := in.m; m != nil {
			is.State, is.Since, is.Priority = m.state.String(), m.since, int(m.prio)
			is.Source = m.src.String()
			if m.masterAddr.IsValid() && m.state != StateFault {
				is.Master, is.MasterPrio = m.masterAddr.String(), int(m.masterPrio)
			}
			is.Sent, is.Received, is.BecameMaster = m.sent, m.received, m.becameMaster
			is.PrioZeroSent, is.PrioZeroRecv = m.prioZeroSent, m.prioZeroRecv
		}
		for r := DropShort; r < NumReasons; r++ {
			if in.drops[r] != 0 {
				if is.Drops == nil {
					is.Drops = map[string]uint64{}
				}
				is.Drops[r.String()] = in.drops[r]
			}
		}
		st.Instances = append(st.Instances, is)
	}
	return st
}
