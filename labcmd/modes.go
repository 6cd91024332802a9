package labcmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/sched"
)

// labOpts are the flags every lab takes.
type labOpts struct {
	mode, mistake string
	scheduler     string
	weights       []int
	requests      int
	keep, explain bool
	suffix        string
	workers       int
	tunType       string
	check         string // health checker (--check), "" none
	inhibit       bool
	semantics     ipvs.Semantics
	ipv6          bool // a dual-stack lab, its services on the IPv6 VIP
}

// vip is the lab's VIP: IPv6 with --ipv6.
func (o *labOpts) vip() netip.Addr {
	if o.ipv6 {
		return lab.VIP6
	}
	return lab.VIP
}

// rips are the addresses the lab's services send to: the IPv6 ones with
// --ipv6.
func (s *session) rips() []netip.Addr {
	if s.o.ipv6 {
		return s.mt.RIPs6
	}
	return s.mt.RIPs
}

// mistakeLabs are the teaching labs' names: golvs lab nat-wrong-gateway,
// dr-no-arp-ignore, tun-no-pmtu (also --mistake NAME on the mode's lab).
var mistakeLabs = map[string][2]string{
	"nat-wrong-gateway": {"nat", "wrong-gateway"},
	"dr-no-arp-ignore":  {"dr", "no-arp-ignore"},
	"tun-no-pmtu":       {"tun", "no-pmtu"},
}

func parseLab(mode, mistake string, args []string, stderr io.Writer) (*labOpts, error) {
	fs := flag.NewFlagSet("golvs lab "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &labOpts{mode: mode}
	fs.StringVar(&o.scheduler, "scheduler", "rr", "scheduler: "+strings.Join(sched.Names(), ", "))
	weights := fs.String("weights", "1,1", "real server weights, one per real server (also sets how many)")
	fs.IntVar(&o.requests, "requests", 10, "HTTP requests to send from the client (0..100000)")
	fs.BoolVar(&o.keep, "keep", false, "leave the lab and its director running")
	fs.BoolVar(&o.explain, "explain", false, "print the topology and the path of a request and its reply, then trace the requests")
	fs.StringVar(&o.suffix, "suffix", "", "suffix for namespace names (tests run labs side by side)")
	fs.IntVar(&o.workers, "workers", 1, "director workers")
	fs.StringVar(&o.tunType, "tun-type", "ipip", "TUN lab: ipip or gue")
	fs.Var(&o.semantics, "semantics", "the director's kernel semantics: current or classic (golvs run --semantics)")
	fs.StringVar(&o.mistake, "mistake", mistake, "build a classic mistake, show the failure, then the fix: wrong-gateway (nat), no-arp-ignore (dr), no-pmtu (tun)")
	fs.StringVar(&o.check, "check", "", "NAT lab: health-check the real servers with tcp, http or misc (keepalived.conf through golvs run --keepalived-conf), with a sorry server")
	fs.BoolVar(&o.inhibit, "inhibit", false, "with --check: inhibit_on_failure (a failed server stays at weight 0)")
	fs.BoolVar(&o.ipv6, "ipv6", false, "a dual-stack lab (2001:db8:18::/64 client side, 2001:db8:19::/64 server side) serving the IPv6 VIP 2001:db8:18::100")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.ipv6 && (o.check != "" || o.mistake != "") {
		return nil, fmt.Errorf("--ipv6 goes with the plain mode labs (nat, dr, tun, fullnat), not with --check or a mistake")
	}
	if o.check != "" {
		if _, ok := checkTypes[o.check]; !ok {
			return nil, fmt.Errorf("--check %q: tcp, http or misc", o.check)
		}
		if mode != "nat" || o.mistake != "" {
			return nil, fmt.Errorf("--check goes with the NAT lab (golvs lab nat --check %s)", o.check)
		}
	} else if o.inhibit {
		return nil, fmt.Errorf("--inhibit goes with --check")
	}
	if err := sched.Check(o.scheduler); err != nil {
		return nil, err
	}
	w, err := parseWeights(*weights)
	if err != nil {
		return nil, err
	}
	o.weights = w
	if o.requests < 0 || o.requests > 100000 {
		return nil, fmt.Errorf("--requests %d out of range (0..100000)", o.requests)
	}
	if o.tunType != "ipip" && o.tunType != "gue" {
		return nil, fmt.Errorf("--tun-type %q: ipip or gue", o.tunType)
	}
	if o.workers < 1 || o.workers > 64 {
		return nil, fmt.Errorf("--workers %d out of range (1..64)", o.workers)
	}
	if o.mistake != "" && lab.Mistakes[o.mistake] != mode {
		var names []string
		for n, m := range lab.Mistakes {
			names = append(names, n+" ("+m+")")
		}
		return nil, fmt.Errorf("--mistake %q is not a mistake of the %s lab (mistakes: %s)", o.mistake, mode, strings.Join(names, ", "))
	}
	if o.mistake != "" && o.keep {
		return nil, fmt.Errorf("--keep and --mistake do not go together (a mistake lab shows its failure and fix, then cleans up)")
	}
	return o, nil
}

// session is one lab's processes and state, torn down by close unless
// the lab is kept.
type session struct {
	o     *labOpts
	dir   string
	sock  string
	st    *State
	mt    *lab.ModeTopology
	procs []*exec.Cmd
	exe   string
	rules string
	run   []string // the director's command line
}

func (s *session) start(ns *lab.NS, logName string, args ...string) (*exec.Cmd, error) {
	logf, err := os.Create(filepath.Join(s.dir, logName))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	c := exec.Command(s.exe, args...)
	c.Stdout, c.Stderr = logf, logf
	c.Env = append(os.Environ(), "GOLVS_SOCKET="+s.sock)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := ns.Do(c.Start); err != nil {
		return nil, fmt.Errorf("starting %s in %s: %w", strings.Join(args, " "), ns.Name, err)
	}
	s.procs = append(s.procs, c)
	s.st.Pids = append(s.st.Pids, c.Process.Pid)
	return c, nil
}

func stop(p *exec.Cmd) {
	_ = p.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _, _ = p.Process.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		_ = p.Process.Kill()
	}
}

func (s *session) close() {
	for _, p := range s.procs {
		stop(p)
	}
	if s.mt != nil {
		s.mt.Close()
	}
	os.RemoveAll(s.dir)
}

// build makes the mode's topology.
func build(o *labOpts) (*lab.ModeTopology, error) {
	opts := lab.Options{Suffix: o.suffix, RealServers: len(o.weights), Mistake: o.mistake, IPv6: o.ipv6}
	if o.check != "" {
		opts.RealServers++ // the sorry server
	}
	if o.mistake == "no-pmtu" {
		opts.Mistake = "" // a director setting, not a topology one
	}
	switch o.mode {
	case "nat":
		t, err := lab.BuildNAT(opts)
		if err != nil {
			return nil, err
		}
		mt := &lab.ModeTopology{Topology: t}
		for i := range t.RS {
			mt.RIPs = append(mt.RIPs, lab.RIP(i+1))
			if o.ipv6 {
				mt.RIPs6 = append(mt.RIPs6, lab.RIP6(i+1))
			}
		}
		mt.Notes = append(mt.Notes, fmt.Sprintf("real servers: default route via %s", lab.DirIntIP))
		if o.ipv6 {
			mt.Notes = append(mt.Notes, fmt.Sprintf("real servers: IPv6 default route via %s", lab.DirIntIP6))
		}
		if o.mistake == "wrong-gateway" {
			mt.Notes = []string{fmt.Sprintf("real servers: default route via the router %s, not the director's DIP %s (THE MISTAKE)", lab.RouterLanIP, lab.DirIntIP)}
		}
		return mt, nil
	case "dr":
		return lab.BuildDR(opts)
	case "tun":
		return lab.BuildTUN(opts)
	}
	return lab.BuildFullNAT(opts)
}

const guePort = "6080"

// runLab is `golvs lab nat|dr|tun|fullnat` and the mistake labs.
func runLab(mode, mistake string, args []string, stdout, stderr io.Writer) error {
	o, err := parseLab(mode, mistake, args, stderr)
	if err != nil {
		return err
	}
	if err := lab.RequireRoot(); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	// A reader that goes away (golvs lab nat | head) must not kill the lab
	// before it has removed what it made: writes fail instead.
	signal.Ignore(syscall.SIGPIPE)
	s := &session{o: o, dir: StateDir + o.suffix, sock: control.DefaultSocket}
	if o.suffix != "" {
		s.sock = filepath.Join(s.dir, "golvs.sock")
	}
	if _, err := os.Stat(filepath.Join(s.dir, "state.json")); err == nil {
		return fmt.Errorf("a lab is already running (%s); `golvs lab down` removes it", s.dir)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	if s.exe, err = os.Executable(); err != nil {
		return err
	}
	s.st = &State{Mode: mode, Suffix: o.suffix, Socket: s.sock, VIP: o.vip().String()}
	kept := false
	defer func() {
		if !kept {
			s.close()
		}
	}()
	if s.mt, err = build(o); err != nil {
		return err
	}
	for _, ns := range s.mt.Namespaces() {
		s.st.Namespaces = append(s.st.Namespaces, ns.Name)
	}
	if err := writeState(s.dir, s.st); err != nil {
		return err
	}
	if err := s.startServers(); err != nil {
		return err
	}
	if err := s.startDirector(ctx); err != nil {
		return err
	}
	s.header(stdout)
	if o.explain {
		if err := explain(s, stdout); err != nil {
			return err
		}
	}
	work := func(w io.Writer) error {
		if o.mistake != "" {
			return s.mistake(ctx, w)
		}
		return s.requests(ctx, o.requests, w)
	}
	if o.explain {
		err = traceWhile(ctx, s, stdout, work)
	} else {
		err = work(stdout)
	}
	if err != nil {
		return err
	}
	if err := printTable(s.sock, stdout); err != nil {
		return err
	}
	if o.keep {
		kept = true
		fmt.Fprintf(stdout, "\nThe lab is still running. Enter a namespace with\n")
		for _, n := range s.st.Namespaces {
			fmt.Fprintf(stdout, "  nsenter --net=/var/run/netns/%s bash     (or: ip netns exec %s bash)\n", n, n)
		}
		fmt.Fprintf(stdout, "Send more requests:    golvs lab request --requests 10\n")
		if o.check != "" {
			fmt.Fprintf(stdout, "Fail a real server:    golvs lab fail rs1 ; golvs lab heal rs1   (the director's log: %s)\n", filepath.Join(s.dir, "director.log"))
		}
		svc := netip.AddrPortFrom(o.vip(), 80)
		fmt.Fprintf(stdout, "Change the director:   golvs adm -E -t %s -s wrr ; golvs adm -e -t %s -r %s %s -w 3\n", svc, svc, netip.AddrPortFrom(s.rips()[0], 80), methodFlag(o))
		fmt.Fprintf(stdout, "Watch packets:         golvs trace ; golvs trace --pcap lab.pcapng\n")
		fmt.Fprintf(stdout, "Look at it:            golvs adm -L -n --stats ; golvs adm -L -n -c\n")
		fmt.Fprintf(stdout, "Remove everything:     golvs lab down\n")
	}
	return nil
}

func methodFlag(o *labOpts) string {
	switch o.mode {
	case "nat":
		return "-m"
	case "dr":
		return "-g"
	case "tun":
		if o.tunType == "gue" {
			return "-i --tun-type gue --tun-port " + guePort
		}
		return "-i"
	}
	return "--fullnat"
}

// startServers starts each real server's services (and, for TUN, its
// tunnel endpoint).
func (s *session) startServers() error {
	for i, rs := range s.mt.RS {
		name := fmt.Sprintf("rs%d", i+1)
		if s.o.check != "" && i == len(s.mt.RS)-1 {
			name = "sorry"
		}
		if s.o.mode == "tun" {
			vips := lab.VIP.String()
			if s.o.ipv6 {
				vips += "," + lab.VIP6.String()
			}
			a := []string{"rs-tun", "-i", "eth0", "--vip", vips}
			if s.o.tunType == "gue" {
				a = append(a, "--gue-port", guePort)
			}
			if _, err := s.start(rs, name+"-rs-tun.log", a...); err != nil {
				return err
			}
			s.mt.Notes = append(s.mt.Notes, fmt.Sprintf("%s: golvs rs-tun -i eth0 --vip %s (VIPs on TUN device golvs-tun0, decapsulates %s)", rs.Name, vips, s.o.tunType))
		}
		udp := "53"
		if s.o.mode != "nat" {
			udp = "" // DR/TUN real servers answer from the VIP only over TCP here
		}
		args := []string{"lab", "serve", "--name", name, "--tcp", "80", "--udp", udp}
		if s.o.ipv6 {
			args = append(args, "--ipv6")
		}
		if s.o.mistake == "no-pmtu" {
			args = append(args, "--sink", "9000")
		}
		c, err := s.start(rs, name+".log", args...)
		if err != nil {
			return err
		}
		if s.o.check != "" {
			if s.st.Servers == nil {
				s.st.Servers, s.st.Check = map[string]LabServer{}, s.o.check
			}
			s.st.Servers[name] = LabServer{Pid: c.Process.Pid, NS: rs.Name, RIP: s.mt.RIPs[i].String(), Args: args}
		}
	}
	return nil
}

// startDirector writes the rules and starts `golvs run` in the director's
// namespace, then waits until it is ready.
func (s *session) startDirector(ctx context.Context) error {
	o := s.o
	ports := []int{80}
	if o.mistake == "no-pmtu" {
		ports = append(ports, 9000) // the upload sink
	}
	s.rules = ""
	for _, port := range ports {
		s.rules += fmt.Sprintf("-A -t %s -s %s\n", netip.AddrPortFrom(o.vip(), uint16(port)), o.scheduler)
	}
	for _, port := range ports {
		for i, wt := range o.weights {
			s.rules += fmt.Sprintf("-a -t %s -r %s %s -w %d\n", netip.AddrPortFrom(o.vip(), uint16(port)), netip.AddrPortFrom(s.rips()[i], uint16(port)), methodFlag(o), wt)
		}
	}
	rulesPath := filepath.Join(s.dir, "rules")
	src := "--rules"
	if o.check != "" {
		s.rules = s.keepalivedConf()
		rulesPath, src = filepath.Join(s.dir, "keepalived.conf"), "--keepalived-conf"
	}
	if err := os.WriteFile(rulesPath, []byte(s.rules), 0o600); err != nil {
		return err
	}
	s.run = []string{"run", "-i", lab.DirExt + ":arp", "--fix-host", src, rulesPath, "--control", s.sock, "--workers", strconv.Itoa(o.workers), "--semantics", o.semantics.String()}
	if o.mode != "dr" {
		s.run = append(s.run, "-i", lab.DirInt)
	}
	if o.mode == "fullnat" {
		lips := []string{lab.LIP(0).String(), lab.LIP(1).String(), lab.LIP(2).String(), lab.LIP(3).String()}
		if o.ipv6 {
			lips = append(lips, lab.LIP6(0).String(), lab.LIP6(1).String(), lab.LIP6(2).String(), lab.LIP6(3).String())
		}
		s.run = append(s.run, "--laddr", strings.Join(lips, ","))
	}
	if o.mistake == "no-pmtu" {
		s.run = append(s.run, "--no-pmtu")
	}
	if o.mode == "tun" {
		time.Sleep(200 * time.Millisecond) // let rs-tun put the VIP up
	}
	if _, err := s.start(s.mt.Director, "director.log", s.run...); err != nil {
		return err
	}
	if err := writeState(s.dir, s.st); err != nil {
		return err
	}
	return waitReady(ctx, s.sock, s.dir)
}

// restartDirector stops the director and starts it again with args.
func (s *session) restartDirector(ctx context.Context, run []string) error {
	for i, p := range s.procs {
		if len(p.Args) > 1 && p.Args[1] == "run" {
			stop(p)
			s.procs = append(s.procs[:i], s.procs[i+1:]...)
			break
		}
	}
	s.run = run
	if _, err := s.start(s.mt.Director, "director.log", run...); err != nil {
		return err
	}
	return waitReady(ctx, s.sock, s.dir)
}

func (s *session) header(stdout io.Writer) {
	var rips []string
	for _, r := range s.rips() {
		rips = append(rips, r.String())
	}
	if s.o.check != "" {
		n := len(rips) - 1
		rips = append(rips[:n:n], "sorry server "+rips[n])
	}
	cip, vip, ext, int0, router, lip0, lip3 := lab.CIP, netip.AddrPortFrom(lab.VIP, 80), lab.DirExtIP, lab.DirIntIP, lab.RouterDirIP, lab.LIP(0), lab.LIP(3)
	if s.o.ipv6 {
		cip, vip, ext, int0, router, lip0, lip3 = lab.CIP6, netip.AddrPortFrom(lab.VIP6, 80), lab.DirExtIP6, lab.DirIntIP6, lab.RouterDirIP6, lab.LIP6(0), lab.LIP6(3)
	}
	switch s.o.mode {
	case "nat":
		fmt.Fprintf(stdout, "# NAT lab: client %s -> VIP %s -> director (%s | %s) -> real servers %s\n",
			cip, vip, ext, int0, strings.Join(rips, ", "))
	case "dr":
		fmt.Fprintf(stdout, "# DR lab: client %s, director %s and real servers %s on one segment; VIP %s\n", cip, ext, strings.Join(rips, ", "), vip)
	case "tun":
		fmt.Fprintf(stdout, "# TUN lab: client %s -> VIP %s -> director (%s | %s) -> %s tunnel via router %s -> real servers %s; replies via the router\n", cip, vip, ext, int0, s.o.tunType, router, strings.Join(rips, ", "))
	default:
		fmt.Fprintf(stdout, "# FULLNAT lab: client %s -> VIP %s -> director (%s | %s, local addresses %s-%s) -> real servers %s (no route to the client)\n", cip, vip, ext, int0, lip0, lip3, strings.Join(rips, ", "))
	}
	if s.o.ipv6 {
		fmt.Fprintf(stdout, "# dual-stack: every host has its IPv4 address too; the services are on the IPv6 VIP\n")
	}
	if len(s.mt.Notes) > 0 {
		fmt.Fprintf(stdout, "# lab settings:\n")
		for _, n := range s.mt.Notes {
			fmt.Fprintf(stdout, "#   %s\n", n)
		}
	}
	if s.o.check != "" {
		fmt.Fprintf(stdout, "# director configuration (golvs run --keepalived-conf):\n%s", indent(s.rules))
	} else {
		fmt.Fprintf(stdout, "# director rules:\n%s", indent(s.rules))
	}
	// The semantics as the running director reports it (golvs adm --status).
	if cl, err := control.Dial(s.sock); err == nil {
		if rep, err := cl.Do(&control.Request{Op: "status"}); err == nil && rep.OK {
			if sem, err := ipvs.ParseSemantics(rep.Semantics); err == nil {
				fmt.Fprintf(stdout, "# director semantics: %s (%s)\n", sem, sem.Kernels())
			}
		}
		cl.Close()
	}
}

func (s *session) requests(ctx context.Context, n int, stdout io.Writer) error {
	return getEach(ctx, s.mt.Client, netip.AddrPortFrom(s.o.vip(), 80), n, 5*time.Second, stdout)
}

// mistake shows a classic mistake failing, applies the fix and shows it
// working.
func (s *session) mistake(ctx context.Context, stdout io.Writer) error {
	n := s.o.requests
	if n == 0 || n > 20 {
		n = 4
	}
	vip := netip.AddrPortFrom(lab.VIP, 80)
	switch s.o.mistake {
	case "wrong-gateway":
		fmt.Fprintf(stdout, "\n# THE MISTAKE: the real servers' default gateway is %s (a router), not the DIP %s.\n", lab.RouterLanIP, lab.DirIntIP)
		fmt.Fprintf(stdout, "# Their replies go through the router, never through the director, so nobody rewrites\n# RIP:80 back to VIP:80: the client's TCP gets a SYN+ACK from an address it never called and resets it,\n# while its own connection to the VIP never completes:\n")
		if err := getShort(s.mt.Client, vip, n, stdout); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\n# THE FIX: default route via the DIP %s on every real server (as `ip route replace default via %s`).\n", lab.DirIntIP, lab.DirIntIP)
		if err := lab.FixGateway(s.mt.Topology); err != nil {
			return err
		}
	case "no-arp-ignore":
		fmt.Fprintf(stdout, "\n# THE MISTAKE: the real servers hold the VIP on lo but arp_ignore/arp_announce are 0,\n# so they answer ARP for the VIP too. Who answers the client's ARP request for %s:\n", lab.VIP)
		if err := s.arpWho(stdout); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "# The client keeps the first answer; if it came from a real server, every request goes there directly:\n")
		if err := getShort(s.mt.Client, vip, n, stdout); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\n# THE FIX: net.ipv4.conf.{all,eth0}.arp_ignore=1 and arp_announce=2 on every real server;\n# the client forgets the VIP's MAC and asks again:\n")
		if err := lab.FixARP(s.mt); err != nil {
			return err
		}
		if err := s.arpWho(stdout); err != nil {
			return err
		}
	case "no-pmtu":
		up := netip.AddrPortFrom(lab.VIP, 9000)
		fmt.Fprintf(stdout, "\n# THE MISTAKE: the director drops packets that the tunnel header makes too big for the path\n# (golvs run --no-pmtu) instead of answering ICMP fragmentation-needed. Small requests work:\n")
		if err := getShort(s.mt.Client, vip, 2, stdout); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "# but a 1 MB upload with full-size (1500-byte, DF) packets stalls:\n")
		uploadLine(s.mt.Client, up, stdout)
		fmt.Fprintf(stdout, "\n# THE FIX: the director answers ICMP fragmentation-needed with the MTU less the tunnel header,\n# as IPVS does; the client's TCP lowers its segment size (restarting the director without --no-pmtu):\n")
		run := make([]string, 0, len(s.run))
		for _, a := range s.run {
			if a != "--no-pmtu" {
				run = append(run, a)
			}
		}
		if err := s.restartDirector(ctx, run); err != nil {
			return err
		}
		uploadLine(s.mt.Client, up, stdout)
	}
	return getShort(s.mt.Client, vip, n, stdout)
}

// getShort makes n requests with a short timeout and prints each outcome.
func getShort(client *lab.NS, addr netip.AddrPort, n int, stdout io.Writer) error {
	return getEach(context.Background(), client, addr, n, 2*time.Second, stdout)
}

func uploadLine(client *lab.NS, addr netip.AddrPort, stdout io.Writer) {
	start := time.Now()
	got, err := lab.Upload(client, addr, 1<<20, 8*time.Second)
	if err != nil || got != "1048576" {
		fmt.Fprintf(stdout, "upload: FAILED after %.1fs (%v, the sink counted %q)\n", time.Since(start).Seconds(), err, got)
		return
	}
	fmt.Fprintf(stdout, "upload: 1048576 bytes arrived in %.1fs\n", time.Since(start).Seconds())
}
