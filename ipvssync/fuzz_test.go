package ipvssync

import (
	"fmt"
	"strings"
	"testing"

	"github.com/golvs/golvs/conntrack"
)

// FuzzDecode feeds arbitrary datagrams to the backup's decoder. It must
// never panic; a dropped message yields no record; every record it would
// install carries only the flags a current backup keeps (plus SYNC), an
// in-range state and addresses of one family; and those records, encoded again,
// decode to themselves.
func FuzzDecode(f *testing.F) {
	for _, m := range []string{goldenA, goldenB, goldenFWM, goldenV0, goldenV6} {
		f.Add(hexb(f, m), uint8(0))
	}
	f.Add(hexb(f, goldenA), uint8(7))
	f.Add([]byte{0, 0, 0, 8, 0, 1, 0, 0}, uint8(0))
	f.Fuzz(func(t *testing.T, msg []byte, syncid uint8) {
		d := Decoder{SyncID: syncid}
		recs, ver, drop := d.Decode(msg)
		if drop != OK {
			if !drop.Drop() {
				t.Fatalf("drop reason %v is not a drop", drop)
			}
			if len(recs) != 0 {
				t.Fatalf("dropped message (%v) returned %d records", drop, len(recs))
			}
			return
		}
		var keep []Conn
		for _, r := range recs {
			if r.Skip.Drop() {
				t.Fatalf("record skipped with a drop reason %v", r.Skip)
			}
			if r.Skip != OK {
				continue
			}
			c := r.Conn
			if c.Flags&FlagSync == 0 || c.Flags&^(BackupMask|FlagSync) != 0 {
				t.Fatalf("installable record with flags %#x", c.Flags)
			}
			if c.Flags&FlagTemplate != 0 {
				if c.State >= 2 || c.Flags&FlagNoCPort != 0 {
					t.Fatalf("template state %d flags %#x", c.State, c.Flags)
				}
			} else if int(c.State) >= numStates(c.Proto) {
				t.Fatalf("proto %d state %d", c.Proto, c.State)
			}
			v6 := c.CAddr.Is6()
			if c.VAddr.Is6() != v6 || c.DAddr.Is6() != v6 || c.LAddr.IsValid() && c.LAddr.Is6() != v6 || v6 && ver == 0 || len(c.PEData) != 0 {
				t.Fatalf("installable record %+v", c)
			}
			keep = append(keep, c)
		}
		if len(keep) == 0 {
			return
		}
		m := NewMessage(nil, ver == 0, syncid, 65507)
		for i := range keep {
			c := keep[i]
			if !m.Fits(m.RecordLen(&c)) {
				t.Fatalf("record %d does not fit a 64k message", i)
			}
			if err := m.Add(&c); err != nil {
				t.Fatalf("re-encoding %+v: %v", c, err)
			}
		}
		again, ver2, drop2 := d.Decode(m.Bytes())
		if drop2 != OK || ver2 != ver || len(again) != len(keep) {
			t.Fatalf("re-encoded message: %v, version %d, %d records (want %d)", drop2, ver2, len(again), len(keep))
		}
		for i, r := range again {
			a, b := r.Conn, keep[i]
			if r.Skip != OK || a.Proto != b.Proto || a.Flags != b.Flags || a.State != b.State ||
				a.CPort != b.CPort || a.VPort != b.VPort || a.DPort != b.DPort ||
				a.CAddr != b.CAddr || a.VAddr != b.VAddr || a.DAddr != b.DAddr || a.HasSeq != b.HasSeq ||
				a.InSeq != b.InSeq || a.OutSeq != b.OutSeq || a.LAddr != b.LAddr || a.LPort != b.LPort {
				t.Fatalf("record %d: decoded %+v, re-decoded %+v", i, b, a)
			}
			if ver == 1 && (a.FWMark != b.FWMark || a.Timeout != b.Timeout) {
				t.Fatalf("record %d: fwmark/timeout %d/%d, re-decoded %d/%d", i, b.FWMark, b.Timeout, a.FWMark, a.Timeout)
			}
		}
	})
}

// Decoding allocates nothing once the decoder is warm.
func TestDecodeAllocs(t *testing.T) {
	msg := hexb(t, goldenB)
	d := Decoder{}
	d.Decode(msg)
	if n := testing.AllocsPerRun(100, func() { d.Decode(msg) }); n != 0 {
		t.Fatalf("%v allocations per message", n)
	}
}

// FuzzParseThreshold: sync_threshold as written to the sysctl. A value it
// accepts is two integers that print back to the same pair.
func FuzzParseThreshold(f *testing.F) {
	for _, s := range []string{"3 50", "0 0", " 3\t50 ", "3", "a b", "1 2 3", "-1 5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		th, p, err := ParseThreshold(s)
		if err != nil {
			return
		}
		th2, p2, err := ParseThreshold(fmt.Sprintf("%d %d", th, p))
		if err != nil || th2 != th || p2 != p {
			t.Fatalf("%q -> %d %d -> %d %d, %v", s, th, p, th2, p2, err)
		}
		sys := DefaultSysctls()
		sys.Threshold, sys.Period = th, p
		if sys.Check() == nil && (th < 0 || p < 0 || (p != 0 && th >= p)) {
			t.Fatalf("Check accepted threshold %d period %d", th, p)
		}
		// golvs counts in 12 bits of the entry (conntrack.SyncCount).
		if sys.Check() == nil && (p > conntrack.MaxSyncCount+1 || p == 0 && th >= conntrack.MaxSyncCount) {
			t.Fatalf("Check accepted threshold %d period %d, beyond the entry's count", th, p)
		}
	})
}

// The kernel's largest useful values are golvs's limits: a period of
// 4096 and, with period 0, a threshold of 4094; beyond them Check says
// why.
func TestSysctlsCountLimits(t *testing.T) {
	for _, c := range []struct {
		th, p int
		ok    bool
	}{{3, 50, true}, {4095, 4096, true}, {0, 4097, false}, {4094, 0, true}, {4095, 0, false}, {100000, 0, false}} {
		sys := DefaultSysctls()
		sys.Threshold, sys.Period = c.th, c.p
		err := sys.Check()
		if (err == nil) != c.ok || err != nil && !strings.Contains(err.Error(), "golvs counts up to 4095") {
			t.Fatalf("threshold %d period %d: %v", c.th, c.p, err)
		}
	}
}
