package control

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
)

// `golvs adm --status [--json]`: every counter of the running director,
// live. ipvsadm has no such command; like --fullnat it is a long option
// only, so it can never collide with an ipvsadm letter.

// isStatusCommand reports golvs adm --status.
func isStatusCommand(args []string) bool {
	return len(args) > 0 && args[0] == "--status"
}

// statusMain answers golvs adm --status [--json].
func statusMain(args []string, stdout, stderr io.Writer) int {
	asJSON := false
	for _, a := range args[1:] {
		switch a {
		case "--json":
			asJSON = true
		default:
			fmt.Fprintf(stderr, "golvs adm --status: unexpected argument %q (only --json)\n", a)
			return 2
		}
	}
	cl, err := Dial(SocketPath())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	defer cl.Close()
	rep, err := cl.Do(&Request{Op: "status"})
	if code := report(rep, err)(stderr); code != 0 {
		return code
	}
	if asJSON {
		b, _ := json.MarshalIndent(struct {
			Semantics string            `json:"semantics,omitempty"`
			Counters  map[string]uint64 `json:"counters"`
			Host      []string          `json:"host"`
			Resolved  bool              `json:"resolved"`
		}{rep.Semantics, rep.Counters, rep.Host, rep.Resolved}, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return 0
	}
	WriteStatus(stdout, rep)
	return 0
}

// statusGroups orders the listing: golvs's own counters first, in their
// declaration order, then the rest by name.
var statusGroups = []struct {
	title string
	names func(map[string]uint64) []string
}{
	{"Frames not forwarded, by cause (ARP handled included)", func(map[string]uint64) []string { return director.CounterNames[:] }},
	{"Events", func(map[string]uint64) []string { return director.ModeCounterNames[:] }},
	{"Connection table", func(c map[string]uint64) []string { return withPrefix(c, "conns") }},
	{"Next hops and logs", func(c map[string]uint64) []string { return append(withPrefix(c, "neigh-"), withPrefix(c, "log-")...) }},
	{"Kernel, this network namespace (IPv4 reassembly for golvs and the host)", func(c map[string]uint64) []string { return withPrefix(c, "kernel-") }},
}

func withPrefix(c map[string]uint64, p string) []string {
	var out []string
	for k := range c {
		if strings.HasPrefix(k, p) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// WriteStatus prints a status reply for people: the kernel semantics,
// whether every real server has a next hop, the host facts the director
// relies on, then the counters as an aligned listing, in groups; a counter
// the director does not report is left out, and any it reports that no
// group names is listed last, by name.
func WriteStatus(w io.Writer, rep *Reply) {
	if sem, err := ipvs.ParseSemantics(rep.Semantics); err == nil {
		fmt.Fprintf(w, "semantics: %s (%s)\n", sem, sem.Kernels())
	}
	fmt.Fprintf(w, "real servers resolved: %v\n", rep.Resolved)
	for _, h := range rep.Host {
		fmt.Fprintf(w, "relies on: %s\n", h)
	}
	c := rep.Counters
	width := 0
	for k := range c {
		width = max(width, len(k))
	}
	seen := map[string]bool{}
	section := func(title string, names []string) {
		var lines []string
		for _, n := range names {
			v, ok := c[n]
			if !ok || seen[n] {
				continue
			}
			seen[n] = true
			lines = append(lines, fmt.Sprintf("  %-*s %20d", width, n, v))
		}
		if len(lines) == 0 {
			return
		}
		fmt.Fprintf(w, "%s:\n%s\n", title, strings.Join(lines, "\n"))
	}
	for _, g := range statusGroups {
		section(g.title, g.names(c))
	}
	var rest []string
	for k := range c {
		if !seen[k] {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	section("Other", rest)
}
