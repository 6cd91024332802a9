package ipvssync

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// hexb turns the hand-written messages below into bytes: hex digits,
// with spaces, '|' and newlines as separators and "#" comments.
func hexb(t testing.TB, s string) []byte {
	t.Helper()
	var clean strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		for _, r := range line {
			if r != ' ' && r != '|' && r != '\t' {
				clean.WriteRune(r)
			}
		}
	}
	b, err := hex.DecodeString(clean.String())
	if err != nil {
		t.Fatalf("bad hex in test: %v", err)
	}
	return b
}

func a4(s string) netip.Addr { return netip.MustParseAddr(s) }

// The golden messages, written byte by byte from the layout in
// ipvs-spec.md §7.2/§7.3 (not by the encoder).
const (
	// Version 1, syncid 7, three IPv4 records.
	goldenA = `
	00 07 0074 03 01 0000                      # reserved, syncid 7, size 116, 3 conns, version 1, spare
	# 1: TCP NAT conn, ESTABLISHED, active; 198.18.0.10:50000 -> 198.18.0.100:80 -> 198.19.0.11:8080, 900 s
	00 06 0024 | 00000000 | 0001 c350 0050 1f90 | 00000000 | 00000384 | c612000a c6120064 c613000b
	# 2: its template: TEMPLATE|INACTIVE, ASSURED, client network 198.18.0.0, cport 0, 360 s
	00 06 0024 | 00001100 | 0001 0000 0050 1f90 | 00000000 | 00000168 | c6120000 c6120064 c613000b
	# 3: a DR conn in FIN_WAIT: DROUTE|NOOUTPUT|INACTIVE, 198.18.0.10:40000 -> VIP:80 -> 198.18.0.11:80, 120 s
	00 06 0024 | 00000183 | 0004 9c40 0050 0050 | 00000000 | 00000078 | c612000a c6120064 c612000b
	`
	// Version 1, syncid 0: an optional option of an unknown type, the
	// padding after its odd-length record, and the sequence option
	// (ipvs-spec-2026.md D9.1's example).
	goldenB = `
	00 00 0072 02 01 0000                      # size 114, 2 conns
	# 1: UDP conn, inactive, 198.18.0.10:53000 -> VIP:53 -> 198.19.0.12:53, 300 s, option 0x45 (PARAM bit set: skippable)
	00 11 0029 | 00000100 | 0000 cf08 0035 0035 | 00000000 | 0000012c | c612000a c6120064 c613000c | 45 03 aabbcc
	000000                                     # padding to the next 4-byte boundary
	# 2: TCP conn with IN_SEQ and the sequence option: in_seq {1000, 4, 0}, out_seq {0, 0, 0}
	00 06 003e | 00000400 | 0001 c351 0015 0015 | 00000000 | 00000384 | c612000a c6120064 c613000b
	01 18 000003E8 00000004 00000000 00000000 00000000 00000000
	`
	// Version 1: a fwmark template (protocol IP, vaddr = the mark).
	goldenFWM = `
	00 00 002c 01 01 0000
	00 00 0024 | 00001183 | 0000 0000 0000 0000 | 00000001 | 00000168 | c612000a 00000001 c612000b
	`
	// Version 1: three IPv6 records (type 1, 16-byte addresses, 72 bytes
	// before options), the last with golvs's FULLNAT option in its IPv6
	// form (type 0x60, length 18: the local address, then the port).
	goldenV6 = `
	00 00 00f4 03 01 0000                      # size 244, 3 conns
	# 1: TCP NAT conn, ESTABLISHED: [2001:db8:18::10]:50000 -> [2001:db8:18::100]:80 -> [2001:db8:19::11]:8080, 900 s
	01 06 0048 | 00000000 | 0001 c350 0050 1f90 | 00000000 | 00000384
	20010db8001800000000000000000010 20010db8001800000000000000000100 20010db8001900000000000000000011
	# 2: its template (-M 64): TEMPLATE|INACTIVE, ASSURED, client network 2001:db8:18::, 360 s
	01 06 0048 | 00001100 | 0001 0000 0050 1f90 | 00000000 | 00000168
	20010db8001800000000000000000000 20010db8001800000000000000000100 20010db8001900000000000000000011
	# 3: UDP FULLNAT conn: method 5, local address 2001:db8:19::200 port 5001, 300 s
	01 11 005c | 00000105 | 0000 cf08 0035 0035 | 00000000 | 0000012c
	20010db8001800000000000000000010 20010db8001800000000000000000100 20010db8001900000000000000000012
	60 12 20010db8001900000000000000000200 1389
	`
	// Version 0, syncid 3: a TCP conn with flags 0x0108 (a current
	// backup keeps only 0x0100) and a UDP template.
	goldenV0 = `
	02 03 0034                                 # 2 conns, syncid 3, size 52
	00 06 c350 0050 1f90 c612000a c6120064 c613000b 0108 0001
	00 11 0000 0035 0035 c6120000 c6120064 c613000c 1100 0001
	`
)

func TestDecodeGolden(t *testing.T) {
	tests := []struct {
		name    string
		msg     string
		syncid  uint8
		version int
		want    []Record
	}{
		{"v1 three records", goldenA, 7, 1, []Record{
			{Conn: Conn{Proto: 6, Flags: 0x0020, State: 1, CPort: 50000, VPort: 80, DPort: 8080, Timeout: 900,
				CAddr: a4("198.18.0.10"), VAddr: a4("198.18.0.100"), DAddr: a4("198.19.0.11")}},
			{Conn: Conn{Proto: 6, Flags: 0x1120, State: 1, CPort: 0, VPort: 80, DPort: 8080, Timeout: 360,
				CAddr: a4("198.18.0.0"), VAddr: a4("198.18.0.100"), DAddr: a4("198.19.0.11")}},
			{Conn: Conn{Proto: 6, Flags: 0x01a3, State: 4, CPort: 40000, VPort: 80, DPort: 80, Timeout: 120,
				CAddr: a4("198.18.0.10"), VAddr: a4("198.18.0.100"), DAddr: a4("198.18.0.11")}},
		}},
		{"v1 accepted by syncid 0", goldenA, 0, 1, nil},
		{"v1 padding and options", goldenB, 0, 1, []Record{
			{Conn: Conn{Proto: 17, Flags: 0x0120, State: 0, CPort: 53000, VPort: 53, DPort: 53, Timeout: 300,
				CAddr: a4("198.18.0.10"), VAddr: a4("198.18.0.100"), DAddr: a4("198.19.0.12")}},
			{Conn: Conn{Proto: 6, Flags: 0x0420, State: 1, CPort: 50001, VPort: 21, DPort: 21, Timeout: 900,
				CAddr: a4("198.18.0.10"), VAddr: a4("198.18.0.100"), DAddr: a4("198.19.0.11"),
				HasSeq: true, InSeq: Seq{1000, 4, 0}}},
		}},
		{"v1 fwmark template", goldenFWM, 0, 1, []Record{
			{Conn: Conn{Proto: 0, Flags: 0x11a3, FWMark: 1, Timeout: 360,
				CAddr: a4("198.18.0.10"), VAddr: a4("0.0.0.1"), DAddr: a4("198.18.0.11")}},
		}},
		{"v1 IPv6", goldenV6, 0, 1, []Record{
			{Conn: Conn{Proto: 6, Flags: 0x0020, State: 1, CPort: 50000, VPort: 80, DPort: 8080, Timeout: 900,
				CAddr: a4("2001:db8:18::10"), VAddr: a4("2001:db8:18::100"), DAddr: a4("2001:db8:19::11")}},
			{Conn: Conn{Proto: 6, Flags: 0x1120, State: 1, VPort: 80, DPort: 8080, Timeout: 360,
				CAddr: a4("2001:db8:18::"), VAddr: a4("2001:db8:18::100"), DAddr: a4("2001:db8:19::11")}},
			{Conn: Conn{Proto: 17, Flags: 0x0125, CPort: 53000, VPort: 53, DPort: 53, Timeout: 300,
				CAddr: a4("2001:db8:18::10"), VAddr: a4("2001:db8:18::100"), DAddr: a4("2001:db8:19::12"),
				LAddr: a4("2001:db8:19::200"), LPort: 5001}},
		}},
		{"v0", goldenV0, 3, 0, []Record{
			{Conn: Conn{Proto: 6, Flags: 0x0120, State: 1, CPort: 50000, VPort: 80, DPort: 8080,
				CAddr: a4("198.18.0.10"), VAddr: a4("198.18.0.100"), DAddr: a4("198.19.0.11")}},
			{Conn: Conn{Proto: 17, Flags: 0x1120, State: 1, CPort: 0, VPort: 53, DPort: 53,
				CAddr: a4("198.18.0.0"), VAddr: a4("198.18.0.100"), DAddr: a4("198.19.0.12")}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Decoder{SyncID: tc.syncid}
			recs, ver, drop := d.Decode(hexb(t, tc.msg))
			if drop != OK {
				t.Fatalf("dropped: %v", drop)
			}
			if ver != tc.version {
				t.Errorf("version %d, want %d", ver, tc.version)
			}
			if tc.want == nil {
				if len(recs) == 0 {
					t.Fatal("no records")
				}
				return
			}
			if diff := cmp.Diff(tc.want, recs, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("records (-want +got):\n%s", diff)
			}
		})
	}
}

// The encoder writes the hand-built bytes exactly, padding included.
func TestEncodeGolden(t *testing.T) {
	conns := func(msg string) []Conn {
		d := Decoder{}
		recs, _, drop := d.Decode(hexb(t, msg))
		if drop != OK {
			t.Fatalf("golden message dropped: %v", drop)
		}
		var out []Conn
		for _, r := range recs {
			out = append(out, r.Conn)
		}
		return out
	}
	check := func(name, msg string, v0 bool, syncid uint8, flags []uint32, cs []Conn) {
		t.Run(name, func(t *testing.T) {
			m := NewMessage(nil, v0, syncid, 1472)
			for i := range cs {
				c := cs[i]
				c.Flags = flags[i] // as the master had them, before the backup's mask
				if !m.Fits(m.RecordLen(&c)) {
					t.Fatalf("record %d does not fit", i)
				}
				if err := m.Add(&c); err != nil {
					t.Fatal(err)
				}
			}
			want := hexb(t, msg)
			if !bytes.Equal(m.Bytes(), want) {
				t.Errorf("encoded\n%x\nwant\n%x", m.Bytes(), want)
			}
		})
	}
	a := conns(goldenA)
	check("v1", goldenA, false, 7, []uint32{0, 0x1100, 0x0183}, a)
	b := conns(goldenB)
	want := hexb(t, goldenB)
	// B's first record without the option golvs does not write: the
	// same 36 bytes but for the length field.
	m := NewMessage(nil, false, 0, 1472)
	c0 := b[0]
	c0.Flags = 0x0100
	if err := m.Add(&c0); err != nil {
		t.Fatal(err)
	}
	wantRec := append([]byte(nil), want[8:8+36]...)
	wantRec[2], wantRec[3] = 0x00, 0x24
	if rec := m.Bytes()[HeaderLen:]; !bytes.Equal(rec, wantRec) {
		t.Errorf("UDP record\n%x\nwant\n%x", rec, wantRec)
	}
	// The sequence record, alone, byte for byte (option and all).
	m = NewMessage(nil, false, 0, 1472)
	c1 := b[1]
	c1.Flags = 0x0400
	if err := m.Add(&c1); err != nil {
		t.Fatal(err)
	}
	if rec := m.Bytes()[HeaderLen:]; !bytes.Equal(rec, want[8+44:]) {
		t.Errorf("sequence record\n%x\nwant\n%x", rec, want[8+44:])
	}
	check("IPv6", goldenV6, false, 0, []uint32{0, 0x1100, 0x0105}, conns(goldenV6))
	// Version 0 carries IPv4 only; a FULLNAT local address of the other
	// family is refused.
	v6 := conns(goldenV6)
	if err := NewMessage(nil, true, 0, 1472).Add(&v6[0]); !errors.Is(err, ErrV0NoIPv6) {
		t.Errorf("v0 IPv6 record: %v", err)
	}
	mixed := v6[2]
	mixed.LAddr = a4("198.19.0.200")
	if err := NewMessage(nil, false, 0, 1472).Add(&mixed); !errors.Is(err, ErrAddrMix) {
		t.Errorf("IPv4 local address in an IPv6 record: %v", err)
	}
	check("fwmark template", goldenFWM, false, 0, []uint32{0x1183}, conns(goldenFWM))
	v0 := conns(goldenV0)
	check("v0", goldenV0, true, 3, []uint32{0x0108, 0x1100}, v0)
}

// mutate returns a copy of the golden message with bytes replaced at off.
func mutate(t *testing.T, msg string, off int, with ...byte) []byte {
	b := hexb(t, msg)
	copy(b[off:], with)
	return b
}

func TestDecodeDrops(t *testing.T) {
	seqTwice := hexb(t, `
	00 00 0060 01 01 0000
	00 06 0058 | 00000400 | 0001 c351 0015 0015 | 00000000 | 00000384 | c612000a c6120064 c613000b
	01 18 000003E8 00000004 00000000 00000000 00000000 00000000
	01 18 000003E8 00000004 00000000 00000000 00000000 00000000
	`)
	tests := []struct {
		name   string
		msg    []byte
		syncid uint8
		want   Reason
	}{
		{"empty", nil, 0, DropShort},
		{"three bytes", []byte{0, 0, 0}, 0, DropShort},
		{"size field too big", mutate(t, goldenA, 2, 0x00, 0x75), 0, DropSize},
		{"size field too small", mutate(t, goldenA, 2, 0x00, 0x73), 0, DropSize},
		{"cut datagram", hexb(t, goldenA)[:100], 0, DropSize},
		{"other syncid", hexb(t, goldenA), 8, DropSyncID},
		{"one more conn than records", mutate(t, goldenA, 4, 4), 0, DropTruncated},
		{"record version 1", mutate(t, goldenA, 8+2, 0x10, 0x24), 0, DropRecordVersion},
		{"record type 2", mutate(t, goldenA, 8, 0x02), 0, DropRecordType},
		{"IPv6 record in 36 bytes", mutate(t, goldenA, 8, 0x01), 0, DropRecordShort},
		{"record length 16", mutate(t, goldenA, 8+2, 0x00, 0x10), 0, DropRecordShort},
		{"last record past the end", mutate(t, goldenA, 8+72+2, 0x00, 0x28), 0, DropTruncated},
		{"option of length 0", mutate(t, goldenB, 8+36+1, 0x00), 0, DropOption},
		{"option past its record", mutate(t, goldenB, 8+36+1, 0x09), 0, DropOption},
		{"sequence option of 23 bytes", mutate(t, goldenB, 8+44+36+1, 0x17), 0, DropOption},
		{"sequence option twice", seqTwice, 0, DropOption},
		{"v0 record cut", mutate(t, goldenV0, 0, 3), 0, DropTruncated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Decoder{SyncID: tc.syncid}
			recs, _, drop := d.Decode(tc.msg)
			if drop != tc.want {
				t.Fatalf("got %v, want %v", drop, tc.want)
			}
			if len(recs) != 0 {
				t.Fatalf("a dropped message returned %d records", len(recs))
			}
		})
	}
}

func TestDecodeSkips(t *testing.T) {
	peData := hexb(t, `
	00 00 0036 01 01 0000
	00 11 002e | 00000100 | 0000 cf08 0035 0035 | 00000000 | 0000012c | c612000a c6120064 c613000c | 02 03 616263 | 03 03 736970
	`)
	tests := []struct {
		name string
		msg  []byte
		skip int // index of the skipped record
		want Reason
	}{
		{"template with ONE_PACKET", mutate(t, goldenA, 8+36+4, 0x00, 0x00, 0x31, 0x00), 1, SkipFlags},
		{"template with NO_CPORT", mutate(t, goldenA, 8+36+4, 0x00, 0x00, 0x19, 0x00), 1, SkipFlags},
		{"conn with ONE_PACKET", mutate(t, goldenA, 8+4, 0x00, 0x00, 0x20, 0x00), 0, SkipFlags},
		{"template state 2", mutate(t, goldenA, 8+36+8, 0x00, 0x02), 1, SkipState},
		{"TCP state 11", mutate(t, goldenA, 8+8, 0x00, 0x0b), 0, SkipState},
		{"UDP state 1", mutate(t, goldenB, 8+8, 0x00, 0x01), 0, SkipState},
		{"SCTP conn", mutate(t, goldenA, 8+1, 132), 0, SkipProto},
		{"unknown mandatory option", mutate(t, goldenB, 8+36, 0x05), 0, SkipOption},
		{"PE data", peData, 0, SkipPE},
		{"v0 template state 2", mutate(t, goldenV0, 4+24+22, 0x00, 0x02), 1, SkipState},
		{"v0 template with NO_CPORT", mutate(t, goldenV0, 4+24+20, 0x19, 0x00), 1, SkipFlags},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Decoder{}
			recs, _, drop := d.Decode(tc.msg)
			if drop != OK {
				t.Fatalf("dropped: %v", drop)
			}
			for i, r := range recs {
				want := OK
				if i == tc.skip {
					want = tc.want
				}
				if r.Skip != want {
					t.Errorf("record %d: got %v, want %v", i, r.Skip, want)
				}
			}
		})
	}
}

// Messages fill up as ip_vs_sync_conn fills them: records while they fit
// in sync_maxlen, never more than 255, and a record longer than maxlen
// still goes alone.
func TestMessageFits(t *testing.T) {
	c := Conn{Proto: 6, State: 1, CAddr: a4("198.18.0.10"), VAddr: a4("198.18.0.100"), DAddr: a4("198.19.0.11")}
	m := NewMessage(nil, false, 1, 1472)
	n := 0
	for m.Fits(m.RecordLen(&c)) {
		if err := m.Add(&c); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if want := (1472 - 8) / 36; n != want {
		t.Errorf("%d records in 1472 bytes, want %d", n, want)
	}
	m = NewMessage(nil, false, 1, 65507)
	for n = 0; m.Fits(m.RecordLen(&c)); n++ {
		_ = m.Add(&c)
	}
	if n != MaxConns {
		t.Errorf("%d records in a 64k message, want %d (nr_conns is a byte)", n, MaxConns)
	}
	m = NewMessage(nil, false, 1, 10)
	if !m.Fits(m.RecordLen(&c)) {
		t.Error("an empty message refuses its first record")
	}
	_ = m.Add(&c)
	if m.Fits(m.RecordLen(&c)) {
		t.Error("a second record fits in 10 bytes")
	}
	d := Decoder{}
	if recs, _, drop := d.Decode(m.Bytes()); drop != OK || len(recs) != 1 {
		t.Errorf("oversized single record: %v, %d records", drop, len(recs))
	}
}
