package ipvssync

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
)

const (
	fSYN = 0x02
	fACK = 0x10
	fFIN = 0x01
	fPSH = 0x08
)

// rig is a connection table with a master daemon's hook on it, its
// sender goroutines not started: what the packet path queues stays in
// the master's buffers, where the test reads it.
type rig struct {
	t    testing.TB
	ct   *conntrack.Table
	m    *master
	dest *ipvs.Dest
	now  time.Duration
}

func newRig(t testing.TB, sys Sysctls, method ipvs.Method) *rig {
	t.Helper()
	if err := sys.Check(); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, ct: conntrack.New(conntrack.Config{Shards: 4})}
	svc := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: a4("198.18.0.100"), Port: 80}
	r.dest = ipvs.NewDest(svc, ipvs.DestConfig{Addr: a4("198.19.0.11"), Port: 8080, Method: method, Weight: 1})
	d := &Daemon{o: Options{Table: r.ct, Sysctls: sys}}
	cfg, err := Config{Role: Master, SyncID: 9}.fill(1500)
	if err != nil {
		t.Fatal(err)
	}
	r.m = newMaster(d, cfg, sys, []Sender{&memSender{t: &MemTransport{}}})
	r.m.since = func() time.Duration { return r.now }
	r.ct.SetSyncHook(r.m.hook)
	return r
}

func (r *rig) key(cport uint16) conntrack.Key {
	return conntrack.Key{SrcIP: [4]byte{198, 18, 0, 10}, DstIP: [4]byte{198, 18, 0, 100}, SrcPort: cport, DstPort: 80, Proto: 6}
}

// open creates a conn with a SYN, through tpl when given.
func (r *rig) open(cport uint16, tpl conntrack.Ref) {
	r.t.Helper()
	nc := conntrack.NewConn{In: r.key(cport), Dest: r.dest, Tpl: tpl, Method: r.dest.Method(), ClientIf: 1}
	if nc.Method == ipvs.MethodMasq {
		nc.Out = conntrack.Key{SrcIP: [4]byte{198, 19, 0, 11}, DstIP: [4]byte{198, 18, 0, 10}, SrcPort: 8080, DstPort: cport, Proto: 6}
	} else {
		nc.NoOutput = true
	}
	if _, err := r.ct.Create(&nc, fSYN, nil); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) in(cport uint16, flags uint8) {
	r.t.Helper()
	k := r.key(cport)
	var h conntrack.Hit
	if r.ct.LookupIn(&k, flags, &h) != conntrack.Found {
		r.t.Fatalf("conn %d not found", cport)
	}
}

func (r *rig) out(cport uint16, flags uint8) {
	r.t.Helper()
	k := conntrack.Key{SrcIP: [4]byte{198, 19, 0, 11}, DstIP: [4]byte{198, 18, 0, 10}, SrcPort: 8080, DstPort: cport, Proto: 6}
	var h conntrack.Hit
	if !r.ct.LookupOut(&k, flags, &h) {
		r.t.Fatalf("reply of conn %d not found", cport)
	}
}

// take returns the records queued since the last take, one word each:
// "C<cport>:<state>" for a conn, "T:<state>" for a template.
func (r *rig) take() string {
	var out []string
	for _, t := range r.m.ms {
		t.mu.Lock()
		msgs := append(t.queue, t.cur)
		t.queue, t.cur = nil, nil
		t.mu.Unlock()
		for _, msg := range msgs {
			if msg == nil {
				continue
			}
			d := Decoder{}
			recs, _, drop := d.Decode(msg.Bytes())
			if drop != OK {
				r.t.Fatalf("master wrote a message its backup drops: %v", drop)
			}
			for _, rec := range recs {
				if rec.Conn.Flags&FlagTemplate != 0 {
					out = append(out, fmt.Sprintf("T:%d", rec.State))
				} else {
					out = append(out, fmt.Sprintf("C%d:%s", rec.CPort, conntrack.StateName(6, false, uint8(rec.State))))
				}
			}
		}
	}
	return strings.Join(out, " ")
}

// The sending rules of spec §7.4 with the kernel's defaults: a TCP conn
// is sent at its 3rd inbound packet once ESTABLISHED, then every 50th
// (53, 103, ...), and at once on a change into FIN_WAIT, CLOSE,
// CLOSE_WAIT or TIME_WAIT; SYN_RECV is never sent; a change seen only
// on a reply waits for the next inbound packet.
func TestSendRulesDefaults(t *testing.T) {
	r := newRig(t, DefaultSysctls(), ipvs.MethodMasq)
	r.open(1000, conntrack.Ref{}) // pkt 1: SYN_RECV
	r.in(1000, fACK)              // pkt 2: ESTABLISHED (2 % 50 != 3)
	if got := r.take(); got != "" {
		t.Fatalf("after 2 packets: %q, want nothing", got)
	}
	r.in(1000, fACK|fPSH) // pkt 3
	if got := r.take(); got != "C1000:ESTABLISHED" {
		t.Fatalf("3rd packet: %q", got)
	}
	for i := 4; i <= 102; i++ {
		r.in(1000, fACK)
	}
	if got := r.take(); got != "C1000:ESTABLISHED" { // pkt 53 only
		t.Fatalf("packets 4..102: %q", got)
	}
	r.in(1000, fACK) // 103
	r.in(1000, fFIN) // 104: CLOSE_WAIT (NAT), forced
	r.in(1000, fACK) // 105: still CLOSE_WAIT
	r.out(1000, fFIN|fACK)
	if got := r.take(); got != "C1000:ESTABLISHED C1000:CLOSE_WAIT" {
		t.Fatalf("FIN: %q", got)
	}
	r.in(1000, fACK) // TIME_WAIT, forced
	if got := r.take(); got != "C1000:TIME_WAIT" {
		t.Fatalf("last ACK: %q", got)
	}
}

// A DR conn goes to FIN_WAIT on the client's FIN (the input-only table).
func TestSendRulesDR(t *testing.T) {
	r := newRig(t, DefaultSysctls(), ipvs.MethodRoute)
	r.open(2000, conntrack.Ref{})
	r.in(2000, fACK)
	r.in(2000, fACK)
	r.in(2000, fFIN)
	r.in(2000, fACK)
	if got := r.take(); got != "C2000:ESTABLISHED C2000:FIN_WAIT" {
		t.Fatalf("%q", got)
	}
}

// With persistence the template is sent after every packet of a conn it
// controls (period > 0: templates skip the packet count), and with
// sync_persist_mode only the template is.
func TestSendRulesTemplate(t *testing.T) {
	for _, persistMode := range []bool{false, true} {
		t.Run(fmt.Sprint("persist_mode=", persistMode), func(t *testing.T) {
			sys := DefaultSysctls()
			sys.PersistMode = persistMode
			r := newRig(t, sys, ipvs.MethodMasq)
			tk := conntrack.Key{SrcIP: [4]byte{198, 18, 0, 0}, DstIP: [4]byte{198, 18, 0, 100}, DstPort: 80, Proto: 6, Kind: conntrack.KindTemplate}
			tpl, err := r.ct.Create(&conntrack.NewConn{In: tk, Dest: r.dest, Method: r.dest.Method(), Template: true, Timeout: 360}, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.take(); got != "" {
				t.Fatalf("template creation sent %q", got)
			}
			r.open(3000, tpl)
			r.in(3000, fACK)
			r.in(3000, fACK)
			want := "T:0 T:1 C3000:ESTABLISHED T:1"
			if persistMode {
				want = "T:0 T:1 T:1"
			}
			if got := r.take(); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
	}
}

// sync_threshold "3 0" with no refresh period: a conn is sent once, when
// its packet count is the threshold, and then only on state changes.
func TestSendRulesNoPeriod(t *testing.T) {
	sys := DefaultSysctls()
	sys.Period = 0
	r := newRig(t, sys, ipvs.MethodMasq)
	r.open(4000, conntrack.Ref{})
	for i := 2; i <= 200; i++ {
		r.in(4000, fACK)
	}
	r.in(4000, fFIN)
	if got := r.take(); got != "C4000:ESTABLISHED C4000:CLOSE_WAIT" {
		t.Fatalf("%q", got)
	}
}

// sync_refresh_period suppresses resends until the conn's expiry moved by
// the period (or half its timeout); sync_retries allows that many extra
// sends, each at least period/8 after the last.
func TestSendRulesRefresh(t *testing.T) {
	t.Run("no retries", func(t *testing.T) {
		sys := DefaultSysctls()
		sys.RefreshPeriod = 20 * time.Second
		r := newRig(t, sys, ipvs.MethodMasq)
		r.open(5000, conntrack.Ref{})
		r.in(5000, fACK)
		r.in(5000, fACK) // 3: sent
		if got := r.take(); got != "C5000:ESTABLISHED" {
			t.Fatalf("first: %q", got)
		}
		for i := 4; i <= 53; i++ {
			r.in(5000, fACK)
		}
		if got := r.take(); got != "" {
			t.Fatalf("pkt 53 at the same time: %q, want nothing", got)
		}
		r.now += 25 * time.Second
		for i := 54; i <= 103; i++ {
			r.in(5000, fACK)
		}
		if got := r.take(); got != "C5000:ESTABLISHED" {
			t.Fatalf("pkt 103, 25 s later: %q", got)
		}
	})
	t.Run("one retry", func(t *testing.T) {
		sys := DefaultSysctls()
		sys.RefreshPeriod = 20 * time.Second
		sys.Retries = 1
		r := newRig(t, sys, ipvs.MethodMasq)
		r.open(5001, conntrack.Ref{})
		r.in(5001, fACK)
		r.in(5001, fACK) // 3
		for i := 4; i <= 53; i++ {
			r.in(5001, fACK)
		}
		if got := r.take(); got != "C5001:ESTABLISHED" {
			t.Fatalf("pkts 3..53 at once: %q (53 is within period/8 of 3)", got)
		}
		r.now += 3 * time.Second // past 20s/8
		for i := 54; i <= 153; i++ {
			r.in(5001, fACK)
		}
		if got := r.take(); got != "C5001:ESTABLISHED" {
			t.Fatalf("pkts 103 (retry) and 153 (retries spent): %q", got)
		}
	})
}

// A template's resends with sync_refresh_period: sent with the first
// packet of a conn it controls, then held back (every packet would send
// it otherwise, templates skipping the packet count) until its expiry
// moved by the period; with sync_threshold "3 0" and no refresh period
// it is sent once, at its 3rd count.
func TestSendRulesTemplateRefresh(t *testing.T) {
	mk := func(sys Sysctls) (*rig, conntrack.Ref) {
		r := newRig(t, sys, ipvs.MethodMasq)
		tk := conntrack.Key{SrcIP: [4]byte{198, 18, 0, 0}, DstIP: [4]byte{198, 18, 0, 100}, DstPort: 80, Proto: 6, Kind: conntrack.KindTemplate}
		tpl, err := r.ct.Create(&conntrack.NewConn{In: tk, Dest: r.dest, Method: r.dest.Method(), Template: true, Timeout: 360}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r, tpl
	}
	t.Run("refresh", func(t *testing.T) {
		sys := DefaultSysctls()
		sys.RefreshPeriod = 20 * time.Second
		r, tpl := mk(sys)
		r.open(7000, tpl)
		for i := 2; i <= 10; i++ {
			r.in(7000, fACK)
		}
		if got := r.take(); got != "T:0 C7000:ESTABLISHED" {
			t.Fatalf("10 packets at once: %q, want the template once", got)
		}
		r.now += 10 * time.Second
		r.in(7000, fACK)
		if got := r.take(); got != "" {
			t.Fatalf("10 s later: %q, want nothing", got)
		}
		r.now += 15 * time.Second
		r.in(7000, fACK)
		if got := r.take(); got != "T:1" {
			t.Fatalf("25 s later: %q, want the template", got)
		}
	})
	t.Run("once", func(t *testing.T) {
		sys := DefaultSysctls()
		sys.Period = 0
		r, tpl := mk(sys)
		r.open(7001, tpl)
		for i := 2; i <= 10; i++ {
			r.in(7001, fACK)
		}
		if got := r.take(); got != "C7001:ESTABLISHED T:1" {
			t.Fatalf("%q", got)
		}
	})
}

// The sync mark keeps sync_endtime modulo its width (28 bits of the
// master's clock for a conn, 14 bits of seconds for a template): read
// back near the new value it is exact (a template's to the second) for
// any earlier value within half that range, whatever the clock, and a
// mark never written reads as long ago. A conn's mark also carries
// old_state, which the table keeps beside it.
func TestSyncEndEncoding(t *testing.T) {
	perSec := uint32(time.Second / clockUnit)
	for i, ref := range []uint32{0, 1 << 20, 1<<28 - 7, 1 << 31, 1<<32 - 1000} {
		for _, back := range []uint32{0, 4, 100, 900 * perSec, 2 * 3600 * perSec, 9 * 3600 * perSec, 15 * 86400 * perSec} {
			for _, retries := range []uint32{0, 2} {
				v := (ref-back)&^3 | retries
				if v&(1<<28-1) == 0 || v/perSec&0x3fff == 0 {
					continue // 0 means never: such a value is stored one step on
				}
				if back < 1<<27 {
					if got := expandEnd(false, encodeEnd(false, v), ref); got != v {
						t.Fatalf("%d: conn %#x stored, read back near %#x as %#x", i, v, ref, got)
					}
				}
				if back < 8192*perSec && back <= ref { // (the clock's 32-bit wrap, 497 days on, cuts a second)
					want := v/perSec*perSec | retries
					if got := expandEnd(true, encodeEnd(true, v), ref); got != want {
						t.Fatalf("%d: template %#x stored, read back near %#x as %#x, want %#x", i, v, ref, got, want)
					}
				}
			}
		}
		for _, tpl := range []bool{false, true} {
			if encodeEnd(tpl, 0) == 0 {
				t.Fatalf("a sync_endtime of 0 is stored as never")
			}
			if got := expandEnd(tpl, 0, ref); ref-got < 1<<29 {
				t.Fatalf("never synced reads %#x near %#x, not long ago", got, ref)
			}
		}
	}
}

// Version 0 sends a conn's template only after the conn itself.
func TestSendRulesV0(t *testing.T) {
	sys := DefaultSysctls()
	sys.Version = 0
	r := newRig(t, sys, ipvs.MethodMasq)
	tk := conntrack.Key{SrcIP: [4]byte{198, 18, 0, 0}, DstIP: [4]byte{198, 18, 0, 100}, DstPort: 80, Proto: 6, Kind: conntrack.KindTemplate}
	tpl, err := r.ct.Create(&conntrack.NewConn{In: tk, Dest: r.dest, Method: r.dest.Method(), Template: true, Timeout: 360}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.open(6000, tpl)
	r.in(6000, fACK)
	r.in(6000, fACK)
	if got := r.take(); got != "C6000:ESTABLISHED T:1" {
		t.Fatalf("%q", got)
	}
}

// The master fills a message to sync_maxlen (40 IPv4 records in 1472
// bytes), queues it, and drops (and counts) what finds the queue at
// sync_qlen_max.
func TestMasterBatching(t *testing.T) {
	sys := DefaultSysctls()
	sys.QlenMax = 2
	sys.Threshold, sys.Period = 1, 0
	r := newRig(t, sys, ipvs.MethodMasq)
	for i := 0; i < 40*3+5; i++ {
		r.open(uint16(10000+i), conntrack.Ref{})
		r.in(uint16(10000+i), fACK)
	}
	// A change to ESTABLISHED is not forced, SYN_RECV is never sent, and
	// the 2nd packet is not the threshold (1): nothing.
	if got := r.take(); got != "" {
		t.Fatalf("%q", got)
	}
	sys.Threshold = 2
	r = newRig(t, sys, ipvs.MethodMasq)
	for i := 0; i < 40*3+5; i++ {
		r.open(uint16(10000+i), conntrack.Ref{})
		r.in(uint16(10000+i), fACK) // pkt 2 == threshold: sent
	}
	th := r.m.ms[0]
	th.mu.Lock()
	q, cur := len(th.queue), th.cur.Conns()
	sizes := []int{}
	for _, m := range th.queue {
		sizes = append(sizes, m.Len())
	}
	th.mu.Unlock()
	if q != 2 || cur != 5 {
		t.Fatalf("queue %d messages, open one %d records; want 2 and 5", q, cur)
	}
	for _, n := range sizes {
		if n != 8+40*36 {
			t.Errorf("queued message of %d bytes, want %d", n, 8+40*36)
		}
	}
	if n := r.m.d.cnt[cntQueueFull].Load(); n != 1 {
		t.Errorf("queue-full %d, want 1", n)
	}
}

// The senders: a full queue of 8 goes at once, a shorter one within the
// send delay, the open message once it is 2 s old. Only lower bounds on
// time are asserted (a busy machine can only make things later).
func TestMasterSender(t *testing.T) {
	mt := &MemTransport{Record: true}
	ct := conntrack.New(conntrack.Config{Shards: 4})
	d, err := New(Options{Table: ct, Installer: nopInstaller{}, Sysctls: DefaultSysctls(), Transport: mt})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(Config{Role: Master, Ifname: "x"}); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	svc := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: a4("198.18.0.100"), Port: 80}
	dest := ipvs.NewDest(svc, ipvs.DestConfig{Addr: a4("198.19.0.11"), Port: 80, Method: ipvs.MethodRoute, Weight: 1})
	start := time.Now()
	k := conntrack.Key{SrcIP: [4]byte{198, 18, 0, 10}, DstIP: [4]byte{198, 18, 0, 100}, SrcPort: 1, DstPort: 80, Proto: 6}
	if _, err := ct.Create(&conntrack.NewConn{In: k, Dest: dest, Method: ipvs.MethodRoute, NoOutput: true}, fSYN, nil); err != nil {
		t.Fatal(err)
	}
	var h conntrack.Hit
	ct.LookupIn(&k, fACK, &h)
	ct.LookupIn(&k, fACK, &h) // 3rd packet: one record in the open message
	waitFor(t, 10*time.Second, func() bool { return len(mt.Messages()) == 1 })
	if el := time.Since(start); el < flushTime {
		t.Fatalf("a lone record was sent after %v, before the %v flush time", el, flushTime)
	}
	// 9 full messages: 8 wake the sender at once.
	start = time.Now()
	for i := 0; i < 9*40; i++ {
		k.SrcPort = uint16(100 + i)
		if _, err := ct.Create(&conntrack.NewConn{In: k, Dest: dest, Method: ipvs.MethodRoute, NoOutput: true}, fSYN, nil); err != nil {
			t.Fatal(err)
		}
		ct.LookupIn(&k, fACK, &h)
		ct.LookupIn(&k, fACK, &h)
	}
	waitFor(t, 10*time.Second, func() bool { return len(mt.Messages()) == 1+9 })
	if el := time.Since(start); el > 5*time.Second {
		t.Logf("9 full messages took %v (a loaded machine)", el)
	}
	if v, _ := d.Counter("conns-sent"); v != 1+9*40 {
		t.Errorf("conns-sent %d, want %d", v, 1+9*40)
	}
}

type nopInstaller struct{}

func (nopInstaller) Install(*Conn, uint32) Outcome { return NoDest }
func (nopInstaller) SetBackupOnly(bool)            {}

func waitFor(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An IPv6 conn is sent as an IPv6 record with its full addresses (the
// table keys it by digests), its FULLNAT local address in golvs's option;
// version 0 sends none, and neither version sends a mixed-family tunnel
// conn (an IPv6 client on an IPv4 real server), which the protocol cannot
// carry (the kernel refuses such dests while a sync daemon runs).
func TestMasterIPv6(t *testing.T) {
	vip, cip := a4("2001:db8:18::100"), a4("2001:db8:18::10")
	svc := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}
	records := func(version int, dest netip.Addr, method ipvs.Method) []Record {
		sys := DefaultSysctls()
		sys.Version = version
		r := newRig(t, sys, ipvs.MethodMasq)
		d := ipvs.NewDest(svc, ipvs.DestConfig{Addr: dest, Port: 8080, Method: method, Weight: 1})
		in := conntrack.Pair6{Src: cip.As16(), Dst: vip.As16()}
		nc := conntrack.NewConn{In: r.ct.Key6(&in, 40000, 80, 6, conntrack.KindConn), Dest: d, Method: method, A6: conntrack.Addrs6{In: in}}
		switch method {
		case ipvs.MethodFullNAT:
			nc.A6.Out = conntrack.Pair6{Src: dest.As16(), Dst: a4("2001:db8:19::200").As16()}
			nc.Out = r.ct.Key6(&nc.A6.Out, 8080, 5001, 6, conntrack.KindConn)
		default:
			nc.NoOutput = true
		}
		if _, err := r.ct.Create(&nc, fSYN, nil); err != nil {
			t.Fatal(err)
		}
		var h conntrack.Hit
		for range 3 {
			r.ct.LookupIn6(&nc.In, &in, fACK, &h)
		}
		var out []Record
		for _, mt := range r.m.ms {
			for _, msg := range append(mt.queue, mt.cur) {
				if msg != nil {
					recs, _, drop := (&Decoder{}).Decode(msg.Bytes())
					if drop != OK {
						t.Fatalf("master wrote a message its backup drops: %v", drop)
					}
					out = append(out, recs...)
				}
			}
		}
		return out
	}
	recs := records(1, a4("2001:db8:19::11"), ipvs.MethodFullNAT)
	if len(recs) == 0 {
		t.Fatal("no record sent")
	}
	c := recs[0].Conn
	if !c.V6() || c.CAddr != cip || c.VAddr != vip || c.DAddr != a4("2001:db8:19::11") || c.CPort != 40000 ||
		c.LAddr != a4("2001:db8:19::200") || c.LPort != 5001 || c.Flags&FlagFwdMask != uint32(ipvs.MethodFullNAT) {
		t.Fatalf("IPv6 record %+v", c)
	}
	if recs := records(0, a4("2001:db8:19::11"), ipvs.MethodTunnel); len(recs) != 0 {
		t.Fatalf("version 0 sent %d IPv6 records", len(recs))
	}
	if recs := records(1, a4("198.19.0.11"), ipvs.MethodTunnel); len(recs) != 0 {
		t.Fatalf("a mixed-family conn was sent: %+v", recs[0].Conn)
	}
	if recs := records(1, a4("2001:db8:19::11"), ipvs.MethodTunnel); len(recs) == 0 {
		t.Fatal("an IPv6 tunnel conn was not sent")
	}
}
