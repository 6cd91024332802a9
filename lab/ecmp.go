package lab

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The ECMP lab's addresses (docs/ecmp.md): the lab plan's DR segment
// (198.18.0.0/24: directors at .1-.8, real servers at .11-, the router at
// .254, the VIP .100 on the real servers' lo) and a client network behind
// the router, so that the client reaches the VIP only through the
// router's routing table.
var (
	ECMPClientRouterIP = netip.MustParseAddr("198.18.2.254") // router, client side
	ECMPRouterIP       = netip.MustParseAddr("198.18.0.254") // router, directors' side
	ECMPRouterASN      = uint32(65000)
	ECMPDirectorASN    = uint32(65001)
)

// ECMPDirectorIP returns director i's address (1-based).
func ECMPDirectorIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}) }

// ECMPClientIP returns the client's address i (0-based: 198.18.2.10 ...).
func ECMPClientIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 2, byte(10 + i)}) }

// Limits of the ECMP lab.
const (
	MaxECMPDirectors   = 8
	MaxECMPRealServers = 16
	MaxECMPClients     = 200
)

// ECMPOptions shape the ECMP lab.
type ECMPOptions struct {
	Suffix      string
	Directors   int // 1..8
	RealServers int // 1..16
	Clients     int // client addresses, 1..200
	// BadPeers adds BGP peers that misbehave, for tests: 198.18.0.251
	// (no host: unreachable), .252 (refuses the connection) and .253
	// (answers with garbage), all on the directors' segment.
	BadPeers bool
}

// The misbehaving peers of ECMPOptions.BadPeers.
var (
	ECMPUnreachablePeer = netip.MustParseAddr("198.18.0.251")
	ECMPRefusingPeer    = netip.MustParseAddr("198.18.0.252")
	ECMPGarbagePeer     = netip.MustParseAddr("198.18.0.253")
)

// ECMPTopology is a built ECMP lab: one client namespace holding many
// addresses, a router between the client network and the directors'
// segment, N directors and the real servers on that segment (a bridge).
type ECMPTopology struct {
	Suffix      string
	Client      *NS
	Router      *NS
	Switch      *NS
	Directors   []*NS
	RS          []*NS
	BadPeers    *NS // with ECMPOptions.BadPeers
	ClientAddrs []netip.Addr
	RIPs        []netip.Addr
	Notes       []string
	all         []*NS
}

// ECMPNames returns the namespace names of an ECMP lab (without the
// BadPeers namespace, "peers"+suffix).
func ECMPNames(suffix string, directors, realServers int) []string {
	n := []string{"client" + suffix, "router" + suffix, "lan" + suffix}
	for i := 1; i <= directors; i++ {
		n = append(n, fmt.Sprintf("director%d%s", i, suffix))
	}
	for i := 1; i <= realServers; i++ {
		n = append(n, fmt.Sprintf("rs%d%s", i, suffix))
	}
	return n
}

// CheckECMPOptions validates the sizes.
func CheckECMPOptions(o ECMPOptions) error {
	switch {
	case o.Directors < 1 || o.Directors > MaxECMPDirectors:
		return fmt.Errorf("lab: %d directors, allowed 1..%d", o.Directors, MaxECMPDirectors)
	case o.RealServers < 1 || o.RealServers > MaxECMPRealServers:
		return fmt.Errorf("lab: %d real servers, allowed 1..%d", o.RealServers, MaxECMPRealServers)
	case o.Clients < 1 || o.Clients > MaxECMPClients:
		return fmt.Errorf("lab: %d client addresses, allowed 1..%d", o.Clients, MaxECMPClients)
	}
	return nil
}

// BuildECMP builds the ECMP lab's namespaces and links. The router
// forwards with an L4 hash over multipath routes (the 5-tuple) and has
// no route to the VIP
// until a routing daemon installs one; the real servers hold the VIP on
// lo (DR: arp_ignore=1, arp_announce=2) and answer the clients through
// the router, never through a director.
func BuildECMP(o ECMPOptions) (t *ECMPTopology, err error) {
	if err := RequireRoot(); err != nil {
		return nil, err
	}
	if err := CheckECMPOptions(o); err != nil {
		return nil, err
	}
	t = &ECMPTopology{Suffix: o.Suffix}
	defer func() {
		if err != nil {
			t.Close()
			t = nil
		}
	}()
	names := ECMPNames(o.Suffix, o.Directors, o.RealServers)
	for _, n := range names {
		if _, e := os.Stat("/var/run/netns/" + n); e == nil {
			return t, fmt.Errorf("lab: network namespace %s already exists (a lab is running? `golvs lab down` removes it)", n)
		}
	}
	mk := func(name string) (*NS, error) {
		ns, err := NewNS(name)
		if err != nil {
			return nil, err
		}
		t.all = append(t.all, ns)
		return ns, ns.Do(quietIPv6)
	}
	if t.Client, err = mk(names[0]); err != nil {
		return t, err
	}
	if t.Router, err = mk(names[1]); err != nil {
		return t, err
	}
	if t.Switch, err = mk(names[2]); err != nil {
		return t, err
	}
	if err := bridge(t.Switch, "br0"); err != nil {
		return t, err
	}
	plug := func(ns *NS, dev string, mac net.HardwareAddr, addr netip.Prefix, port string, pmac net.HardwareAddr) error {
		if err := veth(ns, dev, mac, addr, t.Switch, port, pmac, netip.Prefix{}); err != nil {
			return err
		}
		return enslave(t.Switch, port, "br0")
	}
	// client eth0 <-> router eth0
	if err := veth(t.Client, "eth0", MAC(roleClient, 10), pfx(ECMPClientIP(0), 24),
		t.Router, "eth0", MAC(roleRouter, 1), pfx(ECMPClientRouterIP, 24)); err != nil {
		return t, err
	}
	for i := 1; i < o.Clients; i++ {
		if err := addAddr(t.Client, "eth0", pfx(ECMPClientIP(i), 24)); err != nil {
			return t, err
		}
	}
	for i := range o.Clients {
		t.ClientAddrs = append(t.ClientAddrs, ECMPClientIP(i))
	}
	if err := defaultRoute(t.Client, ECMPClientRouterIP); err != nil {
		return t, err
	}
	if err := plug(t.Router, "eth1", MAC(roleRouter, 2), pfx(ECMPRouterIP, 24), "p-rtr", MAC(roleSwitch, 3)); err != nil {
		return t, err
	}
	for _, s := range [][2]string{
		{"net/ipv4/ip_forward", "1"},
		// ECMP over an L4 hash: the 5-tuple (source and destination
		// address and port, protocol). Policy 3 with these fields hashes
		// exactly what policy 1 does, but from the packet's headers
		// always: policy 1 reuses a hash the packet already carries, and
		// over veth that is the client socket's random txhash, which
		// TCP changes on every retransmission timeout (docs/ecmp.md).
		{"net/ipv4/fib_multipath_hash_policy", "3"}, {"net/ipv4/fib_multipath_hash_fields", "0x0037"},
		{"net/ipv4/conf/all/rp_filter", "0"}, {"net/ipv4/conf/default/rp_filter", "0"},
		{"net/ipv4/conf/eth0/rp_filter", "0"}, {"net/ipv4/conf/eth1/rp_filter", "0"},
	} {
		if err := sysctl(t.Router, s[0], s[1]); err != nil {
			return t, err
		}
	}
	for i := 1; i <= o.Directors; i++ {
		d, err := mk(names[2+i])
		if err != nil {
			return t, err
		}
		t.Directors = append(t.Directors, d)
		if err := plug(d, DirExt, MAC(roleDirector, byte(i)), pfx(ECMPDirectorIP(i), 24), fmt.Sprintf("p-dir%d", i), MAC(roleSwitch, byte(100+i))); err != nil {
			return t, err
		}
	}
	for j := 1; j <= o.RealServers; j++ {
		rs, err := mk(names[2+o.Directors+j])
		if err != nil {
			return t, err
		}
		t.RS = append(t.RS, rs)
		t.RIPs = append(t.RIPs, DRRIP(j))
		if err := plug(rs, "eth0", MAC(roleRS, byte(j)), pfx(DRRIP(j), 24), fmt.Sprintf("p-rs%d", j), MAC(roleSwitch, byte(10+j))); err != nil {
			return t, err
		}
		if err := addAddr(rs, "lo", pfx(VIP, 32)); err != nil {
			return t, fmt.Errorf("lab: VIP on %s/lo: %w", rs.Name, err)
		}
		for _, s := range [][2]string{
			{"net/ipv4/conf/all/arp_ignore", "1"}, {"net/ipv4/conf/eth0/arp_ignore", "1"},
			{"net/ipv4/conf/all/arp_announce", "2"}, {"net/ipv4/conf/eth0/arp_announce", "2"},
		} {
			if err := sysctl(rs, s[0], s[1]); err != nil {
				return t, err
			}
		}
		if err := defaultRoute(rs, ECMPRouterIP); err != nil {
			return t, err
		}
	}
	if o.BadPeers {
		if t.BadPeers, err = mk("peers" + o.Suffix); err != nil {
			return t, err
		}
		if err := plug(t.BadPeers, "eth0", MAC(roleRouter, 9), pfx(ECMPRefusingPeer, 24), "p-peers", MAC(roleSwitch, 4)); err != nil {
			return t, err
		}
		if err := addAddr(t.BadPeers, "eth0", pfx(ECMPGarbagePeer, 24)); err != nil {
			return t, err
		}
	}
	t.Notes = append(t.Notes,
		"router: ip_forward=1, fib_multipath_hash_policy=3 with fib_multipath_hash_fields=0x37 (the L4 5-tuple); the VIP is routed only by what bird learns over BGP",
		fmt.Sprintf("real servers: VIP %s/32 on lo, arp_ignore=1, arp_announce=2, default route via the router %s (DR: replies bypass the directors)", VIP, ECMPRouterIP))
	return t, nil
}

// Close deletes every namespace of the lab.
func (t *ECMPTopology) Close() {
	for i := len(t.all) - 1; i >= 0; i-- {
		t.all[i].Delete()
	}
	t.all = nil
}

// Namespaces lists the lab's namespaces.
func (t *ECMPTopology) Namespaces() []*NS { return t.all }

// RouterNextHops returns the next hops of the router's kernel route to
// dst (empty: no route): the ECMP set bird installed.
func (t *ECMPTopology) RouterNextHops(dst netip.Addr) ([]netip.Addr, error) {
	var out []netip.Addr
	err := t.Router.Do(func() error {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: &net.IPNet{IP: dst.AsSlice(), Mask: net.CIDRMask(32, 32)}}, netlink.RT_FILTER_DST)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Gw != nil {
				a, _ := netip.AddrFromSlice(r.Gw)
				out = append(out, a.Unmap())
			}
			for _, nh := range r.MultiPath {
				a, _ := netip.AddrFromSlice(nh.Gw)
				out = append(out, a.Unmap())
			}
		}
		return nil
	})
	return out, err
}

// FlowNextHops asks the router's kernel where it forwards each TCP flow
// from a client to dst arriving on its client side: `ip route get DST
// from SRC iif eth0 ipproto tcp sport P dport Q`, the same lookup (and
// multipath hash) a forwarded packet of the flow gets. It is the lab's
// record, independent of golvs, of which director each flow goes through.
func (t *ECMPTopology) FlowNextHops(srcs []netip.AddrPort, dst netip.AddrPort) ([]netip.Addr, error) {
	out := make([]netip.Addr, len(srcs))
	err := t.Router.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		for i, src := range srcs {
			if out[i], err = flowNextHop(l.Attrs().Index, src, dst); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

func flowNextHop(iif int, src, dst netip.AddrPort) (netip.Addr, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETROUTE, unix.NLM_F_REQUEST)
	req.AddData(&nl.RtMsg{RtMsg: unix.RtMsg{Family: unix.AF_INET, Dst_len: 32, Src_len: 32}})
	d4, s4 := dst.Addr().As4(), src.Addr().As4()
	req.AddData(nl.NewRtAttr(unix.RTA_DST, d4[:]))
	req.AddData(nl.NewRtAttr(unix.RTA_SRC, s4[:]))
	req.AddData(nl.NewRtAttr(unix.RTA_IIF, nl.Uint32Attr(uint32(iif))))
	req.AddData(nl.NewRtAttr(unix.RTA_IP_PROTO, []byte{unix.IPPROTO_TCP}))
	req.AddData(nl.NewRtAttr(unix.RTA_SPORT, []byte{byte(src.Port() >> 8), byte(src.Port())}))
	req.AddData(nl.NewRtAttr(unix.RTA_DPORT, []byte{byte(dst.Port() >> 8), byte(dst.Port())}))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWROUTE)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("lab: route get %s from %s: %w", dst, src, err)
	}
	for _, m := range msgs {
		rtm := nl.DeserializeRtMsg(m)
		attrs, err := nl.ParseRouteAttr(m[rtm.Len():])
		if err != nil {
			return netip.Addr{}, err
		}
		for _, a := range attrs {
			if a.Attr.Type == unix.RTA_GATEWAY && len(a.Value) == 4 {
				return netip.AddrFrom4([4]byte(a.Value)), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("lab: route get %s from %s: no gateway (no route?)", dst, src)
}

// ErrNoBird is returned when bird2 is not installed.
var ErrNoBird = errors.New("lab: bird (Debian package bird2) is not installed: the ECMP lab needs a real BGP router (apt-get install bird2)")

// Bird is a bird2 routing daemon running in the router namespace.
type Bird struct {
	Sock string // control socket, for birdc -s
	Conf string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// BirdConfig returns the router's bird.conf: a passive eBGP session with
// each director (hold time hold), the GRACEFUL_SHUTDOWN community honoured
// on import (RFC 8326: local preference 0, so such a route leaves the
// ECMP set while its director drains), nothing exported to the
// directors, and every best route with its equals merged into one ECMP
// route in the kernel (merge paths).
func BirdConfig(directors int, hold time.Duration, logPath string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# golvs lab ecmp: the router
router id %s;
log "%s" all;
protocol device { scan time 10; }
protocol kernel {
	ipv4 { import none; export all; };
	merge paths on limit 16;
	learn off;
	persist off;
}
filter directors_in {
	if net != %s/32 then reject;
	if (65535, 0) ~ bgp_community then bgp_local_pref = 0;
	accept;
}
template bgp director {
	local %s as %d;
	passive on;
	hold time %d;
	keepalive time %d;
	error wait time 1, 2;
	ipv4 { import filter directors_in; export none; };
}
`, ECMPRouterIP, logPath, VIP, ECMPRouterIP, ECMPRouterASN, int(hold/time.Second), max(int(hold/time.Second)/3, 1))
	for i := 1; i <= directors; i++ {
		fmt.Fprintf(&b, "protocol bgp director%d from director { neighbor %s as %d; }\n", i, ECMPDirectorIP(i), ECMPDirectorASN)
	}
	return b.String()
}

// StartBird runs bird in the router namespace with conf, its socket and
// log in dir.
func StartBird(ns *NS, dir, conf string) (*Bird, error) {
	bin, err := exec.LookPath("bird")
	if err != nil {
		return nil, ErrNoBird
	}
	if _, err := exec.LookPath("birdc"); err != nil {
		return nil, ErrNoBird
	}
	b := &Bird{Sock: filepath.Join(dir, "bird.ctl"), Conf: filepath.Join(dir, "bird.conf"), Log: filepath.Join(dir, "bird.log"), done: make(chan struct{})}
	if err := os.WriteFile(b.Conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	if out, err := exec.Command(bin, "-p", "-c", b.Conf).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("lab: bird.conf does not parse: %v: %s", err, out)
	}
	b.cmd = exec.Command(bin, "-f", "-c", b.Conf, "-s", b.Sock, "-P", filepath.Join(dir, "bird.pid"))
	b.cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := ns.Do(b.cmd.Start); err != nil {
		return nil, fmt.Errorf("lab: starting bird in %s: %w", ns.Name, err)
	}
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := b.Show("status"); err == nil {
			return b, nil
		}
		select {
		case <-b.done:
			return nil, fmt.Errorf("lab: bird exited at start (log %s)", b.Log)
		default:
		}
		if time.Now().After(deadline) {
			b.Stop()
			return nil, fmt.Errorf("lab: bird's control socket %s did not answer within 10s", b.Sock)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Show runs `birdc -s SOCK show ARGS...` and returns its output.
func (b *Bird) Show(args ...string) (string, error) {
	cmd := exec.Command("birdc", append([]string{"-s", b.Sock, "show"}, args...)...)
	out, err := runTimeout(cmd, 5*time.Second)
	if err != nil {
		return string(out), fmt.Errorf("lab: birdc show %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// BirdRoute is one route to a prefix as `birdc show route all` lists it.
type BirdRoute struct {
	Protocol    string     // the BGP session it came from (director2)
	Via         netip.Addr // its next hop
	Best        bool       // bird's best route (the * mark)
	LocalPref   int
	Communities string // bgp_community, as bird prints it: "(65535,0)"
}

// Routes parses `birdc show route for PREFIX all`: every route bird holds
// to the prefix, from which session, via which next hop, with its
// preference and communities.
func (b *Bird) Routes(prefix netip.Prefix) ([]BirdRoute, error) {
	out, err := b.Show("route", "for", prefix.String(), "all")
	if err != nil {
		return nil, err
	}
	return ParseBirdRoutes(out), nil
}

// ParseBirdRoutes reads birdc's route listing (BIRD 2):
//
//	198.18.0.100/32      unicast [director1 12:00:01.123] * (100) [AS65001i]
//		via 198.18.0.1 on eth1
//		Type: BGP univ
//		BGP.local_pref: 100
//		BGP.community: (65535,0)
//	                     unicast [director2 12:00:01.456] (100) [AS65001i]
//		via 198.18.0.2 on eth1
func ParseBirdRoutes(out string) []BirdRoute {
	var rs []BirdRoute
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if i := strings.Index(line, "unicast ["); i >= 0 {
			r := BirdRoute{}
			rest := line[i+len("unicast ["):]
			if j := strings.IndexAny(rest, " ]"); j > 0 {
				r.Protocol = rest[:j]
			}
			if k := strings.Index(rest, "]"); k >= 0 {
				r.Best = strings.HasPrefix(strings.TrimSpace(rest[k+1:]), "*")
			}
			rs = append(rs, r)
			continue
		}
		if len(rs) == 0 {
			continue
		}
		r := &rs[len(rs)-1]
		switch {
		case f[0] == "via" && len(f) >= 2:
			if a, err := netip.ParseAddr(f[1]); err == nil {
				r.Via = a
			}
		case f[0] == "BGP.local_pref:" && len(f) >= 2:
			fmt.Sscan(f[1], &r.LocalPref)
		case f[0] == "BGP.community:":
			r.Communities = strings.Join(f[1:], " ")
		}
	}
	return rs
}

// Stop ends bird (its kernel routes go with it: persist off).
func (b *Bird) Stop() {
	if b == nil || b.cmd == nil || b.cmd.Process == nil {
		return
	}
	_ = b.cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

// runTimeout runs cmd, killing it after d.
func runTimeout(cmd *exec.Cmd, d time.Duration) ([]byte, error) {
	var buf strings.Builder
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return []byte(buf.String()), err
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
		return []byte(buf.String()), fmt.Errorf("timed out after %v", d)
	}
}
