package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/golvs/golvs/bench"
)

// benchMain is `golvs bench sched|conntrack`.
func benchMain(args []string) int {
	err := bench.Main(args, os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, bench.ErrUsage):
		fmt.Fprintf(os.Stderr, "golvs bench: %v\n", err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "golvs bench: %v\n", err)
	return 1
}
