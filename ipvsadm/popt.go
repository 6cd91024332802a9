package ipvsadm

import "strings"

// This file is the part of popt (the option parser ipvsadm uses) that
// ipvsadm's option table reaches: long options with "--name value" or
// "--name=value", bundled short options ("-Ln", "-w2", "-w=2"), optional
// arguments that take the next word only when it does not start with '-',
// "--" ending the options, and words that are not options collected as
// leftovers wherever they appear.

type optID int

const (
	optAdd optID = iota + 1
	optEdit
	optDel
	optClear
	optList
	optZero
	optAddDest
	optEditDest
	optDelDest
	optSet
	optHelp
	optVersion
	optRestore
	optSave
	optStartDaemon
	optStopDaemon
	optTCP
	optUDP
	optSCTP
	optFWMark
	optSched
	optPersist
	optNetmask
	optReal
	optMasq
	optIPIP
	optGate
	optFullNAT
	optWeight
	optUThresh
	optLThresh
	optNumeric
	optConn
	optMcastIfn
	optSyncID
	optTimeout
	optDaemon
	optStats
	optRate
	optThresholds
	optPersistConn
	optNoSort
	optSort
	optExact
	optIPv6
	optOps
	optPE
	optSchedFlags
	optMcastGroup
	optMcastPort
	optMcastTTL
	optSyncMaxlen
	optTunInfo
	optTunType
	optTunPort
	optTunNoCsum
	optTunCsum
	optTunRemCsum
)

const (
	argNone = iota
	argRequired
	argOptional
)

type optSpec struct {
	long  string
	short byte
	arg   int
	id    optID
}

// optTable is ipvsadm 1.31's popt table, in its order, plus --fullnat.
var optTable = []optSpec{
	{"add-service", 'A', argNone, optAdd},
	{"edit-service", 'E', argNone, optEdit},
	{"delete-service", 'D', argNone, optDel},
	{"clear", 'C', argNone, optClear},
	{"list", 'L', argNone, optList},
	{"list", 'l', argNone, optList},
	{"zero", 'Z', argNone, optZero},
	{"add-server", 'a', argNone, optAddDest},
	{"edit-server", 'e', argNone, optEditDest},
	{"delete-server", 'd', argNone, optDelDest},
	{"set", 0, argNone, optSet},
	{"help", 'h', argNone, optHelp},
	{"version", 'v', argNone, optVersion},
	{"restore", 'R', argNone, optRestore},
	{"save", 'S', argNone, optSave},
	{"start-daemon", 0, argRequired, optStartDaemon},
	{"stop-daemon", 0, argRequired, optStopDaemon},
	{"tcp-service", 't', argRequired, optTCP},
	{"udp-service", 'u', argRequired, optUDP},
	{"sctp-service", 0, argRequired, optSCTP},
	{"fwmark-service", 'f', argRequired, optFWMark},
	{"scheduler", 's', argRequired, optSched},
	{"persistent", 'p', argOptional, optPersist},
	{"netmask", 'M', argRequired, optNetmask},
	{"real-server", 'r', argRequired, optReal},
	{"masquerading", 'm', argNone, optMasq},
	{"ipip", 'i', argNone, optIPIP},
	{"gatewaying", 'g', argNone, optGate},
	{"fullnat", 0, argNone, optFullNAT}, // golvs: FULLNAT, long form only
	{"weight", 'w', argRequired, optWeight},
	{"u-threshold", 'x', argRequired, optUThresh},
	{"l-threshold", 'y', argRequired, optLThresh},
	{"numeric", 'n', argNone, optNumeric},
	{"connection", 'c', argNone, optConn},
	{"mcast-interface", 0, argRequired, optMcastIfn},
	{"syncid", 0, argRequired, optSyncID},
	{"timeout", 0, argNone, optTimeout},
	{"daemon", 0, argNone, optDaemon},
	{"stats", 0, argNone, optStats},
	{"rate", 0, argNone, optRate},
	{"thresholds", 0, argNone, optThresholds},
	{"persistent-conn", 0, argNone, optPersistConn},
	{"nosort", 0, argNone, optNoSort},
	{"sort", 0, argNone, optSort},
	{"exact", 'X', argNone, optExact},
	{"ipv6", '6', argNone, optIPv6},
	{"ops", 'o', argNone, optOps},
	{"pe", 0, argRequired, optPE},
	{"sched-flags", 'b', argRequired, optSchedFlags},
	{"mcast-group", 0, argRequired, optMcastGroup},
	{"mcast-port", 0, argRequired, optMcastPort},
	{"mcast-ttl", 0, argRequired, optMcastTTL},
	{"sync-maxlen", 0, argRequired, optSyncMaxlen},
	{"tun-info", 0, argNone, optTunInfo},
	{"tun-type", 0, argRequired, optTunType},
	{"tun-port", 0, argRequired, optTunPort},
	{"tun-nocsum", 0, argNone, optTunNoCsum},
	{"tun-csum", 0, argNone, optTunCsum},
	{"tun-remcsum", 0, argNone, optTunRemCsum},
}

func findLong(name string) *optSpec {
	for i := range optTable {
		if optTable[i].long == name {
			return &optTable[i]
		}
	}
	return nil
}

func findShort(c byte) *optSpec {
	if c == 0 {
		return nil
	}
	for i := range optTable {
		if optTable[i].short == c {
			return &optTable[i]
		}
	}
	return nil
}

// popt errors, as poptStrerror words them.
const (
	poptBadOpt = "unknown option"
	poptNoArg  = "missing argument"
)

type popt struct {
	args      []string
	pos       int    // next word
	chars     string // rest of a bundle of short options
	inBundle  bool   // chars is set (it may be empty after "-x=")
	rest      bool   // after "--": everything is a leftover
	leftovers []string
}

// last is the word poptBadOption names: the last one consumed.
func (p *popt) last() string {
	if p.pos == 0 {
		return ""
	}
	return p.args[p.pos-1]
}

// next returns the next option and its argument, nil at the end, or a
// popt error text.
func (p *popt) next() (o *optSpec, arg string, hasArg bool, perr string) {
	for {
		longArg, hasLong := "", false
		if !p.inBundle {
			if p.pos == len(p.args) {
				return nil, "", false, ""
			}
			w := p.args[p.pos]
			p.pos++
			if p.rest || !strings.HasPrefix(w, "-") || w == "-" {
				p.leftovers = append(p.leftovers, w)
				continue
			}
			if w == "--" {
				p.rest = true
				continue
			}
			s := w[1:]
			if strings.HasPrefix(s, "-") {
				s = s[1:]
				name := s
				if i := strings.IndexByte(s, '='); i >= 0 {
					name, longArg, hasLong = s[:i], s[i+1:], true
				}
				o = findLong(name)
				if o == nil {
					return nil, "", false, poptBadOpt
				}
			} else {
				// No ipvsadm option is ONEDASH: "-xyz" is a bundle.
				p.chars, p.inBundle = s, true
			}
		}
		if p.inBundle {
			cs := p.chars
			p.chars, p.inBundle = "", false
			if cs == "" {
				return nil, "", false, poptBadOpt
			}
			o = findShort(cs[0])
			if o == nil {
				return nil, "", false, poptBadOpt
			}
			if rest := cs[1:]; rest != "" {
				if rest[0] == '=' {
					rest = rest[1:]
				}
				p.chars, p.inBundle = rest, true
			}
		}
		if o.arg == argNone {
			return o, "", false, ""
		}
		switch {
		case hasLong:
			return o, longArg, true, ""
		case p.inBundle:
			a := p.chars
			p.chars, p.inBundle = "", false
			return o, a, true, ""
		case p.pos == len(p.args):
			if o.arg != argOptional {
				return nil, "", false, poptNoArg
			}
			return o, "", false, ""
		case o.arg == argOptional && strings.HasPrefix(p.args[p.pos], "-"):
			return o, "", false, ""
		default:
			a := p.args[p.pos]
			p.pos++
			return o, a, true, ""
		}
	}
}
