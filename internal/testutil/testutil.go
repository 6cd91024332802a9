// Package testutil holds test helpers shared by golvs's packages: skipping
// where root or network namespaces are missing, building lab topologies
// that are removed when the test ends, even on failure, and echo servers
// and request loops that check connections through a VIP. Its helpers
// never touch the host's own namespace and never send traffic outside
// the namespaces a test built.
package testutil

import (
	"testing"

	"github.com/golvs/golvs/lab"
)

// RequireNetns skips the test, with the reason, where namespaces cannot be
// made (not root, no netns support).
func RequireNetns(t testing.TB) {
	t.Helper()
	if err := lab.RequireRoot(); err != nil {
		t.Skipf("skipping: %v", err)
	}
}

// NATLab builds a NAT lab with a random suffix, removed at cleanup.
func NATLab(t testing.TB, realServers int) *lab.Topology {
	t.Helper()
	RequireNetns(t)
	topo, err := lab.BuildNAT(lab.Options{Suffix: lab.RandomSuffix(), RealServers: realServers})
	if err != nil {
		t.Fatalf("building NAT lab: %v", err)
	}
	t.Cleanup(topo.Close)
	return topo
}
