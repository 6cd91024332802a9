package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"syscall"
	"time"

	"github.com/golvs/golvs/ipvsadm"
)

// Client talks to a running daemon.
type Client struct {
	c    net.Conn
	r    *bufio.Reader
	Path string
}

// Errors a client can meet before any request.
var (
	ErrNotRunning = errors.New("no golvs director is running")
	ErrPermission = errors.New("permission denied")
)

// Dial connects to the daemon's control socket.
func Dial(path string) (*Client, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		switch {
		case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
			return nil, fmt.Errorf("golvs: %w on the control socket %s (it is mode 0600, owned by root: run as root)", ErrPermission, path)
		case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("golvs: %w (no control socket at %s; start one with `golvs run`, or set GOLVS_SOCKET)", ErrNotRunning, path)
		}
		return nil, fmt.Errorf("golvs: control socket %s: %w", path, err)
	}
	return &Client{c: c, r: bufio.NewReader(c), Path: path}, nil
}

// busyRetry is how long a client retries a daemon that is busy (at its
// connection limit) before giving up with the daemon's answer.
const busyRetry = 10 * time.Second

// redial replaces the connection (the daemon closed a busy one).
func (c *Client) redial() error {
	n, err := Dial(c.Path)
	if err != nil {
		return err
	}
	c.c.Close()
	c.c, c.r = n.c, n.r
	return nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

// Do sends one request and reads its reply. A daemon at its connection
// limit answers busy: Do tries again on a new connection, backing off,
// for up to 10 seconds.
func (c *Client) Do(req *Request) (*Reply, error) {
	deadline := time.Now().Add(busyRetry)
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
		rep, err := c.do(req)
		if err != nil || !rep.Busy || time.Now().After(deadline) {
			return rep, err
		}
		time.Sleep(delay)
		if err := c.redial(); err != nil {
			return nil, err
		}
	}
}

func (c *Client) do(req *Request) (*Reply, error) {
	req.V = Version
	b, _ := json.Marshal(req)
	_ = c.c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.c.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("golvs: control socket %s: %w", c.Path, err)
	}
	return c.reply()
}

// maxReplyLine bounds one reply line the client reads.
const maxReplyLine = 256 << 20

func (c *Client) reply() (*Reply, error) {
	line, err := readLine(c.r, maxReplyLine)
	if err != nil {
		return nil, fmt.Errorf("golvs: control socket %s: %w", c.Path, err)
	}
	var rep Reply
	if err := json.Unmarshal(line, &rep); err != nil {
		return nil, fmt.Errorf("golvs: bad reply from %s: %w", c.Path, err)
	}
	return &rep, nil
}

// Conns asks for the connection table and calls fn with each batch as it
// arrives (the daemon streams it); memory stays bounded by one batch.
func (c *Client) Conns(fn func([]ipvsadm.Conn) error) error {
	rep, err := c.Do(&Request{Op: "conns"})
	var batch []ipvsadm.Conn
	for {
		if err != nil {
			return err
		}
		if !rep.OK {
			return &ipvsadm.Error{Status: rep.Status, Msg: rep.Error, Err: errors.New(rep.Error)}
		}
		if batch, err = parseConnRows(rep.Rows, batch); err != nil {
			return err
		}
		if err := fn(append(batch, rep.Conns...)); err != nil {
			return err
		}
		if !rep.More {
			return nil
		}
		_ = c.c.SetDeadline(time.Now().Add(60 * time.Second))
		rep, err = c.reply()
	}
}

// AdmMain is `golvs adm` (and `golvsadm`): ipvsadm's command line, answered
// in ipvsadm's words, against the daemon at SocketPath(). It returns the
// exit status.
func AdmMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	p := ipvsadm.NewParser()
	if len(args) == 0 {
		args = []string{"-L"}
	}
	if isStatusCommand(args) { // status.go
		return statusMain(args, stdout, stderr)
	}
	if ipvsadm.IsProcCommand(args) {
		return admProc(args, stdout, stderr)
	}
	if IsVRRPCommand(args) {
		return admVRRP(args, stdout, stderr)
	}
	if ipvsadm.IsMarkCommand(args) {
		mc, err := ipvsadm.ParseMark(args)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return ipvsadm.ExitStatus(err)
		}
		cl, err := Dial(SocketPath())
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		defer cl.Close()
		if mc.Op == "list" {
			rep, err := cl.Do(&Request{Op: "list"})
			if code := report(rep, err)(stderr); code != 0 {
				return code
			}
			for _, r := range rep.Marks {
				fmt.Fprintln(stdout, ipvsadm.FormatMark(r))
			}
			return 0
		}
		return report(cl.Do(&Request{Op: "exec", Args: args}))(stderr)
	}
	cmd, err := p.Parse(args)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return ipvsadm.ExitStatus(err)
	}
	switch cmd.Cmd {
	case ipvsadm.CmdHelp:
		_ = ipvsadm.WriteHelp(stdout, "ipvsadm")
		return 0
	case ipvsadm.CmdVersion:
		_ = ipvsadm.WriteVersion(stdout)
		return 0
	}
	cl, err := Dial(SocketPath())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	defer cl.Close()
	switch cmd.Cmd {
	case ipvsadm.CmdList, ipvsadm.CmdSave:
		return list(cl, cmd, stdout, stderr)
	case ipvsadm.CmdRestore:
		text, err := io.ReadAll(stdin)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
		return report(cl.Do(&Request{Op: "restore", Text: string(text)}))(stderr)
	}
	return report(cl.Do(&Request{Op: "exec", Args: args}))(stderr)
}

func report(rep *Reply, err error) func(io.Writer) int {
	return func(w io.Writer) int {
		if err != nil {
			fmt.Fprintln(w, err)
			return 2
		}
		if !rep.OK {
			fmt.Fprintln(w, rep.Error)
			return rep.Status
		}
		return 0
	}
}

func list(cl *Client, cmd *ipvsadm.Command, stdout, stderr io.Writer) int {
	l := ipvsadm.NewLister(cmd.Format)
	if cmd.Cmd == ipvsadm.CmdList && cmd.ListMode() == ipvsadm.ListModeConns {
		cw := l.NewConnWriter(stdout)
		err := cl.Conns(cw.Write)
		if err == nil {
			err = cw.Close()
		}
		if err != nil {
			fmt.Fprintln(stderr, err)
			var e *ipvsadm.Error
			if errors.As(err, &e) && e.Status != 0 {
				return e.Status
			}
			return 1
		}
		return 0
	}
	rep, err := cl.Do(&Request{Op: "list"})
	if code := report(rep, err)(stderr); code != 0 {
		return code
	}
	if rep.Size != 0 {
		l.Size = rep.Size
	}
	var werr error
	switch {
	case cmd.Cmd == ipvsadm.CmdSave:
		for _, r := range rep.Marks {
			fmt.Fprintln(stdout, ipvsadm.FormatMark(r))
		}
		werr = l.WriteSave(stdout, rep.Services, cmd.Has(ipvsadm.OptNumeric))
	case cmd.ListMode() == ipvsadm.ListModeTimeout:
		werr = ipvsadm.WriteTimeout(stdout, *rep.Timeouts)
	case cmd.ListMode() == ipvsadm.ListModeDaemon:
		werr = ipvsadm.WriteDaemon(stdout, rep.Daemons)
	case cmd.ListMode() == ipvsadm.ListModeService:
		k := ipvsadm.NormKey(cmd.Service.ServiceKey)
		i := slices.IndexFunc(rep.Services, func(s ipvsadm.ListService) bool { return ipvsadm.NormKey(s.Config.ServiceKey) == k })
		if i < 0 {
			fmt.Fprintln(stderr, "No such service")
			return 1
		}
		werr = l.WriteService(stdout, rep.Services[i])
	default:
		werr = l.WriteAll(stdout, rep.Services)
	}
	if werr != nil {
		fmt.Fprintln(stderr, werr)
		return 1
	}
	return 0
}
