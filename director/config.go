package director

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/sched"
)

// The director's configuration is one Model: the services with their real
// servers, the mark rules and the timeouts. The control plane computes a
// new Model and hands it to Apply, which validates all of it, then carries
// it out in one step that cannot fail half-way and publishes it with one
// snapshot swap. The published snapshot holds the Model it was built from,
// so there is one source of truth: what the data path runs is what the
// control plane lists.
//
// Runtime objects keep their identity across models. A service or real
// server present before and after a change is the same object (its
// scheduler state, counters and connections untouched); one that leaves
// goes to the trash, as in IPVS (spec §4.6): its connections keep pointing
// at it, their packets are dropped while it is gone (expire_nodest_conn 0),
// and adding it back revives the same object, so they carry on.

// Timeouts are the three ipvsadm --set timeouts, in seconds.
type Timeouts struct{ TCP, TCPFin, UDP uint32 }

// Model is the whole configuration of the director.
type Model struct {
	// Services in creation order, each with its dests in kernel list
	// order (newest first).
	Services []ipvs.ServiceConfig
	// Marks are the firewall-mark classification rules, in order.
	Marks    []ipvs.MarkRule
	Timeouts Timeouts
}

// Clone returns a deep copy.
func (m Model) Clone() Model {
	n := Model{Timeouts: m.Timeouts, Services: make([]ipvs.ServiceConfig, len(m.Services)), Marks: make([]ipvs.MarkRule, len(m.Marks))}
	for i, s := range m.Services {
		n.Services[i] = s
		n.Services[i].Dests = slices.Clone(s.Dests)
	}
	for i, r := range m.Marks {
		n.Marks[i] = r
		n.Marks[i].Ports = slices.Clone(r.Ports)
	}
	return n
}

// equal reports whether two models are the same configuration.
func (m *Model) equal(o *Model) bool {
	if m.Timeouts != o.Timeouts || len(m.Services) != len(o.Services) ||
		!slices.EqualFunc(m.Marks, o.Marks, ipvs.MarkRule.Equal) {
		return false
	}
	for i := range m.Services {
		a, b := &m.Services[i], &o.Services[i]
		if a.ServiceKey != b.ServiceKey || a.Sched != b.Sched || a.Flags != b.Flags || a.Timeout != b.Timeout ||
			a.Netmask != b.Netmask || a.PE != b.PE || !slices.Equal(a.Dests, b.Dests) {
			return false
		}
	}
	return true
}

// Trash limits (IP_VS_DEST_TRASH_PERIOD): a removed dest is freed once no
// connection has used it for trashPeriod, and at most maxTrash are kept
// (the oldest unused go first; evictions are counted).
const (
	trashPeriod = 120 * time.Second
	maxTrash    = 4096
)

// svcRT is the runtime of one service that outlives snapshots: its
// scheduler instance, stats and dests keep their identity across edits.
type svcRT struct {
	cfg   ipvs.ServiceConfig // Dests nil
	sched sched.Scheduler
	stats *ipvs.Stats
	dests []*ipvs.Dest // kernel list order: newest first
	trash []*trashed   // dests removed from this service, kept for a re-add
}

// trashed is a dest in the trash; lastRef is when a connection last used
// it (or when it was removed).
type trashed struct {
	d       *ipvs.Dest
	lastRef time.Time
}

// config is the director's mutable configuration, guarded by mu; every
// change ends with publishLocked, which builds and swaps a new snapshot.
type config struct {
	mu      sync.Mutex
	svcs    []*svcRT // creation order
	trash   []*svcRT // removed services that still hold trashed dests, oldest first
	gen     uint64
	ver     uint64 // counts every change of the fields above (Update's check)
	model   Model
	evicted uint64 // trashed dests freed early because the trash was full
}

// svcID is a service's identity as the kernel looks it up: fwmark
// services by family and mark, others by protocol, address and port.
type svcID struct {
	proto uint8
	addr  netip.Addr
	port  uint16
	mark  uint32
	v6    bool
}

func idOf(k ipvs.ServiceKey) svcID {
	if k.FWMark != 0 {
		return svcID{mark: k.FWMark, v6: k.V6}
	}
	return svcID{proto: k.Proto, addr: k.Addr, port: k.Port}
}

func (c *config) find(k ipvs.ServiceKey) (int, *svcRT) {
	id := idOf(k)
	for i, s := range c.svcs {
		if idOf(s.cfg.ServiceKey) == id {
			return i, s
		}
	}
	return -1, nil
}

func (s *svcRT) view() *sched.Service {
	return &sched.Service{Key: s.cfg.ServiceKey, Flags: s.cfg.Flags, Dests: append([]*ipvs.Dest(nil), s.dests...)}
}

func (s *svcRT) findDest(a netip.Addr, port uint16) (int, *ipvs.Dest) {
	for i, d := range s.dests {
		if d.Addr == a && d.Port == port {
			return i, d
		}
	}
	return -1, nil
}

// takeTrashed takes a dest out of the service's trash.
func (s *svcRT) takeTrashed(a netip.Addr, port uint16) *ipvs.Dest {
	for i, t := range s.trash {
		if t.d.Addr == a && t.d.Port == port {
			s.trash = slices.Delete(s.trash, i, i+1)
			return t.d
		}
	}
	return nil
}

func (s *svcRT) peekTrashed(a netip.Addr, port uint16) *ipvs.Dest {
	for _, t := range s.trash {
		if t.d.Addr == a && t.d.Port == port {
			return t.d
		}
	}
	return nil
}

// checkService validates what the data path relies on.
func checkService(c *ipvs.ServiceConfig) error {
	if c.FWMark == 0 {
		if !c.Addr.Is4() && !c.Addr.Is6() || c.Addr.Is4In6() || c.Addr.Zone() != "" {
			return fmt.Errorf("director: service %s: the VIP must be an IPv4 or IPv6 address (not v4-mapped, without a zone)", c.ServiceKey)
		}
		if c.Proto != ipvs.ProtoTCP && c.Proto != ipvs.ProtoUDP {
			return fmt.Errorf("director: service %s: protocol %s is not supported (TCP and UDP are)", c.ServiceKey, ipvs.ProtoName(c.Proto))
		}
		if c.Port == 0 && !c.Persistent() {
			return fmt.Errorf("director: service %s: Zero port specified for non-persistent service", c.ServiceKey)
		}
	}
	// -M for IPv6 is a prefix length, 1..128 (0: 128, ipvsadm's default);
	// the kernel refuses the rest with EINVAL (spec §4.1).
	if c.IsV6() && c.Persistent() && c.Netmask > 128 {
		return fmt.Errorf("director: service %s: %s (IPv6 prefix length %d outside 1..128)", c.ServiceKey, ipvs.EINVALText, c.Netmask)
	}
	if c.Sched == "" {
		c.Sched = ipvs.DefaultScheduler
	}
	return nil
}

func checkDest(sem ipvs.Semantics, svc *ipvs.ServiceConfig, d *ipvs.DestConfig) error {
	if d.Addr.Is6() {
		// The kernel's ip_vs_new_dest: ::, multicast, v4-mapped and
		// link-local are refused (EINVAL); so is loopback here, as for
		// IPv4 (golvs forwards on the wire only).
		if err := ipvs.CheckDestAddr(d.Addr, nil); err != nil {
			return fmt.Errorf("director: real server %s: %w", d.Addr, err)
		}
		if d.Addr.IsLoopback() || d.Addr.Zone() != "" {
			return fmt.Errorf("director: real server %s: %s (golvs forwards only to unicast addresses on the wire)", d.Addr, ipvs.EINVALText)
		}
	} else if !d.Addr.Is4() {
		return fmt.Errorf("director: real server %s: %s (no address)", d.Addr, ipvs.EINVALText)
	}
	if !d.Addr.IsGlobalUnicast() && !d.Addr.IsPrivate() && d.Addr.Is4() {
		if d.Addr.IsUnspecified() || d.Addr.IsMulticast() || d.Addr.IsLoopback() {
			return fmt.Errorf("director: real server %s: Invalid operation.  Possibly wrong module version, address not unicast, ...", d.Addr)
		}
	}
	// Only a tunnel dest may be of another family than its service (the
	// kernel's ip_vs_add_dest: EINVAL otherwise; spec §5.3, §6.8).
	if d.Addr.Is6() != svc.IsV6() && d.Method != ipvs.MethodTunnel {
		return fmt.Errorf("director: real server %s: %s (a real server of another address family than its service %s needs the tunnel method, -i)", d.AddrPort(), ipvs.EINVALText, svc.ServiceKey)
	}
	if err := ipvs.CheckWeight(int64(d.Weight), ipvs.MaxWeight); err != nil {
		return err
	}
	if err := sem.CheckDestThresholds(d.UThreshold, d.LThreshold); err != nil {
		return err
	}
	switch d.Method {
	case ipvs.MethodMasq:
	case ipvs.MethodRoute, ipvs.MethodTunnel, ipvs.MethodFullNAT:
		if err := checkModeDest(svc, d); err != nil { // modes.go
			return err
		}
	default:
		return fmt.Errorf("director: real server %s: forwarding method %s is not supported yet (NAT, -m, is)", d.AddrPort(), d.Method)
	}
	return nil
}

// CheckService reports whether the data plane can serve a service
// configuration, without changing anything: the control plane calls it
// for every command of a restore, to name the line of a mistake.
func (dr *Director) CheckService(c ipvs.ServiceConfig) error {
	if err := checkService(&c); err != nil {
		return err
	}
	if c.FWMark == 0 {
		if err := dr.checkVIPNotLocal(c.Addr); err != nil {
			return err
		}
	}
	if err := sched.Check(c.Sched); err != nil {
		return fmt.Errorf("%w: %v", ipvs.ErrNoScheduler, err)
	}
	return nil
}

// CheckDest reports whether the data plane can serve a real server of a
// service, without changing anything.
func (dr *Director) CheckDest(svc ipvs.ServiceConfig, d ipvs.DestConfig) error {
	if err := checkDest(dr.c.Semantics, &svc, &d); err != nil {
		return err
	}
	return dr.checkDestHost(&svc, &d)
}

// Model returns a copy of the configuration the data path runs.
func (dr *Director) Model() Model { return dr.snap.Load().Model.Clone() }

// svcPlan is what Apply will do to one service of the new model.
type svcPlan struct {
	rt       *svcRT
	fresh    bool // a new runtime (not live before)
	fromBin  bool // revived from the service trash
	cfg      ipvs.ServiceConfig
	newSched sched.Scheduler // non-nil: bound with Init
	dests    []*ipvs.Dest    // the final list, kernel order
	cfgs     []ipvs.DestConfig
	join     []bool // per final dest: new or revived
	changed  []bool // per final dest: kept, with a new configuration
	del      []*ipvs.Dest
	reorder  bool // kept dests changed order: the scheduler is re-bound
}

// errModel wraps the ways a model can be malformed.
var errModel = errors.New("director: bad model")

// Apply makes m the director's configuration: it validates every service
// and real server that is new or changed (an error leaves everything as
// it was), then carries the change out in one step that cannot fail and
// publishes it with one snapshot swap. Services and real servers that
// stay keep their runtime state; those that leave go to the trash, and
// those that come back are revived from it. New real servers are
// published with their next hops resolved (waiting up to a second for
// the kernel's ARP), so that their first SYN finds them.
func (dr *Director) Apply(m Model) error {
	m = m.Clone()
	return dr.Update(func(x *Model) error {
		*x = m.Clone()
		return nil
	})
}

// prepareLocked validates m against the running configuration and plans
// the change; it changes nothing visible.
func (dr *Director) prepareLocked(m *Model) ([]*svcPlan, []*svcRT, error) {
	seen := map[svcID]bool{}
	plans := make([]*svcPlan, 0, len(m.Services))
	keep := map[*svcRT]bool{}
	for i := range m.Services {
		sc := m.Services[i]
		c := &sc
		id := idOf(c.ServiceKey)
		if seen[id] {
			return nil, nil, fmt.Errorf("%w: service %s listed twice", errModel, c.ServiceKey)
		}
		seen[id] = true
		dests := c.Dests
		c.Dests = nil
		if err := checkService(c); err != nil { // also defaults the scheduler
			return nil, nil, err
		}
		p := &svcPlan{cfg: *c}
		_, p.rt = dr.cfg.find(c.ServiceKey)
		if p.rt == nil {
			for _, t := range dr.cfg.trash {
				if idOf(t.cfg.ServiceKey) == id {
					p.rt, p.fromBin = t, true
				}
			}
			if p.rt == nil {
				p.rt, p.fresh = &svcRT{stats: new(ipvs.Stats)}, true
			}
		}
		keep[p.rt] = true
		live := !p.fresh && !p.fromBin
		if c.FWMark == 0 && !live {
			if err := dr.checkVIPNotLocal(c.Addr); err != nil {
				return nil, nil, err
			}
		}
		if !live || c.Sched != p.rt.cfg.Sched {
			s, err := sched.NewFor(c.Sched, dr.c.Semantics)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: %v", ipvs.ErrNoScheduler, err)
			}
			p.newSched = s
		}
		if err := dr.planDests(p, dests, live); err != nil {
			return nil, nil, err
		}
		// The one way a scheduler refuses a list: mh with more dests than
		// its table has slots.
		s := p.newSched
		if s == nil {
			s = p.rt.sched
		}
		if ts, ok := s.(interface{ TableSize() int }); ok && len(p.dests) > ts.TableSize() {
			return nil, nil, fmt.Errorf("director: service %s: %d real servers, more than the %d slots of the mh table", c.ServiceKey, len(p.dests), ts.TableSize())
		}
		plans = append(plans, p)
	}
	var gone []*svcRT
	for _, rt := range dr.cfg.svcs {
		if !keep[rt] {
			gone = append(gone, rt)
		}
	}
	return plans, gone, nil
}

// planDests maps the model's dests of one service to runtime objects: the
// live one, a trashed one to revive, or a new one; and checks every dest
// that is new or changed.
func (dr *Director) planDests(p *svcPlan, dests []ipvs.DestConfig, live bool) error {
	type ak struct {
		a netip.Addr
		p uint16
	}
	seen := map[ak]bool{}
	kept := map[*ipvs.Dest]bool{}
	for _, dc := range dests {
		if seen[ak{dc.Addr, dc.Port}] {
			return fmt.Errorf("%w: service %s: real server %s listed twice", errModel, p.cfg.ServiceKey, dc.AddrPort())
		}
		seen[ak{dc.Addr, dc.Port}] = true
		var d *ipvs.Dest
		join, changed := false, false
		if live {
			_, d = p.rt.findDest(dc.Addr, dc.Port)
		}
		if d != nil {
			kept[d] = true
			changed = d.Config() != dc
		} else {
			join = true
			if d = p.rt.peekTrashed(dc.Addr, dc.Port); d == nil {
				d = dr.c.Semantics.NewDest(p.cfg.ServiceKey, dc)
			}
		}
		if join || changed {
			if err := checkDest(dr.c.Semantics, &p.cfg, &dc); err != nil {
				return err
			}
			if err := dr.checkDestHost(&p.cfg, &dc); err != nil {
				return err
			}
		}
		p.dests = append(p.dests, d)
		p.cfgs = append(p.cfgs, dc)
		p.join = append(p.join, join)
		p.changed = append(p.changed, changed)
	}
	if !live {
		return nil
	}
	for _, d := range p.rt.dests {
		if !kept[d] {
			p.del = append(p.del, d)
		}
	}
	// The kernel's list only ever gains dests at its head: the new list
	// must be the joining dests, then the kept ones in their old order.
	// Anything else (a dest deleted and re-added in one batch) re-binds
	// the scheduler to the final list.
	i := 0
	for i < len(p.dests) && p.join[i] {
		i++
	}
	var oldKept []*ipvs.Dest
	for _, d := range p.rt.dests {
		if kept[d] {
			oldKept = append(oldKept, d)
		}
	}
	p.reorder = !slices.Equal(p.dests[i:], oldKept)
	return nil
}

// commitLocked carries out a prepared change. Nothing in it can fail: a
// scheduler callback error (which validation rules out) is logged, as the
// kernel ignores its add_dest result.
func (dr *Director) commitLocked(m *Model, plans []*svcPlan, gone []*svcRT) {
	now := time.Now()
	for _, rt := range gone {
		for _, d := range rt.dests {
			d.Unlink()
			rt.trash = append(rt.trash, &trashed{d, now})
		}
		rt.dests = nil
		if len(rt.trash) > 0 {
			dr.cfg.trash = append(dr.cfg.trash, rt)
		}
	}
	svcs := make([]*svcRT, 0, len(plans))
	added := false
	for _, p := range plans {
		rt := p.rt
		if p.fromBin {
			dr.cfg.trash = slices.DeleteFunc(dr.cfg.trash, func(t *svcRT) bool { return t == rt })
			dr.zeroStats(rt.stats) // a new service in IPVS's eyes
		}
		rt.cfg = p.cfg
		for _, d := range p.del {
			d.Unlink()
			rt.trash = append(rt.trash, &trashed{d, now})
		}
		for i, d := range p.dests {
			switch {
			case p.join[i]:
				if rt.takeTrashed(d.Addr, d.Port) != nil {
					reviveDest(d, p.cfgs[i])
				} else {
					d.Update(p.cfgs[i])
				}
				if d.SvcStats != rt.stats { // a new dest, not yet published
					d.SvcStats = rt.stats
				}
				added = true
			case p.changed[i]:
				d.Update(p.cfgs[i])
			}
		}
		old := rt.dests
		rt.dests = p.dests
		dr.rebindLocked(p, old)
		svcs = append(svcs, rt)
	}
	dr.cfg.svcs = svcs
	if m.Timeouts != dr.cfg.model.Timeouts {
		// 0 keeps a value, as ipvsadm --set does.
		dr.CT.SetTimeouts(m.Timeouts.TCP, m.Timeouts.TCPFin, m.Timeouts.UDP)
		m.Timeouts.TCP, m.Timeouts.TCPFin, m.Timeouts.UDP = dr.CT.Timeouts()
	}
	for i := range m.Services {
		m.Services[i].Sched = plans[i].cfg.Sched
	}
	dr.cfg.model = *m
	dr.purgeTrashLocked(now)
	if added {
		dr.kickResolver()
	}
	dr.publishLocked()
}

// rebindLocked tells a service's scheduler about its new dest list with
// the kernel's callbacks, in the order ipvsadm's commands would make them:
// a new service's scheduler is initialised empty and each dest is added
// (oldest first: -A, then -a for each); a scheduler replaced by -E is
// initialised with the dests the service keeps; then del_dest, add_dest
// and upd_dest for each dest concerned, each with the list as it stands
// after that change. (wrr, for one, ends in a different state when bound
// to a whole list than when the same dests are added one by one.)
func (dr *Director) rebindLocked(p *svcPlan, old []*ipvs.Dest) {
	rt := p.rt
	logErr := func(err error) {
		if err != nil {
			dr.logf("service %s: scheduler %s: %v", rt.cfg.ServiceKey, rt.cfg.Sched, err)
		}
	}
	if p.newSched != nil {
		rt.sched = p.newSched
	}
	if p.reorder {
		logErr(rt.sched.Init(rt.view()))
		return
	}
	view := func(l []*ipvs.Dest) *sched.Service {
		return &sched.Service{Key: rt.cfg.ServiceKey, Flags: rt.cfg.Flags, Dests: slices.Clone(l)}
	}
	cur := slices.Clone(old)
	if p.newSched != nil {
		cur = slices.DeleteFunc(cur, func(x *ipvs.Dest) bool { return slices.Contains(p.del, x) })
		logErr(rt.sched.Init(view(cur)))
	} else {
		for _, d := range p.del {
			cur = slices.DeleteFunc(cur, func(x *ipvs.Dest) bool { return x == d })
			logErr(rt.sched.DelDest(view(cur), d))
		}
	}
	for i := len(p.dests) - 1; i >= 0; i-- {
		if p.join[i] {
			cur = slices.Insert(cur, 0, p.dests[i])
			logErr(rt.sched.AddDest(view(cur), p.dests[i]))
		}
	}
	for i, d := range p.dests {
		if p.changed[i] {
			logErr(rt.sched.UpdDest(view(cur), d))
		}
	}
}

// reviveDest brings a trashed dest back with a new configuration: the
// kernel's add path (last_weight = weight, even 0; spec §4.6), and the
// dest keeps its counters.
func reviveDest(d *ipvs.Dest, c ipvs.DestConfig) { d.Revive(c) }

// zeroStats zeroes a counter set and its rate estimator.
func (dr *Director) zeroStats(st *ipvs.Stats) {
	dr.est.mu.Lock()
	defer dr.est.mu.Unlock()
	st.Zero()
	if x := dr.est.est[st]; x != nil {
		x.Reset(st.Snapshot())
	}
}

// purgeTrashLocked frees trashed dests no connection has used for
// trashPeriod, drops trashed services left with none, and keeps at most
// maxTrash dests (evicting the longest unused).
func (dr *Director) purgeTrashLocked(now time.Time) {
	var all []*trashed
	prune := func(rt *svcRT) {
		rt.trash = slices.DeleteFunc(rt.trash, func(t *trashed) bool {
			if t.d.ActiveConns()+t.d.InactConns()+t.d.PersistConns() > 0 {
				t.lastRef = now
				return false
			}
			return now.Sub(t.lastRef) >= trashPeriod
		})
		all = append(all, rt.trash...)
	}
	for _, rt := range dr.cfg.svcs {
		prune(rt)
	}
	for _, rt := range dr.cfg.trash {
		prune(rt)
	}
	if over := len(all) - maxTrash; over > 0 {
		slices.SortStableFunc(all, func(a, b *trashed) int { return a.lastRef.Compare(b.lastRef) })
		drop := map[*trashed]bool{}
		for _, t := range all[:over] {
			drop[t] = true
		}
		for _, rt := range append(slices.Clone(dr.cfg.svcs), dr.cfg.trash...) {
			rt.trash = slices.DeleteFunc(rt.trash, func(t *trashed) bool { return drop[t] })
		}
		dr.cfg.evicted += uint64(over)
	}
	dr.cfg.trash = slices.DeleteFunc(dr.cfg.trash, func(rt *svcRT) bool { return len(rt.trash) == 0 })
}

// TrashStats says what the trash holds: removed services and real servers
// kept for a re-add, and how many were freed early because it was full.
type TrashStats struct {
	Services, Dests int
	Evicted         uint64
}

// Trash returns the trash's contents.
func (dr *Director) Trash() TrashStats {
	dr.cfg.mu.Lock()
	defer dr.cfg.mu.Unlock()
	st := TrashStats{Services: len(dr.cfg.trash), Evicted: dr.cfg.evicted}
	for _, rt := range dr.cfg.svcs {
		st.Dests += len(rt.trash)
	}
	for _, rt := range dr.cfg.trash {
		st.Dests += len(rt.trash)
	}
	return st
}

// The single-command forms below edit a copy of the model and Apply it,
// with ipvsadm's errors for a missing or duplicate service or real server.

// AddService adds a virtual service (ipvsadm -A), with any dests it lists.
func (dr *Director) AddService(c ipvs.ServiceConfig) error {
	return dr.Update(func(m *Model) error {
		if svcIndex(m, c.ServiceKey) >= 0 {
			return fmt.Errorf("%s: %w", c.ServiceKey, ipvs.ErrServiceExists)
		}
		ds := c.Dests
		c.Dests = nil
		for _, d := range ds {
			c.Dests = slices.Insert(c.Dests, 0, d) // each goes to the head
		}
		m.Services = append(m.Services, c)
		return nil
	})
}

// EditService changes a service's scheduler, flags and persistence
// (ipvsadm -E). The same scheduler keeps its state; a different one is
// bound afresh (spec §1.5).
func (dr *Director) EditService(c ipvs.ServiceConfig) error {
	return dr.Update(func(m *Model) error {
		i := svcIndex(m, c.ServiceKey)
		if i < 0 {
			return fmt.Errorf("%s: %w", c.ServiceKey, ipvs.ErrNoService)
		}
		c.Dests = m.Services[i].Dests
		m.Services[i] = c
		return nil
	})
}

// DelService removes a service (ipvsadm -D). Its dests go to the trash:
// their conns live on until they expire, their packets dropped, and come
// back to life if the service and dest are added again.
func (dr *Director) DelService(k ipvs.ServiceKey) error {
	return dr.Update(func(m *Model) error {
		i := svcIndex(m, k)
		if i < 0 {
			return fmt.Errorf("%s: %w", k, ipvs.ErrNoService)
		}
		m.Services = slices.Delete(m.Services, i, i+1)
		return nil
	})
}

// Clear removes every service and mark rule (ipvsadm -C; golvs's mark
// rules exist only to feed its fwmark services).
func (dr *Director) Clear() {
	_ = dr.Update(func(m *Model) error {
		m.Services, m.Marks = nil, nil
		return nil
	})
}

// AddDest adds a real server to a service (ipvsadm -a); it goes to the
// head of the list, as in the kernel.
func (dr *Director) AddDest(k ipvs.ServiceKey, d ipvs.DestConfig) error {
	return dr.Update(func(m *Model) error {
		i := svcIndex(m, k)
		if i < 0 {
			return fmt.Errorf("%s: %w", k, ipvs.ErrSvcNotDefined)
		}
		if destIndex(&m.Services[i], d.Addr, d.Port) >= 0 {
			return fmt.Errorf("%s: %w", d.AddrPort(), ipvs.ErrDestExists)
		}
		m.Services[i].Dests = slices.Insert(m.Services[i].Dests, 0, d)
		return nil
	})
}

// EditDest changes a real server in place (ipvsadm -e).
func (dr *Director) EditDest(k ipvs.ServiceKey, d ipvs.DestConfig) error {
	return dr.Update(func(m *Model) error {
		i := svcIndex(m, k)
		if i < 0 {
			return fmt.Errorf("%s: %w", k, ipvs.ErrSvcNotDefined)
		}
		j := destIndex(&m.Services[i], d.Addr, d.Port)
		if j < 0 {
			return fmt.Errorf("%s: %w", d.AddrPort(), ipvs.ErrNoDest)
		}
		m.Services[i].Dests[j] = d
		return nil
	})
}

// DelDest removes a real server (ipvsadm -d). It goes to the trash, where
// it keeps its counters for a re-add; its conns drop their packets
// (expire_nodest_conn 0) until they time out or it comes back.
func (dr *Director) DelDest(k ipvs.ServiceKey, a netip.Addr, port uint16) error {
	return dr.Update(func(m *Model) error {
		i := svcIndex(m, k)
		if i < 0 {
			return fmt.Errorf("%s: %w", k, ipvs.ErrSvcNotDefined)
		}
		j := destIndex(&m.Services[i], a, port)
		if j < 0 {
			return fmt.Errorf("%s: %w", netip.AddrPortFrom(a, port), ipvs.ErrNoDest)
		}
		m.Services[i].Dests = slices.Delete(m.Services[i].Dests, j, j+1)
		return nil
	})
}

// SetMarks replaces the firewall-mark classification rules (golvs's
// stand-in for the iptables MARK rules that feed IPVS fwmark services).
func (dr *Director) SetMarks(rules []ipvs.MarkRule) {
	_ = dr.Update(func(m *Model) error {
		m.Marks = slices.Clone(rules)
		return nil
	})
}

// Update applies fn to a copy of the running model and Applies the result
// (when fn returns nil). The read, fn and the Apply happen under the
// configuration lock, so concurrent Updates never lose each other's
// changes; fn must not call back into the director's configuration. fn
// may run twice: when new real servers' next hops had to be waited for
// (outside the lock) and the configuration changed meanwhile, fn runs
// again on the new model.
func (dr *Director) Update(fn func(m *Model) error) error {
	for attempt := 0; ; attempt++ {
		dr.cfg.mu.Lock()
		m := dr.cfg.model.Clone()
		if err := fn(&m); err != nil {
			dr.cfg.mu.Unlock()
			return err
		}
		m = m.Clone() // fn may have kept references
		if m.equal(&dr.cfg.model) {
			dr.cfg.mu.Unlock()
			return nil // nothing to do: not even a new snapshot
		}
		plans, gone, err := dr.prepareLocked(&m)
		if err != nil {
			dr.cfg.mu.Unlock()
			return err
		}
		var fresh []*ipvs.Dest
		for _, p := range plans {
			for i, d := range p.dests {
				if p.join[i] && d.Next.Load() == nil {
					fresh = append(fresh, d)
				}
			}
		}
		if len(fresh) > 0 && attempt == 0 && dr.neigh != nil {
			ver := dr.cfg.ver
			dr.cfg.mu.Unlock()
			addrs := make([]netip.Addr, len(fresh))
			for i, d := range fresh {
				addrs[i] = d.Addr
			}
			hops := dr.resolveNew(addrs) // may wait: not under the lock
			dr.cfg.mu.Lock()
			if dr.cfg.ver != ver {
				dr.cfg.mu.Unlock()
				continue // changed meanwhile: plan again (no waiting this time)
			}
			for i, d := range fresh {
				if hops[i] != nil && d.Next.Load() == nil {
					d.Next.Store(hops[i])
				}
			}
		}
		dr.commitLocked(&m, plans, gone)
		dr.cfg.mu.Unlock()
		return nil
	}
}

func svcIndex(m *Model, k ipvs.ServiceKey) int {
	id := idOf(k)
	for i := range m.Services {
		if idOf(m.Services[i].ServiceKey) == id {
			return i
		}
	}
	return -1
}

func destIndex(s *ipvs.ServiceConfig, a netip.Addr, port uint16) int {
	for i, d := range s.Dests {
		if d.Addr == a && d.Port == port {
			return i
		}
	}
	return -1
}

// publishLocked builds a new snapshot from the configuration and swaps it
// in; it also re-filters the rings.
func (dr *Director) publishLocked() {
	dr.cfg.gen++
	dr.cfg.ver++
	marks := dr.cfg.model.Marks
	s := &Snapshot{
		Gen:   dr.cfg.gen,
		vips:  make(map[[4]byte]bool),
		fwm:   make(map[uint32]*Service),
		marks: compileMarks(marks),
		Marks: marks,
		Model: dr.cfg.model,
	}
	s.vips6, s.fwm6, s.marks6 = map[[16]byte]bool{}, map[uint32]*Service{}, compileMarks6(marks)
	services, port0 := map[svcKey]*Service{}, map[svcKey]*Service{}
	services6, port06 := map[svcKey6]*Service{}, map[svcKey6]*Service{}
	for _, rt := range dr.cfg.svcs {
		sv := &Service{Name: rt.cfg.ServiceKey.String() + " " + rt.cfg.Sched, Config: rt.cfg, Sched: rt.sched, View: rt.view(), Stats: rt.stats, Dests: append([]*ipvs.Dest(nil), rt.dests...)}
		s.List = append(s.List, sv)
		if rt.cfg.FWMark != 0 {
			if rt.cfg.V6 {
				s.fwm6[rt.cfg.FWMark] = sv
			} else {
				s.fwm[rt.cfg.FWMark] = sv
			}
			continue
		}
		if rt.cfg.Addr.Is6() {
			k := svcKey6{rt.cfg.Addr.As16(), rt.cfg.Port, rt.cfg.Proto}
			if rt.cfg.Port == 0 {
				port06[k] = sv
			} else {
				services6[k] = sv
			}
			s.vips6[k.addr] = true
			continue
		}
		k := svcKey{rt.cfg.Addr.As4(), rt.cfg.Port, rt.cfg.Proto}
		if rt.cfg.Port == 0 {
			port0[k] = sv
		} else {
			services[k] = sv
		}
		s.vips[k.addr] = true
	}
	s.services, s.port0 = newSvcTable(services), newSvcTable(port0)
	s.services6, s.port0_6 = newSvcTable6(services6), newSvcTable6(port06)
	dr.snap.Store(s)
	dr.refilter(s)
}

// Snapshot returns the current service table.
func (dr *Director) Snapshot() *Snapshot { return dr.snap.Load() }
