// Package health is golvs's health checking: keepalived's checkers
// (TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK, DNS_CHECK) run per real
// server, and an engine that turns their verdicts into IPVS changes the way
// keepalived's ipwrapper does: a failed server leaves its service (or is
// set to weight 0 with inhibit_on_failure) and comes back with its
// configured weight; per service, a quorum of live weight with hysteresis
// decides whether a sorry server stands in; notify and quorum scripts run
// on every change; and every state change is logged.
//
// The engine drives the control plane through a narrow interface (Control:
// ipvsadm command lines and atomic restores), never the data plane: checks
// run on their own goroutines, are bounded by their timeouts, and never
// touch a packet worker. Health state survives reloads: a reload that
// changes nothing sends no command and restarts no checker.
package health

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/sched"
)

// Kind is a checker type, named as keepalived.conf names it.
type Kind uint8

const (
	TCP  Kind = iota + 1 // TCP_CHECK: a connect
	HTTP                 // HTTP_GET: GET each url, status and digest
	SSL                  // SSL_GET: HTTP_GET over TLS
	MISC                 // MISC_CHECK: a script's exit status
	DNS                  // DNS_CHECK: a query answered with rcode NOERROR
)

var kindNames = [...]string{TCP: "TCP_CHECK", HTTP: "HTTP_GET", SSL: "SSL_GET", MISC: "MISC_CHECK", DNS: "DNS_CHECK"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Timing is when a checker runs and how it decides, with keepalived's
// meanings: a check runs every DelayLoop; a failed check of a server that
// is up is retried Retry times, DelayBeforeRetry apart, before the checker
// says down (so Retry+1 consecutive failures); the first check waits a
// random time up to Warmup. Rise is golvs's addition: consecutive good
// checks a down checker needs to come back (keepalived: 1).
type Timing struct {
	DelayLoop        time.Duration
	DelayBeforeRetry time.Duration
	ConnectTimeout   time.Duration // bounds the whole check (connect, request, answer)
	Warmup           time.Duration
	Retry            int
	Rise             int
	Alpha            bool // start down until a check passes
	LogAllFailures   bool
}

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Lo, Hi int }

// URL is one url block of HTTP_GET/SSL_GET.
type URL struct {
	Path        string
	Digest      string        // MD5 of the body, lower-case hex; "" checks no digest
	Status      []StatusRange // empty: 200-299
	VirtualHost string        // the Host header ("" : the address)
}

// TLS is SSL_GET's TLS settings (keepalived's SSL block plus enable_sni).
// Without CA the server's certificate is not verified, as in keepalived.
type TLS struct {
	CA       string // PEM file of trusted CAs: verify the server's chain (and name, with a virtualhost)
	Cert     string // client certificate (PEM)
	Key      string // its key (PEM)
	Password string // the key's password: refused (encrypted PEM keys are not supported)
	SNI      bool
}

// Check is one checker of one real server.
type Check struct {
	Kind Kind
	Timing
	Target  netip.AddrPort // connect_ip/connect_port, defaulting to the real server
	Bind    netip.AddrPort // bindto/bind_port (zero: any)
	BindIf  string         // bind_if
	FWMark  uint32         // fwmark: SO_MARK on the checker's socket
	Pos     string         // where it was configured (file:line), for messages
	Name    string         // "TCP_CHECK" or a fuller description for logs (optional)
	Summary string         // set by the engine: the description used in logs

	// HTTP_GET, SSL_GET
	URLs     []URL
	Protocol string // "1.0" (default), "1.0C", "1.1"
	TLS      *TLS

	// MISC_CHECK
	Script        []string      // argv
	ScriptTimeout time.Duration // 0: DelayLoop
	Dynamic       bool          // exit status 2..255 sets the weight to status-2
	UID, GID      int           // run as (-1: as golvs)

	// DNS_CHECK
	QType uint16
	QName string
}

// Real is a real server of a service.
type Real struct {
	Dest       ipvs.DestConfig // Weight is the configured weight; Port 0: the service's
	Inhibit    bool            // inhibit_on_failure: weight 0 instead of removal
	NotifyUp   []string        // argv of notify_up
	NotifyDown []string
	Checks     []Check
	Pos        string
}

// Sorry is a service's sorry server: added when the quorum is lost.
type Sorry struct {
	Dest    ipvs.DestConfig
	Inhibit bool // sorry_server_inhibit: kept at weight 0 while not needed
}

// Service is a virtual_server: one IPVS service, or several for a
// virtual_server_group, sharing real servers, checkers and quorum.
type Service struct {
	Name       string               // for logs, e.g. "TCP 198.18.0.100:80" or "group web"
	Configs    []ipvs.ServiceConfig // Dests ignored
	Reals      []Real
	Sorry      *Sorry
	Quorum     int64 // default 1
	Hysteresis int64
	QuorumUp   []string
	QuorumDown []string
	Omega      bool // run down notifiers when golvs stops
	Pos        string
}

// Validate checks what the engine relies on, naming the service or
// server that is wrong.
func (s *Service) Validate() error {
	if len(s.Configs) == 0 {
		return fmt.Errorf("health: %s (%s): no IPVS service", s.Name, s.Pos)
	}
	for _, c := range s.Configs {
		if c.Sched != "none" {
			if err := sched.Check(c.Sched); err != nil {
				return fmt.Errorf("%s: %w", s.Pos, err)
			}
		}
	}
	if s.Quorum < 0 || s.Hysteresis < 0 {
		return fmt.Errorf("%s: quorum and hysteresis must not be negative", s.Pos)
	}
	seen := map[netip.AddrPort]bool{}
	for _, r := range s.Reals {
		k := netip.AddrPortFrom(r.Dest.Addr, r.Dest.Port)
		if seen[k] {
			return fmt.Errorf("%s: real server %s given twice", r.Pos, addrPortString(r.Dest.Addr, r.Dest.Port))
		}
		seen[k] = true
		for _, c := range r.Checks {
			if err := c.validate(); err != nil {
				return fmt.Errorf("%s: %s: %w", c.Pos, c.Kind, err)
			}
		}
	}
	if s.Sorry != nil && seen[netip.AddrPortFrom(s.Sorry.Dest.Addr, s.Sorry.Dest.Port)] {
		return fmt.Errorf("%s: sorry_server %s is also a real server (golvs needs them distinct)", s.Pos, addrPortString(s.Sorry.Dest.Addr, s.Sorry.Dest.Port))
	}
	return nil
}

func (c *Check) validate() error {
	switch {
	case c.DelayLoop <= 0:
		return fmt.Errorf("delay_loop must be positive")
	case c.ConnectTimeout <= 0 && c.Kind != MISC:
		return fmt.Errorf("connect_timeout must be positive")
	case c.Retry < 0 || c.Rise < 1:
		return fmt.Errorf("retry must be >= 0 and rise >= 1")
	case c.DelayBeforeRetry < 0 || c.Warmup < 0:
		return fmt.Errorf("delay_before_retry and warmup must not be negative")
	}
	switch c.Kind {
	case TCP, DNS:
	case HTTP, SSL:
		if len(c.URLs) == 0 {
			return fmt.Errorf("no url")
		}
		if c.Kind == SSL {
			if _, err := tlsConfig(c); err != nil {
				return err
			}
		}
	case MISC:
		if len(c.Script) == 0 {
			return fmt.Errorf("no misc_path")
		}
	default:
		return fmt.Errorf("unknown checker kind %d", c.Kind)
	}
	if c.Kind != MISC && (!c.Target.Addr().IsValid() || c.Target.Port() == 0) && c.Kind != DNS {
		return fmt.Errorf("no address and port to connect to (connect_ip/connect_port)")
	}
	return nil
}

// describe is how logs name a checker of real server rs: "HTTP_GET",
// "TCP_CHECK to 198.19.0.11:8080" when it checks elsewhere, "MISC_CHECK
// \"/bin/check rs1\"".
func (c *Check) describe(rs netip.AddrPort) string {
	switch {
	case c.Kind == MISC:
		return fmt.Sprintf("MISC_CHECK %q", strings.Join(c.Script, " "))
	case c.Target != rs:
		return fmt.Sprintf("%s to %s", c.Kind, addrPortString(c.Target.Addr(), c.Target.Port()))
	}
	return c.Kind.String()
}

// addrPortString writes an address and port as ipvsadm does
// (198.19.0.11:80, [2001:db8::1]:80).
func addrPortString(a netip.Addr, port uint16) string {
	return netip.AddrPortFrom(a, port).String()
}
