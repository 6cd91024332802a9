package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/golvs/golvs/lab"
)

// The live mode measures real HTTP latency through the data path: wrr
// follows the weights, every request is answered, and the slow server's
// service time shows in the tail.
func TestLiveSmoke(t *testing.T) {
	if err := lab.RequireRoot(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	c := LiveConfig{Scheds: []string{"wrr", "lc"}, Requests: 60, Concurrency: 4,
		Delays: []time.Duration{time.Millisecond, 20 * time.Millisecond}, Weights: []int32{2, 1}}
	rep, err := RunLive(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 2 {
		t.Fatalf("%d results", len(rep.Results))
	}
	w := rep.Results[0]
	if w.OK != 60 || w.Failed != 0 || w.Shares["rs1"] != 40 || w.Shares["rs2"] != 20 {
		t.Fatalf("wrr 2:1: %+v", w)
	}
	if w.P99 < 20 {
		t.Fatalf("wrr p99 %.1f ms: the 20 ms server should show in the tail", w.P99)
	}
	var buf bytes.Buffer
	if err := WriteLiveTable(&buf, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "wrr") || !strings.Contains(buf.String(), "p99 ms") {
		t.Fatalf("table:\n%s", buf.String())
	}
	if d, w, err := ParseLiveServers("2ms:4, 8ms:1"); err != nil || len(d) != 2 || d[1] != 8*time.Millisecond || w[0] != 4 {
		t.Fatalf("ParseLiveServers: %v %v %v", d, w, err)
	}
	if _, _, err := ParseLiveServers("2ms"); err == nil || !strings.Contains(err.Error(), "SERVICE-TIME:WEIGHT") {
		t.Fatalf("bad server spec: %v", err)
	}
	bad := c
	bad.Requests = 0
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("0 requests: %v", err)
	}
}
