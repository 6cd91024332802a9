// Package ipvs holds the model that every other golvs package shares: the
// identity and configuration of virtual services and real servers (dests),
// the IPVS constants (forwarding methods, service and dest flags), the live
// per-dest counters that schedulers read and the connection table updates,
// and the validation rules for configuration values, so that the same
// mistake gets the same words wherever it is entered.
//
// It sits beside the packet path, not on it: nothing here touches frames.
// It must never import a golvs package (everything imports it).
package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Protocol numbers of the services IPVS balances.
const (
	ProtoIP   = 0 // fwmark templates
	ProtoTCP  = 6
	ProtoUDP  = 17
	ProtoSCTP = 132
)

// ProtoName returns the name IPVS listings use for a protocol.
func ProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoSCTP:
		return "SCTP"
	case ProtoIP:
		return "IP"
	}
	return fmt.Sprintf("%d", p)
}

// Method is a forwarding method, with the values of IP_VS_CONN_F_FWD_MASK.
type Method uint8

const (
	MethodMasq    Method = 0 // NAT, ipvsadm -m
	MethodLocal   Method = 1
	MethodTunnel  Method = 2 // ipvsadm -i
	MethodRoute   Method = 3 // DR, ipvsadm -g (the default)
	MethodBypass  Method = 4
	MethodFullNAT Method = 5 // out of tree (Alibaba LVS, DPVS)
)

// String returns the name ipvsadm's listing uses.
func (m Method) String() string {
	switch m {
	case MethodMasq:
		return "Masq"
	case MethodLocal:
		return "Local"
	case MethodTunnel:
		return "Tunnel"
	case MethodRoute:
		return "Route"
	case MethodBypass:
		return "Bypass"
	case MethodFullNAT:
		return "FullNat"
	}
	return "Unknown"
}

// Service flags (IP_VS_SVC_F_*).
const (
	SvcPersistent = 0x0001
	SvcHashed     = 0x0002
	SvcOnePacket  = 0x0004
	SvcSched1     = 0x0008 // sh-fallback, mh-fallback, flag-1
	SvcSched2     = 0x0010 // sh-port, mh-port, flag-2
	SvcSched3     = 0x0020 // flag-3
	SvcSchedMask  = SvcSched1 | SvcSched2 | SvcSched3
)

// Dest flags (IP_VS_DEST_F_*).
const (
	DestAvailable = 0x0001
	DestOverload  = 0x0002
)

// Tunnel types (IP_VS_CONN_F_TUNNEL_TYPE_*).
type TunType uint8

const (
	TunIPIP TunType = 0
	TunGUE  TunType = 1
	TunGRE  TunType = 2
)

// Tunnel flags.
const (
	TunFlagNoCsum  = 0x0
	TunFlagCsum    = 0x1
	TunFlagRemCsum = 0x2
)

// Limits of configuration values.
const (
	MaxWeight        = 1<<31 - 1 // the kernel's limit (ipvsadm itself allows 0..65535)
	MaxAdmWeight     = 65535
	MaxThreshold     = 1<<31 - 1
	MaxTimeout       = 2678400 // 31 days, ipvsadm's limit for -p and --set
	DefaultPersist   = 360     // IPVS_SVC_PERSISTENT_TIMEOUT
	DefaultScheduler = "wlc"
)

// Sentinel errors. Typed errors below wrap them so callers can errors.Is.
var (
	ErrInvalid       = errors.New("ipvs: invalid value")
	ErrServiceExists = errors.New("Service already exists")
	ErrNoService     = errors.New("No such service")
	ErrSvcNotDefined = errors.New("Service not defined")
	ErrDestExists    = errors.New("Destination already exists")
	ErrNoDest        = errors.New("No such destination")
	ErrNoScheduler   = errors.New("Scheduler or persistence engine not found")
	ErrRange         = errors.New("Numerical result out of range")
)

// ValueError names a configuration value, what was given and what is
// allowed. Its text begins with ipvsadm's own message for the same mistake,
// so scripts that match ipvsadm's words keep working.
type ValueError struct {
	Msg     string // ipvsadm's words, e.g. "illegal weight specified"
	Value   string // what was given
	Allowed string // what is allowed
}

func (e *ValueError) Error() string {
	return fmt.Sprintf("%s: %s (allowed: %s)", e.Msg, e.Value, e.Allowed)
}

func (e *ValueError) Is(target error) bool { return target == ErrInvalid }

// CheckWeight validates a dest weight. limit is MaxAdmWeight for the
// ipvsadm command line and MaxWeight elsewhere (the kernel's range).
func CheckWeight(w int64, limit int64) error {
	if w < 0 || w > limit {
		return &ValueError{"illegal weight specified", fmt.Sprint(w), fmt.Sprintf("0..%d", limit)}
	}
	return nil
}

// CheckThresholds validates a dest's upper and lower connection thresholds:
// each 0..2^31-1, and the lower one not above the upper one (the kernel
// answers ERANGE for that, including -y without -x).
func CheckThresholds(upper, lower int64) error {
	if upper < 0 || upper > MaxThreshold {
		return &ValueError{"illegal u_threshold specified", fmt.Sprint(upper), fmt.Sprintf("0..%d", MaxThreshold)}
	}
	if lower < 0 || lower > MaxThreshold {
		return &ValueError{"illegal l_threshold specified", fmt.Sprint(lower), fmt.Sprintf("0..%d", MaxThreshold)}
	}
	if lower > upper {
		return &ValueError{"Numerical result out of range", fmt.Sprintf("lower threshold %d above upper threshold %d", lower, upper), "lower <= upper (an upper threshold of 0 allows no lower threshold)"}
	}
	return nil
}

// ServiceKey identifies a virtual service: by protocol, address and port,
// or by firewall mark (Proto is then ProtoTCP and Addr/Port unset, as
// ipvsadm sends it, and FWMark non-zero).
type ServiceKey struct {
	Proto  uint8
	Addr   netip.Addr
	Port   uint16
	FWMark uint32
	V6     bool // address family for fwmark services (-6)
}

// IsV6 reports the service's address family.
func (k ServiceKey) IsV6() bool {
	if k.FWMark != 0 {
		return k.V6
	}
	return k.Addr.Is6()
}

// String renders the key as ipvsadm -S names it (-t a:p, -u a:p, -f m).
func (k ServiceKey) String() string {
	if k.FWMark != 0 {
		if k.V6 {
			return fmt.Sprintf("FWM %d IPv6", k.FWMark)
		}
		return fmt.Sprintf("FWM %d", k.FWMark)
	}
	return fmt.Sprintf("%s %s", ProtoName(k.Proto), netip.AddrPortFrom(k.Addr, k.Port))
}

// DestConfig is a real server's configuration as ipvsadm -a/-e sets it.
type DestConfig struct {
	Addr       netip.Addr
	Port       uint16
	Method     Method
	Weight     int32
	UThreshold uint32
	LThreshold uint32
	TunType    TunType
	TunPort    uint16
	TunFlags   uint16
}

// AddrPort returns the dest's address and port.
func (d DestConfig) AddrPort() netip.AddrPort { return netip.AddrPortFrom(d.Addr, d.Port) }

// ServiceConfig is a virtual service's configuration as ipvsadm -A/-E sets
// it, with its dests in kernel list order (newest first, see spec §1.1).
type ServiceConfig struct {
	ServiceKey
	Sched   string
	Flags   uint32 // Svc* flags
	Timeout uint32 // persistence timeout in seconds
	Netmask uint32 // IPv4: mask as a host-order uint32; IPv6: prefix length
	PE      string
	Dests   []DestConfig
}

// Persistent reports whether -p is set.
func (s *ServiceConfig) Persistent() bool { return s.Flags&SvcPersistent != 0 }

// Dest is the live state of one real server of one service. Its identity
// (service, address, port) never changes; its configuration and counters
// change in place, as they do in the kernel, so that connections and
// scheduler state that point at it survive configuration edits. The
// immutable service snapshot holds *Dest pointers.
type Dest struct {
	Svc  ServiceKey
	Addr netip.Addr
	Port uint16

	weight     atomic.Int32
	lastWeight atomic.Int32
	flags      atomic.Uint32
	method     atomic.Uint32
	uthresh    atomic.Uint32
	lthresh    atomic.Uint32
	tun        atomic.Uint64 // type<<32 | port<<16 | flags

	lval atomic.Uint32 // current: the effective lower threshold (l_val)

	// The counters are the current kernel's: activeconns and totalconns
	// (active + inactive normal conns); a state change moves only the
	// active count. Classic's inactconns is total - active, the same
	// number in every sequential history.
	activeConns  atomic.Int32
	totalConns   atomic.Int32
	persistConns atomic.Int32

	// sem is the kernel behaviour this dest follows; it never changes.
	sem Semantics

	mu sync.Mutex // serialises the overload decisions

	// Stats are this dest's IPVS counters (conns, packets, bytes).
	Stats Stats
	// SvcStats are its service's counters (set when the dest joins the
	// service; a dest belongs to one service).
	SvcStats *Stats

	// Next is where the data path sends frames for this dest: filled by
	// the director's neighbour resolution, read per packet.
	Next atomic.Pointer[NextHop]
}

// NextHop is the resolved layer-2 next hop of a dest.
type NextHop struct {
	IfIndex int
	SrcMAC  [6]byte
	DstMAC  [6]byte
	SrcIP   netip.Addr // the director's address on that link (DIP)
}

// NewDest creates the live state for a dest, AVAILABLE, from its config,
// with the current semantics.
func NewDest(svc ServiceKey, c DestConfig) *Dest { return Current.NewDest(svc, c) }

// NewDest creates the live state for a dest that follows semantics s: a
// zeroed dest (thresholds 0, not OVERLOAD) on which the kernel's add path
// runs (ip_vs_new_dest, then __ip_vs_update_dest with add set).
func (s Semantics) NewDest(svc ServiceKey, c DestConfig) *Dest {
	d := &Dest{Svc: svc, Addr: c.Addr, Port: c.Port, sem: s}
	d.update(c, true)
	return d
}

// Semantics returns the kernel behaviour the dest follows.
func (d *Dest) Semantics() Semantics { return d.sem }

// Update applies a new configuration to the dest (ipvsadm -e), with the
// kernel's rules for last_weight and the OVERLOAD flag (spec §1.2, §1.4).
func (d *Dest) Update(c DestConfig) { d.update(c, false) }

// Revive applies the configuration of an -a that takes the dest back from
// the trash (spec §4.6): the kernel's add path, which sets last_weight to
// the new weight even when it is 0, and keeps the counters, thresholds
// and OVERLOAD state under the same rules as an edit.
func (d *Dest) Revive(c DestConfig) { d.update(c, true) }

// update is __ip_vs_update_dest.
func (d *Dest) update(c DestConfig, add bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if add || c.Weight != 0 {
		d.lastWeight.Store(c.Weight)
	}
	d.weight.Store(c.Weight)
	d.method.Store(uint32(c.Method))
	d.tun.Store(uint64(c.TunType)<<32 | uint64(c.TunPort)<<16 | uint64(c.TunFlags))
	oldU, oldL := d.uthresh.Load(), d.lthresh.Load()
	if d.sem == Classic {
		// An edit only ever clears the flag: when u becomes 0 or grows.
		if c.UThreshold == 0 || c.UThreshold > oldU {
			d.flags.And(^uint32(DestOverload))
		}
		d.uthresh.Store(c.UThreshold)
		d.lthresh.Store(c.LThreshold)
	} else if c.UThreshold != oldU || c.LThreshold != oldL {
		// Re-evaluated only when -x or -y change (hysteresis survives).
		d.uthresh.Store(c.UThreshold)
		d.lthresh.Store(c.LThreshold)
		l := c.LThreshold
		if l == 0 {
			l = c.UThreshold - c.UThreshold>>2
		}
		d.lval.Store(l)
		d.updateOverload(0)
	}
	d.flags.Or(DestAvailable)
}

// updateOverload is the current kernel's ip_vs_dest_update_overload, run
// under d.mu: mode +1 after a bind made total == u, -1 after an unbind
// took total from l_val to l_val - 1, 0 after -x/-y changed.
func (d *Dest) updateOverload(mode int) {
	u := d.uthresh.Load()
	if u == 0 {
		d.flags.And(^uint32(DestOverload))
		return
	}
	l := d.lval.Load()
	n := uint32(d.totalConns.Load())
	setAt, keepAt := u, l
	if mode > 0 {
		setAt = l
	}
	if mode < 0 {
		keepAt = u
	}
	switch {
	case n >= setAt:
		d.flags.Or(DestOverload)
	case n >= keepAt:
	default:
		d.flags.And(^uint32(DestOverload))
	}
}

// Config returns the dest's current configuration.
func (d *Dest) Config() DestConfig {
	t := d.tun.Load()
	return DestConfig{
		Addr: d.Addr, Port: d.Port, Method: d.Method(), Weight: d.Weight(),
		UThreshold: d.uthresh.Load(), LThreshold: d.lthresh.Load(),
		TunType: TunType(t >> 32), TunPort: uint16(t >> 16), TunFlags: uint16(t),
	}
}

// Unlink marks the dest as removed from its service (not AVAILABLE).
func (d *Dest) Unlink() { d.flags.And(^uint32(DestAvailable)) }

// Weight returns the current weight.
func (d *Dest) Weight() int32 { return d.weight.Load() }

// LastWeight returns the latest non-zero weight (used by mh).
func (d *Dest) LastWeight() int32 { return d.lastWeight.Load() }

// Flags returns the Dest* flags.
func (d *Dest) Flags() uint32 { return d.flags.Load() }

// Available reports the AVAILABLE flag.
func (d *Dest) Available() bool { return d.flags.Load()&DestAvailable != 0 }

// Overloaded reports the OVERLOAD flag.
func (d *Dest) Overloaded() bool { return d.flags.Load()&DestOverload != 0 }

// Method returns the forwarding method.
func (d *Dest) Method() Method { return Method(d.method.Load()) }

// Thresholds returns the upper and lower connection thresholds.
func (d *Dest) Thresholds() (upper, lower uint32) { return d.uthresh.Load(), d.lthresh.Load() }

// ActiveConns, InactConns and PersistConns return the kernel's counters.
// InactConns is max(total - active, 0), as current kernels show it (the
// classic inactconns in every sequential history).
func (d *Dest) ActiveConns() int32 { return d.activeConns.Load() }
func (d *Dest) InactConns() int32 {
	if n := d.totalConns.Load() - d.activeConns.Load(); n > 0 {
		return n
	}
	return 0
}
func (d *Dest) PersistConns() int32 { return d.persistConns.Load() }

// TotalConns returns active + inactive normal conns (templates excluded).
func (d *Dest) TotalConns() int32 { return d.totalConns.Load() }

// Overhead is ip_vs_dest_conn_overhead in the dest's semantics (spec
// §1.3): classic (activeconns << 8) + inactconns, current
// (activeconns << 8) + totalconns, in the kernel's 32-bit arithmetic.
func (d *Dest) Overhead() uint32 {
	act := uint32(d.activeConns.Load())
	oh := act<<8 + uint32(d.totalConns.Load())
	if d.sem == Classic {
		oh -= act
	}
	return oh
}

// SetCounters sets the connection counters directly. It exists for tests
// and simulations that feed schedulers fixed counts.
func (d *Dest) SetCounters(active, inactive, persist int32) {
	d.activeConns.Store(active)
	d.totalConns.Store(active + inactive)
	d.persistConns.Store(persist)
}

// SetOverloaded sets or clears OVERLOAD directly (tests, simulations).
func (d *Dest) SetOverloaded(on bool) {
	if on {
		d.flags.Or(DestOverload)
	} else {
		d.flags.And(^uint32(DestOverload))
	}
}

// Bind counts a new connection on the dest (ip_vs_bind_dest): a template
// counts in persistconns only; a normal conn starts inactive (spec §3.2).
// Then the OVERLOAD rule of the dest's semantics (spec §1.2): classic
// checks total >= u after every bind, templates included; current sets
// the flag when this bind made total exactly u, and templates never
// touch it.
func (d *Dest) Bind(template bool) {
	if d.sem == Classic {
		d.mu.Lock()
		if template {
			d.persistConns.Add(1)
		} else {
			d.totalConns.Add(1)
		}
		if u := d.uthresh.Load(); u != 0 && uint32(d.totalConns.Load()) >= u {
			d.flags.Or(DestOverload)
		}
		d.mu.Unlock()
		return
	}
	if template {
		d.persistConns.Add(1)
		return
	}
	n := d.totalConns.Add(1)
	if u := d.uthresh.Load(); u != 0 && uint32(n) == u {
		d.mu.Lock()
		d.updateOverload(1)
		d.mu.Unlock()
	}
}

// Unbind removes a connection from the dest's counters
// (ip_vs_unbind_dest; active tells whether it counts as active) and
// applies the semantics' OVERLOAD rule (spec §1.2): classic re-checks the
// lower mark after every unbind, templates included, in the kernel's
// 32-bit arithmetic; current clears the flag when this unbind took total
// from l_val to l_val - 1.
func (d *Dest) Unbind(template, active bool) {
	if d.sem == Classic {
		d.mu.Lock()
		if template {
			d.persistConns.Add(-1)
		} else {
			if active {
				d.activeConns.Add(-1)
			}
			d.totalConns.Add(-1)
		}
		total := uint32(d.totalConns.Load())
		u, l := d.uthresh.Load(), d.lthresh.Load()
		switch {
		case l != 0:
			if total < l {
				d.flags.And(^uint32(DestOverload))
			}
		case u != 0:
			if total*4 < u*3 { // both wrap at 32 bits, as in the kernel
				d.flags.And(^uint32(DestOverload))
			}
		default:
			d.flags.And(^uint32(DestOverload))
		}
		d.mu.Unlock()
		return
	}
	if template {
		d.persistConns.Add(-1)
		return
	}
	if active {
		d.activeConns.Add(-1)
	}
	n := d.totalConns.Add(-1) + 1 // the total before this unbind
	if uint32(n) == d.lval.Load() {
		d.mu.Lock()
		d.updateOverload(-1)
		d.mu.Unlock()
	}
}

// SetActive moves one connection between the inactive and active counts
// when its protocol state changes between an inactive and an active
// state; the total does not change.
func (d *Dest) SetActive(active bool) {
	if active {
		d.activeConns.Add(1)
	} else {
		d.activeConns.Add(-1)
	}
}

// Stats are IPVS's per-dest, per-service and global counters (spec §8.1).
// Each counter is updated with atomic adds from many workers.
type Stats struct {
	Conns    atomic.Uint64
	InPkts   atomic.Uint64
	OutPkts  atomic.Uint64
	InBytes  atomic.Uint64
	OutBytes atomic.Uint64
}

// StatsSnapshot is a plain copy of Stats.
type StatsSnapshot struct {
	Conns, InPkts, OutPkts, InBytes, OutBytes uint64
}

// Snapshot reads the counters.
func (s *Stats) Snapshot() StatsSnapshot {
	return StatsSnapshot{s.Conns.Load(), s.InPkts.Load(), s.OutPkts.Load(), s.InBytes.Load(), s.OutBytes.Load()}
}

// Zero resets the counters (ipvsadm -Z).
func (s *Stats) Zero() {
	s.Conns.Store(0)
	s.InPkts.Store(0)
	s.OutPkts.Store(0)
	s.InBytes.Store(0)
	s.OutBytes.Store(0)
}

// Estimator is IPVS's rate estimator (spec §8.2): run every 2 seconds, an
// EWMA with weight 1/4 of the growth of each counter, kept scaled (rates
// of conns and packets by 2^10, of bytes by 2^5).
type Estimator struct {
	last                              StatsSnapshot
	cps, inpps, outpps, inbps, outbps int64
}

// EstimatorPeriod is how often Update must run.
const EstimatorPeriod = 2e9 // nanoseconds

// Update folds the counters' growth since the last run into the rates.
func (e *Estimator) Update(cur StatsSnapshot) {
	step := func(x *int64, delta uint64, shift uint) {
		*x += (int64(delta<<shift) - *x) >> 2
	}
	step(&e.cps, cur.Conns-e.last.Conns, 9)
	step(&e.inpps, cur.InPkts-e.last.InPkts, 9)
	step(&e.outpps, cur.OutPkts-e.last.OutPkts, 9)
	step(&e.inbps, cur.InBytes-e.last.InBytes, 4)
	step(&e.outbps, cur.OutBytes-e.last.OutBytes, 4)
	e.last = cur
}

// Reset zeroes the rates and takes cur as the new base (ipvsadm -Z).
func (e *Estimator) Reset(cur StatsSnapshot) { *e = Estimator{last: cur} }

// Rates returns cps, inpps, outpps, inbps and outbps as ipvsadm shows
// them (rounded half up from the scaled values).
func (e *Estimator) Rates() (cps, inpps, outpps, inbps, outbps uint64) {
	r := func(x int64, shift uint) uint64 {
		if x < 0 {
			return 0
		}
		return uint64((x + (1<<(shift-1) - 1)) >> shift) // +0x1FF >> 10, +0xF >> 5
	}
	return r(e.cps, 10), r(e.inpps, 10), r(e.outpps, 10), r(e.inbps, 5), r(e.outbps, 5)
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

// MarkRule classifies packets into a firewall mark, as the kernel's packet
// filter does for IPVS fwmark services: protocol (0: any), destination
// prefix, and destination ports (none: any).
type MarkRule struct {
	Mark  uint32
	Proto uint8
	Dst   netip.Prefix
	Ports []PortRange
}

// Equal reports whether two rules are the same rule.
func (r MarkRule) Equal(o MarkRule) bool {
	if r.Mark != o.Mark || r.Proto != o.Proto || r.Dst != o.Dst || len(r.Ports) != len(o.Ports) {
		return false
	}
	for i := range r.Ports {
		if r.Ports[i] != o.Ports[i] {
			return false
		}
	}
	return true
}

// Matches reports whether a packet matches the rule.
func (r *MarkRule) Matches(proto uint8, dst netip.Addr, dport uint16) bool {
	if r.Proto != 0 && r.Proto != proto {
		return false
	}
	if !r.Dst.Contains(dst) {
		return false
	}
	if len(r.Ports) == 0 {
		return true
	}
	for _, p := range r.Ports {
		if dport >= p.Lo && dport <= p.Hi {
			return true
		}
	}
	return false
}
