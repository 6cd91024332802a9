package testutil

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golvs/golvs/lab"
)

// EchoServe runs a line echo server on a TCP port inside ns: every line
// comes back prefixed with the server's name, so a test sees which real
// server holds a connection.
func EchoServe(t testing.TB, ctx context.Context, ns *lab.NS, name string, port int) {
	t.Helper()
	var l net.Listener
	err := ns.Do(func() error {
		var err error
		l, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { <-ctx.Done(); l.Close() }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				go func() { <-ctx.Done(); c.Close() }()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, name+" "+line); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// EchoConn is a long-lived connection through the VIP.
type EchoConn struct {
	c    net.Conn
	r    *bufio.Reader
	Name string // the real server that answers it
	n    int
}

// DialEcho opens a connection through addr from ns and makes its first
// exchange; the connection is closed at cleanup.
func DialEcho(t testing.TB, ns *lab.NS, addr netip.AddrPort) *EchoConn {
	t.Helper()
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr.String(), 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	e := &EchoConn{c: c, r: bufio.NewReader(c)}
	name, err := e.Ping(5 * time.Second)
	if err != nil {
		t.Fatalf("first echo on %s: %v", c.LocalAddr(), err)
	}
	e.Name = name
	return e
}

// Ping sends a line and waits for its echo; it returns the answering
// server's name.
func (e *EchoConn) Ping(timeout time.Duration) (string, error) {
	e.n++
	msg := fmt.Sprintf("ping %d", e.n)
	_ = e.c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(e.c, msg+"\n"); err != nil {
		return "", err
	}
	line, err := e.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("echo of %q: %w", msg, err)
	}
	name, rest, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
	if rest != msg {
		return "", fmt.Errorf("echo of %q came back as %q", msg, line)
	}
	return name, nil
}

// CheckEcho pings every connection; each must answer, from the server it
// started on.
func CheckEcho(t testing.TB, conns []*EchoConn, timeout time.Duration, when string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, e := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name, err := e.Ping(timeout)
			if err == nil && name != e.Name {
				err = fmt.Errorf("answered by %s, started on %s", name, e.Name)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: connection %d (%s) broken: %v", when, i, conns[i].c.LocalAddr(), err)
		}
	}
}

// RequestLoop makes HTTP requests through addr from ns on c workers until
// stop is closed; it counts successes and failures.
type RequestLoop struct {
	OK, Failed atomic.Int64
	mu         sync.Mutex
	first      error
	stop       chan struct{}
	wg         sync.WaitGroup
}

// StartRequests starts a RequestLoop of c workers.
func StartRequests(ns *lab.NS, addr netip.AddrPort, c int) *RequestLoop {
	l := &RequestLoop{stop: make(chan struct{})}
	for i := 0; i < c; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for n := 0; n < 100000; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				rs, err := lab.Get(ns, addr, 1, 10*time.Second)
				if err == nil && rs[0].Err == nil {
					l.OK.Add(1)
					continue
				}
				l.Failed.Add(1)
				l.mu.Lock()
				if l.first == nil {
					l.first = fmt.Errorf("%v %v", err, rs)
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// WaitOK waits until at least n requests succeeded (or 30 s went by).
func (l *RequestLoop) WaitOK(n int64) {
	deadline := time.Now().Add(30 * time.Second)
	for l.OK.Load() < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// End stops the loop and fails the test if any request failed.
func (l *RequestLoop) End(t testing.TB) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if f := l.Failed.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed; first: %v", f, f+l.OK.Load(), l.first)
	}
	if l.OK.Load() == 0 {
		t.Fatal("no request succeeded")
	}
}
