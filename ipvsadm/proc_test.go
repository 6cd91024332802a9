package ipvsadm

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"

	"github.com/golvs/golvs/ipvs"
)

// The expected texts below are written by hand from the kernel's format
// strings (ip_vs_ctl.c ip_vs_info_seq_show, ip_vs_stats_show; ip_vs_conn.c
// ip_vs_conn_seq_show), not from golvs's output:
//
//	"%s  %08X:%04X %s %s "    service (ops "ops " or "")
//	"%s  [%pI6]:%04X %s "     IPv6 service (no ops)
//	"FWM  %08X %s %s"         fwmark service
//	"persistent %d %08X\n"    timeout in jiffies, ntohl(netmask)
//	"  -> %08X:%04X      %-7s %-6d %-10d %-10d\n"
//	"%8LX %8LX %8LX %16LX %16LX\n\n"
//	"%-3s %08X %04X %08X %04X %s %04X %-11s %7u%s\n"
//
// The service order is the kernel's hash walk (ip_vs_svc_hashkey with the
// netns term 0): bucket = (proto ^ ntohl(addr) ^ (port >> 8) ^ port) & 255,
// fwmark services after, by mark & 255; newest first within a bucket.
//
//	TCP 198.18.0.100:80     6 ^ 0x64 ^ 0 ^ 0x50                = 0x32
//	UDP 198.18.0.100:71     0x11 ^ 0x64 ^ 0 ^ 0x47             = 0x32 (same bucket, created later: first)
//	UDP 198.18.0.100:53     0x11 ^ 0x64 ^ 0 ^ 0x35             = 0x40
//	TCP [2001:db8::1]:443   6 ^ (0x20010db8^1)&255 ^ 1 ^ 0xbb  = 0x05
//	FWM 7, FWM 100          buckets 7 and 100
func TestProcIPVSExact(t *testing.T) {
	svc := func(k ipvs.ServiceKey, sched string, flags, timeout, mask uint32, dests ...ListDest) ListService {
		return ListService{Config: ipvs.ServiceConfig{ServiceKey: k, Sched: sched, Flags: flags, Timeout: timeout, Netmask: mask}, Dests: dests}
	}
	dest := func(ap string, m ipvs.Method, w int32, act, inact uint32) ListDest {
		a := netip.MustParseAddrPort(ap)
		return ListDest{Config: ipvs.DestConfig{Addr: a.Addr(), Port: a.Port(), Method: m, Weight: w}, Active: act, Inact: inact}
	}
	vip := netip.MustParseAddr("198.18.0.100")
	v6 := netip.MustParseAddr("2001:db8::1")
	creation := []ListService{
		svc(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: vip, Port: 80}, "rr", 0, 0, 0xffffffff,
			dest("198.19.0.12:80", ipvs.MethodMasq, 1, 3, 5), // kernel order: newest first
			dest("198.19.0.11:8080", ipvs.MethodMasq, 0, 0, 12)),
		svc(ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: vip, Port: 53}, "wrr", ipvs.SvcPersistent|ipvs.SvcOnePacket, 600, 0xffffff00,
			dest("198.19.0.11:53", ipvs.MethodRoute, 65535, 0, 1)),
		svc(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, FWMark: 100}, "sh", ipvs.SvcPersistent, 360, 0xffffffff,
			dest("198.19.0.11:0", ipvs.MethodRoute, 1, 0, 0),
			dest("198.19.0.12:0", ipvs.MethodFullNAT, 1, 0, 0),
			dest("198.19.0.13:0", ipvs.MethodBypass, 1, 0, 0)),
		svc(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: v6, Port: 443}, "wlc", ipvs.SvcPersistent|ipvs.SvcOnePacket, 360, 64,
			dest("[2001:db8::2]:443", ipvs.MethodTunnel, 2, 0, 0)),
		svc(ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: vip, Port: 71}, "rr", 0, 0, 0xffffffff),
		svc(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, FWMark: 7, V6: true}, "rr", ipvs.SvcOnePacket, 0, 128),
	}
	want := "IP Virtual Server version 1.2.1 (size=4096)\n" +
		"Prot LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n" +
		"TCP  [2001:0db8:0000:0000:0000:0000:0000:0001]:01BB wlc persistent 90000 40000000\n" +
		"  -> [2001:0db8:0000:0000:0000:0000:0000:0002]:01BB      Tunnel  2      0          0         \n" +
		"UDP  C6120064:0047 rr  \n" +
		"TCP  C6120064:0050 rr  \n" +
		"  -> C613000C:0050      Masq    1      3          5         \n" +
		"  -> C613000B:1F90      Masq    0      0          12        \n" +
		"UDP  C6120064:0035 wrr ops  persistent 150000 FFFFFF00\n" +
		"  -> C613000B:0035      Route   65535  0          1         \n" +
		"FWM  00000007 rr ops \n" +
		"FWM  00000064 sh persistent 90000 FFFFFFFF\n" +
		"  -> C613000B:0000      Route   1      0          0         \n" +
		"  -> C613000C:0000      FullNat 1      0          0         \n" +
		"  -> C613000D:0000      Masq    1      0          0         \n"
	var b bytes.Buffer
	if err := WriteProcIPVS(&b, 4096, creation); err != nil {
		t.Fatal(err)
	}
	if b.String() != want {
		t.Fatalf("got\n%q\nwant\n%q", b.String(), want)
	}
	// An empty table is the three header lines.
	b.Reset()
	if err := WriteProcIPVS(&b, 65536, nil); err != nil {
		t.Fatal(err)
	}
	if w := "IP Virtual Server version 1.2.1 (size=65536)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"; b.String() != w {
		t.Fatalf("empty: got %q, want %q", b.String(), w)
	}
}

func TestProcStatsExact(t *testing.T) {
	var b bytes.Buffer
	tot := ipvs.StatsSnapshot{Conns: 1000, InPkts: 123456, OutPkts: 0, InBytes: 0x123456789A, OutBytes: 5000000000}
	if err := WriteProcStats(&b, tot, Rate{CPS: 25, InPPS: 1, InBPS: 250000}); err != nil {
		t.Fatal(err)
	}
	want := "   Total Incoming Outgoing         Incoming         Outgoing\n" +
		"   Conns  Packets  Packets            Bytes            Bytes\n" +
		"     3E8    1E240        0       123456789A        12A05F200\n" +
		"\n" +
		" Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n" +
		"      19        1        0            3D090                0\n"
	if b.String() != want {
		t.Fatalf("got\n%q\nwant\n%q", b.String(), want)
	}
	// Counters wider than the field push it, as printf does.
	b.Reset()
	WriteProcStats(&b, ipvs.StatsSnapshot{Conns: 0x123456789, InBytes: 1<<64 - 1}, Rate{})
	want = "   Total Incoming Outgoing         Incoming         Outgoing\n" +
		"   Conns  Packets  Packets            Bytes            Bytes\n" +
		"123456789        0        0 FFFFFFFFFFFFFFFF                0\n" +
		"\n" +
		" Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n" +
		"       0        0        0                0                0\n"
	if b.String() != want {
		t.Fatalf("got\n%q\nwant\n%q", b.String(), want)
	}
}

func TestProcConnExact(t *testing.T) {
	ap := netip.MustParseAddrPort
	cases := []struct {
		name string
		c    Conn
		want string
	}{
		{"tcp", Conn{Proto: ipvs.ProtoTCP, Client: ap("198.18.0.10:40000"), Virtual: ap("198.18.0.100:80"), Dest: ap("198.19.0.11:8080"), State: "ESTABLISHED", Expires: 899},
			"TCP C612000A 9C40 C6120064 0050 C613000B 1F90 ESTABLISHED     899\n"},
		{"udp", Conn{Proto: ipvs.ProtoUDP, Client: ap("198.18.0.10:54321"), Virtual: ap("198.18.0.100:53"), Dest: ap("198.19.0.12:53"), State: "UDP", Expires: 299},
			"UDP C612000A D431 C6120064 0035 C613000C 0035 UDP             299\n"},
		{"fwmark template", Conn{Proto: ipvs.ProtoIP, Client: ap("198.18.0.10:0"), Virtual: netip.AddrPortFrom(FWMarkAddr(100, false), 0), Dest: ap("198.19.0.11:0"), State: "NONE", Expires: 359},
			"IP  C612000A 0000 00000064 0000 C613000B 0000 NONE            359\n"},
		{"ipv6", Conn{Proto: ipvs.ProtoTCP, Client: ap("[2001:db8::a]:40000"), Virtual: ap("[2001:db8::64]:80"), Dest: ap("[2001:db8:1::b]:8080"), State: "SYN_RECV", Expires: 59},
			"TCP 2001:0db8:0000:0000:0000:0000:0000:000a 9C40 2001:0db8:0000:0000:0000:0000:0000:0064 0050 2001:0db8:0001:0000:0000:0000:0000:000b 1F90 SYN_RECV         59\n"},
		{"ipv4 to an ipv6 dest", Conn{Proto: ipvs.ProtoTCP, Client: ap("198.18.0.10:1"), Virtual: ap("198.18.0.100:80"), Dest: ap("[2001:db8::2]:80"), State: "CLOSE", Expires: 0},
			"TCP C612000A 0001 C6120064 0050 2001:0db8:0000:0000:0000:0000:0000:0002 0050 CLOSE             0\n"},
		{"pe", Conn{Proto: ipvs.ProtoUDP, Client: ap("198.18.0.10:5060"), Virtual: ap("198.18.0.100:5060"), Dest: ap("198.19.0.11:5060"), State: "UDP", Expires: 180, PEName: "sip", PEData: "6a6f686e"},
			"UDP C612000A 13C4 C6120064 13C4 C613000B 13C4 UDP             180 sip 6a6f686e\n"},
		{"pe name without data", Conn{Proto: ipvs.ProtoUDP, Client: ap("198.18.0.10:5060"), Virtual: ap("198.18.0.100:5060"), Dest: ap("198.19.0.11:5060"), State: "UDP", Expires: 1, PEName: "sip"},
			"UDP C612000A 13C4 C6120064 13C4 C613000B 13C4 UDP               1\n"},
		{"sctp, long state", Conn{Proto: ipvs.ProtoSCTP, Client: ap("198.18.0.10:1"), Virtual: ap("198.18.0.100:2"), Dest: ap("198.19.0.11:3"), State: "COOKIE_ECHOED", Expires: 12345678},
			"SCTP C612000A 0001 C6120064 0002 C613000B 0003 COOKIE_ECHOED 12345678\n"},
		{"other protocol", Conn{Proto: 47, Client: ap("198.18.0.10:0"), Virtual: ap("198.18.0.100:0"), Dest: ap("198.19.0.11:0"), State: "ERR!", Expires: 5},
			"IP_47 C612000A 0000 C6120064 0000 C613000B 0000 ERR!              5\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(AppendProcConn(nil, &tc.c)); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
	// The file is the header and the lines, in order.
	var b bytes.Buffer
	WriteProcConns(&b, []Conn{cases[0].c, cases[1].c})
	if want := ProcConnHeader + cases[0].want + cases[1].want; b.String() != want {
		t.Errorf("file: got %q, want %q", b.String(), want)
	}
	// One line is formatted into a reused buffer without allocating, so a
	// table of any size streams through it.
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = AppendProcConn(buf[:0], &cases[3].c) }); n != 0 {
		t.Errorf("AppendProcConn allocates %v times per line", n)
	}
}

func TestParseProc(t *testing.T) {
	cases := []struct {
		args []string
		want string // "" for an error
	}{
		{[]string{"--proc", "ip_vs"}, "ip_vs"},
		{[]string{"--proc=ip_vs_stats"}, "ip_vs_stats"},
		{[]string{"--proc", "/proc/net/ip_vs_conn"}, "ip_vs_conn"},
		{[]string{"--proc"}, ""},
		{[]string{"--proc", "ip_vs_conn_sync"}, ""},
		{[]string{"--proc", "ip_vs", "-n"}, ""},
		{[]string{"--proc="}, ""},
		{[]string{"-L"}, ""},
	}
	for _, c := range cases {
		got, err := ParseProc(c.args)
		if c.want == "" {
			if err == nil || ExitStatus(err) != StatusFail {
				t.Errorf("%q: got %q, %v; want an error with status %d", c.args, got, err, StatusFail)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: got %q, %v; want %q", c.args, got, err, c.want)
		}
	}
	if IsProcCommand([]string{"-L", "--proc", "ip_vs"}) || !IsProcCommand([]string{"--proc=x"}) {
		t.Error("IsProcCommand: --proc is recognised only as the first word")
	}
}

func FuzzParseProc(f *testing.F) {
	f.Add("--proc", "ip_vs", "")
	f.Add("--proc=ip_vs_stats", "", "")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		args := []string{a, b, c}
		name, err := ParseProc(args)
		if err == nil && !slices.Contains(ProcFiles, name) {
			t.Fatalf("%q: accepted %q, not one of %v", args, name, ProcFiles)
		}
	})
}

func BenchmarkAppendProcConn(b *testing.B) {
	c := Conn{Proto: ipvs.ProtoTCP, Client: netip.MustParseAddrPort("198.18.0.10:40000"), Virtual: netip.MustParseAddrPort("198.18.0.100:80"),
		Dest: netip.MustParseAddrPort("198.19.0.11:8080"), State: "ESTABLISHED", Expires: 899}
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendProcConn(buf[:0], &c)
	}
}
