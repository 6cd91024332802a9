package director

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"github.com/golvs/golvs/forward"
	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// The egress MTU, as IPVS's transmitters and the kernel's output path
// apply it. With PACKET_FANOUT_FLAG_DEFRAG the kernel reassembles
// fragments before golvs sees them, so a datagram can be far longer than
// any link's MTU (and a frame from a jumbo link longer than a 1500-byte
// one's). Every path checks the datagram against the egress link's MTU
// (less the tunnel overhead for TUN) before it rewrites anything:
//
//   - it fits, or it is a GSO frame (the device segments it): sent as is;
//   - DF clear: rewritten, then cut into fragments (forward.Fragment) in
//     the worker's arena, each queued with the batch;
//   - DF set: dropped (too-big) and answered with ICMP fragmentation-needed
//     carrying the MTU (from the VIP for a client's packet, as IPVS's
//     icmp_send does; from the director's address for a real server's
//     reply, as the kernel's ip_forward does), within the ICMP rate limit.
//     An ICMP message too big is dropped without an answer (no ICMP error
//     is ever sent about one).

// egress checks the frame p describes against the egress MTU of ifindex,
// less oh bytes of encapsulation, and returns the MTU the datagram must
// be fragmented to (if longer). ok is false when the frame was dropped:
// DF set (answered with fragmentation-needed from vip, or for a real
// server's reply from the director's address on its link), or no legal
// fragment size.
func (w *Worker) egress(f *netio.Frame, ifindex, oh int, vip [4]byte, reply bool) (mtu int, ok bool) {
	p := &w.p
	mtu = w.d.linkMTU(ifindex) - oh
	if p.End-p.L3 <= mtu {
		return mtu, true
	}
	if gt, _ := vnetGSO(f); gt != netio.GSONone {
		return mtu, true // the device segments it
	}
	if !packet.IPv4(f.Data[p.L3:]).DF() && mtu >= forward.MinMTU {
		return mtu, true // emit fragments it
	}
	w.count(CntTooBig)
	if p.Proto == 1 || mtu < forward.MinMTU || oh > 0 && w.d.c.NoPMTU {
		// No ICMP error about an ICMP message; --no-pmtu is the
		// tun-no-pmtu lab's mistake (too-big tunnelled packets vanish).
		return mtu, false
	}
	src := vip
	if reply {
		src = w.replyICMPSource(f, vip)
	}
	w.fragNeeded(f, src, mtu)
	return mtu, false
}

// replyICMPSource is the source of an ICMP error golvs sends to a real
// server about its reply: the director's address on that link, as the
// kernel's forwarding path would send it (the VIP when it has none).
func (w *Worker) replyICMPSource(f *netio.Frame, vip [4]byte) [4]byte {
	if w.d.neigh != nil {
		if l := w.d.neigh.Link(f.IfIndex); l != nil && len(l.Addrs) > 0 {
			return l.Addrs[0].Addr().As4()
		}
	}
	return vip
}

// emit sends a rewritten frame, fragmented to mtu when the datagram is
// longer (egress checked that it may be).
func (w *Worker) emit(ifindex int, f *netio.Frame, mtu int) bool {
	p := &w.p
	if p.End-p.L3 <= mtu {
		return w.send(ifindex, f.Buf(), false)
	}
	if gt, _ := vnetGSO(f); gt != netio.GSONone {
		return w.send(ifindex, f.Buf(), false)
	}
	return w.fragment(ifindex, f, mtu, nil)
}

// fragment cuts the datagram p describes (rewritten, DF clear) into
// fragments of at most mtu bytes, each in the worker's arena with an
// all-zero virtio header (no offload: the L4 checksum is completed first,
// over the whole datagram) and the frame's Ethernet header, or inside the
// tunnel t (TUN: inner fragments, each encapsulated on its own, so the
// real server's decapsulator never reassembles outer packets). They are
// queued with the batch.
func (w *Worker) fragment(ifindex int, f *netio.Frame, mtu int, t *forward.Tunnel) bool {
	p := &w.p
	m := &w.m
	if len(f.Vnet) >= netio.VnetHdrLen && f.Vnet[0]&netio.VnetNeedsCsum != 0 {
		start := int(binary.LittleEndian.Uint16(f.Vnet[6:]))
		off := int(binary.LittleEndian.Uint16(f.Vnet[8:]))
		if !forward.CompleteChecksum(f.Data, start, off, p.End, p.Proto == 17) {
			w.count(CntTooBig)
			return false
		}
	}
	oh := 0
	if t != nil {
		oh = t.Overhead()
	}
	ip := f.Data[p.L3:p.End]
	nf := forward.Fragments(ip, mtu)
	for i := 0; i < nf; i++ {
		b := m.alloc(w, netio.VnetHdrLen+packet.EthLen+oh+mtu)
		if b == nil {
			w.count(CntTooBig)
			return false
		}
		clear(b[:netio.VnetHdrLen])
		n := forward.Fragment(b[netio.VnetHdrLen+packet.EthLen+oh:], ip, mtu, i)
		if t != nil {
			t.ID = m.id
			m.id++
			forward.Encap(b[netio.VnetHdrLen:], n, t)
		} else {
			copy(b[netio.VnetHdrLen:], f.Data[:packet.EthLen])
		}
		if !w.send(ifindex, b[:netio.VnetHdrLen+packet.EthLen+oh+n], false) {
			return false
		}
	}
	w.mcount(MCntFragmented)
	w.cnt.m[MCntFragsSent].Add(uint64(nf))
	return true
}

// fragNeeded queues ICMP fragmentation-needed (announcing mtu) from src
// to the sender of the frame p describes, within the rate limit.
func (w *Worker) fragNeeded(f *netio.Frame, src [4]byte, mtu int) {
	if !w.d.icmpLimit.allow() {
		w.mcount(MCntICMPLimited)
		return
	}
	p := &w.p
	mac := w.ownMAC(f.IfIndex, f)
	b := w.m.alloc(w, netio.VnetHdrLen+packet.EthLen+packet.IP4MinLen+8+576)
	clear(b[:netio.VnetHdrLen])
	n := forward.BuildFragNeeded(b[netio.VnetHdrLen:], f.Data[p.L3:p.End], src, uint16(mtu), mac, packet.Eth(f.Data).Src())
	if w.send(f.IfIndex, b[:netio.VnetHdrLen+n], false) {
		w.mcount(MCntFragNeeded)
	}
	if traceCompiled && w.ev != nil {
		w.ev.Verdict = dropVerdicts[CntTooBig] + " (ICMP fragmentation-needed sent)"
	}
}

// icmpLimiter is a token bucket over every ICMP error golvs generates,
// like the kernel's icmp_msgs_per_sec/icmp_msgs_burst (1000/s, burst 50):
// it refills at rate per second up to burst. Lock-free, shared by the
// workers; it is touched only when an error is about to be built.
type icmpLimiter struct {
	rate, burst int64 // rate < 0: send none
	start       time.Time
	stamp       atomic.Int64 // ns since start of the last refill
	credit      atomic.Int64
}

// Kernel defaults (net.ipv4.icmp_msgs_per_sec, icmp_msgs_burst).
const (
	DefaultICMPMsgsPerSec = 1000
	DefaultICMPMsgsBurst  = 50
)

func (l *icmpLimiter) init(rate, burst int) {
	if rate == 0 {
		rate = DefaultICMPMsgsPerSec
	}
	if burst <= 0 {
		burst = DefaultICMPMsgsBurst
	}
	l.rate, l.burst = int64(rate), int64(burst)
	l.start = time.Now()
	l.credit.Store(l.burst)
}

// allow takes a token if there is one.
func (l *icmpLimiter) allow() bool {
	if l.rate < 0 {
		return false
	}
	if l.take() {
		return true
	}
	now := int64(time.Since(l.start))
	old := l.stamp.Load()
	delta := min(now-old, int64(time.Second))
	incr := l.rate * delta / int64(time.Second)
	if incr <= 0 {
		return false
	}
	// One worker refills; the others see the new credit or none.
	if l.stamp.CompareAndSwap(old, now) {
		for {
			c := l.credit.Load()
			if l.credit.CompareAndSwap(c, min(c+incr, l.burst)) {
				break
			}
		}
	}
	return l.take()
}

func (l *icmpLimiter) take() bool {
	for {
		c := l.credit.Load()
		if c <= 0 {
			return false
		}
		if l.credit.CompareAndSwap(c, c-1) {
			return true
		}
	}
}
