package netio

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ipInReceives is the IPv4 stack's InReceives counter of the calling
// thread's namespace: every IPv4 packet the kernel took past ingress.
func ipInReceives() (uint64, error) {
	f, err := os.Open("/proc/thread-self/net/snmp")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var names []string
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 || fs[0] != "Ip:" {
			continue
		}
		if names == nil {
			names = fs
			continue
		}
		for i, n := range names {
			if n == "InReceives" && i < len(fs) {
				return strconv.ParseUint(fs[i], 10, 64)
			}
		}
	}
	return 0, errors.New("no Ip: InReceives in snmp")
}

// frameTo is a TCP (proto 6) or UDP frame from src:sport to dst:dport,
// to mac, virtio header first.
func frameTo(mac net.HardwareAddr, proto uint8, src, dst [4]byte, sport, dport uint16) []byte {
	b := make([]byte, VnetHdrLen+60)
	copy(b[VnetHdrLen:], ipFrame(proto, src, dst, sport, dport))
	copy(b[VnetHdrLen:], mac)
	return b
}

// TestDropRule installs the drop rule on b0 and sends frames from a0: the
// packet socket on b0 sees every frame, the kernel's IP stack only those
// golvs does not forward (other ports, other hosts, and frames to the
// host's own address even from a real server's service port). A stale
// table is replaced at open; Close leaves nothing.
func TestDropRule(t *testing.T) {
	ns := vethNS(t, 1500)
	local := [4]byte{198, 19, 0, 1}
	vip := [4]byte{198, 18, 0, 100}
	rip := [4]byte{198, 19, 0, 11}
	cip := [4]byte{198, 18, 0, 10}
	var ring *Ring
	var tx *Tx
	var rule *DropRule
	var bmac net.HardwareAddr
	err := ns.Do(func() error {
		l, err := netlink.LinkByName("b0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(local[:]), Mask: net.CIDRMask(16, 32)}}); err != nil {
			return err
		}
		bmac = l.Attrs().HardwareAddr
		// A stale table, as a killed golvs would leave: it drops all.
		c, err := nftables.New()
		if err != nil {
			return err
		}
		st := c.AddTable(&nftables.Table{Name: DropTableName("b0"), Family: nftables.TableFamilyNetdev})
		ch := c.AddChain(&nftables.Chain{Name: "ingress", Table: st, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookIngress, Priority: nftables.ChainPriorityFilter, Device: "b0"})
		c.AddRule(&nftables.Rule{Table: st, Chain: ch, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}})
		if err := c.Flush(); err != nil {
			return err
		}
		if ring, err = OpenRing("b0", RingConfig{Filter: ipv4Only()}); err != nil {
			return err
		}
		if tx, err = OpenTx("a0"); err != nil {
			return err
		}
		rule, err = OpenDropRule([]string{"b0"})
		return err
	})
	if errors.Is(err, ErrNoNftables) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	defer tx.Close()
	defer rule.Close()
	if len(rule.Stale) != 1 || rule.Stale[0] != "golvs-b0" {
		t.Fatalf("stale tables removed: %v, want [golvs-b0]", rule.Stale)
	}
	err = rule.Set(
		[]Match{{Proto: 6, Addr: vip, Port: 80}, {Proto: 17, Addr: [4]byte{198, 18, 1, 0}, Bits: 24}, {Proto: 6, Addr: [4]byte{198, 18, 0, 101}}},
		[]Match{{Proto: 6, Addr: rip, Port: 8080}, {Addr: [4]byte{198, 19, 0, 12}, Port: 53}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		frame []byte
		drop  bool
	}{
		{"to VIP:80", frameTo(bmac, 6, cip, vip, 40000, 80), true},
		{"to VIP:81", frameTo(bmac, 6, cip, vip, 40000, 81), false},
		{"udp to VIP:80", frameTo(bmac, 17, cip, vip, 40000, 80), false},
		{"to a port-zero VIP", frameTo(bmac, 6, cip, [4]byte{198, 18, 0, 101}, 1, 4444), true},
		{"udp into the /24", frameTo(bmac, 17, cip, [4]byte{198, 18, 1, 77}, 1, 53), true},
		{"udp next to the /24", frameTo(bmac, 17, cip, [4]byte{198, 18, 2, 77}, 1, 53), false},
		{"reply from RIP:8080", frameTo(bmac, 6, rip, cip, 8080, 40000), true},
		{"from RIP:8080 to this host", frameTo(bmac, 6, rip, local, 8080, 40000), false},
		{"from RIP:22", frameTo(bmac, 6, rip, cip, 22, 40000), false},
		{"udp from a mark dest :53", frameTo(bmac, 17, [4]byte{198, 19, 0, 12}, cip, 53, 1), true},
		{"tcp from a mark dest :53", frameTo(bmac, 6, [4]byte{198, 19, 0, 12}, cip, 53, 1), true},
		{"icmp from RIP", frameTo(bmac, 1, rip, cip, 8080, 40000), false},
	}
	const n = 20
	for _, c := range cases {
		var before, after uint64
		err := ns.Do(func() (err error) {
			before, err = ipInReceives()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			tx.Queue(c.frame)
		}
		tx.Flush()
		if got := drain(t, ring, n, func(*Frame) {}); got != n {
			t.Fatalf("%s: the packet socket saw %d of %d frames", c.name, got, n)
		}
		err = ns.Do(func() (err error) {
			after, err = ipInReceives()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		kernel := after - before
		if c.drop && kernel != 0 || !c.drop && kernel < n {
			t.Errorf("%s: the kernel's IP stack took %d of %d frames, want drop=%v", c.name, kernel, n, c.drop)
		}
	}
	if err := rule.Close(); err != nil {
		t.Fatal(err)
	}
	err = ns.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		ts, err := c.ListTablesOfFamily(nftables.TableFamilyNetdev)
		if err != nil {
			return err
		}
		for _, tb := range ts {
			if strings.HasPrefix(tb.Name, DropTablePrefix) {
				return errors.New("table " + tb.Name + " left after Close")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// ip6InReceives is the IPv6 stack's InReceives of the calling thread's
// namespace.
func ip6InReceives() (uint64, error) {
	b, err := os.ReadFile("/proc/thread-self/net/snmp6")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Ip6InReceives" {
			return strconv.ParseUint(f[1], 10, 64)
		}
	}
	return 0, errors.New("no Ip6InReceives in snmp6")
}

func frame6To(mac net.HardwareAddr, proto uint8, src, dst [16]byte, sport, dport uint16, ext bool) []byte {
	f := ip6Frame(proto, src, dst, sport, dport)
	if ext { // an 8-byte destination-options header in front of the L4 header
		g := make([]byte, len(f)+8)
		copy(g, f[:14+40])
		g[14+6] = 60
		g[14+40] = proto
		g[14+42], g[14+43] = 1, 4 // PadN of 6
		copy(g[14+48:], f[14+40:])
		binary.BigEndian.PutUint16(g[14+4:], uint16(len(g)-14-40))
		f = g
	}
	l4 := f[len(f)-20:]
	if proto == 6 {
		l4[12] = 5 << 4
	} else {
		binary.BigEndian.PutUint16(l4[4:], 20)
	}
	b := make([]byte, VnetHdrLen+len(f))
	copy(b[VnetHdrLen:], f)
	copy(b[VnetHdrLen:], mac)
	return b
}

// TestDropRule6 is TestDropRule for IPv6: the kernel's IPv6 stack takes
// only what golvs does not forward, the transport header found past an
// extension header too.
func TestDropRule6(t *testing.T) {
	ns := vethNS(t, 1500)
	a6 := func(net byte, host byte) [16]byte { return [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, net, 15: host} }
	local, vip, rip, cip := a6(0x19, 1), a6(0x18, 0x64), a6(0x19, 0x11), a6(0x18, 0x10)
	var ring *Ring
	var tx *Tx
	var rule *DropRule
	var bmac net.HardwareAddr
	err := ns.Do(func() error {
		l, err := netlink.LinkByName("b0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(local[:]), Mask: net.CIDRMask(48, 128)}, Flags: unix.IFA_F_NODAD}); err != nil {
			return err
		}
		bmac = l.Attrs().HardwareAddr
		if ring, err = OpenRing("b0", RingConfig{Filter: tcpUDPOnly()}); err != nil {
			return err
		}
		if tx, err = OpenTx("a0"); err != nil {
			return err
		}
		rule, err = OpenDropRule([]string{"b0"})
		return err
	})
	if errors.Is(err, ErrNoNftables) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	defer tx.Close()
	defer rule.Close()
	time.Sleep(200 * time.Millisecond) // chatter from before the sysctl
	err = rule.Set(
		[]Match{{V6: true, Proto: 6, Addr6: vip, Port: 80}, {V6: true, Proto: 17, Addr6: a6(0x1a, 0), Bits: 120}, {V6: true, Proto: 6, Addr6: a6(0x18, 0x65)}},
		[]Match{{V6: true, Proto: 6, Addr6: rip, Port: 8080}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		frame []byte
		drop  bool
	}{
		{"to VIP:80", frame6To(bmac, 6, cip, vip, 40000, 80, false), true},
		{"to VIP:80 past destination options", frame6To(bmac, 6, cip, vip, 40000, 80, true), true},
		{"to VIP:81", frame6To(bmac, 6, cip, vip, 40000, 81, false), false},
		{"udp to VIP:80", frame6To(bmac, 17, cip, vip, 40000, 80, false), false},
		{"to a port-zero VIP", frame6To(bmac, 6, cip, a6(0x18, 0x65), 1, 4444, false), true},
		{"udp into the /120", frame6To(bmac, 17, cip, a6(0x1a, 0x77), 1, 53, false), true},
		{"udp next to the /120", frame6To(bmac, 17, cip, a6(0x1b, 0x77), 1, 53, false), false},
		{"reply from RIP:8080", frame6To(bmac, 6, rip, cip, 8080, 40000, false), true},
		{"from RIP:8080 to this host", frame6To(bmac, 6, rip, local, 8080, 40000, false), false},
		{"from RIP:22", frame6To(bmac, 6, rip, cip, 22, 40000, false), false},
	}
	const n = 20
	for _, c := range cases {
		var before, after uint64
		if err := ns.Do(func() (err error) { before, err = ip6InReceives(); return err }); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			tx.Queue(c.frame)
		}
		tx.Flush()
		if got := drain(t, ring, n, func(*Frame) {}); got != n {
			t.Fatalf("%s: the packet socket saw %d of %d frames", c.name, got, n)
		}
		if err := ns.Do(func() (err error) { after, err = ip6InReceives(); return err }); err != nil {
			t.Fatal(err)
		}
		kernel := after - before
		if c.drop && kernel != 0 || !c.drop && kernel < n {
			t.Errorf("%s: the kernel's IPv6 stack took %d of %d frames, want drop=%v", c.name, kernel, n, c.drop)
		}
	}
}

// dropElems lists, in the calling thread's namespace, the VIP:port keys in
// b0's drop table (its dst3 set), as "a.b.c.d:port"; nil without the
// table.
func dropElems(t *testing.T) []string {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tab := &nftables.Table{Name: DropTableName("b0"), Family: nftables.TableFamilyNetdev}
	set, err := c.GetSetByName(tab, "dst3")
	if err != nil {
		return nil // no table (or no set)
	}
	els, err := c.GetSetElements(set)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, e := range els {
		k := e.Key // address, protocol and port, each padded to 4 bytes
		out = append(out, net.IP(k[:4]).String()+":"+strconv.Itoa(int(binary.BigEndian.Uint16(k[8:10]))))
	}
	return out
}

// A graceful restart's drop rule: the successor's (AdoptDropRule) leaves
// the running golvs's table alone, Set included, until Take replaces it;
// closed before Take (a failed takeover) it leaves it too; the
// predecessor lets go of its own without removing it (Forget).
func TestDropRuleAdopt(t *testing.T) {
	ns := vethNS(t, 1500)
	a := []Match{{Proto: 6, Addr: [4]byte{198, 18, 0, 100}, Port: 80}}
	b := []Match{{Proto: 6, Addr: [4]byte{198, 18, 0, 101}, Port: 443}}
	err := ns.Do(func() error {
		old, err := OpenDropRule([]string{"b0"})
		if err != nil {
			return err
		}
		defer old.Close()
		if err := old.Set(a, nil); err != nil {
			return err
		}
		want := func(step string, w ...string) {
			t.Helper()
			if got := dropElems(t); strings.Join(got, " ") != strings.Join(w, " ") || (got == nil) != (w == nil) {
				t.Fatalf("%s: the table drops %v, want %v", step, got, w)
			}
		}
		want("the running golvs's rule", "198.18.0.100:80")

		failed, err := AdoptDropRule([]string{"b0"})
		if err != nil {
			return err
		}
		if !failed.Pending() || strings.Join(failed.Tables(), ",") != "golvs-b0" {
			t.Fatalf("adopted: pending %v, tables %v", failed.Pending(), failed.Tables())
		}
		if err := failed.Set(b, nil); err != nil {
			return err
		}
		want("a successor's Set before Take", "198.18.0.100:80")
		if err := failed.Close(); err != nil {
			return err
		}
		want("a successor closed before Take", "198.18.0.100:80")

		next, err := AdoptDropRule([]string{"b0"})
		if err != nil {
			return err
		}
		if err := next.Set(b, nil); err != nil {
			return err
		}
		old.Forget()
		want("the predecessor let go", "198.18.0.100:80")
		if err := next.Take(); err != nil {
			return err
		}
		if next.Pending() || strings.Join(next.Stale, ",") != "golvs-b0" {
			t.Fatalf("taken: pending %v, replaced %v", next.Pending(), next.Stale)
		}
		want("taken", "198.18.0.101:443")
		if err := next.Take(); err != nil { // a second Take changes nothing
			return err
		}
		if err := next.Set(a, b); err != nil {
			return err
		}
		want("Set after Take", "198.18.0.100:80")
		if err := next.Close(); err != nil {
			return err
		}
		want("closed")
		return nil
	})
	if errors.Is(err, ErrNoNftables) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
}
