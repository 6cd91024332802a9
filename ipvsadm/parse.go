// Package ipvsadm is everything of ipvsadm 1.31 that is pure logic, so
// that `golvs adm` can be byte-for-byte ipvsadm: the command-line grammar
// (Parse, with popt's rules and ipvsadm's checks and messages), the -R/-S
// rules format (ParseRules), a model of the configured table with the
// kernel's semantics for every command (Table.Apply), and the writers of
// every listing, save, connection and help format.
//
// It opens no sockets and needs no privileges. Host and service names go
// through the injectable Resolver and Services interfaces, so tests never
// touch the network. It must never import the data path: the daemon calls
// it, not the other way round.
//
// golvs additions, each documented where it lives: the forwarding method
// --fullnat (no short letter); SCTP services parse but are refused; rules
// files may carry '#' comment lines.
package ipvsadm

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/sched"
)

// Cmd is an ipvsadm command.
type Cmd int

const (
	CmdNone        Cmd = iota
	CmdAdd             // -A --add-service
	CmdEdit            // -E --edit-service
	CmdDel             // -D --delete-service
	CmdFlush           // -C --clear
	CmdList            // -L -l --list
	CmdAddDest         // -a --add-server
	CmdDelDest         // -d --delete-server
	CmdEditDest        // -e --edit-server
	CmdSetTimeout      // --set tcp tcpfin udp
	CmdStartDaemon     // --start-daemon master|backup
	CmdStopDaemon      // --stop-daemon master|backup
	CmdRestore         // -R --restore
	CmdSave            // -S --save
	CmdZero            // -Z --zero
	CmdHelp            // -h --help
	CmdVersion         // -v --version
)

// cmdNames are ipvsadm's internal command names, used in messages.
var cmdNames = [...]string{
	CmdAdd: "add-service", CmdEdit: "edit-service", CmdDel: "delete-service",
	CmdFlush: "flush", CmdList: "list", CmdAddDest: "add-server",
	CmdDelDest: "delete-server", CmdEditDest: "edit-server", CmdSetTimeout: "set",
	CmdStartDaemon: "start-daemon", CmdStopDaemon: "stop-daemon",
	CmdRestore: "restore", CmdSave: "save", CmdZero: "zero",
	CmdHelp: "help", CmdVersion: "version",
}

func (c Cmd) String() string {
	if c > 0 && int(c) < len(cmdNames) {
		return cmdNames[c]
	}
	return "none"
}

// Opt is a set of ipvsadm options, one bit per entry of its option table
// (OPT_* in ipvsadm.c).
type Opt uint64

const (
	OptNumeric Opt = 1 << iota
	OptConnection
	OptService
	OptScheduler
	OptPersistent
	OptNetmask
	OptServer
	OptForward
	OptWeight
	OptUThreshold
	OptLThreshold
	OptMcast
	OptTimeout
	OptDaemon
	OptStats
	OptRate
	OptThresholds
	OptPersistentConn
	OptNoSort
	OptSyncID
	OptExact
	OptOnePacket
	OptPE
	OptSchedFlags
	OptMcastGroup
	OptMcastPort
	OptMcastTTL
	OptSyncMaxlen
	OptTunInfo
	OptTunType
	OptTunPort
	OptTunNoCsum
	OptTunCsum
	OptTunRemCsum
	numOpts = iota
)

// optNames are ipvsadm's internal option names, used in messages.
var optNames = [numOpts]string{
	"numeric", "connection", "service-address", "scheduler", "persistent",
	"netmask", "real-server", "forwarding-method", "weight", "u-threshold",
	"l-threshold", "mcast-interface", "timeout", "daemon", "stats", "rate",
	"thresholds", "persistent-conn", "nosort", "syncid", "exact", "ops", "pe",
	"sched-flags", "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen",
	"tun-info", "tun-type", "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum",
}

// commandsVOptions is ipvsadm's commands_v_options table: per command, per
// option, '+' required, 'x' illegal, '1' at most one of the '1's, ' '
// optional. Columns follow the Opt bits.
var commandsVOptions = map[Cmd]string{
	//            -n-csvc-s-p-M-rfwd-w-x-y-mc...
	CmdAdd:         "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
	CmdEdit:        "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
	CmdDel:         "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	CmdFlush:       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	CmdList:        " 11xxxxxxxxx11       xxxxxxx xxxxx",
	CmdAddDest:     "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
	CmdDelDest:     "xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",
	CmdEditDest:    "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
	CmdSetTimeout:  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	CmdStartDaemon: "xxxxxxxxxxx xxxxxxx xxxx    xxxxxx",
	CmdStopDaemon:  "xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx",
	CmdRestore:     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	CmdSave:        " xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	CmdZero:        "xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
}

// Format is a set of listing format flags (FMT_* in ipvsadm.c).
type Format uint32

const (
	FmtNumeric Format = 1 << iota
	FmtRule           // -S: the save format
	FmtStats
	FmtRate
	FmtThresholds
	FmtPersistentConn
	FmtNoSort
	FmtExact
	FmtTunInfo
)

// ListMode says what -L lists; the first of -c, a service, --timeout and
// --daemon wins, else everything.
type ListMode int

const (
	ListModeAll ListMode = iota
	ListModeConns
	ListModeService
	ListModeTimeout
	ListModeDaemon
)

// Timeouts are the --set values in seconds: TCP ESTABLISHED, TCP FIN_WAIT
// and UDP. On --set, 0 means "leave unchanged".
type Timeouts struct {
	TCP, TCPFin, UDP uint32
}

// DefaultTimeouts are the kernel's defaults.
var DefaultTimeouts = Timeouts{TCP: 900, TCPFin: 120, UDP: 300}

// Daemon states.
const (
	DaemonMaster = 1
	DaemonBackup = 2
)

// Daemon holds --start-daemon/--stop-daemon and their options.
type Daemon struct {
	State      int // DaemonMaster or DaemonBackup
	McastIfn   string
	SyncID     uint8
	SyncMaxlen uint16
	McastGroup netip.Addr
	McastPort  uint16
	McastTTL   uint8
}

// Command is one parsed ipvsadm command line, with ipvsadm's defaults and
// normalisations applied: -s defaults to wlc on -A/-E; the dest method to
// DR, its weight to 1; the dest port copied from the service when -r has
// none (at the moment -r is parsed) and forced to the service port for
// DR/TUN on non-fwmark services.
type Command struct {
	Cmd      Cmd
	Options  Opt    // the options given
	Format   Format // listing format
	Service  ipvs.ServiceConfig
	Dest     ipvs.DestConfig
	Timeouts Timeouts // --set
	Daemon   Daemon
	Args     []string // the words parsed (without the program name)
}

// Has reports whether option o was given.
func (c *Command) Has(o Opt) bool { return c.Options&o != 0 }

// ListMode returns what a -L command lists.
func (c *Command) ListMode() ListMode {
	switch {
	case c.Has(OptConnection):
		return ListModeConns
	case c.Has(OptService):
		return ListModeService
	case c.Has(OptTimeout):
		return ListModeTimeout
	case c.Has(OptDaemon):
		return ListModeDaemon
	}
	return ListModeAll
}

// Parser parses ipvsadm command lines. The zero value is not usable; use
// NewParser or set every field.
type Parser struct {
	// Program is the name in the "Try `%s -h'" message ("ipvsadm").
	Program  string
	Resolver Resolver
	Services Services
}

// NewParser returns a parser that resolves names with the net package and
// /etc/services.
func NewParser() *Parser {
	return &Parser{Program: "ipvsadm", Resolver: NetResolver{}, Services: defaultServices}
}

// Parse parses an ipvsadm command line (without the program name) with a
// NewParser.
func Parse(args []string) (*Command, error) { return NewParser().Parse(args) }

// address families, as ipvsadm keeps them
const (
	afNone  = 0
	afInet  = 2
	afInet6 = 10
)

// svcState and destState mirror ipvsadm's ipvs_service_t and ipvs_dest_t
// while parsing.
type svcState struct {
	af      int
	proto   uint8
	addr    netip.Addr
	port    uint16
	fwmark  uint32
	netmask uint32
	flags   uint32
	timeout uint32
	sched   string
	pe      string
}

type destState struct {
	af       int
	addr     netip.Addr
	port     uint16
	method   ipvs.Method
	weight   int32
	uthresh  uint32
	lthresh  uint32
	tunType  ipvs.TunType
	tunPort  uint16
	tunFlags uint16
}

func (p *Parser) tryHelp() *Error {
	prog := p.Program
	if prog == "" {
		prog = "ipvsadm"
	}
	return &Error{Status: StatusKernel, Msg: fmt.Sprintf("Try `%s -h' or '%s --help' for more information.", prog, prog), Err: ErrUsage}
}

// Parse parses an ipvsadm command line (without the program name). An
// empty line lists the table, as ipvsadm with no arguments does. The
// returned error is an *Error with ipvsadm's words and exit status.
func (p *Parser) Parse(args []string) (*Command, error) {
	// C strings end at the first NUL.
	words := make([]string, len(args))
	for i, a := range args {
		if j := strings.IndexByte(a, 0); j >= 0 {
			a = a[:j]
		}
		words[i] = a
	}
	c := &Command{Args: words}
	if len(words) == 0 {
		c.Cmd = CmdList
		return c, nil
	}
	svc := svcState{netmask: 0xffffffff}
	dest := destState{weight: 1, method: ipvs.MethodRoute}

	ps := &popt{args: words}
	o, arg, _, perr := ps.next()
	var hasArg bool
	if perr != "" || o == nil {
		return nil, p.tryHelp()
	}
	switch o.id {
	case optAdd:
		c.Cmd = CmdAdd
	case optEdit:
		c.Cmd = CmdEdit
	case optDel:
		c.Cmd = CmdDel
	case optAddDest:
		c.Cmd = CmdAddDest
	case optEditDest:
		c.Cmd = CmdEditDest
	case optDelDest:
		c.Cmd = CmdDelDest
	case optClear:
		c.Cmd = CmdFlush
	case optList:
		c.Cmd = CmdList
	case optZero:
		c.Cmd = CmdZero
	case optSet:
		c.Cmd = CmdSetTimeout
	case optRestore:
		c.Cmd = CmdRestore
	case optSave:
		c.Cmd = CmdSave
	case optStartDaemon, optStopDaemon:
		c.Cmd = CmdStartDaemon
		if o.id == optStopDaemon {
			c.Cmd = CmdStopDaemon
		}
		switch arg {
		case "master":
			c.Daemon.State = DaemonMaster
		case "backup":
			c.Daemon.State = DaemonBackup
		default:
			if c.Cmd == CmdStartDaemon {
				return nil, failf("illegal start-daemon parameter specified")
			}
			return nil, failf("illegal start_daemon specified")
		}
	case optHelp:
		c.Cmd = CmdHelp
		return c, nil
	case optVersion:
		c.Cmd = CmdVersion
		return c, nil
	default:
		return nil, p.tryHelp()
	}

	var schedFlagsArg string
	set := func(o Opt) error {
		if c.Options&o != 0 {
			return failf("multiple '%s' options specified", optName(o))
		}
		c.Options |= o
		return nil
	}
	// setNum takes a numeric option's value in lo..hi, or fails with
	// ipvsadm's message for it.
	setNum := func(o Opt, lo, hi int64, msg string) (int64, error) {
		if err := set(o); err != nil {
			return 0, err
		}
		v, ok := stringToNumber(arg, lo, hi)
		if !ok {
			return 0, failf("%s", msg)
		}
		return v, nil
	}
	for {
		o, arg, hasArg, perr = ps.next()
		if perr != "" {
			return nil, &Error{Status: StatusKernel, Msg: ps.last() + ": " + perr, Err: ErrUsage}
		}
		if o == nil {
			break
		}
		var err error
		switch o.id {
		case optTCP, optUDP, optSCTP:
			if err = set(OptService); err != nil {
				return nil, err
			}
			svc.proto = map[optID]uint8{optTCP: ipvs.ProtoTCP, optUDP: ipvs.ProtoUDP, optSCTP: ipvs.ProtoSCTP}[o.id]
			var sa svcAddr
			sa.fromSvc(&svc)
			if p.parseService(arg, svc.proto, &sa)&serviceAddr == 0 {
				return nil, failf("illegal virtual server address[:port] specified")
			}
			sa.toSvc(&svc)
		case optFWMark:
			if err = set(OptService); err != nil {
				return nil, err
			}
			svc.af = afInet
			svc.proto = ipvs.ProtoTCP
			m, ok := parseFWMark(arg)
			if !ok {
				return nil, failf("invalid fwmark value `%s' specified", arg)
			}
			svc.fwmark = m
		case optSched:
			if err = set(OptScheduler); err != nil {
				return nil, err
			}
			svc.sched = truncate(arg, 15) // IP_VS_SCHEDNAME_MAXLEN - 1
		case optPersist:
			if err = set(OptPersistent); err != nil {
				return nil, err
			}
			svc.flags |= ipvs.SvcPersistent
			svc.timeout = ipvs.DefaultPersist
			if hasArg {
				t, ok := stringToNumber(arg, 1, ipvs.MaxTimeout)
				if !ok {
					return nil, failf("invalid timeout value `%s' specified", arg)
				}
				svc.timeout = uint32(t)
			}
		case optNetmask:
			if err = set(OptNetmask); err != nil {
				return nil, err
			}
			if svc.af != afInet6 {
				m, ok := inetAton(arg)
				if !ok {
					m, ok = p.Resolver.LookupHost4(arg)
				}
				if !ok {
					return nil, failf("illegal virtual server persistent mask specified")
				}
				b := m.As4()
				svc.netmask = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
			} else {
				n := atoi(arg)
				if n < 1 || n > 128 {
					return nil, failf("illegal ipv6 netmask specified")
				}
				svc.netmask = uint32(n)
			}
		case optReal:
			if err = set(OptServer); err != nil {
				return nil, err
			}
			var sa svcAddr
			sa.fromSvc(&svc)
			r := p.parseService(arg, svc.proto, &sa)
			dest.af, dest.addr, dest.port = sa.af, sa.addr, sa.port
			if r&serviceAddr == 0 {
				return nil, failf("illegal real server address[:port] specified")
			}
			if r == serviceAddr {
				dest.port = svc.port
			}
		case optIPIP, optGate, optMasq, optFullNAT:
			if err = set(OptForward); err != nil {
				return nil, err
			}
			dest.method = map[optID]ipvs.Method{optIPIP: ipvs.MethodTunnel, optGate: ipvs.MethodRoute, optMasq: ipvs.MethodMasq, optFullNAT: ipvs.MethodFullNAT}[o.id]
		case optWeight:
			if err = set(OptWeight); err != nil {
				return nil, err
			}
			w, ok := strtol(arg)
			if !ok {
				return nil, failErr(&ipvs.ValueError{Msg: "illegal weight specified", Value: arg, Allowed: fmt.Sprintf("0..%d", ipvs.MaxAdmWeight)})
			}
			if err := ipvs.CheckWeight(w, ipvs.MaxAdmWeight); err != nil {
				return nil, failErr(err)
			}
			dest.weight = int32(w)
		case optUThresh, optLThresh:
			isU := o.id == optUThresh
			if isU {
				err = set(OptUThreshold)
			} else {
				err = set(OptLThreshold)
			}
			if err != nil {
				return nil, err
			}
			v, ok := strtol(arg)
			if !ok {
				msg := "illegal l_threshold specified"
				if isU {
					msg = "illegal u_threshold specified"
				}
				return nil, failErr(&ipvs.ValueError{Msg: msg, Value: arg, Allowed: fmt.Sprintf("0..%d", ipvs.MaxThreshold)})
			}
			if isU {
				if err := ipvs.CheckThresholds(v, 0); err != nil {
					return nil, failErr(err)
				}
				dest.uthresh = uint32(v)
			} else {
				if err := ipvs.CheckThresholds(ipvs.MaxThreshold, v); err != nil {
					return nil, failErr(err)
				}
				dest.lthresh = uint32(v)
			}
		case optConn:
			err = set(OptConnection)
		case optNumeric:
			err = set(OptNumeric)
			c.Format |= FmtNumeric
		case optMcastIfn:
			err = set(OptMcast)
			c.Daemon.McastIfn = truncate(arg, 15) // IP_VS_IFNAME_MAXLEN - 1
		case optSyncID:
			v, err := setNum(OptSyncID, 0, 255, "illegal syncid specified")
			if err != nil {
				return nil, err
			}
			c.Daemon.SyncID = uint8(v)
		case optTimeout:
			err = set(OptTimeout)
		case optDaemon:
			err = set(OptDaemon)
		case optStats:
			err = set(OptStats)
			c.Format |= FmtStats
		case optRate:
			err = set(OptRate)
			c.Format |= FmtRate
		case optThresholds:
			err = set(OptThresholds)
			c.Format |= FmtThresholds
		case optPersistConn:
			err = set(OptPersistentConn)
			c.Format |= FmtPersistentConn
		case optNoSort:
			err = set(OptNoSort)
			c.Format |= FmtNoSort
		case optSort:
			// the default; a no-op kept for compatibility
		case optExact:
			err = set(OptExact)
			c.Format |= FmtExact
		case optIPv6:
			if svc.fwmark == 0 {
				return nil, failf("-6 used before -f\n")
			}
			svc.af = afInet6
			svc.netmask = 128
		case optOps:
			err = set(OptOnePacket)
			svc.flags |= ipvs.SvcOnePacket
		case optPE:
			err = set(OptPE)
			svc.pe = truncate(arg, 15)
		case optSchedFlags:
			err = set(OptSchedFlags)
			schedFlagsArg = truncate(arg, 127)
		case optMcastGroup:
			if err = set(OptMcastGroup); err != nil {
				return nil, err
			}
			a, perr := netip.ParseAddr(arg)
			if strings.Contains(arg, ":") {
				if perr != nil || !a.Is6() || a.Zone() != "" || a.As16()[0] != 0xff {
					return nil, failf("invalid IPv6 mcast-group `%s'", arg)
				}
			} else if perr != nil || !a.Is4() || !a.IsMulticast() {
				return nil, failf("invalid IPv4 mcast-group `%s'", arg)
			}
			c.Daemon.McastGroup = a
		case optMcastPort:
			v, err := setNum(OptMcastPort, 1, 65535, "illegal mcast-port specified")
			if err != nil {
				return nil, err
			}
			c.Daemon.McastPort = uint16(v)
		case optMcastTTL:
			v, err := setNum(OptMcastTTL, 1, 255, "illegal mcast-ttl specified")
			if err != nil {
				return nil, err
			}
			c.Daemon.McastTTL = uint8(v)
		case optSyncMaxlen:
			v, err := setNum(OptSyncMaxlen, 1, 65535-20-8, "illegal sync-maxlen specified")
			if err != nil {
				return nil, err
			}
			c.Daemon.SyncMaxlen = uint16(v)
		case optTunInfo:
			err = set(OptTunInfo)
			c.Format |= FmtTunInfo
		case optTunType:
			if err = set(OptTunType); err != nil {
				return nil, err
			}
			switch arg {
			case "ipip":
				dest.tunType = ipvs.TunIPIP
			case "gue":
				dest.tunType = ipvs.TunGUE
			case "gre":
				dest.tunType = ipvs.TunGRE
			default:
				return nil, failf("illegal tunnel type specified")
			}
		case optTunPort:
			v, err := setNum(OptTunPort, 1, 65535, "illegal tunnel port specified")
			if err != nil {
				return nil, err
			}
			dest.tunPort = uint16(v)
		case optTunNoCsum:
			err = set(OptTunNoCsum)
			dest.tunFlags |= ipvs.TunFlagNoCsum
		case optTunCsum:
			err = set(OptTunCsum)
			dest.tunFlags |= ipvs.TunFlagCsum
		case optTunRemCsum:
			err = set(OptTunRemCsum)
			dest.tunFlags |= ipvs.TunFlagRemCsum
		default:
			// A command after the first one: ipvsadm takes the command
			// from the first option only, and its second switch has no
			// case for another, so it answers from its default case,
			// fail(2, "invalid option `%s'", poptBadOption(...)), which
			// names the last word popt consumed ("-Ln -Z": "-Z"; "-LZ":
			// "-LZ"). Its "multiple commands specified" is unreachable.
			return nil, failf("invalid option `%s'", ps.last())
		}
		if err != nil {
			return nil, err
		}
	}

	left := ps.leftovers
	if c.Cmd == CmdSetTimeout {
		if len(left) < 3 {
			return nil, failf("--set option requires 3 timeout values")
		}
		var v [3]uint32
		for i := 0; i < 3; i++ {
			n, ok := stringToNumber(left[i], 0, ipvs.MaxTimeout)
			if !ok {
				return nil, failf("invalid timeout value `%s' specified", left[i])
			}
			v[i] = uint32(n)
		}
		c.Timeouts = Timeouts{TCP: v[0], TCPFin: v[1], UDP: v[2]}
		left = left[3:]
	}
	if len(left) > 0 {
		return nil, failf("unexpected argument %s", left[0])
	}
	if schedFlagsArg != "" {
		f, err := sched.ParseFlags(svc.sched, schedFlagsArg)
		if err != nil {
			return nil, failErr(err)
		}
		svc.flags = svc.flags&^ipvs.SvcSchedMask | f
	}

	if err := genericOptCheck(c.Cmd, c.Options); err != nil {
		return nil, err
	}
	if c.Cmd == CmdAdd || c.Cmd == CmdEdit {
		if svc.fwmark == 0 && svc.port == 0 && svc.flags&ipvs.SvcPersistent == 0 {
			return nil, failf("Zero port specified for non-persistent service")
		}
		if svc.flags&ipvs.SvcOnePacket != 0 && svc.fwmark == 0 && svc.proto != ipvs.ProtoUDP {
			return nil, failf("One-Packet Scheduling is only for UDP virtual services")
		}
		if svc.sched == "" {
			svc.sched = ipvs.DefaultScheduler
		}
	}
	if c.Cmd == CmdStartDaemon && c.Daemon.McastIfn == "" {
		c.Daemon.McastIfn = "eth0"
	}
	if c.Cmd == CmdAddDest || c.Cmd == CmdEditDest {
		if svc.fwmark == 0 && (dest.method == ipvs.MethodTunnel || dest.method == ipvs.MethodRoute) {
			dest.port = svc.port
		}
		if dest.af != svc.af && dest.method != ipvs.MethodTunnel {
			return nil, failf("Different address family is allowed only for tunneling servers")
		}
		if c.Options&(OptTunType|OptTunPort|OptTunNoCsum|OptTunCsum|OptTunRemCsum) != 0 && dest.method != ipvs.MethodTunnel {
			return nil, failf("Tunnel options conflict with forward method")
		}
		if err := tunnelOptCheck(dest.tunType, c.Options); err != nil {
			return nil, err
		}
	}
	if c.Cmd == CmdList {
		if (c.Options&(OptConnection|OptTimeout|OptDaemon) != 0 && c.Options&(OptStats|OptRate|OptThresholds) != 0) ||
			(c.Options&(OptTimeout|OptDaemon) != 0 && c.Options&OptPersistentConn != 0) {
			return nil, failf("options conflicts in the list command")
		}
	}
	if c.Cmd == CmdSave {
		c.Format |= FmtRule
	}
	if c.Options&OptService != 0 && svc.proto == ipvs.ProtoSCTP && svc.fwmark == 0 {
		return nil, &Error{Status: StatusFail, Msg: ErrSCTP.Error(), Err: ErrSCTP}
	}

	c.Service = ipvs.ServiceConfig{
		ServiceKey: ipvs.ServiceKey{Proto: svc.proto, Addr: svc.addr, Port: svc.port, FWMark: svc.fwmark, V6: svc.fwmark != 0 && svc.af == afInet6},
		Sched:      svc.sched, Flags: svc.flags, Timeout: svc.timeout, Netmask: svc.netmask, PE: svc.pe,
	}
	if svc.fwmark != 0 {
		c.Service.Addr, c.Service.Port = netip.Addr{}, 0
	}
	c.Dest = ipvs.DestConfig{
		Addr: dest.addr, Port: dest.port, Method: dest.method, Weight: dest.weight,
		UThreshold: dest.uthresh, LThreshold: dest.lthresh,
		TunType: dest.tunType, TunPort: dest.tunPort, TunFlags: dest.tunFlags,
	}
	return c, nil
}

func optName(o Opt) string {
	for i := 0; i < numOpts; i++ {
		if o == 1<<i {
			return optNames[i]
		}
	}
	return "?"
}

func genericOptCheck(cmd Cmd, opts Opt) error {
	row, ok := commandsVOptions[cmd]
	if !ok {
		return nil
	}
	last, count := 0, 0
	for j := 0; j < numOpts; j++ {
		if opts&(1<<j) == 0 {
			if row[j] == '+' {
				return failf("You need to supply the '%s' option for the '%s' command", optNames[j], cmd)
			}
			continue
		}
		switch row[j] {
		case 'x':
			return failf("Illegal '%s' option with the '%s' command", optNames[j], cmd)
		case '1':
			count++
			if count == 1 {
				last = j
				continue
			}
			return failf("The option '%s' conflicts with the '%s' option in the '%s' command", optNames[j], optNames[last], cmd)
		}
	}
	return nil
}

var tunNames = [...]string{"ipip", "gue", "gre"}

// tunnelTypesVOptions: per tunnel type, for tun-port, tun-nocsum, tun-csum
// and tun-remcsum.
var tunnelTypesVOptions = [...]string{
	"xxxx", // ipip
	"+111", // gue
	"x11x", // gre
}

var tunOpts = [...]int{30, 31, 32, 33} // bit numbers of OptTunPort..OptTunRemCsum

func tunnelOptCheck(t ipvs.TunType, opts Opt) error {
	if int(t) >= len(tunnelTypesVOptions) {
		return nil
	}
	row := tunnelTypesVOptions[t]
	last, count := 0, 0
	for j, k := range tunOpts {
		if opts&(1<<k) == 0 {
			if row[j] == '+' {
				return failf("You need to supply the '%s' option for the '%s' tunnel type", optNames[k], tunNames[t])
			}
			continue
		}
		switch row[j] {
		case 'x':
			return failf("Illegal '%s' option with the '%s' tunnel type", optNames[k], tunNames[t])
		case '1':
			count++
			if count == 1 {
				last = k
				continue
			}
			return failf("The option '%s' conflicts with the '%s' option in the '%s' tunnel type", optNames[k], optNames[last], tunNames[t])
		}
	}
	return nil
}

// svcAddr is the part of ipvs_service_t that parse_service writes.
type svcAddr struct {
	af      int
	addr    netip.Addr
	port    uint16
	netmask uint32
}

func (a *svcAddr) fromSvc(s *svcState) {
	a.af, a.addr, a.port, a.netmask = s.af, s.addr, s.port, s.netmask
}
func (a *svcAddr) toSvc(s *svcState) {
	s.af, s.addr, s.port, s.netmask = a.af, a.addr, a.port, a.netmask
}

const (
	serviceAddr = 1
	servicePort = 2
)

// parseService is ipvsadm's parse_service: host[:port], [v6]:port or a
// bare IPv6 literal; host is inet_aton or an IPv4 host name; port is a
// number or a service name for the protocol.
func (p *Parser) parseService(buf string, proto uint8, s *svcAddr) int {
	if strIsDigit(buf) {
		return 0
	}
	portStr, hasPort := "", false
	if buf[0] == '[' {
		buf = buf[1:]
		i := strings.IndexByte(buf, ']')
		if i < 0 {
			return 0
		}
		after := buf[i+1:]
		buf = buf[:i]
		if !strings.HasPrefix(after, ":") {
			return 0
		}
		portStr, hasPort = after[1:], true
	}
	if a, ok := inetPton6(buf); ok {
		s.addr, s.af, s.netmask = a, afInet6, 128
	} else {
		// ipvsadm looks for the port again here, in what is left of the
		// buffer; so "[1.2.3.4]:80" loses its port.
		portStr, hasPort = "", false
		if i := strings.LastIndexByte(buf, ':'); i >= 0 {
			portStr, hasPort = buf[i+1:], true
			buf = buf[:i]
		}
		a, ok := inetAton(buf)
		if !ok {
			a, ok = p.Resolver.LookupHost4(buf)
			if ok && !a.Is4() {
				ok = false
			}
		}
		if !ok {
			return 0
		}
		s.addr, s.af = a, afInet
	}
	r := serviceAddr
	if hasPort {
		r |= servicePort
		if n, ok := stringToNumber(portStr, 0, 65535); ok {
			s.port = uint16(n)
		} else if pn := protoServiceName(proto); pn != "" {
			port, ok := p.Services.Port(portStr, pn)
			if !ok {
				return 0
			}
			s.port = port
		} else {
			return 0
		}
	}
	return r
}

// strIsDigit is true for a string of digits only, including "".
func strIsDigit(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// strtol is strtol(s, &end, 10) where the whole string must be consumed:
// leading white space and a sign are allowed, at least one digit needed.
func strtol(s string) (int64, bool) {
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	start := i
	var v int64
	over := false
	for i < len(s) && isDigit(s[i]) {
		if v > (1<<63-1-int64(s[i]-'0'))/10 {
			over = true
		} else {
			v = v*10 + int64(s[i]-'0')
		}
		i++
	}
	if i == start || i != len(s) || over {
		return 0, false
	}
	if neg {
		v = -v
	}
	return v, true
}

// stringToNumber is ipvsadm's string_to_number.
func stringToNumber(s string, min, max int64) (int64, bool) {
	v, ok := strtol(s)
	if !ok || v < min || v > max {
		return 0, false
	}
	return v, true
}

// parseFWMark is ipvsadm's parse_fwmark: 1..4294967295.
func parseFWMark(s string) (uint32, bool) {
	v, ok := strtol(s)
	if !ok || v <= 0 || v > 0xffffffff {
		return 0, false
	}
	return uint32(v), true
}

// atoi is C's atoi: leading white space, a sign, digits up to the first
// other character; 0 when there are none.
func atoi(s string) int64 {
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	var v int64
	for i < len(s) && isDigit(s[i]) && v < 1<<40 {
		v = v*10 + int64(s[i]-'0')
		i++
	}
	if neg {
		v = -v
	}
	return v
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
