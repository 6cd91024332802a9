package control

import (
	"github.com/golvs/golvs/ipvsadm"
	"github.com/golvs/golvs/ipvssync"
)

// The sync daemon's commands: ipvsadm --start-daemon, --stop-daemon and
// -L --daemon, carried to the director's ipvssync.Daemon.

// daemon starts or stops a sync daemon; its errors read as ipvsadm's
// (exit status 255, the kernel errno's words first).
func (s *Server) daemon(cmd *ipvsadm.Command) error {
	sd := s.D.Sync
	c := DaemonConfig(cmd.Daemon)
	var err error
	if cmd.Cmd == ipvsadm.CmdStartDaemon {
		err = sd.Start(c)
	} else {
		err = sd.Stop(c.Role)
	}
	if err != nil {
		return &ipvsadm.Error{Status: ipvsadm.StatusKernel, Msg: err.Error(), Err: err}
	}
	return nil
}

// DaemonConfig converts ipvsadm's daemon options to the daemon's.
func DaemonConfig(d ipvsadm.Daemon) ipvssync.Config {
	return ipvssync.Config{
		Role: ipvssync.Role(d.State), Ifname: d.McastIfn, SyncID: d.SyncID, MaxLen: int(d.SyncMaxlen),
		Group: d.McastGroup, Port: d.McastPort, TTL: d.McastTTL,
	}
}

// Daemons returns the running sync daemons as ipvsadm -L --daemon lists
// them, with the kernel's defaults filled in.
func (s *Server) Daemons() []ipvsadm.DaemonState {
	var out []ipvsadm.DaemonState
	for _, c := range s.D.Sync.Status() {
		out = append(out, ipvsadm.DaemonState{Daemon: ipvsadm.Daemon{
			State: int(c.Role), McastIfn: c.Ifname, SyncID: c.SyncID, SyncMaxlen: uint16(c.MaxLen),
			McastGroup: c.Group, McastPort: c.Port, McastTTL: c.TTL,
		}})
	}
	return out
}

// syncStatus adds the sync daemon's counters to a status reply, as
// "sync-<name>": what was sent and received always, the rest (drops,
// skips, outcomes: dozens) once they are not zero. /metrics has them all.
func (s *Server) syncStatus(rep *Reply) {
	v := s.D.Sync.Counters()
	for i, n := range ipvssync.CounterNames {
		switch n {
		case "msgs-sent", "conns-sent", "msgs-received", "conns-received":
		default:
			if v[i] == 0 {
				continue
			}
		}
		rep.Counters["sync-"+n] = v[i]
	}
}
