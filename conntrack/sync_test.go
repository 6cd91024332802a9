package conntrack

import (
	"net/netip"
	"testing"

	"github.com/golvs/golvs/ipvs"
)

// The sync master's per-entry state shares the entry's word and a conn's
// nControl with the table's own fields: the count wraps modulo the period
// (or saturates), the marks read back what was stored, and none of it
// shows in, or disturbs, the state, the flags or the packet count.
func TestSyncBits(t *testing.T) {
	tb := New(Config{Shards: 1, MaxEntries: 16})
	d := ipvs.NewDest(ipvs.ServiceKey{Proto: 6}, ipvs.DestConfig{Addr: netip.MustParseAddr("198.19.0.11"), Port: 80, Weight: 1})
	in := Key{SrcIP: [4]byte{198, 18, 0, 10}, DstIP: [4]byte{198, 18, 0, 100}, SrcPort: 1000, DstPort: 80, Proto: 6}
	ref, err := tb.Create(&NewConn{In: in, Dest: d, NoOutput: true}, syn, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := ref.e
	for i := uint32(1); i <= 120; i++ {
		if got := e.SyncCount(50); got != i%50 {
			t.Fatalf("count %d mod 50: %d", i, got)
		}
	}
	for i := 0; i < MaxSyncCount+10; i++ {
		e.SyncCount(0)
	}
	if got := e.SyncCount(0); got != MaxSyncCount {
		t.Fatalf("period 0: count %d, want it saturated at %d", got, MaxSyncCount)
	}
	if end, old := e.SyncMark(); end != 0 || old != TCPNone {
		t.Fatalf("a new conn's mark %#x/%d, want never synced", end, old)
	}
	if !e.CASSyncMark(0, 1<<28-1, TCPEstablished) || e.CASSyncMark(5, 6, TCPClose) {
		t.Fatal("conn mark exchange")
	}
	if end, old := e.SyncMark(); end != 1<<28-1 || old != TCPEstablished {
		t.Fatalf("conn mark %#x/%d", end, old)
	}
	if e.State() != TCPSynRecv || e.Flags() != FlagNoOutput || e.InPkts() != 1 || e.Synced() {
		t.Fatalf("state %d flags %#x packets %d synced %v", e.State(), e.Flags(), e.InPkts(), e.Synced())
	}

	tk := Key{SrcIP: [4]byte{198, 18, 0, 0}, DstIP: [4]byte{198, 18, 0, 100}, DstPort: 80, Proto: 6, Kind: KindTemplate}
	tref, err := tb.Create(&NewConn{In: tk, Dest: d, Template: true, Timeout: 60}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	tpl := tref.e
	assure(tpl)
	for _, m := range []uint32{1, 0xf, 0x10, 0xabcd, 1<<16 - 1} {
		old, _ := tpl.SyncMark()
		if !tpl.CASSyncMark(old, m, 0) {
			t.Fatalf("template mark %#x: exchange refused", m)
		}
		if got, st := tpl.SyncMark(); got != m || st != TplAssured {
			t.Fatalf("template mark %#x read back %#x (state %d)", m, got, st)
		}
		if tpl.Flags() != FlagTemplate || tpl.State() != TplAssured {
			t.Fatalf("template mark %#x: flags %#x state %d", m, tpl.Flags(), tpl.State())
		}
	}
	if tpl.SyncEndBits() != 16 || e.SyncEndBits() != 28 {
		t.Fatal("mark widths")
	}
	var recs []Record
	_ = tb.Export(nil, nil, func(rs []Record) error { recs = append(recs, rs...); return nil })
	for _, r := range recs {
		if r.Flags&^(FlagTemplate|FlagNoOutput) != 0 {
			t.Fatalf("exported %v with flags %#x", r.In, r.Flags)
		}
	}
}
