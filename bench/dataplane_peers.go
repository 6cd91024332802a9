package bench

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/lab"
)

// Peers are programs golvs is measured against when the host has them:
// optional, never a failure when missing (the report names the package
// that brings each one).
const (
	peerNFT      = "nft-dnat"
	peerNetsniff = "netsniff-ng"
	peerHAProxy  = "haproxy-tcp"
	peerNginx    = "nginx-stream"
)

// peer is one optional reference program.
type peer struct {
	name string // forwarder or TCP path name in the report
	bin  string
	pkg  string // Debian packages to install
}

var peers = []peer{
	{peerNFT, "nft", "nftables"},
	{peerNetsniff, "netsniff-ng", "netsniff-ng"},
	{peerHAProxy, "haproxy", "haproxy"},
	{peerNginx, "nginx", "nginx libnginx-mod-stream"},
}

// Bounds on the peers' processes.
const (
	peerStartWait = 5 * time.Second
	peerStopWait  = 3 * time.Second
)

// peerFinder says where the peers are; its functions are swapped in tests.
type peerFinder struct {
	look func(bin string) (string, error)
	// nginxStream returns the load_module path of nginx's stream module
	// ("" when it is built in) or an error when nginx has none.
	nginxStream func(nginx string) (string, error)
}

var hostPeers = peerFinder{look: exec.LookPath, nginxStream: nginxStreamModule}

// find returns the path of each peer this host has, by name, and a skip
// naming the package to install for each one it lacks. module is the
// nginx stream module to load ("" when built in).
func (pf peerFinder) find() (found map[string]string, module string, skips []DPSkip) {
	found = map[string]string{}
	for _, p := range peers {
		path, err := pf.look(p.bin)
		if err != nil {
			skips = append(skips, DPSkip{Name: p.name, Reason: fmt.Sprintf("%s is not installed (apt-get install %s)", p.bin, p.pkg)})
			continue
		}
		if p.name == peerNginx {
			m, err := pf.nginxStream(path)
			if err != nil {
				skips = append(skips, DPSkip{Name: p.name, Reason: fmt.Sprintf("%v (apt-get install libnginx-mod-stream)", err)})
				continue
			}
			module = m
		}
		found[p.name] = path
	}
	return found, module, skips
}

// nginxStreamModule finds nginx's stream module from `nginx -V`: built
// in (--with-stream), or dynamic (--with-stream=dynamic) in the modules
// path, where Debian's libnginx-mod-stream puts it.
func nginxStreamModule(nginx string) (string, error) {
	out, err := exec.Command(nginx, "-V").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s -V: %v", nginx, err)
	}
	return streamModuleFrom(string(out), func(p string) bool { _, err := os.Stat(p); return err == nil })
}

func streamModuleFrom(v string, exists func(string) bool) (string, error) {
	dynamic, builtin := false, false
	modules, prefix := "", "/usr/share/nginx"
	for _, f := range strings.Fields(v) {
		switch {
		case f == "--with-stream":
			builtin = true
		case f == "--with-stream=dynamic":
			dynamic = true
		case strings.HasPrefix(f, "--modules-path="):
			modules = strings.TrimPrefix(f, "--modules-path=")
		case strings.HasPrefix(f, "--prefix="):
			prefix = strings.TrimPrefix(f, "--prefix=")
		}
	}
	if builtin {
		return "", nil
	}
	if !dynamic {
		return "", errors.New("nginx was built without the stream module")
	}
	if modules == "" {
		modules = filepath.Join(prefix, "modules")
	}
	for _, dir := range []string{modules, "/usr/lib/nginx/modules", "/usr/lib64/nginx/modules"} {
		if p := filepath.Join(dir, "ngx_stream_module.so"); exists(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("nginx's stream module is not installed (no ngx_stream_module.so in %s)", modules)
}

// haproxyConfig is HAProxy in mode tcp on vip, round robin over rss.
func haproxyConfig(vip netip.AddrPort, rss []netip.AddrPort) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# golvs bench dataplane: HAProxy mode tcp, the reference L4 proxy
global
	maxconn 4096

defaults
	mode tcp
	timeout connect 2s
	timeout client 30s
	timeout server 30s

frontend golvsbench
	bind %s
	default_backend golvsbench_rs

backend golvsbench_rs
	balance roundrobin
`, vip)
	for i, rs := range rss {
		fmt.Fprintf(&b, "\tserver rs%d %s\n", i+1, rs)
	}
	return b.String()
}

// nginxConfig is nginx stream on vip, round robin (nginx's default) over
// rss, its pid and error log in dir; module is the stream module to load
// ("": built in).
func nginxConfig(dir, module string, vip netip.AddrPort, rss []netip.AddrPort) string {
	var b strings.Builder
	b.WriteString("# golvs bench dataplane: nginx stream, the reference L4 proxy\n")
	if module != "" {
		fmt.Fprintf(&b, "load_module %s;\n", module)
	}
	fmt.Fprintf(&b, `worker_processes auto;
pid %s;
error_log %s warn;

events {
	worker_connections 20000;
}

stream {
	upstream golvsbench_rs {
`, filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"))
	for _, rs := range rss {
		fmt.Fprintf(&b, "\t\tserver %s;\n", rs)
	}
	fmt.Fprintf(&b, `	}
	server {
		listen %s;
		proxy_pass golvsbench_rs;
		proxy_connect_timeout 2s;
		proxy_timeout 30s;
	}
}
`, vip)
	return b.String()
}

// peerProc is a peer's process, started in its own process group inside
// a lab namespace, its output in a file.
type peerProc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startPeer starts bin args inside ns, output to logPath. With sysfs it
// runs in a private mount namespace with a sysfs of ns's own, as `ip netns
// exec` does: programs that read /sys/class/net (netsniff-ng) see ns's
// interfaces there, and no mount is left anywhere.
func startPeer(ns *lab.NS, sysfs bool, name, logPath, bin string, args ...string) (*peerProc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	p := &peerProc{name: name, log: logPath, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = lf, lf
	// Its own group, so stop reaches its children (nginx's workers).
	// No Pdeathsig: it would fire when the namespace's thread exits.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The child inherits the network namespace of the thread forking it.
	err = ns.Do(func() error {
		if sysfs {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("private mount namespace: %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return fmt.Errorf("making mounts private: %w", err)
			}
			if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
				return fmt.Errorf("mounting sysfs: %w", err)
			}
			// The thread is never unlocked: it dies with its mount
			// namespace, which the child keeps.
		}
		return p.cmd.Start()
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *peerProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// output returns the tail of what the process wrote.
func (p *peerProc) output() string {
	b, _ := os.ReadFile(p.log)
	s := strings.TrimSpace(string(b))
	if len(s) > 400 {
		s = "..." + s[len(s)-400:]
	}
	return strings.ReplaceAll(s, "\n", "; ")
}

// stop signals the process group with sig and kills it after
// peerStopWait.
func (p *peerProc) stop(sig syscall.Signal) {
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(-pid, sig)
	select {
	case <-p.done:
	case <-time.After(peerStopWait):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	}
	// Children left behind by a master that died first.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// waitListen waits until addr accepts a connection from inside ns, the
// process exits, or peerStartWait passes.
func (p *peerProc) waitListen(ns *lab.NS, addr netip.AddrPort) error {
	deadline := time.Now().Add(peerStartWait)
	for {
		if p.exited() {
			return fmt.Errorf("%s exited at start: %s", p.name, p.output())
		}
		err := ns.Do(func() error {
			c, err := net.DialTimeout("tcp4", addr.String(), 200*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening on %s after %s (%v): %s", p.name, addr, peerStartWait, err, p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startProxy starts one proxy peer: the director's namespace owns the VIP
// on ext0 while it runs, the proxy listens there and spreads connections
// over the real servers' port 80. golvs is not running then. stop also
// says whether the proxy exited by itself meanwhile.
func (r *dpRun) startProxy(name, bin string) (stop func() error, err error) {
	vip := netip.AddrPortFrom(lab.VIP, 80)
	var rss []netip.AddrPort
	for i := range r.topo.RS {
		rss = append(rss, netip.AddrPortFrom(lab.RIP(i+1), 80))
	}
	dir, err := os.MkdirTemp("", "golvs-bench-"+name+"-")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, name+".conf")
	var args []string
	switch name {
	case peerHAProxy:
		err = os.WriteFile(cfg, []byte(haproxyConfig(vip, rss)), 0o644)
		args = []string{"-f", cfg, "-db"}
	case peerNginx:
		err = os.WriteFile(cfg, []byte(nginxConfig(dir, r.nginxModule, vip, rss)), 0o644)
		args = []string{"-p", dir, "-c", cfg, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;"}
	default:
		err = fmt.Errorf("unknown proxy %s", name)
	}
	if err == nil {
		err = lab.HostAddr(r.topo.Director, lab.DirExt, lab.VIP, true)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	unaddr := func() {
		if err := lab.HostAddr(r.topo.Director, lab.DirExt, lab.VIP, false); err != nil {
			r.note("%s: %v", name, err)
		}
		os.RemoveAll(dir)
	}
	p, err := startPeer(r.topo.Director, false, name, filepath.Join(dir, "out.log"), bin, args...)
	if err != nil {
		unaddr()
		return nil, err
	}
	if err := p.waitListen(r.topo.Director, vip); err != nil {
		p.stop(syscall.SIGTERM)
		unaddr()
		return nil, err
	}
	return func() error {
		var err error
		if p.exited() {
			err = fmt.Errorf("%s exited: %s", name, p.output())
		}
		p.stop(syscall.SIGTERM)
		unaddr()
		return err
	}, nil
}

// startNetsniff runs netsniff-ng in the director, from ext0 to int0,
// frames unchanged. They keep the client's MACs: the destination is
// ext0's, which no port of the lan bridge has, so the bridge would flood
// each frame to every real server and the receivers would count it once
// per real server. A static bridge entry sends ext0's MAC to rs1's port
// only: every frame is counted once, at rs1, whose kernel drops it as
// another host's (no answer, like the stand-in MACs of the others).
func startNetsniff(r *dpRun) (func(), error) {
	bin := r.peers[peerNetsniff]
	dmac := net.HardwareAddr(r.dirMAC[:])
	if err := lab.StaticFDB(r.topo.Switch, "p-rs1", dmac); err != nil {
		return nil, err
	}
	unpin := func() {
		if err := lab.DelStaticFDB(r.topo.Switch, "p-rs1", dmac); err != nil {
			r.note("netsniff-ng: %v", err)
		}
	}
	dir, err := os.MkdirTemp("", "golvs-bench-netsniff-")
	if err != nil {
		unpin()
		return nil, err
	}
	args := []string{"--in", lab.DirExt, "--out", lab.DirInt, "--silent",
		"--no-promisc",  // the frames are for ext0's own MAC
		"--no-sock-mem", // leave the host's net.core memory settings alone
		"--notouch-irq", // and its IRQ affinity
		"--no-hwtimestamp",
		"--ring-size", "32MiB", // its default from the link speed fails on veth
		// It flushes its TX ring from a timer; at the default 10us most
		// frames never leave (seen on veth), at 1ms all do. It exits
		// when a flush finds the send buffer full (EAGAIN), which a
		// namespace cannot raise (net.core.wmem_default is read-only
		// there): the run starts it afresh for each mix and says when
		// it stopped.
		"--kernel-pull", "1000",
		"--type", "host"} // frames for ext0, like the ceiling's VIP filter
	if r.pl != nil && len(r.pl.dirCPUs) > 0 {
		args = append(args, "--bind-cpu", strconv.Itoa(r.pl.dirCPUs[0]))
	}
	args = append(args, "ip", "dst", lab.VIP.String())
	p, err := startPeer(r.topo.Director, true, peerNetsniff, filepath.Join(dir, "out.log"), bin, args...)
	if err != nil {
		unpin()
		os.RemoveAll(dir)
		return nil, err
	}
	cleanup := func() {
		if p.exited() {
			r.peerExit = p.output()
		}
		p.stop(syscall.SIGINT)
		unpin()
		os.RemoveAll(dir)
	}
	// Ready once it says so, its rings set up.
	deadline := time.Now().Add(peerStartWait)
	for {
		b, _ := os.ReadFile(p.log)
		if bytes.Contains(b, []byte("Running!")) {
			break
		}
		if p.exited() || time.Now().After(deadline) {
			err := fmt.Errorf("netsniff-ng did not start in %s: %s", peerStartWait, p.output())
			cleanup()
			return nil, err
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // into its loop
	return cleanup, nil
}
