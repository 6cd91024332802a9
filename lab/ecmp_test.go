package lab

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// birdcSample is `birdc show route for 198.18.0.100/32 all` from BIRD
// 2.0.12 with three directors, director2's route marked
// GRACEFUL_SHUTDOWN (local pref 0 by the lab's import filter).
const birdcSample = `BIRD 2.0.12 ready.
Table master4:
198.18.0.100/32      unicast [director1 21:24:26.325] * (100) [AS65001i]
	via 198.18.0.1 on eth1
	Type: BGP univ
	BGP.origin: IGP
	BGP.as_path: 65001
	BGP.next_hop: 198.18.0.1
	BGP.local_pref: 100
                     unicast [director3 21:24:26.277] (100) [AS65001i]
	via 198.18.0.3 on eth1
	Type: BGP univ
	BGP.origin: IGP
	BGP.as_path: 65001
	BGP.next_hop: 198.18.0.3
	BGP.local_pref: 100
                     unicast [director2 21:24:29.002] (100) [AS65001i]
	via 198.18.0.2 on eth1
	Type: BGP univ
	BGP.origin: IGP
	BGP.as_path: 65001
	BGP.next_hop: 198.18.0.2
	BGP.local_pref: 0
	BGP.community: (65535,0)
`

func TestParseBirdRoutes(t *testing.T) {
	got := ParseBirdRoutes(birdcSample)
	want := []BirdRoute{
		{Protocol: "director1", Via: netip.MustParseAddr("198.18.0.1"), Best: true, LocalPref: 100},
		{Protocol: "director3", Via: netip.MustParseAddr("198.18.0.3"), LocalPref: 100},
		{Protocol: "director2", Via: netip.MustParseAddr("198.18.0.2"), LocalPref: 0, Communities: "(65535,0)"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("route %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if rs := ParseBirdRoutes("BIRD 2.0.12 ready.\nNetwork not found\n"); len(rs) != 0 {
		t.Errorf("no route: %+v", rs)
	}
}

func FuzzParseBirdRoutes(f *testing.F) {
	f.Add(birdcSample)
	f.Add("unicast [")
	f.Add("x unicast [d1]\n\tvia\n\tBGP.local_pref:\n")
	f.Fuzz(func(t *testing.T, s string) {
		for _, r := range ParseBirdRoutes(s) {
			if strings.ContainsAny(r.Protocol, " ]") {
				t.Fatalf("protocol %q", r.Protocol)
			}
		}
	})
}

func TestBirdConfig(t *testing.T) {
	c := BirdConfig(3, 3e9, "/tmp/x.log")
	for _, w := range []string{
		"merge paths on", "passive on;", "hold time 3;", "keepalive time 1;",
		"if (65535, 0) ~ bgp_community then bgp_local_pref = 0;",
		"protocol bgp director3 from director { neighbor 198.18.0.3 as 65001; }",
		"export none;",
	} {
		if !strings.Contains(c, w) {
			t.Errorf("bird.conf lacks %q:\n%s", w, c)
		}
	}
	// bird itself is the judge of its grammar.
	bird, err := exec.LookPath("bird")
	if err != nil {
		t.Skip("bird2 not installed: the configuration's grammar is not checked")
	}
	p := filepath.Join(t.TempDir(), "bird.conf")
	if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bird, "-p", "-c", p).CombinedOutput(); err != nil {
		t.Fatalf("bird -p: %v\n%s\n%s", err, out, c)
	}
}

func TestParseDirector(t *testing.T) {
	for s, want := range map[string]int{"director2": 2, "3": 3, "director1": 1} {
		if got, err := ParseDirector(s, 3); err != nil || got != want {
			t.Errorf("ParseDirector(%q) = %d, %v", s, got, err)
		}
	}
	for _, s := range []string{"director0", "director4", "router", "", "director-1"} {
		if _, err := ParseDirector(s, 3); err == nil {
			t.Errorf("ParseDirector(%q) accepted", s)
		}
	}
}
