package bgp

import (
	"fmt"
	"io"
	"time"
)

// Status is the speaker as `golvs adm --status` and the metrics show it.
type Status struct {
	ASN      uint32        `json:"asn"`
	RouterID string        `json:"router_id"`
	Peers    []PeerStatus  `json:"peers"`
	Routes   []RouteStatus `json:"routes"`
	// Announcements and Withdrawals count the route changes golvs made
	// (a re-announcement with the GRACEFUL_SHUTDOWN community counts as
	// one announcement).
	Announcements uint64 `json:"announcements"`
	Withdrawals   uint64 `json:"withdrawals"`
	// DataPath is "running", or why golvs does not forward ("stopped",
	// "stalled: ...").
	DataPath     string `json:"data_path"`
	ShuttingDown bool   `json:"shutting_down,omitempty"`
	// GracefulRestart is the restart time advertised (RFC 4724; 0: off).
	GracefulRestart time.Duration `json:"graceful_restart,omitempty"`
}

// PeerStatus is one session.
type PeerStatus struct {
	Addr  string `json:"addr"`
	ASN   uint32 `json:"asn"`
	State string `json:"state"` // FSM state: idle, connect, active, opensent, openconfirm, established
	// Since is when the session entered State (zero: never changed).
	Since time.Time `json:"since,omitzero"`
	// Established counts the times the session came up.
	Established uint64 `json:"established"`
	// LastError is why the session last went down ("" never).
	LastError string `json:"last_error,omitempty"`
	// RetryIn is the back-off before the next attempt, while golvs holds
	// a failing peer back (0: GoBGP's own connect retry runs).
	RetryIn  time.Duration `json:"retry_in,omitempty"`
	MsgsIn   uint64        `json:"msgs_in"`
	MsgsOut  uint64        `json:"msgs_out"`
	Received uint64        `json:"received,omitempty"` // routes the peer sent (golvs imports none)
}

// RouteStatus is one VIP's host route.
type RouteStatus struct {
	Prefix    string `json:"prefix"`
	Announced bool   `json:"announced"`
	// GracefulShutdown: announced with the GRACEFUL_SHUTDOWN community
	// (65535:0), ahead of the withdrawal at shutdown.
	GracefulShutdown bool `json:"graceful_shutdown,omitempty"`
	// Reason is why the route is withdrawn ("" while announced).
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

// FSM states, numbered as the BGP4-MIB's bgpPeerState (RFC 4273) and the
// golvs_bgp_peer_state metric number them.
var stateNumbers = map[string]int{"idle": 1, "connect": 2, "active": 3, "opensent": 4, "openconfirm": 5, "established": 6}

// StateNumber returns the BGP4-MIB number of an FSM state name (0:
// unknown).
func StateNumber(state string) int { return stateNumbers[state] }

// Write prints the status for people, one line per fact, after
// `golvs adm --status`'s own.
func (s *Status) Write(w io.Writer) {
	fmt.Fprintf(w, "bgp: AS %d, router id %s, data path %s", s.ASN, s.RouterID, s.DataPath)
	if s.GracefulRestart > 0 {
		fmt.Fprintf(w, ", graceful restart %v", s.GracefulRestart)
	}
	if s.ShuttingDown {
		fmt.Fprint(w, ", shutting down")
	}
	fmt.Fprintf(w, " (%d announcements, %d withdrawals)\n", s.Announcements, s.Withdrawals)
	for _, p := range s.Peers {
		fmt.Fprintf(w, "bgp peer %s AS %d: %s", p.Addr, p.ASN, p.State)
		if !p.Since.IsZero() {
			fmt.Fprintf(w, " for %s", time.Since(p.Since).Truncate(time.Second))
		}
		fmt.Fprintf(w, ", up %d time(s), messages in %d out %d", p.Established, p.MsgsIn, p.MsgsOut)
		if p.RetryIn > 0 {
			fmt.Fprintf(w, ", held back %s", p.RetryIn.Truncate(time.Second))
		}
		if p.LastError != "" {
			fmt.Fprintf(w, ", last error: %s", p.LastError)
		}
		fmt.Fprintln(w)
	}
	for _, r := range s.Routes {
		switch {
		case r.Announced && r.GracefulShutdown:
			fmt.Fprintf(w, "bgp route %s: announced with GRACEFUL_SHUTDOWN (65535:0)\n", r.Prefix)
		case r.Announced:
			fmt.Fprintf(w, "bgp route %s: announced\n", r.Prefix)
		default:
			fmt.Fprintf(w, "bgp route %s: withdrawn (%s)\n", r.Prefix, r.Reason)
		}
	}
}
