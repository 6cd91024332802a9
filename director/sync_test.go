package director

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvssync"
	"github.com/golvs/golvs/netio"
)

// hexMsg turns a hand-written message into bytes (hex digits; spaces,
// '|' and newlines separate; '#' starts a comment).
func hexMsg(t *testing.T, s string) []byte {
	t.Helper()
	var clean strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		clean.WriteString(strings.NewReplacer(" ", "", "|", "", "\t", "").Replace(line))
	}
	b, err := hex.DecodeString(clean.String())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tableLines renders the table as -L -c would list it (protocol, client,
// virtual, destination, state) plus each entry's timeout and flags
// golvs keeps, sorted.
func tableLines(d *Director) []string {
	var out []string
	d.CT.Walk(func(e *conntrack.Entry) {
		dst := "-"
		if e.Dest != nil {
			dst = netip.AddrPortFrom(e.Dest.Addr, e.DestPort()).String()
		}
		kind := "conn"
		if e.Template() {
			kind = "tpl"
		}
		src, vip := netip.AddrFrom4(e.In.SrcIP), netip.AddrFrom4(e.In.DstIP)
		if a6 := d.CT.EntryAddrs6(e); a6 != nil {
			src, vip = netip.AddrFrom16(a6.In.Src), netip.AddrFrom16(a6.In.Dst)
		}
		out = append(out, fmt.Sprintf("%s %s %s %s %s %s %ds synced=%v", kind, ipvs.ProtoName(e.In.Proto),
			netip.AddrPortFrom(src, e.In.SrcPort), netip.AddrPortFrom(vip, e.In.DstPort), dst,
			conntrack.StateName(e.In.Proto, e.Template(), e.State()), e.Timeout(), e.Synced()))
	})
	sort.Strings(out)
	return out
}

// syncBackupDirector is a director with no sockets and the services the
// golden messages name.
func syncBackupDirector(t *testing.T, mt *ipvssync.MemTransport) *Director {
	t.Helper()
	d := newCore(Config{Workers: 1, Conntrack: conntrack.Config{Shards: 16}, SyncTransport: mt})
	if d.syncErr != nil {
		t.Fatal(d.syncErr)
	}
	add := func(k ipvs.ServiceKey, persist uint32, dests ...ipvs.DestConfig) {
		c := ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}
		if persist != 0 {
			c.Flags, c.Timeout, c.Netmask = ipvs.SvcPersistent, persist, 0xffffff00
		}
		if err := d.AddService(c); err != nil {
			t.Fatal(err)
		}
		for _, dc := range dests {
			dc.Weight = 1
			if err := d.AddDest(k, dc); err != nil {
				t.Fatal(err)
			}
		}
	}
	add(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}, 360,
		ipvs.DestConfig{Addr: rip, Port: 8080, Method: ipvs.MethodMasq},
		ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.0.12"), Port: 8080, Method: ipvs.MethodMasq},
		ipvs.DestConfig{Addr: netip.MustParseAddr("198.18.0.11"), Port: 80, Method: ipvs.MethodRoute})
	add(ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: vip, Port: 53}, 0,
		ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.0.12"), Port: 53, Method: ipvs.MethodMasq})
	add(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, FWMark: 1}, 360,
		ipvs.DestConfig{Addr: netip.MustParseAddr("198.18.0.11"), Port: 0, Method: ipvs.MethodRoute})
	return d
}

func syncCounter(t *testing.T, d *Director, name string) uint64 {
	t.Helper()
	v, ok := d.Sync.Counter(name)
	if !ok {
		t.Fatalf("no sync counter %q", name)
	}
	return v
}

// Kernel-format messages built by hand from the spec's byte layout are
// installed as the kernel's backup installs them: bound to the same real
// servers, templates and all, with the states and timeouts they carry
// and the dest counters moved; a record naming a real server this
// director lacks is counted and skipped.
func TestSyncInstallGolden(t *testing.T) {
	d := syncBackupDirector(t, nil)
	// The same golden messages as ipvssync's tests, typed again.
	msgA := hexMsg(t, `
	00 07 0074 03 01 0000
	00 06 0024 | 00000000 | 0001 c350 0050 1f90 | 00000000 | 00000384 | c612000a c6120064 c613000b
	00 06 0024 | 00001100 | 0001 0000 0050 1f90 | 00000000 | 00000168 | c6120000 c6120064 c613000b
	00 06 0024 | 00000183 | 0004 9c40 0050 0050 | 00000000 | 00000078 | c612000a c6120064 c612000b
	`)
	msgB := hexMsg(t, `
	00 00 0072 02 01 0000
	00 11 0029 | 00000100 | 0000 cf08 0035 0035 | 00000000 | 0000012c | c612000a c6120064 c613000c | 45 03 aabbcc
	000000
	00 06 003e | 00000400 | 0001 c351 0015 0015 | 00000000 | 00000384 | c612000a c6120064 c613000b
	01 18 000003E8 00000004 00000000 00000000 00000000 00000000
	`)
	msgFWM := hexMsg(t, `
	00 00 002c 01 01 0000
	00 00 0024 | 00001183 | 0000 0000 0000 0000 | 00000001 | 00000168 | c612000a 00000001 c612000b
	`)
	msgV0 := hexMsg(t, `
	02 03 0034
	00 06 c351 0050 1f90 c612000b c6120064 c613000c 0108 0001
	00 11 0000 0035 0035 c6120000 c6120064 c613000c 1100 0001
	`)
	d.Sync.Process(msgA, 7)
	d.Sync.Process(msgB, 0)
	d.Sync.Process(msgFWM, 0)
	d.Sync.Process(msgV0, 0)
	want := []string{
		"conn TCP 198.18.0.10:40000 198.18.0.100:80 198.18.0.11:80 FIN_WAIT 120s synced=true",
		"conn TCP 198.18.0.10:50000 198.18.0.100:80 198.19.0.11:8080 ESTABLISHED 900s synced=true",
		"conn TCP 198.18.0.11:50001 198.18.0.100:80 198.19.0.12:8080 ESTABLISHED 900s synced=true", // v0: the protocol's timeout
		"conn UDP 198.18.0.10:53000 198.18.0.100:53 198.19.0.12:53 UDP 300s synced=true",
		"tpl IP 198.18.0.10:0 0.0.0.1:0 198.18.0.11:0 NONE 360s synced=true",
		"tpl TCP 198.18.0.0:0 198.18.0.100:80 198.19.0.11:8080 ASSURED 360s synced=true",
		"tpl UDP 198.18.0.0:0 198.18.0.100:53 198.19.0.12:53 ASSURED 180s synced=true", // v0 template: 180 s
	}
	if got := tableLines(d); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("table:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The FTP-port record (vport 21) names no service here: skipped.
	if n := syncCounter(t, d, "no-real-server"); n != 1 {
		t.Errorf("no-real-server %d, want 1", n)
	}
	if n := syncCounter(t, d, "installed"); n != 7 {
		t.Errorf("installed %d, want 7", n)
	}
	// Dest counters as the kernel's bind leaves them.
	counts := map[string]string{}
	for _, sv := range d.Snapshot().List {
		for _, dd := range sv.Dests {
			counts[sv.Config.ServiceKey.String()+" "+netip.AddrPortFrom(dd.Addr, dd.Port).String()] =
				fmt.Sprintf("%d/%d/%d", dd.ActiveConns(), dd.InactConns(), dd.PersistConns())
		}
	}
	wantCounts := map[string]string{
		"TCP 198.18.0.100:80 198.19.0.11:8080": "1/0/1",
		"TCP 198.18.0.100:80 198.19.0.12:8080": "1/0/0",
		"TCP 198.18.0.100:80 198.18.0.11:80":   "0/1/0",
		"UDP 198.18.0.100:53 198.19.0.12:53":   "0/1/1",
		"FWM 1 198.18.0.11:0":                  "0/0/1",
	}
	for k, v := range wantCounts {
		if counts[k] != v {
			t.Errorf("%s: active/inactive/persist %s, want %s", k, counts[k], v)
		}
	}
	// Again: updates, nothing new.
	d.Sync.Process(msgA, 7)
	if n := syncCounter(t, d, "updated"); n != 3 {
		t.Errorf("updated %d, want 3", n)
	}
	if d.CT.Len() != len(want) {
		t.Errorf("%d entries after the same message again, want %d", d.CT.Len(), len(want))
	}
	// The NAT conn moved to .12 on the master: an inactive record for
	// it is ignored, an active one replaces it.
	moved := append([]byte(nil), msgA[:8+36]...)
	moved[4] = 1                               // one record
	moved[2], moved[3] = 0, 8+36               // size
	copy(moved[8+32:], []byte{198, 19, 0, 12}) // daddr
	inactive := append([]byte(nil), moved...)
	inactive[8+6] = 0x01 // flags 0x0100
	d.Sync.Process(inactive, 7)
	if n := syncCounter(t, d, "ignored-inactive"); n != 1 {
		t.Errorf("ignored-inactive %d, want 1", n)
	}
	d.Sync.Process(moved, 7)
	if n := syncCounter(t, d, "replaced"); n != 1 {
		t.Errorf("replaced %d, want 1", n)
	}
	found := false
	for _, l := range tableLines(d) {
		if strings.HasPrefix(l, "conn TCP 198.18.0.10:50000 198.18.0.100:80 198.19.0.12:8080 ESTABLISHED") {
			found = true
		}
	}
	if !found {
		t.Errorf("replaced conn not bound to .12:\n%s", strings.Join(tableLines(d), "\n"))
	}
	// A message for another syncid, and a broken one: dropped, counted.
	d.Sync.Process(msgA, 8)
	broken := append([]byte(nil), msgA...)
	broken[4] = 4
	d.Sync.Process(broken, 7)
	if a, b := syncCounter(t, d, "drop-other-syncid"), syncCounter(t, d, "drop-truncated"); a != 1 || b != 1 {
		t.Errorf("drop-other-syncid %d, drop-truncated %d, want 1 and 1", a, b)
	}
}

// syncPair is a master and a backup director with the same NAT service,
// joined by an in-memory transport, each with a worker on fake
// transmitters.
type syncPair struct {
	mt         *ipvssync.MemTransport
	m, b       *Director
	mw, bw     *Worker
	mExt, mInt *fakeTx
	bExt, bInt *fakeTx
}

func newSyncPair(t *testing.T) *syncPair {
	t.Helper()
	p := &syncPair{mt: &ipvssync.MemTransport{}}
	mk := func() (*Director, *Worker, *fakeTx, *fakeTx) {
		d := newCore(Config{Workers: 1, Conntrack: conntrack.Config{Shards: 16}, SyncTransport: p.mt})
		if d.syncErr != nil {
			t.Fatal(d.syncErr)
		}
		d.ifMAC[ifExt], d.ifMAC[ifInt] = extMAC, intMAC
		d.ifARP[ifExt] = true
		k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}
		if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{"198.19.0.11", "198.19.0.12"} {
			if err := d.AddDest(k, ipvs.DestConfig{Addr: netip.MustParseAddr(a), Port: 8080, Method: ipvs.MethodMasq, Weight: 1}); err != nil {
				t.Fatal(err)
			}
		}
		for _, sv := range d.Snapshot().List {
			for _, dd := range sv.Dests {
				dd.Next.Store(&ipvs.NextHop{IfIndex: ifInt, SrcMAC: intMAC, DstMAC: rsMAC})
			}
		}
		w := d.newWorker()
		ext, in := &fakeTx{keep: true}, &fakeTx{keep: true}
		w.setTx(ifExt, ext)
		w.setTx(ifInt, in)
		return d, w, ext, in
	}
	p.m, p.mw, p.mExt, p.mInt = mk()
	p.b, p.bw, p.bExt, p.bInt = mk()
	t.Cleanup(func() { p.m.Sync.Close(); p.b.Sync.Close() })
	return p
}

// batch runs frames through a worker as its loop does: the snapshot and
// the serving switches loaded first.
func batch(w *Worker, fs ...*netio.Frame) {
	w.load()
	for _, f := range fs {
		w.handle(f)
	}
}

func clientFrame(t *testing.T, cport uint16, flags uint8) *netio.Frame {
	return frame(t, ifExt, cliMAC, extMAC, cip, vip, 6, cport, 80, flags, nil)
}

// Real frames through a master director; its sync messages installed by
// a backup; the backup's table holds the same conns (the -L -c records)
// with the same dest counters, forwards nothing while it is a backup,
// and once switched to master carries the established conns on: client
// frames find their conn (no new scheduling), replies go back to where
// the client's frames came from.
func TestSyncMasterToBackup(t *testing.T) {
	p := newSyncPair(t)
	if err := p.b.Sync.Start(ipvssync.Config{Role: ipvssync.Backup, Ifname: "x", SyncID: 5}); err != nil {
		t.Fatal(err)
	}
	if !p.b.SyncBackupOnly() {
		t.Fatal("a backup with backup_only is not standing by")
	}
	if err := p.m.Sync.Start(ipvssync.Config{Role: ipvssync.Master, Ifname: "x", SyncID: 5}); err != nil {
		t.Fatal(err)
	}
	if err := p.m.Sync.Start(ipvssync.Config{Role: ipvssync.Master, Ifname: "x"}); err != ipvssync.ErrRunning {
		t.Fatalf("second master: %v, want ErrRunning", err)
	}
	const n = 400 // 10 messages of 40: 8 wake the sender at once
	for i := 0; i < n; i++ {
		cp := uint16(20000 + i)
		batch(p.mw, clientFrame(t, cp, 0x02), clientFrame(t, cp, 0x10), clientFrame(t, cp, 0x18))
	}
	if p.m.CT.Len() != n {
		t.Fatalf("master table %d conns, want %d", p.m.CT.Len(), n)
	}
	deadline := time.Now().Add(20 * time.Second)
	for p.b.CT.Len() < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	mt, bt := tableLines(p.m), tableLines(p.b)
	for i := range mt {
		mt[i] = strings.Replace(strings.Replace(mt[i], "synced=false", "", 1), "synced=true", "", 1)
	}
	for i := range bt {
		bt[i] = strings.Replace(bt[i], "synced=true", "", 1)
	}
	if strings.Join(mt, "\n") != strings.Join(bt, "\n") {
		t.Fatalf("backup table (%d) differs from the master's (%d)", len(bt), len(mt))
	}
	for i, sv := range p.m.Snapshot().List {
		for j, md := range sv.Dests {
			bd := p.b.Snapshot().List[i].Dests[j]
			if md.ActiveConns() != bd.ActiveConns() || md.InactConns() != bd.InactConns() {
				t.Errorf("%s: master %d/%d, backup %d/%d", md.Addr, md.ActiveConns(), md.InactConns(), bd.ActiveConns(), bd.InactConns())
			}
		}
	}
	if v := syncCounter(t, p.b, "msgs-sent") + syncCounter(t, p.b, "conns-queued"); v != 0 {
		t.Fatalf("the backup sent or queued %d while backup", v)
	}
	// Standing by: nothing forwarded, nothing changed.
	before := tableLines(p.b)
	batch(p.bw, clientFrame(t, 20000, 0x10), frame(t, ifInt, rsMAC, intMAC, netip.MustParseAddr("198.19.0.11"), cip, 6, 8080, 20000, 0x10, nil))
	if p.bInt.n+p.bExt.n != 0 || p.b.Drops[CntBackup].Load() != 2 {
		t.Fatalf("standby forwarded %d frames, counted %d", p.bInt.n+p.bExt.n, p.b.Drops[CntBackup].Load())
	}
	if strings.Join(tableLines(p.b), "\n") != strings.Join(before, "\n") {
		t.Fatal("standby frames changed the table")
	}
	// Takeover: the master dies; the backup becomes master.
	p.m.Sync.Close()
	if err := p.b.Sync.SetRole(ipvssync.Master, ipvssync.Config{Ifname: "x", SyncID: 5}); err != nil {
		t.Fatal(err)
	}
	if p.b.SyncBackupOnly() {
		t.Fatal("still standing by as master")
	}
	if st := p.b.Sync.Status(); len(st) != 1 || st[0].Role != ipvssync.Master {
		t.Fatalf("status %+v", st)
	}
	// A reply before any client frame: the client's way back is not
	// known yet (no neighbour table here): counted, not sent.
	batch(p.bw, frame(t, ifInt, rsMAC, intMAC, netip.MustParseAddr("198.19.0.11"), cip, 6, 8080, 20001, 0x18, []byte("x")))
	batch(p.bw, frame(t, ifInt, rsMAC, intMAC, netip.MustParseAddr("198.19.0.12"), cip, 6, 8080, 20001, 0x18, []byte("x")))
	if p.bExt.n != 0 || p.b.Drops[CntClientUnknown].Load() != 1 {
		t.Fatalf("reply of an unlearnt client: %d sent, %d counted", p.bExt.n, p.b.Drops[CntClientUnknown].Load())
	}
	created := p.b.CT.Stats().Created
	batch(p.bw, clientFrame(t, 20001, 0x18))
	if p.b.CT.Stats().Created != created || p.bInt.n != 1 {
		t.Fatalf("client frame of a synced conn: %d created, %d forwarded", p.b.CT.Stats().Created-created, p.bInt.n)
	}
	out := decodeOut(t, p.bInt.frames[0])
	var h conntrack.Hit
	k := conntrack.Key{SrcIP: cip.As4(), DstIP: vip.As4(), SrcPort: 20001, DstPort: 80, Proto: 6}
	if !p.b.CT.Peek(&k, false, &h) {
		t.Fatal("conn 20001 gone")
	}
	if got := out.NetworkLayer().NetworkFlow().Dst().String(); got != h.Dest.Addr.String() {
		t.Fatalf("forwarded to %s, the synced conn is bound to %s", got, h.Dest.Addr)
	}
	reply := frame(t, ifInt, rsMAC, intMAC, h.Dest.Addr, cip, 6, 8080, 20001, 0x18, []byte("y"))
	batch(p.bw, reply)
	if p.bExt.n != 1 {
		t.Fatalf("reply after the client's frame: %d sent", p.bExt.n)
	}
	if dst := p.bExt.frames[0][netio.VnetHdrLen : netio.VnetHdrLen+6]; [6]byte(dst) != cliMAC {
		t.Fatalf("reply to MAC %x, want the client's %x", dst, cliMAC)
	}
	// As master now, it syncs: the 3rd... the conn's next sends follow
	// its packet count (reset to sync_threshold by the install).
	if _, ok := p.b.Sync.Counter("conns-queued"); !ok {
		t.Fatal("no conns-queued counter")
	}
}

// The sync counters are part of the director's counter sets.
func TestSyncCounterSet(t *testing.T) {
	d := syncBackupDirector(t, nil)
	for _, cs := range d.CounterSets() {
		if cs.Name == "sync" {
			if len(cs.Names) != len(cs.Values) || len(cs.Names) == 0 {
				t.Fatalf("sync set: %d names, %d values", len(cs.Names), len(cs.Values))
			}
			return
		}
	}
	t.Fatal("no sync counter set")
}

// fullnatSyncDirector is modeDirector for FULLNAT with a sync transport
// and a local address pool of its own.
func fullnatSyncDirector(t *testing.T, mt *ipvssync.MemTransport, lip string) (*Director, *Worker, *fakeTx, *fakeTx) {
	t.Helper()
	d := newCore(Config{Workers: 1, Conntrack: conntrack.Config{Shards: 16}, SyncTransport: mt})
	if d.syncErr != nil {
		t.Fatal(d.syncErr)
	}
	d.ifMAC[ifExt], d.ifMAC[ifInt] = extMAC, intMAC
	if err := d.SetLocalAddrs([]netip.Addr{netip.MustParseAddr(lip)}, 0, 0); err != nil {
		t.Fatal(err)
	}
	k := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}
	if err := d.AddService(ipvs.ServiceConfig{ServiceKey: k, Sched: "rr"}); err != nil {
		t.Fatal(err)
	}
	if err := d.AddDest(k, ipvs.DestConfig{Addr: rip, Port: 80, Method: ipvs.MethodFullNAT, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	for _, sv := range d.Snapshot().List {
		for _, dd := range sv.Dests {
			dd.Next.Store(&ipvs.NextHop{IfIndex: ifInt, SrcMAC: intMAC, DstMAC: rsMAC, SrcIP: netip.MustParseAddr("198.19.0.1")})
		}
	}
	w := d.newWorker()
	ext, in := &fakeTx{keep: true}, &fakeTx{keep: true}
	w.setTx(ifExt, ext)
	w.setTx(ifInt, in)
	t.Cleanup(d.Sync.Close)
	return d, w, ext, in
}

// FULLNAT conns travel with their local address and port (golvs's
// option, which kernels skip): a backup with the same local address
// takes the same port from its pool and carries the conn after a
// takeover; one without it counts the record and skips it.
func TestSyncFullNAT(t *testing.T) {
	mt := &ipvssync.MemTransport{}
	m, mw, _, _ := fullnatSyncDirector(t, mt, "198.19.0.200")
	b, bw, bExt, bInt := fullnatSyncDirector(t, mt, "198.19.0.200")
	other, _, _, _ := fullnatSyncDirector(t, mt, "198.19.0.201")
	for _, d := range []*Director{b, other} {
		if err := d.Sync.Start(ipvssync.Config{Role: ipvssync.Backup, Ifname: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Sync.Start(ipvssync.Config{Role: ipvssync.Master, Ifname: "x"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		cp := uint16(30000 + i)
		batch(mw, clientFrame(t, cp, 0x02), clientFrame(t, cp, 0x10), clientFrame(t, cp, 0x18))
	}
	deadline := time.Now().Add(10 * time.Second)
	for (b.CT.Len() < 3 || syncCounter(t, other, "no-local-address") < 3) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	outKeys := func(d *Director) []string {
		var out []string
		d.CT.Walk(func(e *conntrack.Entry) { out = append(out, fmt.Sprintf("%v>%v", e.In, e.Out)) })
		sort.Strings(out)
		return out
	}
	if a, bb := outKeys(m), outKeys(b); strings.Join(a, " ") != strings.Join(bb, " ") || len(a) != 3 {
		t.Fatalf("backup keys\n%v\nmaster's\n%v", bb, a)
	}
	if st := b.LocalAddrs(); len(st) != 1 || st[0].Conns != 3 {
		t.Fatalf("backup pool use %+v, want 3 ports taken", st)
	}
	if other.CT.Len() != 0 || syncCounter(t, other, "no-local-address") != 3 {
		t.Fatalf("a backup without the local address installed %d, counted %d", other.CT.Len(), syncCounter(t, other, "no-local-address"))
	}
	// Takeover: the client's next frame and the server's reply.
	if err := b.Sync.SetRole(ipvssync.Master, ipvssync.Config{Ifname: "x"}); err != nil {
		t.Fatal(err)
	}
	batch(bw, clientFrame(t, 30001, 0x18))
	if bInt.n != 1 {
		t.Fatalf("client frame after takeover: %d forwarded", bInt.n)
	}
	var h conntrack.Hit
	k := conntrack.Key{SrcIP: cip.As4(), DstIP: vip.As4(), SrcPort: 30001, DstPort: 80, Proto: 6}
	if !b.CT.Peek(&k, false, &h) {
		t.Fatal("conn gone")
	}
	lipAddr := netip.AddrFrom4(h.Out.DstIP)
	batch(bw, frame(t, ifInt, rsMAC, intMAC, rip, lipAddr, 6, 80, h.Out.DstPort, 0x18, []byte("r")))
	if bExt.n != 1 {
		t.Fatalf("reply to the local port after takeover: %d sent", bExt.n)
	}
	out := decodeOut(t, bExt.frames[0])
	if got := out.NetworkLayer().NetworkFlow().Dst().String(); got != cip.String() {
		t.Fatalf("reply to %s, want the client %s", got, cip)
	}
}
