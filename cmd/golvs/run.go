package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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
	connMax := fs.Int("conn-max", 1<<20, "maximum connection table entries, which bounds its memory (~20 bytes per entry allocated at start, 104 per live entry); at the limit a new connection replaces a half-open or closing one, or is dropped and counted")
	fixHost := fs.Bool("fix-host", false, "turn IPv4 forwarding off on the served interfaces (restored at exit) instead of refusing to start")
	quiet := fs.Bool("q", false, "do not log next-hop and host events")
	ringVersion := fs.Int("ring", 2, "receive ring: 2 (TPACKET_V2: each frame handed over at once; MTU slots plus 68 KiB slots for GSO/GRO aggregates) or 3 (TPACKET_V3: frames batched in 1 MiB blocks handed over when full or after 1 ms, so up to 1 ms added per crossing below flood rates)")
	ringFrames := fs.Int("ring-frames", 0, "receive ring 2: MTU slots per worker and interface (0: as many as fit 8 MiB, 4096 at MTU 1500); more absorbs longer bursts, at 2 KiB of locked memory each")
	spin := fs.Duration("busy-poll", director.DefaultSpin, "the longest a worker keeps looking for frames after traffic before sleeping in poll() (0: never look): saves a wake-up per crossing. The look adapts between 0 and this, growing while frames come within it and shrinking while it finds none, so sparse traffic costs no spinning")
	fanout := fs.String("fanout", "cpu", "how frames are spread over workers: cpu (the worker of the CPU that received the frame; pair with RSS/RPS), next (the worker of the next CPU: for a host whose clients or servers send from the director's own CPUs, as over a lab's veths) or hash (by flow hash, whatever CPU received it)")
	noPin := fs.Bool("no-pin", false, "do not pin worker i to its CPU")
	txMode := fs.String("tx", "mmsg", "how workers send: mmsg (one non-blocking sendmmsg per batch) or ring (a PACKET_TX_RING per worker and interface, one non-blocking kick per batch)")
	noDrop := fs.Bool("no-drop-rule", false, "do not install the nftables netdev ingress rule that keeps the kernel from also running forwarded frames through its IP stack")
	nodest := fs.Bool("expire-nodest-conn", false, "IPVS's expire_nodest_conn: expire conns of removed real servers (and of quiesced ones on a new SYN) and reschedule, instead of dropping their packets")
	noPMTU := fs.Bool("no-pmtu", false, "TUN: drop packets too big for the tunnel instead of answering ICMP fragmentation-needed (a classic mistake, for the tun-no-pmtu lab)")
	quiescentTpl := fs.Bool("expire-quiescent-template", false, "IPVS's expire_quiescent_template: a persistence template on a weight-0 real server is invalid")
	laddr := fs.String("laddr", "", "FULLNAT local addresses (LIPs), comma-separated: on the real servers' network, owned by no host (golvs answers ARP for them)")
	lports := fs.String("lport-range", "5000-65535", "FULLNAT local port range")
	noTOA := fs.Bool("no-toa", false, "FULLNAT: do not insert the TOA option (client address) into SYNs")
	var def conntrack.Defense
	fs.IntVar(&def.AMemThresh, "amemthresh", 0, "IPVS's amemthresh, in free connection-table entries (conn-max minus entries) below which the automatic defenses engage (default conn-max/1024)")
	fs.IntVar(&def.AmDropRate, "am-droprate", 10, "IPVS's am_droprate: with --drop-packet 3, drop 1 in N new connections")
	fs.IntVar(&def.DropEntry, "drop-entry", 0, "IPVS's drop_entry: 0 off, 1 automatic (under amemthresh), 2 on until the room is back, 3 always: each second drop half-open and idle conns from a random 1/32 of the table")
	fs.IntVar(&def.DropPacket, "drop-packet", 0, "IPVS's drop_packet, same values: drop 1 in amemthresh/(amemthresh-free) new connections (all of them once the table is full)")
	fs.IntVar(&def.SecureTCP, "secure-tcp", 0, "IPVS's secure_tcp, same values: the anti-DoS TCP state table and shorter timeouts (SYN_RECV 10 s)")
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
	// Restarts without losing connections (issue 12).
	sloppyTCP := fs.Bool("sloppy-tcp", false, "IPVS's sloppy_tcp: any TCP packet without RST may create a conn, not only a SYN, so flows survive a restart that lost the table or a failover (use sh or mh, which pick the same real server again)")
	sloppySCTP := fs.Bool("sloppy-sctp", false, "IPVS's sloppy_sctp: refused, golvs has no SCTP data path yet")
	takeover := fs.Bool("takeover", false, "take over from the golvs daemon on --control: its configuration and connection table move here, then it stops (a graceful restart or binary upgrade; SIGUSR2 to a running daemon starts its own binary this way)")
	// Scale-out (issue 17): the VIPs announced over BGP (bgp.go).
	bgpf := addBGPFlags(fs)
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
	if *sloppySCTP {
		fmt.Fprintln(os.Stderr, "golvs run: --sloppy-sctp: golvs has no SCTP data path yet (SCTP services are refused), so there is nothing for it to apply to")
		return 2
	}
	if *takeover && (*rulesFile != "" || len(rules) > 0) {
		fmt.Fprintln(os.Stderr, "golvs run: --takeover runs the configuration of the daemon it takes over; --rules and --rule cannot be given with it")
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
	if *txMode != "mmsg" && *txMode != "ring" {
		fmt.Fprintf(os.Stderr, "golvs run: --tx %q (allowed: mmsg, ring)\n", *txMode)
		return 2
	}
	if *spin < 0 || *spin > director.MaxSpin {
		fmt.Fprintf(os.Stderr, "golvs run: --busy-poll %s out of range (0..%s)\n", *spin, director.MaxSpin)
		return 2
	}
	fmode, err := netio.ParseFanoutMode(*fanout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "golvs run: --fanout: %v\n", err)
		return 2
	}
	if fmode == netio.FanoutNext && *noPin {
		fmt.Fprintln(os.Stderr, "golvs run: --fanout next pins each worker one CPU on, and --no-pin turns pinning off: use one of them")
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
	ctc := conntrack.Config{MaxEntries: *connMax, Defense: def}
	mem, err := conntrack.CheckConfig(ctc)
	if err != nil {
		fmt.Fprintf(os.Stderr, "golvs run: %v\n", err)
		return 2
	}
	// The table's memory is bounded by --conn-max: refuse a bound the host
	// could not hold rather than die of it under a flood.
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		if ram := int64(si.Totalram) * int64(si.Unit); mem.Full > ram {
			fmt.Fprintf(os.Stderr, "golvs run: --conn-max %d: a full connection table takes %d MiB (%d MiB of it at start), more than this host's %d MiB of memory\n",
				*connMax, mem.Full>>20, mem.Fixed>>20, ram>>20)
			return 2
		}
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
	bgpCfg, err := bgpf.config()
	if err != nil {
		fmt.Fprintf(os.Stderr, "golvs run: %v\n", err)
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
		Conntrack:  ctc,
		Ring:       netio.RingConfig{Version: *ringVersion, Frames: *ringFrames},
		Fanout:     fmode,
		NoPin:      *noPin,
		Spin:       *spin,
		NoDropRule: *noDrop,
		TxRing:     *txMode == "ring",
		FixHost:    *fixHost,

		Semantics:               sem,
		ExpireNodestConn:        *nodest,
		ExpireQuiescentTemplate: *quiescentTpl,
		NoPMTU:                  *noPMTU,
		SloppyTCP:               *sloppyTCP,
		Sync:                    syncSys,
		ICMPMsgsPerSec:          *icmpRate,
		ICMPMsgsBurst:           *icmpBurst,
	}
	// A served interface removed and made again: restart, as on SIGUSR2
	// (restarts).
	replaced := make(chan string, 1)
	cfg.OnReplaced = func(name string) {
		select {
		case replaced <- name:
		default: // a restart is already on its way
		}
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
	var tk *control.Takeover
	prev := -1 // a pidfd of the daemon taken over from
	if *takeover {
		// Ask first: the daemon we replace says what it runs, and keeps
		// forwarding until this one is ready.
		if tk, err = control.BeginTakeover(*sock); err != nil {
			fmt.Fprintf(os.Stderr, "golvs run: %v\n", err)
			return 1
		}
		// A handle on the old daemon now, before it can exit (and its
		// pid be reused): waitExit watches it.
		if fd, err := unix.PidfdOpen(tk.PID, 0); err == nil {
			prev = fd
			defer unix.Close(fd)
		}
		cfg.Standby = true
	}
	d, err := director.New(cfg)
	if err != nil {
		if tk != nil {
			tk.Abort(err)
		}
		fmt.Fprintf(os.Stderr, "golvs run: %v\n", err)
		return 1
	}
	srv := control.NewServer(d)
	srv.Logf = logger.Printf
	switch {
	case tk != nil:
		if err := d.Apply(tk.Model); err != nil {
			tk.Abort(err)
			d.Close()
			fmt.Fprintf(os.Stderr, "golvs run: the configuration of the daemon to take over does not apply here, it carries on: %v\n", err)
			return 2
		}
	case text != "":
		if err := srv.Restore(text); err != nil {
			d.Close()
			fmt.Fprintf(os.Stderr, "golvs run: rules rejected, nothing applied: %v\n", err)
			return 2
		}
	}
	// High availability: nothing is served before VRRP says master (or,
	// taking over, as the old daemon's instances were), and a backup
	// daemon with backup_only stands by from the start (sync.go).
	ha := newHA(vc, daemons, syncSys, logger.Printf)
	ha.prepare(d)
	if tk == nil {
		// The sync daemons start now; taking over, once the old daemon
		// has let go of theirs (below).
		if err := ha.startSync(d); err != nil {
			d.Close()
			fmt.Fprintf(os.Stderr, "golvs run: %v\n", err)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The data path runs until life (below) ends: with BGP, after the
	// routes were withdrawn and drained, not at the signal itself.
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		_ = d.Run(runCtx)
	}()
	// fatal stops what runs (Run closes the director) and says why.
	var side sync.WaitGroup // monitoring goroutines, waited for at exit
	fatal := func(code int, format string, args ...any) int {
		stop()
		stopRun()
		<-ran
		side.Wait()
		fmt.Fprintf(os.Stderr, "golvs run: "+format+"\n", args...)
		return code
	}
	if tk != nil {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := d.WaitResolved(wctx); err != nil {
			logger.Printf("takeover: %v (taking over anyway)", err)
		}
		cancel()
		res, err := tk.Finish(d)
		if err != nil {
			return fatal(1, "%v (the old daemon, pid %d, carries on)", err, tk.PID)
		}
		d.AdoptHost(tk.Host)
		logger.Printf("took over from pid %d: %d connections, forwarding paused %v", tk.PID, res.Conns, res.Paused.Round(time.Millisecond))
		// The interface locks and the drop rule once the old daemon is
		// gone: it holds its locks until it exits, and an older golvs
		// removes its tables as it exits, whatever their name.
		side.Add(1)
		go func() {
			defer side.Done()
			gone := waitExit(ctx, tk.PID, prev, 10*time.Second)
			if ctx.Err() != nil {
				return // stopping already
			}
			if !gone {
				logger.Printf("takeover: pid %d still runs after 10 s; taking over its interfaces and drop rule anyway", tk.PID)
			}
			if err := d.TakeHost(); err != nil {
				logger.Printf("host: %v", err)
			}
		}()
		if res.Failed > 0 {
			logger.Printf("takeover: %d entries not imported (last: %v)", res.Failed, res.LastErr)
		}
		ha.adopt(tk, vc)
		if err := ha.startSync(d); err != nil {
			logger.Printf("takeover: %v (no connection sync)", err)
		}
	}
	if vc != nil {
		// VRRP: the director serves only while the speaker is master,
		// and the sync daemon (--start-daemon, lvs_sync_daemon) follows
		// its role; a stopping master resigns (priority 0), one handing
		// over to a successor does not.
		sp, err := startVRRP(ctx, vc, d, srv, ha, logger.Printf, &side)
		if err != nil {
			return fatal(1, "%v", err)
		}
		logger.Printf("VRRP: %s", vrrpSummary(sp))
	}
	stopHealth := make(chan struct{})
	defer close(stopHealth)
	var healthSrc metrics.HealthSource
	if ka != nil {
		var adopt []ipvs.ServiceConfig
		var handed json.RawMessage
		if tk != nil {
			adopt, handed = d.Model().Services, tk.Health
			if adopt == nil {
				adopt = []ipvs.ServiceConfig{}
			}
		}
		if err := ka.start(srv, kaCfg, stopHealth, adopt, handed); err != nil {
			if tk == nil {
				return fatal(2, "keepalived.conf rejected: %v", err)
			}
			logger.Printf("keepalived.conf rejected, health checks off: %v", err)
		} else {
			healthSrc = healthMetrics{ka.eng}
			srv.HealthHandoff = ka.handoff
		}
		defer ka.close()
	}
	var bg *bgpRun
	if bgpCfg != nil {
		bgpCfg.Logf = logger.Printf
		bgpCfg.Restarting = tk != nil
		if bg, err = startBGP(bgpCfg, d, srv, healthSrc, *bgpf.stall); err != nil {
			return fatal(1, "%v", err)
		}
		defer bg.close()
	}
	if *metricsListen != "" {
		reg, err := metrics.Registry(bg.addMetrics(metrics.New(srv, healthSrc)))
		var ms *metrics.Server
		if err == nil {
			ms, err = metrics.Listen(*metricsListen, metrics.Handler(reg, logger.Printf), logger.Printf)
		}
		if err != nil {
			return fatal(1, "%v", err)
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
			return fatal(1, "%v", err)
		}
		logger.Printf("proc files in %s/net, every %v", *procDir, *procEvery)
		side.Add(1)
		go func() { defer side.Done(); <-done }()
	}
	// After a takeover the old daemon has let go of the socket by now.
	if err := srv.Listen(*sock); err != nil {
		if tk == nil {
			return fatal(1, "%v", err)
		}
		logger.Printf("%v (forwarding without a control socket)", err)
	}
	for _, l := range d.HostReport() {
		logger.Printf("relies on: %s", l)
	}
	srv.OnHandover(stop)
	logger.Printf("%d workers, %d services, control socket %s, %s semantics (%s)", d.Workers(), len(d.Snapshot().List), *sock, sem, sem.Kernels())
	life := bg.lifetime(ctx, srv.HandedOver) // with BGP: ends once the routes are withdrawn and drained
	go func() {
		<-life.Done()
		stopRun()
	}()
	go srv.Serve(life)
	go restarts(ctx, args, logger, replaced)
	<-ran
	side.Wait()
	if srv.HandedOver() {
		logger.Printf("handed over to the new process; stopped")
	} else {
		logger.Printf("stopped")
	}
	return 0
}

// takeoverArgs are a daemon's flags for its successor: without
// --takeover (added back) and without --rules and --rule, since the
// successor runs the configuration it takes over (and refuses them).
func takeoverArgs(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			out = append(out, a)
			continue
		}
		switch name {
		case "takeover":
		case "rules", "rule":
			if !hasValue {
				i++ // its value
			}
		default:
			out = append(out, a)
		}
	}
	return out
}

// replacedSettle is how long after a served interface was made again
// golvs restarts: the new interface gets its addresses and routes in the
// moments after it comes up (ifup, a container runtime), and a golvs
// started before they are there would not know them.
const replacedSettle = time.Second

// replacedRetries are the waits before starting a successor again after
// one started for an interface made again failed (it exits at once,
// saying why: the interface gone again, a host check); then golvs gives
// up, logs it and serves on without the interface (SIGUSR2 tries again).
var replacedRetries = []time.Duration{2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second, 60 * time.Second}

// restarts starts this daemon's own binary (as it is on disk now, so an
// upgraded one) with the same flags and --takeover on SIGUSR2, and
// replacedSettle after the director reports a served interface removed
// and made again (its sockets are bound to the old one; a new process
// opens them on the new one); the new process takes over and this one
// stops.
func restarts(ctx context.Context, args []string, logger *log.Logger, replaced <-chan string) {
	exe, err := os.Executable()
	if err != nil {
		logger.Printf("restarts (SIGUSR2, an interface made again) are off: %v", err)
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR2)
	defer signal.Stop(sig)
	r := restarter{exe: exe, args: append([]string{"run"}, append(takeoverArgs(args), "--takeover")...),
		logf: logger.Printf, settle: replacedSettle, retries: replacedRetries}
	r.run(ctx, sig, replaced)
}

// restarter starts successors (restarts).
type restarter struct {
	exe     string
	args    []string
	logf    func(format string, args ...any)
	settle  time.Duration
	retries []time.Duration
}

func (r *restarter) run(ctx context.Context, sig <-chan os.Signal, replaced <-chan string) {
	failed := make(chan string, 1) // an interface whose successor failed
	tries := 0
	for {
		why, name, wait := "SIGUSR2", "", time.Duration(0)
		select {
		case <-ctx.Done():
			return
		case <-sig:
		case name = <-replaced:
			why, wait, tries = "interface "+name+" made again", r.settle, 0
		case name = <-failed:
			if tries == len(r.retries) {
				r.logf("interface %s made again: %d new processes failed, giving up: it stays unserved (SIGUSR2 tries again)", name, tries+1)
				continue
			}
			why, wait = "interface "+name+" made again", r.retries[tries]
			tries++
		}
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		// A successor that failed, to start or later (one that took
		// over outlives this process), is started again for an
		// interface made again.
		retry := func() {
			if name != "" {
				select {
				case failed <- name:
				default:
				}
			}
		}
		cmd := exec.Command(r.exe, r.args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			r.logf("%s: starting %s: %v", why, r.exe, err)
			retry()
			continue
		}
		r.logf("%s: started %s (pid %d) to take over", why, r.exe, cmd.Process.Pid)
		go func() {
			if err := cmd.Wait(); err != nil {
				r.logf("%s: the new process (pid %d) failed: %v", why, cmd.Process.Pid, err)
				retry()
			}
		}()
	}
}

// waitExit waits up to limit for process pid to exit, watching pidfd when
// there is one (>= 0), else looking every 10 ms; false if it still runs.
func waitExit(ctx context.Context, pid, pidfd int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		left := time.Until(deadline)
		if pidfd >= 0 {
			pfd := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, int(min(left, 100*time.Millisecond)/time.Millisecond))
			if n > 0 || err != nil && err != unix.EINTR {
				return true
			}
		} else {
			if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
				return true
			}
			time.Sleep(10 * time.Millisecond)
		}
		if left <= 0 || ctx.Err() != nil {
			return false
		}
	}
}
