package vrrp

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/packet"
)

// roleLog records a follower's calls.
type roleLog struct {
	mu    sync.Mutex
	roles []bool
	at    []time.Time
}

func (r *roleLog) SetRole(m bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.roles = append(r.roles, m)
	r.at = append(r.at, time.Now())
}

func (r *roleLog) get() ([]bool, []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]bool(nil), r.roles...), append([]time.Time(nil), r.at...)
}

// garpSeen counts gratuitous ARPs for one address by sender MAC, as a
// host on the segment receives them.
type garpSeen struct {
	mu sync.Mutex
	by map[[6]byte][]time.Time
}

func (g *garpSeen) count(mac [6]byte, from, to time.Time) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, t := range g.by[mac] {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

func captureGARPs(t *testing.T, ns *lab.NS, addr netip.Addr) *garpSeen {
	g := &garpSeen{by: map[[6]byte][]time.Time{}}
	var fd int
	err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	done := make(chan struct{})
	t.Cleanup(func() { stop.Store(true); <-done; unix.Close(fd) })
	go func() {
		defer close(done)
		buf := make([]byte, 256)
		for !stop.Load() {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || n < packet.EthLen+28 {
				continue
			}
			a := packet.ARP(buf[packet.EthLen:n])
			if a.Op() == packet.ARPRequest && a.SenderIP() == addr.As4() && a.TargetIP() == addr.As4() {
				g.mu.Lock()
				g.by[a.SenderMAC()] = append(g.by[a.SenderMAC()], time.Now())
				g.mu.Unlock()
			}
		}
	}()
	return g
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestSpeakers runs two speakers in the HA lab's director namespaces: the
// priorities decide the master, a run-time priority change hands the
// addresses over and back, every takeover sends keepalived's gratuitous
// ARPs (garp_master_repeat per address, again after garp_master_delay),
// and the followers see alternating roles that match the status, while
// other goroutines read the status all along (run under -race).
func TestSpeakers(t *testing.T) {
	if err := lab.RequireRoot(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	t.Parallel()
	topo, err := lab.BuildHA(lab.Options{Suffix: lab.RandomSuffix(), RealServers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(topo.Close)
	gw := lab.HAGatewayIP
	mk := func(prio int, startMaster bool) (*Speaker, *roleLog) {
		in := Instance{Name: "VI_T", Interface: lab.DirExt, VRID: 60, Priority: prio, StartMaster: startMaster, AuthPass: "t",
			Addrs: []VAddr{{Addr: lab.VIP}, {Addr: gw, Dev: lab.DirInt}}, GARP: GARP{MasterDelay: time.Second}}
		sp, err := New(Config{Instances: []Instance{in}}, Options{Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		rl := &roleLog{}
		sp.AddFollower(rl)
		return sp, rl
	}
	s1, r1 := mk(150, true)
	s2, r2 := mk(100, false)
	seen := captureGARPs(t, topo.Client, lab.VIP)
	ctx, cancel := context.WithCancel(context.Background())
	ctx1, stop1 := context.WithCancel(ctx)
	var wg, wg1 sync.WaitGroup
	for i, sp := range []*Speaker{s1, s2} {
		if err := topo.Directors[i].Do(sp.Open); err != nil {
			t.Fatal(err)
		}
		c, g := ctx, &wg
		if i == 0 {
			c, g = ctx1, &wg1
		}
		g.Add(1)
		go func(sp *Speaker) { defer g.Done(); _ = sp.Run(c) }(sp)
	}
	t.Cleanup(func() { cancel(); wg.Wait(); wg1.Wait() })
	// Readers hammer the status while the loops run.
	var readers sync.WaitGroup
	rctx, rstop := context.WithCancel(ctx)
	for i := 0; i < 4; i++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for rctx.Err() == nil {
				for _, sp := range []*Speaker{s1, s2} {
					st := sp.Status()
					if len(st.Instances) != 1 || st.Instances[0].Name != "VI_T" {
						t.Errorf("status: %+v", st)
						return
					}
				}
			}
		}()
	}
	state := func(sp *Speaker) string { return sp.Status().Instances[0].State }
	wait := func(what string, timeout time.Duration, cond func() bool) {
		t.Helper()
		for start := time.Now(); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Since(start) > timeout {
				t.Fatalf("%s: not after %v (s1 %s, s2 %s)", what, timeout, state(s1), state(s2))
			}
		}
	}
	wait("s1 master", 8*time.Second, func() bool { return state(s1) == "MASTER" && state(s2) == "BACKUP" })

	// s1 drops below s2: s2 preempts (after its down timer), s1 yields.
	if err := s1.SetPriority(ctx, "VI_T", 50); err != nil {
		t.Fatal(err)
	}
	wait("s2 master", 8*time.Second, func() bool { return state(s2) == "MASTER" && state(s1) == "BACKUP" })
	took := s2.Status().Instances[0].Since
	// keepalived's schedule: 5 gratuitous ARPs at once, 5 more after
	// garp_master_delay (1 s here), none after.
	time.Sleep(2500 * time.Millisecond)
	mac2 := macOf(t, topo.Directors[1], lab.DirExt)
	if n := seen.count(mac2, took.Add(-50*time.Millisecond), took.Add(900*time.Millisecond)); n != DefaultGARPRepeat {
		t.Errorf("first round: %d gratuitous ARPs for the VIP from the new master, want %d", n, DefaultGARPRepeat)
	}
	if n := seen.count(mac2, took.Add(900*time.Millisecond), took.Add(2400*time.Millisecond)); n != DefaultGARPRepeat {
		t.Errorf("second round: %d gratuitous ARPs, want %d", n, DefaultGARPRepeat)
	}
	if n := seen.count(macOf(t, topo.Directors[0], lab.DirExt), took, took.Add(2400*time.Millisecond)); n != 0 {
		t.Errorf("the old master sent %d gratuitous ARPs after yielding", n)
	}

	// Back above: s1 preempts.
	if err := s1.SetPriority(ctx, "", 200); err != nil {
		t.Fatal(err)
	}
	wait("s1 master again", 8*time.Second, func() bool { return state(s1) == "MASTER" && state(s2) == "BACKUP" })
	if err := s1.SetPriority(ctx, "VI_X", 10); err == nil {
		t.Fatal("a priority for an unknown instance was accepted")
	}
	rstop()
	readers.Wait()

	for i, c := range []struct {
		sp *Speaker
		rl *roleLog
	}{{s1, r1}, {s2, r2}} {
		roles, _ := c.rl.get()
		for j := 1; j < len(roles); j++ {
			if roles[j] == roles[j-1] {
				t.Errorf("speaker %d: follower told %v twice in a row: %v", i+1, roles[j], roles)
			}
		}
		st := c.sp.Status()
		if len(roles) == 0 || roles[len(roles)-1] != st.Master || st.Master != (st.Instances[0].State == "MASTER") {
			t.Errorf("speaker %d: follower's last role %v, status master %v, state %s", i+1, roles, st.Master, st.Instances[0].State)
		}
		if d := st.Instances[0].Drops; len(d) != 0 {
			t.Errorf("speaker %d dropped adverts: %v", i+1, d)
		}
	}
	// s1: master, backup, master; s2: master once in between.
	if roles, _ := r1.get(); len(roles) != 3 {
		t.Errorf("s1 roles %v, want master, backup, master", roles)
	}
	if roles, _ := r2.get(); len(roles) != 2 {
		t.Errorf("s2 roles %v, want master, backup", roles)
	}
	// Shutdown: the master resigns with priority 0 (the backup then takes
	// over after Skew_Time instead of Master_Down_Interval).
	stop1()
	wg1.Wait()
	wait("s2 master after s1 stopped", 8*time.Second, func() bool { return state(s2) == "MASTER" })
	if st := s2.Status().Instances[0]; st.PrioZeroRecv != 1 {
		t.Errorf("s2 received %d priority-0 adverts, want the one s1 sent stopping", st.PrioZeroRecv)
	}
	if roles, _ := r1.get(); roles[len(roles)-1] {
		t.Errorf("the stopped speaker's follower was left master: %v", roles)
	}
	cancel()
	wg.Wait()
}

func macOf(t *testing.T, ns *lab.NS, dev string) (mac [6]byte) {
	t.Helper()
	err := ns.Do(func() error {
		g, err := openGarper(dev)
		if err != nil {
			return err
		}
		mac = g.mac
		g.close()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return
}

// TestSpeakersUnicast: two speakers that send to each other's address
// instead of the group (unicast_peer, version 3) elect and fail over the
// same way; the stopping master's priority 0 reaches the peer.
func TestSpeakersUnicast(t *testing.T) {
	if err := lab.RequireRoot(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	t.Parallel()
	topo, err := lab.BuildHA(lab.Options{Suffix: lab.RandomSuffix(), RealServers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(topo.Close)
	mk := func(prio int, peer netip.Addr) *Speaker {
		in := Instance{Name: "VI_U", Interface: lab.DirExt, VRID: 61, Priority: prio, Version: 3, StartMaster: prio > 100,
			UnicastPeers: []netip.Addr{peer}, Addrs: []VAddr{{Addr: lab.VIP}}}
		sp, err := New(Config{Instances: []Instance{in}}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	s1, s2 := mk(150, lab.HADirExtIP(2)), mk(100, lab.HADirExtIP(1))
	ctx, cancel := context.WithCancel(context.Background())
	ctx1, stop1 := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, sp := range []*Speaker{s1, s2} {
		if err := topo.Directors[i].Do(sp.Open); err != nil {
			t.Fatal(err)
		}
		c := ctx
		if i == 0 {
			c = ctx1
		}
		wg.Add(1)
		go func(sp *Speaker) { defer wg.Done(); _ = sp.Run(c) }(sp)
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	state := func(sp *Speaker) InstanceStatus { return sp.Status().Instances[0] }
	for start := time.Now(); state(s1).State != "MASTER"; time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 8*time.Second {
			t.Fatalf("s1 not master: %+v", state(s1))
		}
	}
	// s2 hears s1 (nothing else reaches it): it stays backup past its
	// down interval.
	time.Sleep(4500 * time.Millisecond)
	if st := state(s2); st.State != "BACKUP" || st.Received == 0 || st.Master != lab.HADirExtIP(1).String() || len(st.Drops) != 0 {
		t.Fatalf("s2: %+v", st)
	}
	stop1()
	for start := time.Now(); state(s2).State != "MASTER"; time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 8*time.Second {
			t.Fatalf("s2 did not take over: %+v", state(s2))
		}
	}
	if st := state(s2); st.PrioZeroRecv != 1 {
		t.Fatalf("s2 received %d priority-0 adverts over unicast, want 1", st.PrioZeroRecv)
	}
}
