package vrrp

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func mkInst(name string, prio int, f func(*Instance)) *Instance {
	in := Instance{Name: name, Interface: "ext0", VRID: 51, Priority: prio, Addrs: []VAddr{{Addr: vip}}}
	if f != nil {
		f(&in)
	}
	in = in.withDefaults()
	if err := in.check(); err != nil {
		panic(err)
	}
	return &in
}

func advert(src netip.Addr, prio uint8, interval uint16) *Advert {
	return &Advert{Src: src, Dst: MulticastGroup, TTL: 255, Version: 2, Type: 1, VRID: 51, Priority: prio, Interval: interval, Addrs: []netip.Addr{vip}}
}

// The timers, from RFC 3768 §6.1 and RFC 5798 §6.1 and keepalived.
func TestTimers(t *testing.T) {
	cases := []struct {
		name     string
		in       *Instance
		wantDown time.Duration
	}{
		// v2: 3 * 1 s + (256-100)/256 s
		{"v2-prio100", mkInst("a", 100, nil), 3*time.Second + 156*time.Second/256},
		{"v2-prio254", mkInst("a", 254, nil), 3*time.Second + 2*time.Second/256},
		{"v2-3s", mkInst("a", 100, func(i *Instance) { i.Interval = 3 * time.Second }), 9*time.Second + 156*time.Second/256},
		// v3: 3 * 100 cs + (256-100)*100/256 cs = 300 + 60 cs (integer centiseconds)
		{"v3-prio100", mkInst("a", 100, func(i *Instance) { i.Version = 3 }), 3600 * time.Millisecond},
		{"v3-50cs-prio200", mkInst("a", 200, func(i *Instance) { i.Version = 3; i.Interval = 500 * time.Millisecond }), 1500*time.Millisecond + 100*time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newMachine(c.in, srcA)
			if e := m.start(t0); !e.changed || m.state != StateBackup || e.send {
				t.Fatalf("start: %+v state %v", e, m.state)
			}
			if got := m.next().Sub(t0); got != c.wantDown {
				t.Fatalf("Master_Down_Interval %v, want %v", got, c.wantDown)
			}
			if e := m.timer(t0.Add(c.wantDown - time.Millisecond)); e.changed {
				t.Fatalf("master before the down timer expired")
			}
			e := m.timer(t0.Add(c.wantDown))
			if !e.changed || m.state != StateMaster || !e.send || e.prio != uint8(c.in.Priority) || e.garp != 5 || !e.garpLate {
				t.Fatalf("at expiry: %+v state %v", e, m.state)
			}
			// then one advert per interval
			next := m.next()
			if next.Sub(t0.Add(c.wantDown)) != c.in.Interval {
				t.Fatalf("next advert after %v, want %v", next.Sub(t0.Add(c.wantDown)), c.in.Interval)
			}
			if e := m.timer(next); !e.send || e.changed {
				t.Fatalf("advert timer: %+v", e)
			}
		})
	}
}

func TestStartStates(t *testing.T) {
	owner := newMachine(mkInst("o", 255, nil), srcA)
	if e := owner.start(t0); owner.state != StateMaster || !e.send {
		t.Fatalf("address owner: %v %+v", owner.state, e)
	}
	sm := newMachine(mkInst("s", 100, func(i *Instance) { i.StartMaster = true }), srcA)
	sm.start(t0)
	if sm.state != StateBackup || sm.next().Sub(t0) != time.Second+time.Second/256 {
		t.Fatalf("state MASTER: %v, down after %v (want one interval and the least skew)", sm.state, sm.next().Sub(t0))
	}
}

func TestBackupReceive(t *testing.T) {
	t.Run("higher-master-resets-timer", func(t *testing.T) {
		m := newMachine(mkInst("b", 100, nil), srcA)
		m.start(t0)
		for i := 1; i <= 10; i++ {
			now := t0.Add(time.Duration(i) * time.Second)
			m.receive(now, advert(srcB, 150, 100))
			if m.timer(now); m.state != StateBackup {
				t.Fatalf("backup became master at %v while the master advertised", now.Sub(t0))
			}
			if m.next() != now.Add(m.downInterval()) {
				t.Fatal("down timer not reset by the advert")
			}
		}
		if m.masterAddr != srcB || m.masterPrio != 150 {
			t.Fatalf("master %v/%d", m.masterAddr, m.masterPrio)
		}
	})
	t.Run("priority-0-skew-only", func(t *testing.T) {
		m := newMachine(mkInst("b", 100, nil), srcA)
		m.start(t0)
		m.receive(t0.Add(time.Second), advert(srcB, 0, 100))
		if got := m.next().Sub(t0.Add(time.Second)); got != 156*time.Second/256 {
			t.Fatalf("after priority 0 the backup waits %v, want Skew_Time", got)
		}
	})
	t.Run("preempt-lower-master", func(t *testing.T) {
		m := newMachine(mkInst("b", 150, nil), srcA)
		m.start(t0)
		down := m.next()
		for now := t0; now.Before(down); now = now.Add(time.Second) {
			m.receive(now, advert(srcB, 100, 100))
		}
		if m.next() != down {
			t.Fatal("a lower-priority advert reset the down timer of a preempting backup")
		}
		if m.timer(down); m.state != StateMaster {
			t.Fatal("did not preempt")
		}
	})
	t.Run("nopreempt", func(t *testing.T) {
		m := newMachine(mkInst("b", 150, func(i *Instance) { i.NoPreempt = true }), srcA)
		m.start(t0)
		for i := 0; i < 30; i++ {
			now := t0.Add(time.Duration(i) * time.Second)
			m.receive(now, advert(srcB, 100, 100))
			if m.timer(now); m.state != StateBackup {
				t.Fatalf("nopreempt backup took over at %v", now.Sub(t0))
			}
		}
	})
	t.Run("preempt-delay", func(t *testing.T) {
		m := newMachine(mkInst("b", 150, func(i *Instance) { i.PreemptDelay = 10 * time.Second }), srcA)
		m.start(t0)
		var at time.Time
		for i := 0; i < 30 && at.IsZero(); i++ {
			now := t0.Add(time.Duration(i) * time.Second)
			if m.timer(now); m.state == StateMaster {
				at = now
				break
			}
			m.receive(now, advert(srcB, 100, 100))
		}
		if at.IsZero() || at.Sub(t0) < 10*time.Second || at.Sub(t0) > 10*time.Second+m.downInterval()+time.Second {
			t.Fatalf("preempted at %v, want after the 10 s delay and within a down interval of it", at.Sub(t0))
		}
	})
	t.Run("v3-learns-interval", func(t *testing.T) {
		m := newMachine(mkInst("b", 100, func(i *Instance) { i.Version = 3 }), srcA)
		m.start(t0)
		a := advert(srcB, 200, 300)
		a.Version = 3
		m.receive(t0, a)
		if m.masterAdv != 300 || m.next().Sub(t0) != 9*time.Second+(156*300/256)*10*time.Millisecond {
			t.Fatalf("Master_Adver_Interval %d, down in %v", m.masterAdv, m.next().Sub(t0))
		}
	})
}

func TestMasterReceive(t *testing.T) {
	master := func(prio int) *machine {
		m := newMachine(mkInst("m", prio, nil), srcA)
		m.start(t0)
		m.timer(m.next())
		if m.state != StateMaster {
			t.Fatal("not master")
		}
		return m
	}
	now := t0.Add(10 * time.Second)
	cases := []struct {
		name      string
		prio      int
		from      netip.Addr
		theirs    uint8
		wantState State
		wantSend  bool
		wantGARP  bool
	}{
		{"higher", 100, srcB, 150, StateBackup, false, false},
		{"lower-forces-election", 150, srcB, 100, StateMaster, true, true},
		// equal priorities: the higher primary address wins (srcB > srcA)
		{"equal-higher-addr", 100, srcB, 100, StateBackup, false, false},
		{"equal-lower-addr", 100, netip.MustParseAddr("198.18.0.1"), 100, StateMaster, true, true},
		{"priority-0", 100, srcB, 0, StateMaster, true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := master(c.prio)
			e := m.receive(now, advert(c.from, c.theirs, 100))
			if m.state != c.wantState || e.send != c.wantSend || (e.garp > 0) != c.wantGARP {
				t.Fatalf("state %v effects %+v", m.state, e)
			}
			if c.wantState == StateBackup && (m.next() != now.Add(m.downInterval()) || e.send) {
				t.Fatalf("a master yielding sends nothing and waits a down interval: %+v, %v", e, m.next().Sub(now))
			}
		})
	}
	t.Run("two-owners", func(t *testing.T) {
		m := master(255)
		m.receive(now, advert(srcB, 255, 100))
		if m.prio != 254 || m.state != StateBackup {
			t.Fatalf("two owners: ours lowered to %d, state %v (keepalived: 254, and the higher address wins)", m.prio, m.state)
		}
	})
	t.Run("stop-resigns", func(t *testing.T) {
		m := master(100)
		if e := m.stop(now); !e.send || e.prio != 0 {
			t.Fatalf("stop: %+v", e)
		}
	})
	t.Run("fault", func(t *testing.T) {
		m := master(100)
		if e := m.fault(now, true); !e.send || e.prio != 0 || m.state != StateFault {
			t.Fatalf("link down: %+v %v", e, m.state)
		}
		if e := m.receive(now, advert(srcB, 50, 100)); e.send || m.state != StateFault {
			t.Fatal("a faulted instance acted on an advert")
		}
		m.fault(now.Add(time.Second), false)
		if m.state != StateBackup || m.next() != now.Add(time.Second+m.downInterval()) {
			t.Fatalf("link back: %v", m.state)
		}
	})
	t.Run("set-priority", func(t *testing.T) {
		m := master(150)
		if e := m.setPriority(now, 50); !e.send || e.prio != 50 {
			t.Fatalf("%+v", e)
		}
		m.receive(now.Add(time.Second), advert(srcB, 100, 100))
		if m.state != StateBackup {
			t.Fatal("a master lowered below its backup did not yield")
		}
	})
}

// router is one simulated VRRP router on a simulated segment.
type router struct {
	m    *machine
	up   bool
	part int // partition id: adverts reach routers with the same id
}

// simulate runs routers for d of simulated time in 10 ms steps,
// delivering every advert sent to the routers of the same partition in
// the same step, and calls check after each step.
func simulate(rs []*router, from time.Time, d time.Duration, change func(now time.Time), check func(now time.Time)) time.Time {
	now := from
	for end := from.Add(d); now.Before(end); now = now.Add(10 * time.Millisecond) {
		if change != nil {
			change(now)
		}
		var out []struct {
			from *router
			prio uint8
		}
		for _, r := range rs {
			if !r.up {
				continue
			}
			if n := r.m.next(); !n.IsZero() && !now.Before(n) {
				if e := r.m.timer(now); e.send {
					out = append(out, struct {
						from *router
						prio uint8
					}{r, e.prio})
				}
			}
		}
		for len(out) > 0 {
			o := out[0]
			out = out[1:]
			for _, r := range rs {
				if r == o.from || !r.up || r.part != o.from.part {
					continue
				}
				if e := r.m.receive(now, advert(o.from.m.src, o.prio, 100)); e.send {
					out = append(out, struct {
						from *router
						prio uint8
					}{r, e.prio})
				}
			}
		}
		if check != nil {
			check(now)
		}
	}
	return now
}

func masters(rs []*router) (n int, who *router) {
	for _, r := range rs {
		if r.up && r.m.state == StateMaster {
			n++
			who = r
		}
	}
	return
}

func TestElectionAndSplitBrain(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3"), netip.MustParseAddr("198.18.0.4")}
	for _, prios := range [][]int{{150, 100}, {100, 150}, {100, 100}, {100, 150, 120}, {200, 200, 200}} {
		t.Run(fmt.Sprint(prios), func(t *testing.T) {
			var rs []*router
			for i, p := range prios {
				r := &router{m: newMachine(mkInst(fmt.Sprint(i), p, nil), addrs[i]), up: true}
				r.m.start(t0)
				rs = append(rs, r)
			}
			// the best: highest priority, then highest address
			best := rs[0]
			for _, r := range rs[1:] {
				if r.m.prio > best.m.prio || r.m.prio == best.m.prio && r.m.src.Compare(best.m.src) > 0 {
					best = r
				}
			}
			now := simulate(rs, t0, 10*time.Second, nil, nil)
			if n, who := masters(rs); n != 1 || who != best {
				t.Fatalf("after election: %d masters (%v), want only %v", n, who, best.m.src)
			}
			// Partition every router from every other: each becomes
			// master of its own piece (split brain).
			for i, r := range rs {
				r.part = i + 1
			}
			now = simulate(rs, now, 6*time.Second, nil, nil)
			if n, _ := masters(rs); n != len(rs) {
				t.Fatalf("partitioned: %d masters, want %d (each piece elects its own)", n, len(rs))
			}
			// Heal: within one advertisement interval all but the best
			// yield, and no one flaps afterwards.
			for _, r := range rs {
				r.part = 0
			}
			healed := now
			var settled time.Time
			simulate(rs, now, 10*time.Second, nil, func(now time.Time) {
				n, who := masters(rs)
				if n == 1 && who == best && settled.IsZero() {
					settled = now
				}
				if !settled.IsZero() && (n != 1 || who != best) {
					t.Fatalf("flapped at %v after healing: %d masters", now.Sub(healed), n)
				}
			})
			if settled.IsZero() || settled.Sub(healed) > 1100*time.Millisecond {
				t.Fatalf("healed partition settled after %v, want within one interval", settled.Sub(healed))
			}
		})
	}
}

func TestFailoverAndReturn(t *testing.T) {
	a := &router{m: newMachine(mkInst("a", 150, func(i *Instance) { i.StartMaster = true }), srcA), up: true}
	b := &router{m: newMachine(mkInst("b", 100, nil), srcB), up: true}
	rs := []*router{a, b}
	a.m.start(t0)
	b.m.start(t0)
	now := simulate(rs, t0, 5*time.Second, nil, nil)
	if _, who := masters(rs); who != a {
		t.Fatal("a did not win")
	}
	// a dies without a word (SIGKILL): b takes over within the down interval.
	a.up = false
	died := now
	var took time.Time
	now = simulate(rs, now, 6*time.Second, nil, func(now time.Time) {
		if took.IsZero() && b.m.state == StateMaster {
			took = now
		}
	})
	if took.IsZero() || took.Sub(died) > b.m.downInterval()+10*time.Millisecond {
		t.Fatalf("takeover after %v, want within Master_Down_Interval %v", took.Sub(died), b.m.downInterval())
	}
	// a returns (preempt): it takes over again.
	a.m = newMachine(a.m.c, srcA)
	a.up = true
	a.m.start(now)
	now = simulate(rs, now, 6*time.Second, nil, nil)
	if _, who := masters(rs); who != a {
		t.Fatal("preempting a did not take back the addresses")
	}
	// nopreempt: a returning a stays backup.
	a.up = false
	now = simulate(rs, now, 6*time.Second, nil, nil)
	np := *a.m.c
	np.NoPreempt, np.StartMaster = true, false
	a.m = newMachine(&np, srcA)
	a.up = true
	a.m.start(now)
	simulate(rs, now, 20*time.Second, nil, func(time.Time) {
		if a.m.state == StateMaster {
			t.Fatal("nopreempt a took over from b")
		}
	})
	if b.m.state != StateMaster {
		t.Fatal("b lost mastership")
	}
}
