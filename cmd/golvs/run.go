package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
	"github.com/golvs/golvs/ipvssync"
	"github.com/golvs/golvs/keepalived"
	"github.com/golvs/golvs/metrics"
	"github.com/golvs/golvs/netio"
)

// withoutMarks blanks golvs's mark lines (checked by the daemon) so the
// ipvsadm reader can check the rest, keeping line numbers.
func withoutMarks(text string) string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "ipvsadm" {
			f = f[1:]
		}
		if ipvsadm.IsMarkCommand(f) {
			lines[i] = ""
		}
	}
	return strings.Join(lines, "\n")
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// runMain is `golvs run`: open the director on its interfaces, load the
// rules, listen on the control socket, forward until SIGINT/SIGTERM.
func runMain(args []string) int {
	fs := flag.NewFlagSet("golvs run", flag.ContinueOnError)
	var ifaces, rules listFlag
	fs.Var(&ifaces, "i", "interface to serve, NAME or NAME:arp (answer ARP for VIPs there); repeat for each")
	fs.Var(&ifaces, "interface", "same as -i")
	fs.Var(&rules, "rule", "one ipvsadm command line to apply at start, e.g. '-A -t 198.18.0.100:80 -s rr'; repeatable")
	rulesFile := fs.String("rules", "", "rules file in ipvsadm -S format, applied at start (a bad line refuses the start)")
	sock := fs.String("control", control.DefaultSocket, "control socket path")
	workers := fs.Int("workers", 0, "packet workers (default: one per CPU)")
	connMax := fs.Int("conn-max", 1<<20, "maximum connection table entries; new flows beyond it are dropped and counted")
	fixHost := fs.Bool("fix-host", false, "turn IPv4 forwarding off on the served interfaces (restored at exit) instead of refusing to start")
	quiet := fs.Bool("q", false, "do not log next-hop and host events")
	ringVersion := fs.Int("ring", 2, "receive ring: 2 (TPACKET_V2: each frame handed over at once; MTU slots plus 68 KiB slots for GSO/GRO aggregates) or 3 (TPACKET_V3: frames batched in 1 MiB blocks handed over when full or after 1 ms, so up to 1 ms added per crossing below flood rates)")
	ringFrames := fs.Int("ring-frames", 0, "receive ring 2: MTU slots per worker and interface (0: as many as fit 8 MiB, 4096 at MTU 1500); more absorbs longer bursts, at 2 KiB of locked memory each")
	spin := fs.Duration("busy-poll", 0, "how long a worker keeps looking for frames after traffic before sleeping in poll() (0: never): saves a wake-up per crossing on a director with CPUs to spare, at the cost of a CPU kept busy that long after every burst (which slows everything else sharing it)")
	fanout := fs.String("fanout", "cpu", "how frames are spread over workers: cpu (the worker of the CPU that received the frame; pair with RSS/RPS) or hash (by flow hash, whatever CPU received it)")
	noPin := fs.Bool("no-pin", false, "do not pin worker i to its CPU")
	noDrop := fs.Bool("no-drop-rule", false, "do not install the nftables netdev ingress rule that keeps the kernel from also running forwarded frames through its IP stack")
	nodest := fs.Bool("expire-nodest-conn", false, "IPVS's expire_nodest_conn: expire conns of removed real servers (and of quiesced ones on a new SYN) and reschedule, instead of dropping their packets")
	noPMTU := fs.Bool("no-pmtu", false, "TUN: drop packets too big for the tunnel instead of answering ICMP fragmentation-needed (a classic mistake, for the tun-no-pmtu lab)")
	quiescentTpl := fs.Bool("expire-quiescent-template", false, "IPVS's expire_quiescent_template: a persistence template on a weight-0 real server is invalid")
	laddr := fs.String("laddr", "", "FULLNAT local addresses (LIPs), comma-separated: on the real servers' network, owned by no host (golvs answers ARP for them)")
	lports := fs.String("lport-range", "5000-65535", "FULLNAT local port range")
	noTOA := fs.Bool("no-toa", false, "FULLNAT: do not insert the TOA option (client address) into SYNs")
	icmpRate := fs.Int("icmp-msgs-per-sec", director.DefaultICMPMsgsPerSec, "ICMP errors golvs generates (port unreachable, fragmentation needed) per second at most, as net.ipv4.icmp_msgs_per_sec; 0: none")
	icmpBurst := fs.Int("icmp-msgs-burst", director.DefaultICMPMsgsBurst, "ICMP errors golvs may send at once before the rate applies, as net.ipv4.icmp_msgs_burst")
	// Health checks: keepalived.conf as a configuration source.
	kaConf := fs.String("keepalived-conf", "", "keepalived.conf: its virtual servers, real servers and health checkers (re-read on SIGHUP)")
	sem := ipvs.Current
	fs.Var(&sem, "semantics", "kernel behaviour to reproduce: current (Linux 6.1.191+, 7.3+; 6.18.45+ and 7.2+ for the overhead and -x/-y: an active conn weighs 257 in the overhead, edge-triggered -x/-y) or classic (before 6.1.183: active*256 + inactive, the tutorials' formulas)")
	// Monitoring (issue 14): Prometheus and the kernel's /proc/net/ip_vs files.
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics (node_exporter's node_ipvs_* series and golvs_*), e.g. :9120 or 198.18.0.1:9120")
	procDir := fs.String("proc-dir", "", "keep DIR/net/ip_vs, ip_vs_stats and ip_vs_conn in the kernel's format (for node_exporter --path.procfs=DIR and other /proc readers)")
	procEvery := fs.Duration("proc-interval", 2*time.Second, "how often --proc-dir files are rewritten (ip_vs_conn less often when the table is large)")
	// High availability (issue 15): connection sync (sync.go) and VRRP
	// (vrrp.go) flags.
	var sf syncFlags
	sf.register(fs)
	var vf vrrpFlags
	vf.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	syncSys, daemons, err := sf.build()
	if err != nil {
		fmt.Fprintf(os.Stderr, "golvs run: %v\n", err)
		return 2
	}
	vc, err := vf.config()
	if err != nil {
		fmt.Fprintf(os.Stderr, "golvs run: %v\n", err)
		return 2
	}
	fn, err := parseFullNAT(*laddr, *lports, *noTOA)
	if err != nil {
		fmt.Fprintf(os.Stderr, "golvs run: %v\n", err)
		return 2
	}
	if len(ifaces) == 0 {
		fmt.Fprintln(os.Stderr, "golvs run: no interface given (-i NAME[:arp])")
		return 2
	}
	if *ringVersion != 2 && *ringVersion != 3 {
		fmt.Fprintf(os.Stderr, "golvs run: --ring %d: allowed 2 or 3\n", *ringVersion)
		return 2
	}
	if *ringFrames != 0 && (*ringFrames < 16 || *ringFrames > 1<<20) {
		fmt.Fprintf(os.Stderr, "golvs run: --ring-frames %d out of range (0, or 16..%d)\n", *ringFrames, 1<<20)
		return 2
	}
	if *spin < 0 || *spin > 10*time.Millisecond {
		fmt.Fprintf(os.Stderr, "golvs run: --busy-poll %s out of range (0..10ms)\n", *spin)
		return 2
	}
	fmode, err := netio.ParseFanoutMode(*fanout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "golvs run: --fanout: %v\n", err)
		return 2
	}
	if *workers < 0 || *workers > 1024 {
		fmt.Fprintf(os.Stderr, "golvs run: --workers %d out of range (0..1024)\n", *workers)
		return 2
	}
	if *icmpRate < 0 || *icmpRate > 1<<24 {
		fmt.Fprintf(os.Stderr, "golvs run: --icmp-msgs-per-sec %d out of range (0..%d)\n", *icmpRate, 1<<24)
		return 2
	}
	if *icmpBurst < 1 || *icmpBurst > 1<<24 {
		fmt.Fprintf(os.Stderr, "golvs run: --icmp-msgs-burst %d out of range (1..%d)\n", *icmpBurst, 1<<24)
		return 2
	}
	if *procEvery < 100*time.Millisecond || *procEvery > time.Hour {
		fmt.Fprintf(os.Stderr, "golvs run: --proc-interval %v out of range (100ms..1h)\n", *procEvery)
		return 2
	}
	if *connMax < 1 || *connMax > 1<<30 {
		fmt.Fprintf(os.Stderr, "golvs run: --conn-max %d out of range (1..%d)\n", *connMax, 1<<30)
		return 2
	}
	var text string
	if *rulesFile != "" {
		b, err := os.ReadFile(*rulesFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "golvs run: %v\n", err)
			return 2
		}
		text = string(b)
	}
	for _, r := range rules {
		text += r + "\n"
	}
	// A rules file with a bad line is refused before anything is opened.
	if _, err := ipvsadm.ParseRules(strings.NewReader(withoutMarks(text))); err != nil {
		fmt.Fprintf(os.Stderr, "golvs run: rules rejected, nothing applied: %v\n", err)
		return 2
	}
	logger := log.New(os.Stderr, "golvs: ", log.LstdFlags)
	var ka *keepalivedSource
	var kaCfg *keepalived.Config
	if *kaConf != "" {
		var err error
		if ka, kaCfg, err = newKeepalivedSource(*kaConf, text, logger); err != nil {
			fmt.Fprintf(os.Stderr, "golvs run: keepalived.conf rejected, nothing applied: %v\n", err)
			return 2
		}
	}
	if kaCfg != nil && kaCfg.VRRP != nil {
		// keepalived.conf's vrrp_instance blocks (vrrp.go).
		if vc != nil {
			fmt.Fprintln(os.Stderr, "golvs run: VRRP is configured both by --vrrp-* flags and by keepalived.conf's vrrp_instance blocks: configure it one way")
			return 2
		}
		vc = kaCfg.VRRP
	}
	if kaCfg != nil && kaCfg.SyncDaemon != nil {
		// lvs_sync_daemon: a sync daemon whose role follows VRRP.
		if len(daemons) > 0 {
			fmt.Fprintln(os.Stderr, "golvs run: the sync daemon is configured both by --start-daemon and by keepalived.conf's lvs_sync_daemon: configure it one way")
			return 2
		}
		sd := kaCfg.SyncDaemon
		daemons = []ipvssync.Config{{Role: ipvssync.Backup, Ifname: sd.Interface, SyncID: sd.SyncID, MaxLen: sd.MaxLen, Port: sd.Port, TTL: sd.TTL, Group: sd.Group}}
	}
	cfg := director.Config{
		Workers:    *workers,
		Conntrack:  conntrack.Config{MaxEntries: *connMax},
		Ring:       netio.RingConfig{Version: *ringVersion, Frames: *ringFrames},
		Fanout:     fmode,
		NoPin:      *noPin,
		Spin:       *spin,
		NoDropRule: *noDrop,
		FixHost:    *fixHost,

		Semantics:               sem,
		ExpireNodestConn:        *nodest,
		ExpireQuiescentTemplate: *quiescentTpl,
		NoPMTU:                  *noPMTU,
		Sync:                    syncSys,
		ICMPMsgsPerSec:          *icmpRate,
		ICMPMsgsBurst:           *icmpBurst,
	}
	if *icmpRate == 0 {
		cfg.ICMPMsgsPerSec = -1 // none
	}
	cfg.LocalAddrs, cfg.LocalPortMin, cfg.LocalPortMax, cfg.NoTOA = fn.addrs, fn.min, fn.max, fn.noTOA
	if !*quiet {
		cfg.Logf = logger.Printf
	}
	for _, i := range ifaces {
		name, opt, _ := strings.Cut(i, ":")
		if opt != "" && opt != "arp" {
			fmt.Fprintf(os.Stderr, "golvs run: interface %q: unknown option %q (only :arp)\n", i, opt)
			return 2
		}
		cfg.Interfaces = append(cfg.Interfaces, director.Interface{Name: name, ARP: opt == "arp"})
	}
	d, err := director.New(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "golvs run: %v\n", err)
		return 1
	}
	srv := control.NewServer(d)
	if text != "" {
		if err := srv.Restore(text); err != nil {
			d.Close()
			fmt.Fprintf(os.Stderr, "golvs run: rules rejected, nothing applied: %v\n", err)
			return 2
		}
	}
	for _, c := range daemons {
		if err := d.Sync.Start(c); err != nil {
			d.Close()
			fmt.Fprintf(os.Stderr, "golvs run: --start-daemon %s: %v\n", c.Role, err)
			return 1
		}
	}
	stopHealth := make(chan struct{})
	defer close(stopHealth)
	var healthSrc metrics.HealthSource
	if ka != nil {
		if err := ka.start(srv, kaCfg, stopHealth); err != nil {
			d.Close()
			fmt.Fprintf(os.Stderr, "golvs run: keepalived.conf rejected: %v\n", err)
			return 2
		}
		defer ka.close()
		healthSrc = healthMetrics{ka.eng}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var side sync.WaitGroup // monitoring goroutines, waited for at exit
	if vc != nil {
		// VRRP: the director serves nothing until the speaker makes it
		// master, and the sync daemon (--start-daemon, lvs_sync_daemon)
		// follows its role; a stopping master resigns (priority 0).
		sp, err := startVRRP(ctx, vc, d, srv, daemons, logger.Printf, &side)
		if err != nil {
			stop()
			d.Close()
			fmt.Fprintf(os.Stderr, "golvs run: %v\n", err)
			return 1
		}
		logger.Printf("VRRP: %s", vrrpSummary(sp))
	}
	if *metricsListen != "" {
		reg, err := metrics.Registry(metrics.New(srv, healthSrc))
		var ms *metrics.Server
		if err == nil {
			ms, err = metrics.Listen(*metricsListen, metrics.Handler(reg, logger.Printf), logger.Printf)
		}
		if err != nil {
			stop()
			side.Wait()
			d.Close()
			fmt.Fprintf(os.Stderr, "golvs run: %v\n", err)
			return 1
		}
		logger.Printf("metrics at http://%s%s", ms.Addr(), metrics.Path)
		side.Add(1)
		go func() {
			defer side.Done()
			if err := ms.Serve(ctx); err != nil {
				logger.Printf("%v", err)
			}
		}()
	}
	if *procDir != "" {
		done, err := srv.StartProcDir(ctx, *procDir, *procEvery, logger.Printf)
		if err != nil {
			stop()
			side.Wait()
			d.Close()
			fmt.Fprintf(os.Stderr, "golvs run: %v\n", err)
			return 1
		}
		logger.Printf("proc files in %s/net, every %v", *procDir, *procEvery)
		side.Add(1)
		go func() { defer side.Done(); <-done }()
	}
	if err := srv.Listen(*sock); err != nil {
		stop()
		side.Wait()
		d.Close()
		fmt.Fprintf(os.Stderr, "golvs run: %v\n", err)
		return 1
	}
	for _, l := range d.HostReport() {
		logger.Printf("relies on: %s", l)
	}
	logger.Printf("%d workers, %d services, control socket %s, %s semantics (%s)", d.Workers(), len(d.Snapshot().List), *sock, sem, sem.Kernels())
	go srv.Serve(ctx)
	_ = d.Run(ctx)
	side.Wait()
	logger.Printf("stopped")
	return 0
}
