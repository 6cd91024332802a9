package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ECMPPort is the VIP's port in the ECMP lab: every real server answers
// each line a client sends on it with its name and a newline, for as long
// as the connection lasts.
const ECMPPort = 80

// ECMPRunOptions shape an ECMP experiment.
type ECMPRunOptions struct {
	ECMPOptions
	Exe string // the golvs binary the directors run
	Dir string // logs, sockets, bird.conf
	// HoldTime is the BGP hold time on both sides (3s..).
	HoldTime time.Duration
	// ShutdownWait and Drain are the directors' --bgp-shutdown-wait and
	// --bgp-drain.
	ShutdownWait, Drain time.Duration
	// DirectorFlags are added to every director's command line.
	DirectorFlags []string
}

// ECMPLab is a running ECMP lab: bird routing the VIP over the directors
// that announce it, each a separate `golvs run` with mh (mh-port),
// sloppy_tcp and DR to the real servers.
type ECMPLab struct {
	O     ECMPRunOptions
	Topo  *ECMPTopology
	Bird  *Bird
	Rules string // every director's rules

	mu    sync.Mutex
	dirs  []*exec.Cmd // by director index (0-based); nil: not running
	exits []chan struct{}
	stop  context.CancelFunc
}

// DirectorSocket returns director i's control socket (1-based).
func (l *ECMPLab) DirectorSocket(i int) string {
	return filepath.Join(l.O.Dir, fmt.Sprintf("director%d.sock", i))
}

// StartECMP builds the lab, starts bird, the real servers and every
// director, and waits for the router's ECMP route over all of them.
func StartECMP(o ECMPRunOptions) (l *ECMPLab, err error) {
	if o.HoldTime == 0 {
		o.HoldTime = 3 * time.Second
	}
	if _, err := exec.LookPath("bird"); err != nil {
		return nil, ErrNoBird
	}
	if err := CheckECMPOptions(o.ECMPOptions); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	l = &ECMPLab{O: o, dirs: make([]*exec.Cmd, o.Directors), exits: make([]chan struct{}, o.Directors)}
	defer func() {
		if err != nil {
			l.Close()
			l = nil
		}
	}()
	if l.Topo, err = BuildECMP(o.ECMPOptions); err != nil {
		return l, err
	}
	if l.Bird, err = StartBird(l.Topo.Router, o.Dir, BirdConfig(o.Directors, o.HoldTime, filepath.Join(o.Dir, "bird.log"))); err != nil {
		return l, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.stop = cancel
	for j, rs := range l.Topo.RS {
		if err := ServeLines(ctx, rs, fmt.Sprintf("rs%d", j+1), ECMPPort); err != nil {
			return l, err
		}
	}
	if l.Topo.BadPeers != nil {
		if err := serveGarbage(ctx, l.Topo.BadPeers, netip.AddrPortFrom(ECMPGarbagePeer, 179)); err != nil {
			return l, err
		}
	}
	// The same rules on every director, in the same order: mh builds the
	// same table from the same dests in the same order, so every director
	// picks the same real server for a flow.
	l.Rules = fmt.Sprintf("-A -t %s:%d -s mh -b mh-port\n", VIP, ECMPPort)
	for _, rip := range l.Topo.RIPs {
		l.Rules += fmt.Sprintf("-a -t %s:%d -r %s:%d -g -w 1\n", VIP, ECMPPort, rip, ECMPPort)
	}
	if err := os.WriteFile(filepath.Join(o.Dir, "rules"), []byte(l.Rules), 0o600); err != nil {
		return l, err
	}
	for i := 1; i <= o.Directors; i++ {
		if err := l.StartDirector(i); err != nil {
			return l, err
		}
	}
	var all []netip.Addr
	for i := 1; i <= o.Directors; i++ {
		all = append(all, ECMPDirectorIP(i))
	}
	if _, err := l.WaitNextHops(all, 60*time.Second); err != nil {
		return l, err
	}
	return l, nil
}

// DirectorArgs returns director i's command line.
func (l *ECMPLab) DirectorArgs(i int) []string {
	a := []string{"run", "-i", DirExt, "--fix-host", "--workers", "1",
		"--rules", filepath.Join(l.O.Dir, "rules"), "--control", l.DirectorSocket(i), "--sloppy-tcp",
		"--bgp-asn", strconv.Itoa(int(ECMPDirectorASN)), "--bgp-router-id", ECMPDirectorIP(i).String(),
		"--bgp-peer", fmt.Sprintf("%s:%d", ECMPRouterIP, ECMPRouterASN),
		"--bgp-hold-time", l.O.HoldTime.String(), "--bgp-connect-retry", "1s",
		"--bgp-shutdown-wait", l.O.ShutdownWait.String(), "--bgp-drain", l.O.Drain.String()}
	return append(a, l.O.DirectorFlags...)
}

// directorArgs is DirectorArgs with the misbehaving peers, when the
// lab has them.
func (l *ECMPLab) directorArgs(i int) []string {
	a := l.DirectorArgs(i)
	if l.O.BadPeers {
		for _, p := range []netip.Addr{ECMPUnreachablePeer, ECMPRefusingPeer, ECMPGarbagePeer} {
			a = append(a, "--bgp-peer", fmt.Sprintf("%s:%d", p, ECMPRouterASN))
		}
	}
	return a
}

// serveGarbage accepts TCP connections at ap inside ns and answers each
// with bytes that are no BGP message (a header without its marker, of a
// type BGP does not have), then closes it.
func serveGarbage(ctx context.Context, ns *NS, ap netip.AddrPort) error {
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", ap.String())
		return err
	}); err != nil {
		return fmt.Errorf("lab: garbage peer at %s: %w", ap, err)
	}
	go func() { <-ctx.Done(); ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hdr := make([]byte, 19)
			hdr[17], hdr[18] = 19, 99
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write(hdr)
			_, _ = c.Read(make([]byte, 4096))
			c.Close()
		}
	}()
	return nil
}

// StartDirector starts director i (1-based), logging to directorI.log.
func (l *ECMPLab) StartDirector(i int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dirs[i-1] != nil {
		return fmt.Errorf("lab: director%d is running", i)
	}
	logf, err := os.OpenFile(filepath.Join(l.O.Dir, fmt.Sprintf("director%d.log", i)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	c := exec.Command(l.O.Exe, l.directorArgs(i)...)
	c.Stdout, c.Stderr = logf, logf
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := l.Topo.Directors[i-1].Do(c.Start); err != nil {
		return fmt.Errorf("lab: starting director%d: %w", i, err)
	}
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	l.dirs[i-1], l.exits[i-1] = c, done
	return nil
}

// Running reports whether director i runs.
func (l *ECMPLab) Running(i int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dirs[i-1] != nil
}

// take removes director i from the running set.
func (l *ECMPLab) take(i int) (*exec.Cmd, chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, done := l.dirs[i-1], l.exits[i-1]
	l.dirs[i-1], l.exits[i-1] = nil, nil
	return c, done
}

// KillDirector kills director i with SIGKILL (a crash: no withdrawal, no
// GRACEFUL_SHUTDOWN) and returns when it is gone.
func (l *ECMPLab) KillDirector(i int) error {
	c, done := l.take(i)
	if c == nil {
		return fmt.Errorf("lab: director%d is not running", i)
	}
	if err := c.Process.Kill(); err != nil {
		return err
	}
	<-done
	return nil
}

// StopDirector stops director i with SIGTERM (its graceful shutdown:
// GRACEFUL_SHUTDOWN, withdrawal, drain) and waits up to d for it to exit
// (then kills it).
func (l *ECMPLab) StopDirector(i int, d time.Duration) error {
	c, done := l.take(i)
	if c == nil {
		return nil
	}
	_ = c.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(d):
		_ = c.Process.Kill()
		<-done
		return fmt.Errorf("lab: director%d did not stop within %v after SIGTERM", i, d)
	}
}

// WaitNextHops waits until the router's kernel routes the VIP over
// exactly want (any order); it returns how long that took.
func (l *ECMPLab) WaitNextHops(want []netip.Addr, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	w := slices.Clone(want)
	slices.SortFunc(w, netip.Addr.Compare)
	var got []netip.Addr
	for {
		var err error
		got, err = l.Topo.RouterNextHops(VIP)
		if err != nil {
			return 0, err
		}
		slices.SortFunc(got, netip.Addr.Compare)
		if slices.Equal(got, w) {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("lab: the router routes %s over %v, not %v, after %v (bird's log: %s)", VIP, got, w, timeout, l.Bird.Log)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Close stops every director (gracefully), bird and the servers, and
// removes the namespaces.
func (l *ECMPLab) Close() {
	var wg sync.WaitGroup
	for i := range l.dirs {
		wg.Add(1)
		go func() { defer wg.Done(); _ = l.StopDirector(i+1, l.O.ShutdownWait+l.O.Drain+10*time.Second) }()
	}
	wg.Wait()
	if l.stop != nil {
		l.stop()
	}
	l.Bird.Stop()
	if l.Topo != nil {
		l.Topo.Close()
	}
}

// ServeLines answers, on TCP port inside ns, every line of every
// connection with name and a newline, until ctx is done: a real server
// for long-lived connections, whose replies say which server holds them.
func ServeLines(ctx context.Context, ns *NS, name string, port int) error {
	var ln net.Listener
	err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		return fmt.Errorf("lab: %s listening on tcp/%d: %w", name, port, err)
	}
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	go func() {
		<-ctx.Done()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			go func() {
				defer func() { mu.Lock(); delete(conns, c); mu.Unlock(); c.Close() }()
				sc := bufio.NewScanner(c)
				sc.Buffer(make([]byte, 512), 512) // lines are short; a longer one ends the connection
				for sc.Scan() {
					if _, err := c.Write([]byte(name + "\n")); err != nil {
						return
					}
				}
			}()
		}
	}()
	return nil
}

// LongConn is one long-lived client connection that asks its real server
// for its name every interval and records what happens.
type LongConn struct {
	Local netip.AddrPort // the client's address and port: the flow
	RS    string         // the real server it reached first

	mu      sync.Mutex
	lastOK  time.Time // when the last successful exchange began
	changed string    // another real server answered (never for TCP: kept as a check)
	err     error     // the connection broke
	errAt   time.Time
	c       net.Conn
}

// Status returns the time of the last good exchange and the failure.
func (c *LongConn) Status() (lastOK time.Time, changed string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastOK, c.changed, c.err
}

// exchange sends a line and reads the answer.
func exchange(c net.Conn, r *bufio.Reader, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("who\n")); err != nil {
		return "", err
	}
	line, err := r.ReadString('\n')
	return strings.TrimSpace(line), err
}

// OpenLong opens n long-lived connections from the client's addresses in
// turn to the VIP, each answered once, then kept busy every interval
// until ctx is done. An exchange that takes longer than timeout breaks
// the connection (TCP retransmits in between, as it would for a user).
func (l *ECMPLab) OpenLong(ctx context.Context, n int, interval, timeout time.Duration) ([]*LongConn, error) {
	out := make([]*LongConn, n)
	vip := netip.AddrPortFrom(VIP, ECMPPort)
	err := l.Topo.Client.Do(func() error {
		for i := range n {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: l.Topo.ClientAddrs[i%len(l.Topo.ClientAddrs)].AsSlice()}, Timeout: 5 * time.Second}
			c, err := d.Dial("tcp4", vip.String())
			if err != nil {
				return fmt.Errorf("lab: long-lived connection %d: %w", i, err)
			}
			r := bufio.NewReader(c)
			name, err := exchange(c, r, 5*time.Second)
			if err != nil {
				c.Close()
				return fmt.Errorf("lab: long-lived connection %d: first exchange: %w", i, err)
			}
			lc := &LongConn{Local: c.LocalAddr().(*net.TCPAddr).AddrPort(), RS: name, lastOK: time.Now(), c: c}
			lc.Local = netip.AddrPortFrom(lc.Local.Addr().Unmap(), lc.Local.Port())
			out[i] = lc
			go lc.run(ctx, r, interval, timeout)
		}
		return nil
	})
	if err != nil {
		for _, c := range out {
			if c != nil {
				c.c.Close()
			}
		}
		return nil, err
	}
	return out, nil
}

func (c *LongConn) run(ctx context.Context, r *bufio.Reader, interval, timeout time.Duration) {
	defer c.c.Close()
	go func() { <-ctx.Done(); c.c.Close() }()
	t := time.NewTimer(time.Duration(rand.Int64N(int64(interval))))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		name, err := exchange(c.c, r, timeout)
		c.mu.Lock()
		if err != nil {
			if ctx.Err() == nil {
				c.err, c.errAt = err, time.Now()
			}
			c.mu.Unlock()
			return
		}
		c.lastOK = start
		if name != c.RS && c.changed == "" {
			c.changed = name
		}
		c.mu.Unlock()
		t.Reset(interval)
	}
}

// ConnOutcome counts long-lived connections after an event at time at.
type ConnOutcome struct {
	Established int           // connections open before the event
	Survived    int           // answered after the event, by the same real server
	Broken      int           // broke (reset, or no answer within the timeout)
	Changed     int           // answered by another real server (impossible for TCP; a check)
	Waited      time.Duration // how long it took to hear from every connection
}

// AwaitAfter waits until every connection has either exchanged after at
// or broken, up to timeout, and counts them.
func AwaitAfter(conns []*LongConn, at time.Time, timeout time.Duration) ConnOutcome {
	start := time.Now()
	o := ConnOutcome{Established: len(conns)}
	for {
		o.Survived, o.Broken, o.Changed = 0, 0, 0
		pending := 0
		for _, c := range conns {
			last, changed, err := c.Status()
			switch {
			case err != nil:
				o.Broken++
			case changed != "":
				o.Changed++
			case last.After(at):
				o.Survived++
			default:
				pending++
			}
		}
		if pending == 0 || time.Since(start) > timeout {
			o.Broken += pending
			o.Waited = time.Since(start)
			return o
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Attempt is one short connection of the new-connection loop.
type Attempt struct {
	Start, End time.Time
	Err        error
}

// NewConnLoop opens short connections (connect, one exchange, close)
// from random client addresses, workers at a time with pause between,
// until stopped; each is bounded by timeout.
type NewConnLoop struct {
	mu       sync.Mutex
	attempts []Attempt
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// MaxAttempts bounds what a loop records (and so how long it can run).
const MaxAttempts = 200000

// StartNewConns starts the loop.
func (l *ECMPLab) StartNewConns(workers int, pause, timeout time.Duration) *NewConnLoop {
	ctx, cancel := context.WithCancel(context.Background())
	lp := &NewConnLoop{cancel: cancel}
	vip := netip.AddrPortFrom(VIP, ECMPPort).String()
	for range workers {
		lp.wg.Add(1)
		l.Topo.Client.Go(func() {
			defer lp.wg.Done()
			for ctx.Err() == nil {
				a := Attempt{Start: time.Now()}
				src := l.Topo.ClientAddrs[rand.IntN(len(l.Topo.ClientAddrs))]
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: timeout}
				c, err := d.DialContext(ctx, "tcp4", vip)
				if err == nil {
					_, err = exchange(c, bufio.NewReader(c), timeout)
					c.Close()
				}
				if ctx.Err() != nil && err != nil {
					return // cut by Stop, not a failure
				}
				a.End, a.Err = time.Now(), err
				lp.mu.Lock()
				full := len(lp.attempts) >= MaxAttempts
				if !full {
					lp.attempts = append(lp.attempts, a)
				}
				lp.mu.Unlock()
				if full {
					return
				}
				select {
				case <-ctx.Done():
				case <-time.After(pause):
				}
			}
		})
	}
	return lp
}

// Stop ends the loop and returns every attempt.
func (lp *NewConnLoop) Stop() []Attempt {
	lp.cancel()
	lp.wg.Wait()
	lp.mu.Lock()
	defer lp.mu.Unlock()
	return slices.Clone(lp.attempts)
}

// Snapshot returns the attempts so far.
func (lp *NewConnLoop) Snapshot() []Attempt {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	return slices.Clone(lp.attempts)
}

// FlowDirectors returns, for each connection, the director the router
// sends its packets to now.
func (l *ECMPLab) FlowDirectors(conns []*LongConn) ([]netip.Addr, error) {
	srcs := make([]netip.AddrPort, len(conns))
	for i, c := range conns {
		srcs[i] = c.Local
	}
	return l.Topo.FlowNextHops(srcs, netip.AddrPortFrom(VIP, ECMPPort))
}

// Moved compares two FlowDirectors readings: how many flows changed
// director.
func Moved(before, after []netip.Addr) int {
	n := 0
	for i := range before {
		if i < len(after) && before[i] != after[i] {
			n++
		}
	}
	return n
}

// DirectorIndex returns the 1-based index of a director address (0: none).
func DirectorIndex(a netip.Addr) int {
	b := a.As4()
	if b[0] == 198 && b[1] == 18 && b[2] == 0 && b[3] >= 1 && int(b[3]) <= MaxECMPDirectors {
		return int(b[3])
	}
	return 0
}

// ErrBadDirector names a director the lab does not have.
var ErrBadDirector = errors.New("lab: no such director")

// ParseDirector reads "director2" (or "2") for a lab of n directors.
func ParseDirector(s string, n int) (int, error) {
	v := strings.TrimPrefix(s, "director")
	i, err := strconv.Atoi(v)
	if err != nil || i < 1 || i > n {
		return 0, fmt.Errorf("%w %q: director1..director%d", ErrBadDirector, s, n)
	}
	return i, nil
}
