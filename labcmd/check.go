package labcmd

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/lab"
)

// LabServer is a kept lab's real server service, for fail and heal.
type LabServer struct {
	Pid  int      `json:"pid"` // 0: stopped by golvs lab fail
	NS   string   `json:"ns"`
	RIP  string   `json:"rip"`
	Args []string `json:"args"` // golvs lab serve's arguments
}

// checkTypes are the checkers `golvs lab nat --check` can put in front
// of the real servers.
var checkTypes = map[string]string{
	"tcp":  "TCP_CHECK {\n        }",
	"http": "HTTP_GET {\n            url {\n                path /\n                status_code 200\n            }\n        }",
	"misc": "MISC_CHECK {\n            misc_path \"/bin/bash -c 'exec 3<>/dev/tcp/%s/80'\"\n            misc_timeout 1\n        }",
}

// keepalivedConf is the lab director's configuration with --check: the
// real servers behind the checker, the last lab server as sorry server.
func (s *session) keepalivedConf() string {
	o := s.o
	var b strings.Builder
	fmt.Fprintf(&b, "virtual_server %s 80 {\n    delay_loop 1\n    lvs_sched %s\n    lvs_method NAT\n    protocol TCP\n", lab.VIP, o.scheduler)
	fmt.Fprintf(&b, "    connect_timeout 1\n    retry 1\n    delay_before_retry 0.5\n    warmup 0\n    rise 2\n")
	if o.inhibit {
		b.WriteString("    inhibit_on_failure\n")
	}
	sorry := s.mt.RIPs[len(s.mt.RIPs)-1]
	fmt.Fprintf(&b, "    sorry_server %s 80\n", sorry)
	for i, w := range o.weights {
		chk := checkTypes[o.check]
		if o.check == "misc" {
			chk = fmt.Sprintf(chk, s.mt.RIPs[i])
		}
		fmt.Fprintf(&b, "    real_server %s 80 {\n        weight %d\n        %s\n    }\n", s.mt.RIPs[i], w, chk)
	}
	b.WriteString("}\n")
	return b.String()
}

// failHeal is `golvs lab fail NAME` and `golvs lab heal NAME`: stop or
// restart a kept lab's real server service, then print the director's
// health log lines as they come until the table shows the change.
func failHeal(verb string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("golvs lab "+verb, flag.ContinueOnError)
	suffix := fs.String("suffix", "", "suffix of the lab's namespace names")
	wait := fs.Duration("wait", 20*time.Second, "how long to watch for the director's reaction")
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if name == "" && fs.NArg() == 1 {
		name = fs.Arg(0)
	} else if name == "" || fs.NArg() != 0 {
		return fmt.Errorf("usage: golvs lab %s rs1 [--suffix S]", verb)
	}
	dir := StateDir + *suffix
	st, err := readState(dir)
	if err != nil {
		return err
	}
	if st.Check == "" {
		return errors.New("this lab has no health checks: start one with `golvs lab nat --check http --keep`")
	}
	srv, ok := st.Servers[name]
	if !ok {
		var names []string
		for n := range st.Servers {
			names = append(names, n)
		}
		sort.Strings(names)
		return fmt.Errorf("no real server %q in the lab (%s)", name, strings.Join(names, ", "))
	}
	logPath := filepath.Join(dir, "director.log")
	var off int64
	if fi, err := os.Stat(logPath); err == nil {
		off = fi.Size()
	}
	switch verb {
	case "fail":
		if srv.Pid == 0 {
			return fmt.Errorf("%s's service is already stopped (golvs lab heal %s starts it)", name, name)
		}
		if p, err := os.FindProcess(srv.Pid); err == nil {
			_ = p.Signal(syscall.SIGTERM)
		}
		srv.Pid = 0
		fmt.Fprintf(stdout, "# stopped %s's service (%s:80); the director's checker notices:\n", name, srv.RIP)
	case "heal":
		if srv.Pid != 0 {
			return fmt.Errorf("%s's service is running (golvs lab fail %s stops it)", name, name)
		}
		ns, err := lab.OpenNS(srv.NS)
		if err != nil {
			return err
		}
		defer ns.Handle.Close()
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		logf, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		defer logf.Close()
		c := exec.Command(exe, srv.Args...)
		c.Stdout, c.Stderr = logf, logf
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := ns.Do(c.Start); err != nil {
			return fmt.Errorf("starting %s's service: %w", name, err)
		}
		srv.Pid = c.Process.Pid
		st.Pids = append(st.Pids, srv.Pid)
		_ = c.Process.Release()
		fmt.Fprintf(stdout, "# restarted %s's service (%s:80); the director's checker notices:\n", name, srv.RIP)
	}
	st.Servers[name] = srv
	if err := writeState(dir, st); err != nil {
		return err
	}
	done := func(ds map[string]int32) bool {
		w, in := ds[srv.RIP]
		if verb == "fail" {
			return !in || w == 0
		}
		return in && w > 0
	}
	deadline := time.Now().Add(*wait)
	for {
		off = copyHealthLines(logPath, off, stdout)
		ds, err := tableDests(st.Socket)
		if err == nil && done(ds) {
			copyHealthLines(logPath, off, stdout)
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(stdout, "# no change after %v\n", *wait)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return printTable(st.Socket, stdout)
}

// copyHealthLines prints the health lines the director logged since off.
func copyHealthLines(path string, off int64, w io.Writer) int64 {
	f, err := os.Open(path)
	if err != nil {
		return off
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return off
	}
	r := bufio.NewReader(f)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return off // a partial line waits for its end
		}
		off += int64(len(l))
		if strings.Contains(l, "health: ") {
			io.WriteString(w, l)
		}
	}
}

// tableDests returns the lab service's real servers: address -> weight.
func tableDests(sock string) (map[string]int32, error) {
	cl, err := control.Dial(sock)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	rep, err := cl.Do(&control.Request{Op: "list"})
	if err != nil {
		return nil, err
	}
	out := map[string]int32{}
	for _, s := range rep.Services {
		for _, d := range s.Dests {
			out[d.Config.Addr.String()] = d.Config.Weight
		}
	}
	return out, nil
}
