package labcmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/sched"
)

// modeLab is `golvs lab dr|tun|fullnat`: the NAT lab's flags and output
// for the other forwarding methods.
func modeLab(mode string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("golvs lab "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	scheduler := fs.String("scheduler", "rr", "scheduler: "+strings.Join(sched.Names(), ", "))
	weights := fs.String("weights", "1,1", "real server weights, one per real server (also sets how many)")
	requests := fs.Int("requests", 10, "HTTP requests to send from the client (0..100000)")
	keep := fs.Bool("keep", false, "leave the lab and its director running")
	suffix := fs.String("suffix", "", "suffix for namespace names (tests run labs side by side)")
	workers := fs.Int("workers", 1, "director workers")
	tunType := fs.String("tun-type", "ipip", "TUN lab: ipip or gue")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := sched.Check(*scheduler); err != nil {
		return err
	}
	w, err := parseWeights(*weights)
	if err != nil {
		return err
	}
	if *requests < 0 || *requests > 100000 {
		return fmt.Errorf("--requests %d out of range (0..100000)", *requests)
	}
	if *tunType != "ipip" && *tunType != "gue" {
		return fmt.Errorf("--tun-type %q: ipip or gue", *tunType)
	}
	if err := lab.RequireRoot(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir := StateDir + *suffix
	sock := control.DefaultSocket
	if *suffix != "" {
		sock = filepath.Join(dir, "golvs.sock")
	}
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err == nil {
		return fmt.Errorf("a lab is already running (%s); `golvs lab down` removes it", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	o := lab.Options{Suffix: *suffix, RealServers: len(w)}
	var mt *lab.ModeTopology
	switch mode {
	case "dr":
		mt, err = lab.BuildDR(o)
	case "tun":
		mt, err = lab.BuildTUN(o)
	default:
		mt, err = lab.BuildFullNAT(o)
	}
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	st := &State{Mode: mode, Suffix: *suffix, Socket: sock, VIP: lab.VIP.String()}
	for _, ns := range mt.Namespaces() {
		st.Namespaces = append(st.Namespaces, ns.Name)
	}
	var procs []*exec.Cmd
	cleanup := func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			done := make(chan struct{})
			go func() { _, _ = p.Process.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(3 * time.Second):
				_ = p.Process.Kill()
			}
		}
		mt.Close()
		os.RemoveAll(dir)
	}
	kept := false
	defer func() {
		if !kept {
			cleanup()
		}
	}()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	start := func(ns *lab.NS, logName string, args ...string) error {
		logf, err := os.Create(filepath.Join(dir, logName))
		if err != nil {
			return err
		}
		defer logf.Close()
		c := exec.Command(exe, args...)
		c.Stdout, c.Stderr = logf, logf
		c.Env = append(os.Environ(), "GOLVS_SOCKET="+sock)
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := ns.Do(c.Start); err != nil {
			return fmt.Errorf("starting %s in %s: %w", strings.Join(args, " "), ns.Name, err)
		}
		procs = append(procs, c)
		st.Pids = append(st.Pids, c.Process.Pid)
		return nil
	}
	const guePort = "6080"
	for i, rs := range mt.RS {
		name := fmt.Sprintf("rs%d", i+1)
		if mode == "tun" {
			a := []string{"rs-tun", "-i", "eth0", "--vip", lab.VIP.String()}
			if *tunType == "gue" {
				a = append(a, "--gue-port", guePort)
			}
			if err := start(rs, name+"-rs-tun.log", a...); err != nil {
				return err
			}
			mt.Notes = append(mt.Notes, fmt.Sprintf("%s: golvs rs-tun -i eth0 --vip %s (VIP on TUN device golvs-tun0, decapsulates %s)", rs.Name, lab.VIP, *tunType))
		}
		if err := start(rs, name+".log", "lab", "serve", "--name", name, "--tcp", "80", "--udp", ""); err != nil {
			return err
		}
	}
	flagOf := map[string]string{"dr": "-g", "tun": "-i", "fullnat": "--fullnat"}[mode]
	if mode == "tun" && *tunType == "gue" {
		flagOf = "-i --tun-type gue --tun-port " + guePort
	}
	rules := fmt.Sprintf("-A -t %s:80 -s %s\n", lab.VIP, *scheduler)
	for i, wt := range w {
		rules += fmt.Sprintf("-a -t %s:80 -r %s:80 %s -w %d\n", lab.VIP, mt.RIPs[i], flagOf, wt)
	}
	rulesPath := filepath.Join(dir, "rules")
	if err := os.WriteFile(rulesPath, []byte(rules), 0o600); err != nil {
		return err
	}
	runArgs := []string{"run", "-i", lab.DirExt + ":arp", "--fix-host", "--rules", rulesPath, "--control", sock, "--workers", strconv.Itoa(*workers)}
	if mode != "dr" {
		runArgs = append(runArgs, "-i", lab.DirInt)
	}
	if mode == "fullnat" {
		runArgs = append(runArgs, "--laddr", strings.Join([]string{lab.LIP(0).String(), lab.LIP(1).String(), lab.LIP(2).String(), lab.LIP(3).String()}, ","))
	}
	if mode == "tun" {
		time.Sleep(200 * time.Millisecond) // let rs-tun put the VIP up
	}
	if err := start(mt.Director, "director.log", runArgs...); err != nil {
		return err
	}
	if err := writeState(dir, st); err != nil {
		return err
	}
	if err := waitReady(ctx, sock, dir); err != nil {
		return err
	}
	var rips []string
	for _, r := range mt.RIPs {
		rips = append(rips, r.String())
	}
	switch mode {
	case "dr":
		fmt.Fprintf(stdout, "# DR lab: client %s, director %s and real servers %s on one segment; VIP %s:80\n", lab.CIP, lab.DirExtIP, strings.Join(rips, ", "), lab.VIP)
	case "tun":
		fmt.Fprintf(stdout, "# TUN lab: client %s -> VIP %s:80 -> director (%s | %s) -> %s tunnel via router %s -> real servers %s; replies via the router\n", lab.CIP, lab.VIP, lab.DirExtIP, lab.DirIntIP, *tunType, lab.RouterDirIP, strings.Join(rips, ", "))
	default:
		fmt.Fprintf(stdout, "# FULLNAT lab: client %s -> VIP %s:80 -> director (%s | %s, local addresses %s-%s) -> real servers %s (no route to the client)\n", lab.CIP, lab.VIP, lab.DirExtIP, lab.DirIntIP, lab.LIP(0), lab.LIP(3), strings.Join(rips, ", "))
	}
	fmt.Fprintf(stdout, "# lab settings:\n")
	for _, n := range mt.Notes {
		fmt.Fprintf(stdout, "#   %s\n", n)
	}
	fmt.Fprintf(stdout, "# director rules:\n%s", indent(rules))
	if err := sendRequests(ctx, mt.Client, *requests, stdout); err != nil {
		return err
	}
	if err := printTable(sock, stdout); err != nil {
		return err
	}
	if *keep {
		kept = true
		fmt.Fprintf(stdout, "\nThe lab is still running. Enter a namespace with\n")
		for _, n := range st.Namespaces {
			fmt.Fprintf(stdout, "  nsenter --net=/var/run/netns/%s bash     (or: ip netns exec %s bash)\n", n, n)
		}
		fmt.Fprintf(stdout, "Send more requests:    golvs lab request --requests 10\n")
		fmt.Fprintf(stdout, "Look at it:            golvs adm -L -n --stats ; golvs adm -L -n -c\n")
		fmt.Fprintf(stdout, "Remove everything:     golvs lab down\n")
	}
	return nil
}
