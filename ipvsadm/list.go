package ipvsadm

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/sched"
)

// Rate is the estimator's five rates (spec §8.2), as --rate shows them.
type Rate struct {
	CPS, InPPS, OutPPS, InBPS, OutBPS uint64
}

// ListService is what a listing shows of a service: its configuration
// (Config.Dests is ignored; Dests below is listed), its counters and
// rates, and its dests in kernel list order.
type ListService struct {
	Config ipvs.ServiceConfig
	Stats  ipvs.StatsSnapshot
	Rate   Rate
	Dests  []ListDest
}

// ListDest is what a listing shows of a dest.
type ListDest struct {
	Config                 ipvs.DestConfig
	Active, Inact, Persist uint32
	Stats                  ipvs.StatsSnapshot
	Rate                   Rate
}

// Conn is one entry of the connection table, as /proc/net/ip_vs_conn and
// ipvsadm -L -c show it. Templates have Client port 0; for fwmark
// templates Proto is ipvs.ProtoIP and Virtual is the mark as an address
// (FWMarkAddr) with port 0.
type Conn struct {
	Proto                 uint8
	Client, Virtual, Dest netip.AddrPort
	State                 string // "ESTABLISHED", "UDP", "NONE", "ASSURED", ...
	Expires               uint32 // seconds left
	PEName, PEData        string
}

// FWMarkAddr is the virtual address the kernel gives fwmark templates:
// the mark in network order in the first four bytes.
func FWMarkAddr(mark uint32, v6 bool) netip.Addr {
	b := [4]byte{byte(mark >> 24), byte(mark >> 16), byte(mark >> 8), byte(mark)}
	if v6 {
		var a [16]byte
		copy(a[:], b[:])
		return netip.AddrFrom16(a)
	}
	return netip.AddrFrom4(b)
}

// DaemonState is one running sync daemon for -L --daemon.
type DaemonState struct {
	Daemon
}

// Lister writes ipvsadm's listings. Names are resolved through Resolver
// and Services unless Format has FmtNumeric.
type Lister struct {
	Format   Format
	Size     int // connection table size shown in the header (4096 by default)
	Resolver Resolver
	Services Services
}

// NewLister returns a lister for a format that resolves names with the
// net package and /etc/services.
func NewLister(f Format) *Lister {
	return &Lister{Format: f, Size: 4096, Resolver: NetResolver{}, Services: defaultServices}
}

func (l *Lister) has(f Format) bool { return l.Format&f != 0 }

// WriteAll writes what ipvsadm -L (or, with FmtRule, ipvsadm -S) prints
// for the whole table: the version header (not for -S), the title, then
// every service with its dests, sorted unless FmtNoSort.
func (l *Lister) WriteAll(w io.Writer, svcs []ListService) error {
	bw := bufio.NewWriter(w)
	if !l.has(FmtRule) {
		fmt.Fprintf(bw, "IP Virtual Server version 1.2.1 (size=%d)\n", l.Size)
	}
	svcs = append([]ListService(nil), svcs...)
	if !l.has(FmtNoSort) {
		msort(svcs, func(a, b ListService) int { return cmpServices(&a.Config, &b.Config) })
	}
	l.title(bw)
	for i := range svcs {
		l.service(bw, &svcs[i])
	}
	return bw.Flush()
}

// WriteService writes what ipvsadm -L prints for one service: the title
// and the service, without the version header.
func (l *Lister) WriteService(w io.Writer, s ListService) error {
	bw := bufio.NewWriter(w)
	l.title(bw)
	l.service(bw, &s)
	return bw.Flush()
}

// WriteSave writes ipvsadm -S (numeric: ipvsadm -S -n).
func (l *Lister) WriteSave(w io.Writer, svcs []ListService, numeric bool) error {
	s := *l
	s.Format = FmtRule
	if numeric {
		s.Format |= FmtNumeric
	}
	return s.WriteAll(w, svcs)
}

func (l *Lister) title(w io.Writer) {
	switch {
	case l.has(FmtStats):
		fmt.Fprintf(w, "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
	case l.has(FmtRate):
		fmt.Fprintf(w, "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
	case l.has(FmtThresholds):
		fmt.Fprintf(w, "%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn")
	case l.has(FmtPersistentConn):
		fmt.Fprintf(w, "%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn")
	case l.has(FmtTunInfo):
		io.WriteString(w, "Prot LocalAddress:Port Scheduler Flags\n"+
			"  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n")
	case !l.has(FmtRule):
		io.WriteString(w, "Prot LocalAddress:Port Scheduler Flags\n"+
			"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
	}
}

// addrPort is ipvsadm's addrport_to_anyname: "a.b.c.d:port" or
// "[v6]:port", with names unless numeric, cut to 59 bytes (its buffer).
func (l *Lister) addrPort(a netip.Addr, port uint16, proto uint8) string {
	open, close := "", ""
	if !a.Is4() {
		open, close = "[", "]"
	}
	var s string
	if l.has(FmtNumeric) {
		s = open + inetNtop(a) + close + ":" + strconv.Itoa(int(port))
	} else {
		host := ""
		if l.Resolver != nil {
			host, _ = l.Resolver.LookupAddr(a)
		}
		if host == "" {
			host = inetNtop(a)
		}
		ps := ""
		if pn := protoServiceName(proto); pn != "" && l.Services != nil {
			ps, _ = l.Services.Name(port, pn)
		}
		if ps == "" {
			ps = strconv.Itoa(int(port))
		}
		s = open + host + close + ":" + ps
	}
	return truncate(s, 59)
}

func protocolName(p uint8) string {
	switch p {
	case ipvs.ProtoTCP:
		return "TCP"
	case ipvs.ProtoUDP:
		return "UDP"
	case ipvs.ProtoSCTP:
		return "SCTP"
	}
	return "?"
}

func (l *Lister) svcName(s *ipvs.ServiceConfig) string {
	if s.FWMark != 0 {
		if l.has(FmtRule) {
			if s.V6 {
				return fmt.Sprintf("-f %d -6", s.FWMark)
			}
			return fmt.Sprintf("-f %d", s.FWMark)
		}
		if s.V6 {
			return fmt.Sprintf("FWM  %d IPv6", s.FWMark)
		}
		return fmt.Sprintf("FWM  %d", s.FWMark)
	}
	vname := l.addrPort(s.Addr, s.Port, s.Proto)
	if l.has(FmtRule) {
		opt := "--xxx-service"
		switch s.Proto {
		case ipvs.ProtoTCP:
			opt = "-t"
		case ipvs.ProtoUDP:
			opt = "-u"
		case ipvs.ProtoSCTP:
			opt = "--sctp-service"
		}
		return opt + " " + vname
	}
	name := fmt.Sprintf("%-4s %s", protocolName(s.Proto), vname)
	if !s.IsV6() {
		name = truncate(name, 33)
	}
	return name
}

func maskString(s *ipvs.ServiceConfig) string {
	if s.IsV6() {
		if s.Netmask != 128 {
			return strconv.Itoa(int(int32(s.Netmask)))
		}
		return ""
	}
	if s.Netmask != 0xffffffff {
		m := s.Netmask
		return fmt.Sprintf("%d.%d.%d.%d", m>>24, m>>16&0xff, m>>8&0xff, m&0xff)
	}
	return ""
}

// fwdName is the listing name of a method ("(null)" where ipvsadm has none
// and printf is handed NULL); FullNat is golvs's.
func fwdName(m ipvs.Method) string {
	switch m {
	case ipvs.MethodMasq, ipvs.MethodLocal, ipvs.MethodTunnel, ipvs.MethodRoute, ipvs.MethodFullNAT:
		return m.String()
	}
	return "(null)"
}

// fwdSwitch is the save option of a method; --fullnat is golvs's.
func fwdSwitch(m ipvs.Method) string {
	switch m {
	case ipvs.MethodMasq:
		return "-m"
	case ipvs.MethodTunnel:
		return "-i"
	case ipvs.MethodLocal, ipvs.MethodRoute:
		return "-g"
	case ipvs.MethodFullNAT:
		return "--fullnat"
	}
	return "(null)"
}

var tunFlagNames = [...]string{"-c", "+c", "r+c"}
var tunFlagOpts = [...]string{"--tun-nocsum", "--tun-csum", "--tun-remcsum"}

func tunFlagIdx(names []string, f uint16) string {
	if int(f) < len(names) {
		return names[f]
	}
	return "(null)"
}

func tunInfo(d *ipvs.DestConfig) string {
	if d.Method != ipvs.MethodTunnel {
		return "n/a"
	}
	var s string
	switch d.TunType {
	case ipvs.TunIPIP:
		s = "ipip"
	case ipvs.TunGUE:
		s = fmt.Sprintf("gue:%d:%s", d.TunPort, tunFlagIdx(tunFlagNames[:], d.TunFlags))
	case ipvs.TunGRE:
		s = "gre:" + tunFlagIdx(tunFlagNames[:], d.TunFlags)
	default:
		return "n/a"
	}
	return truncate(s, 15)
}

func (l *Lister) service(w io.Writer, ls *ListService) {
	s := &ls.Config
	name := l.svcName(s)
	switch {
	case l.has(FmtRule):
		fmt.Fprintf(w, "-A %s -s %s", name, s.Sched)
		if s.Persistent() {
			fmt.Fprintf(w, " -p %d", s.Timeout)
			if m := maskString(s); m != "" {
				fmt.Fprintf(w, " -M %s", m)
			}
		}
		if s.PE != "" {
			fmt.Fprintf(w, " --pe %s", s.PE)
		}
		if s.Flags&ipvs.SvcOnePacket != 0 {
			io.WriteString(w, " -o")
		}
		if s.Flags&ipvs.SvcSchedMask != 0 {
			io.WriteString(w, " -b "+sched.FormatFlags(s.Sched, s.Flags))
		}
	case l.has(FmtStats):
		fmt.Fprintf(w, "%-33s", name)
		l.largenums(w, ls.Stats.Conns, ls.Stats.InPkts, ls.Stats.OutPkts, ls.Stats.InBytes, ls.Stats.OutBytes)
	case l.has(FmtRate):
		fmt.Fprintf(w, "%-33s", name)
		l.largenums(w, ls.Rate.CPS, ls.Rate.InPPS, ls.Rate.OutPPS, ls.Rate.InBPS, ls.Rate.OutBPS)
	default:
		fmt.Fprintf(w, "%s %s", name, s.Sched)
		if s.Flags&ipvs.SvcSchedMask != 0 {
			io.WriteString(w, " ("+sched.FormatFlags(s.Sched, s.Flags)+")")
		}
		if s.Persistent() {
			fmt.Fprintf(w, " persistent %d", s.Timeout)
			if m := maskString(s); m != "" {
				fmt.Fprintf(w, " mask %s", m)
			}
			if s.PE != "" {
				fmt.Fprintf(w, " pe %s", s.PE)
			}
		}
		if s.Flags&ipvs.SvcOnePacket != 0 {
			io.WriteString(w, " ops")
		}
	}
	io.WriteString(w, "\n")

	dests := ls.Dests
	if !l.has(FmtNoSort) {
		dests = append([]ListDest(nil), dests...)
		msort(dests, func(a, b ListDest) int { return cmpDests(&a.Config, &b.Config) })
	}
	// The kernel sends no protocol for fwmark services (the mark takes
	// its place), so ipvsadm's svc->protocol is 0 there and the real
	// servers' ports are never looked up by name.
	dproto := s.Proto
	if s.FWMark != 0 {
		dproto = 0
	}
	for i := range dests {
		e := &dests[i]
		d := &e.Config
		dname := l.addrPort(d.Addr, d.Port, dproto)
		if !l.has(FmtRule) && d.Addr.Is4() {
			dname = truncate(dname, 28)
		}
		switch {
		case l.has(FmtRule):
			fmt.Fprintf(w, "-a %s -r %s %s -w %d", name, dname, fwdSwitch(d.Method), d.Weight)
			if d.Method == ipvs.MethodTunnel {
				switch d.TunType {
				case ipvs.TunGRE:
					fmt.Fprintf(w, " --tun-type gre %s", tunFlagIdx(tunFlagOpts[:], d.TunFlags))
				case ipvs.TunGUE:
					fmt.Fprintf(w, " --tun-type gue --tun-port %d %s", d.TunPort, tunFlagIdx(tunFlagOpts[:], d.TunFlags))
				case ipvs.TunIPIP:
					io.WriteString(w, " --tun-type ipip")
				}
			}
			io.WriteString(w, "\n")
		case l.has(FmtStats):
			fmt.Fprintf(w, "  -> %-28s", dname)
			l.largenums(w, e.Stats.Conns, e.Stats.InPkts, e.Stats.OutPkts, e.Stats.InBytes, e.Stats.OutBytes)
			io.WriteString(w, "\n")
		case l.has(FmtRate):
			fmt.Fprintf(w, "  -> %-28s %8d %8d %8d", dname, e.Rate.CPS, e.Rate.InPPS, e.Rate.OutPPS)
			l.largenums(w, e.Rate.InBPS, e.Rate.OutBPS)
			io.WriteString(w, "\n")
		case l.has(FmtThresholds):
			fmt.Fprintf(w, "  -> %-28s %-10d %-10d %-10d %-10d\n", dname, d.UThreshold, d.LThreshold, e.Active, e.Inact)
		case l.has(FmtPersistentConn):
			fmt.Fprintf(w, "  -> %-28s %-9d %-11d %-10d %-10d\n", dname, uint32(d.Weight), e.Persist, e.Active, e.Inact)
		case l.has(FmtTunInfo):
			fmt.Fprintf(w, "  -> %-28s %-7s %-13s %-6d %-10d %-10d\n", dname, fwdName(d.Method), tunInfo(d), d.Weight, e.Active, e.Inact)
		default:
			fmt.Fprintf(w, "  -> %-28s %-7s %-6d %-10d %-10d\n", dname, fwdName(d.Method), d.Weight, e.Active, e.Inact)
		}
	}
}

func (l *Lister) largenums(w io.Writer, vs ...uint64) {
	for _, v := range vs {
		io.WriteString(w, Largenum(v, l.has(FmtExact)))
	}
}

// Largenum is ipvsadm's print_largenum: nine characters, scaled to K, M,
// G or T without --exact; with --exact right-aligned in max(9, digits+1).
func Largenum(v uint64, exact bool) string {
	if exact {
		s := strconv.FormatUint(v, 10)
		width := 9
		if len(s) > 8 {
			width = len(s) + 1
		}
		return fmt.Sprintf("%*s", width, s)
	}
	switch {
	case v < 100000000:
		return fmt.Sprintf("%9d", v)
	case v < 1000000000:
		return fmt.Sprintf("%8dK", v/1000)
	case v < 100000000000:
		return fmt.Sprintf("%8dM", v/1000000)
	case v < 100000000000000:
		return fmt.Sprintf("%8dG", v/1000000000)
	}
	return fmt.Sprintf("%8dT", v/1000000000000)
}

// WriteTimeout writes ipvsadm -L --timeout.
func WriteTimeout(w io.Writer, t Timeouts) error {
	_, err := fmt.Fprintf(w, "Timeout (tcp tcpfin udp): %d %d %d\n", t.TCP, t.TCPFin, t.UDP)
	return err
}

// WriteDaemon writes ipvsadm -L --daemon: master first, then backup.
func WriteDaemon(w io.Writer, ds []DaemonState) error {
	bw := bufio.NewWriter(w)
	for _, state := range []int{DaemonMaster, DaemonBackup} {
		for _, d := range ds {
			if d.State != state {
				continue
			}
			typ := "master"
			if state == DaemonBackup {
				typ = "backup"
			}
			fmt.Fprintf(bw, "%s sync daemon (mcast=%s, syncid=%d", typ, d.McastIfn, d.SyncID)
			if d.SyncMaxlen != 0 {
				fmt.Fprintf(bw, ", maxlen=%d", d.SyncMaxlen)
			}
			if d.McastGroup.IsValid() {
				fmt.Fprintf(bw, ", group=%s", inetNtop(d.McastGroup))
			}
			if d.McastPort != 0 {
				fmt.Fprintf(bw, ", port=%d", d.McastPort)
			}
			if d.McastTTL != 0 {
				fmt.Fprintf(bw, ", ttl=%d", d.McastTTL)
			}
			io.WriteString(bw, ")\n")
		}
	}
	return bw.Flush()
}

// WriteConns writes ipvsadm -L -c (with --persistent-conn when the format
// has FmtPersistentConn).
func (l *Lister) WriteConns(w io.Writer, conns []Conn) error {
	bw := bufio.NewWriter(w)
	io.WriteString(bw, "IPVS connection entries\n")
	pc := l.has(FmtPersistentConn)
	if pc {
		fmt.Fprintf(bw, "pro expire %-11s %-18s %-18s %-18s %-16s %s\n", "state", "source", "virtual", "destination", "pe name", "pe_data")
	} else {
		fmt.Fprintf(bw, "pro expire %-11s %-18s %-18s %s\n", "state", "source", "virtual", "destination")
	}
	for _, c := range conns {
		proto := ipvs.ProtoName(c.Proto)
		p := c.Proto
		if p != ipvs.ProtoTCP && p != ipvs.ProtoUDP && p != ipvs.ProtoSCTP {
			p = 0
		}
		vaddr := c.Virtual.Addr()
		if c.Client.Addr().Is6() != vaddr.Is6() {
			// ipvsadm reads the virtual address in the client's family.
			vaddr = sameFamily(vaddr, c.Client.Addr().Is6())
		}
		cname := l.addrPort(c.Client.Addr(), c.Client.Port(), p)
		vname := l.addrPort(vaddr, c.Virtual.Port(), p)
		dname := l.addrPort(c.Dest.Addr(), c.Dest.Port(), p)
		exp := fmt.Sprintf("%02d:%02d", c.Expires/60, c.Expires%60)
		state := truncate(c.State, 15)
		if pc && c.PEName != "" && c.PEData != "" {
			fmt.Fprintf(bw, "%-3s %-6s %-11s %-18s %-18s %-16s %-18s %s\n", proto, exp, state, cname, vname, dname, firstWord(c.PEName), firstWord(c.PEData))
		} else {
			fmt.Fprintf(bw, "%-3s %-6s %-11s %-18s %-18s %s\n", proto, exp, state, cname, vname, dname)
		}
	}
	return bw.Flush()
}

func sameFamily(a netip.Addr, v6 bool) netip.Addr {
	switch {
	case !a.IsValid() && v6:
		return netip.IPv6Unspecified()
	case !a.IsValid():
		return netip.IPv4Unspecified()
	case a.Is4() != v6:
		return a
	}
	if v6 {
		b := a.As4()
		var x [16]byte
		copy(x[:], b[:])
		return netip.AddrFrom16(x)
	}
	b := a.As16()
	return netip.AddrFrom4([4]byte{b[0], b[1], b[2], b[3]})
}

func firstWord(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return ""
}

// addrWords is an address as libipvs's comparisons see it: IPv4 in the
// first word, the rest zero.
func addrWords(a netip.Addr) [4]uint32 {
	var w [4]uint32
	if a.Is4() {
		b := a.As4()
		w[0] = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		return w
	}
	b := a.As16()
	for i := range w {
		w[i] = uint32(b[4*i])<<24 | uint32(b[4*i+1])<<16 | uint32(b[4*i+2])<<8 | uint32(b[4*i+3])
	}
	return w
}

// sub32 is libipvs's comparison of two unsigned 32-bit keys: their
// difference kept as a signed int, so keys more than 2^31 apart compare
// backwards (spec §6.5).
func sub32(a, b uint32) int { return int(int32(a - b)) }

func svcAF(s *ipvs.ServiceConfig) int {
	if s.IsV6() {
		return afInet6
	}
	return afInet
}

// cmpServices is libipvs's ipvs_cmp_services.
func cmpServices(a, b *ipvs.ServiceConfig) int {
	if r := sub32(a.FWMark, b.FWMark); r != 0 {
		return r
	}
	if r := svcAF(a) - svcAF(b); r != 0 {
		return r
	}
	if r := int(a.Proto) - int(b.Proto); r != 0 {
		return r
	}
	wa, wb := addrWords(a.Addr), addrWords(b.Addr)
	r := 0
	if svcAF(a) == afInet6 {
		for i := 0; r == 0 && i < 4; i++ {
			r = sub32(wa[i], wb[i])
		}
	} else {
		r = sub32(wa[0], wb[0])
	}
	if r != 0 {
		return r
	}
	return int(a.Port) - int(b.Port)
}

// cmpDests is libipvs's ipvs_cmp_dests.
func cmpDests(a, b *ipvs.DestConfig) int {
	wa, wb := addrWords(a.Addr), addrWords(b.Addr)
	r := 0
	if a.Addr.Is6() {
		for i := 0; r == 0 && i < 4; i++ {
			r = sub32(wa[i], wb[i])
		}
	} else {
		r = sub32(wa[0], wb[0])
	}
	if r != 0 {
		return r
	}
	return int(a.Port) - int(b.Port)
}

// msort is glibc's qsort as it runs for these small arrays (msort: a top
// down merge sort that splits n into n/2 and n-n/2 and takes from the left
// run while cmp <= 0). With libipvs's non-transitive comparisons only the
// exact algorithm gives the same order.
func msort[T any](a []T, cmp func(x, y T) int) {
	if len(a) <= 1 {
		return
	}
	tmp := make([]T, len(a))
	msortRec(a, tmp, cmp)
}

func msortRec[T any](a, tmp []T, cmp func(x, y T) int) {
	n := len(a)
	if n <= 1 {
		return
	}
	n1 := n / 2
	b1, b2 := a[:n1], a[n1:]
	msortRec(b1, tmp, cmp)
	msortRec(b2, tmp, cmp)
	k, i, j := 0, 0, 0
	for i < len(b1) && j < len(b2) {
		if cmp(b1[i], b2[j]) <= 0 {
			tmp[k] = b1[i]
			i++
		} else {
			tmp[k] = b2[j]
			j++
		}
		k++
	}
	for i < len(b1) {
		tmp[k] = b1[i]
		i++
		k++
	}
	// what is left of b2 is already in place
	copy(a, tmp[:k])
}
