// Package ipvssync is IPVS's connection synchronisation daemon
// (ip_vs_sync.c), wire-compatible with the kernel's: a master sends the
// state of its connections and persistence templates to a multicast
// group (224.0.0.81:8848 by default) in version 1 (or, by sysctl, version
// 0) messages; a backup receives them and installs the connections into
// its own table, bound to its own real servers, so that it can take over
// established connections when it becomes master.
//
// In the packet path it is one hook (conntrack.SetSyncHook) that runs
// after an inbound packet was applied to a conn while a master daemon
// runs: it applies the kernel's sending rules (state changes,
// sync_threshold/sync_period, sync_refresh_period and sync_retries,
// templates after their conns) and appends records to a message under a
// lock; the sending, batching and flushing happen on the daemon's own
// goroutines. It must never block the packet path, never send while only
// a backup runs, and never install a record of a message it could not
// decode to its end.
//
// A backup and a master can be switched at run time (Stop one, Start the
// other), as keepalived's lvs_sync_daemon does when VRRP changes state.
package ipvssync

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/golvs/golvs/conntrack"
)

// Outcome is what an Installer did with a record.
type Outcome uint8

const (
	Installed       Outcome = iota // a new conn
	Updated                        // an existing conn took the record's state and timeout
	Replaced                       // a conn bound to another real server was replaced
	IgnoredInactive                // an inactive record for a conn bound elsewhere
	NoDest                         // no such real server (service, address, port) here
	TableFull                      // the connection table is full
	NoLocalAddr                    // FULLNAT: the local address is not in this pool, or its port is taken
)

// Installer is the director's side of a backup: it finds the real server
// a record names and installs the conn into the table (with in_pkts
// restarting at inPkts), and stops or resumes forwarding while a backup
// runs with backup_only.
type Installer interface {
	Install(c *Conn, inPkts uint32) Outcome
	SetBackupOnly(on bool)
}

// Options set up a Daemon.
type Options struct {
	Table     *conntrack.Table
	Installer Installer
	Sysctls   Sysctls
	// Transport opens the sockets; nil: UDP.
	Transport Transport
	// Do runs fn where the daemon's sockets must live (the director's
	// network namespace); nil runs it directly.
	Do   func(fn func() error) error
	Logf func(format string, args ...any)
}

// Daemon is a director's sync daemon: a master, a backup, both or none.
// Its methods are safe for concurrent use.
type Daemon struct {
	o   Options
	mu  sync.Mutex // Start, Stop
	m   *master
	b   *backup
	cnt [numCounters]atomic.Uint64
	dec sync.Pool // *Decoder, for Process
}

// New creates a daemon that runs nothing yet.
func New(o Options) (*Daemon, error) {
	if o.Table == nil || o.Installer == nil {
		return nil, errors.New("ipvssync: a daemon needs a table and an installer")
	}
	if err := o.Sysctls.Check(); err != nil {
		return nil, err
	}
	if o.Transport == nil {
		o.Transport = UDP
	}
	if o.Do == nil {
		o.Do = func(fn func() error) error { return fn() }
	}
	return &Daemon{o: o}, nil
}

// Sysctls returns the daemon's sysctls.
func (d *Daemon) Sysctls() Sysctls { return d.o.Sysctls }

func (d *Daemon) logf(format string, args ...any) {
	if d.o.Logf != nil {
		d.o.Logf(format, args...)
	}
}

// Start starts a master or a backup daemon (ipvsadm --start-daemon), with
// the kernel's defaults filled in for what c leaves zero. It fails with
// ErrRunning when that role already runs, ErrNoDevice for an unknown
// interface, ErrInvalid for a bad group.
func (d *Daemon) Start(c Config) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.startLocked(c)
}

func (d *Daemon) startLocked(c Config) error {
	if (c.Role == Master && d.m != nil) || (c.Role == Backup && d.b != nil) {
		return ErrRunning
	}
	var (
		cfg  Config
		outs []Sender
		ins  []Receiver
	)
	err := d.o.Do(func() error {
		var err error
		cfg, outs, ins, err = d.o.Transport.Open(c, d.o.Sysctls)
		return err
	})
	if err != nil {
		return err
	}
	switch cfg.Role {
	case Master:
		m := newMaster(d, cfg, d.o.Sysctls, outs)
		m.start()
		d.m = m
		d.o.Table.SetSyncHook(m.hook)
		d.logf("sync daemon started: state = MASTER, mcast_ifn = %s, syncid = %d, %d thread(s)", cfg.Ifname, cfg.SyncID, len(outs))
	case Backup:
		b := newBackup(d, cfg, ins)
		d.b = b
		d.updateStandby()
		b.start()
		d.logf("sync daemon started: state = BACKUP, mcast_ifn = %s, syncid = %d, %d thread(s)", cfg.Ifname, cfg.SyncID, len(ins))
	}
	return nil
}

// Stop stops the master or the backup (ipvsadm --stop-daemon); ErrNotRun
// when it does not run. A stopped master drops what it had queued, as
// the kernel's does.
func (d *Daemon) Stop(r Role) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stopLocked(r)
}

func (d *Daemon) stopLocked(r Role) error {
	switch r {
	case Master:
		if d.m == nil {
			return ErrNotRun
		}
		d.o.Table.SetSyncHook(nil)
		d.m.close()
		d.m = nil
		d.logf("sync daemon stopped: master")
	case Backup:
		if d.b == nil {
			return ErrNotRun
		}
		d.b.close()
		d.b = nil
		d.updateStandby()
		d.logf("sync daemon stopped: backup")
	default:
		return fmt.Errorf("%w (role %d)", ErrInvalid, r)
	}
	return nil
}

// SetRole switches the director to one role as keepalived's
// lvs_sync_daemon does on a VRRP state change: the other role's daemon
// is stopped (if it runs) and this one started with c (unless it already
// runs). The switch is one critical section: no sync is sent while the
// role is backup, and a master starts only after the backup stopped.
func (d *Daemon) SetRole(r Role, c Config) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	other := Backup
	if r == Backup {
		other = Master
	} else if r != Master {
		return fmt.Errorf("%w (role %d)", ErrInvalid, r)
	}
	if (other == Master && d.m != nil) || (other == Backup && d.b != nil) {
		if err := d.stopLocked(other); err != nil {
			return err
		}
	}
	if (r == Master && d.m != nil) || (r == Backup && d.b != nil) {
		return nil
	}
	c.Role = r
	return d.startLocked(c)
}

// Close stops whatever runs.
func (d *Daemon) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m != nil {
		_ = d.stopLocked(Master)
	}
	if d.b != nil {
		_ = d.stopLocked(Backup)
	}
}

// Status returns the running daemons' configurations with the kernel's
// defaults filled in, master first (ipvsadm -L --daemon).
func (d *Daemon) Status() []Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Config
	if d.m != nil {
		out = append(out, d.m.cfg)
	}
	if d.b != nil {
		out = append(out, d.b.cfg)
	}
	return out
}

// Running reports which roles run.
func (d *Daemon) Running() (master, backup bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m != nil, d.b != nil
}

// updateStandby applies backup_only (d.mu held).
func (d *Daemon) updateStandby() {
	d.o.Installer.SetBackupOnly(d.b != nil && d.o.Sysctls.BackupOnly)
}

// Process handles one received message as the backup does (decode, then
// install every record that passed), with syncid as the backup's. The
// receive loop calls it; tests feed it messages directly.
func (d *Daemon) Process(msg []byte, syncid uint8) {
	dec, _ := d.dec.Get().(*Decoder)
	if dec == nil {
		dec = &Decoder{}
	}
	dec.SyncID = syncid
	d.process(msg, dec)
	d.dec.Put(dec)
}

func (d *Daemon) process(msg []byte, dec *Decoder) {
	d.cnt[cntMsgsReceived].Add(1)
	d.cnt[cntBytesReceived].Add(uint64(len(msg)))
	recs, _, drop := dec.Decode(msg)
	if drop != OK {
		d.cnt[cntReason+int(drop)].Add(1)
		return
	}
	d.cnt[cntConnsReceived].Add(uint64(len(recs)))
	inPkts := uint32(d.o.Sysctls.Threshold)
	for i := range recs {
		r := &recs[i]
		if r.Skip != OK {
			d.cnt[cntReason+int(r.Skip)].Add(1)
			continue
		}
		d.cnt[cntOutcome+int(d.o.Installer.Install(&r.Conn, inPkts))].Add(1)
	}
}
