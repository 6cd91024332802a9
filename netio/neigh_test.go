package netio

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/golvs/golvs/lab"
)

// neighLab is a namespace holding a0 (the interface a Neigh serves,
// 198.18.5.1/24) whose veth peer b0 (198.18.5.2/24, a host that answers
// ARP) sits in a second namespace.
type neighLab struct {
	a, b   *lab.NS
	ha, hb *netlink.Handle
	a0, b0 netlink.Link
	n      *Neigh
	mtus   sync.Map // ifindex -> last MTU reported
}

var (
	neighA = netip.MustParseAddr("198.18.5.1")
	neighB = netip.MustParseAddr("198.18.5.2")
)

func newNeighLab(t *testing.T, c NeighConfig) *neighLab {
	t.Helper()
	if err := lab.RequireRoot(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	sfx := lab.RandomSuffix()
	nl := &neighLab{}
	var err error
	if nl.a, err = lab.NewNS("neigha" + sfx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nl.a.Delete)
	if nl.b, err = lab.NewNS("neighb" + sfx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nl.b.Delete)
	if nl.ha, err = netlink.NewHandleAt(nl.a.Handle); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nl.ha.Close)
	if nl.hb, err = netlink.NewHandleAt(nl.b.Handle); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nl.hb.Close)
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "a0"}, PeerName: "b0", PeerNamespace: netlink.NsFd(int(nl.b.Handle))}
	if err := nl.ha.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		h    *netlink.Handle
		name string
		addr string
		out  *netlink.Link
	}{{nl.ha, "a0", "198.18.5.1/24", &nl.a0}, {nl.hb, "b0", "198.18.5.2/24", &nl.b0}} {
		l, err := x.h.LinkByName(x.name)
		if err != nil {
			t.Fatal(err)
		}
		ad, _ := netlink.ParseAddr(x.addr)
		if err := x.h.AddrAdd(l, ad); err != nil {
			t.Fatal(err)
		}
		if err := x.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		*x.out = l
	}
	c.OnLink = func(ifindex, mtu int) { nl.mtus.Store(ifindex, mtu) }
	err = nl.a.Do(func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		t.Cleanup(h.Close)
		nl.n, err = NewNeigh(h, []string{"a0"}, c)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nl.n.Close)
	return nl
}

func (nl *neighLab) key(a netip.Addr) NeighKey {
	return NeighKey{IfIndex: nl.a0.Attrs().Index, Addr: a}
}

// setKernel sets a permanent kernel entry for a on a0 (mac nil: delete
// it).
func (nl *neighLab) setKernel(t *testing.T, a netip.Addr, mac net.HardwareAddr) {
	t.Helper()
	nl.setKernelState(t, a, mac, netlink.NUD_PERMANENT)
}

func (nl *neighLab) setKernelState(t *testing.T, a netip.Addr, mac net.HardwareAddr, state int) {
	t.Helper()
	ne := &netlink.Neigh{LinkIndex: nl.a0.Attrs().Index, Family: netlink.FAMILY_V4, IP: net.IP(a.AsSlice()), State: state, HardwareAddr: mac}
	var err error
	if mac == nil {
		err = nl.ha.NeighDel(ne)
	} else {
		err = nl.ha.NeighSet(ne)
	}
	if err != nil {
		t.Fatalf("kernel neighbour %s -> %v: %v", a, mac, err)
	}
}

// kernel returns the kernel's entry for a on a0.
func (nl *neighLab) kernel(t *testing.T, a netip.Addr) NeighEntry {
	t.Helper()
	list, err := nl.ha.NeighList(nl.a0.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for i := range list {
		if x, ok := netip.AddrFromSlice(list[i].IP.To4()); ok && x == a {
			return entryOf(&list[i])
		}
	}
	return NeighEntry{}
}

// waitEntry waits until the Neigh's entry for a satisfies ok.
func (nl *neighLab) waitEntry(t *testing.T, a netip.Addr, what string, ok func(NeighEntry) bool) NeighEntry {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ch := nl.n.Changes()
		e, tracked := nl.n.Entry(nl.key(a))
		if tracked && ok(e) {
			return e
		}
		select {
		case <-ch:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%s: the entry for %s is %+v (tracked %v), kernel has %+v", what, a, e, tracked, nl.kernel(t, a))
		}
	}
}

func macOf(s string) [6]byte {
	m, _ := net.ParseMAC(s)
	var b [6]byte
	copy(b[:], m)
	return b
}

// TestNeighMirrorsKernel: the entries of followed next hops track the
// kernel's table through its notifications (a new MAC, a deletion),
// entries of other addresses are not kept, and a link's MTU change is
// reported.
func TestNeighMirrorsKernel(t *testing.T) {
	nl := newNeighLab(t, NeighConfig{})
	x := netip.MustParseAddr("198.18.5.50")
	other := netip.MustParseAddr("198.18.5.51")
	nl.setKernel(t, x, net.HardwareAddr{2, 0, 0, 0, 0, 1}) // known before it is followed
	nl.n.Follow([]NeighKey{nl.key(x)})
	nl.waitEntry(t, x, "existing entry", func(e NeighEntry) bool { return e.Usable() && e.MAC == macOf("02:00:00:00:00:01") })
	nl.setKernel(t, x, net.HardwareAddr{2, 0, 0, 0, 0, 2})
	nl.waitEntry(t, x, "new MAC", func(e NeighEntry) bool {
		return e.MAC == macOf("02:00:00:00:00:02") && e.State == netlink.NUD_PERMANENT
	})
	nl.setKernel(t, other, net.HardwareAddr{2, 0, 0, 0, 0, 3})
	nl.setKernel(t, x, nil)
	nl.waitEntry(t, x, "deleted", func(e NeighEntry) bool { return !e.Usable() && !e.Failed() })
	if _, ok := nl.n.Entry(nl.key(other)); ok {
		t.Fatalf("%s is not followed, yet has an entry", other)
	}
	if st := nl.n.Stats(); st.Tracked != 1 {
		t.Fatalf("%d entries followed, want 1", st.Tracked)
	}
	// The link's MTU.
	idx := nl.a0.Attrs().Index
	if v, _ := nl.mtus.Load(idx); v != 1500 {
		t.Fatalf("MTU reported at start: %v, want 1500", v)
	}
	if err := nl.ha.LinkSetMTU(nl.a0, 1234); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for v, _ := nl.mtus.Load(idx); v != 1234; v, _ = nl.mtus.Load(idx) {
		if time.Now().After(deadline) {
			t.Fatalf("MTU change not reported: %v", v)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNeighAsksKernel: a next hop the kernel does not know is resolved by
// the kernel when golvs asks it (NTF_USE), to the peer's MAC; a permanent
// entry is used as it is and never touched; a next hop that does not
// answer ends FAILED.
func TestNeighAsksKernel(t *testing.T) {
	nl := newNeighLab(t, NeighConfig{AskEvery: 100 * time.Millisecond})
	for _, kv := range [][2]string{{"retrans_time_ms", "100"}, {"mcast_solicit", "2"}} {
		if _, err := lab.WriteSysctl(nl.a, "net/ipv4/neigh/a0/"+kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	perm := netip.MustParseAddr("198.18.5.60")
	dead := netip.MustParseAddr("198.18.5.61")
	nl.setKernel(t, perm, net.HardwareAddr{2, 0, 0, 0, 0, 6})
	nl.n.Follow([]NeighKey{nl.key(neighB), nl.key(perm), nl.key(dead)})
	var bmac [6]byte
	copy(bmac[:], nl.b0.Attrs().HardwareAddr)
	h, err := nl.n.Hop(nl.n.Link(nl.a0.Attrs().Index), neighB, neighA)
	if err != ErrPending {
		t.Fatalf("first Hop: %+v %v, want ErrPending (the kernel had no entry)", h, err)
	}
	nl.waitEntry(t, neighB, "asked", func(e NeighEntry) bool { return e.Usable() && e.MAC == bmac })
	h, err = nl.n.Hop(nl.n.Link(nl.a0.Attrs().Index), neighB, neighA)
	if err != nil || h.DstMAC != bmac || h.Via != neighB || h.SrcIP != neighA {
		t.Fatalf("Hop: %+v %v", h, err)
	}
	if h, err := nl.n.Hop(nl.n.Link(nl.a0.Attrs().Index), perm, neighA); err != nil || h.DstMAC != macOf("02:00:00:00:00:06") {
		t.Fatalf("permanent entry: %+v %v", h, err)
	}
	// A permanent entry is never asked about: NTF_USE would turn it into
	// an ordinary one, which the kernel then resolves afresh (and the
	// benchmarks' static entries would be lost).
	asks := nl.n.Stats().Asks
	for i := 0; i < 3; i++ {
		nl.n.Entry(nl.key(perm))
		time.Sleep(150 * time.Millisecond)
	}
	if got := nl.n.Stats().Asks; got != asks {
		t.Fatalf("%d asks about a permanent entry", got-asks)
	}
	if e := nl.kernel(t, perm); e.State != netlink.NUD_PERMANENT || e.MAC != macOf("02:00:00:00:00:06") {
		t.Fatalf("a permanent entry changed: %+v", e)
	}
	nl.waitEntry(t, dead, "no answer", func(e NeighEntry) bool { return e.Failed() })
	if _, err := nl.n.Hop(nl.n.Link(nl.a0.Attrs().Index), dead, neighA); err == nil || !isErr(err, ErrNeighFailed) {
		t.Fatalf("dead next hop: %v, want ErrNeighFailed", err)
	}
}

func isErr(err, target error) bool {
	for e := err; e != nil; {
		if e == target {
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		e = u.Unwrap()
	}
	return false
}

// TestNeighBound: no more than MaxTracked next hops are followed; the
// rest are refused and counted.
func TestNeighBound(t *testing.T) {
	nl := newNeighLab(t, NeighConfig{MaxTracked: 8})
	var keys []NeighKey
	for i := 0; i < 20; i++ {
		keys = append(keys, nl.key(netip.AddrFrom4([4]byte{198, 18, 5, byte(100 + i)})))
	}
	nl.n.Follow(keys)
	if st := nl.n.Stats(); st.Tracked != 8 || st.Untracked != 12 {
		t.Fatalf("followed %d, refused %d; want 8 and 12", st.Tracked, st.Untracked)
	}
	if nl.n.Pin(nl.key(netip.MustParseAddr("198.18.5.200")), time.Minute) {
		t.Fatal("Pin beyond the bound succeeded")
	}
	nl.n.Follow(keys[:3])
	if st := nl.n.Stats(); st.Tracked != 3 || st.Untracked != 0 {
		t.Fatalf("after shrinking: followed %d, refused %d; want 3 and 0", st.Tracked, st.Untracked)
	}
	if !nl.n.Pin(nl.key(netip.MustParseAddr("198.18.5.200")), time.Minute) {
		t.Fatal("Pin refused with room left")
	}
	nl.n.Follow(keys[:3]) // a pinned next hop outlives Follow
	if _, ok := nl.n.Entry(nl.key(netip.MustParseAddr("198.18.5.200"))); !ok {
		t.Fatal("the pinned next hop was forgotten")
	}
}

// TestNeighConcurrent: Follow, Pin, Entry and Stats from several
// goroutines while the kernel's table changes under them. The bound holds
// throughout, and once things settle the mirror equals the kernel's table
// for every followed next hop.
func TestNeighConcurrent(t *testing.T) {
	const max = 24
	nl := newNeighLab(t, NeighConfig{MaxTracked: max, AskEvery: 50 * time.Millisecond})
	var addrs []netip.Addr
	for i := 0; i < 48; i++ {
		addrs = append(addrs, netip.AddrFrom4([4]byte{198, 18, 5, byte(100 + i)}))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var over atomic.Int64
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for {
				select {
				case <-stop:
					return
				default:
				}
				switch r.IntN(4) {
				case 0:
					var ks []NeighKey
					for _, a := range addrs[r.IntN(16):][:r.IntN(32)] {
						ks = append(ks, nl.key(a))
					}
					nl.n.Follow(ks)
				case 1:
					nl.n.Pin(nl.key(addrs[r.IntN(len(addrs))]), time.Millisecond*time.Duration(r.IntN(50)))
				case 2:
					nl.n.Entry(nl.key(addrs[r.IntN(len(addrs))]))
				case 3:
					if st := nl.n.Stats(); st.Tracked > max {
						over.Add(1)
					}
				}
			}
		}(g)
	}
	r := rand.New(rand.NewPCG(1, 2))
	end := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(end) {
		a := addrs[r.IntN(len(addrs))]
		if r.IntN(4) == 0 {
			_ = nl.ha.NeighDel(&netlink.Neigh{LinkIndex: nl.a0.Attrs().Index, Family: netlink.FAMILY_V4, IP: net.IP(a.AsSlice())})
		} else {
			// Ordinary (stale) entries: golvs may ask about them.
			nl.setKernelState(t, a, net.HardwareAddr{2, 0, 0, 0, byte(r.IntN(256)), byte(r.IntN(256))}, netlink.NUD_STALE)
		}
	}
	close(stop)
	wg.Wait()
	if over.Load() > 0 {
		t.Fatalf("the bound of %d was exceeded %d times", max, over.Load())
	}
	// Settle: follow a fixed set; notifications (and the re-read of new
	// entries) must bring every one to the kernel's state.
	var ks []NeighKey
	for _, a := range addrs[:max] {
		ks = append(ks, nl.key(a))
	}
	time.Sleep(60 * time.Millisecond) // let the last pins lapse
	nl.n.Follow(ks)
	nl.n.Resync()
	deadline := time.Now().Add(10 * time.Second)
	for {
		bad := ""
		for _, a := range addrs[:max] {
			// The kernel does not announce every state (INCOMPLETE,
			// DELAY): compare what golvs acts on.
			got, ok := nl.n.Entry(nl.key(a))
			want := nl.kernel(t, a)
			if !ok || got.Usable() != want.Usable() || want.Usable() && got.MAC != want.MAC {
				bad = fmt.Sprintf("%s: mirror %+v (followed %v), kernel %+v", a, got, ok, want)
				break
			}
		}
		if bad == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(bad)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := nl.n.Stats(); st.Tracked != max {
		t.Fatalf("followed %d after settling, want %d", st.Tracked, max)
	}
}

// TestNeighReplaced: removing the served interface and making another
// under its name is reported once the new one is up (not while it is
// down), with both indices; a new interface under another name is not;
// and an overrun's re-read finds a replacement whose notifications were
// lost.
func TestNeighReplaced(t *testing.T) {
	type rep struct {
		name        string
		served, now int
	}
	got := make(chan rep, 64)
	nl := newNeighLab(t, NeighConfig{OnReplaced: func(name string, served, now int) { got <- rep{name, served, now} }})
	served := nl.a0.Attrs().Index
	none := func(what string) {
		t.Helper()
		select {
		case r := <-got:
			t.Fatalf("%s: reported %+v", what, r)
		case <-time.After(300 * time.Millisecond):
		}
	}
	mk := func(name string) netlink.Link {
		t.Helper()
		if err := nl.ha.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
			t.Fatal(err)
		}
		l, err := nl.ha.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	// Another interface, up: nothing.
	other := mk("c0")
	if err := nl.ha.LinkSetUp(other); err != nil {
		t.Fatal(err)
	}
	none("another interface")
	// a0 removed and made again (a veth to nowhere), down: nothing yet.
	if err := nl.ha.LinkDel(nl.a0); err != nil {
		t.Fatal(err)
	}
	again := mk("a0")
	none("the new a0, still down")
	if err := nl.ha.LinkSetUp(again); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r != (rep{"a0", served, again.Attrs().Index}) || r.now == served {
			t.Fatalf("reported %+v, want a0 from index %d to %d", r, served, again.Attrs().Index)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the new a0 came up and nothing was reported")
	}
	// The re-read after an overrun looks at the names again.
	for len(got) > 0 {
		<-got
	}
	nl.n.checkNames()
	select {
	case r := <-got:
		if r.name != "a0" || r.now != again.Attrs().Index {
			t.Fatalf("the re-read reported %+v", r)
		}
	case <-time.After(time.Second):
		t.Fatal("the re-read did not report the new a0")
	}
}

// TestNeighMAC changes a served interface's MAC (as a bond with
// fail_over_mac=active does on a failover) and checks that the change is
// reported once, that next hops through it take the new MAC as their
// source, that a socket bound to it reads the new MAC, and that the
// re-read after an overrun finds a change whose notification was lost.
func TestNeighMAC(t *testing.T) {
	type rep struct {
		idx      int
		old, now [6]byte
	}
	got := make(chan rep, 64)
	nl := newNeighLab(t, NeighConfig{OnMAC: func(idx int, old, now [6]byte) { got <- rep{idx, old, now} }})
	idx := nl.a0.Attrs().Index
	start := [6]byte(nl.a0.Attrs().HardwareAddr)
	l := nl.n.Links()[idx]
	if nl.n.MAC(l) != start {
		t.Fatalf("MAC %x, want %x", nl.n.MAC(l), start)
	}
	var tx *Tx
	if err := nl.a.Do(func() (err error) { tx, err = OpenTx("a0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	set := func(mac [6]byte) {
		t.Helper()
		if err := nl.ha.LinkSetHardwareAddr(nl.a0, net.HardwareAddr(mac[:])); err != nil {
			t.Fatal(err)
		}
	}
	// Another link attribute changing (the MTU): no report.
	if err := nl.ha.LinkSetMTU(nl.a0, 1400); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		t.Fatalf("an MTU change reported %+v", r)
	case <-time.After(300 * time.Millisecond):
	}
	mac := [6]byte{0x02, 0x00, 0x5e, 0x10, 0x20, 0x30}
	set(mac)
	select {
	case r := <-got:
		if r != (rep{idx, start, mac}) {
			t.Fatalf("reported %+v, want %d from %x to %x", r, idx, start, mac)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the MAC changed and nothing was reported")
	}
	if got := nl.n.MAC(l); got != mac {
		t.Errorf("MAC %x after the change, want %x", got, mac)
	}
	if h, _ := nl.n.Hop(l, netip.MustParseAddr("198.18.5.2"), netip.MustParseAddr("198.18.5.1")); h.SrcMAC != mac {
		t.Errorf("a next hop's source MAC %x, want %x", h.SrcMAC, mac)
	}
	if m, err := tx.MAC(); err != nil || m != mac {
		t.Errorf("Tx.MAC: %x, %v; want %x", m, err, mac)
	}
	select {
	case r := <-got:
		t.Fatalf("reported twice: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}
	// A change whose notification was lost: the re-read after an
	// overrun finds it, and reports it once.
	back := [6]byte{0x02, 0x00, 0x5e, 0x10, 0x20, 0x31}
	nl.n.mu.Lock()
	nl.n.macs[idx] = back // as if golvs had seen back last
	nl.n.mu.Unlock()
	nl.n.checkNames()
	select {
	case r := <-got:
		if r != (rep{idx, back, mac}) {
			t.Fatalf("the re-read reported %+v, want %x to %x", r, back, mac)
		}
	case <-time.After(time.Second):
		t.Fatal("the re-read found nothing")
	}
	nl.n.checkNames()
	select {
	case r := <-got:
		t.Fatalf("a second re-read reported %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
}
