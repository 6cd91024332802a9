package bench

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/netio"
	"github.com/golvs/golvs/packet"
)

// The generator's frames, as the real servers' packet sockets see them:
//
//	0      14          34                54 (TCP) / 42 (UDP)
//	| eth  | IPv4, IHL 5 | TCP (20) or UDP (8) | ts u64 | tag u16 | zeros |
//
// ts is CLOCK_MONOTONIC in nanoseconds when the frame was filled; tag
// names the measurement (cell) the frame belongs to, so stragglers of one
// cell never count in the next. With 64-byte frames (the kernel's length:
// no FCS) a TCP frame has exactly the 10 payload bytes the stamp needs.
//
// With --ipv6 the same frames over IPv6 (a 40-byte header, no header
// checksum): at least MinFrame6 bytes.
const (
	ethLen     = 14
	ip4Len     = 20
	ip6Len     = 40
	tcpLen     = 20
	udpLen     = 8
	stampLen   = 10
	MinFrame   = ethLen + ip4Len + tcpLen + stampLen // 64
	MinFrame6  = ethLen + ip6Len + tcpLen + stampLen // 84
	MaxFrame   = 1514
	tcpFlagSYN = 0x02
	tcpFlagACK = 0x10
)

// Mix is a kind of generated traffic.
type Mix string

// The mixes.
const (
	MixSYN Mix = "syn" // every frame a TCP SYN of a new flow
	MixEst Mix = "est" // TCP ACKs over a fixed set of flows opened first
	MixUDP Mix = "udp" // UDP datagrams over a fixed set of flows
)

// frameSpec is one generated frame's fields.
type frameSpec struct {
	srcMAC, dstMAC [6]byte
	src, dst       [4]byte
	v6             bool // an IPv6 frame: src6 and dst6 instead
	src6, dst6     [16]byte
	proto          uint8
	sport, dport   uint16
	flags          uint8 // TCP
	seq            uint32
	size           int
	ts             uint64
	tag            uint16
}

// buildFrame writes the frame of s into b (len(b) >= s.size) with both
// checksums computed, and returns its length.
func buildFrame(b []byte, s *frameSpec) int {
	n := s.size
	b = b[:n]
	copy(b[0:6], s.dstMAC[:])
	copy(b[6:12], s.srcMAC[:])
	var l4 []byte
	if s.v6 {
		binary.BigEndian.PutUint16(b[12:], 0x86dd)
		ip := b[ethLen : ethLen+ip6Len]
		binary.BigEndian.PutUint32(ip[0:], 6<<28)
		binary.BigEndian.PutUint16(ip[4:], uint16(n-ethLen-ip6Len))
		ip[6], ip[7] = s.proto, 64
		copy(ip[8:24], s.src6[:])
		copy(ip[24:40], s.dst6[:])
		l4 = b[ethLen+ip6Len:]
	} else {
		binary.BigEndian.PutUint16(b[12:], 0x0800)
		ip := b[ethLen : ethLen+ip4Len]
		ip[0], ip[1] = 0x45, 0
		binary.BigEndian.PutUint16(ip[2:], uint16(n-ethLen))
		binary.BigEndian.PutUint16(ip[4:], uint16(s.seq))
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		ip[8], ip[9] = 64, s.proto
		ip[10], ip[11] = 0, 0
		copy(ip[12:16], s.src[:])
		copy(ip[16:20], s.dst[:])
		packet.IPv4(ip).SetChecksum(packet.IPv4(ip).HeaderChecksum())
		l4 = b[ethLen+ip4Len:]
	}
	hl := udpLen
	if s.proto == 6 {
		hl = tcpLen
	}
	binary.BigEndian.PutUint16(l4[0:], s.sport)
	binary.BigEndian.PutUint16(l4[2:], s.dport)
	if s.proto == 6 {
		binary.BigEndian.PutUint32(l4[4:], s.seq)
		ack := uint32(0)
		if s.flags&tcpFlagACK != 0 {
			ack = 1
		}
		binary.BigEndian.PutUint32(l4[8:], ack)
		l4[12], l4[13] = 5<<4, s.flags
		binary.BigEndian.PutUint16(l4[14:], 65535)
		l4[16], l4[17], l4[18], l4[19] = 0, 0, 0, 0
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		l4[6], l4[7] = 0, 0
	}
	pl := l4[hl:]
	binary.BigEndian.PutUint64(pl[0:], s.ts)
	binary.BigEndian.PutUint16(pl[8:], s.tag)
	clear(pl[stampLen:])
	var c uint16
	if s.v6 {
		c = packet.L4Checksum6(&s.src6, &s.dst6, s.proto, l4)
	} else {
		c = packet.L4Checksum(s.src, s.dst, s.proto, l4)
	}
	if s.proto == 6 {
		binary.BigEndian.PutUint16(l4[16:], c)
	} else {
		binary.BigEndian.PutUint16(l4[6:], c)
	}
	return n
}

// stampOf returns the stamp of a generated frame (ts, tag), false when b
// is not one. It looks through one IPIP header (TUN) and past TCP options
// (FULLNAT's TOA), so every forwarding method's output is counted.
func stampOf(b []byte) (ts uint64, tag uint16, ok bool) {
	if len(b) < ethLen+ip4Len || binary.BigEndian.Uint16(b[12:]) != 0x0800 && binary.BigEndian.Uint16(b[12:]) != 0x86dd {
		return 0, 0, false
	}
	off := ethLen
	for range 2 {
		var proto uint8
		switch {
		case len(b) >= off+ip4Len && b[off]>>4 == 4:
			proto = b[off+9]
			off += int(b[off]&0xf) * 4
		case len(b) >= off+ip6Len && b[off]>>4 == 6:
			proto = b[off+6]
			off += ip6Len
		default:
			return 0, 0, false
		}
		switch proto {
		case 4, 41: // IP in IP (either family): the inner header follows
			continue
		case 6:
			if len(b) < off+tcpLen {
				return 0, 0, false
			}
			off += int(b[off+12]>>4) * 4
		case 17:
			off += udpLen
		default:
			return 0, 0, false
		}
		if len(b) < off+stampLen {
			return 0, 0, false
		}
		return binary.BigEndian.Uint64(b[off:]), binary.BigEndian.Uint16(b[off+8:]), true
	}
	return 0, 0, false
}

// monoClock reads CLOCK_MONOTONIC through Go's vDSO-backed monotonic
// clock: the base is read once with clock_gettime, then time.Since (which
// uses the same clock) adds to it.
type monoClock struct {
	t0   time.Time
	base int64
}

func newMonoClock() monoClock {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return monoClock{t0: time.Now(), base: ts.Nano()}
}

func (m *monoClock) now() uint64 { return uint64(m.base + int64(time.Since(m.t0))) }

// flowPlan maps a packet index to its flow: source address and port from
// the client's /24 (198.18.0.0/15, lab-plan.md), destination chosen by the
// caller's targets.
type flowPlan struct {
	mix      Mix
	flows    int       // est, udp: the set's size
	targets  [][4]byte // destination addresses, picked by flow
	v6       bool      // IPv6 frames: sources from 2001:db8:18::/64, targets6
	targets6 [][16]byte
	next     uint64 // syn: next new flow
	open     bool   // est: SYNs on the set's flows, to open them
}

// SYN flows use sources 198.18.0.10-.99, the fixed sets .150-.249, so the
// two never share a connection.
const (
	synHosts = 90
	setHosts = 100
	minPort  = 1024
	numPorts = 65536 - minPort
)

func (p *flowPlan) flow(k uint64, s *frameSpec) {
	var i uint64
	var host byte
	switch p.mix {
	case MixSYN:
		i = p.next % (synHosts * numPorts)
		p.next++
		host = byte(10 + i%synHosts)
		s.sport = uint16(minPort + i/synHosts)
		s.flags = tcpFlagSYN
	default:
		i = k % uint64(p.flows)
		host = byte(150 + i%setHosts)
		s.sport = uint16(minPort + i/setHosts)
		s.flags = tcpFlagACK
		if p.open {
			s.flags = tcpFlagSYN
		}
	}
	if p.v6 {
		s.v6 = true
		s.src6 = [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 15: host}
		s.dst6 = p.targets6[i%uint64(len(p.targets6))]
	} else {
		s.src = [4]byte{198, 18, 0, host}
		s.dst = p.targets[i%uint64(len(p.targets))]
	}
	if p.mix == MixUDP {
		s.proto, s.dport, s.flags = 17, 53, 0
	} else {
		s.proto, s.dport = 6, 80
	}
	s.seq = uint32(k)
}

// frameTmpl is a pre-built frame of one mix (as trafgen sends): every
// field that is the same for each frame is written once, with the sums of
// both checksums over them; fill copies it and adds the fields that vary
// (addresses, ports, sequence, stamp), finishing each checksum with a few
// additions instead of a pass over the headers.
type frameTmpl struct {
	b     [MaxFrame]byte
	n     int
	v6    bool
	proto uint8
	ipSum uint32 // IPv4 header, id, addresses and checksum taken as zero
	l4Sum uint32 // pseudo header's protocol and length, L4 header and payload, varying fields taken as zero
}

// newTmpl builds the template of frames like s (its MACs, size, protocol
// and flags; the varying fields are ignored).
func newTmpl(s frameSpec) *frameTmpl {
	t := &frameTmpl{n: s.size, proto: s.proto, v6: s.v6}
	s.src, s.dst, s.sport, s.seq, s.ts, s.tag = [4]byte{}, [4]byte{}, 0, 0, 0, 0
	s.src6, s.dst6 = [16]byte{}, [16]byte{}
	buildFrame(t.b[:], &s)
	hl := ip4Len
	if s.v6 {
		hl = ip6Len // no header checksum
	} else {
		ip := t.b[ethLen : ethLen+ip4Len]
		ip[10], ip[11] = 0, 0
		t.ipSum = packet.Sum(ip, 0)
	}
	l4 := t.b[ethLen+hl : t.n]
	off := 16
	if s.proto == 17 {
		off = 6
	}
	l4[off], l4[off+1] = 0, 0
	t.l4Sum = packet.Sum(l4, uint32(s.proto)+uint32(len(l4)))
	return t
}

func sum16(v uint32) uint32 { return v>>16 + v&0xffff }

// fill writes the frame of s into b (len(b) >= t.n) and returns its length:
// the same bytes buildFrame writes for s.
func (t *frameTmpl) fill(b []byte, s *frameSpec) int {
	b = b[:t.n]
	copy(b, t.b[:t.n])
	var l4 []byte
	var addrs uint32
	if t.v6 {
		ip := b[ethLen : ethLen+ip6Len]
		copy(ip[8:24], s.src6[:])
		copy(ip[24:40], s.dst6[:])
		addrs = packet.Sum(ip[8:40], 0)
		l4 = b[ethLen+ip6Len:]
	} else {
		ip := b[ethLen : ethLen+ip4Len]
		id := uint16(s.seq)
		binary.BigEndian.PutUint16(ip[4:], id)
		copy(ip[12:16], s.src[:])
		copy(ip[16:20], s.dst[:])
		src, dst := binary.BigEndian.Uint32(s.src[:]), binary.BigEndian.Uint32(s.dst[:])
		addrs = sum16(src) + sum16(dst)
		binary.BigEndian.PutUint16(ip[10:], ^packet.Fold(t.ipSum+addrs+uint32(id)))
		l4 = b[ethLen+ip4Len:]
	}
	binary.BigEndian.PutUint16(l4[0:], s.sport)
	v := t.l4Sum + addrs + uint32(s.sport)
	pl := l4[udpLen:]
	if t.proto == 6 {
		binary.BigEndian.PutUint32(l4[4:], s.seq)
		v += sum16(s.seq)
		pl = l4[tcpLen:]
	}
	binary.BigEndian.PutUint64(pl[0:], s.ts)
	binary.BigEndian.PutUint16(pl[8:], s.tag)
	v += sum16(uint32(s.ts>>32)) + sum16(uint32(s.ts)) + uint32(s.tag)
	c := ^packet.Fold(v)
	if t.proto == 6 {
		binary.BigEndian.PutUint16(l4[16:], c)
	} else {
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
	}
	return t.n
}

// genResult is what one generator run sent.
type genResult struct {
	Sent    uint64
	Errors  uint64
	Elapsed time.Duration
}

// genBatch is the most frames the generator writes into its TX ring before
// it kicks the kernel.
const genBatch = 256

// generator sends frames from the client's TX ring (PACKET_TX_RING):
// pre-built frames written in place into the ring's slots, one kick per
// batch, so that it offers more than the fastest forwarder takes.
type generator struct {
	tx    *netio.TxRing
	spec  frameSpec
	size  int // the frames' length (IPv6 ones at least MinFrame6)
	clock monoClock
	tid   atomic.Int32
}

func newGenerator(tx *netio.TxRing, srcMAC, dstMAC [6]byte, size int, clock monoClock) *generator {
	return &generator{tx: tx, clock: clock, size: size, spec: frameSpec{srcMAC: srcMAC, dstMAC: dstMAC, size: size}}
}

// pause is the generator's wait for its next frame's time: a sleep in
// the kernel (nanosleep, on a thread whose timer slack is 1 us, see
// genThread), never one in Go's scheduler. The generator's goroutine is
// locked to its thread, so runtime.Gosched or time.Sleep parked the
// thread until a P picked the goroutine up again; with the netio
// ceiling's forwarder holding the process's other P that took up to some
// milliseconds, and the generator then sent what it owed in bursts of up
// to genBatch frames: at 100,000 frames a second the ceiling saw about
// 400 bursts a second (its CPU woken 400 times) while every forwarder in
// another process saw the frames evenly spaced (32,000 wake-ups). The
// ceiling's row then measured batches at millisecond latency, not the
// load the others were offered.
func pause(d time.Duration) {
	ts := unix.NsecToTimespec(d.Nanoseconds())
	for {
		err := unix.Nanosleep(&ts, &ts)
		if err != unix.EINTR {
			return
		}
	}
}

// genThread readies the calling (locked) thread to run the generator:
// a timer slack of 1 us, so its short pauses end when due instead of up
// to 50 us later (the default slack).
func genThread() {
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1000, 0, 0, 0)
}

// run sends plan's frames with tag for at most d and at most max frames,
// at rate frames a second (0: as fast as the ring takes them). It runs on
// the calling goroutine, which must be locked to its thread (pinning).
func (g *generator) run(plan *flowPlan, tag uint16, rate float64, d time.Duration, max uint64) genResult {
	tx := g.tx
	st0 := tx.Stats()
	// The template of this plan's frames: protocol and flags from its
	// first flow.
	g.spec.tag = tag
	g.spec.v6, g.spec.size = plan.v6, g.size
	if plan.v6 && g.size < MinFrame6 {
		g.spec.size = MinFrame6
	}
	first := *plan
	first.flow(0, &g.spec)
	tmpl := newTmpl(g.spec)
	start := time.Now()
	var k uint64
	for k < max {
		el := time.Since(start)
		if el >= d {
			break
		}
		n := uint64(genBatch)
		if rate > 0 {
			due := uint64(rate*el.Seconds()) + 1
			if due <= k {
				pause(time.Duration(float64(k+1-due)/rate*1e9) + time.Microsecond)
				continue
			}
			n = min(n, due-k)
		}
		n = min(n, max-k)
		for i := uint64(0); i < n; i++ {
			b := tx.Slot()
			if b == nil {
				break // full: the kick below frees slots
			}
			plan.flow(k, &g.spec)
			g.spec.ts = g.clock.now()
			clear(b[:netio.VnetHdrLen])
			tx.Commit(netio.VnetHdrLen + tmpl.fill(b[netio.VnetHdrLen:], &g.spec))
			k++
		}
		tx.Flush()
	}
	// What is still in the ring goes out now, counted in this run.
	for i := 0; i < 1000 && tx.Pending() > 0; i++ {
		tx.Flush()
	}
	st := tx.Stats()
	return genResult{Sent: st.Sent - st0.Sent, Errors: st.Errors + st.Dropped - st0.Errors - st0.Dropped, Elapsed: time.Since(start)}
}
