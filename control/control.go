// Package control is golvs's control plane: the daemon side that turns
// ipvsadm commands and rules files into a new configuration model and
// applies it to the director in one atomic step, and the client side used
// by `golvs adm`, joined by a unix socket that never listens on the network.
//
// There is one source of truth: the director's published snapshot holds
// the model it was built from. A change reads that model, applies the
// command (or every line of a restore) to a copy with ipvsadm's semantics
// and words, checks the result against what the data plane supports, and
// hands it to director.Apply, which validates it fully before changing
// anything and then swaps it in with one snapshot: a bad line leaves the
// running table untouched, and no change is ever applied partly.
//
// The protocol is small and versioned: one JSON request per line, one JSON
// reply per line.
//
//	{"v":1,"op":"exec","args":["-A","-t","198.18.0.100:80","-s","rr"]}
//	{"v":1,"op":"restore","text":"-A -t ...\n-a -t ...\n"}
//	{"v":1,"op":"list"}       services, dests, counters, rates, timeouts
//	{"v":1,"op":"conns"}      the connection table (ipvsadm -L -c), streamed
//	{"v":1,"op":"status"}     kernel semantics, every counter (drops by cause, events, table, kernel reassembly), what the host check relies on
//	{"v":1,"op":"proc","args":["ip_vs"]}  /proc/net/ip_vs or ip_vs_stats as text (control/proc.go)
//	{"v":1,"op":"vrrp"}       the VRRP speaker's state; "args":["priority","N"] changes it (control/vrrp.go)
//	{"v":1,"op":"trace","text":"tcp client 198.18.0.10","args":["--sample","100","--rate","1000"]}
//	{"v":1,"op":"takeover"}   a new golvs taking over (takeover.go)
//
// conns streams: the table is walked one shard at a time and sent as a
// series of replies, each with a batch of up to 1024 conns as text rows
// (connrows.go) and "more":true, the last without; neither side ever
// holds the whole table's listing, and the client prints as it reads.
//
// trace is a streaming op too (control/trace.go): the connection then
// carries TraceLine objects, one per line, until the client closes it or
// half-closes its side:
//
//	{"v":1,"ok":true,"filter":"tcp client 198.18.0.10/32","interfaces":["lo","ext0","int0"]}
//	{"v":1,"event":{"seq":1,"time":...,"in_if":"ext0","dir":"request",...,"before":"<base64>"}}
//	{"v":1,"dropped":0}       every second
//	{"v":1,"dropped":3,"end":true}   last, after a half-close
//
// The first line is a Reply as far as v, ok, error and status go: a filter
// or argument that does not parse, or a trace already running, gives
// {"v":1,"error":"...","status":N} and the connection closes. The event is
// a trace.Event (frames as base64, the scheduler's inputs, names not
// numbers); args are --sample N (one matching frame in N), --rate N
// (events per second at most) and --buffer N. A client that stops reading
// never slows the director: the tracer drops and counts events while the
// stream is behind, and a client that accepts nothing for 5 seconds is cut
// off. The trace is detached when the stream ends.
//
// A reply carries ok, and on failure the error text and the exit status
// ipvsadm would give.
//
// The socket is bounded like everything a client can grow: at most
// MaxConns connections at once (more are answered with an error and
// closed), request lines of at most MaxLine bytes (read incrementally: a
// longer line is refused as soon as the limit is passed), connections idle
// for IdleTimeout closed, and arguments with control characters (a NUL
// would otherwise cut an address short) refused. Accept errors such as
// running out of file descriptors are counted and retried with a backoff;
// they never stop the daemon from serving.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/golvs/golvs/bgp"
	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
	"github.com/golvs/golvs/vrrp"
)

// Version is the protocol version.
const Version = 1

// DefaultSocket is where the daemon listens unless told otherwise; the
// GOLVS_SOCKET environment variable overrides it for clients.
const DefaultSocket = "/run/golvs/golvs.sock"

// SocketPath returns the control socket path clients use.
func SocketPath() string {
	if p := os.Getenv("GOLVS_SOCKET"); p != "" {
		return p
	}
	return DefaultSocket
}

// Default limits of the control socket.
const (
	DefaultMaxConns    = 64
	DefaultMaxLine     = 16 << 20 // a rules file of ~200,000 lines
	DefaultIdleTimeout = 60 * time.Second
	writeTimeout       = 30 * time.Second
	maxAcceptBackoff   = time.Second
)

// Errors of the socket.
var (
	ErrLineTooLong = errors.New("control: request line too long")
	ErrControlChar = errors.New("control: control character in an argument")
)

// Request is one control request.
type Request struct {
	V    int      `json:"v"`
	Op   string   `json:"op"`
	Args []string `json:"args,omitempty"`
	Text string   `json:"text,omitempty"`
}

// Reply is the answer to a request.
type Reply struct {
	V        int                   `json:"v"`
	OK       bool                  `json:"ok"`
	Error    string                `json:"error,omitempty"`
	Status   int                   `json:"status,omitempty"`
	Services []ipvsadm.ListService `json:"services,omitempty"`
	Conns    []ipvsadm.Conn        `json:"conns,omitempty"`
	Rows     string                `json:"rows,omitempty"` // conns, streamed: a batch as rows (connrows.go)
	More     bool                  `json:"more,omitempty"` // conns: another batch follows
	Timeouts *ipvsadm.Timeouts     `json:"timeouts,omitempty"`
	Size     int                   `json:"size,omitempty"`
	Counters map[string]uint64     `json:"counters,omitempty"`
	Host     []string              `json:"host,omitempty"`
	Resolved bool                  `json:"resolved,omitempty"` // every real server has a next hop
	Marks    []ipvs.MarkRule       `json:"marks,omitempty"`
	PID      int                   `json:"pid,omitempty"`     // status: the daemon's process id
	Busy     bool                  `json:"busy,omitempty"`    // refused: too many connections; retry
	Text     string                `json:"text,omitempty"`    // proc op
	Daemons  []ipvsadm.DaemonState `json:"daemons,omitempty"` // list: the running sync daemons (-L --daemon)
	VRRP     *vrrp.Status          `json:"vrrp,omitempty"`    // status and vrrp ops (vrrp.go)
	// Semantics is the kernel semantics the director reproduces
	// ("current" or "classic"), in status replies.
	Semantics string `json:"semantics,omitempty"`
	// BGP is the speaker's sessions and routes, in status replies of a
	// director run with --bgp-asn.
	BGP *bgp.Status `json:"bgp,omitempty"`
}

// Server is the daemon side. Its limits may be changed before Serve.
type Server struct {
	D      *director.Director
	parser *ipvsadm.Parser

	MaxConns    int           // concurrent control connections (default 64)
	MaxLine     int           // bytes in one request line (default 16 MiB)
	IdleTimeout time.Duration // a connection with no request for this long is closed (default 60 s)
	// Logf reports accept errors and refused connections; nil: quiet.
	Logf func(format string, args ...any)

	ln   net.Listener
	path string

	// BGPStatus, when set (golvs run --bgp-asn), adds the speaker's
	// status to status replies.
	BGPStatus func() *bgp.Status
	// HealthHandoff, when set (golvs run --keepalived-conf), gives the
	// health checks' verdicts to a successor taking over (the bye
	// message; health.Engine.Handoff as JSON).
	HealthHandoff func() json.RawMessage

	slots      chan struct{}
	cnt        [numCounters]atomic.Uint64
	handedOver atomic.Bool // the socket belongs to the next process now
	onHandover func()
	takeMu     sync.Mutex // one takeover at a time

	vr VRRP // nil: no VRRP (vrrp.go); set before Serve
}

// Socket counters, reported by status.
const (
	cntAccepted = iota
	cntRefused
	cntAcceptErrors
	cntTooLong
	cntIdleClosed
	cntBadRequests
	numCounters
)

var counterNames = [numCounters]string{
	"control-accepted", "control-refused-busy", "control-accept-errors",
	"control-line-too-long", "control-idle-closed", "control-bad-requests",
}

// NewServer creates the control plane over a director.
func NewServer(d *director.Director) *Server {
	return &Server{D: d, parser: ipvsadm.NewParser()}
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

// Listen opens the control socket (mode 0600, in a 0700 directory it
// creates if missing). An existing socket with a live daemon behind it is
// refused; a stale one is replaced.
func (s *Server) Listen(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("control: another golvs daemon is listening on %s (to replace it without losing connections: golvs run --takeover)", path)
	}
	_ = os.Remove(path)
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return fmt.Errorf("control: listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("control: %w", err)
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false) // the path is removed by us, or left to a successor
	}
	s.ln, s.path = ln, path
	return nil
}

func (s *Server) limits() (maxConns, maxLine int, idle time.Duration) {
	maxConns, maxLine, idle = s.MaxConns, s.MaxLine, s.IdleTimeout
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	if maxLine <= 0 {
		maxLine = DefaultMaxLine
	}
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	return
}

// Serve answers requests until ctx is done (or the socket is handed over),
// then removes the socket. Accept errors (out of file descriptors, out of
// memory) are counted and retried after a backoff of up to a second.
func (s *Server) Serve(ctx context.Context) {
	maxConns, _, _ := s.limits()
	s.slots = make(chan struct{}, maxConns)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-ctx.Done():
		case <-stop:
		}
		s.ln.Close()
		if !s.handedOver.Load() {
			os.Remove(s.path)
		}
	}()
	backoff := time.Duration(0)
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			s.cnt[cntAcceptErrors].Add(1)
			if backoff == 0 {
				backoff = 5 * time.Millisecond
				s.logf("control: accept: %v (retrying)", err)
			} else if backoff < maxAcceptBackoff {
				backoff *= 2
			}
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		s.cnt[cntAccepted].Add(1)
		select {
		case s.slots <- struct{}{}:
			go func() {
				defer func() { <-s.slots }()
				s.conn(c)
			}()
		default:
			s.cnt[cntRefused].Add(1)
			go s.refuse(c, maxConns)
		}
	}
}

// refuse answers a connection over the limit with a busy error (after
// its first request line, so the client reads the answer rather than a
// broken pipe) and closes it. Clients retry busy answers for a while.
func (s *Server) refuse(c net.Conn, max int) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	_, _ = readLine(bufio.NewReaderSize(c, 4096), 64<<10)
	rep := fail(fmt.Errorf("control: too many control connections (%d at once); try again", max), 2)
	rep.V, rep.Busy = Version, true
	b, _ := json.Marshal(rep)
	_, _ = c.Write(append(b, '\n'))
}

func (s *Server) conn(c net.Conn) {
	defer c.Close()
	_, maxLine, idle := s.limits()
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriterSize(c, 64<<10)
	send := func(rep *Reply) bool {
		rep.V = Version
		_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
		b, err := json.Marshal(rep)
		if err != nil {
			b, _ = json.Marshal(fail(fmt.Errorf("control: encoding the reply: %v", err), 255))
		}
		if _, err := w.Write(append(b, '\n')); err != nil {
			return false
		}
		return w.Flush() == nil
	}
	for {
		_ = c.SetReadDeadline(time.Now().Add(idle))
		line, err := readLine(r, maxLine)
		if errors.Is(err, ErrLineTooLong) {
			s.cnt[cntTooLong].Add(1)
			send(fail(fmt.Errorf("%w: longer than %d bytes (the daemon's limit; split a big rules file)", ErrLineTooLong, maxLine), 2))
			return
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				s.cnt[cntIdleClosed].Add(1)
			}
			return
		}
		var req Request
		var rep *Reply
		if e := json.Unmarshal(line, &req); e != nil {
			s.cnt[cntBadRequests].Add(1)
			rep = fail(fmt.Errorf("control: bad request: %v", e), 255)
		} else if req.V != Version {
			s.cnt[cntBadRequests].Add(1)
			rep = fail(fmt.Errorf("control: protocol version %d not supported (this daemon speaks %d)", req.V, Version), 255)
		} else if err := checkRequest(&req); err != nil {
			s.cnt[cntBadRequests].Add(1)
			rep = fail(err, 2)
		} else {
			switch req.Op {
			case "trace":
				_ = c.SetDeadline(time.Time{})
				s.trace(c, r, &req) // streams until the client leaves; owns c
				return
			case "takeover":
				_ = c.SetDeadline(time.Time{})
				s.serveTakeover(c, r) // owns c
				return
			case "conns":
				if !s.streamConns(send) {
					return
				}
				continue
			}
			rep = s.Handle(&req)
		}
		if !send(rep) {
			return
		}
	}
}

// readLine reads one line (the newline included) of at most max bytes,
// a buffer's worth at a time: a longer line is refused once max is passed,
// never read whole first.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(line)+len(frag) > max+1 {
			return nil, ErrLineTooLong
		}
		if err == nil && line == nil {
			return frag, nil // the usual case: the line fits the buffer
		}
		line = append(line, frag...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, nil
		}
		return nil, err
	}
}

// checkRequest refuses control characters in every argument a request
// carries: in C, where ipvsadm's words come from, a NUL ends a string, and
// a newline or escape has no business in an address or a name. A rules
// text may hold newlines, tabs and carriage returns between its lines.
func checkRequest(req *Request) error {
	for i, a := range req.Args {
		if err := checkArg(a, false); err != nil {
			return fmt.Errorf("%w: argument %d, %q", err, i+1, a)
		}
	}
	if err := checkArg(req.Text, req.Op == "restore"); err != nil {
		return fmt.Errorf("%w: in the request's text", err)
	}
	return nil
}

func checkArg(s string, lines bool) error {
	for i, c := range []byte(s) {
		if c >= 0x20 && c != 0x7f {
			continue
		}
		if lines && (c == '\n' || c == '\t' || c == '\r') {
			continue
		}
		return fmt.Errorf("%w (byte %d is %#02x)", ErrControlChar, i, c)
	}
	return nil
}

func fail(err error, status int) *Reply {
	return &Reply{Error: err.Error(), Status: status}
}

func failErr(err error) *Reply {
	st := ipvsadm.ExitStatus(err)
	if st == 0 {
		st = 255
	}
	return fail(err, st)
}

// Handle answers one request. It serves programmatic callers as well as
// the socket; its conns reply holds the whole table (the socket streams
// it instead: see WalkConns).
func (s *Server) Handle(req *Request) *Reply {
	if err := checkRequest(req); err != nil {
		return fail(err, 2)
	}
	switch req.Op {
	case "exec":
		if err := s.Exec(req.Args); err != nil {
			return failErr(err)
		}
		return &Reply{OK: true}
	case "restore":
		if err := s.Restore(req.Text); err != nil {
			return failErr(err)
		}
		return &Reply{OK: true}
	case "list":
		return s.List()
	case "conns":
		return &Reply{OK: true, Conns: s.Conns()}
	case "proc":
		return s.proc(req)
	case "status":
		return s.status()
	case "vrrp":
		return s.vrrpOp(req)
	}
	return fail(fmt.Errorf("control: unknown operation %q", req.Op), 255)
}

func (s *Server) status() *Reply {
	rep := &Reply{OK: true, Counters: map[string]uint64{}, Host: s.D.HostReport(), Resolved: s.D.Resolved(), PID: os.Getpid(), Semantics: s.D.Semantics().String()}
	for i, v := range s.D.Drops.Get() {
		rep.Counters[director.CounterNames[i]] = v
	}
	for i, v := range s.D.ModeCounters() {
		rep.Counters[director.ModeCounterNames[i]] = v
	}
	for k, v := range s.D.KernelStats() {
		rep.Counters[k] = v
	}
	st := s.D.CT.Stats()
	rep.Counters["conns"] = uint64(st.Entries)
	rep.Counters["conns-created"] = st.Created
	rep.Counters["conns-expired"] = st.Expired
	rep.Counters["conns-dropped-table-full"] = st.Dropped
	rep.Counters["conns-evicted"] = st.Evicted
	rep.Counters["conns-dropped-drop-entry"] = st.DropEntry
	rep.Counters["conntrack-bytes"] = uint64(st.Bytes)
	def := s.D.CT.Defense()
	rep.Counters["defense-drop-entry"] = uint64(def.DropEntry)
	rep.Counters["defense-drop-packet"] = uint64(def.DropPacket)
	rep.Counters["defense-drop-rate"] = uint64(def.DropRate)
	rep.Counters["defense-secure-tcp"] = uint64(def.SecureTCP)
	for _, c := range s.D.HousekeepingCounters() {
		rep.Counters[c.Name] = c.Value
	}
	tr := s.D.Trash()
	rep.Counters["trash-services"] = uint64(tr.Services)
	rep.Counters["trash-dests"] = uint64(tr.Dests)
	rep.Counters["trash-evicted"] = tr.Evicted
	for i := range s.cnt {
		rep.Counters[counterNames[i]] = s.cnt[i].Load()
	}
	if s.BGPStatus != nil {
		rep.BGP = s.BGPStatus()
	}
	s.syncStatus(rep)
	if s.vr != nil {
		st := s.vr.Status()
		rep.VRRP = &st
	}
	return rep
}

// tableOf is the running model as an ipvsadm table, for commands to be
// applied to.
func tableOf(m *director.Model) *ipvsadm.Table {
	return ipvsadm.NewTableFrom(m.Services, m.Marks, ipvsadm.Timeouts(m.Timeouts))
}

// modelOf is the reverse.
func modelOf(t *ipvsadm.Table) director.Model {
	return director.Model{Services: t.Services(), Marks: t.Marks, Timeouts: director.Timeouts(t.Timeouts)}
}

// Exec applies one ipvsadm command line (not -L, -S or -R), or one of
// golvs's mark commands (--add-mark, --del-mark), atomically: the command
// is applied to a copy of the running model, and the result replaces it
// only if the director accepts all of it.
func (s *Server) Exec(args []string) error {
	for i, a := range args {
		if err := checkArg(a, false); err != nil {
			return fmt.Errorf("%w: argument %d, %q", err, i+1, a)
		}
	}
	if ipvsadm.IsMarkCommand(args) {
		mc, err := ipvsadm.ParseMark(args)
		if err != nil {
			return err
		}
		if mc.Op == "list" {
			return nil
		}
		return s.D.Update(func(m *director.Model) error {
			t := tableOf(m)
			if err := t.ApplyMark(mc); err != nil {
				return err
			}
			*m = modelOf(t)
			return nil
		})
	}
	cmd, err := s.parser.Parse(args)
	if err != nil {
		return err
	}
	switch cmd.Cmd {
	case ipvsadm.CmdList, ipvsadm.CmdSave, ipvsadm.CmdRestore, ipvsadm.CmdHelp, ipvsadm.CmdVersion:
		return fmt.Errorf("control: %s is answered by the client, not the daemon", cmd.Cmd)
	case ipvsadm.CmdStartDaemon, ipvsadm.CmdStopDaemon:
		return s.daemon(cmd) // sync.go
	}
	var zero []*ipvsadm.Command
	err = s.D.Update(func(m *director.Model) error {
		t := tableOf(m)
		if err := t.Apply(cmd); err != nil {
			return err
		}
		if cmd.Cmd == ipvsadm.CmdZero {
			zero = append(zero, cmd)
		}
		*m = modelOf(t)
		return nil
	})
	if err == nil {
		s.zero(zero)
	}
	return err
}

// zero carries out -Z commands (counters, not configuration).
func (s *Server) zero(cmds []*ipvsadm.Command) {
	for _, c := range cmds {
		if c.Has(ipvsadm.OptService) {
			k := ipvsadm.NormKey(c.Service.ServiceKey)
			for _, sv := range s.D.Snapshot().List {
				if ipvsadm.NormKey(sv.Config.ServiceKey) == k {
					k = sv.Config.ServiceKey
				}
			}
			s.D.Zero(&k)
		} else {
			s.D.Zero(nil)
		}
	}
}

// restoreStep is one line of a rules file: an ipvsadm command or a mark
// command.
type restoreStep struct {
	line ipvsadm.Line
	mark *ipvsadm.MarkCmd
}

// Restore applies a rules file (ipvsadm -R) atomically: every line, in
// order, is applied to a copy of the running model and checked against
// the data plane (so an error names its line); the result replaces the
// running model in one step only if every line succeeded. Services and
// real servers that the file removes and adds back (-C, then the same
// table) are the same objects before and after: their connections and
// scheduler state are untouched.
func (s *Server) Restore(text string) error {
	if err := checkArg(text, true); err != nil {
		return err
	}
	steps, err := s.parseRules(text)
	if err != nil {
		return err
	}
	var zero []*ipvsadm.Command
	err = s.D.Update(func(m *director.Model) error {
		t := tableOf(m)
		for _, st := range steps {
			l := st.line
			if st.mark != nil {
				if err := t.ApplyMark(st.mark); err != nil {
					return lineErr(l, err)
				}
				continue
			}
			if err := t.Apply(l.Cmd); err != nil {
				return lineErr(l, err)
			}
			if err := s.precheck(t, l.Cmd); err != nil {
				return lineErr(l, err)
			}
			if l.Cmd.Cmd == ipvsadm.CmdZero {
				zero = append(zero, l.Cmd)
			}
		}
		*m = modelOf(t)
		return nil
	})
	if err == nil {
		s.zero(zero)
	}
	return err
}

// parseRules reads a rules file into its steps, in file order. Mark lines
// are golvs's own: they are parsed here and blanked for the ipvsadm
// reader, which keeps the other lines' numbers.
func (s *Server) parseRules(text string) ([]restoreStep, error) {
	marks := map[int]*ipvsadm.MarkCmd{}
	src := strings.Split(text, "\n")
	for i, l := range src {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "ipvsadm" {
			f = f[1:]
		}
		if !ipvsadm.IsMarkCommand(f) {
			continue
		}
		mc, err := ipvsadm.ParseMark(f)
		if err != nil {
			return nil, &ipvsadm.Error{Status: ipvsadm.ExitStatus(err), Line: i + 1, Text: l, Msg: err.Error(), Err: err}
		}
		if mc.Op != "list" {
			marks[i+1] = mc
		}
		src[i] = ""
	}
	lines, err := s.parser.ParseRules(strings.NewReader(strings.Join(src, "\n")))
	if err != nil {
		return nil, err
	}
	steps := make([]restoreStep, 0, len(lines)+len(marks))
	next := 0
	for n := 1; n <= len(src); n++ {
		if mc := marks[n]; mc != nil {
			steps = append(steps, restoreStep{line: ipvsadm.Line{Num: n, Text: src0(text, n)}, mark: mc})
		}
		for next < len(lines) && lines[next].Num == n {
			steps = append(steps, restoreStep{line: lines[next]})
			next++
		}
	}
	for ; next < len(lines); next++ { // numbered past the split (cannot happen)
		steps = append(steps, restoreStep{line: lines[next]})
	}
	return steps, nil
}

// src0 returns line n (1-based) of text.
func src0(text string, n int) string {
	for i := 1; i < n; i++ {
		j := strings.IndexByte(text, '\n')
		if j < 0 {
			return ""
		}
		text = text[j+1:]
	}
	l, _, _ := strings.Cut(text, "\n")
	return l
}

func lineErr(l ipvsadm.Line, err error) error {
	var e *ipvsadm.Error
	if errors.As(err, &e) && e.Line != 0 {
		return err
	}
	return &ipvsadm.Error{Status: ipvsadm.ExitStatus(err), Line: l.Num, Text: l.Text, Msg: err.Error(), Err: err}
}

// precheck asks the director whether it can carry out what the table
// accepted, so that a restore's error names its line (Apply checks the
// whole result again).
func (s *Server) precheck(t *ipvsadm.Table, c *ipvsadm.Command) error {
	switch c.Cmd {
	case ipvsadm.CmdAdd, ipvsadm.CmdEdit:
		if err := s.D.CheckService(c.Service); err != nil {
			return err
		}
	case ipvsadm.CmdAddDest, ipvsadm.CmdEditDest:
		svc, ok := t.Service(c.Service.ServiceKey)
		if !ok {
			return fmt.Errorf("%s: %w", c.Service.ServiceKey, ipvs.ErrSvcNotDefined)
		}
		if err := s.D.CheckDest(svc, c.Dest); err != nil {
			return err
		}
	}
	return nil
}

// List answers -L and -S from one snapshot: the configuration it was
// built from (mark rules and timeouts included) with live counters and
// rates.
func (s *Server) List() *Reply {
	snap := s.D.Snapshot()
	to := ipvsadm.Timeouts(snap.Model.Timeouts)
	rep := &Reply{OK: true, Timeouts: &to, Size: 4096, Marks: snap.Model.Marks, Daemons: s.Daemons()}
	for _, sv := range snap.List {
		ls := ipvsadm.ListService{Config: sv.Config, Stats: sv.Stats.Snapshot(), Rate: rate(s.D.Rates(sv.Stats))}
		ls.Config.Dests = nil
		for _, d := range sv.Dests {
			ls.Dests = append(ls.Dests, ipvsadm.ListDest{
				Config: d.Config(), Active: uint32(d.ActiveConns()), Inact: uint32(d.InactConns()), Persist: uint32(d.PersistConns()),
				Stats: d.Stats.Snapshot(), Rate: rate(s.D.Rates(&d.Stats)),
			})
		}
		rep.Services = append(rep.Services, ls)
	}
	return rep
}

func rate(r [5]uint64) ipvsadm.Rate {
	return ipvsadm.Rate{CPS: r[0], InPPS: r[1], OutPPS: r[2], InBPS: r[3], OutBPS: r[4]}
}

// connBatch is the most conns one streamed reply carries.
const connBatch = 1024

// WalkConns calls fn with the connection table as ipvsadm -L -c shows
// it, in batches of at most 1024 (the slice is reused: copy what you
// keep). Memory stays bounded by one shard of the table; fn runs with no
// lock held.
func (s *Server) WalkConns(fn func([]ipvsadm.Conn) error) error {
	ct := s.D.CT
	out := make([]ipvsadm.Conn, 0, connBatch)
	return ct.Export(nil, nil, func(rs []conntrack.Record) error {
		for i := range rs {
			out = append(out, connOf(&rs[i]))
			if len(out) == connBatch {
				if err := fn(out); err != nil {
					return err
				}
				out = out[:0]
			}
		}
		if len(out) > 0 {
			err := fn(out)
			out = out[:0]
			return err
		}
		return nil
	})
}

func connOf(e *conntrack.Record) ipvsadm.Conn {
	c := ipvsadm.Conn{
		Proto:   e.In.Proto,
		Client:  ap(e.In.SrcIP, e.In.SrcPort),
		Virtual: ap(e.In.DstIP, e.In.DstPort),
		State:   conntrack.StateName(e.In.Proto, e.Template(), e.State),
		Expires: uint32(e.Expires.Seconds()),
	}
	if e.V6() { // the keys hold digests: the addresses are beside them
		c.Client = netip.AddrPortFrom(netip.AddrFrom16(e.A6.In.Src), e.In.SrcPort)
		c.Virtual = netip.AddrPortFrom(netip.AddrFrom16(e.A6.In.Dst), e.In.DstPort)
	}
	if e.Out != (conntrack.Key{}) {
		c.Dest = ap(e.Out.SrcIP, e.Out.SrcPort)
		if e.V6() {
			c.Dest = netip.AddrPortFrom(netip.AddrFrom16(e.A6.Out.Src), e.Out.SrcPort)
		}
	} else if e.Dest != nil {
		port := e.Dest.Port
		if port == 0 {
			port = e.In.DstPort
		}
		c.Dest = apA(e.Dest.Addr, port)
	}
	return c
}

// Conns lists the whole connection table as ipvsadm -L -c shows it, in
// memory: for programmatic callers of small tables (WalkConns streams).
func (s *Server) Conns() []ipvsadm.Conn {
	var all []ipvsadm.Conn
	_ = s.WalkConns(func(b []ipvsadm.Conn) error {
		all = append(all, b...)
		return nil
	})
	return all
}

// streamConns sends the conns reply as a stream of batches.
func (s *Server) streamConns(send func(*Reply) bool) bool {
	errGone := errors.New("client gone")
	var rows []byte
	err := s.WalkConns(func(b []ipvsadm.Conn) error {
		rows = rows[:0]
		for i := range b {
			rows = appendConnRow(rows, &b[i])
		}
		if !send(&Reply{OK: true, Rows: string(rows), More: true}) {
			return errGone
		}
		return nil
	})
	if err != nil {
		return false
	}
	return send(&Reply{OK: true})
}

func ap(a [4]byte, p uint16) netip.AddrPort { return netip.AddrPortFrom(netip.AddrFrom4(a), p) }

func apA(a netip.Addr, p uint16) netip.AddrPort { return netip.AddrPortFrom(a, p) }
