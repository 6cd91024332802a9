package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvssync"
	"github.com/golvs/golvs/vrrp"
)

// vrrpFlags are `golvs run`'s VRRP flags (issue 15): one instance, as a
// keepalived vrrp_instance would configure it.
type vrrpFlags struct {
	iface, name, state, auth, advert, unicastSrc string
	vrid, priority, version                      int
	nopreempt                                    bool
	preemptDelay                                 time.Duration
	vips, peers                                  listFlag
}

func (v *vrrpFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&v.iface, "vrrp-interface", "", "run a VRRP instance on this interface (keepalived's vrrp_instance): the director serves only while master")
	fs.IntVar(&v.vrid, "vrrp-vrid", 0, "VRRP virtual router id (1..255), the same on every director of the pair")
	fs.IntVar(&v.priority, "vrrp-priority", vrrp.DefaultPriority, "VRRP priority (1..255; the highest is master; 255: the address owner)")
	fs.StringVar(&v.advert, "vrrp-advert-int", "1", "VRRP advertisement interval in seconds (version 2: whole seconds; version 3: hundredths)")
	fs.IntVar(&v.version, "vrrp-version", vrrp.DefaultVersion, "VRRP version: 2 (RFC 3768, keepalived's default) or 3 (RFC 5798)")
	fs.BoolVar(&v.nopreempt, "vrrp-nopreempt", false, "do not take over from a lower-priority master (keepalived's nopreempt)")
	fs.DurationVar(&v.preemptDelay, "vrrp-preempt-delay", 0, "wait this long after start (or after first seeing a lower-priority master) before preempting it, e.g. 10s: time for connection sync to fill the table")
	fs.StringVar(&v.state, "vrrp-state", "backup", "initial state: backup (wait 3 advertisement intervals for a master) or master (wait one)")
	fs.StringVar(&v.auth, "vrrp-auth-pass", "", "VRRP version 2 simple password (auth_type PASS, at most 8 characters)")
	fs.StringVar(&v.unicastSrc, "vrrp-unicast-src", "", "source address for unicast adverts (default: the interface's first address)")
	fs.Var(&v.peers, "vrrp-unicast-peer", "send adverts to this peer instead of 224.0.0.18; repeat for each peer")
	fs.Var(&v.vips, "vrrp-vip", "a virtual address the master owns, ADDR or ADDR:IFACE (default: the VRRP interface), e.g. the VIP and, in a NAT pair, the real servers' gateway; repeatable")
	fs.StringVar(&v.name, "vrrp-name", "VI_1", "the instance's name in logs and `golvs adm --vrrp`")
}

// config builds the speaker's configuration; nil without --vrrp-interface.
func (v *vrrpFlags) config() (*vrrp.Config, error) {
	if v.iface == "" {
		if v.vrid != 0 || len(v.vips) > 0 || len(v.peers) > 0 || v.auth != "" {
			return nil, fmt.Errorf("VRRP flags given without --vrrp-interface")
		}
		return nil, nil
	}
	if v.vrid == 0 {
		return nil, fmt.Errorf("--vrrp-interface needs --vrrp-vrid (1..255, the same on both directors)")
	}
	if v.priority < 1 || v.priority > 255 {
		return nil, fmt.Errorf("--vrrp-priority %d out of range (1..255; 255 is the address owner)", v.priority)
	}
	iv, err := vrrp.ParseInterval(v.advert)
	if err != nil {
		return nil, fmt.Errorf("--vrrp-advert-int: %w", err)
	}
	in := vrrp.Instance{
		Name: v.name, Interface: v.iface, VRID: v.vrid, Priority: v.priority, Interval: iv,
		Version: v.version, NoPreempt: v.nopreempt, PreemptDelay: v.preemptDelay, AuthPass: v.auth,
	}
	switch strings.ToLower(v.state) {
	case "master":
		in.StartMaster = true
	case "backup":
	default:
		return nil, fmt.Errorf("--vrrp-state %q: master or backup", v.state)
	}
	if v.unicastSrc != "" {
		if in.UnicastSrc, err = netip.ParseAddr(v.unicastSrc); err != nil {
			return nil, fmt.Errorf("--vrrp-unicast-src %q: not an address", v.unicastSrc)
		}
	}
	for _, p := range v.peers {
		a, err := netip.ParseAddr(p)
		if err != nil {
			return nil, fmt.Errorf("--vrrp-unicast-peer %q: not an address", p)
		}
		in.UnicastPeers = append(in.UnicastPeers, a)
	}
	if len(v.vips) == 0 {
		return nil, fmt.Errorf("--vrrp-interface needs at least one --vrrp-vip (the addresses the master owns)")
	}
	for _, s := range v.vips {
		as, dev := s, ""
		if _, err := netip.ParseAddr(s); err != nil {
			if i := strings.LastIndexByte(s, ':'); i > 0 {
				as, dev = s[:i], s[i+1:]
			}
		}
		a, err := netip.ParseAddr(as)
		if err != nil {
			return nil, fmt.Errorf("--vrrp-vip %q: not ADDR or ADDR:IFACE", s)
		}
		in.Addrs = append(in.Addrs, vrrp.VAddr{Addr: a, Dev: dev})
	}
	c := &vrrp.Config{Instances: []vrrp.Instance{in}}
	if _, err := c.Check(); err != nil {
		return nil, err
	}
	return c, nil
}

// floating lists the virtual addresses the director answers ARP for
// while serving, each on its interface.
func floating(c *vrrp.Config) []director.FloatingAddr {
	var out []director.FloatingAddr
	for _, in := range c.Instances {
		for _, a := range in.Owned() {
			dev := a.Dev
			if dev == "" {
				dev = in.Interface
			}
			out = append(out, director.FloatingAddr{Addr: a.Addr, Interface: dev})
		}
	}
	return out
}

// haFollower is what follows the VRRP role: the director's serving
// switch and, as keepalived's lvs_sync_daemon, the connection sync
// daemon (master sends, backup receives). Becoming master, the daemon
// turns master first (its backup stops installing), then the director
// serves; becoming backup, the director stops serving first.
type haFollower struct {
	d    *director.Director
	sync *ipvssync.Config // the daemon to switch: --start-daemon's; nil: whichever runs
	logf func(string, ...any)
}

func (f *haFollower) SetRole(master bool) {
	if master {
		f.syncRole(ipvssync.Master)
		f.d.SetServing(true)
		return
	}
	f.d.SetServing(false)
	f.syncRole(ipvssync.Backup)
}

func (f *haFollower) syncRole(r ipvssync.Role) {
	var c ipvssync.Config
	switch {
	case f.sync != nil:
		c = *f.sync
	default:
		// A daemon started at run time (golvs adm --start-daemon)
		// follows too, with its own settings.
		running := f.d.Sync.Status()
		if len(running) == 0 {
			return
		}
		c = running[0]
	}
	if err := f.d.Sync.SetRole(r, c); err != nil {
		f.logf("vrrp: switching the sync daemon to %s: %v", r, err)
	}
}

// startVRRP opens the speaker in this process's namespace, makes the
// director, the sync daemon and the control plane follow it, and runs it
// until ctx is done.
func startVRRP(ctx context.Context, c *vrrp.Config, d *director.Director, srv *control.Server, ha *haRun, logf func(string, ...any), wg *sync.WaitGroup) (*vrrp.Speaker, error) {
	if err := d.SetFloatingAddrs(floating(c)); err != nil {
		return nil, err
	}
	sp, err := vrrp.New(*c, vrrp.Options{Logf: logf, Resume: ha.resume})
	if err != nil {
		return nil, err
	}
	f := &haFollower{d: d, logf: logf}
	if len(ha.daemons) > 0 {
		f.sync = &ha.daemons[0]
	}
	// The speaker starts as backup, or as master for instances resumed
	// from the daemon taken over: so do the director and the daemon.
	f.SetRole(len(ha.resume) > 0)
	sp.AddFollower(f)
	if err := sp.Open(); err != nil {
		return nil, err
	}
	srv.SetVRRP(sp)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := sp.Run(ctx); err != nil {
			logf("vrrp: %v", err)
		}
	}()
	return sp, nil
}

func vrrpSummary(sp *vrrp.Speaker) string {
	var parts []string
	for _, in := range sp.Config().Instances {
		var addrs []string
		for _, a := range in.Addrs {
			addrs = append(addrs, a.String())
		}
		mode := "multicast 224.0.0.18"
		if len(in.UnicastPeers) > 0 {
			mode = fmt.Sprintf("unicast to %v", in.UnicastPeers)
		}
		parts = append(parts, fmt.Sprintf("instance %s on %s, vrid %d, priority %d, version %d, advert_int %v, %s, addresses %s",
			in.Name, in.Interface, in.VRID, in.Priority, in.Version, in.Interval, mode, strings.Join(addrs, ", ")))
	}
	return strings.Join(parts, "; ")
}
