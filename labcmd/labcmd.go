// Package labcmd is `golvs lab`: the LVS NAT experiment in one command. It
// builds the lab's namespaces (package lab), starts the real servers and a
// `golvs run` director inside them as child processes, sends requests from
// the client, prints what came back and the director's table, and removes
// everything it made, on success, error or Ctrl-C, unless asked to keep it.
//
// It must never leave a namespace or a process behind when it did not
// promise to, and never touch the namespace it was started from.
package labcmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/ipvsadm"
	"github.com/golvs/golvs/lab"
)

// StateDir is where a lab keeps its state, logs and rules.
var StateDir = "/run/golvs/lab"

// State is what a kept lab leaves for `golvs lab request` and `down`.
type State struct {
	Mode       string   `json:"mode"`
	Suffix     string   `json:"suffix"`
	Namespaces []string `json:"namespaces"`
	Pids       []int    `json:"pids"`
	Socket     string   `json:"socket"`
	VIP        string   `json:"vip"`
	// With --check: the health checker and each real server's service.
	Check   string               `json:"check,omitempty"`
	Servers map[string]LabServer `json:"servers,omitempty"`
}

const usage = `usage:
  golvs lab nat [--scheduler rr] [--weights 1,1] [--requests 10] [--semantics current|classic] [--ipv6] [--keep] [--explain]
  golvs lab dr|tun|fullnat [same flags as nat] [--tun-type ipip|gue]
  golvs lab nat-wrong-gateway | dr-no-arp-ignore | tun-no-pmtu [--explain]
                                     a classic mistake: the failure, then the fix
  golvs lab nat --check tcp|http|misc [--inhibit] [--keep]
                                     health-check the real servers (keepalived.conf), with a sorry server
  golvs lab fail rs1 | heal rs1      stop or restart a kept lab's real server service and watch the director react
  golvs lab ha [--fail master|backup] [--conns 500] [--return] [--nopreempt] [--json]
                                     two directors (VRRP): kill one under load, report the failover
  golvs lab request [--requests N]   send N more requests from a kept lab's client
  golvs lab down                     remove a kept lab
  golvs lab ecmp [--directors 3] [--connections 300] [--fail director2 [--no-readd] [--json]]
                                     N directors behind a bird2 router (BGP, ECMP); --fail kills one under load
`

// Main runs `golvs lab ARGS`; it returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "nat", "dr", "tun", "fullnat":
		err = runLab(args[0], "", args[1:], stdout, stderr) // modes.go
	case "ha":
		err = haLab(args[1:], stdout, stderr) // ha.go
	case "nat-wrong-gateway", "dr-no-arp-ignore", "tun-no-pmtu":
		m := mistakeLabs[args[0]]
		err = runLab(m[0], m[1], args[1:], stdout, stderr)
	case "request":
		err = request(args[1:], stdout)
	case "fail", "heal":
		err = failHeal(args[0], args[1:], stdout)
	case "down":
		err = down(stdout)
	case "serve":
		err = serve(args[1:])
	case "ecmp":
		err = ecmpMain(args[1:], stdout, stderr) // ecmp.go
	default:
		fmt.Fprintf(stderr, "golvs lab: unknown lab %q\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "golvs lab %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// parseWeights reads "2,1".
func parseWeights(s string) ([]int, error) {
	var w []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > 65535 {
			return nil, fmt.Errorf("--weights %q: %q is not a weight (allowed: 0..65535, comma-separated, one per real server)", s, f)
		}
		w = append(w, n)
	}
	if len(w) == 0 || len(w) > 16 {
		return nil, fmt.Errorf("--weights %q: give 1 to 16 weights, one per real server", s)
	}
	return w, nil
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("#   " + l + "\n")
	}
	return b.String()
}

func writeState(dir string, st *State) error {
	b, _ := json.MarshalIndent(st, "", "  ")
	return os.WriteFile(filepath.Join(dir, "state.json"), b, 0o600)
}

func readState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, fmt.Errorf("no kept lab found (%s): start one with `golvs lab nat --keep`", dir)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("lab state %s: %w", dir, err)
	}
	return &st, nil
}

// waitReady waits for the director's control socket to answer and every
// real server to have a next hop (bounded).
func waitReady(ctx context.Context, sock, dir string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if cl, err := control.Dial(sock); err == nil {
			rep, err := cl.Do(&control.Request{Op: "status"})
			cl.Close()
			if err == nil && rep.OK && rep.Resolved {
				return nil
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "director.log"))
			return fmt.Errorf("the director did not become ready in 20s; its log:\n%s", log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// getEach makes n requests to addr, each with its own timeout, and prints
// each outcome on its own line.
func getEach(ctx context.Context, client *lab.NS, addr netip.AddrPort, n int, timeout time.Duration, stdout io.Writer) error {
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rs, err := lab.Get(client, addr, 1, timeout)
		if err != nil {
			return err
		}
		if rs[0].Err != nil {
			fmt.Fprintf(stdout, "error: %v\n", rs[0].Err)
			continue
		}
		fmt.Fprintln(stdout, rs[0].Body)
	}
	return nil
}

func printTable(sock string, stdout io.Writer) error {
	cl, err := control.Dial(sock)
	if err != nil {
		return err
	}
	defer cl.Close()
	rep, err := cl.Do(&control.Request{Op: "list"})
	if err != nil {
		return err
	}
	if !rep.OK {
		return errors.New(rep.Error)
	}
	fmt.Fprintln(stdout, "\n# golvs adm -L -n")
	l := ipvsadm.NewLister(ipvsadm.FmtNumeric)
	return l.WriteAll(stdout, rep.Services)
}

func request(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("golvs lab request", flag.ContinueOnError)
	n := fs.Int("requests", 10, "requests to send (0..100000)")
	suffix := fs.String("suffix", "", "suffix of the lab's namespace names")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 0 || *n > 100000 {
		return fmt.Errorf("--requests %d out of range (0..100000)", *n)
	}
	st, err := readState(StateDir + *suffix)
	if err != nil {
		return err
	}
	client, err := lab.OpenNS("client" + st.Suffix)
	if err != nil {
		return err
	}
	defer client.Handle.Close()
	vip, err := netip.ParseAddr(st.VIP)
	if err != nil {
		vip = lab.VIP
	}
	return getEach(context.Background(), client, netip.AddrPortFrom(vip, 80), *n, 5*time.Second, stdout)
}

func down(stdout io.Writer) error {
	var all []string
	matches, _ := filepath.Glob(StateDir + "*/state.json")
	for _, m := range matches {
		dir := filepath.Dir(m)
		st, err := readState(dir)
		if err != nil {
			continue
		}
		for _, pid := range st.Pids {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Signal(syscall.SIGTERM)
			}
		}
		time.Sleep(300 * time.Millisecond)
		for _, pid := range st.Pids {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Signal(syscall.SIGKILL)
			}
		}
		all = append(all, lab.DeleteByNames(st.Namespaces)...)
		os.RemoveAll(dir)
	}
	if len(all) == 0 {
		// Without a state file golvs cannot tell its namespaces from
		// someone else's of the same name: it says so instead of guessing.
		var left []string
		for _, n := range lab.ModeNames("tun", "", 16) {
			if _, err := os.Stat("/var/run/netns/" + n); err == nil {
				left = append(left, n)
			}
		}
		if len(left) > 0 {
			fmt.Fprintf(stdout, "no lab state found; namespaces with lab names exist (%s): if a lab left them, remove them with `ip netns delete NAME`\n", strings.Join(left, " "))
			return nil
		}
		fmt.Fprintln(stdout, "no lab was running")
		return nil
	}
	fmt.Fprintf(stdout, "removed: %s\n", strings.Join(all, " "))
	return nil
}

// serve is `golvs lab serve`: a real server's HTTP and UDP services, run
// inside its namespace by the lab.
func serve(args []string) error {
	fs := flag.NewFlagSet("golvs lab serve", flag.ContinueOnError)
	name := fs.String("name", "", "server name (the HTTP body)")
	tcp := fs.String("tcp", "80", "TCP ports, comma-separated")
	udp := fs.String("udp", "53", "UDP ports, comma-separated")
	sinkPort := fs.Int("sink", 0, "a TCP port that counts uploaded bytes (0: none)")
	v6 := fs.Bool("ipv6", false, "serve IPv6 too")
	echoPort := fs.Int("echo", 0, "a TCP port answering every line with the name, on long-lived connections (0: none; the HA lab)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return errors.New("--name is required")
	}
	ports := func(s string) ([]int, error) {
		var out []int
		for _, f := range strings.Split(s, ",") {
			if f == "" {
				continue
			}
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("port %q out of range (1..65535)", f)
			}
			out = append(out, n)
		}
		return out, nil
	}
	tp, err := ports(*tcp)
	if err != nil {
		return err
	}
	up, err := ports(*udp)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := lab.Serve
	if *v6 {
		srv = lab.Serve6
	}
	if _, err := srv(ctx, nil, *name, tp, up); err != nil {
		return err
	}
	if *sinkPort < 0 || *sinkPort > 65535 {
		return fmt.Errorf("--sink %d out of range (1..65535)", *sinkPort)
	}
	if *sinkPort != 0 {
		if err := lab.Sink(ctx, nil, *sinkPort); err != nil {
			return err
		}
	}
	if *echoPort < 0 || *echoPort > 65535 {
		return fmt.Errorf("--echo %d out of range (1..65535)", *echoPort)
	}
	if *echoPort != 0 {
		if _, err := lab.LineEcho(ctx, nil, *echoPort, *name); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}
