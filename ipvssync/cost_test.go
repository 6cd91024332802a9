package ipvssync

import (
	"fmt"
	"testing"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
)

// The sync cost: messages and bytes a master sends per new connection and
// per established connection per minute, at 10,000 new connections a
// second.
//
// Method: a virtual-time simulation of the real code path. Synthetic TCP
// flag sequences go through the real connection table (conntrack
// LookupIn/LookupOut/Create) with the real sync master on it (its hook,
// the kernel's sending rules, its message batching); the clock is
// virtual, and the sender is replaced by a loop that takes messages off
// the master's queue every 20 ms of virtual time (IPVS_SYNC_SEND_DELAY)
// and the open message once it is 2 s old, counting them. Bytes are UDP
// payload; on the wire each message adds 42 (Ethernet, IPv4, UDP).

type costSim struct {
	r                    *rig
	msgs, bytes, records int
	nextDrain            time.Duration
}

func (s *costSim) drain(force bool) {
	if !force && s.r.now < s.nextDrain {
		return
	}
	s.nextDrain = s.r.now + sendDelay
	for _, t := range s.r.m.ms {
		for msg := t.next(); msg != nil; msg = t.next() {
			s.msgs++
			s.bytes += msg.Len()
			s.records += msg.Conns()
			t.recycle(msg)
		}
	}
}

func (s *costSim) reset() { s.msgs, s.bytes, s.records = 0, 0, 0 }

// shortConn is one HTTP-like NAT exchange, client closing first: SYN,
// SYN-ACK, ACK, request, response, ACK, FIN, FIN, ACK. Its inbound
// packets move it SYN_RECV, ESTABLISHED, ESTABLISHED (3rd: synced),
// ESTABLISHED, CLOSE_WAIT (synced), TIME_WAIT (synced).
func (s *costSim) shortConn(r *rig, k conntrack.Key) {
	nc := conntrack.NewConn{In: k, Dest: r.dest, Method: r.dest.Method(), ClientIf: 1,
		Out: conntrack.Key{SrcIP: [4]byte{198, 19, 0, 11}, DstIP: k.SrcIP, SrcPort: 8080, DstPort: k.SrcPort, Proto: 6}}
	if _, err := r.ct.Create(&nc, fSYN, nil); err != nil {
		r.t.Fatal(err)
	}
	var h conntrack.Hit
	out := nc.Out
	r.ct.LookupOut(&out, fSYN|fACK, &h)
	r.ct.LookupIn(&k, fACK, &h)
	r.ct.LookupIn(&k, fACK|fPSH, &h)
	r.ct.LookupOut(&out, fACK|fPSH, &h)
	r.ct.LookupIn(&k, fACK, &h)
	r.ct.LookupIn(&k, fFIN|fACK, &h)
	r.ct.LookupOut(&out, fFIN|fACK, &h)
	r.ct.LookupIn(&k, fACK, &h)
}

func clientKey(i int) conntrack.Key {
	return conntrack.Key{SrcIP: [4]byte{198, 18, byte(i >> 16), byte(i >> 8)}, DstIP: [4]byte{198, 18, 0, 100},
		SrcPort: uint16(1024 + i&0xff), DstPort: 80, Proto: 6}
}

func newCostRig(b *testing.B, sys Sysctls, maxEntries int) *rig {
	r := newRig(b, sys, ipvs.MethodMasq)
	r.ct = conntrack.New(conntrack.Config{Shards: 64, MaxEntries: maxEntries})
	r.ct.SetSyncHook(r.m.hook)
	return r
}

// BenchmarkSyncCost reports sync messages and bytes per new connection
// (each op is one new connection at 10k/s) and per established
// connection-minute (each op is one connection kept for a virtual minute,
// sending N inbound packets a second).
func BenchmarkSyncCost(b *testing.B) {
	b.Run("new-conns-10k-per-s", func(b *testing.B) {
		r := newCostRig(b, DefaultSysctls(), b.N+16)
		s := &costSim{r: r}
		for i := 0; i < b.N; i++ {
			r.now = time.Duration(i) * 100 * time.Microsecond // 10,000 a second
			s.shortConn(r, clientKey(i))
			s.drain(false)
		}
		r.now += flushTime
		s.drain(true)
		b.ReportMetric(float64(s.msgs)/float64(b.N), "msgs/newconn")
		b.ReportMetric(float64(s.bytes)/float64(b.N), "bytes/newconn")
		b.ReportMetric(float64(s.records)/float64(b.N), "records/newconn")
	})
	for _, tc := range []struct {
		pps     int
		refresh time.Duration
	}{{1, 0}, {10, 0}, {20, 0}, {20, time.Minute}} {
		name := fmt.Sprintf("established-%dpps", tc.pps)
		if tc.refresh > 0 {
			name += fmt.Sprintf("-refresh%ds", int(tc.refresh/time.Second))
		}
		b.Run(name, func(b *testing.B) {
			sys := DefaultSysctls()
			sys.RefreshPeriod = tc.refresh
			r := newCostRig(b, sys, b.N+16)
			s := &costSim{r: r}
			keys := make([]conntrack.Key, b.N)
			for i := range keys {
				keys[i] = clientKey(i)
				nc := conntrack.NewConn{In: keys[i], Dest: r.dest, Method: r.dest.Method(), ClientIf: 1}
				if _, err := r.ct.Create(&nc, fSYN, nil); err != nil {
					b.Fatal(err)
				}
				var h conntrack.Hit
				r.ct.LookupIn(&keys[i], fACK, &h)
				r.ct.LookupIn(&keys[i], fACK|fPSH, &h) // 3rd packet: synced once at setup
			}
			r.now += flushTime
			s.drain(true)
			s.reset()
			start := r.now
			step := time.Second / time.Duration(tc.pps)
			var h conntrack.Hit
			for at := start; at < start+time.Minute; at += step {
				r.now = at
				for i := range keys {
					r.ct.LookupIn(&keys[i], fACK|fPSH, &h)
				}
				s.drain(false)
			}
			r.now = start + time.Minute + flushTime
			s.drain(true)
			b.ReportMetric(float64(s.msgs)/float64(b.N), "msgs/conn-min")
			b.ReportMetric(float64(s.bytes)/float64(b.N), "bytes/conn-min")
			b.ReportMetric(float64(s.records)/float64(b.N), "records/conn-min")
		})
	}
}

// BenchmarkSyncHook is the packet path's cost of a running master: one
// inbound packet on an established conn, with and without the hook.
func BenchmarkSyncHook(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("master=%v", on), func(b *testing.B) {
			r := newCostRig(b, DefaultSysctls(), 1<<16)
			if !on {
				r.ct.SetSyncHook(nil)
			}
			keys := make([]conntrack.Key, 1024)
			var h conntrack.Hit
			for i := range keys {
				keys[i] = clientKey(i)
				nc := conntrack.NewConn{In: keys[i], Dest: r.dest, Method: r.dest.Method(), ClientIf: 1}
				if _, err := r.ct.Create(&nc, fSYN, nil); err != nil {
					b.Fatal(err)
				}
				r.ct.LookupIn(&keys[i], fACK, &h)
			}
			s := &costSim{r: r}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r.ct.LookupIn(&keys[i&1023], fACK|fPSH, &h)
				if i&1023 == 0 {
					s.drain(true)
				}
			}
		})
	}
}

// With a master running, an inbound packet allocates nothing once the
// master's buffers are warm, whether or not the packet's conn is sent.
func TestSyncHookAllocs(t *testing.T) {
	r := newRig(t, DefaultSysctls(), ipvs.MethodMasq)
	keys := make([]conntrack.Key, 256)
	var h conntrack.Hit
	for i := range keys {
		keys[i] = clientKey(i)
		nc := conntrack.NewConn{In: keys[i], Dest: r.dest, Method: r.dest.Method(), ClientIf: 1}
		if _, err := r.ct.Create(&nc, fSYN, nil); err != nil {
			t.Fatal(err)
		}
		r.ct.LookupIn(&keys[i], fACK, &h)
	}
	s := &costSim{r: r}
	i := 0
	// A step is 4096 packets: about 80 records, two messages made, queued,
	// sent and recycled, so any allocation per message shows.
	step := func() {
		for j := 0; j < 4096; j++ {
			r.ct.LookupIn(&keys[i&255], fACK|fPSH, &h)
			i++
			if j&511 == 0 {
				s.drain(true)
			}
		}
		s.drain(true)
	}
	for k := 0; k < 20; k++ {
		step() // warm: buffers made and recycled
	}
	if n := testing.AllocsPerRun(50, step); n != 0 {
		t.Fatalf("%v allocations per 4096 packets (%d records sent so far)", n, s.records)
	}
	if s.records == 0 {
		t.Fatal("nothing was sent: the test exercised no sync")
	}
}
