package keepalived

import (
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/golvs/golvs/vrrp"
)

func a4(s string) netip.Addr { return netip.MustParseAddr(s) }

// The VRRP corpus reads into the speaker configuration written here by
// hand from keepalived.conf(5), defaults included.
func TestVRRPCorpus(t *testing.T) {
	garp := func(delay time.Duration, repeat int, refresh time.Duration) vrrp.GARP {
		return vrrp.GARP{MasterDelay: delay, MasterRepeat: repeat, MasterRefresh: refresh, RefreshRepeat: 1, LowerPrioRepeat: repeat}
	}
	cases := map[string]*vrrp.Config{
		"lvs_pair.conf": {
			Instances: []vrrp.Instance{
				{Name: "VI_EXT", Interface: "eth0", VRID: 51, Priority: 150, Interval: time.Second, Version: 2, StartMaster: true, AuthPass: "s3cret",
					Addrs: []vrrp.VAddr{{Addr: a4("198.18.0.100"), Dev: "eth0"}, {Addr: a4("198.18.0.101")}}, Excluded: []vrrp.VAddr{},
					UnicastPeers: []netip.Addr{}, GARP: garp(2*time.Second, 5, time.Minute)},
				{Name: "VI_INT", Interface: "eth1", VRID: 52, Priority: 150, Interval: time.Second, Version: 2, StartMaster: true, PreemptDelay: 10 * time.Second,
					UnicastSrc: a4("198.19.0.2"), UnicastPeers: []netip.Addr{a4("198.19.0.3")},
					Addrs: []vrrp.VAddr{{Addr: a4("198.19.0.1"), Dev: "eth1"}}, Excluded: []vrrp.VAddr{},
					GARP: vrrp.GARP{MasterDelay: 2 * time.Second, MasterRepeat: 3, MasterRefresh: time.Minute, RefreshRepeat: 1, LowerPrioRepeat: 3}},
			},
			Groups: []vrrp.Group{{Name: "VG_1", Members: []string{"VI_EXT", "VI_INT"}}},
		},
		"v3.conf": {
			Instances: []vrrp.Instance{
				{Name: "VI_1", Interface: "ext0", VRID: 7, Priority: 100, Interval: 500 * time.Millisecond, Version: 3, NoPreempt: true, SkipCheckAdvAddr: true,
					Addrs: []vrrp.VAddr{{Addr: a4("198.18.0.100")}}, Excluded: []vrrp.VAddr{{Addr: a4("198.18.0.200")}},
					UnicastPeers: []netip.Addr{}, GARP: garp(5*time.Second, 5, 0)},
			},
		},
	}
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			cfg, err := Load(filepath.Join("testdata", "vrrp", name), &Options{ConfigID: "golvs"})
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(want, cfg.VRRP, cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty()); d != "" {
				t.Fatalf("VRRP configuration (-want +got):\n%s", d)
			}
		})
	}
	// The notify script and the address label are named, not dropped.
	cfg, _ := Load(filepath.Join("testdata", "vrrp", "lvs_pair.conf"), &Options{ConfigID: "golvs"})
	// lvs_sync_daemon: the sync daemon follows VI_INT.
	if sd := cfg.SyncDaemon; sd == nil || sd.Interface != "eth1" || sd.Instance != "VI_INT" || sd.SyncID != 51 || sd.MaxLen != 1400 || sd.TTL != 1 || sd.Port != 0 || sd.Group.IsValid() {
		t.Errorf("lvs_sync_daemon: %+v", sd)
	}
	all := strings.Join(cfg.Warnings, "\n")
	for _, w := range []string{"notify_master: ignored", "label ignored", "global_defs: golvs acts only on its vrrp_* settings; ignored: router_id"} {
		if !strings.Contains(all, w) {
			t.Errorf("no warning %q in:\n%s", w, all)
		}
	}
}

// keepalived itself accepts the VRRP corpus: golvs reads keepalived's
// grammar, not one of its own.
func TestVRRPCorpusKeepalivedAccepts(t *testing.T) {
	bin, err := exec.LookPath("keepalived")
	if err != nil {
		t.Skip("skipping: keepalived is not installed (Debian package keepalived; .ci/run installs it)")
	}
	files, _ := filepath.Glob("testdata/vrrp/*.conf")
	if len(files) < 2 {
		t.Fatalf("VRRP corpus: %v", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			abs, _ := filepath.Abs(f)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, _ := exec.CommandContext(ctx, bin, "--config-test", "-f", abs, "-i", "golvs").CombinedOutput()
			// The interfaces the files name need not exist on this host:
			// that is the only complaint allowed.
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if l != "" && !strings.Contains(l, "doesn't exist") && !strings.Contains(l, "Non-existent interface") {
					t.Fatalf("keepalived --config-test complains: %q\n%s", l, out)
				}
			}
		})
	}
}

// An over-long password is truncated to keepalived's 8 characters, with a
// warning, so both ends of a mixed pair send the same bytes.
func TestVRRPAuthTruncated(t *testing.T) {
	cfg, err := Parse("k.conf", []byte("vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 1\n authentication {\n auth_type PASS\n auth_pass 0123456789\n }\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.VRRP.Instances[0].AuthPass; got != "01234567" {
		t.Fatalf("auth_pass %q, want the first 8 characters", got)
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "truncated") {
		t.Fatalf("warnings %q", cfg.Warnings)
	}
}
