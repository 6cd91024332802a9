package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/golvs/golvs/bgp"
)

// bgpDescs are the golvs_bgp_* series: the speaker's sessions and the
// VIPs' host routes (golvs run --bgp-asn).
type bgpDescs struct {
	status                               func() *bgp.Status
	peerUp, peerState, peerEstablished   typedDesc
	msgsIn, msgsOut                      typedDesc
	routeAnnounced, routeGshut           typedDesc
	announcements, withdrawals, dataPath typedDesc
}

// SetBGP adds the golvs_bgp_* series, read from status at scrape time.
// Call it before the collector is registered.
func (c *Collector) SetBGP(status func() *bgp.Status) {
	peer := []string{"peer", "peer_asn"}
	c.bgp = &bgpDescs{
		status:          status,
		peerUp:          gauge("golvs_bgp_peer_up", "Whether the BGP session with the peer is established (1) or not (0).", peer...),
		peerState:       gauge("golvs_bgp_peer_state", "The BGP session's FSM state, numbered as the BGP4-MIB's bgpPeerState: 1 idle, 2 connect, 3 active, 4 opensent, 5 openconfirm, 6 established.", peer...),
		peerEstablished: counter("golvs_bgp_peer_established_total", "Times the BGP session with the peer came up.", peer...),
		msgsIn:          counter("golvs_bgp_peer_messages_received_total", "BGP messages received from the peer.", peer...),
		msgsOut:         counter("golvs_bgp_peer_messages_sent_total", "BGP messages sent to the peer.", peer...),
		routeAnnounced:  gauge("golvs_bgp_route_announced", "Whether the VIP's host route is announced (1) or withdrawn (0).", "prefix"),
		routeGshut:      gauge("golvs_bgp_route_graceful_shutdown", "Whether the VIP's host route carries the GRACEFUL_SHUTDOWN community (the director is shutting down).", "prefix"),
		announcements:   counter("golvs_bgp_announcements_total", "Host routes announced (again, with GRACEFUL_SHUTDOWN, counts too)."),
		withdrawals:     counter("golvs_bgp_withdrawals_total", "Host routes withdrawn."),
		dataPath:        gauge("golvs_bgp_data_path_up", "Whether the announcer sees the data path forwarding (routes are announced only then)."),
	}
}

func (b *bgpDescs) descs() []*prometheus.Desc {
	if b == nil {
		return nil
	}
	return []*prometheus.Desc{b.peerUp.desc, b.peerState.desc, b.peerEstablished.desc, b.msgsIn.desc, b.msgsOut.desc,
		b.routeAnnounced.desc, b.routeGshut.desc, b.announcements.desc, b.withdrawals.desc, b.dataPath.desc}
}

func (b *bgpDescs) collect(ch chan<- prometheus.Metric) {
	if b == nil {
		return
	}
	st := b.status()
	if st == nil {
		return
	}
	for _, p := range st.Peers {
		asn := strconv.FormatUint(uint64(p.ASN), 10)
		ch <- b.peerUp.metric(b2f(p.State == "established"), p.Addr, asn)
		ch <- b.peerState.metric(float64(bgp.StateNumber(p.State)), p.Addr, asn)
		ch <- b.peerEstablished.metric(float64(p.Established), p.Addr, asn)
		ch <- b.msgsIn.metric(float64(p.MsgsIn), p.Addr, asn)
		ch <- b.msgsOut.metric(float64(p.MsgsOut), p.Addr, asn)
	}
	for _, r := range st.Routes {
		ch <- b.routeAnnounced.metric(b2f(r.Announced), r.Prefix)
		ch <- b.routeGshut.metric(b2f(r.GracefulShutdown), r.Prefix)
	}
	ch <- b.announcements.metric(float64(st.Announcements))
	ch <- b.withdrawals.metric(float64(st.Withdrawals))
	ch <- b.dataPath.metric(b2f(st.DataPath == "running"))
}
