package director

import (
	"time"

	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// IPv6 fragments. The kernel reassembles IPv4 fragments before golvs sees
// them (PACKET_FANOUT_FLAG_DEFRAG), not IPv6 ones; IPVS runs behind
// nf_defrag_ipv6 and sees whole datagrams. So golvs reassembles IPv6
// fragments itself (forward.Reassembler6, shared by the workers: a
// datagram's fragments may come to different ones) and runs the whole
// datagram through the IPv6 path like any packet, remembering the largest
// fragment it came in: on the way out it is cut again into fragments no
// larger (output6.go), as the kernel does, or answered with Packet Too
// Big if even that fragment is over the egress MTU.
//
// A fragment is validated like the packet it belongs to (broadcast,
// martian addresses) before it is kept; each is counted once: held
// (ip6-fragment-held) or refused (ip6-fragment-dropped: not a multiple of
// 8 bytes, past 65535, overlapping another (its whole datagram dropped,
// RFC 5722), the first without its upper-layer header (RFC 7112), more
// than forward.MaxReasmFrags, no room). Datagrams that never complete
// are dropped after 60 s (ip6-reasm-timeout), and the oldest ones when
// the 4 MiB reassembly memory is full (ip6-reasm-evicted), without an
// answer, as nf_defrag_ipv6 drops them.

// frag6 takes an IPv6 fragment (w.p: ReasonFragment) and, when it
// completes its datagram, handles the datagram.
func (w *Worker) frag6(f *netio.Frame) {
	p := &w.p
	if !w.validIPv6(f) {
		return
	}
	if w.backup {
		w.count(CntBackup) // nothing is forwarded: nothing is held either
		return
	}
	g, st := w.d.reasm.Add(f.Data, p, f.IfIndex, time.Now())
	switch st {
	case forward.ReasmHeld, forward.ReasmDup:
		w.count(CntFrag6Held)
		return
	case forward.ReasmComplete:
	default:
		w.count(CntFrag6Drop)
		return
	}
	w.count(CntFrag6Held) // the last fragment too: the datagram counts on its own
	n := g.Len()
	b := w.m.alloc(w, netio.VnetHdrLen+n)
	if b == nil {
		w.d.reasm.Free(g)
		w.count(CntTooBig)
		return
	}
	clear(b[:netio.VnetHdrLen])
	g.WriteTo(b[netio.VnetHdrLen:])
	df := netio.Frame{Data: b[netio.VnetHdrLen:], Vnet: b[:netio.VnetHdrLen], IfIndex: f.IfIndex, PktType: f.PktType}
	w.x6.fragMax, w.x6.fragHLen, w.x6.fragPrev = g.MaxFrag, g.HLen, g.Prev
	w.d.reasm.Free(g)
	defer func() { w.x6.fragMax = 0 }()
	packet.Decode(df.Data, p)
	if p.Kind != packet.KindIPv6 {
		// The datagram's headers, now whole, do not hold (a bogus chain
		// after the fragment header, a bad L4 header): counted by cause.
		w.count(int(p.Reason) - 1)
		return
	}
	w.handle6(&df)
}
