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

// tcpTransSecure is IPVS's secure_tcp ("anti-DoS") table, used while the
// secure_tcp defense is on: the normal table with the cells spec §3.5
// lists changed. A NAT conn is not ESTABLISHED by the client's handshake
// ACK alone: the server must have answered (OUTPUT syn SR -> SA) and then
// sent an ACK (OUTPUT ack SA -> ES), so spoofed SYN+ACK floods stay in
// the short-lived handshake states.
var tcpTransSecure = func() [3][4][NumTCPStates]uint8 {
	t := tcpTrans
	in, out, only := &t[DirInput], &t[DirOutput], &t[DirInputOnly]
	in[evSyn][sSA] = sSA
	in[evFin][sSA] = sSA
	in[evAck][sSR] = sSR
	in[evAck][sSA] = sSA
	in[evRst][sSA] = sCL
	out[evSyn][sSR] = sSA
	out[evSyn][sSA] = sSA
	for _, s := range []uint8{sNO, sFW, sTW, sCL, sCW, sLA, sLI, sSA} {
		only[evSyn][s] = sSA
	}
	return t
}()

// TCPNext returns the state a TCP conn in state cur moves to on a packet
// with flags seen in direction dir. A packet with none of RST, SYN, FIN
// and ACK forces CLOSE, as IPVS does.
func TCPNext(dir int, flags uint8, cur uint8) uint8 { return tcpNext(&tcpTrans, dir, flags, cur) }

// TCPNextSecure is TCPNext with the secure_tcp table.
func TCPNextSecure(dir int, flags uint8, cur uint8) uint8 {
	return tcpNext(&tcpTransSecure, dir, flags, cur)
}

func tcpNext(tbl *[3][4][NumTCPStates]uint8, dir int, flags uint8, cur uint8) uint8 {
	ev := tcpEvent(flags)
	if ev == evNone || cur >= NumTCPStates {
		return TCPClose
	}
	return tbl[dir][ev][cur]
}

// DefaultTCPTimeouts are IPVS's default timeouts per TCP state, in seconds.
var DefaultTCPTimeouts = [NumTCPStates]uint32{
	TCPNone: 2, TCPEstablished: 900, TCPSynSent: 120, TCPSynRecv: 60,
	TCPFinWait: 120, TCPTimeWait: 120, TCPClose: 10, TCPCloseWait: 60,
	TCPLastAck: 30, TCPListen: 120, TCPSynAck: 120,
}

// DefaultUDPTimeout is the UDP NORMAL timeout, in seconds.
const DefaultUDPTimeout = 300

// SecureTCPTimeouts are the timeouts the secure_tcp defense applies while
// it is on: IPVS's vs_timeout_table_dos, the table secure_tcp switched to
// before current kernels dropped it with its timeout_* sysctls (spec
// §3.9). A state keeps its normal timeout where that is shorter (NONE's
// 2 s, or a value set with ipvsadm --set), so the defense never lengthens
// one. SYN_RECV falls from 60 s to 10 s: what a SYN flood leaves behind
// is gone six times sooner.
var SecureTCPTimeouts = [NumTCPStates]uint32{
	TCPNone: 15 * 60, TCPEstablished: 8 * 60, TCPSynSent: 60, TCPSynRecv: 10,
	TCPFinWait: 60, TCPTimeWait: 60, TCPClose: 10, TCPCloseWait: 60,
	TCPLastAck: 30, TCPListen: 2 * 60, TCPSynAck: 100,
}

// SecureUDPTimeout is vs_timeout_table_dos's UDP timeout, in seconds.
const SecureUDPTimeout = 3 * 60
