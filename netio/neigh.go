package netio

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/golvs/golvs/packet"
)

// Hop is a resolved layer-2 next hop.
type Hop struct {
	IfIndex int
	SrcMAC  [6]byte
	DstMAC  [6]byte
	SrcIP   netip.Addr // the director's own address on that link
	Via     netip.Addr // the next hop's address (a gateway or the target)
}

// Link is what golvs knows of one of the director's interfaces.
type Link struct {
	Name  string
	Index int
	MAC   [6]byte
	Addrs []netip.Prefix // IPv4 addresses with their prefixes
	Tx    *Tx            // control-plane transmit socket (ARP)
}

// Neigh resolves next hops: routes from the kernel (netlink), MACs from
// the kernel's neighbour table, from ARP golvs sends itself, and from ARP
// frames it sees. It is used on the control path and on the rare resolve
// of a new next hop, never per packet.
type Neigh struct {
	nl    *netlink.Handle
	mu    sync.Mutex
	links map[int]*Link
	cache map[netip.Addr]neighEntry
	asked map[netip.Addr]time.Time
}

type neighEntry struct {
	mac     [6]byte
	ifindex int
	at      time.Time
}

// ErrPending is returned while a next hop's MAC is being resolved.
var ErrPending = errors.New("netio: next hop not resolved yet (ARP sent)")

// NewNeigh creates a resolver over the given interfaces. nl is a netlink
// handle in the director's network namespace.
func NewNeigh(nl *netlink.Handle, names []string) (*Neigh, error) {
	n := &Neigh{nl: nl, links: map[int]*Link{}, cache: map[netip.Addr]neighEntry{}, asked: map[netip.Addr]time.Time{}}
	for _, name := range names {
		l, err := nl.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("%w: %q", ErrNoInterface, name)
		}
		attrs := l.Attrs()
		lk := &Link{Name: name, Index: attrs.Index}
		copy(lk.MAC[:], attrs.HardwareAddr)
		addrs, err := nl.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return nil, fmt.Errorf("netio: listing addresses of %s: %w", name, err)
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP.To4())
			if !ok {
				continue
			}
			ones, _ := a.Mask.Size()
			lk.Addrs = append(lk.Addrs, netip.PrefixFrom(ip, ones))
		}
		tx, err := OpenTx(name)
		if err != nil {
			return nil, err
		}
		lk.Tx = tx
		n.links[lk.Index] = lk
	}
	return n, nil
}

// Links returns the interfaces, by index.
func (n *Neigh) Links() map[int]*Link { return n.links }

// Link returns one interface, or nil.
func (n *Neigh) Link(ifindex int) *Link { return n.links[ifindex] }

// Close closes the control sockets.
func (n *Neigh) Close() {
	for _, l := range n.links {
		l.Tx.Close()
	}
}

// Learn records an address's MAC seen on an interface (an ARP frame).
func (n *Neigh) Learn(ip [4]byte, mac [6]byte, ifindex int) {
	if mac == ([6]byte{}) || ip == ([4]byte{}) {
		return
	}
	a := netip.AddrFrom4(ip)
	n.mu.Lock()
	n.cache[a] = neighEntry{mac: mac, ifindex: ifindex, at: time.Now()}
	n.mu.Unlock()
}

// Forget drops a cached MAC (it went stale).
func (n *Neigh) Forget(ip netip.Addr) {
	n.mu.Lock()
	delete(n.cache, ip)
	n.mu.Unlock()
}

// Route finds the interface and next-hop address for dst among golvs's
// interfaces, as the kernel's routing table says.
func (n *Neigh) Route(dst netip.Addr) (l *Link, via netip.Addr, src netip.Addr, err error) {
	routes, err := n.nl.RouteGet(net.IP(dst.AsSlice()))
	if err != nil || len(routes) == 0 {
		return nil, via, src, fmt.Errorf("netio: no route to %s: %v", dst, err)
	}
	r := routes[0]
	l = n.links[r.LinkIndex]
	if l == nil {
		name := fmt.Sprint(r.LinkIndex)
		if lk, err := n.nl.LinkByIndex(r.LinkIndex); err == nil {
			name = lk.Attrs().Name
		}
		return nil, via, src, fmt.Errorf("netio: the route to %s leaves through %s, which golvs does not serve", dst, name)
	}
	via = dst
	if r.Gw != nil {
		via, _ = netip.AddrFromSlice(r.Gw.To4())
	}
	if r.Src != nil {
		src, _ = netip.AddrFromSlice(r.Src.To4())
	} else if len(l.Addrs) > 0 {
		src = l.Addrs[0].Addr()
	}
	return l, via, src, nil
}

// OnLink reports whether dst is on a directly connected network of an
// interface golvs serves.
func (n *Neigh) OnLink(dst netip.Addr) bool {
	for _, l := range n.links {
		for _, p := range l.Addrs {
			if p.Contains(dst) {
				return true
			}
		}
	}
	return false
}

// Resolve returns the next hop for dst. When the MAC is not known yet it
// sends an ARP request (at most once a second per address) and returns
// ErrPending; the reply arrives through Learn.
func (n *Neigh) Resolve(dst netip.Addr) (Hop, error) {
	l, via, src, err := n.Route(dst)
	if err != nil {
		return Hop{}, err
	}
	h := Hop{IfIndex: l.Index, SrcMAC: l.MAC, SrcIP: src, Via: via}
	n.mu.Lock()
	e, ok := n.cache[via]
	n.mu.Unlock()
	if ok && e.ifindex == l.Index {
		h.DstMAC = e.mac
		return h, nil
	}
	// The kernel may know it already.
	if neighs, err := n.nl.NeighList(l.Index, netlink.FAMILY_V4); err == nil {
		for _, ne := range neighs {
			if ne.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_PERMANENT|netlink.NUD_DELAY|netlink.NUD_PROBE) == 0 {
				continue
			}
			if a, ok := netip.AddrFromSlice(ne.IP.To4()); ok && a == via && len(ne.HardwareAddr) == 6 {
				copy(h.DstMAC[:], ne.HardwareAddr)
				n.Learn(a.As4(), h.DstMAC, l.Index)
				return h, nil
			}
		}
	}
	n.mu.Lock()
	last := n.asked[via]
	now := time.Now()
	send := now.Sub(last) > time.Second
	if send {
		n.asked[via] = now
	}
	n.mu.Unlock()
	if send {
		n.Ask(l, src, via)
	}
	return h, ErrPending
}

// Ask broadcasts an ARP request for ip from interface l.
func (n *Neigh) Ask(l *Link, src, ip netip.Addr) {
	var buf [VnetHdrLen + 60]byte
	frame := buf[VnetHdrLen:]
	bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	packet.BuildARP(frame, packet.ARPRequest, l.MAC, bcast, l.MAC, src.As4(), [6]byte{}, ip.As4())
	_ = l.Tx.Send(buf[:])
}
