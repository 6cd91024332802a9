package conntrack

// TCP states, numbered as IPVS numbers them (and as sync messages carry
// them), spec §3.5.
const (
	TCPNone uint8 = iota
	TCPEstablished
	TCPSynSent
	TCPSynRecv
	TCPFinWait
	TCPTimeWait
	TCPClose
	TCPCloseWait
	TCPLastAck
	TCPListen
	TCPSynAck
	NumTCPStates
)

// UDPNormal is UDP's single state, listed as "UDP".
const UDPNormal uint8 = 0

// Template states.
const (
	TplNone    uint8 = 0
	TplAssured uint8 = 1
)

var tcpStateNames = [NumTCPStates]string{
	"NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT",
	"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK",
}

// StateName returns the name IPVS listings use for a state of proto.
func StateName(proto uint8, template bool, s uint8) string {
	if template {
		if s == TplAssured {
			return "ASSURED"
		}
		return "NONE"
	}
	switch proto {
	case 6:
		if s < NumTCPStates {
			return tcpStateNames[s]
		}
		return "BUG!"
	case 17:
		return "UDP"
	}
	return "NONE"
}

// TCPActive reports whether a TCP state counts in activeconns (current
// kernels: ESTABLISHED, SYN_SENT, SYN_RECV and SYNACK; spec §3.3).
func TCPActive(s uint8) bool {
	return s == TCPEstablished || s == TCPSynSent || s == TCPSynRecv || s == TCPSynAck
}

// Directions of the TCP state tables.
const (
	DirInput     = 0 // client to server
	DirOutput    = 1 // server to client (NAT, FULLNAT)
	DirInputOnly = 2 // client to server on a conn that never sees replies (DR, TUN)
)

// Events a TCP packet's flags reduce to.
const (
	evSyn = iota
	evFin
	evAck
	evRst
	evNone
)

func tcpEvent(flags uint8) int {
	switch {
	case flags&0x04 != 0:
		return evRst
	case flags&0x02 != 0:
		return evSyn
	case flags&0x01 != 0:
		return evFin
	case flags&0x10 != 0:
		return evAck
	}
	return evNone
}

// Short names for the tables below.
const (
	sNO = TCPNone
	sES = TCPEstablished
	sSS = TCPSynSent
	sSR = TCPSynRecv
	sFW = TCPFinWait
	sTW = TCPTimeWait
	sCL = TCPClose
	sCW = TCPCloseWait
	sLA = TCPLastAck
	sLI = TCPListen
	sSA = TCPSynAck
)

// tcpTrans is IPVS's normal (secure_tcp off) state table:
// [direction][event][current state] -> next state. Spec §3.5.
var tcpTrans = [3][4][NumTCPStates]uint8{
	DirInput: {
		/*        NO   ES   SS   SR   FW   TW   CL   CW   LA   LI   SA */
		evSyn: {sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR},
		evFin: {sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW},
		evAck: {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES},
		evRst: {sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sSR},
	},
	DirOutput: {
		evSyn: {sSS, sES, sSS, sSR, sSS, sSS, sSS, sSS, sSS, sLI, sSR},
		evFin: {sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW},
		evAck: {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES},
		evRst: {sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL},
	},
	DirInputOnly: {
		evSyn: {sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR},
		evFin: {sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW},
		evAck: {sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES},
		evRst: {sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL},
	},
}

// TCPNext returns the state a TCP conn in state cur moves to on a packet
// with flags seen in direction dir. A packet with none of RST, SYN, FIN
// and ACK forces CLOSE, as IPVS does.
func TCPNext(dir int, flags uint8, cur uint8) uint8 {
	ev := tcpEvent(flags)
	if ev == evNone || cur >= NumTCPStates {
		return TCPClose
	}
	return tcpTrans[dir][ev][cur]
}

// DefaultTCPTimeouts are IPVS's default timeouts per TCP state, in seconds.
var DefaultTCPTimeouts = [NumTCPStates]uint32{
	TCPNone: 2, TCPEstablished: 900, TCPSynSent: 120, TCPSynRecv: 60,
	TCPFinWait: 120, TCPTimeWait: 120, TCPClose: 10, TCPCloseWait: 60,
	TCPLastAck: 30, TCPListen: 120, TCPSynAck: 120,
}

// DefaultUDPTimeout is the UDP NORMAL timeout, in seconds.
const DefaultUDPTimeout = 300
