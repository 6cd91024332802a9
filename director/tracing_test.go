package director

import (
	"net/netip"
	"testing"

	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/trace"
)

func TestTraceEvents(t *testing.T) {
	d, w, _, _ := testDirector(t, true)
	d.ifNames = map[int]string{ifExt: "ext0", ifInt: "int0"}
	tr := trace.New(trace.Config{})
	if err := d.SetTracer(tr); err != nil {
		t.Fatal(err)
	}
	if err := d.SetTracer(trace.New(trace.Config{})); err != ErrTraceBusy {
		t.Fatalf("second tracer: %v", err)
	}
	w.tr = d.tracer.Load()
	w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x02, nil))
	w.handle(frame(t, ifInt, rsMAC, intMAC, rip, cip, 6, 8080, 40000, 0x12, nil))
	w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40000, 80, 0x10, nil))
	w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, 40001, 80, 0x10, nil)) // no conn
	var evs []*trace.Event
	for len(evs) < 4 {
		evs = append(evs, <-tr.Events())
	}
	syn, synack, ack, stray := evs[0], evs[1], evs[2], evs[3]
	if syn.Dir != "request" || syn.Lookup != "miss" || syn.StateOld != "NONE" || syn.StateNew != "SYN_RECV" ||
		syn.Verdict != "forwarded" || syn.InIf != "ext0" || syn.OutIf != "int0" || syn.Service != "TCP 198.18.0.100:80 rr" {
		t.Fatalf("SYN event %+v", syn)
	}
	if syn.Sched == nil || syn.Sched.Name != "rr" || syn.Sched.Chosen != netip.AddrPortFrom(rip, 8080) || len(syn.Sched.Dests) != 1 {
		t.Fatalf("SYN scheduler decision %+v", syn.Sched)
	}
	if len(syn.Before) != syn.Len || len(syn.After) == 0 || syn.After[30] != rip.As4()[0] || syn.After[33] != rip.As4()[3] {
		t.Fatalf("SYN frames before %d bytes, after %x", len(syn.Before), syn.After)
	}
	if synack.Dir != "reply" || synack.Lookup != "hit" || synack.OutIf != "ext0" || synack.Service != "TCP 198.18.0.100:80 rr" {
		t.Fatalf("SYN+ACK event %+v", synack)
	}
	if ack.Lookup != "hit" || ack.StateNew != "ESTABLISHED" || ack.Sched != nil {
		t.Fatalf("ACK event %+v", ack)
	}
	if stray.Verdict != "dropped: no-conn" {
		t.Fatalf("stray ACK verdict %q", stray.Verdict)
	}
	d.ClearTracer(tr)
	if d.tracer.Load() != nil {
		t.Fatal("tracer still attached")
	}
}

// A consumer that never reads cannot block or slow the data path: the
// tracer drops and counts.
func TestTraceSlowConsumerNeverBlocks(t *testing.T) {
	d, w, _, in := testDirector(t, true)
	tr := trace.New(trace.Config{Buffer: 4, Rate: 1 << 20})
	if err := d.SetTracer(tr); err != nil {
		t.Fatal(err)
	}
	w.tr = tr
	for i := 0; i < 100; i++ {
		w.handle(frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, uint16(30000+i), 80, 0x02, nil))
	}
	if len(in.frames) != 100 {
		t.Fatalf("forwarded %d of 100 with a stuck trace consumer", len(in.frames))
	}
	if tr.Dropped() < 90 {
		t.Fatalf("dropped %d events, want >= 90", tr.Dropped())
	}
}

// BenchmarkTrace: the established-flow path with no tracer attached (the
// normal case), and with a tracer sampling 1 in 100 frames. Compare "off"
// with the same benchmark built with -tags golvs_notrace, which compiles
// the hooks out.
func BenchmarkTrace(b *testing.B) {
	run := func(b *testing.B, tr *trace.Tracer) {
		w, f, orig := established(b)
		w.tr = tr
		buf := f.Vnet[:netio.VnetHdrLen+len(f.Data)]
		done := make(chan struct{})
		if tr != nil {
			go func() {
				for {
					select {
					case e := <-tr.Events():
						tr.Release(e)
					case <-done:
						return
					}
				}
			}()
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			copy(buf, orig)
			w.handle(f)
		}
		b.StopTimer()
		close(done)
	}
	b.Run("off", func(b *testing.B) { run(b, nil) })
	b.Run("sample-1-in-100", func(b *testing.B) {
		run(b, trace.New(trace.Config{Sample: 100, Rate: 1 << 30}))
	})
}
