package director

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
)

// The kernel reassembles IPv4 fragments for golvs (PACKET_FANOUT_FLAG_DEFRAG)
// before its BPF filter and golvs's rings see them, so a fragment never
// reaches a worker: golvs gets the whole datagram, or nothing when the
// reassembly fails (a missing piece times out after ipfrag_time, an
// overlap discards the queue). Those losses are counted by the kernel, in
// the director's network namespace, beside the host's own reassembly;
// KernelStats reads them so an operator sees them with golvs's counters.

// kernelSnmp is the director's namespace's /proc/net/snmp, opened from a
// thread in that namespace (the file stays bound to it), read with pread.
type kernelSnmp struct {
	f *os.File
}

// kernelIPStats are the Ip: fields of /proc/net/snmp that KernelStats
// reports, and their names there.
var kernelIPStats = [][2]string{
	{"kernel-reasm-reqds", "ReasmReqds"},
	{"kernel-reasm-oks", "ReasmOKs"},
	{"kernel-reasm-fails", "ReasmFails"},
	{"kernel-reasm-timeout", "ReasmTimeout"},
}

func openKernelSnmp() kernelSnmp {
	f, err := os.Open("/proc/thread-self/net/snmp")
	if err != nil {
		return kernelSnmp{}
	}
	return kernelSnmp{f: f}
}

func (k *kernelSnmp) close() {
	if k.f != nil {
		k.f.Close()
		k.f = nil
	}
}

// KernelStats returns the kernel's IPv4 reassembly counters of the
// director's network namespace, named kernel-reasm-*; empty when they
// cannot be read.
func (d *Director) KernelStats() map[string]uint64 {
	out := map[string]uint64{}
	if d.snmp.f == nil {
		return out
	}
	b := make([]byte, 16<<10)
	n, err := d.snmp.f.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		return out
	}
	ip := parseSnmp(b[:n])["Ip"]
	for _, s := range kernelIPStats {
		if v, ok := ip[s[1]]; ok {
			out[s[0]] = v
		}
	}
	return out
}

// parseSnmp reads /proc/net/snmp's format: for each protocol a line of
// field names and a line of values, both starting "Proto:". Malformed
// lines are skipped.
func parseSnmp(b []byte) map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	var names []string
	var proto string
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || len(f[0]) < 2 || !strings.HasSuffix(f[0], ":") {
			names = nil
			continue
		}
		p := strings.TrimSuffix(f[0], ":")
		if names == nil || p != proto {
			proto, names = p, f[1:]
			continue
		}
		if len(f)-1 == len(names) {
			m := out[p]
			if m == nil {
				m = map[string]uint64{}
				out[p] = m
			}
			for i, v := range f[1:] {
				// Values are unsigned but some (Forwarding, MaxConn)
				// may read -1: kept out rather than wrapped.
				if u, err := strconv.ParseUint(v, 10, 64); err == nil {
					m[names[i]] = u
				}
			}
		}
		names = nil
	}
	return out
}
