package labcmd

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/trace"
)

// explain prints the lab's topology with its live addresses and MACs, and
// the path of one request and its reply, hop by hop, as LVS teaching
// material draws it.
func explain(s *session, w io.Writer) error {
	o := s.o
	rip := s.rips()[0]
	cip, vip, ext, int0, router, lip0 := lab.CIP, lab.VIP, lab.DirExtIP, lab.DirIntIP, lab.RouterDirIP, lab.LIP(0).String()+"-.203"
	resolve := "ARP"
	if o.ipv6 {
		cip, vip, ext, int0, router, lip0 = lab.CIP6, lab.VIP6, lab.DirExtIP6, lab.DirIntIP6, lab.RouterDirIP6, lab.LIP6(0).String()+"-::203"
		resolve = "Neighbor Solicitations"
	}
	fmt.Fprintf(w, "\n## Who is who\n")
	row := func(role, addr, mac, where string) {
		fmt.Fprintf(w, "  %-8s %-18s %-18s %s\n", role, addr, mac, where)
	}
	row("CIP", cip.String(), lab.MAC(0x0c, 10).String(), "client"+o.suffix+"/eth0")
	row("VIP", vip.String(), lab.MAC(0xd1, 1).String(), "answered by golvs on the director's ext0 ("+resolve+"; the kernel does not own it)")
	if o.mode == "dr" {
		row("DIP", ext.String(), lab.MAC(0xd1, 1).String(), "director"+o.suffix+"/ext0 (one segment with the real servers)")
	} else {
		row("DIP", int0.String(), lab.MAC(0xd1, 2).String(), "director"+o.suffix+"/int0")
	}
	for i, r := range s.rips() {
		row(fmt.Sprintf("RIP%d", i+1), r.String(), lab.MAC(0x5e, byte(i+1)).String(), fmt.Sprintf("rs%d%s/eth0", i+1, o.suffix))
	}
	if o.mode == "fullnat" {
		row("LIP", lip0, lab.MAC(0xd1, 2).String(), "director's local addresses on int0 (golvs answers "+resolve+")")
	}
	if o.mode == "tun" {
		row("router", router.String(), "", "between the director and the real servers; their replies go through it to the client")
	}
	if o.ipv6 {
		fmt.Fprintf(w, "\n  IPv6: golvs walks each packet's extension headers (hop-by-hop, routing, destination options,\n  fragment) to its TCP or UDP header, as IPVS does; fragments are reassembled first (the trace\n  shows the walk on each ip6-ext line). Hop limit, not TTL; no header checksum.\n")
	}
	fmt.Fprintf(w, "\n## One request and its reply (%s)\n", strings.ToUpper(o.mode))
	step := func(n int, s string) { fmt.Fprintf(w, "  %d. %s\n", n, s) }
	c, v := netip.AddrPortFrom(cip, 0).String(), netip.AddrPortFrom(vip, 80).String()
	c = strings.TrimSuffix(c, ":0") + ":cport"
	r := netip.AddrPortFrom(rip, 80).String()
	switch o.mode {
	case "nat":
		step(1, fmt.Sprintf("client    %s -> %s          (to the director's MAC: golvs answered ARP for the VIP)", c, v))
		step(2, fmt.Sprintf("director  schedules a real server; DNAT %s -> %s; TTL-1; MACs int0 -> rs", v, r))
		step(3, fmt.Sprintf("rs        sees %s -> %s; replies %s -> %s via its default gateway, the DIP", c, r, r, c))
		step(4, fmt.Sprintf("director  finds the conn by the reply; SNAT %s -> %s; TTL-1; MACs ext0 -> client", r, v))
		step(5, fmt.Sprintf("client    gets %s -> %s: the address it called", v, c))
	case "dr":
		step(1, fmt.Sprintf("client    %s -> %s          (to the director's MAC)", c, v))
		step(2, "director  schedules a real server; rewrites only the MACs: ext0 -> rs; IP header untouched")
		step(3, fmt.Sprintf("rs        accepts %s -> %s (the VIP is on its lo; arp_ignore keeps it quiet on ARP)", c, v))
		step(4, fmt.Sprintf("rs        replies %s -> %s straight to the client: the director never sees it", v, c))
	case "tun":
		step(1, fmt.Sprintf("client    %s -> %s          (to the director's MAC)", c, v))
		step(2, fmt.Sprintf("director  schedules a real server; wraps the packet: outer %s -> %s (%s), inner untouched", int0, rip, o.tunType))
		step(3, fmt.Sprintf("router    forwards the outer packet to %s", rip))
		step(4, fmt.Sprintf("rs        golvs rs-tun decapsulates; the inner %s -> %s reaches the VIP on its TUN device", c, v))
		step(5, fmt.Sprintf("rs        replies %s -> %s via the router, bypassing the director", v, c))
	default:
		l := strings.TrimSuffix(netip.AddrPortFrom(netip.MustParseAddr(strings.SplitN(lip0, "-", 2)[0]), 0).String(), ":0") + ":lport"
		step(1, fmt.Sprintf("client    %s -> %s          (to the director's MAC)", c, v))
		step(2, fmt.Sprintf("director  schedules a real server; both ends rewritten: %s -> %s; a TOA option carries the client address in the SYN", l, r))
		step(3, fmt.Sprintf("rs        sees %s -> %s and replies %s -> %s (the LIP is on its own segment)", l, r, r, l))
		step(4, fmt.Sprintf("director  reverses both: %s -> %s", v, c))
	}
	fmt.Fprintf(w, "\n## The requests, traced by the director (golvs trace)\n")
	return nil
}

// lockedWriter serialises writes from the trace goroutine and the lab.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// traceWhile attaches a trace to the lab's director, prints every event
// as it happens while run runs, then detaches.
func traceWhile(ctx context.Context, s *session, w io.Writer, run func(io.Writer) error) error {
	lw := &lockedWriter{w: w}
	cl, err := control.Dial(s.sock)
	if err != nil {
		return err
	}
	defer cl.Close()
	f := &trace.Formatter{}
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opened := make(chan error, 1)
	done := make(chan error, 1)
	var events atomic.Int64
	go func() {
		done <- cl.Trace(tctx, "", control.TraceOptions{}, func(*control.TraceLine) error {
			opened <- nil
			return nil
		}, func(l *control.TraceLine) error {
			if l.Event != nil {
				events.Add(1)
				var b strings.Builder
				_ = f.WriteText(&b, l.Event)
				fmt.Fprint(lw, b.String())
			}
			return nil
		})
	}()
	select {
	case err := <-opened:
		if err != nil {
			return err
		}
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		return fmt.Errorf("the director did not start the trace")
	}
	if err := run(lw); err != nil {
		return err
	}
	// Let the last events arrive, then detach.
	last := int64(-1)
	for i := 0; i < 20 && events.Load() != last; i++ {
		last = events.Load()
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
	}
	return nil
}
