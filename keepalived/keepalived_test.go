package keepalived

import (
	"bufio"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/golvs/golvs/health"
	"github.com/golvs/golvs/ipvsadm"
)

// tableOf applies ipvsadm rules text to an empty table, through
// ipvsadm's own reader and model.
func tableOf(t *testing.T, text string) *ipvsadm.Table {
	t.Helper()
	lines, err := ipvsadm.ParseRules(strings.NewReader(text))
	if err != nil {
		t.Fatalf("rules: %v\n%s", err, text)
	}
	tb := ipvsadm.NewTable()
	if err := tb.Restore(lines); err != nil {
		t.Fatalf("rules: %v\n%s", err, text)
	}
	return tb
}

func save(tb *ipvsadm.Table) string {
	var b strings.Builder
	l := ipvsadm.NewLister(ipvsadm.FmtNumeric | ipvsadm.FmtNoSort)
	_ = l.WriteSave(&b, tb.ListServices(), true)
	return b.String()
}

// configRules is the table a configuration makes at start.
func configRules(t *testing.T, cfg *Config) string {
	t.Helper()
	rules, err := health.InitialRules(cfg.Services)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, r := range rules {
		b.WriteString(strings.Join(r.Args, " ") + "\n")
	}
	return b.String()
}

func corpus(t *testing.T) []string {
	files, err := filepath.Glob("testdata/corpus/*.conf")
	if err != nil || len(files) < 6 {
		t.Fatalf("corpus: %v %v", files, err)
	}
	return files
}

// Each configuration of the corpus makes the same table as the ipvsadm
// rules written beside it by hand: compared in ipvsadm's model (every
// field of every service and real server, in kernel list order) and as
// ipvsadm -S prints it.
func TestCorpusTables(t *testing.T) {
	for _, f := range corpus(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := Load(f, &Options{ConfigID: "golvs"})
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(strings.TrimSuffix(f, ".conf") + ".rules")
			if err != nil {
				t.Fatal(err)
			}
			got := tableOf(t, configRules(t, cfg))
			exp := tableOf(t, string(want))
			if d := cmp.Diff(exp.Services(), got.Services(), cmpopts.EquateComparable(netip.Addr{})); d != "" {
				t.Errorf("table differs from the ipvsadm rules (-want +got):\n%s", d)
			}
			if g, w := save(got), save(exp); g != w {
				t.Errorf("ipvsadm -S:\n%s\nwant\n%s", g, w)
			}
		})
	}
}

// keepalived itself, where installed, accepts every corpus file that is
// not a golvs extension: the corpus is keepalived's grammar, not ours.
func TestCorpusKeepalivedAccepts(t *testing.T) {
	bin, err := exec.LookPath("keepalived")
	if err != nil {
		t.Skip("skipping: keepalived is not installed (Debian package keepalived; .ci/run installs it)")
	}
	for _, f := range corpus(t) {
		if strings.HasSuffix(f, ".golvs.conf") {
			continue
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			abs, _ := filepath.Abs(f)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "--config-test", "-f", abs, "-i", "golvs").CombinedOutput()
			if err != nil || strings.Contains(string(out), "Unknown keyword") {
				t.Fatalf("keepalived --config-test: %v\n%s", err, out)
			}
		})
	}
	// And it refuses what golvs refuses for being unknown.
	bad, _ := filepath.Abs("testdata/bad/unknown_kw.conf")
	out, err := exec.Command(bin, "--config-test", "-f", bad).CombinedOutput()
	if err == nil && !strings.Contains(string(out), "Unknown keyword") {
		t.Fatalf("keepalived accepted an unknown keyword: %s", out)
	}
}

// Every malformed variant is refused whole, naming its file and line and
// what was wrong (the first line of each says which).
func TestMalformed(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.conf")
	if len(files) < 30 {
		t.Fatalf("only %d malformed files", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			fh, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _ := bufio.NewReader(fh).ReadString('\n')
			fh.Close()
			spec, ok := strings.CutPrefix(strings.TrimSpace(first), "# want ")
			line, want, ok2 := strings.Cut(spec, ": ")
			if !ok || !ok2 {
				t.Fatalf("first line %q is not '# want LINE: TEXT'", first)
			}
			n, _ := strconv.Atoi(line)
			cfg, err := Load(f, &Options{ConfigID: "golvs"})
			if err == nil {
				t.Fatalf("accepted: %d services", len(cfg.Services))
			}
			abs, _ := filepath.Abs(f)
			prefix := abs + ":" + strconv.Itoa(n) + ": "
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q\nwant %q...%q", err, prefix, want)
			}
		})
	}
}

// Blocks and keywords golvs does not act on are named once each in a
// warning; VRRP blocks configure the VRRP speaker (vrrp_test.go).
func TestWarnings(t *testing.T) {
	src := `global_defs {
    router_id X
}
vrrp_instance VI_1 {
    state MASTER
    interface ext0
    virtual_router_id 51
    notify_master /bin/true
    virtual_ipaddress {
        198.18.0.100
    }
}
vrrp_sync_group G {
    group {
        VI_1
    }
}
virtual_server 198.18.0.100 80 {
    protocol TCP
    lb_kind NAT
    smtp_alert
    real_server 198.19.0.11 80 {
    }
}
`
	cfg, err := Parse("k.conf", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"k.conf:1: global_defs", "k.conf:8: notify_master: ignored", "k.conf:21: smtp_alert: ignored"}
	if len(cfg.Warnings) != len(want) {
		t.Fatalf("warnings %q, want %d", cfg.Warnings, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(cfg.Warnings[i], w) {
			t.Errorf("warning %d: %q, want it to start with %q", i, cfg.Warnings[i], w)
		}
	}
	if cfg.VRRP == nil || len(cfg.VRRP.Instances) != 1 || cfg.VRRP.Instances[0].Name != "VI_1" || len(cfg.VRRP.Groups) != 1 {
		t.Fatalf("VRRP not configured: %+v", cfg.VRRP)
	}
}

// The checkers carry keepalived's defaults and the cascade virtual
// server -> real server -> checker.
func TestCheckerSettings(t *testing.T) {
	cfg, err := Load("testdata/corpus/basic.conf", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Services[0].Reals
	h, tc := r[0].Checks[0], r[1].Checks[0]
	if h.Kind != health.HTTP || h.DelayLoop != 6*time.Second || h.ConnectTimeout != 3*time.Second || h.Retry != 3 ||
		h.DelayBeforeRetry != 2*time.Second || h.Warmup != 6*time.Second || h.Rise != 1 || len(h.URLs) != 2 ||
		h.URLs[0].Digest != "640205b7b0fc66c1ea91c463fac6334d" || len(h.URLs[1].Status) != 3 || h.Target.String() != "198.19.0.11:80" {
		t.Errorf("HTTP_GET: %+v", h)
	}
	if tc.Kind != health.TCP || tc.DelayLoop != 2500*time.Millisecond || tc.ConnectTimeout != 500*time.Millisecond || tc.Retry != 1 || tc.DelayBeforeRetry != time.Second {
		t.Errorf("TCP_CHECK: %+v", tc)
	}
	cfg, err = Load("testdata/corpus/methods.conf", nil)
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Services[2].Reals[0].Checks[0]
	if m.Kind != health.MISC || strings.Join(m.Script, "|") != "/bin/true|an arg|two" || !m.Dynamic || m.ScriptTimeout != 3*time.Second || m.Retry != 0 {
		t.Errorf("MISC_CHECK: %+v", m)
	}
	d := cfg.Services[1].Reals[0].Checks[0]
	if d.Kind != health.DNS || d.QName != "example.org" || d.Retry != 3 || d.DelayBeforeRetry != d.DelayLoop || d.Target.String() != "198.19.0.31:5353" {
		t.Errorf("DNS_CHECK: %+v", d)
	}
	cfg, err = Load("testdata/corpus/extensions.golvs.conf", nil)
	if err != nil {
		t.Fatal(err)
	}
	x := cfg.Services[0].Reals[0].Checks[0]
	if x.Rise != 2 || x.Retry != 1 {
		t.Errorf("rise/fall: rise %d retry %d, want 2 and 1", x.Rise, x.Retry)
	}
}

// FuzzParse: any input is refused with a positioned error or read into
// services whose commands ipvsadm accepts; never a panic.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.conf")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Add([]byte("virtual_server 1.2.3.4 80 { protocol TCP real_server 5.6.7.8 { TCP_CHECK { } } }"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.conf", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.conf:") && !strings.HasPrefix(err.Error(), "test") {
				t.Fatalf("error without a position: %v", err)
			}
			return
		}
		rules, err := health.InitialRules(cfg.Services)
		if err != nil {
			t.Fatalf("accepted configuration refused by the engine: %v", err)
		}
		tb := ipvsadm.NewTable()
		for _, r := range rules {
			c, err := ipvsadm.Parse(r.Args)
			if err == nil {
				err = tb.Apply(c)
			}
			if err != nil {
				t.Fatalf("%v: %v", r.Args, err)
			}
		}
	})
}
