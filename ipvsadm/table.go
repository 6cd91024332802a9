package ipvsadm

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/sched"
)

// Table is the configured IPVS state as the kernel keeps it: the services
// in the order they were added, each with its dests in kernel list order
// (a new dest goes to the head, -e does not move it, spec §1.1), and the
// three --set timeouts. It holds configuration only; counters live with
// the daemon. A Table is not safe for concurrent use: the daemon applies
// commands one at a time, or to a Clone that it swaps in.
type Table struct {
	svcs     []*ipvs.ServiceConfig
	Timeouts Timeouts
	// Marks are golvs's firewall-mark rules (--add-mark), in order; -C
	// clears them with the services, since they exist only to feed
	// fwmark services.
	Marks []ipvs.MarkRule

	// CheckSched validates a scheduler name for -A/-E; nil means
	// DefaultCheckSched. An error is answered with ENOENT.
	CheckSched func(name string) error
	// HostOwns tells whether the host has an address: the kernel accepts
	// a link-local (or otherwise non-unicast) IPv6 real server only then
	// (ipvs.CheckDestAddr); nil means ipvs.HostOwns.
	HostOwns func(netip.Addr) bool
}

// NewTable returns an empty table with the default timeouts.
func NewTable() *Table { return &Table{Timeouts: DefaultTimeouts} }

// NewTableFrom returns a table holding copies of services (in creation
// order, dests in kernel list order), mark rules and timeouts: the running
// configuration, ready for commands to be applied to it.
func NewTableFrom(services []ipvs.ServiceConfig, marks []ipvs.MarkRule, to Timeouts) *Table {
	t := &Table{Timeouts: to, svcs: make([]*ipvs.ServiceConfig, len(services)), Marks: cloneMarks(marks)}
	for i, s := range services {
		c := s
		c.Dests = slices.Clone(s.Dests)
		t.svcs[i] = &c
	}
	return t
}

func cloneMarks(m []ipvs.MarkRule) []ipvs.MarkRule {
	if m == nil {
		return nil
	}
	out := make([]ipvs.MarkRule, len(m))
	for i, r := range m {
		out[i] = r
		out[i].Ports = slices.Clone(r.Ports)
	}
	return out
}

// ApplyMark carries out a mark command (--add-mark, --del-mark) on the
// table's rules; on error they are unchanged. --list-marks changes nothing.
func (t *Table) ApplyMark(c *MarkCmd) error {
	m, err := ApplyMark(t.Marks, c)
	if err != nil {
		return err
	}
	t.Marks = m
	return nil
}

// DefaultCheckSched accepts "none" (no scheduler: nothing is ever
// scheduled) and every name package sched knows.
func DefaultCheckSched(name string) error {
	if name == "none" {
		return nil
	}
	_, err := sched.New(name)
	return err
}

// knownPE are the persistence engines the kernel has (ip_vs_pe_sip).
var knownPE = map[string]bool{"sip": true}

// Clone returns a deep copy, for applying a batch (a restore) that is
// swapped in only if every command succeeds.
func (t *Table) Clone() *Table {
	n := &Table{Timeouts: t.Timeouts, CheckSched: t.CheckSched, HostOwns: t.HostOwns, svcs: make([]*ipvs.ServiceConfig, len(t.svcs)), Marks: cloneMarks(t.Marks)}
	for i, s := range t.svcs {
		c := *s
		c.Dests = slices.Clone(s.Dests)
		n.svcs[i] = &c
	}
	return n
}

// Services returns copies of the services, in the order they were added,
// each with its dests in kernel list order.
func (t *Table) Services() []ipvs.ServiceConfig {
	out := make([]ipvs.ServiceConfig, len(t.svcs))
	for i, s := range t.svcs {
		out[i] = *s
		out[i].Dests = slices.Clone(s.Dests)
	}
	return out
}

// Service returns a copy of one service.
func (t *Table) Service(k ipvs.ServiceKey) (ipvs.ServiceConfig, bool) {
	i := t.find(k)
	if i < 0 {
		return ipvs.ServiceConfig{}, false
	}
	s := *t.svcs[i]
	s.Dests = slices.Clone(s.Dests)
	return s, true
}

// ListServices returns the table as listing views, with zero counters.
func (t *Table) ListServices() []ListService {
	out := make([]ListService, len(t.svcs))
	for i, s := range t.svcs {
		out[i] = ListService{Config: *s}
		out[i].Config.Dests = nil
		for _, d := range s.Dests {
			out[i].Dests = append(out[i].Dests, ListDest{Config: d})
		}
	}
	return out
}

// ListService returns one service as a listing view, or ipvsadm's error
// for listing a service that does not exist (exit status 1).
func (t *Table) ListService(k ipvs.ServiceKey) (ListService, error) {
	i := t.find(k)
	if i < 0 {
		return ListService{}, &Error{Status: StatusList, Msg: ipvs.ErrNoService.Error(), Err: ipvs.ErrNoService}
	}
	s := t.svcs[i]
	ls := ListService{Config: *s}
	ls.Config.Dests = nil
	for _, d := range s.Dests {
		ls.Dests = append(ls.Dests, ListDest{Config: d})
	}
	return ls, nil
}

// NormKey returns the identity of a service as the kernel looks it up: an
// fwmark service by address family and mark only; any other by protocol,
// address and port.
func NormKey(k ipvs.ServiceKey) ipvs.ServiceKey {
	if k.FWMark != 0 {
		return ipvs.ServiceKey{Proto: ipvs.ProtoTCP, FWMark: k.FWMark, V6: k.V6}
	}
	return ipvs.ServiceKey{Proto: k.Proto, Addr: k.Addr, Port: k.Port}
}

func (t *Table) find(k ipvs.ServiceKey) int {
	k = NormKey(k)
	for i, s := range t.svcs {
		if NormKey(s.ServiceKey) == k {
			return i
		}
	}
	return -1
}

func findDest(s *ipvs.ServiceConfig, addr netip.Addr, port uint16) int {
	for i, d := range s.Dests {
		if d.Addr == addr && d.Port == port {
			return i
		}
	}
	return -1
}

// kernelErr is an error the kernel answers, with ipvsadm's text for it
// (spec §6.8) and exit status 255.
func kernelErr(sentinel error, detail error) *Error {
	e := &Error{Status: StatusKernel, Msg: sentinel.Error(), Err: sentinel}
	if detail != nil {
		e.Msg = detail.Error()
		e.Err = fmt.Errorf("%w: %w", sentinel, detail)
	}
	return e
}

// einvalText is ipvs_strerror's text for EINVAL (two spaces after the
// first full stop).
const einvalText = "Invalid operation.  Possibly wrong module version, address not unicast, ..."

func einval(detail string) *Error {
	return &Error{Status: StatusKernel, Msg: einvalText + " (" + detail + ")", Err: fmt.Errorf("%w: %s", ipvs.ErrInvalid, detail)}
}

// Apply carries out one command on the table with the kernel's semantics
// and ipvsadm's words for its errors: -A -E -D -C -a -e -d --set change
// the table; -Z only checks that its service exists; -L -S -h -v change
// nothing and return nil; -R and the daemon commands return an error
// wrapping ErrNotTable or ErrUnsupported. On error the table is unchanged.
// Apply is deterministic: the same table and command give the same result.
func (t *Table) Apply(c *Command) error {
	switch c.Cmd {
	case CmdAdd, CmdEdit:
		return t.applyService(c)
	case CmdDel:
		i := t.find(c.Service.ServiceKey)
		if i < 0 {
			return kernelErr(ipvs.ErrNoService, nil)
		}
		t.svcs = slices.Delete(t.svcs, i, i+1)
		return nil
	case CmdFlush:
		t.svcs, t.Marks = nil, nil
		return nil
	case CmdZero:
		if c.Has(OptService) && t.find(c.Service.ServiceKey) < 0 {
			return kernelErr(ipvs.ErrNoService, nil)
		}
		return nil
	case CmdAddDest, CmdEditDest, CmdDelDest:
		return t.applyDest(c)
	case CmdSetTimeout:
		if c.Timeouts.TCP != 0 {
			t.Timeouts.TCP = c.Timeouts.TCP
		}
		if c.Timeouts.TCPFin != 0 {
			t.Timeouts.TCPFin = c.Timeouts.TCPFin
		}
		if c.Timeouts.UDP != 0 {
			t.Timeouts.UDP = c.Timeouts.UDP
		}
		return nil
	case CmdList, CmdSave, CmdHelp, CmdVersion, CmdNone:
		return nil
	case CmdStartDaemon, CmdStopDaemon:
		return &Error{Status: StatusKernel, Msg: "Operation not supported: the sync daemon is not part of a rules file (golvs adm --start-daemon, or golvs run --start-daemon at boot)", Err: ErrUnsupported}
	}
	return &Error{Status: StatusKernel, Msg: fmt.Sprintf("ipvsadm: %s does not apply to a table", c.Cmd), Err: ErrNotTable}
}

func (t *Table) applyService(c *Command) error {
	s := c.Service
	if s.Proto == ipvs.ProtoSCTP && s.FWMark == 0 {
		return &Error{Status: StatusFail, Msg: ErrSCTP.Error(), Err: ErrSCTP}
	}
	// ipvsadm's own checks, repeated for commands that did not come
	// through Parse.
	if s.FWMark == 0 && s.Port == 0 && !s.Persistent() {
		return &Error{Status: StatusFail, Msg: "Zero port specified for non-persistent service", Err: ipvs.ErrInvalid}
	}
	if s.Flags&ipvs.SvcOnePacket != 0 && s.FWMark == 0 && s.Proto != ipvs.ProtoUDP {
		return &Error{Status: StatusFail, Msg: "One-Packet Scheduling is only for UDP virtual services", Err: ipvs.ErrInvalid}
	}
	i := t.find(s.ServiceKey)
	if c.Cmd == CmdAdd && i >= 0 {
		return kernelErr(ipvs.ErrServiceExists, nil)
	}
	if c.Cmd == CmdEdit && i < 0 {
		return kernelErr(ipvs.ErrNoService, nil)
	}
	check := t.CheckSched
	if check == nil {
		check = DefaultCheckSched
	}
	if err := check(s.Sched); err != nil {
		return &Error{Status: StatusKernel, Msg: ipvs.ErrNoScheduler.Error(), Err: fmt.Errorf("%w: %w", ipvs.ErrNoScheduler, err)}
	}
	if s.PE != "" && !knownPE[s.PE] {
		return &Error{Status: StatusKernel, Msg: ipvs.ErrNoScheduler.Error(), Err: fmt.Errorf("%w: persistence engine %q", ipvs.ErrNoScheduler, s.PE)}
	}
	if s.IsV6() && (s.Netmask < 1 || s.Netmask > 128) {
		return einval(fmt.Sprintf("IPv6 prefix length %d outside 1..128", s.Netmask))
	}
	if c.Cmd == CmdAdd {
		n := s
		n.ServiceKey = canonKey(s.ServiceKey)
		n.Flags &^= ipvs.SvcHashed
		n.Dests = nil
		t.svcs = append(t.svcs, &n)
		return nil
	}
	// -E replaces everything but the identity and the dests.
	old := t.svcs[i]
	old.Sched, old.Flags, old.Timeout, old.Netmask, old.PE = s.Sched, s.Flags&^ipvs.SvcHashed, s.Timeout, s.Netmask, s.PE
	return nil
}

// canonKey is the key as ipvsadm sends it: fwmark services with protocol
// TCP and no address.
func canonKey(k ipvs.ServiceKey) ipvs.ServiceKey {
	if k.FWMark != 0 {
		return ipvs.ServiceKey{Proto: ipvs.ProtoTCP, FWMark: k.FWMark, V6: k.V6}
	}
	k.V6 = false
	return k
}

func (t *Table) applyDest(c *Command) error {
	i := t.find(c.Service.ServiceKey)
	if i < 0 {
		return kernelErr(ipvs.ErrSvcNotDefined, nil)
	}
	s := t.svcs[i]
	d := c.Dest
	if !d.Addr.IsValid() {
		return einval("no real server address")
	}
	if c.Cmd != CmdDelDest && d.Addr.Is6() != s.IsV6() && d.Method != ipvs.MethodTunnel {
		return einval("a real server of another address family needs the tunnel method")
	}
	if c.Cmd != CmdDelDest {
		if d.Weight < 0 {
			return kernelErr(ipvs.ErrRange, fmt.Errorf("%s: weight %d below 0", ipvs.ErrRange, d.Weight))
		}
		if err := ipvs.CheckThresholds(int64(d.UThreshold), int64(d.LThreshold)); err != nil {
			return kernelErr(ipvs.ErrRange, err)
		}
		if d.Method == ipvs.MethodTunnel && d.TunType == ipvs.TunGUE && d.TunPort == 0 {
			return einval("GUE tunnel port 0")
		}
	}
	j := findDest(s, d.Addr, d.Port)
	switch c.Cmd {
	case CmdAddDest:
		if j >= 0 {
			return kernelErr(ipvs.ErrDestExists, nil)
		}
		owns := t.HostOwns
		if owns == nil {
			owns = ipvs.HostOwns
		}
		if err := ipvs.CheckDestAddr(d.Addr, owns); err != nil {
			var ve *ipvs.ValueError
			if errors.As(err, &ve) {
				return einval(ve.Value)
			}
			return einval(err.Error())
		}
		s.Dests = slices.Insert(s.Dests, 0, d)
	case CmdEditDest:
		if j < 0 {
			return kernelErr(ipvs.ErrNoDest, nil)
		}
		s.Dests[j] = d
	case CmdDelDest:
		if j < 0 {
			return kernelErr(ipvs.ErrNoDest, nil)
		}
		s.Dests = slices.Delete(s.Dests, j, j+1)
	}
	return nil
}

// Restore applies the commands of a rules file to a clone of the table and
// swaps it in only if every one succeeds; on error the table is unchanged
// and the error names the line. Lines that change nothing (-L, -S, -Z)
// are checked and skipped.
func (t *Table) Restore(lines []Line) error {
	n := t.Clone()
	for _, l := range lines {
		if err := n.Apply(l.Cmd); err != nil {
			var e *Error
			if errors.As(err, &e) {
				c := *e
				c.Line, c.Text, c.Err = l.Num, l.Text, e
				return &c
			}
			return fmt.Errorf("line %d: %s: %w", l.Num, l.Text, err)
		}
	}
	*t = *n
	return nil
}
