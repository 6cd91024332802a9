package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
)

// The kernel's /proc/net/ip_vs files, for `golvs adm --proc NAME` (the
// proc op) and `golvs run --proc-dir DIR` (RunProcDir), and the readings
// the Prometheus collector takes (the Server is a metrics.Source).

// Services returns the services with their dests, counters and rates, in
// creation order (dests in kernel list order), as the list op reads them.
func (s *Server) Services() []ipvsadm.ListService { return s.list().Services }

// Totals returns the director-wide counters (/proc/net/ip_vs_stats) and
// their estimated rates.
func (s *Server) Totals() (ipvs.StatsSnapshot, ipvsadm.Rate) {
	return s.D.Total.Snapshot(), rate(s.D.Rates(&s.D.Total))
}

// CounterSets returns the director's counter sets (drops by cause, ...).
func (s *Server) CounterSets() []director.CounterSet { return s.D.CounterSets() }

// ConnTable returns the connection table's counters and its size limit.
func (s *Server) ConnTable() (conntrack.Stats, int) { return s.D.CT.Stats(), s.D.CT.Limit() }

// TraceDropped returns the trace events dropped since the start.
func (s *Server) TraceDropped() uint64 { return s.D.TraceDropped() }

// EachConn calls fn with every entry of the connection table as -L -c and
// /proc/net/ip_vs_conn show it. fn runs under one of the table's shard
// locks: it must be quick, must not keep c, and must not call back into
// the server.
func (s *Server) EachConn(fn func(c *ipvsadm.Conn)) {
	ct := s.D.CT
	var c ipvsadm.Conn
	ct.Walk(func(e *conntrack.Entry) {
		c = ipvsadm.Conn{
			Proto:   e.In.Proto,
			Client:  ap(e.In.SrcIP, e.In.SrcPort),
			Virtual: ap(e.In.DstIP, e.In.DstPort),
			State:   conntrack.StateName(e.In.Proto, e.Template(), e.State()),
			Expires: uint32(ct.ExpiresIn(e).Seconds()),
		}
		if e.Out != (conntrack.Key{}) {
			c.Dest = ap(e.Out.SrcIP, e.Out.SrcPort)
		} else if e.Dest != nil {
			port := e.Dest.Port
			if port == 0 {
				port = e.In.DstPort
			}
			c.Dest = apA(e.Dest.Addr, port)
		}
		fn(&c)
	})
}

// WriteProc writes /proc/net/<name> (one of ipvsadm.ProcFiles) as the
// kernel would. ip_vs_conn streams: one line at a time, whatever the
// table's size.
func (s *Server) WriteProc(w io.Writer, name string) error {
	switch name {
	case "ip_vs":
		rep := s.list()
		return ipvsadm.WriteProcIPVS(w, rep.Size, rep.Services)
	case "ip_vs_stats":
		tot, r := s.Totals()
		return ipvsadm.WriteProcStats(w, tot, r)
	case "ip_vs_conn":
		bw := bufio.NewWriterSize(w, 64<<10)
		bw.WriteString(ipvsadm.ProcConnHeader)
		var line []byte
		var werr error
		s.EachConn(func(c *ipvsadm.Conn) {
			if werr == nil {
				line = ipvsadm.AppendProcConn(line[:0], c)
				_, werr = bw.Write(line)
			}
		})
		if werr != nil {
			return werr
		}
		return bw.Flush()
	}
	return fmt.Errorf("control: no proc file %q (allowed: ip_vs, ip_vs_stats, ip_vs_conn)", name)
}

// proc answers the proc op: the text of /proc/net/ip_vs or ip_vs_stats.
// ip_vs_conn, which grows with the table, is built by the client from the
// conns op, one record at a time.
func (s *Server) proc(req *Request) *Reply {
	if len(req.Args) != 1 || req.Args[0] == "ip_vs_conn" {
		return fail(errors.New("control: proc takes one file: ip_vs or ip_vs_stats (ip_vs_conn comes from the conns op)"), 2)
	}
	var b bufWriter
	if err := s.WriteProc(&b, req.Args[0]); err != nil {
		return fail(err, 2)
	}
	return &Reply{OK: true, Text: string(b)}
}

type bufWriter []byte

func (b *bufWriter) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }

// admProc is `golvs adm --proc NAME`.
func admProc(args []string, stdout, stderr io.Writer) int {
	name, err := ipvsadm.ParseProc(args)
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
	if name == "ip_vs_conn" {
		rep, err := cl.Do(&Request{Op: "conns"})
		if code := report(rep, err)(stderr); code != 0 {
			return code
		}
		if err := ipvsadm.WriteProcConns(stdout, rep.Conns); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	rep, err := cl.Do(&Request{Op: "proc", Args: []string{name}})
	if code := report(rep, err)(stderr); code != 0 {
		return code
	}
	if _, err := io.WriteString(stdout, rep.Text); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// ProcDirConnDuty bounds the time spent rewriting ip_vs_conn, whose size
// grows with the table: it is rewritten no sooner than ProcDirConnDuty
// times its last write's duration after that write (so at most 1/20 of
// the time), and at the period otherwise.
const ProcDirConnDuty = 20

// StartProcDir keeps DIR/net/ip_vs, ip_vs_stats and ip_vs_conn up to date
// until ctx ends, rewriting each every period by writing a temporary file
// and renaming it over the old one (a reader sees one whole version or
// the next). The layout is a procfs root's, so node_exporter
// --path.procfs=DIR and prometheus/procfs.NewFS(DIR) read golvs as they
// read IPVS. The first writes happen before it returns, and their error
// is returned; later errors are logged once each until a write succeeds
// again. When ctx ends the files are removed (a reader must not take a
// stopped director's numbers for live ones) and done is closed.
func (s *Server) StartProcDir(ctx context.Context, dir string, period time.Duration, logf func(string, ...any)) (done <-chan struct{}, err error) {
	if period <= 0 {
		return nil, fmt.Errorf("control: --proc-dir: period %v must be positive", period)
	}
	net := filepath.Join(dir, "net")
	if err := os.MkdirAll(net, 0o755); err != nil {
		return nil, fmt.Errorf("control: --proc-dir: %w", err)
	}
	// Temporary files a killed run left behind.
	if old, _ := filepath.Glob(filepath.Join(net, ".ip_vs*.tmp*")); len(old) > 0 {
		for _, f := range old {
			os.Remove(f)
		}
	}
	var nextConn time.Time
	failing := map[string]bool{}
	write := func(first bool) error {
		now := time.Now()
		for _, name := range ipvsadm.ProcFiles {
			if name == "ip_vs_conn" && now.Before(nextConn) {
				continue
			}
			start := time.Now()
			err := writeAtomic(net, name, func(w io.Writer) error { return s.WriteProc(w, name) })
			if name == "ip_vs_conn" {
				nextConn = start.Add(ProcDirConnDuty * time.Since(start))
			}
			switch {
			case err != nil && first:
				return fmt.Errorf("control: --proc-dir: %w", err)
			case err != nil && !failing[name]:
				failing[name] = true
				if logf != nil {
					logf("proc-dir: %v (retrying every %v)", err, period)
				}
			case err == nil && failing[name]:
				delete(failing, name)
				if logf != nil {
					logf("proc-dir: %s written again", name)
				}
			}
		}
		return nil
	}
	if err := write(true); err != nil {
		for _, name := range ipvsadm.ProcFiles {
			os.Remove(filepath.Join(net, name))
		}
		return nil, err
	}
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				for _, name := range ipvsadm.ProcFiles {
					os.Remove(filepath.Join(net, name))
				}
				return
			case <-t.C:
				write(false)
			}
		}
	}()
	return ch, nil
}

// writeAtomic replaces dir/name with what fill writes, through a
// temporary file in the same directory and a rename.
func writeAtomic(dir, name string, fill func(io.Writer) error) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	bw := bufio.NewWriterSize(f, 64<<10)
	err = fill(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Chmod(0o444)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", filepath.Join(dir, name), err)
	}
	return nil
}
