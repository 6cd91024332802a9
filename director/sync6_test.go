package director

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvssync"
	"github.com/golvs/golvs/netio"
)

// syncDirector6 is a director with IPv6 services and a sync transport:
// TCP [VIP6]:80 persistent by /64 on two NAT real servers, and UDP
// [VIP6]:53 in FULLNAT with the local address 2001:db8:19::200.
func syncDirector6(t *testing.T, mt *ipvssync.MemTransport) (*Director, *Worker, *fakeTx, *fakeTx) {
	t.Helper()
	d := newCore(Config{Workers: 1, Conntrack: conntrack.Config{Shards: 16}, SyncTransport: mt})
	if d.syncErr != nil {
		t.Fatal(d.syncErr)
	}
	t.Cleanup(d.Sync.Close)
	d.ifMAC[ifExt], d.ifMAC[ifInt] = extMAC, intMAC
	d.ifARP[ifExt] = true
	if err := d.SetLocalAddrs([]netip.Addr{netip.MustParseAddr("2001:db8:19::200")}, 0, 0); err != nil {
		t.Fatal(err)
	}
	tk := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip6, Port: 80}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: tk, Sched: "rr", Flags: ipvs.SvcPersistent, Timeout: 360, Netmask: 64}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"2001:db8:19::11", "2001:db8:19::12"} {
		if err := d.AddDest(tk, ipvs.DestConfig{Addr: netip.MustParseAddr(a), Port: 8080, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
			t.Fatal(err)
		}
	}
	uk := ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: vip6, Port: 53}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: uk, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddDest(uk, ipvs.DestConfig{Addr: netip.MustParseAddr("2001:db8:19::12"), Port: 53, Method: ipvs.MethodFullNAT, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	for _, sv := range d.Snapshot().List {
		for _, dd := range sv.Dests {
			dd.Next.Store(&ipvs.NextHop{IfIndex: ifInt, SrcMAC: intMAC, DstMAC: rsMAC, SrcIP: netip.MustParseAddr("2001:db8:19::1")})
		}
	}
	w := d.newWorker()
	ext, in := &fakeTx{keep: true}, &fakeTx{keep: true}
	w.setTx(ifExt, ext)
	w.setTx(ifInt, in)
	return d, w, ext, in
}

// A hand-built IPv6 message (ipvssync's goldenV6, typed again from the
// spec's layout: type 1, 16-byte addresses) is installed as the kernel's
// backup installs it: the NAT conn, its /64 template, and the FULLNAT
// conn with its local address and port taken from the pool.
func TestSyncInstallIPv6(t *testing.T) {
	d, _, _, _ := syncDirector6(t, nil)
	msg := hexMsg(t, `
	00 00 00f4 03 01 0000
	01 06 0048 | 00000000 | 0001 c350 0050 1f90 | 00000000 | 00000384
	20010db8001800000000000000000010 20010db8001800000000000000000100 20010db8001900000000000000000011
	01 06 0048 | 00001100 | 0001 0000 0050 1f90 | 00000000 | 00000168
	20010db8001800000000000000000000 20010db8001800000000000000000100 20010db8001900000000000000000011
	01 11 005c | 00000105 | 0000 cf08 0035 0035 | 00000000 | 0000012c
	20010db8001800000000000000000010 20010db8001800000000000000000100 20010db8001900000000000000000012
	60 12 20010db8001900000000000000000200 1389
	`)
	d.Sync.Process(msg, 0)
	want := []string{
		"conn TCP [2001:db8:18::10]:50000 [2001:db8:18::100]:80 [2001:db8:19::11]:8080 ESTABLISHED 900s synced=true",
		"conn UDP [2001:db8:18::10]:53000 [2001:db8:18::100]:53 [2001:db8:19::12]:53 UDP 300s synced=true",
		"tpl TCP [2001:db8:18::]:0 [2001:db8:18::100]:80 [2001:db8:19::11]:8080 ASSURED 360s synced=true",
	}
	if got := tableLines(d); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("table:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := syncCounter(t, d, "installed"); n != 3 {
		t.Fatalf("installed %d, want 3", n)
	}
	if st := d.LocalAddrs(); len(st) != 1 || st[0].Conns != 1 {
		t.Fatalf("pool use %+v, want port 5001 taken", st)
	}
	// The FULLNAT conn's reply key: from the real server to the local
	// address and port.
	var h conntrack.Hit
	out := conntrack.Pair6{Src: netip.MustParseAddr("2001:db8:19::12").As16(), Dst: netip.MustParseAddr("2001:db8:19::200").As16()}
	k := d.CT.Key6(&out, 53, 5001, 17, conntrack.KindConn)
	if !d.CT.Peek6(&k, &out, true, &h) || h.In.SrcPort != 53000 {
		t.Fatal("the FULLNAT conn is not found by its reply")
	}
	// The template sticks a new client of the /64 to .11.
	d.Sync.Process(msg, 0)
	if n := syncCounter(t, d, "updated"); n != 3 {
		t.Fatalf("updated %d, want 3", n)
	}
}

// Real IPv6 frames through a master director; its sync messages installed
// by a backup, whose table then holds the same conns and templates; after
// a takeover the backup carries the conns on: the client's frames go to
// the same real server without scheduling, replies go back to where the
// client's frames came from.
func TestSyncMasterToBackupIPv6(t *testing.T) {
	mt := &ipvssync.MemTransport{}
	m, mw, _, _ := syncDirector6(t, mt)
	b, bw, bExt, bInt := syncDirector6(t, mt)
	if err := b.Sync.Start(ipvssync.Config{Role: ipvssync.Backup, Ifname: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := m.Sync.Start(ipvssync.Config{Role: ipvssync.Master, Ifname: "x"}); err != nil {
		t.Fatal(err)
	}
	const n = 100
	for i := range n {
		c := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 7: byte(i % 4), 15: byte(10 + i)})
		cp := uint16(20000 + i)
		batch(mw, frame6(t, ifExt, cliMAC, extMAC, c, vip6, 6, cp, 80, 0x02, nil, false),
			frame6(t, ifExt, cliMAC, extMAC, c, vip6, 6, cp, 80, 0x10, nil, false),
			frame6(t, ifExt, cliMAC, extMAC, c, vip6, 6, cp, 80, 0x18, []byte("x"), false))
	}
	if m.CT.Len() != n+4 { // and one template per /64
		t.Fatalf("master table %d entries, want %d", m.CT.Len(), n+4)
	}
	deadline := time.Now().Add(20 * time.Second)
	for b.CT.Len() < n+4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	clean := func(ls []string) string {
		for i := range ls {
			ls[i] = strings.NewReplacer("synced=false", "", "synced=true", "").Replace(ls[i])
			// The master's templates were re-armed by their conns;
			// the backup's by the messages: timeouts agree, states too.
		}
		return strings.Join(ls, "\n")
	}
	if mt, bt := clean(tableLines(m)), clean(tableLines(b)); mt != bt {
		t.Fatalf("backup table\n%s\nmaster's\n%s", bt, mt)
	}
	// Takeover.
	m.Sync.Close()
	if err := b.Sync.SetRole(ipvssync.Master, ipvssync.Config{Ifname: "x"}); err != nil {
		t.Fatal(err)
	}
	c := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 7: 1, 15: 11})
	in := conntrack.Pair6{Src: c.As16(), Dst: vip6.As16()}
	k := b.CT.Key6(&in, 20001, 80, 6, conntrack.KindConn)
	var h conntrack.Hit
	if !b.CT.Peek6(&k, &in, false, &h) {
		t.Fatal("conn 20001 not synced")
	}
	rs := h.Dest.Addr
	batch(bw, frame6(t, ifInt, rsMAC, intMAC, rs, c, 6, 8080, 20001, 0x18, []byte("y"), false))
	if bExt.n != 0 || b.Drops[CntClientUnknown].Load() != 1 {
		t.Fatalf("reply of an unlearnt client: %d sent, %d counted", bExt.n, b.Drops[CntClientUnknown].Load())
	}
	created := b.CT.Stats().Created
	batch(bw, frame6(t, ifExt, cliMAC, extMAC, c, vip6, 6, 20001, 80, 0x18, []byte("x"), false))
	if b.CT.Stats().Created != created || bInt.n != 1 {
		t.Fatalf("client frame of a synced conn: %d created, %d forwarded", b.CT.Stats().Created-created, bInt.n)
	}
	if got := decodeOut(t, bInt.frames[0]).NetworkLayer().NetworkFlow().Dst().String(); got != rs.String() {
		t.Fatalf("forwarded to %s, the synced conn is bound to %s", got, rs)
	}
	batch(bw, frame6(t, ifInt, rsMAC, intMAC, rs, c, 6, 8080, 20001, 0x18, []byte("y"), false))
	if bExt.n != 1 {
		t.Fatalf("reply after the client's frame: %d sent", bExt.n)
	}
	if dst := bExt.frames[0][netio.VnetHdrLen : netio.VnetHdrLen+6]; [6]byte(dst) != cliMAC {
		t.Fatalf("reply to MAC %x, want the client's %x", dst, cliMAC)
	}
	// A new client of a synced /64 sticks to its template's real server.
	in2 := conntrack.Pair6{Src: [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x18, 7: 1, 15: 0xee}, Dst: vip6.As16()}
	batch(bw, frame6(t, ifExt, cliMAC, extMAC, netip.AddrFrom16(in2.Src), vip6, 6, 40000, 80, 0x02, nil, false))
	k2 := b.CT.Key6(&in2, 40000, 80, 6, conntrack.KindConn)
	if !b.CT.Peek6(&k2, &in2, false, &h) || h.Dest.Addr != rs {
		t.Fatalf("a new client of the /64 went to %v, its template says %s", h.Dest, rs)
	}
}

// The kernel refuses a real server of another family than its service
// (a mixed-family tunnel) while a sync daemon runs, with EINVAL; without
// one it is taken.
func TestSyncRefusesMixedFamily(t *testing.T) {
	d, _, _, _ := syncDirector6(t, &ipvssync.MemTransport{})
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip6, Port: 80}
	dc := ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.0.21"), Port: 80, Method: ipvs.MethodTunnel, Weight: 1}
	if err := d.Sync.Start(ipvssync.Config{Role: ipvssync.Master, Ifname: "x"}); err != nil {
		t.Fatal(err)
	}
	err := d.AddDest(k, dc)
	if err == nil || !strings.Contains(err.Error(), ipvs.EINVALText) {
		t.Fatalf("mixed-family dest with sync running: %v", err)
	}
	if err := d.Sync.Stop(ipvssync.Master); err != nil {
		t.Fatal(err)
	}
	if err := d.AddDest(k, dc); err != nil {
		t.Fatalf("mixed-family tunnel dest without sync: %v", err)
	}
}
