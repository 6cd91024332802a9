package ipvssync

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/conntrack"
)

// Role is what a sync daemon does: a master sends, a backup receives. One
// director may run both (ipvsadm --start-daemon twice).
type Role int

// Roles, numbered as ipvsadm numbers them (IP_VS_STATE_MASTER/BACKUP).
const (
	Master Role = 1
	Backup Role = 2
)

func (r Role) String() string {
	switch r {
	case Master:
		return "master"
	case Backup:
		return "backup"
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// Defaults the kernel fills in (spec §7.1).
var (
	DefaultGroup  = netip.MustParseAddr("224.0.0.81")
	DefaultGroup6 = netip.Addr{} // an IPv6 group must be given
)

const (
	DefaultPort = 8848
	DefaultTTL  = 1
	// DefaultIfname is ipvsadm's --mcast-interface default.
	DefaultIfname = "eth0"
	maxSyncPorts  = 64 // IPVS_SYNC_PORTS_MAX
)

// Config is one daemon's configuration, as --start-daemon gives it
// (ipvsadm's daemon options; zero values take the kernel's defaults when
// the daemon starts, and Status shows them filled in).
type Config struct {
	Role   Role
	Ifname string     // --mcast-interface
	SyncID uint8      // --syncid: 0 accepts every syncid (backup)
	MaxLen int        // --sync-maxlen: the UDP payload limit
	Group  netip.Addr // --mcast-group: IPv4 or IPv6 multicast
	Port   uint16     // --mcast-port: thread k uses Port+k
	TTL    uint8      // --mcast-ttl

	// Peer is golvs's unicast mode (no ipvsadm option): a master sends
	// to Peer instead of the group, and a backup with Peer set accepts
	// datagrams sent to its interface address instead of joining the
	// group (where multicast does not pass). Kernel peers cannot use it.
	Peer netip.Addr
}

// Sysctls are the kernel's sync sysctls (/proc/sys/net/ipv4/vs/*), with
// its defaults from DefaultSysctls; `golvs run` sets them by flags of the
// same names.
type Sysctls struct {
	Version       int           // sync_version: 1, or 0 for the legacy format
	Ports         int           // sync_ports: threads (and UDP ports) per daemon, a power of two up to 64
	PersistMode   bool          // sync_persist_mode: do not sync conns controlled by a template
	QlenMax       int           // sync_qlen_max: queued messages per master thread
	SockSize      int           // sync_sock_size: socket buffer bytes (0: the system's)
	Threshold     int           // sync_threshold[0]
	Period        int           // sync_threshold[1]
	RefreshPeriod time.Duration // sync_refresh_period (0: resend by packet count only)
	Retries       int           // sync_retries: 0..3
	// BackupOnly is backup_only: while a backup daemon runs, the
	// director forwards nothing and answers no ARP for its VIPs. golvs
	// defaults it to on (the kernel to off): a golvs director answers
	// ARP for its VIPs itself, so a backup that forwarded would compete
	// with the master for the same traffic.
	BackupOnly bool
}

// DefaultSysctls returns the kernel's defaults (spec §3.9), except
// BackupOnly (see there). sync_qlen_max is the kernel's free buffer
// pages / 32, taken here as total memory pages / 32.
func DefaultSysctls() Sysctls {
	return Sysctls{
		Version: 1, Ports: 1, QlenMax: defaultQlenMax(),
		Threshold: 3, Period: 50, BackupOnly: true,
	}
}

func defaultQlenMax() int {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil && si.Totalram > 0 {
		n := uint64(si.Totalram) * uint64(si.Unit) / uint64(unix.Getpagesize()) / 32
		if n > 1<<20 {
			n = 1 << 20
		}
		if n >= 1 {
			return int(n)
		}
	}
	return 4096
}

// ErrSysctl is returned for a value the kernel would refuse.
var ErrSysctl = errors.New("ipvssync: bad sync sysctl")

// Check validates the values as the kernel's sysctl handlers do.
func (s *Sysctls) Check() error {
	switch {
	case s.Version != 0 && s.Version != 1:
		return fmt.Errorf("%w: sync_version %d (0 or 1)", ErrSysctl, s.Version)
	case s.Ports < 1 || s.Ports > maxSyncPorts || s.Ports&(s.Ports-1) != 0:
		return fmt.Errorf("%w: sync_ports %d (a power of two, 1..%d)", ErrSysctl, s.Ports, maxSyncPorts)
	case s.QlenMax < 1:
		return fmt.Errorf("%w: sync_qlen_max %d (at least 1)", ErrSysctl, s.QlenMax)
	case s.SockSize < 0:
		return fmt.Errorf("%w: sync_sock_size %d", ErrSysctl, s.SockSize)
	case s.Threshold < 0 || s.Period < 0 || (s.Period != 0 && s.Threshold >= s.Period):
		return fmt.Errorf("%w: sync_threshold \"%d %d\" (threshold below period, unless period is 0)", ErrSysctl, s.Threshold, s.Period)
	case s.Period > conntrack.MaxSyncCount+1 || (s.Period == 0 && s.Threshold >= conntrack.MaxSyncCount):
		// The kernel takes any int; golvs keeps the count in 12 bits of
		// the connection entry (conntrack/sync.go).
		return fmt.Errorf("%w: sync_threshold \"%d %d\" (golvs counts up to %d: a period of at most %d, or with period 0 a threshold below %d)", ErrSysctl, s.Threshold, s.Period, conntrack.MaxSyncCount, conntrack.MaxSyncCount+1, conntrack.MaxSyncCount)
	case s.RefreshPeriod < 0:
		return fmt.Errorf("%w: sync_refresh_period %v", ErrSysctl, s.RefreshPeriod)
	case s.Retries < 0 || s.Retries > 3:
		return fmt.Errorf("%w: sync_retries %d (0..3)", ErrSysctl, s.Retries)
	}
	return nil
}

// ParseThreshold parses sync_threshold as the sysctl is written: two
// integers, "threshold period".
func ParseThreshold(v string) (threshold, period int, err error) {
	f := strings.Fields(v)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("%w: sync_threshold %q: want two numbers, \"threshold period\"", ErrSysctl, v)
	}
	if threshold, err = strconv.Atoi(f[0]); err == nil {
		period, err = strconv.Atoi(f[1])
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%w: sync_threshold %q: %v", ErrSysctl, v, err)
	}
	return threshold, period, nil
}

// Errors of Start and Stop, with the words ipvsadm prints for the
// kernel's errno (spec §6.8): golvs adm shows them as ipvsadm does.
var (
	ErrRunning  = errors.New("Daemon has already run")                                                      // EEXIST
	ErrNotRun   = errors.New("No daemon is running")                                                        // ESRCH
	ErrNoDevice = errors.New("No such device")                                                              // ENODEV
	ErrInvalid  = errors.New("Invalid operation.  Possibly wrong module version, address not unicast, ...") // EINVAL
)

// fill returns c with the kernel's defaults filled in for an interface
// of MTU mtu (start_sync_thread): group 224.0.0.81, port 8848, TTL 1,
// and the message length: the master's 1500 - headers, the backup's
// clamp(MTU, 1500, 65535) - headers; a given value is clamped to [1
// (master) or 1024 (backup), 65535 - headers].
func (c Config) fill(mtu int) (Config, error) {
	if c.Role != Master && c.Role != Backup {
		return c, fmt.Errorf("%w (role %d)", ErrInvalid, c.Role)
	}
	if !c.Group.IsValid() {
		c.Group = DefaultGroup
	}
	if !c.Group.IsMulticast() {
		return c, fmt.Errorf("%w (group %s is not multicast)", ErrInvalid, c.Group)
	}
	if c.Peer.IsValid() && (c.Peer.Is4() != c.Group.Is4() || c.Peer.IsMulticast() || c.Peer.IsUnspecified()) {
		return c, fmt.Errorf("%w (unicast peer %s: a unicast address of the group's family)", ErrInvalid, c.Peer)
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	hlen := 28
	if c.Group.Is6() {
		hlen = 48
	}
	m := 1500
	minLen := 1
	if c.Role == Backup {
		m = min(max(mtu, 1500), 65535)
		minLen = 1024
	}
	if c.MaxLen != 0 {
		c.MaxLen = min(max(c.MaxLen, minLen), 65535-hlen)
	} else {
		c.MaxLen = m - hlen
	}
	if c.Ifname == "" {
		c.Ifname = DefaultIfname
	}
	return c, nil
}
