package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvssync"
	"github.com/golvs/golvs/vrrp"
)

// haRun is what a run's high availability starts with: the sync daemons
// (its own flags', or, taking over with none of its own, those the old
// daemon ran) and the VRRP instances that resume as master.
//
// A graceful restart (--takeover) and high availability work together
// this way (control/takeover.go): when it commits, the old daemon stops
// its VRRP speaker without resigning (no priority 0, so the peer director
// sees only a short pause in adverts, well inside its
// Master_Down_Interval) and its sync daemons, and hands over their
// configurations and the names of its VRRP instances in MASTER state;
// this daemon then starts the same sync daemons on the imported table and
// resumes those instances as master at once, with no election. This
// daemon's own sync flags win over what the old one ran; every such
// choice is logged.
type haRun struct {
	daemons []ipvssync.Config
	resume  []string // VRRP instances to start as master (taking over from a master)
	vrrp    bool
	backup  bool // a backup daemon with backup_only starts without VRRP: stand by from the start
	logf    func(string, ...any)
}

func newHA(vc *vrrp.Config, daemons []ipvssync.Config, sys *ipvssync.Sysctls, logf func(string, ...any)) *haRun {
	h := &haRun{daemons: daemons, vrrp: vc != nil, logf: logf}
	if !h.vrrp && sys != nil && sys.BackupOnly {
		for _, c := range h.daemons {
			h.backup = h.backup || c.Role == ipvssync.Backup
		}
	}
	return h
}

// adopt takes what the old daemon handed over (tk, after Finish): its
// sync daemons when this one has none of its own, and its VRRP instances
// in MASTER state that this one also runs.
func (h *haRun) adopt(tk *control.Takeover, vc *vrrp.Config) {
	switch {
	case len(h.daemons) == 0 && len(tk.Sync) > 0:
		h.daemons = slices.Clone(tk.Sync)
		h.logf("takeover: starting the sync daemons the old daemon ran: %s", daemonList(tk.Sync))
	case len(tk.Sync) > 0:
		h.logf("takeover: the old daemon ran sync daemons (%s); this one runs its own configuration (%s)", daemonList(tk.Sync), daemonList(h.daemons))
	}
	if vc == nil {
		if len(tk.VRRPMaster) > 0 {
			h.logf("takeover: the old daemon was VRRP master of %s, but this one has no VRRP configuration: it serves unconditionally", strings.Join(tk.VRRPMaster, ", "))
		}
		return
	}
	for _, in := range vc.Instances {
		if slices.Contains(tk.VRRPMaster, in.Name) {
			h.resume = append(h.resume, in.Name)
		}
	}
	if len(h.resume) > 0 {
		h.logf("takeover: VRRP instance(s) %s were master in the old daemon: they resume as master here at once", strings.Join(h.resume, ", "))
	} else {
		h.logf("takeover: no VRRP instance was master in the old daemon: they start as backup")
	}
	if len(h.daemons) == 1 {
		// The daemon VRRP drives starts in the role it will have, rather
		// than as configured and then switched.
		h.daemons[0].Role = ipvssync.Backup
		if len(h.resume) > 0 {
			h.daemons[0].Role = ipvssync.Master
		}
	}
}

func daemonList(cs []ipvssync.Config) string {
	if len(cs) == 0 {
		return "none"
	}
	var parts []string
	for _, c := range cs {
		parts = append(parts, fmt.Sprintf("%s on %s syncid %d", c.Role, c.Ifname, c.SyncID))
	}
	return strings.Join(parts, ", ")
}

// prepare sets the director's serving switches before it forwards: with
// VRRP it serves nothing until the speaker says master; a backup daemon
// with backup_only stands by.
func (h *haRun) prepare(d *director.Director) {
	if h.vrrp {
		d.SetServing(false)
	}
	if h.backup {
		d.SetSyncBackupOnly(true)
	}
}

// startSync starts the sync daemons.
func (h *haRun) startSync(d *director.Director) error {
	for _, c := range h.daemons {
		if err := d.Sync.Start(c); err != nil {
			return fmt.Errorf("--start-daemon %s: %v", c.Role, err)
		}
	}
	return nil
}
