package main

import (
	"flag"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/golvs/golvs/ipvssync"
)

func parseSyncFlags(args ...string) (*ipvssync.Sysctls, []ipvssync.Config, error) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f syncFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	return f.build()
}

func TestRunSyncFlags(t *testing.T) {
	sys, ds, err := parseSyncFlags()
	if err != nil || len(ds) != 0 || *sys != ipvssync.DefaultSysctls() {
		t.Fatalf("defaults: %+v %v %v", sys, ds, err)
	}
	sys, ds, err = parseSyncFlags("--start-daemon", "master", "--start-daemon", "backup", "--mcast-interface", "ext0",
		"--syncid", "7", "--mcast-group", "239.1.2.3", "--mcast-port", "9000", "--mcast-ttl", "2", "--sync-maxlen", "1400",
		"--sync-threshold", "2 20", "--sync-refresh-period", "30", "--sync-retries", "2", "--backup-only=false", "--sync-ports", "4")
	if err != nil {
		t.Fatal(err)
	}
	if sys.Threshold != 2 || sys.Period != 20 || sys.RefreshPeriod != 30*time.Second || sys.Retries != 2 || sys.BackupOnly || sys.Ports != 4 {
		t.Errorf("sysctls %+v", sys)
	}
	want := ipvssync.Config{Ifname: "ext0", SyncID: 7, MaxLen: 1400, Group: netip.MustParseAddr("239.1.2.3"), Port: 9000, TTL: 2}
	if len(ds) != 2 || ds[0].Role != ipvssync.Master || ds[1].Role != ipvssync.Backup {
		t.Fatalf("daemons %+v", ds)
	}
	for _, d := range ds {
		d.Role = 0
		if d != want {
			t.Errorf("daemon %+v, want %+v", d, want)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--start-daemon", "primary"}, "illegal start-daemon parameter specified"},
		{[]string{"--start-daemon", "master", "--syncid", "256"}, "illegal syncid specified"},
		{[]string{"--start-daemon", "master", "--mcast-group", "10.0.0.1"}, "invalid IPv4 mcast-group `10.0.0.1'"},
		{[]string{"--start-daemon", "master", "--start-daemon", "master"}, "given twice"},
		{[]string{"--syncid", "3"}, "--syncid given without --start-daemon"},
		{[]string{"--sync-threshold", "50 50"}, "sync_threshold"},
		{[]string{"--sync-threshold", "3"}, "two numbers"},
		{[]string{"--sync-retries", "4"}, "sync_retries"},
		{[]string{"--sync-ports", "3"}, "sync_ports"},
		{[]string{"--sync-version", "2"}, "sync_version"},
		{[]string{"--start-daemon", "master", "--sync-peer", "nonsense"}, "--sync-peer"},
	} {
		if _, _, err := parseSyncFlags(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}
