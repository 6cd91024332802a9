package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/lab"
)

// TestLabSemantics: golvs lab passes --semantics to its director, and the
// lab's header reports what the running director says (its status).
func TestLabSemantics(t *testing.T) {
	testutil.RequireNetns(t)
	bin := buildGolvs(t)
	for _, sem := range []string{"classic", "current"} {
		args := []string{"lab", "nat", "--suffix", lab.RandomSuffix(), "--scheduler", "lc", "--requests", "2", "--semantics", sem}
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("golvs %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if !strings.Contains(string(out), "# director semantics: "+sem+" (") {
			t.Errorf("--semantics %s: the header does not report it:\n%s", sem, out)
		}
		if len(bodies(string(out))) != 2 {
			t.Errorf("--semantics %s: want 2 responses:\n%s", sem, out)
		}
	}
}

func TestSemanticsBadInput(t *testing.T) {
	bin := buildGolvs(t)
	for _, args := range [][]string{
		{"run", "-i", "lo", "--semantics", "modern"},
		{"lab", "nat", "--semantics", "modern"},
		{"bench", "sched", "--semantics", "modern"},
	} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err == nil {
			t.Errorf("golvs %v succeeded", args)
			continue
		}
		if !strings.Contains(string(out), `unknown semantics "modern" (allowed: current, classic`) {
			t.Errorf("golvs %v: %q does not name the allowed values", args, out)
		}
	}
}
