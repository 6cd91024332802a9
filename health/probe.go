package health

import (
	"bufio"
	"context"
	"crypto/md5"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// prober runs one check, bounded by timeout (MISC_CHECK has its own).
type prober interface {
	probe(ctx context.Context, timeout time.Duration) result
}

type failProber struct{ err error }

func (p failProber) probe(context.Context, time.Duration) result {
	return result{reason: p.err.Error(), weight: -1}
}

func newProber(c *Check, env Env) (prober, error) {
	o := dialOpts{bind: c.Bind, bindIf: c.BindIf, mark: c.FWMark}
	switch c.Kind {
	case TCP:
		return &tcpProber{c: c, env: env, o: o}, nil
	case HTTP, SSL:
		p := &httpProber{c: c, env: env, o: o}
		if c.Kind == SSL {
			cfg, err := tlsConfig(c)
			if err != nil {
				return nil, err
			}
			p.tls = cfg
		}
		return p, nil
	case DNS:
		return &dnsProber{c: c, env: env, o: o}, nil
	case MISC:
		return &miscProber{c: c, env: env}, nil
	}
	return nil, fmt.Errorf("health: unknown checker kind %v", c.Kind)
}

func fail(format string, args ...any) result {
	return result{reason: fmt.Sprintf(format, args...), weight: -1}
}

var pass = result{ok: true, weight: -1}

// errText words an I/O error for the log: "timeout" rather than the
// whole chain of wrapped errors.
func errText(err error) string {
	var ne net.Error
	if errors.Is(err, errTimeout) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return "timeout"
	}
	return err.Error()
}

// TCP_CHECK: the connect is the check.
type tcpProber struct {
	c   *Check
	env Env
	o   dialOpts
}

func (p *tcpProber) probe(ctx context.Context, timeout time.Duration) result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := dial(ctx, p.env, "tcp", p.c.Target, p.o)
	if err != nil {
		return fail("%s", errText(err))
	}
	c.Close()
	return pass
}

// HTTP_GET and SSL_GET: every url in turn, each on its own connection,
// with keepalived's request; the status must be in the url's ranges
// (default 200-299) and, with a digest, the body's MD5 must match.
type httpProber struct {
	c   *Check
	env Env
	o   dialOpts
	tls *tls.Config
}

func (p *httpProber) probe(ctx context.Context, timeout time.Duration) result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for i := range p.c.URLs {
		if r := p.get(ctx, &p.c.URLs[i]); !r.ok {
			return r
		}
	}
	return pass
}

// hostHeader is keepalived's Host: the virtualhost, or the address, with
// the port unless it is the scheme's default.
func (p *httpProber) hostHeader(u *URL) string {
	port := p.c.Target.Port()
	def := uint16(80)
	if p.c.Kind == SSL {
		def = 443
	}
	h := u.VirtualHost
	if h == "" {
		h = p.c.Target.Addr().String()
		if p.c.Target.Addr().Is6() {
			h = "[" + h + "]"
		}
	}
	if port != def {
		h += ":" + strconv.Itoa(int(port))
	}
	return h
}

func (p *httpProber) get(ctx context.Context, u *URL) result {
	what := "GET " + u.Path
	conn, err := dial(ctx, p.env, "tcp", p.c.Target, p.o)
	if err != nil {
		return fail("%s: %s", what, errText(err))
	}
	defer conn.Close()
	if p.tls != nil {
		cfg := p.tls.Clone()
		if p.c.TLS != nil && p.c.TLS.SNI && u.VirtualHost != "" {
			cfg.ServerName = u.VirtualHost
		}
		if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
			cfg.ServerName = p.c.Target.Addr().String()
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail("%s: TLS: %s", what, errText(err))
		}
		conn = tc
	}
	ver, extra := "1.0", ""
	switch p.c.Protocol {
	case "1.1":
		ver, extra = "1.1", "Connection: close\r\n"
	case "1.0C":
		extra = "Connection: close\r\n"
	}
	req := "GET " + u.Path + " HTTP/" + ver + "\r\nUser-Agent: KeepAliveClient\r\n" + extra + "Host: " + p.hostHeader(u) + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return fail("%s: sending the request: %s", what, errText(err))
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return fail("%s: reading the answer: %s", what, errText(err))
	}
	defer resp.Body.Close()
	if !statusOK(u.Status, resp.StatusCode) {
		return fail("%s: HTTP status %d", what, resp.StatusCode)
	}
	if u.Digest != "" {
		h := md5.New()
		if _, err := io.Copy(h, resp.Body); err != nil {
			return fail("%s: reading the body: %s", what, errText(err))
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != u.Digest {
			return fail("%s: digest %s, want %s", what, got, u.Digest)
		}
	}
	return pass
}

func statusOK(rs []StatusRange, code int) bool {
	if len(rs) == 0 {
		return code >= 200 && code <= 299
	}
	for _, r := range rs {
		if code >= r.Lo && code <= r.Hi {
			return true
		}
	}
	return false
}

// tlsConfig builds SSL_GET's TLS client: without a CA, keepalived's
// behaviour (no verification); with one, the chain must lead to it and,
// with a virtualhost and enable_sni, name it.
func tlsConfig(c *Check) (*tls.Config, error) {
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10}
	t := c.TLS
	if t == nil {
		return cfg, nil
	}
	if t.Password != "" {
		return nil, errors.New("SSL password: encrypted keys are not supported by golvs (give an unencrypted key)")
	}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("SSL ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("SSL ca %s: no PEM certificate in it", t.CA)
		}
		cfg.InsecureSkipVerify = false
		cfg.RootCAs = pool
	}
	if t.Cert != "" || t.Key != "" {
		if t.Cert == "" || t.Key == "" {
			return nil, errors.New("SSL: certificate and key go together")
		}
		kp, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("SSL certificate/key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	return cfg, nil
}

// DNS_CHECK: a query (recursion desired) answered with rcode NOERROR.
type dnsProber struct {
	c   *Check
	env Env
	o   dialOpts
}

func (p *dnsProber) probe(ctx context.Context, timeout time.Duration) result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := dial(ctx, p.env, "udp", p.c.Target, p.o)
	if err != nil {
		return fail("%s", errText(err))
	}
	defer c.Close()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(p.c.QName), p.c.QType)
	m.RecursionDesired = true
	co := &dns.Conn{Conn: c}
	if err := co.WriteMsg(m); err != nil {
		return fail("sending the query: %s", errText(err))
	}
	for {
		r, err := co.ReadMsg()
		if err != nil {
			if isParseErr(err) && ctx.Err() == nil {
				continue // garbage: keep waiting for the answer, as keepalived does
			}
			return fail("reading the answer: %s", errText(err))
		}
		if r.Id != m.Id || !r.Response {
			continue
		}
		if r.Rcode != dns.RcodeSuccess {
			return fail("answer with rcode %s", dns.RcodeToString[r.Rcode])
		}
		return pass
	}
}

func isParseErr(err error) bool {
	var de *dns.Error
	return errors.As(err, &de)
}

// MISC_CHECK: a script; exit 0 passes, 1 fails, 2..255 pass with
// misc_dynamic and set the weight to status-2 (else fail). A script still
// running after its timeout (misc_timeout, default delay_loop) is killed
// with its process group, and the check fails.
type miscProber struct {
	c   *Check
	env Env
}

func (p *miscProber) probe(ctx context.Context, _ time.Duration) result {
	timeout := p.c.ScriptTimeout
	if timeout <= 0 {
		timeout = p.c.DelayLoop
	}
	r := runScript(ctx, p.env, p.c.Script, timeout, p.c.UID, p.c.GID)
	switch {
	case r.err != nil:
		return fail("%v", r.err)
	case r.timedOut:
		return fail("timed out after %v (process group killed)", timeout)
	case r.signal != 0:
		return fail("killed by signal %d", r.signal)
	case r.status == 0:
		return pass
	case p.c.Dynamic && r.status >= 2:
		return result{ok: true, weight: int64(r.status - 2)}
	}
	return fail("exited with status %d", r.status)
}

type scriptResult struct {
	status   int
	signal   syscall.Signal
	timedOut bool
	err      error
}

// runScript runs argv in its own process group with stdio on /dev/null.
// Past timeout the group gets SIGTERM, then SIGKILL after a grace of at
// most 2 s (keepalived's), and the group is killed once more after the
// leader exits so no child outlives the check.
func runScript(ctx context.Context, env Env, argv []string, timeout time.Duration, uid, gid int) scriptResult {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if uid >= 0 && gid >= 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if err := env.Start(cmd); err != nil {
		return scriptResult{err: err}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return waitResult(err)
	case <-t.C:
	case <-ctx.Done():
	}
	pg := -cmd.Process.Pid
	_ = syscall.Kill(pg, syscall.SIGTERM)
	grace := min(2*time.Second, timeout)
	g := time.NewTimer(grace)
	defer g.Stop()
	select {
	case <-done:
	case <-g.C:
		_ = syscall.Kill(pg, syscall.SIGKILL)
		<-done
	}
	_ = syscall.Kill(pg, syscall.SIGKILL)
	return scriptResult{timedOut: true}
}

func waitResult(err error) scriptResult {
	if err == nil {
		return scriptResult{}
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return scriptResult{signal: ws.Signal()}
		}
		return scriptResult{status: ee.ExitCode()}
	}
	return scriptResult{err: err}
}

// script runs a notify or quorum script in the background, bounded in
// time and in number. Called with e.mu held; never blocks.
func (e *Engine) script(argv []string, what string) {
	if len(argv) == 0 {
		return
	}
	select {
	case e.scripts <- struct{}{}:
	default:
		e.scriptsDropped.Add(1)
		e.logf("health: %s not run: %d scripts already running", what, cap(e.scripts))
		return
	}
	e.scriptsWG.Add(1)
	go func() {
		defer func() { <-e.scripts; e.scriptsWG.Done() }()
		r := runScript(context.Background(), e.env, argv, e.o.ScriptTimeout, -1, -1)
		switch {
		case r.err != nil:
			e.logf("health: %s (%s): %v", what, strings.Join(argv, " "), r.err)
		case r.timedOut:
			e.logf("health: %s (%s): killed after %v", what, strings.Join(argv, " "), e.o.ScriptTimeout)
		case r.signal != 0 || r.status != 0:
			e.logf("health: %s (%s): exited with status %d (signal %d)", what, strings.Join(argv, " "), r.status, r.signal)
		}
	}()
}
