package main

import (
	"fmt"
	"os"

	"github.com/golvs/golvs/bench"
)

const benchUsage = `usage:
  golvs bench sched [flags]       every scheduler under the same simulated workloads
  golvs bench conntrack [flags]   connection table memory and cost at several sizes
`

func benchMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, benchUsage)
		return 2
	}
	var err error
	switch args[0] {
	case "sched":
		err = bench.SchedMain(args[1:], os.Stdout, os.Stderr)
	case "conntrack":
		err = bench.ConntrackMain(args[1:], os.Stdout, os.Stderr)
	default:
		fmt.Fprintf(os.Stderr, "golvs bench: unknown benchmark %q\n%s", args[0], benchUsage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "golvs bench %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
