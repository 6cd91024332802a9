package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/golvs/golvs/lab"
)

// The real servers of the request loops and streams are nginx, each in
// its own process (one worker) inside its namespace, as on the hosts LVS
// directors serve. golvs's own lab server (lab.Serve) stands in only when
// nginx is missing: it runs as goroutines of the bench's process, the
// process golvs's workers run in, and one connection at a time its
// figures depend on that: measured 2026-12-05 on the NAT lab, golvs NAT
// with one worker reached 0.68-0.85 of direct with the in-process server,
// 0.49-0.51 with the same server in a process of its own (Go's network
// poller hands each connection between threads: 6-7 context switches a
// request), 0.76-0.88 with nginx. The ratio is the real server's as much
// as golvs's, so the bench uses the real one.

// streamWarmup is the answer's length of the request that starts each
// of a stream's paired paths (oneStream).
const streamWarmup = 1024

// rsBulkDir is where a real server's files live under its root: the
// bulk answers of the streams, /bytes/N, as lab.Serve answers them.
const rsBulkDir = "bytes"

// rsNginxConfig is nginx as a real server in dir: one worker, an answer
// of name and a newline at /, and the files of root at /bytes/N (sent
// with sendfile), on every port of ports, on every address.
func rsNginxConfig(dir, root, name string, ports []int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# golvs bench dataplane: real server %s
worker_processes 1;
worker_rlimit_nofile 65536;
pid %s;
error_log %s warn;

events {
	worker_connections 20000;
}

http {
	access_log off;
	default_type text/plain;
	sendfile on;
	tcp_nopush on;
	keepalive_requests 1000000;
`, name, filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"))
	for _, t := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "\t%s_temp_path %s;\n", t, filepath.Join(dir, t))
	}
	b.WriteString("\tserver {\n")
	for _, p := range ports {
		fmt.Fprintf(&b, "\t\tlisten %d backlog=4096;\n", p)
	}
	fmt.Fprintf(&b, `		location = / {
			return 200 "%s\n";
		}
		location /%s/ {
			root %s;
		}
	}
}
`, name, rsBulkDir, root)
	return b.String()
}

// rsRoot makes the real servers' shared document root once: the stream's
// answer, /bytes/N for the configured N, a sparse file (its page cache is
// zeros, filled on the first read and shared by every server).
func (r *dpRun) rsRoot() (string, error) {
	if r.rsRootDir != "" {
		return r.rsRootDir, nil
	}
	dir, err := os.MkdirTemp("", "golvs-bench-rs-")
	if err != nil {
		return "", err
	}
	err = os.Mkdir(filepath.Join(dir, rsBulkDir), 0o755)
	// The paired streams' warm-up request, and the stream.
	for _, n := range []int{streamWarmup, r.c.StreamBytes} {
		if err != nil || n == 0 {
			continue
		}
		var f *os.File
		f, err = os.Create(filepath.Join(dir, rsBulkDir, strconv.Itoa(n)))
		if err == nil {
			err = f.Truncate(int64(n))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	// The workers run as nobody or www-data: they read the root.
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	r.rsRootDir = dir
	return dir, nil
}

// serveRS starts a real server named name in ns, answering HTTP on ports:
// nginx in its own process when the host has it, else lab.Serve's
// goroutines in this process, bound to bind when it is valid (DR and TUN
// real servers answer on the VIP), until ctx is done. stop ends it; it
// must run before ns goes.
func (r *dpRun) serveRS(ctx context.Context, ns *lab.NS, name string, bind netip.Addr, ports []int) (stop func(), err error) {
	if r.rsNginx == "" {
		if !r.rsNoted {
			r.rsNoted = true
			r.note("real servers: nginx is not installed (apt-get install nginx-light), so golvs's Go lab server stands in, in the bench's own process: the request loops' ratios then depend on it (one connection at a time golvs NAT measured 0.68-0.85 of direct with it, 0.49-0.51 with the same server in a process of its own, 0.76-0.88 with nginx)")
		}
		if bind.IsValid() {
			_, err = lab.ServeAt(ctx, ns, name, bind, ports, nil)
		} else {
			_, err = lab.Serve(ctx, ns, name, ports, nil)
		}
		return func() {}, err
	}
	root, err := r.rsRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "golvs-bench-"+name+"-")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cfg, []byte(rsNginxConfig(dir, root, name, ports)), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	p, err := startPeer(ns, false, name, filepath.Join(dir, "out.log"), r.rsNginx,
		"-p", dir, "-c", cfg, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	stop = func() {
		p.stop(syscall.SIGTERM)
		os.RemoveAll(dir)
	}
	for _, port := range ports {
		if err := p.waitListen(ns, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))); err != nil {
			stop()
			return nil, fmt.Errorf("real server %s: %w", name, err)
		}
	}
	return stop, nil
}
