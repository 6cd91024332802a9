package director

import (
	"net/netip"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/sched"
	"github.com/golvs/golvs/trace"
)

// dropVerdicts are the trace verdicts of the drop counters, built once so
// a traced drop does not allocate.
var dropVerdicts = func() (v [NumCounters]string) {
	for i, n := range CounterNames {
		v[i] = "dropped: " + n
	}
	return
}()

// traceStart asks the attached tracer whether to trace this frame of the
// connection client -> vip and, if so, records the frame as received.
// Only called when a tracer is attached.
func (w *Worker) traceStart(f *netio.Frame, dir string, sv *Service, client, vip [4]byte, cport, vport uint16) {
	ev := w.tr.Want(w.p.Proto, client, vip, cport, vport)
	if ev == nil {
		return
	}
	ev.Worker = w.id
	ev.InIf = w.d.IfName(f.IfIndex)
	ev.Dir = dir
	ev.Verdict = "dropped"
	if sv == nil {
		sv = w.snap.lookup(w.p.Proto, vip, vport)
	}
	if sv != nil {
		ev.Service = sv.Name
	}
	ev.SetBefore(f.Data)
	w.ev = ev
}

// traceLookup records the connection-table outcome and state change.
func (w *Worker) traceLookup(lookup string, h *conntrack.Hit) {
	ev := w.ev
	ev.Lookup = lookup
	ev.Method = h.Method.String()
	ev.StateOld = conntrack.StateName(w.p.Proto, false, h.OldState)
	ev.StateNew = conntrack.StateName(w.p.Proto, false, h.NewState)
}

// traceSched records the scheduler's inputs and decision, by asking the
// scheduler to explain itself before it picks (explaining never changes
// its state).
func (w *Worker) traceSched(sv *Service) {
	si := w.ev.SchedSlot()
	si.Name = sv.Config.Sched
	si.Semantics = w.d.c.Semantics.String()
	ex, ok := sv.Sched.(sched.Explainer)
	if !ok {
		return
	}
	ex.Explain(sv.View, &w.sp, &w.dec)
	d := &w.dec
	si.Bucket, si.Probes, si.CacheHit, si.Note, si.Formula = d.Bucket, d.Probes, d.CacheHit, d.Note, d.Formula
	for _, x := range d.Dests {
		si.Dests = append(si.Dests, trace.DestInfo{
			Addr: netip.AddrPortFrom(x.Dest.Addr, x.Dest.Port), Weight: x.Weight, Active: x.Active,
			Inactive: x.Inactive, Overhead: x.Overhead, Overloaded: x.Overloaded, Available: x.Available,
		})
	}
	for _, c := range d.Cached {
		si.Cached = append(si.Cached, netip.AddrPortFrom(c.Addr, c.Port).String())
	}
}

// traceEnd hands the finished event to the tracer.
func (w *Worker) traceEnd() {
	w.tr.Emit(w.ev)
	w.ev = nil
}

// traceStart6 is traceStart for an IPv6 connection.
func (w *Worker) traceStart6(f *netio.Frame, dir string, sv *Service, client, vip *[16]byte, cport, vport uint16) {
	ev := w.tr.Want6(w.p.Proto, client, vip, cport, vport)
	if ev == nil {
		return
	}
	ev.Worker = w.id
	ev.InIf = w.d.IfName(f.IfIndex)
	ev.Dir = dir
	ev.Verdict = "dropped"
	if sv == nil {
		sv = w.snap.lookup6(w.p.Proto, vip, vport)
	}
	if sv != nil {
		ev.Service = sv.Name
	}
	ev.SetBefore(f.Data)
	w.ev = ev
}
