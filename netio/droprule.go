package netio

import (
	"encoding/binary"
	"errors"
	"fmt"
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
// finds and replaces; Close removes them.

// DropTablePrefix starts the name of every drop-rule table.
const DropTablePrefix = "golvs-"

// DropTableName is the drop-rule table of an interface.
func DropTableName(ifname string) string { return DropTablePrefix + ifname }

// ErrNoNftables says the kernel has no nftables netdev support.
var ErrNoNftables = errors.New("netio: the kernel has no nftables netdev ingress support (nf_tables, nf_tables_netdev, nft_fib_netdev)")

// DropRule is the installed drop rule on a set of interfaces.
type DropRule struct {
	conn   *nftables.Conn
	tables []*dropTable
	// Stale names the tables an earlier golvs left behind that Open
	// removed.
	Stale []string
}

type dropTable struct {
	t      *nftables.Table
	c      *nftables.Chain
	sets   [4]*nftables.Set // dst3, dst2, src3, src2
	ifname string
}

var (
	key3 = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	key2 = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto)
)

// OpenDropRule installs empty drop-rule tables on the interfaces, in the
// calling thread's network namespace, after removing any a previous golvs
// left there. A kernel without nftables netdev support gives an error
// that is ErrNoNftables.
func OpenDropRule(ifnames []string) (*DropRule, error) {
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, dropErr("netlink", err)
	}
	r := &DropRule{conn: conn}
	fail := func(op string, err error) (*DropRule, error) {
		r.closeConn()
		return nil, dropErr(op, err)
	}
	existing, err := conn.ListTablesOfFamily(nftables.TableFamilyNetdev)
	if err != nil {
		return fail("listing tables", err)
	}
	for _, name := range ifnames {
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
			return fail("removing stale tables", err)
		}
	}
	for _, name := range ifnames {
		dt := &dropTable{ifname: name}
		dt.t = conn.AddTable(&nftables.Table{Name: DropTableName(name), Family: nftables.TableFamilyNetdev})
		for i, n := range []string{"dst3", "dst2", "src3", "src2"} {
			s := &nftables.Set{Table: dt.t, Name: n, KeyType: key3, Concatenation: true}
			if i%2 == 1 {
				s.KeyType = key2
			}
			if err := conn.AddSet(s, nil); err != nil {
				return fail("set "+n, err)
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
		if unsupported(err) {
			r.closeConn()
			return nil, fmt.Errorf("%w: %v", ErrNoNftables, err)
		}
		return fail("creating tables", err)
	}
	return r, nil
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

// Tables names the installed tables.
func (r *DropRule) Tables() []string {
	var out []string
	for _, t := range r.tables {
		out = append(out, t.t.Name)
	}
	return out
}

// Describe says, for `golvs run`'s "relies on" lines, what is installed.
func (r *DropRule) Describe() string {
	var names []string
	for _, t := range r.tables {
		names = append(names, "netdev "+t.t.Name)
	}
	return fmt.Sprintf("nftables %s: the kernel drops, at ingress (after golvs's packet sockets have their copy, before IP), the frames golvs forwards (to its services; NAT/FULLNAT replies from real servers) unless addressed to this host; removed at exit, replaced at the next start after a crash",
		strings.Join(names, ", "))
}

// Set replaces what the rule drops, in one transaction: IPv4 TCP/UDP
// frames to one of dst, and from one of src (Proto 0 stands for TCP and
// UDP; Port 0 for any port; Bits < 32 for a prefix).
func (r *DropRule) Set(dst, src []Match) error {
	var elems [4][]nftables.SetElement
	var rules [][]expr.Any
	seen := map[[2]Match]bool{}
	add := func(m Match, isSrc bool) {
		if m.Bits == 0 || m.Bits > 32 {
			m.Bits = 32
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
			switch {
			case m.Bits < 32:
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
			r.conn.AddRule(&nftables.Rule{Table: t.t, Chain: t.c, Exprs: setRule(s, i >= 2, i%2 == 0)})
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

func addrOff(isSrc bool) (addr, port uint32) {
	if isSrc {
		return offSaddr, offSport
	}
	return offDaddr, offDport
}

// ipv4 matches IPv4 frames (in the netdev family every EtherType passes).
func ipv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(unix.ETH_P_IP)},
	}
}

// unicastDrop drops the frame unless it is addressed to this host (or to
// a broadcast or multicast address).
func unicastDrop() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_UNICAST)},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

func setRule(s *nftables.Set, isSrc, port bool) []expr.Any {
	ao, po := addrOff(isSrc)
	ex := ipv4()
	ex = append(ex,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: ao, Len: 4},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9})
	if port {
		ex = append(ex, &expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: po, Len: 2})
	}
	ex = append(ex, &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
	return append(ex, unicastDrop()...)
}

func prefixRule(m Match, isSrc bool) []expr.Any {
	ao, po := addrOff(isSrc)
	mask := binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-uint32(m.Bits)))
	net := binary.BigEndian.Uint32(m.Addr[:]) & binary.BigEndian.Uint32(mask)
	ex := ipv4()
	ex = append(ex,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: ao, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint32(nil, net)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{m.Proto}})
	if m.Port != 0 {
		ex = append(ex,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: po, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(m.Port)})
	}
	return append(ex, unicastDrop()...)
}

// Close removes the tables.
func (r *DropRule) Close() error {
	if r == nil || r.conn == nil {
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
