// Package control is golvs's control plane: the daemon side that owns the
// configured service table (an ipvsadm.Table) and mirrors every accepted
// change into the director's snapshot, and the client side used by
// `golvs adm`, joined by a unix socket that never listens on the network.
//
// The protocol is small and versioned: one JSON request per line, one JSON
// reply per line.
//
//	{"v":1,"op":"exec","args":["-A","-t","198.18.0.100:80","-s","rr"]}
//	{"v":1,"op":"restore","text":"-A -t ...\n-a -t ...\n"}
//	{"v":1,"op":"list"}       services, dests, counters, rates, timeouts
//	{"v":1,"op":"conns"}      the connection table (ipvsadm -L -c)
//	{"v":1,"op":"status"}     kernel semantics, every counter (drops by cause, events, table, kernel reassembly), what the host check relies on
//	{"v":1,"op":"proc","args":["ip_vs"]}  /proc/net/ip_vs or ip_vs_stats as text (control/proc.go)
//	{"v":1,"op":"vrrp"}       the VRRP speaker's state; "args":["priority","N"] changes it (control/vrrp.go)
//	{"v":1,"op":"trace","text":"tcp client 198.18.0.10","args":["--sample","100","--rate","1000"]}
//
// trace is the one streaming op (control/trace.go): the connection then
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
// ipvsadm would give. Every change is atomic: a command (or a whole
// restore) is applied to a copy of the table and checked against what the
// data plane supports before anything changes; a bad line leaves the
// running table untouched.
package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

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
	Timeouts *ipvsadm.Timeouts     `json:"timeouts,omitempty"`
	Size     int                   `json:"size,omitempty"`
	Counters map[string]uint64     `json:"counters,omitempty"`
	Host     []string              `json:"host,omitempty"`
	Resolved bool                  `json:"resolved,omitempty"` // every real server has a next hop
	Marks    []ipvs.MarkRule       `json:"marks,omitempty"`
	Text     string                `json:"text,omitempty"`    // proc op
	Daemons  []ipvsadm.DaemonState `json:"daemons,omitempty"` // list: the running sync daemons (-L --daemon)
	VRRP     *vrrp.Status          `json:"vrrp,omitempty"`    // status and vrrp ops (vrrp.go)
	// Semantics is the kernel semantics the director reproduces
	// ("current" or "classic"), in status replies.
	Semantics string `json:"semantics,omitempty"`
}

// Server is the daemon side.
type Server struct {
	D      *director.Director
	parser *ipvsadm.Parser
	mu     sync.Mutex
	table  *ipvsadm.Table
	marks  []ipvs.MarkRule
	ln     net.Listener
	path   string
	vr     VRRP // nil: no VRRP (vrrp.go)
}

// NewServer creates the control plane over a director.
func NewServer(d *director.Director) *Server {
	p := ipvsadm.NewParser()
	return &Server{D: d, parser: p, table: ipvsadm.NewTable()}
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
		return fmt.Errorf("control: another golvs daemon is listening on %s", path)
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
	s.ln, s.path = ln, path
	return nil
}

// Serve answers requests until ctx is done, then removes the socket.
func (s *Server) Serve(ctx context.Context) {
	go func() {
		<-ctx.Done()
		s.ln.Close()
		os.Remove(s.path)
	}()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.conn(c)
	}
}

func (s *Server) conn(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	enc := json.NewEncoder(c)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) == 0 && err != nil {
			return
		}
		var req Request
		var rep *Reply
		if e := json.Unmarshal(line, &req); e != nil {
			rep = fail(fmt.Errorf("control: bad request: %v", e), 255)
		} else if req.V != Version {
			rep = fail(fmt.Errorf("control: protocol version %d not supported (this daemon speaks %d)", req.V, Version), 255)
		} else if req.Op == "trace" {
			s.trace(c, r, &req) // streams until the client leaves; owns c
			return
		} else {
			rep = s.Handle(&req)
		}
		rep.V = Version
		if enc.Encode(rep) != nil {
			return
		}
	}
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

// Handle answers one request.
func (s *Server) Handle(req *Request) *Reply {
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
		return s.list()
	case "conns":
		return &Reply{OK: true, Conns: s.Conns()}
	case "proc":
		return s.proc(req)
	case "status":
		rep := &Reply{OK: true, Counters: map[string]uint64{}, Host: s.D.HostReport(), Resolved: s.D.Resolved(), Semantics: s.D.Semantics().String()}
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
		for _, c := range s.D.HousekeepingCounters() {
			rep.Counters[c.Name] = c.Value
		}
		s.syncStatus(rep)
		if s.vr != nil {
			st := s.vr.Status()
			rep.VRRP = &st
		}
		return rep
	case "vrrp":
		return s.vrrpOp(req)
	}
	return fail(fmt.Errorf("control: unknown operation %q", req.Op), 255)
}

// Exec applies one ipvsadm command line (not -L, -S or -R), or one of
// golvs's mark commands (--add-mark, --del-mark).
func (s *Server) Exec(args []string) error {
	if ipvsadm.IsMarkCommand(args) {
		mc, err := ipvsadm.ParseMark(args)
		if err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		m, err := ipvsadm.ApplyMark(s.marks, mc)
		if err != nil {
			return err
		}
		s.marks = m
		s.D.SetMarks(m)
		return nil
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
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.table.Clone()
	if err := n.Apply(cmd); err != nil {
		return err
	}
	if err := s.precheck(n, cmd); err != nil {
		return err
	}
	if err := s.mirror(cmd); err != nil {
		return err
	}
	s.table = n
	return nil
}

// Restore applies a rules file (ipvsadm -R) atomically: every line is
// parsed, applied to a copy of the table and checked against the data
// plane first; only then is anything changed.
func (s *Server) Restore(text string) error {
	// Mark lines are golvs's own; they are parsed here and blanked for
	// the ipvsadm reader, which keeps the other lines' numbers.
	var markCmds []*ipvsadm.MarkCmd
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
			return &ipvsadm.Error{Status: ipvsadm.ExitStatus(err), Line: i + 1, Text: l, Msg: err.Error(), Err: err}
		}
		markCmds = append(markCmds, mc)
		src[i] = ""
	}
	lines, err := s.parser.ParseRules(strings.NewReader(strings.Join(src, "\n")))
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.table.Clone()
	marks := s.marks
	for _, mc := range markCmds {
		if marks, err = ipvsadm.ApplyMark(marks, mc); err != nil {
			return err
		}
	}
	for _, l := range lines {
		if l.Cmd.Cmd == ipvsadm.CmdFlush {
			marks = nil
		}
		if err := n.Apply(l.Cmd); err != nil {
			return lineErr(l, err)
		}
		if err := s.precheck(n, l.Cmd); err != nil {
			return lineErr(l, err)
		}
	}
	for _, l := range lines {
		if err := s.mirror(l.Cmd); err != nil {
			// precheck passed, so this is a golvs bug; say so plainly.
			return fmt.Errorf("control: line %d applied partly (internal error): %w", l.Num, err)
		}
	}
	s.table = n
	s.marks = marks
	s.D.SetMarks(marks)
	return nil
}

func lineErr(l ipvsadm.Line, err error) error {
	var e *ipvsadm.Error
	if errors.As(err, &e) && e.Line != 0 {
		return err
	}
	return &ipvsadm.Error{Status: ipvsadm.ExitStatus(err), Line: l.Num, Text: l.Text, Msg: err.Error(), Err: err}
}

// precheck asks the director whether it can carry out what the table
// accepted.
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

// mirror carries an accepted command into the director.
func (s *Server) mirror(c *ipvsadm.Command) error {
	k := c.Service.ServiceKey
	switch c.Cmd {
	case ipvsadm.CmdAdd:
		return s.D.AddService(c.Service)
	case ipvsadm.CmdEdit:
		return s.D.EditService(c.Service)
	case ipvsadm.CmdDel:
		return s.D.DelService(k)
	case ipvsadm.CmdFlush:
		// golvs's -C also clears the mark rules (they exist only to feed
		// its fwmark services), so that ipvsadm-restore's -C then -R
		// round trip holds.
		s.D.Clear()
		s.marks = nil
		s.D.SetMarks(nil)
	case ipvsadm.CmdAddDest:
		return s.D.AddDest(k, c.Dest)
	case ipvsadm.CmdEditDest:
		return s.D.EditDest(k, c.Dest)
	case ipvsadm.CmdDelDest:
		return s.D.DelDest(k, c.Dest.Addr, c.Dest.Port)
	case ipvsadm.CmdSetTimeout:
		s.D.CT.SetTimeouts(c.Timeouts.TCP, c.Timeouts.TCPFin, c.Timeouts.UDP)
	case ipvsadm.CmdZero:
		if c.Has(ipvsadm.OptService) {
			s.D.Zero(&k)
		} else {
			s.D.Zero(nil)
		}
	}
	return nil
}

// list answers -L and -S: the configuration with live counters and rates.
func (s *Server) list() *Reply {
	s.mu.Lock()
	tcp, fin, udp := s.D.CT.Timeouts()
	marks := s.marks // Restore replaces the slice under mu
	s.mu.Unlock()
	rep := &Reply{OK: true, Timeouts: &ipvsadm.Timeouts{TCP: tcp, TCPFin: fin, UDP: udp}, Size: 4096, Marks: marks, Daemons: s.Daemons()}
	for _, sv := range s.D.Snapshot().List {
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

// Conns lists the connection table as ipvsadm -L -c shows it.
func (s *Server) Conns() []ipvsadm.Conn {
	var out []ipvsadm.Conn
	s.EachConn(func(c *ipvsadm.Conn) { out = append(out, *c) })
	return out
}

func ap(a [4]byte, p uint16) netip.AddrPort { return netip.AddrPortFrom(netip.AddrFrom4(a), p) }

func apA(a netip.Addr, p uint16) netip.AddrPort { return netip.AddrPortFrom(a, p) }
