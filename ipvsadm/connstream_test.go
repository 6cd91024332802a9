package ipvsadm

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/golvs/golvs/ipvs"
)

// A listing printed batch by batch is the listing printed at once.
func TestConnWriterBatches(t *testing.T) {
	var conns []Conn
	for i := 0; i < 10; i++ {
		conns = append(conns, Conn{
			Proto: ipvs.ProtoTCP, State: "ESTABLISHED", Expires: uint32(60 * i),
			Client:  netip.MustParseAddrPort(fmt.Sprintf("198.18.0.%d:%d", 10+i, 40000+i)),
			Virtual: netip.MustParseAddrPort("198.18.0.100:80"),
			Dest:    netip.MustParseAddrPort("198.19.0.11:80"),
		})
	}
	for _, f := range []Format{FmtNumeric, FmtNumeric | FmtPersistentConn} {
		l := NewLister(f)
		var whole bytes.Buffer
		if err := l.WriteConns(&whole, conns); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(whole.String(), "IPVS connection entries\npro expire state") {
			t.Fatalf("unexpected header %q", whole.String())
		}
		var batched bytes.Buffer
		cw := l.NewConnWriter(&batched)
		for _, b := range [][]Conn{conns[:3], conns[3:3], conns[3:9], conns[9:]} {
			if err := cw.Write(b); err != nil {
				t.Fatal(err)
			}
		}
		cw.Close()
		if batched.String() != whole.String() {
			t.Fatalf("batched:\n%s\nwant\n%s", batched.String(), whole.String())
		}
	}
	var empty, want bytes.Buffer
	NewLister(FmtNumeric).NewConnWriter(&empty).Close()
	NewLister(FmtNumeric).WriteConns(&want, nil)
	if empty.String() != want.String() {
		t.Fatalf("no conns: %q, want %q", empty.String(), want.String())
	}
}
