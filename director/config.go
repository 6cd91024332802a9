package director

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/sched"
)

// svcRT is the runtime of one service that outlives snapshots: its
// scheduler instance, stats and dests keep their identity across edits.
type svcRT struct {
	cfg   ipvs.ServiceConfig
	sched sched.Scheduler
	stats *ipvs.Stats
	dests []*ipvs.Dest // kernel list order: newest first
}

// config is the director's mutable configuration, guarded by mu; every
// change ends with publish, which builds and swaps a new snapshot.
type config struct {
	mu    sync.Mutex
	svcs  []*svcRT // creation order
	gen   uint64
	trash []*ipvs.Dest // removed dests, kept so a re-add restores their counters
	marks []ipvs.MarkRule
}

func (c *config) find(k ipvs.ServiceKey) (int, *svcRT) {
	for i, s := range c.svcs {
		if s.cfg.ServiceKey == k {
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

// checkService validates what the data path relies on.
func checkService(c *ipvs.ServiceConfig) error {
	if c.FWMark == 0 {
		if !c.Addr.Is4() {
			return fmt.Errorf("director: service %s: only IPv4 services are supported so far", c.ServiceKey)
		}
		if c.Proto != ipvs.ProtoTCP && c.Proto != ipvs.ProtoUDP {
			return fmt.Errorf("director: service %s: protocol %s is not supported (TCP and UDP are)", c.ServiceKey, ipvs.ProtoName(c.Proto))
		}
		if c.Port == 0 && !c.Persistent() {
			return fmt.Errorf("director: service %s: Zero port specified for non-persistent service", c.ServiceKey)
		}
	}
	if c.Sched == "" {
		c.Sched = ipvs.DefaultScheduler
	}
	return nil
}

func checkDest(sem ipvs.Semantics, svc *ipvs.ServiceConfig, d *ipvs.DestConfig) error {
	if !d.Addr.Is4() {
		return fmt.Errorf("director: real server %s: only IPv4 real servers are supported so far", d.Addr)
	}
	if !d.Addr.IsGlobalUnicast() && !d.Addr.IsPrivate() {
		if d.Addr.IsUnspecified() || d.Addr.IsMulticast() || d.Addr.IsLoopback() {
			return fmt.Errorf("director: real server %s: Invalid operation.  Possibly wrong module version, address not unicast, ...", d.Addr)
		}
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
// for every command of a restore before applying any.
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

// AddService adds a virtual service (ipvsadm -A), with the real servers
// c lists, each published with its next hop resolved (see AddDest).
func (dr *Director) AddService(c ipvs.ServiceConfig) error {
	if err := checkService(&c); err != nil {
		return err
	}
	if c.FWMark == 0 {
		if err := dr.checkVIPNotLocal(c.Addr); err != nil {
			return err
		}
	}
	s, err := sched.NewFor(c.Sched, dr.c.Semantics)
	if err != nil {
		return fmt.Errorf("%w: %v", ipvs.ErrNoScheduler, err)
	}
	addrs := make([]netip.Addr, len(c.Dests))
	for i, d := range c.Dests {
		addrs[i] = d.Addr
	}
	hops := dr.resolveNew(addrs) // before the lock: it may wait (resolve.go)
	dr.cfg.mu.Lock()
	defer dr.cfg.mu.Unlock()
	if _, old := dr.cfg.find(c.ServiceKey); old != nil {
		return fmt.Errorf("%s: %w", c.ServiceKey, ipvs.ErrServiceExists)
	}
	rt := &svcRT{cfg: c, sched: s, stats: new(ipvs.Stats)}
	rt.cfg.Dests = nil
	if err := s.Init(rt.view()); err != nil {
		return err
	}
	dr.cfg.svcs = append(dr.cfg.svcs, rt)
	for i, d := range c.Dests {
		if err := dr.addDestLocked(rt, d, hops[i]); err != nil {
			return err
		}
	}
	dr.publishLocked()
	return nil
}

// EditService changes a service's scheduler, flags and persistence
// (ipvsadm -E). The same scheduler keeps its state; a different one is
// bound afresh (spec §1.5).
func (dr *Director) EditService(c ipvs.ServiceConfig) error {
	if err := checkService(&c); err != nil {
		return err
	}
	dr.cfg.mu.Lock()
	defer dr.cfg.mu.Unlock()
	_, rt := dr.cfg.find(c.ServiceKey)
	if rt == nil {
		return fmt.Errorf("%s: %w", c.ServiceKey, ipvs.ErrNoService)
	}
	c.Dests = nil
	if c.Sched != rt.cfg.Sched {
		s, err := sched.NewFor(c.Sched, dr.c.Semantics)
		if err != nil {
			return fmt.Errorf("%w: %v", ipvs.ErrNoScheduler, err)
		}
		rt.cfg = c
		if err := s.Init(rt.view()); err != nil {
			return err
		}
		rt.sched = s
	} else {
		rt.cfg = c
	}
	dr.publishLocked()
	return nil
}

// DelService removes a service (ipvsadm -D). Its conns live on until they
// expire, as in IPVS, but their packets are dropped (no dest available).
func (dr *Director) DelService(k ipvs.ServiceKey) error {
	dr.cfg.mu.Lock()
	defer dr.cfg.mu.Unlock()
	i, rt := dr.cfg.find(k)
	if rt == nil {
		return fmt.Errorf("%s: %w", k, ipvs.ErrNoService)
	}
	for _, d := range rt.dests {
		d.Unlink()
	}
	dr.cfg.svcs = append(dr.cfg.svcs[:i:i], dr.cfg.svcs[i+1:]...)
	dr.publishLocked()
	return nil
}

// Clear removes every service (ipvsadm -C).
func (dr *Director) Clear() {
	dr.cfg.mu.Lock()
	defer dr.cfg.mu.Unlock()
	for _, rt := range dr.cfg.svcs {
		for _, d := range rt.dests {
			d.Unlink()
		}
	}
	dr.cfg.svcs = nil
	dr.publishLocked()
}

// AddDest adds a real server to a service (ipvsadm -a); it goes to the
// head of the list, as in the kernel. Its next hop is resolved first
// (waiting up to a second for the kernel's ARP), so that its first SYN
// finds it.
func (dr *Director) AddDest(k ipvs.ServiceKey, d ipvs.DestConfig) error {
	dr.cfg.mu.Lock()
	_, rt := dr.cfg.find(k)
	var svc ipvs.ServiceConfig
	if rt != nil {
		svc = rt.cfg
	}
	dr.cfg.mu.Unlock()
	if rt == nil {
		return fmt.Errorf("%s: %w", k, ipvs.ErrSvcNotDefined)
	}
	if err := checkDest(dr.c.Semantics, &svc, &d); err != nil {
		return err // before waiting for anything
	}
	hop := dr.resolveNew([]netip.Addr{d.Addr})[0] // before the lock: it may wait
	dr.cfg.mu.Lock()
	defer dr.cfg.mu.Unlock()
	_, rt = dr.cfg.find(k)
	if rt == nil {
		return fmt.Errorf("%s: %w", k, ipvs.ErrSvcNotDefined)
	}
	if err := dr.addDestLocked(rt, d, hop); err != nil {
		return err
	}
	dr.publishLocked()
	return nil
}

// addDestLocked adds a dest; hop, when resolved, is its next hop from the
// start.
func (dr *Director) addDestLocked(rt *svcRT, d ipvs.DestConfig, hop *ipvs.NextHop) error {
	if err := checkDest(dr.c.Semantics, &rt.cfg, &d); err != nil {
		return err
	}
	if err := dr.checkDestHost(&rt.cfg, &d); err != nil {
		return err
	}
	if _, old := rt.findDest(d.Addr, d.Port); old != nil {
		return fmt.Errorf("%s: %w", d.AddrPort(), ipvs.ErrDestExists)
	}
	var nd *ipvs.Dest
	for i, t := range dr.cfg.trash {
		if t.Svc == rt.cfg.ServiceKey && t.Addr == d.Addr && t.Port == d.Port {
			nd = t
			dr.cfg.trash = append(dr.cfg.trash[:i:i], dr.cfg.trash[i+1:]...)
			nd.Revive(d) // the kernel's add path: last_weight = weight, even 0
			break
		}
	}
	if nd == nil {
		nd = dr.c.Semantics.NewDest(rt.cfg.ServiceKey, d)
	}
	nd.SvcStats = rt.stats
	if hop != nil {
		nd.Next.Store(hop)
	}
	rt.dests = append([]*ipvs.Dest{nd}, rt.dests...)
	if err := rt.sched.AddDest(rt.view(), nd); err != nil {
		return err
	}
	dr.kickResolver()
	return nil
}

// EditDest changes a real server in place (ipvsadm -e).
func (dr *Director) EditDest(k ipvs.ServiceKey, d ipvs.DestConfig) error {
	dr.cfg.mu.Lock()
	defer dr.cfg.mu.Unlock()
	_, rt := dr.cfg.find(k)
	if rt == nil {
		return fmt.Errorf("%s: %w", k, ipvs.ErrSvcNotDefined)
	}
	if err := checkDest(dr.c.Semantics, &rt.cfg, &d); err != nil {
		return err
	}
	if err := dr.checkDestHost(&rt.cfg, &d); err != nil {
		return err
	}
	_, old := rt.findDest(d.Addr, d.Port)
	if old == nil {
		return fmt.Errorf("%s: %w", d.AddrPort(), ipvs.ErrNoDest)
	}
	old.Update(d)
	if err := rt.sched.UpdDest(rt.view(), old); err != nil {
		return err
	}
	dr.publishLocked()
	return nil
}

// DelDest removes a real server (ipvsadm -d). It goes to the trash, where
// it keeps its counters for a re-add; its conns drop their packets
// (expire_nodest_conn 0) until they time out.
func (dr *Director) DelDest(k ipvs.ServiceKey, a netip.Addr, port uint16) error {
	dr.cfg.mu.Lock()
	defer dr.cfg.mu.Unlock()
	_, rt := dr.cfg.find(k)
	if rt == nil {
		return fmt.Errorf("%s: %w", k, ipvs.ErrSvcNotDefined)
	}
	i, old := rt.findDest(a, port)
	if old == nil {
		return fmt.Errorf("%s: %w", netip.AddrPortFrom(a, port), ipvs.ErrNoDest)
	}
	old.Unlink()
	rt.dests = append(rt.dests[:i:i], rt.dests[i+1:]...)
	if err := rt.sched.DelDest(rt.view(), old); err != nil {
		return err
	}
	dr.cfg.trash = append(dr.cfg.trash, old)
	if len(dr.cfg.trash) > 4096 {
		dr.cfg.trash = dr.cfg.trash[len(dr.cfg.trash)-4096:]
	}
	dr.publishLocked()
	return nil
}

// publishLocked builds a new snapshot from the configuration and swaps it
// in; it also re-filters the rings.
func (dr *Director) publishLocked() {
	dr.cfg.gen++
	s := &Snapshot{
		Gen:   dr.cfg.gen,
		vips:  make(map[[4]byte]bool),
		fwm:   make(map[uint32]*Service),
		marks: compileMarks(dr.cfg.marks),
		Marks: dr.cfg.marks,
	}
	services, port0 := map[svcKey]*Service{}, map[svcKey]*Service{}
	for _, rt := range dr.cfg.svcs {
		sv := &Service{Name: rt.cfg.ServiceKey.String() + " " + rt.cfg.Sched, Config: rt.cfg, Sched: rt.sched, View: rt.view(), Stats: rt.stats, Dests: append([]*ipvs.Dest(nil), rt.dests...)}
		s.List = append(s.List, sv)
		if rt.cfg.FWMark != 0 {
			s.fwm[rt.cfg.FWMark] = sv
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
	dr.snap.Store(s)
	dr.refilter(s)
}

// Snapshot returns the current service table.
func (dr *Director) Snapshot() *Snapshot { return dr.snap.Load() }
