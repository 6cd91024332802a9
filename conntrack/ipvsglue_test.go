package conntrack

import (
	"testing"
	"time"
)

const (
	syn = 0x02
	ack = 0x10
	fin = 0x01
	rst = 0x04
)

// The spec's typical traces (§3.5).
func TestTCPTraces(t *testing.T) {
	type step struct {
		dir   int
		flags uint8
		want  uint8
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"DR", []step{{DirInputOnly, syn, TCPSynRecv}, {DirInputOnly, ack, TCPEstablished}, {DirInputOnly, fin | ack, TCPFinWait}, {DirInputOnly, ack, TCPFinWait}}},
		{"NAT", []step{{DirInput, syn, TCPSynRecv}, {DirOutput, syn | ack, TCPSynRecv}, {DirInput, ack, TCPEstablished}, {DirInput, fin | ack, TCPCloseWait}, {DirOutput, fin | ack, TCPTimeWait}}},
		{"no flags force CLOSE", []step{{DirInput, syn, TCPSynRecv}, {DirInput, 0, TCPClose}}},
		{"rst", []step{{DirInput, syn, TCPSynRecv}, {DirInput, ack, TCPEstablished}, {DirOutput, rst, TCPClose}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := TCPNone
			for i, st := range c.steps {
				s = TCPNext(st.dir, st.flags, s)
				if s != st.want {
					t.Fatalf("step %d: got %s, want %s", i, tcpStateNames[s], tcpStateNames[st.want])
				}
			}
		})
	}
}

func TestStateNames(t *testing.T) {
	for s, want := range []string{"NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK"} {
		if got := StateName(6, false, uint8(s)); got != want {
			t.Errorf("state %d: %s, want %s", s, got, want)
		}
	}
	if StateName(17, false, 0) != "UDP" || StateName(6, true, TplAssured) != "ASSURED" {
		t.Error("UDP/template names")
	}
}

// The secure_tcp table differs from the normal one in exactly the cells
// spec §3.5 lists, and nowhere else.
func TestSecureTable(t *testing.T) {
	type cell struct {
		dir, ev int
		from    uint8
	}
	want := map[cell]uint8{
		{DirInput, evSyn, sSA}: sSA, {DirInput, evFin, sSA}: sSA, {DirInput, evAck, sSR}: sSR,
		{DirInput, evAck, sSA}: sSA, {DirInput, evRst, sSA}: sCL,
		{DirOutput, evSyn, sSR}: sSA, {DirOutput, evSyn, sSA}: sSA,
	}
	for _, s := range []uint8{sNO, sFW, sTW, sCL, sCW, sLA, sLI, sSA} {
		want[cell{DirInputOnly, evSyn, s}] = sSA
	}
	diff := 0
	for dir := range 3 {
		for ev := range 4 {
			for from := range NumTCPStates {
				n, s := tcpTrans[dir][ev][from], tcpTransSecure[dir][ev][from]
				w, listed := want[cell{dir, ev, from}]
				switch {
				case listed && s != w:
					t.Errorf("dir %d event %d from %s: secure %s, spec %s", dir, ev, tcpStateNames[from], tcpStateNames[s], tcpStateNames[w])
				case !listed && s != n:
					t.Errorf("dir %d event %d from %s: secure %s differs from normal %s", dir, ev, tcpStateNames[from], tcpStateNames[s], tcpStateNames[n])
				}
				if s != n {
					diff++
				}
			}
		}
	}
	if diff != len(want) {
		t.Fatalf("%d cells differ, the spec lists %d (each a change)", diff, len(want))
	}
}

// With secure_tcp on, a NAT handshake is established only once the server
// has answered and acknowledged, and the conn's timeouts are the short
// ones while the defense lasts; they return when it ends.
func TestSecureTCPConn(t *testing.T) {
	tb := New(Config{Tick: time.Second, Defense: Defense{SecureTCP: 3}})
	d := testDest()
	in := key(1)
	out := Key{SrcIP: [4]byte{198, 19, 0, 11}, DstIP: in.SrcIP, SrcPort: 80, DstPort: in.SrcPort, Proto: 6}
	var h Hit
	if _, err := tb.Create(&NewConn{In: in, Out: out, Dest: d}, syn, &h); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		out   bool
		flags uint8
		want  uint8
	}{{false, ack, TCPSynRecv}, {true, syn | ack, TCPSynAck}, {false, ack, TCPSynAck}, {true, ack, TCPEstablished}}
	for i, s := range steps {
		if s.out {
			tb.LookupOut(&out, s.flags, &h)
		} else {
			tb.LookupIn(&in, s.flags, &h)
		}
		if h.NewState != s.want {
			t.Fatalf("step %d: %s, want %s", i, tcpStateNames[h.NewState], tcpStateNames[s.want])
		}
	}
	e := tb.findIn(tb.shardOf(&in), tb.hk.sum(&in), &in)
	if e.timeout.Load() != 480 {
		t.Fatalf("ESTABLISHED under secure_tcp: timeout %d, want 480", e.timeout.Load())
	}
	tb.SetTimeouts(300, 0, 0) // shorter than the secure value: it wins
	tb.LookupIn(&in, ack, &h)
	if e.timeout.Load() != 300 {
		t.Fatalf("ESTABLISHED after --set 300: timeout %d, want 300", e.timeout.Load())
	}
	tb.def.secureTCP.Store(0)
	tb.def.update(tb, tb.max)
	tb.SetTimeouts(900, 0, 0)
	tb.LookupIn(&in, ack, &h)
	if e.timeout.Load() != 900 || tb.def.secureOn.Load() {
		t.Fatalf("secure_tcp off: timeout %d, want 900", e.timeout.Load())
	}
}

// An established flow's packet writes nothing to its entry once its first
// 15 packets are counted: the word, the expiry and the timeout keep their
// values (a write would be a locked instruction and a dirtied line), and a
// reply clears NOOUTPUT once.
func TestEstablishedPacketWritesNothing(t *testing.T) {
	tb := New(Config{Tick: time.Second})
	d := testDest()
	in := key(2)
	out := Key{SrcIP: [4]byte{198, 19, 0, 11}, DstIP: in.SrcIP, SrcPort: 80, DstPort: in.SrcPort, Proto: 6}
	var h Hit
	if _, err := tb.Create(&NewConn{In: in, Out: out, Dest: d, NoOutput: true}, syn, &h); err != nil {
		t.Fatal(err)
	}
	e := tb.findIn(tb.shardOf(&in), tb.hk.sum(&in), &in)
	for range 20 {
		tb.LookupIn(&in, ack, &h)
	}
	if e.InPkts() != 15 || e.State() != TCPEstablished || e.Flags() != FlagNoOutput {
		t.Fatalf("after 21 packets: %d counted, state %d, flags %#x", e.InPkts(), e.State(), e.Flags())
	}
	w, x, tmo := e.word.Load(), e.expires.Load(), e.timeout.Load()
	tb.LookupIn(&in, ack, &h)
	if e.word.Load() != w || e.expires.Load() != x || e.timeout.Load() != tmo {
		t.Fatal("an established packet changed its entry")
	}
	tb.LookupOut(&out, ack, &h)
	if e.Flags()&FlagNoOutput != 0 {
		t.Fatal("a reply left NOOUTPUT set")
	}
	w = e.word.Load()
	tb.LookupOut(&out, ack, &h)
	if e.word.Load() != w {
		t.Fatal("a second reply rewrote the word")
	}
}
