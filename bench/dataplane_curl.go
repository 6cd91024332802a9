package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// The streams' client is curl, a process of its own in the client's
// namespace, as the request loops' is wrk. golvs's Go client (lab.Fetch)
// stands in only when curl is missing, and the report says so: it runs in
// the bench's process, and it was the limit of direct: with nginx real
// servers (2026-12-05) direct read 2,249 MB/s with it and 3,849 with curl,
// golvs NAT 983 and 1,682 (the paired ratio 0.43 and 0.42).

// streamTimeout bounds one stream's transfer.
const streamTimeout = 60 * time.Second

// curlFormat is what curl prints after the transfer (-w): the status,
// the body's bytes and the seconds from the start to the last byte.
const curlFormat = "golvs-curl %{http_code} %{size_download} %{time_total}\n"

// parseCurl reads curlFormat's line from curl's output: a 200 answer's
// body length and its time, or an error naming what was wrong.
func parseCurl(out string) (bytes int64, secs float64, err error) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "golvs-curl" {
			continue
		}
		if len(f) != 4 {
			return 0, 0, fmt.Errorf("bench: curl: bad totals %q", line)
		}
		if f[1] != "200" {
			return 0, 0, fmt.Errorf("bench: curl: status %q", f[1])
		}
		n, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || n < 0 {
			return 0, 0, fmt.Errorf("bench: curl: bad size %q", f[2])
		}
		s, err := strconv.ParseFloat(f[3], 64)
		if err != nil || !(s > 0) || s > streamTimeout.Seconds()*2 {
			return 0, 0, fmt.Errorf("bench: curl: bad time %q", f[3])
		}
		return n, s, nil
	}
	return 0, 0, fmt.Errorf("bench: curl printed no totals: %q", truncateOut(out))
}

func truncateOut(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// curlFetch gets path from addr with curl in the client's namespace,
// discarding the body: its length and the time to its last byte. A body
// shorter than want is an error.
func (r *dpRun) curlFetch(addr netip.AddrPort, path string, want int64) (int64, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), streamTimeout+5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.curl, "-sS", "-o", "/dev/null", "--max-time", strconv.Itoa(int(streamTimeout.Seconds())),
		"-w", curlFormat, "http://"+addr.String()+path)
	var out []byte
	err := r.topo.Client.Do(func() error {
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("curl: %v: %s", err, truncateOut(string(out)))
	}
	n, secs, err := parseCurl(string(out))
	if err != nil {
		return 0, 0, err
	}
	if n < want {
		return 0, 0, fmt.Errorf("bench: curl: %d bytes of body from %s, want %d", n, addr, want)
	}
	return n, time.Duration(secs * float64(time.Second)), nil
}
