package health

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
	"github.com/golvs/golvs/sched"
)

// The engine speaks to the control plane in ipvsadm's words: one command
// line per change, sent as one restore so a batch applies whole or not at
// all.

// svcArgs names a service as ipvsadm's -t/-u/-f options do.
func svcArgs(c *ipvs.ServiceConfig) []string {
	if c.FWMark != 0 {
		a := []string{"-f", strconv.FormatUint(uint64(c.FWMark), 10)}
		if c.V6 {
			a = append(a, "-6")
		}
		return a
	}
	opt := "-t"
	if c.Proto == ipvs.ProtoUDP {
		opt = "-u"
	}
	return []string{opt, addrPortString(c.Addr, c.Port)}
}

// addServiceArgs is -A (or -E) with every setting of the service.
func addServiceArgs(cmd string, c *ipvs.ServiceConfig) []string {
	a := append([]string{cmd}, svcArgs(c)...)
	a = append(a, "-s", c.Sched)
	if c.Persistent() {
		a = append(a, "-p", strconv.FormatUint(uint64(c.Timeout), 10))
		if c.IsV6() {
			if c.Netmask != 0 && c.Netmask != 128 {
				a = append(a, "-M", strconv.Itoa(int(c.Netmask)))
			}
		} else if c.Netmask != 0xffffffff {
			m := c.Netmask
			a = append(a, "-M", fmt.Sprintf("%d.%d.%d.%d", m>>24, m>>16&0xff, m>>8&0xff, m&0xff))
		}
	}
	if c.PE != "" {
		a = append(a, "--pe", c.PE)
	}
	if c.Flags&ipvs.SvcOnePacket != 0 {
		a = append(a, "-o")
	}
	if c.Flags&ipvs.SvcSchedMask != 0 {
		a = append(a, "-b", sched.FormatFlags(c.Sched, c.Flags))
	}
	return a
}

func methodArgs(d *ipvs.DestConfig) []string {
	switch d.Method {
	case ipvs.MethodMasq:
		return []string{"-m"}
	case ipvs.MethodTunnel:
		a := []string{"-i"}
		switch d.TunType {
		case ipvs.TunGUE:
			a = append(a, "--tun-type", "gue", "--tun-port", strconv.Itoa(int(d.TunPort)))
		case ipvs.TunGRE:
			a = append(a, "--tun-type", "gre")
		}
		if d.TunType != ipvs.TunIPIP {
			switch d.TunFlags {
			case ipvs.TunFlagCsum:
				a = append(a, "--tun-csum")
			case ipvs.TunFlagRemCsum:
				a = append(a, "--tun-remcsum")
			}
		}
		return a
	case ipvs.MethodFullNAT:
		return []string{"--fullnat"}
	}
	return []string{"-g"}
}

// destArgs is -a (or -e) for one real server with every setting.
func destArgs(cmd string, c *ipvs.ServiceConfig, d *ipvs.DestConfig) []string {
	a := append([]string{cmd}, svcArgs(c)...)
	a = append(a, "-r", addrPortString(d.Addr, d.Port))
	a = append(a, methodArgs(d)...)
	a = append(a, "-w", strconv.Itoa(int(d.Weight)))
	if d.UThreshold != 0 {
		a = append(a, "-x", strconv.FormatUint(uint64(d.UThreshold), 10))
	}
	if d.LThreshold != 0 {
		a = append(a, "-y", strconv.FormatUint(uint64(d.LThreshold), 10))
	}
	return a
}

func delDestArgs(c *ipvs.ServiceConfig, d *ipvs.DestConfig) []string {
	a := append([]string{"-d"}, svcArgs(c)...)
	return append(a, "-r", addrPortString(d.Addr, d.Port))
}

// DestFor is the real server as IPVS gets it in one service: keepalived
// (like ipvsadm) sends non-NAT real servers with the service's port, or
// port 0 in fwmark services, and a NAT real server without a port gets
// the service's.
func DestFor(c *ipvs.ServiceConfig, d ipvs.DestConfig) ipvs.DestConfig {
	switch {
	case c.FWMark != 0:
		if d.Method != ipvs.MethodMasq && d.Method != ipvs.MethodFullNAT {
			d.Port = 0
		}
	case d.Method != ipvs.MethodMasq && d.Method != ipvs.MethodFullNAT:
		d.Port = c.Port
	case d.Port == 0:
		d.Port = c.Port
	}
	return d
}

// svcEqual reports whether -E is needed between two configurations of
// the same service.
func svcEqual(a, b *ipvs.ServiceConfig) bool {
	return a.Sched == b.Sched && a.Flags&^ipvs.SvcHashed == b.Flags&^ipvs.SvcHashed &&
		a.Timeout == b.Timeout && a.Netmask == b.Netmask && a.PE == b.PE
}

func destEqual(a, b *ipvs.DestConfig) bool { return *a == *b }

// table is what the engine has applied (or wants applied): services in
// order, each with its dests in the order they were added.
type table struct {
	order []ipvs.ServiceKey
	svcs  map[ipvs.ServiceKey]*tableSvc
}

type tableSvc struct {
	cfg    ipvs.ServiceConfig
	dests  []ipvs.DestConfig
	dorig  []string // where each dest was configured
	origin string   // where the service was configured, for errors
}

func newTable() *table { return &table{svcs: map[ipvs.ServiceKey]*tableSvc{}} }

func (t *table) add(s *tableSvc) {
	k := ipvsadm.NormKey(s.cfg.ServiceKey)
	if _, ok := t.svcs[k]; !ok {
		t.order = append(t.order, k)
	}
	t.svcs[k] = s
}

func findDest(ds []ipvs.DestConfig, a netip.Addr, port uint16) int {
	for i := range ds {
		if ds[i].Addr == a && ds[i].Port == port {
			return i
		}
	}
	return -1
}

// command is one line of a restore and where it came from.
type command struct {
	args   []string
	origin string
}

// diff returns the commands that turn table a into table b: services
// gone first, then per service edits, removals and additions (in b's
// order, so new real servers enter in configuration order).
func diff(a, b *table) []command {
	var out []command
	for _, k := range a.order {
		if _, ok := b.svcs[k]; !ok {
			s := a.svcs[k]
			out = append(out, command{append([]string{"-D"}, svcArgs(&s.cfg)...), s.origin})
		}
	}
	for _, k := range b.order {
		n := b.svcs[k]
		o, ok := a.svcs[k]
		if !ok {
			out = append(out, command{addServiceArgs("-A", &n.cfg), n.origin})
			for i := range n.dests {
				out = append(out, command{destArgs("-a", &n.cfg, &n.dests[i]), n.dorig[i]})
			}
			continue
		}
		if !svcEqual(&o.cfg, &n.cfg) {
			out = append(out, command{addServiceArgs("-E", &n.cfg), n.origin})
		}
		for i := range o.dests {
			if findDest(n.dests, o.dests[i].Addr, o.dests[i].Port) < 0 {
				out = append(out, command{delDestArgs(&n.cfg, &o.dests[i]), n.origin})
			}
		}
		for i := range n.dests {
			j := findDest(o.dests, n.dests[i].Addr, n.dests[i].Port)
			switch {
			case j < 0:
				out = append(out, command{destArgs("-a", &n.cfg, &n.dests[i]), n.dorig[i]})
			case !destEqual(&o.dests[j], &n.dests[i]):
				out = append(out, command{destArgs("-e", &n.cfg, &n.dests[i]), n.dorig[i]})
			}
		}
	}
	return out
}

// restoreText joins commands into a rules file, one per line.
func restoreText(cmds []command) string {
	var b strings.Builder
	for _, c := range cmds {
		b.WriteString(strings.Join(c.args, " "))
		b.WriteByte('\n')
	}
	return b.String()
}
