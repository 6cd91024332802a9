package director

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// A graceful restart hands the running director's state to a new process
// (control/takeover.go drives it): the new director starts in standby
// (its workers read their rings and drop every IP frame, answering only
// ARP), applies the old one's model and resolves its next hops; then the
// old one goes to standby, exports its connection table, the new one
// imports it (same dests, states, timeouts, templates and FULLNAT local
// ports) and leaves standby. No frame is forwarded by both processes: the
// old one forwards until it parks, the new one only after the import.

// handover is the director's part of a graceful restart.
type handover struct {
	standby atomic.Bool
	host    []HostSetting // host settings changed at start, restored at Close
}

// HostSetting is a host setting golvs changed (a sysctl file and the value
// it had), put back when the director stops, or handed to a successor.
type HostSetting struct{ Path, Value string }

// recordHost notes a host setting to restore.
func (d *Director) recordHost(path, old string) {
	d.handover.host = append(d.handover.host, HostSetting{path, old})
	d.restore = append(d.restore, func() { _ = os.WriteFile(path, []byte(old), 0o644) })
}

// HostSettings returns the host settings the director will restore.
func (d *Director) HostSettings() []HostSetting { return slices.Clone(d.handover.host) }

// ForgetHost drops the host settings to restore: a successor restores
// them when it stops (AdoptHost). The drop rule's tables stay too, for
// the successor to replace (TakeHost).
func (d *Director) ForgetHost() {
	d.handover.host = nil
	d.restore = nil
	d.dropMu.Lock()
	d.drop.Forget()
	d.drop = nil
	d.dropMu.Unlock()
}

// AdoptHost takes over a predecessor's host settings: restored when this
// director stops.
func (d *Director) AdoptHost(hs []HostSetting) {
	for _, h := range hs {
		if slices.Contains(d.handover.host, h) {
			continue
		}
		d.recordHost(h.Path, h.Value)
	}
}

// SetStandby stops (on) or resumes (off) forwarding: in standby the
// workers drop every IP frame they read (counted as standby) and still
// answer ARP.
func (d *Director) SetStandby(on bool) { d.handover.standby.Store(on) }

// TakeHost claims, in a successor (Config.Standby), what its predecessor
// held on the host: the interface locks it could not take at start, and
// the drop rule, whose tables it replaces with its own. Call it once the
// predecessor's process has exited (an older golvs removes its tables as
// it exits, whatever their name; a newer one lets go of its locks). A
// director with nothing to take (taken already, or closed) does nothing.
// A lock a third golvs took meanwhile is an ErrInterfaceBusy error; a
// drop rule that cannot be taken leaves the director without one, as
// HostReport then says.
func (d *Director) TakeHost() error {
	d.dropMu.Lock()
	defer d.dropMu.Unlock()
	var errs []error
	if d.locks != nil {
		if err := d.locks.take(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.drop != nil && d.drop.Pending() {
		if err := d.drop.Take(); err != nil {
			d.drop.Forget()
			d.drop = nil
			d.dropOff = fmt.Sprintf("no drop rule: %v; the kernel also runs every frame golvs forwards through its IP stack (and drops it there)", err)
			errs = append(errs, fmt.Errorf("director: taking over the drop rule: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Standby reports whether the director is in standby.
func (d *Director) Standby() bool { return d.handover.standby.Load() }

// WaitParked waits until every running worker has seen standby: from then
// on no frame is forwarded. Workers look at it between batches, at least
// every 100 ms.
func (d *Director) WaitParked(ctx context.Context) error {
	for {
		all := true
		for _, w := range d.workers {
			if w.running.Load() && !w.parked.Load() {
				all = false
			}
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("director: workers did not park: %w", ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// standbyFrame is what a parked worker does with a frame: ARP and
// Neighbour Discovery are served (so neighbours and VIP answers stay
// fresh), the rest dropped.
func (w *Worker) standbyFrame(f *netio.Frame) {
	if f.Trunc {
		return
	}
	packet.Decode(f.Data, &w.p)
	if w.p.Kind == packet.KindARP {
		w.arpIn(f)
		return
	}
	if w.p.Kind == packet.KindIPv6 && w.p.Proto == packet.NHICMPv6 && f.PktType != netio.PacketOtherHost && !(f.VLANValid && f.VLANTCI&0xfff != 0) && w.nd6(f) {
		return
	}
	w.cnt.inc(CntStandby)
}

// DestRef names a real server of a service, across processes.
type DestRef struct {
	Svc  ipvs.ServiceKey
	Addr netip.Addr
	Port uint16
}

// HandedDest is a real server as a graceful restart hands it over: its
// identity, its configuration and counters, and whether it is in the
// trash (removed, with connections still pointing at it).
type HandedDest struct {
	Ref     DestRef
	Config  ipvs.DestConfig
	Trashed bool
	Stats   ipvs.StatsSnapshot
}

// HandedDests lists every dest a connection may point at: the live ones
// of the snapshot and the trashed ones. index maps each to its place in
// the list.
func (d *Director) HandedDests() (out []HandedDest, index map[*ipvs.Dest]int) {
	index = map[*ipvs.Dest]int{}
	add := func(x *ipvs.Dest, trashed bool) {
		if _, ok := index[x]; ok {
			return
		}
		index[x] = len(out)
		out = append(out, HandedDest{Ref: DestRef{x.Svc, x.Addr, x.Port}, Config: x.Config(), Trashed: trashed, Stats: x.Stats.Snapshot()})
	}
	for _, sv := range d.snap.Load().List {
		for _, x := range sv.Dests {
			add(x, false)
		}
	}
	d.cfg.mu.Lock()
	for _, rt := range append(slices.Clone(d.cfg.svcs), d.cfg.trash...) {
		for _, t := range rt.trash {
			add(t.d, true)
		}
	}
	d.cfg.mu.Unlock()
	return out, index
}

// HandedServiceStats are a service's counters, handed over.
type HandedServiceStats struct {
	Svc   ipvs.ServiceKey
	Stats ipvs.StatsSnapshot
}

// ServiceStats lists every service's counters.
func (d *Director) ServiceStats() []HandedServiceStats {
	var out []HandedServiceStats
	for _, sv := range d.snap.Load().List {
		out = append(out, HandedServiceStats{sv.Config.ServiceKey, sv.Stats.Snapshot()})
	}
	return out
}

// BindHanded maps handed dests to this director's own: a live one of its
// model, or, for a trashed one, a dest put in its trash for the occasion
// (so connections to it stay dropped until it is added back, and revive
// then). The result is parallel to hs; nil where no dest fits.
func (d *Director) BindHanded(hs []HandedDest) []*ipvs.Dest {
	out := make([]*ipvs.Dest, len(hs))
	d.cfg.mu.Lock()
	defer d.cfg.mu.Unlock()
	d.cfg.ver++
	now := time.Now()
	for i, h := range hs {
		_, rt := d.cfg.find(h.Ref.Svc)
		if !h.Trashed && rt != nil {
			if _, x := rt.findDest(h.Ref.Addr, h.Ref.Port); x != nil {
				out[i] = x
				continue
			}
		}
		if rt == nil {
			id := idOf(h.Ref.Svc)
			for _, t := range d.cfg.trash {
				if idOf(t.cfg.ServiceKey) == id {
					rt = t
				}
			}
			if rt == nil {
				rt = &svcRT{cfg: ipvs.ServiceConfig{ServiceKey: h.Ref.Svc}, stats: new(ipvs.Stats)}
				d.cfg.trash = append(d.cfg.trash, rt)
			}
		}
		x := rt.peekTrashed(h.Ref.Addr, h.Ref.Port)
		if x == nil {
			if _, live := rt.findDest(h.Ref.Addr, h.Ref.Port); live != nil {
				out[i] = live // trashed there, configured here
				continue
			}
			x = d.c.Semantics.NewDest(h.Ref.Svc, h.Config)
			x.Unlink()
			x.SvcStats = rt.stats
			rt.trash = append(rt.trash, &trashed{x, now})
		}
		out[i] = x
	}
	return out
}

// AddStats adds handed counters to a dest's or service's own.
func AddStats(st *ipvs.Stats, s ipvs.StatsSnapshot) {
	st.Conns.Add(s.Conns)
	st.InPkts.Add(s.InPkts)
	st.OutPkts.Add(s.OutPkts)
	st.InBytes.Add(s.InBytes)
	st.OutBytes.Add(s.OutBytes)
}

// AddServiceStats adds handed counters to the services of this director.
func (d *Director) AddServiceStats(ss []HandedServiceStats) {
	for _, h := range ss {
		id := idOf(h.Svc)
		for _, sv := range d.snap.Load().List {
			if idOf(sv.Config.ServiceKey) == id {
				AddStats(sv.Stats, h.Stats)
			}
		}
	}
}

// ImportConn rebuilds one handed connection (or template) in this
// director's table: r.Dest must already be this director's dest
// (BindHanded), and a conn's template must have been imported before it.
// A FULLNAT conn keeps its local address and port, taken from the pool so
// no new conn gets them.
func (d *Director) ImportConn(r *conntrack.Record) error {
	v6 := r.V6()
	if v6 {
		// The keys hold digests made with the old table's secret: make
		// them again with this one's, from the full addresses.
		kind := r.In.Kind &^ conntrack.KindV6
		r.In = d.CT.Key6(&r.A6.In, r.In.SrcPort, r.In.DstPort, r.In.Proto, kind)
		if r.Out != (conntrack.Key{}) {
			r.Out = d.CT.Key6(&r.A6.Out, r.Out.SrcPort, r.Out.DstPort, r.Out.Proto, conntrack.KindConn)
		}
		if r.Tpl != (conntrack.Key{}) {
			r.Tpl = d.CT.Key6(&r.TplA6, r.Tpl.SrcPort, r.Tpl.DstPort, r.Tpl.Proto, conntrack.KindTemplate)
		}
	}
	var tpl conntrack.Ref
	if r.Tpl != (conntrack.Key{}) {
		if v6 {
			tpl, _ = d.CT.LookupTemplate6(&r.Tpl, &r.TplA6)
		} else {
			tpl, _ = d.CT.LookupTemplate(&r.Tpl)
		}
		if tpl.IsZero() {
			return fmt.Errorf("director: conn %v: its template is not in the table", r.In)
		}
	}
	fullnat := r.Method == ipvs.MethodFullNAT && !r.Template()
	pl, lipAddr := d.modes.pool.Load(), netip.AddrFrom4(r.Out.DstIP)
	if v6 {
		pl, lipAddr = d.modes.pool6.Load(), netip.AddrFrom16(r.A6.Out.Dst)
	}
	if fullnat && pl != nil {
		pl.take(lipAddr, r.Out.Proto, r.Out.DstPort)
	}
	if _, err := d.CT.Import(r, tpl); err != nil {
		if fullnat && err != conntrack.ErrExists && pl != nil {
			pl.release(lipAddr, r.Out.Proto, r.Out.DstPort)
		}
		return err
	}
	return nil
}

// take marks a local port in use (a conn handed over by a predecessor).
func (pl *lipPool) take(addr netip.Addr, proto uint8, port uint16) {
	l := pl.find(addr)
	if l == nil || port < pl.min || port > pl.max {
		return
	}
	pi := protoIndex(proto)
	idx := uint32(port - pl.min)
	w, b := idx/64, uint64(1)<<(idx%64)
	l.mu.Lock()
	if l.used[pi][w]&b == 0 {
		l.used[pi][w] |= b
		l.free[pi]--
		l.conns.Add(1)
	}
	l.mu.Unlock()
}
