package labcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golvs/golvs/bgp"
	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/lab"
)

func TestParseECMP(t *testing.T) {
	o, err := parseECMP([]string{"--fail", "director2", "--json"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.Directors != 3 || o.conns != 300 || o.fail != 2 || !o.readd || !o.asJSON || o.HoldTime != 3*time.Second {
		t.Fatalf("defaults: %+v", o)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--directors", "9"}, "9 directors, allowed 1..8"},
		{[]string{"--directors", "0"}, "allowed 1..8"},
		{[]string{"--fail", "director4"}, `"director4": director1..director3`},
		{[]string{"--fail", "router"}, "no such director"},
		{[]string{"--fail", "director1", "--directors", "1"}, "at least 2 directors"},
		{[]string{"--json"}, "go with --fail"},
		{[]string{"--connections", "0"}, "--connections 0 out of range"},
		{[]string{"--hold-time", "2s"}, "3s..90s"},
		{[]string{"--hold-time", "3500ms"}, "whole seconds"},
		{[]string{"--clients", "201"}, "201 client addresses"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		_, err := parseECMP(c.args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseECMP(%q): %v, want an error mentioning %q", c.args, err, c.want)
		}
	}
}

// birdRoutes returns bird's routes to the VIP, by the BGP session they
// came from, read with birdc from bird's control socket.
func birdRoutes(t *testing.T, l *lab.ECMPLab) map[string]lab.BirdRoute {
	t.Helper()
	rs, err := l.Bird.Routes(netip.PrefixFrom(lab.VIP, 32))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]lab.BirdRoute{}
	for _, r := range rs {
		out[r.Protocol] = r
	}
	return out
}

func keys(m map[string]lab.BirdRoute) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	slices.Sort(k)
	return k
}

func status(t *testing.T, l *lab.ECMPLab, i int) *control.Reply {
	t.Helper()
	cl, err := control.Dial(l.DirectorSocket(i))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rep, err := cl.Do(&control.Request{Op: "status"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.BGP == nil {
		t.Fatalf("director%d: status without bgp", i)
	}
	return rep
}

func exec1(t *testing.T, l *lab.ECMPLab, i int, args ...string) {
	t.Helper()
	cl, err := control.Dial(l.DirectorSocket(i))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rep, err := cl.Do(&control.Request{Op: "exec", Args: args})
	if err != nil || !rep.OK {
		t.Fatalf("director%d: %v: %v %+v", i, args, err, rep)
	}
}

// ecmpPrereqs skips without netns or bird2, and builds the directors'
// golvs binary into a fresh temporary folder, returned with it.
func ecmpPrereqs(t *testing.T) (dir, bin string) {
	t.Helper()
	testutil.RequireNetns(t)
	if _, err := exec.LookPath("bird"); err != nil {
		t.Skip("bird2 is not installed (Debian package bird2; .ci/run installs it): the ECMP test needs a real BGP router")
	}
	dir = t.TempDir()
	bin = filepath.Join(dir, "golvs")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/golvs").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir, bin
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestECMPFailover is the experiment, with bird2 as the router:
// three directors (each also configured with three misbehaving BGP
// peers), 300 long-lived connections, director2 killed and started again
// while a new-connection loop runs; bird's table (birdc)
// and the router's kernel route checked at each step; then a director
// whose real servers all go to weight 0 withdraws its route, and one
// shut down with SIGTERM marks its route GRACEFUL_SHUTDOWN, which bird
// honours, before withdrawing it.
func TestECMPFailover(t *testing.T) {
	dir, bin := ecmpPrereqs(t)
	o := &ecmpOpts{conns: 300, fail: 2, readd: true, interval: 500 * time.Millisecond}
	o.ECMPRunOptions = lab.ECMPRunOptions{
		ECMPOptions:  lab.ECMPOptions{Suffix: lab.RandomSuffix(), Directors: 3, RealServers: 3, Clients: 50, BadPeers: true},
		Exe:          bin,
		Dir:          filepath.Join(dir, "lab"),
		HoldTime:     3 * time.Second,
		ShutdownWait: 2 * time.Second, // long enough to watch GRACEFUL_SHUTDOWN at work
		Drain:        300 * time.Millisecond,
	}
	d1, d2, d3 := lab.ECMPDirectorIP(1), lab.ECMPDirectorIP(2), lab.ECMPDirectorIP(3)
	var log bytes.Buffer
	observe := func(phase string, l *lab.ECMPLab) error {
		t.Logf("phase %s", phase)
		switch phase {
		case "up":
			rs := birdRoutes(t, l)
			if got := keys(rs); !slices.Equal(got, []string{"director1", "director2", "director3"}) {
				return fmt.Errorf("bird's routes to the VIP come from %v, want director1..3", got)
			}
			for n, r := range rs {
				if r.Via != lab.ECMPDirectorIP(int(n[len(n)-1]-'0')) || r.LocalPref != 100 {
					return fmt.Errorf("bird's route from %s: %+v, want via the director, local pref 100", n, r)
				}
			}
			// Beside bird, every director has three bad peers: one
			// unreachable, one refusing, one answering garbage. They are
			// tried and logged; nothing else notices them.
			peer := func(st *bgp.Status, a netip.Addr) bgp.PeerStatus {
				for _, p := range st.Peers {
					if p.Addr == a.String() {
						return p
					}
				}
				return bgp.PeerStatus{}
			}
			defer func() {
				if t.Failed() {
					t.Logf("director1: %+v", status(t, l, 1).BGP.Peers)
				}
			}()
			waitFor(t, 15*time.Second, "the bad peers' errors in director1's status", func() bool {
				st := status(t, l, 1).BGP
				return strings.Contains(peer(st, lab.ECMPRefusingPeer).LastError, "refused") &&
					strings.Contains(peer(st, lab.ECMPGarbagePeer).LastError, "marker") &&
					peer(st, lab.ECMPUnreachablePeer).LastError != ""
			})
			st := status(t, l, 1).BGP
			if p := peer(st, lab.ECMPRouterIP); p.State != "established" || len(st.Peers) != 4 || len(st.Routes) != 1 || !st.Routes[0].Announced || st.Routes[0].Prefix != "198.18.0.100/32" {
				return fmt.Errorf("director1's status: %+v", st)
			}
			for _, a := range []netip.Addr{lab.ECMPUnreachablePeer, lab.ECMPRefusingPeer, lab.ECMPGarbagePeer} {
				if p := peer(st, a); p.State == "established" || p.Established != 0 {
					return fmt.Errorf("bad peer %s: %+v", a, p)
				}
			}
		case "failed":
			if got := keys(birdRoutes(t, l)); !slices.Equal(got, []string{"director1", "director3"}) {
				return fmt.Errorf("after the kill, bird's routes come from %v, want director1 and director3", got)
			}
		case "readded":
			if got := keys(birdRoutes(t, l)); !slices.Equal(got, []string{"director1", "director2", "director3"}) {
				return fmt.Errorf("after the restart, bird's routes come from %v, want director1..3", got)
			}
		case "end":
			// No real server with weight > 0 on director3: it withdraws,
			// and announces again when one comes back.
			for _, rip := range l.Topo.RIPs {
				exec1(t, l, 3, "-e", "-t", "198.18.0.100:80", "-r", rip.String()+":80", "-g", "-w", "0")
			}
			waitFor(t, 10*time.Second, "director3's route withdrawn", func() bool { _, ok := birdRoutes(t, l)["director3"]; return !ok })
			if st := status(t, l, 3).BGP; st.Routes[0].Announced || !strings.Contains(st.Routes[0].Reason, "no available real server with weight > 0") {
				return fmt.Errorf("director3's status after quiescing: %+v", st.Routes)
			}
			if _, err := l.WaitNextHops([]netip.Addr{d1, d2}, 10*time.Second); err != nil {
				return err
			}
			exec1(t, l, 3, "-e", "-t", "198.18.0.100:80", "-r", l.Topo.RIPs[0].String()+":80", "-g", "-w", "1")
			if _, err := l.WaitNextHops([]netip.Addr{d1, d2, d3}, 10*time.Second); err != nil {
				return err
			}
			// SIGTERM director1: its route first carries 65535:0, bird
			// sets its local preference to 0, and the kernel's ECMP
			// route leaves director1 while bird still holds the route;
			// then it is withdrawn.
			stopped := make(chan error, 1)
			go func() { stopped <- l.StopDirector(1, 20*time.Second) }()
			var marked lab.BirdRoute
			waitFor(t, 10*time.Second, "director1's route marked GRACEFUL_SHUTDOWN", func() bool {
				marked = birdRoutes(t, l)["director1"]
				return strings.Contains(marked.Communities, "(65535,0)")
			})
			if marked.LocalPref != 0 || marked.Best {
				return fmt.Errorf("bird's GRACEFUL_SHUTDOWN route %+v: want local pref 0, not best", marked)
			}
			if _, err := l.WaitNextHops([]netip.Addr{d2, d3}, 5*time.Second); err != nil {
				return err
			}
			if _, ok := birdRoutes(t, l)["director1"]; !ok {
				return errors.New("director1's route was withdrawn before the router moved traffic off it (the GRACEFUL_SHUTDOWN wait is 2s)")
			}
			waitFor(t, 10*time.Second, "director1's route withdrawn", func() bool { _, ok := birdRoutes(t, l)["director1"]; return !ok })
			if err := <-stopped; err != nil {
				return err
			}
		}
		return nil
	}
	res, err := runECMP(context.Background(), o, &log, observe)
	t.Logf("report:\n%s", log.String())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	t.Logf("result: %s", b)
	var top map[string]any
	_ = json.Unmarshal(b, &top)
	for _, k := range []string{"directors", "established", "survived", "new_attempted", "new_failed", "withdraw_ms"} {
		if _, ok := top[k]; !ok {
			t.Errorf("JSON result lacks %q: %s", k, b)
		}
	}
	d := res.Detail
	if res.Directors != 3 || res.Established != 300 {
		t.Fatalf("directors %d, established %d", res.Directors, res.Established)
	}
	if res.Survived < 297 {
		t.Errorf("%d of 300 connections survived the failure, want at least 99%%", res.Survived)
	}
	if d.RSChanged != 0 {
		t.Errorf("%d connections answered by another real server", d.RSChanged)
	}
	// Within the hold time (plus bird's and the kernel's work and the
	// 5 ms poll): a killed director's sessions close at once, and a
	// silent one is dropped when the hold timer fires.
	if res.WithdrawMS > d.HoldTimeMS+250 {
		t.Errorf("route withdrawn after %d ms, want within the hold time %d ms", res.WithdrawMS, d.HoldTimeMS)
	}
	if d.NewFailedOutside != 0 || res.NewAttempted < 50 {
		t.Errorf("new connections: %d attempted, %d failed outside the failure window", res.NewAttempted, d.NewFailedOutside)
	}
	// Every flow of the killed director moves (the router has no other
	// way); the router's view of where they went matches the directors'
	// tables; no flow changed real server (above).
	if d.MovedDirector < d.FlowsOnFailed || d.FlowsOnFailed == 0 {
		t.Errorf("%d flows moved, the failed director carried %d", d.MovedDirector, d.FlowsOnFailed)
	}
	if d.MovedSeen < d.MovedDirector*99/100 {
		t.Errorf("%d of %d moved flows found on the director the router sends them to", d.MovedSeen, d.MovedDirector)
	}
	r := d.Readd
	if r == nil {
		t.Fatal("no re-add result")
	}
	if r.RSChanged != 0 || r.Broken > 3 || r.Survived < 297 {
		t.Errorf("adding director2 back: %+v; want no connection on another real server", r)
	}
	if r.MovedDirector == 0 {
		t.Errorf("adding director2 back moved no flow to it: %+v", r)
	}
	t.Logf("moved by the failure: %.1f%% of flows changed director (ideal 1/N %.1f%%), 0 changed real server; by the return: %.1f%%",
		100*d.MovedFraction, 100*d.IdealMoved, 100*r.MovedFraction)
}

// TestECMPTakeoverGracefulRestart: with --bgp-graceful-restart, a
// graceful restart of the director (SIGUSR2: it starts its own binary
// with --takeover) leaves bird's kernel route to the VIP in place the
// whole time: the old process ends its session without NOTIFICATION,
// bird keeps the route as stale, and the new process announces it again
// (and bird keeps it after the End-of-RIB). Without the flag the old
// process withdraws the route before the new one can announce it.
func TestECMPTakeoverGracefulRestart(t *testing.T) {
	dir, bin := ecmpPrereqs(t)
	l, err := lab.StartECMP(lab.ECMPRunOptions{
		ECMPOptions:   lab.ECMPOptions{Suffix: lab.RandomSuffix(), Directors: 1, RealServers: 1, Clients: 1},
		Exe:           bin,
		Dir:           filepath.Join(dir, "lab"),
		HoldTime:      3 * time.Second,
		ShutdownWait:  time.Second,
		Drain:         100 * time.Millisecond,
		DirectorFlags: []string{"--bgp-graceful-restart", "60s"}, // a slow CI start stays well inside it
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	old := status(t, l, 1).PID
	var next int
	t.Cleanup(func() { // before l.Close: the successor is not the lab's own
		if next != 0 {
			_ = syscall.Kill(next, syscall.SIGTERM)
			for i := 0; i < 200 && syscall.Kill(next, 0) == nil; i++ {
				time.Sleep(25 * time.Millisecond)
			}
			_ = syscall.Kill(next, syscall.SIGKILL)
		}
		if t.Failed() {
			for _, f := range []string{"director1.log", "bird.log"} {
				b, _ := os.ReadFile(filepath.Join(dir, "lab", f))
				t.Logf("%s:\n%s", f, b)
			}
		}
	})
	want := []netip.Addr{lab.ECMPDirectorIP(1)}
	if _, err := l.WaitNextHops(want, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	// Watch the router's route until the successor's session is up with
	// the route announced, and a second more.
	var gone []time.Duration
	start := time.Now()
	var upAt time.Time
	for time.Since(start) < 60*time.Second && (upAt.IsZero() || time.Since(upAt) < time.Second) {
		hops, err := l.Topo.RouterNextHops(lab.VIP)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(hops, want) {
			gone = append(gone, time.Since(start))
		}
		if upAt.IsZero() {
			if cl, err := control.Dial(l.DirectorSocket(1)); err == nil {
				rep, err := cl.Do(&control.Request{Op: "status"})
				cl.Close()
				if err == nil && rep.PID != old && rep.BGP != nil {
					next = rep.PID
					st := rep.BGP
					if len(st.Peers) == 1 && st.Peers[0].State == "established" && len(st.Routes) == 1 && st.Routes[0].Announced {
						upAt = time.Now()
					}
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if upAt.IsZero() {
		t.Fatalf("no successor with its session up and the route announced within 60 s (successor pid %d)", next)
	}
	if len(gone) > 0 {
		t.Fatalf("the router lost the route to the VIP during the takeover (%d of its polls, first at %v, last at %v)", len(gone), gone[0], gone[len(gone)-1])
	}
	if rs := birdRoutes(t, l); len(rs) != 1 || rs["director1"].Via != want[0] {
		t.Fatalf("bird's routes to the VIP after the takeover: %+v, want the one from director1", rs)
	}
	t.Logf("takeover: successor pid %d up with its route %v after SIGUSR2; the router's route never left", next, upAt.Sub(start).Round(time.Millisecond))
}
