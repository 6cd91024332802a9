package ipvsadm

import (
	"bufio"
	"fmt"
	"io"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/golvs/golvs/ipvs"
)

// The kernel's /proc/net/ip_vs, ip_vs_stats and ip_vs_conn, byte for byte
// (ip_vs_ctl.c ip_vs_info_seq_show and ip_vs_stats_show, ip_vs_conn.c
// ip_vs_conn_seq_show; spec §3.10, §8.1). They live beside the listings
// because they show the same model (ListService, Conn); `golvs adm --proc`
// prints them and `golvs run --proc-dir` keeps them in files, so tools that
// parse /proc (node_exporter --path.procfs, prometheus/procfs, scripts)
// read golvs as they read IPVS. The quirks are the kernel's, kept on
// purpose: trailing spaces, persistence timeouts in jiffies, the IPv6
// netmask byte-swapped, "Masq" for methods the kernel has no name for.

// ProcHZ is the tick rate /proc/net/ip_vs prints persistence timeouts in
// (the kernel stores timeout × HZ and prints that). 250 is CONFIG_HZ of
// Debian's and Ubuntu's kernels.
const ProcHZ = 250

// ProcFiles are the files golvs writes, by their name under /proc/net.
var ProcFiles = []string{"ip_vs", "ip_vs_stats", "ip_vs_conn"}

// ProcConnHeader is the first line of /proc/net/ip_vs_conn.
const ProcConnHeader = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"

// procProtoName is the kernel's ip_vs_proto_name.
func procProtoName(p uint8) string {
	switch p {
	case ipvs.ProtoIP:
		return "IP"
	case ipvs.ProtoUDP:
		return "UDP"
	case ipvs.ProtoTCP:
		return "TCP"
	case ipvs.ProtoSCTP:
		return "SCTP"
	case 1:
		return "ICMP"
	case 58:
		return "ICMPv6"
	}
	return "IP_" + strconv.Itoa(int(p))
}

// procFwdName is the kernel's ip_vs_fwd_name: every method it has no name
// for (bypass) prints as Masq. FULLNAT, out of tree, keeps its own name.
func procFwdName(m ipvs.Method) string {
	switch m {
	case ipvs.MethodLocal, ipvs.MethodTunnel, ipvs.MethodRoute, ipvs.MethodFullNAT:
		return m.String()
	}
	return "Masq"
}

// appendHex4 appends an IPv4 address as %08X of its host-order value.
func appendHex4(b []byte, a netip.Addr) []byte {
	x := a.As4()
	return appendHex(b, uint64(x[0])<<24|uint64(x[1])<<16|uint64(x[2])<<8|uint64(x[3]), 8)
}

// appendPI6 appends an address as the kernel's %pI6: eight groups of four
// lower-case hex digits, nothing compressed. An IPv4 address is shown
// mapped into the first four bytes, as the kernel's union holds it.
func appendPI6(b []byte, a netip.Addr) []byte {
	x := sameFamily(a, true).As16()
	const hex = "0123456789abcdef"
	for i := 0; i < 16; i += 2 {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hex[x[i]>>4], hex[x[i]&15], hex[x[i+1]>>4], hex[x[i+1]&15])
	}
	return b
}

// appendHex appends v as upper-case hex, zero-padded to width (%0*X).
func appendHex(b []byte, v uint64, width int) []byte {
	const hex = "0123456789ABCDEF"
	var buf [16]byte
	i := len(buf)
	for v != 0 || i == len(buf) {
		i--
		buf[i] = hex[v&15]
		v >>= 4
	}
	for n := len(buf) - i; n < width; n++ {
		b = append(b, '0')
	}
	return append(b, buf[i:]...)
}

// appendInt appends v in decimal, padded with spaces to width: on the left
// (%*d) or, with left set, on the right (%-*d).
func appendInt(b []byte, v int64, width int, left bool) []byte {
	var tmp [20]byte
	d := strconv.AppendInt(tmp[:0], v, 10)
	if !left {
		for n := len(d); n < width; n++ {
			b = append(b, ' ')
		}
	}
	b = append(b, d...)
	if left {
		for n := len(d); n < width; n++ {
			b = append(b, ' ')
		}
	}
	return b
}

// padRight appends s left-aligned in width (%-*s).
func padRight(b []byte, s string, width int) []byte {
	b = append(b, s...)
	for n := len(s); n < width; n++ {
		b = append(b, ' ')
	}
	return b
}

// AppendProcConn appends one line of /proc/net/ip_vs_conn for c:
//
//	"%-3s %08X %04X %08X %04X %s %04X %-11s %7u%s\n"
//
// with the client and virtual addresses in the client's family (%pI6 for
// IPv6), the destination in its own (%08X or %pI6), Expires in seconds and
// " <pe name> <pe data>" when the conn has both. It is a pure function of
// one record, so a caller can stream a table of any size through it.
func AppendProcConn(b []byte, c *Conn) []byte {
	b = padRight(b, procProtoName(c.Proto), 3)
	v6 := c.Client.Addr().Is6()
	addr := func(b []byte, a netip.Addr, v6 bool) []byte {
		if v6 {
			return appendPI6(b, a)
		}
		return appendHex4(b, sameFamily(a, false))
	}
	b = append(b, ' ')
	b = addr(b, c.Client.Addr(), v6)
	b = append(b, ' ')
	b = appendHex(b, uint64(c.Client.Port()), 4)
	b = append(b, ' ')
	b = addr(b, c.Virtual.Addr(), v6)
	b = append(b, ' ')
	b = appendHex(b, uint64(c.Virtual.Port()), 4)
	b = append(b, ' ')
	b = addr(b, c.Dest.Addr(), c.Dest.Addr().Is6())
	b = append(b, ' ')
	b = appendHex(b, uint64(c.Dest.Port()), 4)
	b = append(b, ' ')
	b = padRight(b, c.State, 11)
	b = append(b, ' ')
	b = appendInt(b, int64(c.Expires), 7, false)
	if c.PEName != "" && c.PEData != "" {
		b = append(b, ' ')
		b = append(b, c.PEName...)
		b = append(b, ' ')
		b = append(b, c.PEData...)
	}
	return append(b, '\n')
}

// WriteProcConns writes /proc/net/ip_vs_conn: the header, then one line per
// conn (AppendProcConn).
func WriteProcConns(w io.Writer, conns []Conn) error {
	bw := bufio.NewWriter(w)
	bw.WriteString(ProcConnHeader)
	var line []byte
	for i := range conns {
		line = AppendProcConn(line[:0], &conns[i])
		bw.Write(line)
	}
	return bw.Flush()
}

// procNetmask is what the kernel prints as %08X of ntohl(svc->netmask):
// the IPv4 mask as given, and for IPv6 the prefix length that ipvsadm
// sent in host order (little-endian), so /128 shows as 80000000.
func procNetmask(s *ipvs.ServiceConfig) uint32 {
	if s.IsV6() {
		return bits.ReverseBytes32(s.Netmask)
	}
	return s.Netmask
}

// procSvcTabBits is IP_VS_SVC_TAB_BITS: the service hash tables have 256
// buckets.
const procSvcTabBits = 8

// procBucket is the kernel's service hash bucket (ip_vs_svc_hashkey, or
// ip_vs_svc_fwm_hashkey for fwmark services) with the term it takes from
// the netns's address set to 0: the real kernel mixes in a pointer, so its
// order is one of 256 permutations of this one that no tool can predict.
func procBucket(s *ipvs.ServiceConfig) uint32 {
	const mask = 1<<procSvcTabBits - 1
	if s.FWMark != 0 {
		return s.FWMark & mask
	}
	w := addrWords(s.Addr)
	fold := w[0]
	if s.Addr.Is6() {
		fold = w[0] ^ w[1] ^ w[2] ^ w[3]
	}
	port := uint32(s.Port)
	return (uint32(s.Proto) ^ fold ^ (port >> procSvcTabBits) ^ port) & mask
}

// ProcOrder returns the services in the order the kernel's seq file walks
// them: the protocol table's buckets, then the fwmark table's, and within a
// bucket the newest service first (hlist_add_head). svcs is in creation
// order.
func ProcOrder(svcs []ListService) []ListService {
	type ent struct {
		fwm    bool
		bucket uint32
		age    int
	}
	idx := make([]int, len(svcs))
	key := make([]ent, len(svcs))
	for i := range svcs {
		idx[i] = i
		c := &svcs[i].Config
		key[i] = ent{c.FWMark != 0, procBucket(c), -i}
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		x, y := key[a], key[b]
		switch {
		case x.fwm != y.fwm:
			if !x.fwm {
				return -1
			}
			return 1
		case x.bucket != y.bucket:
			return int(x.bucket) - int(y.bucket)
		}
		return x.age - y.age
	})
	out := make([]ListService, len(svcs))
	for i, j := range idx {
		out[i] = svcs[j]
	}
	return out
}

// WriteProcIPVS writes /proc/net/ip_vs for svcs (given in creation order;
// their dests in kernel list order) with the connection table size shown
// in the header.
func WriteProcIPVS(w io.Writer, size int, svcs []ListService) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "IP Virtual Server version 1.2.1 (size=%d)\n", size)
	bw.WriteString("Prot LocalAddress:Port Scheduler Flags\n")
	bw.WriteString("  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n")
	var b []byte
	for _, ls := range ProcOrder(svcs) {
		b = AppendProcService(b[:0], &ls)
		bw.Write(b)
	}
	return bw.Flush()
}

// AppendProcService appends one service of /proc/net/ip_vs and its dests.
func AppendProcService(b []byte, ls *ListService) []byte {
	s := &ls.Config
	ops := ""
	if s.Flags&ipvs.SvcOnePacket != 0 {
		ops = "ops "
	}
	switch {
	case s.FWMark != 0:
		// "FWM  %08X %s %s"
		b = append(b, "FWM  "...)
		b = appendHex(b, uint64(s.FWMark), 8)
		b = append(b, ' ')
		b = append(b, s.Sched...)
		b = append(b, ' ')
		b = append(b, ops...)
	case s.Addr.Is6():
		// "%s  [%pI6]:%04X %s " (the kernel leaves ops out here)
		b = append(b, procProtoName(s.Proto)...)
		b = append(b, "  ["...)
		b = appendPI6(b, s.Addr)
		b = append(b, "]:"...)
		b = appendHex(b, uint64(s.Port), 4)
		b = append(b, ' ')
		b = append(b, s.Sched...)
		b = append(b, ' ')
	default:
		// "%s  %08X:%04X %s %s "
		b = append(b, procProtoName(s.Proto)...)
		b = append(b, "  "...)
		b = appendHex4(b, s.Addr)
		b = append(b, ':')
		b = appendHex(b, uint64(s.Port), 4)
		b = append(b, ' ')
		b = append(b, s.Sched...)
		b = append(b, ' ')
		b = append(b, ops...)
		b = append(b, ' ')
	}
	if s.Persistent() {
		// "persistent %d %08X\n": the timeout in jiffies, as an int.
		b = append(b, "persistent "...)
		b = strconv.AppendInt(b, int64(int32(s.Timeout*ProcHZ)), 10)
		b = append(b, ' ')
		b = appendHex(b, uint64(procNetmask(s)), 8)
	}
	b = append(b, '\n')
	for i := range ls.Dests {
		d := &ls.Dests[i]
		// "  -> %08X:%04X      %-7s %-6d %-10d %-10d\n", or [%pI6] for IPv6
		b = append(b, "  -> "...)
		if d.Config.Addr.Is6() {
			b = append(b, '[')
			b = appendPI6(b, d.Config.Addr)
			b = append(b, ']')
		} else {
			b = appendHex4(b, d.Config.Addr)
		}
		b = append(b, ':')
		b = appendHex(b, uint64(d.Config.Port), 4)
		b = append(b, "      "...)
		b = padRight(b, procFwdName(d.Config.Method), 7)
		b = append(b, ' ')
		b = appendInt(b, int64(d.Config.Weight), 6, true)
		b = append(b, ' ')
		b = appendInt(b, int64(int32(d.Active)), 10, true)
		b = append(b, ' ')
		b = appendInt(b, int64(int32(d.Inact)), 10, true)
		b = append(b, '\n')
	}
	return b
}

// WriteProcStats writes /proc/net/ip_vs_stats: the director-wide counters,
// then the rates, all in hex.
func WriteProcStats(w io.Writer, tot ipvs.StatsSnapshot, r Rate) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("   Total Incoming Outgoing         Incoming         Outgoing\n")
	bw.WriteString("   Conns  Packets  Packets            Bytes            Bytes\n")
	fmt.Fprintf(bw, "%8X %8X %8X %16X %16X\n\n", tot.Conns, tot.InPkts, tot.OutPkts, tot.InBytes, tot.OutBytes)
	bw.WriteString(" Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n")
	fmt.Fprintf(bw, "%8X %8X %8X %16X %16X\n", r.CPS, r.InPPS, r.OutPPS, r.InBPS, r.OutBPS)
	return bw.Flush()
}

// `golvs adm --proc NAME` is a golvs extension of the grammar (a long
// option only, so it cannot meet an ipvsadm letter): it prints
// /proc/net/NAME as the kernel would, NAME being one of ProcFiles.

// IsProcCommand reports whether args are a --proc command.
func IsProcCommand(args []string) bool {
	return len(args) > 0 && (args[0] == "--proc" || strings.HasPrefix(args[0], "--proc="))
}

// ParseProc parses a --proc command and returns the file's name.
func ParseProc(args []string) (string, error) {
	if !IsProcCommand(args) {
		return "", failf("not a --proc command")
	}
	name, rest := "", args[1:]
	if v, ok := strings.CutPrefix(args[0], "--proc="); ok {
		name = v
	} else if len(rest) > 0 {
		name, rest = rest[0], rest[1:]
	} else {
		return "", failf("--proc: missing argument (one of %s)", strings.Join(ProcFiles, ", "))
	}
	if len(rest) > 0 {
		return "", failf("--proc %s: unexpected argument %q (--proc takes no other option)", name, rest[0])
	}
	short := strings.TrimPrefix(name, "/proc/net/")
	if !slices.Contains(ProcFiles, short) {
		return "", failf("--proc %q: no such file (allowed: %s)", name, strings.Join(ProcFiles, ", "))
	}
	return short, nil
}
