package ipvssync

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
)

// recInstaller records what a backup installs.
type recInstaller struct {
	mu      sync.Mutex
	conns   []Conn
	standby bool
}

func (r *recInstaller) Install(c *Conn, _ uint32) Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conns = append(r.conns, *c)
	return Installed
}

func (r *recInstaller) SetBackupOnly(on bool) {
	r.mu.Lock()
	r.standby = on
	r.mu.Unlock()
}

func (r *recInstaller) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// udpNS is a namespace holding a veth pair v0/v1 (one segment): a master
// on v0 and a backup on v1 talk over real UDP sockets.
func udpNS(t *testing.T) *lab.NS {
	t.Helper()
	if err := lab.RequireRoot(); err != nil {
		t.Skip(err)
	}
	ns, err := lab.NewNS("ipvssync" + lab.RandomSuffix())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Delete)
	err = ns.Do(func() error {
		for _, p := range []string{"/proc/sys/net/ipv6/conf/all/accept_dad", "/proc/sys/net/ipv6/conf/default/accept_dad"} {
			if err := os.WriteFile(p, []byte("0"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "v0", MTU: 1500}, PeerName: "v1"}); err != nil {
			return err
		}
		for i, name := range []string{"v0", "v1"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 18, 5, byte(1+i)), Mask: net.CIDRMask(24, 32)}}
			if err := netlink.AddrAdd(l, a); err != nil {
				return err
			}
			a6 := &netlink.Addr{IPNet: &net.IPNet{IP: netip.MustParseAddr("2001:db8:5::" + string(rune('1'+i))).AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: 0x80 /* nodad */}
			if err := netlink.AddrAdd(l, a6); err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		// Both ends are this namespace's: let v1 take IPv4 frames whose
		// source is a local address (v0's).
		for _, p := range []string{"/proc/sys/net/ipv4/conf/v1/accept_local", "/proc/sys/net/ipv4/conf/all/rp_filter", "/proc/sys/net/ipv4/conf/v1/rp_filter"} {
			v := "0"
			if p == "/proc/sys/net/ipv4/conf/v1/accept_local" {
				v = "1"
			}
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				return err
			}
		}
		// A link sends nothing until the kernel has made it operational
		// (linkwatch, up to a second after it is set up): wait for that,
		// or the first messages vanish before the test begins.
		deadline := time.Now().Add(10 * time.Second)
		for _, name := range []string{"v0", "v1"} {
			for {
				l, err := netlink.LinkByName(name)
				if err != nil {
					return err
				}
				if l.Attrs().OperState == netlink.OperUp {
					break
				}
				if time.Now().After(deadline) {
					return errors.New(name + " never came up")
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// Real sockets: a master on one end of a link, a backup on the other,
// for the default IPv4 group, an IPv6 group, golvs's unicast peer mode,
// and two threads (sync_ports 2: ports 8848 and 8849).
func TestUDPTransport(t *testing.T) {
	ns := udpNS(t)
	do := func(fn func() error) error { return ns.Do(fn) }
	cases := []struct {
		name   string
		group  netip.Addr
		mpeer  netip.Addr // the master sends to
		bpeer  netip.Addr // the backup accepts from
		ports  int
		wantIP string
	}{
		{name: "ipv4 group", ports: 1},
		{name: "two threads", ports: 2},
		{name: "ipv6 group", group: netip.MustParseAddr("ff12::8848"), ports: 1},
		{name: "unicast peer", mpeer: netip.MustParseAddr("198.18.5.2"), bpeer: netip.MustParseAddr("198.18.5.1"), ports: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sys := DefaultSysctls()
			sys.Ports = tc.ports
			ct := conntrack.New(conntrack.Config{Shards: 4})
			ins := &recInstaller{}
			m, err := New(Options{Table: ct, Installer: &recInstaller{}, Sysctls: sys, Do: do})
			if err != nil {
				t.Fatal(err)
			}
			b, err := New(Options{Table: conntrack.New(conntrack.Config{Shards: 4}), Installer: ins, Sysctls: sys, Do: do})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			defer b.Close()
			if err := b.Start(Config{Role: Backup, Ifname: "v1", SyncID: 4, Group: tc.group, Peer: tc.bpeer}); err != nil {
				t.Fatal(err)
			}
			if err := m.Start(Config{Role: Master, Ifname: "v0", SyncID: 4, Group: tc.group, Peer: tc.mpeer}); err != nil {
				t.Fatal(err)
			}
			if !ins.standby {
				t.Error("backup_only: the backup's director is not standing by")
			}
			svc := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: a4("198.18.0.100"), Port: 80}
			dest := ipvs.NewDest(svc, ipvs.DestConfig{Addr: a4("198.19.0.11"), Port: 80, Method: ipvs.MethodRoute, Weight: 1})
			const n = 100
			for i := 0; i < n; i++ {
				k := conntrack.Key{SrcIP: [4]byte{198, 18, 0, 10}, DstIP: [4]byte{198, 18, 0, 100}, SrcPort: uint16(2000 + i), DstPort: 80, Proto: 6}
				if _, err := ct.Create(&conntrack.NewConn{In: k, Dest: dest, Method: ipvs.MethodRoute, NoOutput: true}, fSYN, nil); err != nil {
					t.Fatal(err)
				}
				var h conntrack.Hit
				ct.LookupIn(&k, fACK, &h)
				ct.LookupIn(&k, fACK, &h)
			}
			deadline := time.Now().Add(15 * time.Second)
			for ins.count() != n && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if ins.count() != n {
				t.Fatalf("backup installed %d of %d; master %v; backup %v", ins.count(), n, m.Counters(), b.Counters())
			}
			// The master counts a message once its write returned: the
			// backup may have installed it before that (under the race
			// detector on a busy machine it did).
			v, _ := m.Counter("msgs-sent")
			for ; v < 3 && time.Now().Before(deadline); v, _ = m.Counter("msgs-sent") {
				time.Sleep(10 * time.Millisecond)
			}
			if v < 3 {
				t.Errorf("%d messages for %d records", v, n)
			}
			if v, _ := b.Counter("messages-decoded"); v == 0 {
				t.Error("no message decoded")
			}
		})
	}
	// The kernel's refusals, in ipvsadm's words.
	d, _ := New(Options{Table: conntrack.New(conntrack.Config{Shards: 4}), Installer: &recInstaller{}, Sysctls: DefaultSysctls(), Do: do})
	defer d.Close()
	if err := d.Start(Config{Role: Master, Ifname: "nosuch0"}); !errors.Is(err, ErrNoDevice) {
		t.Errorf("unknown interface: %v", err)
	}
	if err := d.Start(Config{Role: Backup, Ifname: "v1", Group: a4("198.18.5.9")}); !errors.Is(err, ErrInvalid) {
		t.Errorf("unicast group: %v", err)
	}
	if err := d.Stop(Backup); !errors.Is(err, ErrNotRun) {
		t.Errorf("stop of nothing: %v", err)
	}
	if err := d.Start(Config{Role: Backup, Ifname: "v1", MaxLen: 10}); err != nil {
		t.Fatal(err)
	}
	if st := d.Status(); len(st) != 1 || st[0].MaxLen != 1024 || st[0].Port != DefaultPort || st[0].TTL != 1 || st[0].Group != DefaultGroup {
		t.Errorf("backup with --sync-maxlen 10: %+v (the kernel clamps a backup's to 1024)", st)
	}
	if err := d.Start(Config{Role: Backup, Ifname: "v1"}); !errors.Is(err, ErrRunning) {
		t.Errorf("second backup: %v", err)
	}
}
