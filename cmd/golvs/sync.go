package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"time"

	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/ipvsadm"
	"github.com/golvs/golvs/ipvssync"
)

// syncFlags are `golvs run`'s connection sync flags: the daemons to start
// at boot with ipvsadm's daemon options (checked by ipvsadm's grammar, so
// they fail with ipvsadm's words), golvs's unicast peer, and the kernel's
// sync sysctls under their own names.
type syncFlags struct {
	roles                                    listFlag
	ifname, syncid, maxlen, group, port, ttl string
	peer                                     string

	version, ports, qlenMax, sockSize, retries int
	persistMode, backupOnly                    bool
	threshold                                  string
	refresh                                    int
}

func (f *syncFlags) register(fs *flag.FlagSet) {
	def := ipvssync.DefaultSysctls()
	fs.Var(&f.roles, "start-daemon", "start the connection sync daemon at boot: master or backup (repeat for both); then ipvsadm's daemon options below apply")
	fs.StringVar(&f.ifname, "mcast-interface", "", "sync daemon: multicast interface (ipvsadm's default: eth0)")
	fs.StringVar(&f.syncid, "syncid", "", "sync daemon: syncid 0..255 (0: a backup accepts every syncid)")
	fs.StringVar(&f.maxlen, "sync-maxlen", "", "sync daemon: maximum message length (UDP payload; default 1472 for a master)")
	fs.StringVar(&f.group, "mcast-group", "", "sync daemon: IPv4 or IPv6 multicast group (default 224.0.0.81)")
	fs.StringVar(&f.port, "mcast-port", "", "sync daemon: UDP port (default 8848; thread k uses port+k)")
	fs.StringVar(&f.ttl, "mcast-ttl", "", "sync daemon: multicast TTL (default 1)")
	fs.StringVar(&f.peer, "sync-peer", "", "sync daemon, golvs only: a master sends to this unicast address instead of the group, a backup accepts sync only from it (where multicast does not pass; golvs peers only)")
	fs.IntVar(&f.version, "sync-version", def.Version, "sysctl sync_version: 1, or 0 for the legacy message format")
	fs.IntVar(&f.ports, "sync-ports", def.Ports, "sysctl sync_ports: sync threads (and UDP ports) per daemon, a power of two up to 64")
	fs.BoolVar(&f.persistMode, "sync-persist-mode", def.PersistMode, "sysctl sync_persist_mode: do not sync conns controlled by a persistence template")
	fs.IntVar(&f.qlenMax, "sync-qlen-max", def.QlenMax, "sysctl sync_qlen_max: messages a master thread queues at most (the rest are dropped and counted)")
	fs.IntVar(&f.sockSize, "sync-sock-size", def.SockSize, "sysctl sync_sock_size: socket buffer bytes (0: the system's)")
	fs.StringVar(&f.threshold, "sync-threshold", fmt.Sprintf("%d %d", def.Threshold, def.Period), "sysctl sync_threshold: \"threshold period\": a conn is synced when its packet count mod period is threshold")
	fs.IntVar(&f.refresh, "sync-refresh-period", int(def.RefreshPeriod/time.Second), "sysctl sync_refresh_period, seconds: resend a conn only when its expiry moved this much (0: by packet count)")
	fs.IntVar(&f.retries, "sync-retries", def.Retries, "sysctl sync_retries: extra sends allowed within the refresh period (0..3)")
	fs.BoolVar(&f.backupOnly, "backup-only", def.BackupOnly, "sysctl backup_only: forward nothing (and answer no ARP for VIPs) while a backup daemon runs (golvs's default: on; the kernel's: off)")
}

// build checks the flags and returns the sysctls and the daemons to start.
func (f *syncFlags) build() (*ipvssync.Sysctls, []ipvssync.Config, error) {
	s := ipvssync.Sysctls{
		Version: f.version, Ports: f.ports, PersistMode: f.persistMode, QlenMax: f.qlenMax,
		SockSize: f.sockSize, Retries: f.retries, BackupOnly: f.backupOnly,
		RefreshPeriod: time.Duration(f.refresh) * time.Second,
	}
	var err error
	if s.Threshold, s.Period, err = ipvssync.ParseThreshold(f.threshold); err != nil {
		return nil, nil, err
	}
	if f.refresh < 0 {
		return nil, nil, fmt.Errorf("%w: sync_refresh_period %d", ipvssync.ErrSysctl, f.refresh)
	}
	if err := s.Check(); err != nil {
		return nil, nil, err
	}
	opts := map[string]string{"--mcast-interface": f.ifname, "--syncid": f.syncid, "--sync-maxlen": f.maxlen,
		"--mcast-group": f.group, "--mcast-port": f.port, "--mcast-ttl": f.ttl}
	var peer netip.Addr
	if f.peer != "" {
		if peer, err = netip.ParseAddr(f.peer); err != nil {
			return nil, nil, fmt.Errorf("--sync-peer %q: %v", f.peer, err)
		}
	}
	if len(f.roles) == 0 {
		for name, v := range opts {
			if v != "" {
				return nil, nil, fmt.Errorf("%s given without --start-daemon", name)
			}
		}
		if peer.IsValid() {
			return nil, nil, errors.New("--sync-peer given without --start-daemon")
		}
		return &s, nil, nil
	}
	var out []ipvssync.Config
	seen := map[string]bool{}
	for _, role := range f.roles {
		if seen[role] {
			return nil, nil, fmt.Errorf("--start-daemon %s given twice", role)
		}
		seen[role] = true
		// ipvsadm's own grammar checks the options, with its messages.
		args := []string{"--start-daemon", role}
		for _, name := range []string{"--mcast-interface", "--syncid", "--sync-maxlen", "--mcast-group", "--mcast-port", "--mcast-ttl"} {
			if v := opts[name]; v != "" {
				args = append(args, name, v)
			}
		}
		cmd, err := ipvsadm.Parse(args)
		if err != nil {
			return nil, nil, fmt.Errorf("--start-daemon %s: %v", role, err)
		}
		c := control.DaemonConfig(cmd.Daemon)
		c.Peer = peer
		out = append(out, c)
	}
	return &s, out, nil
}
