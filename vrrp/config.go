package vrrp

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// VAddr is a virtual address and the interface it lives on ("": the
// instance's interface), as keepalived's `virtual_ipaddress { A dev D }`.
type VAddr struct {
	Addr netip.Addr
	Dev  string
}

func (v VAddr) String() string {
	if v.Dev == "" {
		return v.Addr.String()
	}
	return v.Addr.String() + " dev " + v.Dev
}

// GARP is keepalived's gratuitous ARP schedule (its vrrp_garp_* and
// garp_* settings). Zero values take keepalived's defaults, except where
// a Set flag says a zero was meant.
type GARP struct {
	// MasterDelay: the second round after becoming master (garp_master_delay,
	// default 5 s; NoSecondRound for none).
	MasterDelay   time.Duration
	NoSecondRound bool
	// MasterRepeat: ARPs per address in a round (garp_master_repeat,
	// default 5).
	MasterRepeat int
	// MasterRefresh: a round every so often while master
	// (garp_master_refresh, default 0: none), of RefreshRepeat ARPs each
	// (garp_master_refresh_repeat, default 1).
	MasterRefresh time.Duration
	RefreshRepeat int
	// Interval between two ARPs on an interface (garp_interval, default 0).
	Interval time.Duration
	// LowerPrioRepeat: ARPs per address when a master hears a lower
	// priority advert (garp_lower_prio_repeat, default MasterRepeat).
	LowerPrioRepeat int
}

// Instance configures one VRRP instance (keepalived's vrrp_instance).
type Instance struct {
	Name      string
	Interface string
	VRID      int // 1..255
	// Priority is 1..255 (255: the address owner); default 100.
	Priority int
	// Interval is advert_int (default 1 s): whole seconds (1..255) for
	// version 2, centiseconds (10 ms..40.95 s) for version 3.
	Interval time.Duration
	Version  int // 2 (default, as keepalived) or 3
	// NoPreempt keeps a higher-priority backup from taking over from a
	// lower-priority master (keepalived's nopreempt).
	NoPreempt bool
	// PreemptDelay holds preemption back for this long after start or
	// after first seeing a lower-priority master (preempt_delay).
	PreemptDelay time.Duration
	// StartMaster is keepalived's `state MASTER`: become master after one
	// advertisement interval if no one better speaks, instead of three.
	StartMaster bool
	// AuthPass is version 2's simple password (auth_type PASS), at most 8
	// characters.
	AuthPass string
	// UnicastSrc and UnicastPeers send adverts to each peer instead of
	// the multicast group (unicast_src_ip, unicast_peer); an advert from
	// an address that is not a peer is dropped.
	UnicastSrc   netip.Addr
	UnicastPeers []netip.Addr
	// Addrs are the virtual addresses (virtual_ipaddress), carried in
	// adverts; Excluded are owned the same way but not advertised
	// (virtual_ipaddress_excluded).
	Addrs    []VAddr
	Excluded []VAddr
	// SkipCheckAdvAddr stops checking the address list of adverts from
	// the master already known (vrrp_skip_check_adv_addr).
	SkipCheckAdvAddr bool
	GARP             GARP
}

// Group is a vrrp_sync_group: its instances change state together.
type Group struct {
	Name    string
	Members []string
}

// Config is a speaker's configuration.
type Config struct {
	Instances []Instance
	Groups    []Group
}

// ErrConfig is what every configuration error wraps.
var ErrConfig = errors.New("vrrp: bad configuration")

func cfgErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}

// Defaults, as keepalived's.
const (
	DefaultPriority     = 100
	DefaultInterval     = time.Second
	DefaultVersion      = 2
	DefaultGARPDelay    = 5 * time.Second
	DefaultGARPRepeat   = 5
	DefaultRefreshRepet = 1
)

// withDefaults returns a copy with keepalived's defaults filled in.
func (in Instance) withDefaults() Instance {
	if in.Priority == 0 {
		in.Priority = DefaultPriority
	}
	if in.Interval == 0 {
		in.Interval = DefaultInterval
	}
	if in.Version == 0 {
		in.Version = DefaultVersion
	}
	g := &in.GARP
	if g.MasterDelay == 0 && !g.NoSecondRound {
		g.MasterDelay = DefaultGARPDelay
	}
	if g.MasterRepeat == 0 {
		g.MasterRepeat = DefaultGARPRepeat
	}
	if g.RefreshRepeat == 0 {
		g.RefreshRepeat = DefaultRefreshRepet
	}
	if g.LowerPrioRepeat == 0 {
		g.LowerPrioRepeat = g.MasterRepeat
	}
	in.Addrs = append([]VAddr(nil), in.Addrs...)
	in.Excluded = append([]VAddr(nil), in.Excluded...)
	in.UnicastPeers = append([]netip.Addr(nil), in.UnicastPeers...)
	return in
}

// Owned returns every address the instance's master owns: the advertised
// ones and the excluded ones.
func (in *Instance) Owned() []VAddr {
	return append(append([]VAddr(nil), in.Addrs...), in.Excluded...)
}

// centis returns the interval in centiseconds.
func (in *Instance) centis() uint16 { return uint16(in.Interval / (10 * time.Millisecond)) }

// check validates one instance (with defaults filled in).
func (in *Instance) check() error {
	name := in.Name
	if name == "" {
		return cfgErr("an instance has no name")
	}
	if in.Interface == "" {
		return cfgErr("instance %s: no interface", name)
	}
	if in.VRID < 1 || in.VRID > 255 {
		return cfgErr("instance %s: virtual router id %d out of range (1..255)", name, in.VRID)
	}
	if in.Priority < 1 || in.Priority > 255 {
		return cfgErr("instance %s: priority %d out of range (1..255; 255 is the address owner)", name, in.Priority)
	}
	switch in.Version {
	case 2:
		if in.Interval%time.Second != 0 || in.Interval < time.Second || in.Interval > 255*time.Second {
			return cfgErr("instance %s: advert_int %v: VRRP version 2 takes whole seconds, 1..255 (version 3 takes hundredths)", name, in.Interval)
		}
	case 3:
		if in.Interval%(10*time.Millisecond) != 0 || in.Interval < 10*time.Millisecond || in.Interval > 4095*10*time.Millisecond {
			return cfgErr("instance %s: advert_int %v: VRRP version 3 takes hundredths of a second, 0.01..40.95", name, in.Interval)
		}
		if in.AuthPass != "" {
			return cfgErr("instance %s: VRRP version 3 has no authentication (RFC 5798 removed it); use version 2 for auth_type PASS", name)
		}
	default:
		return cfgErr("instance %s: VRRP version %d (allowed: 2 or 3)", name, in.Version)
	}
	if len(in.AuthPass) > authLen {
		return cfgErr("instance %s: auth_pass is %d characters; VRRP carries 8 (keepalived truncates, golvs refuses so that both ends agree)", name, len(in.AuthPass))
	}
	if in.PreemptDelay < 0 || in.PreemptDelay > 1000*time.Second {
		return cfgErr("instance %s: preempt_delay %v out of range (0..1000s)", name, in.PreemptDelay)
	}
	if in.NoPreempt && in.PreemptDelay > 0 {
		return cfgErr("instance %s: nopreempt and preempt_delay together (a delay applies only to preemption)", name)
	}
	if len(in.Addrs) > MaxAddrs {
		return cfgErr("instance %s: %d virtual addresses; an advertisement carries at most %d", name, len(in.Addrs), MaxAddrs)
	}
	if len(in.Excluded) > 1024 {
		return cfgErr("instance %s: %d excluded addresses (at most 1024)", name, len(in.Excluded))
	}
	seen := map[netip.Addr]bool{}
	for _, a := range append(append([]VAddr(nil), in.Addrs...), in.Excluded...) {
		if !a.Addr.Is4() {
			return cfgErr("instance %s: virtual address %s is not IPv4 (golvs's VRRP speaks IPv4)", name, a.Addr)
		}
		if seen[a.Addr] {
			return cfgErr("instance %s: virtual address %s given twice", name, a.Addr)
		}
		seen[a.Addr] = true
	}
	if in.UnicastSrc.IsValid() && !in.UnicastSrc.Is4() {
		return cfgErr("instance %s: unicast_src_ip %s is not IPv4", name, in.UnicastSrc)
	}
	if len(in.UnicastPeers) > 64 {
		return cfgErr("instance %s: %d unicast peers (at most 64)", name, len(in.UnicastPeers))
	}
	for _, p := range in.UnicastPeers {
		if !p.Is4() || p.IsMulticast() || p.IsUnspecified() {
			return cfgErr("instance %s: unicast peer %s is not a unicast IPv4 address", name, p)
		}
	}
	g := in.GARP
	if g.MasterRepeat < 0 || g.MasterRepeat > 100 || g.RefreshRepeat < 0 || g.RefreshRepeat > 100 || g.LowerPrioRepeat < 0 || g.LowerPrioRepeat > 100 {
		return cfgErr("instance %s: gratuitous ARP repeat counts must be 0..100", name)
	}
	if g.MasterDelay < 0 || g.MasterDelay > 1000*time.Second || g.MasterRefresh < 0 || g.Interval < 0 || g.Interval > 10*time.Second {
		return cfgErr("instance %s: gratuitous ARP delays out of range", name)
	}
	return nil
}

// Check validates a configuration and fills in defaults; it returns the
// copy the speaker runs. golvs serves its whole table as one unit, so
// several instances must change state together: they must all be in one
// sync group.
func (c *Config) Check() (*Config, error) {
	if len(c.Instances) == 0 {
		return nil, cfgErr("no VRRP instance")
	}
	if len(c.Instances) > 64 {
		return nil, cfgErr("%d instances (at most 64)", len(c.Instances))
	}
	out := &Config{}
	names := map[string]bool{}
	type ifv struct {
		ifname string
		vrid   int
	}
	vrids := map[ifv]string{}
	for _, in := range c.Instances {
		in = in.withDefaults()
		if err := in.check(); err != nil {
			return nil, err
		}
		if names[in.Name] {
			return nil, cfgErr("instance %s defined twice", in.Name)
		}
		names[in.Name] = true
		k := ifv{in.Interface, in.VRID}
		if other, dup := vrids[k]; dup {
			return nil, cfgErr("instances %s and %s both use virtual router id %d on %s", other, in.Name, in.VRID, in.Interface)
		}
		vrids[k] = in.Name
		out.Instances = append(out.Instances, in)
	}
	member := map[string]string{}
	for _, g := range c.Groups {
		if g.Name == "" {
			return nil, cfgErr("a sync group has no name")
		}
		if len(g.Members) == 0 {
			return nil, cfgErr("sync group %s has no instances", g.Name)
		}
		for _, m := range g.Members {
			if !names[m] {
				return nil, cfgErr("sync group %s: no instance %s", g.Name, m)
			}
			if other, dup := member[m]; dup {
				return nil, cfgErr("instance %s is in sync groups %s and %s", m, other, g.Name)
			}
			member[m] = g.Name
		}
		out.Groups = append(out.Groups, Group{Name: g.Name, Members: append([]string(nil), g.Members...)})
	}
	if len(out.Instances) > 1 {
		var g string
		for _, in := range out.Instances {
			mg, ok := member[in.Name]
			if !ok || (g != "" && mg != g) {
				var all []string
				for _, i := range out.Instances {
					all = append(all, i.Name)
				}
				return nil, cfgErr("instances %s must be in one vrrp_sync_group: golvs serves its whole table as one unit, so its instances must be master or backup together", strings.Join(all, ", "))
			}
			g = mg
		}
	}
	return out, nil
}

// ParseInterval reads keepalived's advert_int: seconds, fractions
// allowed ("1", "0.5"), or a Go duration ("500ms").
func ParseInterval(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 || f > 255 {
		return 0, cfgErr("advert_int %q is not a number of seconds (0.01..255)", s)
	}
	return time.Duration(math.Round(f*100)) * 10 * time.Millisecond, nil
}
