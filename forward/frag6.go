package forward

import (
	"encoding/binary"
	"sort"
	"sync"
	"time"

	"github.com/golvs/golvs/packet"
)

// IPv6 fragments. Routers do not fragment IPv6 (RFC 8200 5): a packet too
// big for the next link is answered with Packet Too Big. But IPVS runs
// behind the kernel's IPv6 defragmenter (nf_defrag_ipv6), which hands it
// whole datagrams and records the largest fragment they came in
// (frag_max_size); IPVS forwards such a datagram when that fragment fits
// the egress MTU (__mtu_check_toobig_v6) and the output path cuts it again
// into fragments no larger than the largest it came in (ip6_fragment),
// with a new identification. golvs does the same: Reassembler6 is its
// defragmenter (AF_PACKET's PACKET_FANOUT_FLAG_DEFRAG reassembles IPv4
// only), Fragment6 its ip6_fragment. Only datagrams that came as
// fragments are ever fragmented; a whole packet too big gets Packet Too
// Big.
//
//	fragment i: | unfragmentable part (IPv6 header, hop-by-hop, ...) | fragment header | payload [i*step, ...) |
//	            the last unfragmentable header's next header is 44; step = (mtu - hlen - 8) &^ 7

// Fragments6 returns how many fragments of at most mtu bytes the IPv6
// datagram ip makes, its unfragmentable part being hlen bytes.
func Fragments6(ip []byte, hlen, mtu int) int {
	pl := packet.IP6Len + packet.IPv6(ip).PayloadLen() - hlen
	step := (mtu - hlen - packet.FragHLen) &^ 7
	if pl <= 0 || step <= 0 {
		return 1
	}
	return (pl + step - 1) / step
}

// Fragment6 writes fragment i of the IPv6 datagram ip into dst (at least
// mtu bytes) and returns its length. hlen is the unfragmentable part's
// length, prev the offset in ip of the next-header byte that leads to
// the fragmentable part (6: the IPv6 header's own), id the fragments'
// identification.
func Fragment6(dst, ip []byte, hlen, prev, mtu, i int, id uint32) int {
	tot := packet.IP6Len + packet.IPv6(ip).PayloadLen()
	step := (mtu - hlen - packet.FragHLen) &^ 7
	lo := hlen + i*step
	hi := min(lo+step, tot)
	n := hlen + packet.FragHLen + hi - lo
	copy(dst[:hlen], ip[:hlen])
	next := ip[prev]
	dst[prev] = packet.NHFragment
	f := dst[hlen : hlen+packet.FragHLen]
	f[0], f[1] = next, 0
	fo := uint16(i * step)
	if hi < tot {
		fo |= 1
	}
	binary.BigEndian.PutUint16(f[2:], fo)
	binary.BigEndian.PutUint32(f[4:], id)
	copy(dst[hlen+packet.FragHLen:n], ip[lo:hi])
	packet.IPv6(dst).SetPayloadLen(n - packet.IP6Len)
	return n
}

// Reassembler6 limits, as the kernel's ip6frag sysctls set them.
const (
	DefaultReasmBytes   = 4 << 20          // ip6frag_high_thresh
	DefaultReasmTimeout = 60 * time.Second // ip6frag_time
	// MaxReasmFrags bounds the fragments of one datagram (a 64 KiB
	// datagram at the minimum MTU takes 52): more, and the datagram is
	// dropped, so that no sender can make golvs sort thousands of 8-byte
	// pieces.
	MaxReasmFrags = 128
	// maxReasmQueues bounds the datagrams being reassembled at once.
	maxReasmQueues = 4096
	maxDatagram    = 65535 // the payload length field's limit
)

// ReasmConfig sets a Reassembler6 up. Zero values take the defaults.
type ReasmConfig struct {
	MaxBytes int           // memory held by datagrams being reassembled
	Timeout  time.Duration // a datagram not whole by then is dropped
}

// ReasmStatus is what Add did with a fragment.
type ReasmStatus uint8

const (
	ReasmHeld     ReasmStatus = iota // kept; the datagram is not whole yet
	ReasmComplete                    // the datagram is whole: Add returned it
	ReasmDup                         // a fragment already held (dropped)
	ReasmBad                         // invalid: not a multiple of 8, past 65535, past the end, no upper-layer header in the first
	ReasmOverlap                     // overlaps another (RFC 5722): its datagram is dropped
	ReasmTooMany                     // over MaxReasmFrags: its datagram is dropped
	ReasmNoRoom                      // no memory or queue left even after dropping the oldest
)

// ReasmStats counts the reassembler's outcomes.
type ReasmStats struct {
	Reassembled uint64 // datagrams made whole
	Timeouts    uint64 // datagrams dropped for not being whole in time
	Evicted     uint64 // datagrams dropped to make room for newer ones
	Queues      int    // datagrams being reassembled now
	Bytes       int    // memory they hold
}

type reasmKey struct {
	src, dst [16]byte
	id       uint32
}

type span struct{ lo, hi int }

type reasmQueue struct {
	key     reasmKey
	eth     [packet.EthLen]byte
	hdr     []byte // the first fragment's unfragmentable part
	prev    int    // in hdr: the next-header byte that named the fragment header
	next    uint8  // what the fragment header named
	data    []byte // the fragmentable part, at its offsets
	have    []span // received, sorted, disjoint
	total   int    // the fragmentable part's length; -1 until the last fragment came
	maxFrag int    // the largest fragment's packet length
	nfrags  int
	expires time.Time
	ifindex int
	older   *reasmQueue // LRU: toward the oldest
	newer   *reasmQueue
}

// Datagram is a reassembled IPv6 datagram, handed out by Add.
type Datagram struct {
	q *reasmQueue
	// MaxFrag is the largest fragment it came in (the kernel's
	// frag_max_size): it is sent on in fragments no larger.
	MaxFrag int
	// HLen is its unfragmentable part's length, Prev the offset of the
	// next-header byte that ends it (in the IPv6 packet): what Fragment6
	// takes.
	HLen, Prev int
	// IfIndex is the interface its fragments came in on.
	IfIndex int
}

// Len returns the length of the datagram's frame (Ethernet header
// included).
func (g *Datagram) Len() int { return packet.EthLen + len(g.q.hdr) + g.q.total }

// WriteTo writes the datagram's frame into b (at least Len bytes): the
// first fragment's Ethernet header, its unfragmentable part with the
// fragment header's next header in its place and the payload length of
// the whole, then the payload.
func (g *Datagram) WriteTo(b []byte) int {
	q := g.q
	copy(b, q.eth[:])
	ip := b[packet.EthLen:]
	copy(ip, q.hdr)
	ip[q.prev] = q.next
	copy(ip[len(q.hdr):], q.data[:q.total])
	packet.IPv6(ip).SetPayloadLen(len(q.hdr) - packet.IP6Len + q.total)
	return g.Len()
}

// Reassembler6 reassembles IPv6 fragments, as the kernel's nf_defrag_ipv6
// does for IPVS: fragments are keyed by addresses and identification,
// overlapping ones drop their whole datagram (RFC 5722), duplicates (a
// fragment inside what is held) are ignored, a first fragment must hold the upper-layer
// header (RFC 7112), and a datagram not whole within the timeout is
// dropped without an answer (nf_ct_frag6_expire sends none). Memory is
// bounded: at the limit the oldest datagrams are dropped to make room,
// and counted. Safe for concurrent use (fragments of one datagram may
// reach different workers); it is touched only by fragments.
type Reassembler6 struct {
	mu     sync.Mutex
	c      ReasmConfig
	q      map[reasmKey]*reasmQueue
	oldest *reasmQueue
	newest *reasmQueue
	mem    int
	st     ReasmStats
}

// NewReassembler6 makes a reassembler.
func NewReassembler6(c ReasmConfig) *Reassembler6 {
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultReasmBytes
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultReasmTimeout
	}
	return &Reassembler6{c: c, q: map[reasmKey]*reasmQueue{}}
}

// Stats returns the counters.
func (r *Reassembler6) Stats() ReasmStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	st.Queues, st.Bytes = len(r.q), r.mem
	return st
}

// Add takes one fragment of frame (p from packet.Decode: ReasonFragment
// with its fragment header described), copying what it needs. When it
// completes its datagram, Add returns it (ReasmComplete); the caller
// writes it out and hands it back with Free.
func (r *Reassembler6) Add(frame []byte, p *packet.Parsed, ifindex int, now time.Time) (*Datagram, ReasmStatus) {
	lo := p.FragOff
	payload := frame[p.FragHdr+packet.FragHLen : p.End]
	hi := lo + len(payload)
	if p.FragMore && len(payload)%8 != 0 || len(payload) == 0 && p.FragMore || hi > maxDatagram {
		return nil, ReasmBad
	}
	if lo == 0 && !upperHeaderWhole(p.FragProto, payload) {
		return nil, ReasmBad
	}
	k := reasmKey{p.Src6, p.Dst6, p.FragID}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expireLocked(now)
	q := r.q[k]
	if q == nil {
		if len(r.q) >= maxReasmQueues && !r.evictLocked() {
			return nil, ReasmNoRoom
		}
		q = &reasmQueue{key: k, total: -1, expires: now.Add(r.c.Timeout), ifindex: ifindex}
		r.q[k] = q
		r.linkLocked(q)
	}
	if !p.FragMore {
		if q.total >= 0 && q.total != hi || q.covers(hi) {
			r.dropLocked(q)
			return nil, ReasmOverlap // a second, different end, or data past it
		}
		q.total = hi
	} else if q.total >= 0 && hi > q.total {
		r.dropLocked(q)
		return nil, ReasmOverlap
	}
	switch q.place(lo, hi) {
	case placeDup:
		return nil, ReasmDup
	case placeOverlap:
		r.dropLocked(q)
		return nil, ReasmOverlap
	}
	if q.nfrags++; q.nfrags > MaxReasmFrags {
		r.dropLocked(q)
		return nil, ReasmTooMany
	}
	if hi > cap(q.data) {
		grow := max(hi, min(2*cap(q.data), maxDatagram))
		if q.total >= 0 {
			grow = max(hi, q.total)
		}
		for r.mem+grow-cap(q.data) > r.c.MaxBytes {
			if !r.evictOtherLocked(q) {
				r.dropLocked(q)
				return nil, ReasmNoRoom
			}
		}
		nd := make([]byte, hi, grow)
		copy(nd, q.data)
		r.mem += grow - cap(q.data)
		q.data = nd
	} else if hi > len(q.data) {
		q.data = q.data[:hi]
	}
	copy(q.data[lo:hi], payload)
	q.insert(lo, hi)
	q.maxFrag = max(q.maxFrag, p.End-p.L3)
	if lo == 0 {
		hl := p.FragHdr - p.L3
		if cap(q.hdr) < hl {
			r.mem += hl - cap(q.hdr)
			q.hdr = make([]byte, hl)
		}
		q.hdr = q.hdr[:hl]
		copy(q.hdr, frame[p.L3:p.FragHdr])
		q.prev = p.FragPrev - p.L3
		q.next = p.FragProto
		copy(q.eth[:], frame[:packet.EthLen])
		q.ifindex = ifindex
	}
	if q.total < 0 || q.hdr == nil || len(q.have) != 1 || q.have[0] != (span{0, q.total}) {
		return nil, ReasmHeld
	}
	if len(q.hdr)+q.total-packet.IP6Len > maxDatagram {
		r.dropLocked(q)
		return nil, ReasmBad
	}
	delete(r.q, q.key)
	r.unlinkLocked(q)
	r.st.Reassembled++
	return &Datagram{q: q, MaxFrag: q.maxFrag, HLen: len(q.hdr), Prev: q.prev, IfIndex: q.ifindex}, ReasmComplete
}

// Free hands a datagram back (its memory is released).
func (r *Reassembler6) Free(g *Datagram) {
	r.mu.Lock()
	r.mem -= cap(g.q.data) + cap(g.q.hdr)
	r.mu.Unlock()
	g.q = nil
}

// Expire drops the datagrams whose time is up (housekeeping calls it;
// Add does too).
func (r *Reassembler6) Expire(now time.Time) {
	r.mu.Lock()
	r.expireLocked(now)
	r.mu.Unlock()
}

func (r *Reassembler6) expireLocked(now time.Time) {
	for r.oldest != nil && !now.Before(r.oldest.expires) {
		r.st.Timeouts++
		r.dropLocked(r.oldest)
	}
}

// evictLocked drops the oldest datagram; false when there is none.
func (r *Reassembler6) evictLocked() bool {
	if r.oldest == nil {
		return false
	}
	r.st.Evicted++
	r.dropLocked(r.oldest)
	return true
}

// evictOtherLocked drops the oldest datagram that is not keep.
func (r *Reassembler6) evictOtherLocked(keep *reasmQueue) bool {
	for q := r.oldest; q != nil; q = q.newer {
		if q != keep {
			r.st.Evicted++
			r.dropLocked(q)
			return true
		}
	}
	return false
}

func (r *Reassembler6) dropLocked(q *reasmQueue) {
	delete(r.q, q.key)
	r.unlinkLocked(q)
	r.mem -= cap(q.data) + cap(q.hdr)
	q.data, q.hdr = nil, nil
}

func (r *Reassembler6) linkLocked(q *reasmQueue) {
	q.older, q.newer = r.newest, nil
	if r.newest != nil {
		r.newest.newer = q
	} else {
		r.oldest = q
	}
	r.newest = q
}

func (r *Reassembler6) unlinkLocked(q *reasmQueue) {
	if q.older != nil {
		q.older.newer = q.newer
	} else if r.oldest == q {
		r.oldest = q.newer
	}
	if q.newer != nil {
		q.newer.older = q.older
	} else if r.newest == q {
		r.newest = q.older
	}
	q.older, q.newer = nil, nil
}

type placement uint8

const (
	placeNew placement = iota
	placeDup
	placeOverlap
)

// place says how [lo, hi) relates to what the queue holds, as the
// kernel's inet_frag_queue_insert judges it: inside what is held, a
// duplicate (ignored); partly over it, an overlap.
func (q *reasmQueue) place(lo, hi int) placement {
	for _, s := range q.have {
		if lo >= s.lo && hi <= s.hi {
			return placeDup
		}
		if lo < s.hi && s.lo < hi {
			return placeOverlap
		}
	}
	return placeNew
}

// covers reports data at or past off.
func (q *reasmQueue) covers(off int) bool {
	return len(q.have) > 0 && q.have[len(q.have)-1].hi > off
}

// insert adds [lo, hi) (disjoint from what is there), merging neighbours.
func (q *reasmQueue) insert(lo, hi int) {
	i := sort.Search(len(q.have), func(i int) bool { return q.have[i].lo > lo })
	q.have = append(q.have, span{})
	copy(q.have[i+1:], q.have[i:])
	q.have[i] = span{lo, hi}
	// merge touching spans
	out := q.have[:0]
	for _, s := range q.have {
		if n := len(out); n > 0 && out[n-1].hi == s.lo {
			out[n-1].hi = s.hi
			continue
		}
		out = append(out, s)
	}
	q.have = out
}

// upperHeaderWhole reports whether a first fragment holds its upper-layer
// header whole (RFC 7112: the whole header chain in the first fragment).
func upperHeaderWhole(proto uint8, b []byte) bool {
	switch proto {
	case packet.NHTCP:
		return len(b) >= packet.TCPMinLen && len(b) >= int(b[12]>>4)*4
	case packet.NHUDP, packet.NHICMPv6:
		return len(b) >= 8
	}
	return true // another header: decoded once whole
}
