package netio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The drop rule. golvs's packet sockets get their copy of each frame
// before the kernel's netdev ingress hook; without more, the kernel then
// also runs every frame golvs forwards through its IP stack (route lookup,
// then a silent drop, as IPv4 forwarding is off and the VIPs are not its
// own). A DropRule is an nftables table per served interface, family
// netdev, with a base chain on the ingress hook that drops exactly the
// frames golvs forwards:
//
//	table netdev golvs-IFNAME {
//		set dst3 { type ipv4_addr . inet_proto . inet_service }  # VIP:port
//		set dst2 { type ipv4_addr . inet_proto }                 # VIP, any port
//		set src3 { type ipv4_addr . inet_proto . inet_service }  # NAT/FULLNAT RIP:port
//		set src2 { type ipv4_addr . inet_proto }                 # RIP, any port
//		chain ingress {
//			type filter hook ingress device IFNAME priority 0; policy accept;
//			meta protocol ip ip daddr . meta l4proto . th dport @dst3 fib daddr type unicast drop
//			meta protocol ip ip daddr . meta l4proto @dst2 fib daddr type unicast drop
//			... the same for src3/src2 with ip saddr and th sport,
//			... the same four for IPv6 (sets dst3_6 ... of ipv6_addr keys,
//			    meta protocol ip6, ip6 daddr/saddr: the transport header
//			    is found past any extension headers),
//			... and one rule per prefix match (fwmark services)
//		}
//	}
//
// "fib daddr type unicast" keeps the host's own traffic: a frame to one of
// the director's addresses (a health check's reply from a real server's
// service port), or to a broadcast or multicast address, is never dropped.
// Non-first fragments carry no ports and are never dropped either.
//
// The tables are named after the interface, so a golvs killed without
// cleaning up leaves tables that the next start on the same interface
// finds and replaces; Close removes them. A successor in a graceful
// restart adopts its predecessor's (AdoptDropRule) and replaces them once
// the predecessor is gone (Take), which lets go of them without removing
// them (Forget).

// DropTablePrefix starts the name of every drop-rule table.
const DropTablePrefix = "golvs-"

// DropTableName is the drop-rule table of an interface.
func DropTableName(ifname string) string { return DropTablePrefix + ifname }

// ErrNoNftables says the kernel has no nftables netdev support.
var ErrNoNftables = errors.New("netio: the kernel has no nftables netdev ingress support (nf_tables, nf_tables_netdev, nft_fib_netdev)")

// DropRule is the installed drop rule on a set of interfaces.
type DropRule struct {
	conn    *nftables.Conn
	ifnames []string
	tables  []*dropTable
	// pending: adopted (AdoptDropRule), not yet taken; dst and src are
	// what Set last gave, for Take.
	pending  bool
	dst, src []Match
	// Stale names the tables an earlier golvs left behind that Open
	// removed.
	Stale []string
}

type dropTable struct {
	t      *nftables.Table
	c      *nftables.Chain
	sets   [8]*nftables.Set // dst3, dst2, src3, src2, then the same for IPv6
	ifname string
}

var (
	key3  = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	key2  = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto)
	key36 = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
	key26 = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto)
)

var setNames = [8]string{"dst3", "dst2", "src3", "src2", "dst3_6", "dst2_6", "src3_6", "src2_6"}

// OpenDropRule installs empty drop-rule tables on the interfaces, in the
// calling thread's network namespace, after removing any a previous golvs
// left there. A kernel without nftables netdev support gives an error
// that is ErrNoNftables.
func OpenDropRule(ifnames []string) (*DropRule, error) {
	r, err := newDropRule(ifnames)
	if err != nil {
		return nil, err
	}
	if err := r.install(); err != nil {
		r.closeConn()
		return nil, err
	}
	return r, nil
}

// AdoptDropRule opens the drop rule of a director that takes over from a
// running golvs (a graceful restart): the predecessor's tables, which
// drop what it forwards, stay as they are, and Set only records what to
// drop, until Take replaces them with this director's. Closed before
// Take, it leaves them alone: the takeover failed and the predecessor
// carries on with its own.
func AdoptDropRule(ifnames []string) (*DropRule, error) {
	r, err := newDropRule(ifnames)
	if err != nil {
		return nil, err
	}
	// Fail now, not at Take, on a kernel without nftables.
	if _, err := r.conn.ListTablesOfFamily(nftables.TableFamilyNetdev); err != nil {
		r.closeConn()
		if unsupported(err) {
			return nil, fmt.Errorf("%w: %v", ErrNoNftables, err)
		}
		return nil, dropErr("listing tables", err)
	}
	r.pending = true
	return r, nil
}

func newDropRule(ifnames []string) (*DropRule, error) {
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, dropErr("netlink", err)
	}
	return &DropRule{conn: conn, ifnames: slices.Clone(ifnames)}, nil
}

// install removes the interfaces' tables that are there (a predecessor's,
// or ones a golvs that did not stop cleanly left: named in Stale) and
// creates empty ones.
func (r *DropRule) install() error {
	conn := r.conn
	existing, err := conn.ListTablesOfFamily(nftables.TableFamilyNetdev)
	if err != nil {
		if unsupported(err) {
			return fmt.Errorf("%w: %v", ErrNoNftables, err)
		}
		return dropErr("listing tables", err)
	}
	for _, name := range r.ifnames {
		tn := DropTableName(name)
		for _, t := range existing {
			if t.Name == tn {
				conn.DelTable(t)
				r.Stale = append(r.Stale, tn)
			}
		}
	}
	if len(r.Stale) > 0 {
		if err := conn.Flush(); err != nil {
			return dropErr("removing stale tables", err)
		}
	}
	r.tables = nil
	for _, name := range r.ifnames {
		dt := &dropTable{ifname: name}
		dt.t = conn.AddTable(&nftables.Table{Name: DropTableName(name), Family: nftables.TableFamilyNetdev})
		for i, n := range setNames {
			s := &nftables.Set{Table: dt.t, Name: n, KeyType: key3, Concatenation: true}
			switch {
			case i >= 4 && i%2 == 1:
				s.KeyType = key26
			case i >= 4:
				s.KeyType = key36
			case i%2 == 1:
				s.KeyType = key2
			}
			if err := conn.AddSet(s, nil); err != nil {
				return dropErr("set "+n, err)
			}
			dt.sets[i] = s
		}
		dt.c = conn.AddChain(&nftables.Chain{
			Name:     "ingress",
			Table:    dt.t,
			Type:     nftables.ChainTypeFilter,
			Hooknum:  nftables.ChainHookIngress,
			Priority: nftables.ChainPriorityFilter,
			Device:   name,
		})
		r.tables = append(r.tables, dt)
	}
	if err := conn.Flush(); err != nil {
		r.tables = nil
		if unsupported(err) {
			return fmt.Errorf("%w: %v", ErrNoNftables, err)
		}
		return dropErr("creating tables", err)
	}
	return nil
}

// Pending says the rule was adopted and not yet taken (AdoptDropRule).
func (r *DropRule) Pending() bool { return r.pending }

// Take replaces the predecessor's tables of an adopted rule with this
// director's, dropping what Set last gave. A rule not adopted, or taken
// already, is left as it is.
func (r *DropRule) Take() error {
	if !r.pending {
		return nil
	}
	r.Stale = nil
	if err := r.install(); err != nil {
		return err
	}
	r.pending = false
	return r.Set(r.dst, r.src)
}

// Forget lets go of the rule without removing its tables: a successor
// that took over (AdoptDropRule) replaces them.
func (r *DropRule) Forget() {
	if r != nil {
		r.closeConn()
	}
}

func unsupported(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.EAFNOSUPPORT, unix.EPROTONOSUPPORT, unix.ENOENT} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func dropErr(op string, err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("drop rule: %s: %w", op, ErrPermission)
	}
	return fmt.Errorf("netio: drop rule: %s: %w", op, err)
}

// Tables names the tables: installed, or (adopted) to be taken.
func (r *DropRule) Tables() []string {
	var out []string
	for _, n := range r.ifnames {
		out = append(out, DropTableName(n))
	}
	return out
}

// Describe says, for `golvs run`'s "relies on" lines, what is installed.
func (r *DropRule) Describe() string {
	var names []string
	for _, n := range r.Tables() {
		names = append(names, "netdev "+n)
	}
	return fmt.Sprintf("nftables %s: the kernel drops, at ingress (after golvs's packet sockets have their copy, before IP), the frames golvs forwards (to its services; NAT/FULLNAT replies from real servers) unless addressed to this host; removed at exit, handed to a successor (--takeover), replaced at the next start after a crash",
		strings.Join(names, ", "))
}

// Set replaces what the rule drops, in one transaction: IPv4 and IPv6
// TCP/UDP frames to one of dst, and from one of src (Proto 0 stands for
// TCP and UDP; Port 0 for any port; Bits short of the address for a
// prefix).
func (r *DropRule) Set(dst, src []Match) error {
	if r.pending {
		r.dst, r.src = slices.Clone(dst), slices.Clone(src)
		return nil
	}
	if r.conn == nil {
		return errors.New("netio: drop rule: closed")
	}
	var elems [8][]nftables.SetElement
	var rules [][]expr.Any
	seen := map[[2]Match]bool{}
	add := func(m Match, isSrc bool) {
		full := uint8(32)
		if m.V6 {
			full = 128
		}
		if m.Bits == 0 || m.Bits > full {
			m.Bits = full
		}
		protos := []uint8{m.Proto}
		if m.Proto == 0 {
			protos = []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP}
		}
		for _, p := range protos {
			if p != unix.IPPROTO_TCP && p != unix.IPPROTO_UDP {
				continue // golvs forwards only TCP and UDP
			}
			m := m
			m.Proto = p
			k := [2]Match{m}
			if isSrc {
				k[1].Proto = 1
			}
			if seen[k] {
				continue
			}
			seen[k] = true
			set := 0
			if isSrc {
				set = 2
			}
			if m.V6 {
				set += 4
			}
			switch {
			case m.Bits < full:
				rules = append(rules, prefixRule(m, isSrc))
			case m.Port == 0:
				elems[set+1] = append(elems[set+1], nftables.SetElement{Key: key(m, false)})
			default:
				elems[set] = append(elems[set], nftables.SetElement{Key: key(m, true)})
			}
		}
	}
	for _, m := range dst {
		add(m, false)
	}
	for _, m := range src {
		add(m, true)
	}
	for _, t := range r.tables {
		r.conn.FlushChain(t.c)
		for i, s := range t.sets {
			r.conn.FlushSet(s)
			if len(elems[i]) == 0 {
				continue // no rule: a frame costs no lookup in an empty set
			}
			if err := r.conn.SetAddElements(s, elems[i]); err != nil {
				return dropErr("set elements", err)
			}
			r.conn.AddRule(&nftables.Rule{Table: t.t, Chain: t.c, Exprs: setRule(s, i%4 >= 2, i%2 == 0, i >= 4)})
		}
		for _, ex := range rules {
			r.conn.AddRule(&nftables.Rule{Table: t.t, Chain: t.c, Exprs: ex})
		}
	}
	if err := r.conn.Flush(); err != nil {
		return dropErr("updating", err)
	}
	return nil
}

// key is a set element: the address, the protocol and (with port) the
// port, each padded to 4 bytes as nftables lays concatenations out.
func key(m Match, port bool) []byte {
	if m.V6 {
		b := make([]byte, 20, 24)
		copy(b, m.Addr6[:])
		b[16] = m.Proto
		if port {
			b = b[:24]
			binary.BigEndian.PutUint16(b[20:], m.Port)
		}
		return b
	}
	b := make([]byte, 8, 12)
	copy(b, m.Addr[:])
	b[4] = m.Proto
	if port {
		b = b[:12]
		binary.BigEndian.PutUint16(b[8:], m.Port)
	}
	return b
}

// Offsets in the IPv4 and TCP/UDP headers.
const (
	offSaddr = 12
	offDaddr = 16
	offSport = 0
	offDport = 2
)

// Offsets of the IPv6 addresses.
const (
	offSaddr6 = 8
	offDaddr6 = 24
)

func addrOff(isSrc, v6 bool) (addr, port, alen uint32) {
	switch {
	case isSrc && v6:
		return offSaddr6, offSport, 16
	case v6:
		return offDaddr6, offDport, 16
	case isSrc:
		return offSaddr, offSport, 4
	}
	return offDaddr, offDport, 4
}

// ipv4 matches IPv4 frames (ipv6 IPv6 ones: in the netdev family every
// EtherType passes).
func ipv4() []expr.Any { return etherType(unix.ETH_P_IP) }

func ipv6() []expr.Any { return etherType(unix.ETH_P_IPV6) }

func etherType(t uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(t)},
	}
}

// unicastDrop drops the frame unless it is addressed to this host (or to
// a broadcast or multicast address). For IPv4 the kernel types any
// address it does not own as unicast. For IPv6 an address without a
// route types as unreachable, and the stack would answer it with a "no
// route" error: IPv6 frames are dropped unless addressed to this host
// (local, anycast) or to a multicast group.
func unicastDrop(v6 bool) []expr.Any {
	var ex []expr.Any
	if v6 {
		ex = []expr.Any{&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true}}
		for _, t := range []uint32{unix.RTN_LOCAL, unix.RTN_ANYCAST, unix.RTN_MULTICAST} {
			ex = append(ex, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(t)})
		}
	} else {
		ex = []expr.Any{
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_UNICAST)},
		}
	}
	return append(ex, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
}

func setRule(s *nftables.Set, isSrc, port, v6 bool) []expr.Any {
	ao, po, al := addrOff(isSrc, v6)
	ex := ipv4()
	// Concatenated registers: an address, then the protocol and the port
	// in the next 4-byte registers (an IPv6 address takes four).
	preg, treg := uint32(9), uint32(10)
	if v6 {
		ex = ipv6()
		preg, treg = 12, 13
	}
	ex = append(ex,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: ao, Len: al},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: preg})
	if port {
		ex = append(ex, &expr.Payload{DestRegister: treg, Base: expr.PayloadBaseTransportHeader, Offset: po, Len: 2})
	}
	ex = append(ex, &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
	return append(ex, unicastDrop(v6)...)
}

func prefixRule(m Match, isSrc bool) []expr.Any {
	ao, po, al := addrOff(isSrc, m.V6)
	addr := m.Addr[:]
	ex := ipv4()
	if m.V6 {
		addr = m.Addr6[:]
		ex = ipv6()
	}
	mask := make([]byte, al)
	net := make([]byte, al)
	for i := range mask {
		keep := min(max(int(m.Bits)-8*i, 0), 8)
		mask[i] = byte(uint16(0xff00) >> keep)
		net[i] = addr[i] & mask[i]
	}
	ex = append(ex,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: ao, Len: al},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: al, Mask: mask, Xor: make([]byte, al)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{m.Proto}})
	if m.Port != 0 {
		ex = append(ex,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: po, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(m.Port)})
	}
	return append(ex, unicastDrop(m.V6)...)
}

// Close removes the tables (an adopted rule not taken: the
// predecessor's stay).
func (r *DropRule) Close() error {
	if r == nil || r.conn == nil {
		return nil
	}
	if r.pending {
		r.closeConn()
		return nil
	}
	for _, t := range r.tables {
		r.conn.DelTable(t.t)
	}
	err := r.conn.Flush()
	r.closeConn()
	if err != nil {
		return dropErr("removing tables", err)
	}
	return nil
}

func (r *DropRule) closeConn() {
	if r.conn != nil {
		_ = r.conn.CloseLasting()
		r.conn = nil
	}
}
