package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server is a real server's tiny services: HTTP on TCP ports answering
// with its name and a newline, and UDP ports echoing its name. It records
// the client addresses it saw, so tests can check what the real server
// saw as source.
type Server struct {
	Name string
	// delay is a service time added to every HTTP answer (SetDelay).
	delay atomic.Int64
	mu    sync.Mutex
	seen  map[netip.Addr]int
	n     int
	ls    []net.Listener
	pcs   []net.PacketConn
}

// Serve starts the server's listeners inside ns (so their sockets live
// there; nil: the current namespace) and serves them until ctx is done.
// It listens on IPv4; Serve6 on IPv4 and IPv6.
func Serve(ctx context.Context, ns *NS, name string, tcpPorts, udpPorts []int) (*Server, error) {
	return serve(ctx, ns, name, tcpPorts, udpPorts, []string{"4"})
}

// Serve6 is Serve for a dual-stack lab: every port on IPv4 and IPv6.
func Serve6(ctx context.Context, ns *NS, name string, tcpPorts, udpPorts []int) (*Server, error) {
	return serve(ctx, ns, name, tcpPorts, udpPorts, []string{"4", "6"})
}

func serve(ctx context.Context, ns *NS, name string, tcpPorts, udpPorts []int, fams []string) (*Server, error) {
	s := &Server{Name: name, seen: map[netip.Addr]int{}}
	do := func(f func() error) error { return f() }
	if ns != nil {
		do = ns.Do
	}
	err := do(func() error {
		for _, fam := range fams {
			for _, p := range tcpPorts {
				l, err := net.Listen("tcp"+fam, fmt.Sprintf(":%d", p))
				if err != nil {
					return fmt.Errorf("lab: %s listening on tcp%s/%d: %w", name, fam, p, err)
				}
				s.ls = append(s.ls, l)
			}
			for _, p := range udpPorts {
				pc, err := net.ListenPacket("udp"+fam, fmt.Sprintf(":%d", p))
				if err != nil {
					return fmt.Errorf("lab: %s listening on udp%s/%d: %w", name, fam, p, err)
				}
				s.pcs = append(s.pcs, pc)
			}
		}
		return nil
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	for _, l := range s.ls {
		go s.acceptLoop(l)
	}
	for _, pc := range s.pcs {
		go s.udpLoop(pc)
	}
	go func() {
		<-ctx.Done()
		s.Close()
	}()
	return s, nil
}

// SetDelay makes every HTTP answer wait d first: a server's service time,
// for benchmarks of schedulers over servers of different capacities.
func (s *Server) SetDelay(d time.Duration) { s.delay.Store(int64(d)) }

// Close stops the listeners.
func (s *Server) Close() {
	for _, l := range s.ls {
		l.Close()
	}
	for _, pc := range s.pcs {
		pc.Close()
	}
}

func (s *Server) saw(a net.Addr) {
	var ap netip.AddrPort
	switch x := a.(type) {
	case *net.TCPAddr:
		ap = x.AddrPort()
	case *net.UDPAddr:
		ap = x.AddrPort()
	}
	s.mu.Lock()
	s.seen[ap.Addr().Unmap()]++
	s.n++
	s.mu.Unlock()
}

// Seen returns how many requests came from each source address.
func (s *Server) Seen() map[netip.Addr]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[netip.Addr]int, len(s.seen))
	for k, v := range s.seen {
		out[k] = v
	}
	return out
}

// Requests returns how many requests the server answered.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *Server) acceptLoop(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go s.serveConn(c)
	}
}

// serveConn answers one HTTP request per connection and closes it, as
// the LVS tutorials' web servers do with Connection: close. A request for
// /bytes/N answers N bytes of body after the name (bulk transfers).
func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	s.saw(c.RemoteAddr())
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	for {
		h, err := r.ReadString('\n')
		if err != nil || h == "\r\n" || h == "\n" {
			break
		}
	}
	if d := s.delay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	body := s.Name + "\n"
	extra := 0
	if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(f[1], "/bytes/") {
		fmt.Sscanf(f[1], "/bytes/%d", &extra)
		if extra < 0 || extra > MaxBulk {
			extra = 0
		}
	}
	fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body)+extra, body)
	for extra > 0 {
		n := min(extra, len(bulk))
		if _, err := c.Write(bulk[:n]); err != nil {
			return
		}
		extra -= n
	}
}

// MaxBulk is the longest /bytes/N answer a Server gives (4 GiB, or what
// an int holds where it has 32 bits); a longer N answers the name alone.
const MaxBulk = min(4<<30, math.MaxInt)

// bulk is what /bytes/N answers, written 256 KiB at a time (one write
// system call each; 32 KiB writes made the server cost more per byte
// than the paths it measures). Never written after init, so every
// connection shares it.
var bulk = []byte(strings.Repeat("x", 256<<10))

func (s *Server) udpLoop(pc net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		s.saw(from)
		_, _ = pc.WriteTo([]byte(s.Name+"\n"), from)
	}
}

// Response is one HTTP exchange's outcome as the client saw it.
type Response struct {
	Body    string
	Remote  netip.AddrPort // the address the client talked to
	Err     error
	Latency time.Duration // from dial to the end of the answer
}

// Get makes n HTTP/1.0 requests, each on a new TCP connection, from inside
// ns to addr, one after another, and returns each response's body line.
// Every connection has a deadline, so a broken data path fails the call
// instead of hanging it.
func Get(ns *NS, addr netip.AddrPort, n int, timeout time.Duration) ([]Response, error) {
	out := make([]Response, 0, n)
	err := ns.Do(func() error {
		for i := 0; i < n; i++ {
			out = append(out, get1(addr, "/", timeout))
		}
		return nil
	})
	return out, err
}

// GetParallel makes n requests using c concurrent connections.
func GetParallel(ns *NS, addr netip.AddrPort, n, c int, timeout time.Duration) ([]Response, error) {
	out := make([]Response, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := 0
	var firstErr error
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := ns.Do(func() error {
				for {
					mu.Lock()
					i := next
					next++
					mu.Unlock()
					if i >= n {
						return nil
					}
					out[i] = get1(addr, "/", timeout)
				}
			})
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out, firstErr
}

// GetPath makes one request for path and returns the body length read.
func GetPath(ns *NS, addr netip.AddrPort, path string, timeout time.Duration) (Response, int, error) {
	var r Response
	var n int
	err := ns.Do(func() error {
		r, n = getN(addr, path, timeout)
		return nil
	})
	return r, n, err
}

func get1(addr netip.AddrPort, path string, timeout time.Duration) Response {
	r, _ := getN(addr, path, timeout)
	return r
}

func getN(addr netip.AddrPort, path string, timeout time.Duration) (Response, int) {
	start := time.Now()
	r, n := getN1(addr, path, timeout)
	r.Latency = time.Since(start)
	return r, n
}

// tcpNet and udpNet name the network of an address's family.
func tcpNet(a netip.Addr) string {
	if a.Is6() {
		return "tcp6"
	}
	return "tcp4"
}

func udpNet(a netip.Addr) string {
	if a.Is6() {
		return "udp6"
	}
	return "udp4"
}

func getN1(addr netip.AddrPort, path string, timeout time.Duration) (Response, int) {
	c, err := net.DialTimeout(tcpNet(addr.Addr()), addr.String(), timeout)
	if err != nil {
		return Response{Err: err}, 0
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	r := Response{Remote: c.RemoteAddr().(*net.TCPAddr).AddrPort()}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr); err != nil {
		r.Err = err
		return r, 0
	}
	all, err := io.ReadAll(c)
	if err != nil {
		r.Err = err
		return r, 0
	}
	s := string(all)
	i := strings.Index(s, "\r\n\r\n")
	if status, _, _ := strings.Cut(s, "\r\n"); !StatusOK(status) || i < 0 {
		r.Err = fmt.Errorf("lab: bad HTTP response from %s: %q", addr, truncate(s, 80))
		return r, 0
	}
	body := s[i+4:]
	r.Body, _, _ = strings.Cut(body, "\n")
	return r, len(body)
}

// Fetch gets path from addr's HTTP server on one new connection from
// inside ns and reads the answer through one reused 1 MiB buffer, keeping
// none of it: the body's length and the time from dial to its last byte.
// It is the bulk client for streams, costing one read per 1 MiB at most,
// so that it outruns the paths it measures (GetPath keeps the whole
// answer, and at 1 GB/s its copies cost more than the paths did). The
// body must be as long as the answer's Content-Length.
func Fetch(ns *NS, addr netip.AddrPort, path string, timeout time.Duration) (body int64, el time.Duration, err error) {
	err = ns.Do(func() error {
		start := time.Now()
		c, err := net.DialTimeout(tcpNet(addr.Addr()), addr.String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(start.Add(timeout))
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr); err != nil {
			return err
		}
		buf := make([]byte, 1<<20)
		var head []byte // the answer up to the end of its header
		want := int64(-1)
		for {
			n, rerr := c.Read(buf)
			if want < 0 && n > 0 {
				head = append(head, buf[:n]...)
				i := bytes.Index(head, []byte("\r\n\r\n"))
				switch {
				case i >= 0:
					if want, err = contentLength(string(head[:i])); err != nil {
						return fmt.Errorf("lab: answer from %s: %w", addr, err)
					}
					body = int64(len(head) - i - 4)
				case len(head) > 16<<10:
					return fmt.Errorf("lab: answer from %s: no end of header in its first 16 KiB", addr)
				}
			} else {
				body += int64(n)
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return rerr
			}
		}
		el = time.Since(start)
		switch {
		case want < 0:
			return fmt.Errorf("lab: answer from %s ended in its header: %q", addr, truncate(string(head), 80))
		case body != want:
			return fmt.Errorf("lab: answer from %s: %d bytes of body, Content-Length %d", addr, body, want)
		}
		return nil
	})
	return body, el, err
}

// StatusOK says whether line, an HTTP answer's first line without its
// line end, is a 200 of HTTP/1.0 or HTTP/1.1 (a 1.0 request may be
// answered in 1.1, RFC 9110 2.5: nginx does).
func StatusOK(line string) bool {
	version, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	return (version == "HTTP/1.0" || version == "HTTP/1.1") && code == "200"
}

// contentLength checks an HTTP 200 answer's header (StatusOK) and returns
// its Content-Length.
func contentLength(head string) (int64, error) {
	lines := strings.Split(head, "\r\n")
	if !StatusOK(lines[0]) {
		return 0, fmt.Errorf("status %q", truncate(lines[0], 80))
	}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), "Content-Length") {
			// RFC 9110: 1*DIGIT, so no sign (ParseInt takes "+1" and "-0").
			v = strings.TrimSpace(v)
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || strings.Trim(v, "0123456789") != "" {
				return 0, fmt.Errorf("Content-Length %q", truncate(v, 40))
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("no Content-Length")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// UDPAsk sends one datagram from inside ns to addr and returns the reply
// line and the address it came from.
func UDPAsk(ns *NS, addr netip.AddrPort, timeout time.Duration) (string, netip.AddrPort, error) {
	var body string
	var from netip.AddrPort
	err := ns.Do(func() error {
		c, err := net.ListenUDP(udpNet(addr.Addr()), nil)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.WriteToUDPAddrPort([]byte("hello\n"), addr); err != nil {
			return err
		}
		buf := make([]byte, 512)
		n, f, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return fmt.Errorf("lab: no UDP answer from %s: %w", addr, err)
		}
		body, from = strings.TrimSpace(string(buf[:n])), f
		return nil
	})
	return body, from, err
}

// Sink accepts TCP connections on port inside ns (nil: the current
// namespace) and counts the bytes each sends; when the client half-closes
// it answers with the count and a newline. Uploads through the director
// use it.
func Sink(ctx context.Context, ns *NS, port int) error {
	var l, l6 net.Listener
	listen := func() error {
		var err error
		l, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		if err == nil {
			l6, _ = net.Listen("tcp6", fmt.Sprintf("[::]:%d", port)) // where IPv6 is on
		}
		return err
	}
	var err error
	if ns != nil {
		err = ns.Do(listen)
	} else {
		err = listen()
	}
	if err != nil {
		return fmt.Errorf("lab: sink on tcp/%d: %w", port, err)
	}
	go func() {
		<-ctx.Done()
		l.Close()
		if l6 != nil {
			l6.Close()
		}
	}()
	if l6 != nil {
		go sinkLoop(l6)
	}
	go sinkLoop(l)
	return nil
}

func sinkLoop(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			n, _ := io.Copy(io.Discard, c)
			fmt.Fprintf(c, "%d\n", n)
		}()
	}
}

// Upload sends size bytes from inside ns to a Sink at addr and returns the
// count the sink answered.
func Upload(ns *NS, addr netip.AddrPort, size int, timeout time.Duration) (string, error) {
	var got string
	err := ns.Do(func() error {
		c, err := net.DialTimeout(tcpNet(addr.Addr()), addr.String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write(make([]byte, size)); err != nil {
			return err
		}
		_ = c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		got = strings.TrimSpace(string(b))
		return err
	})
	return got, err
}
