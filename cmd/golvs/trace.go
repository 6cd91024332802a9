package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/trace"
)

// traceConfig is `golvs trace`'s command line.
type traceConfig struct {
	filter   string
	json     bool
	pcap     string
	opts     control.TraceOptions
	count    int
	duration time.Duration
}

func parseTraceArgs(args []string, stderr io.Writer) (*traceConfig, error) {
	c := &traceConfig{}
	fs := flag.NewFlagSet("golvs trace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: golvs trace [tcp|udp] [client ADDR[/LEN]] [service VIP:PORT] [port N] [flags]\n\n")
		fs.PrintDefaults()
	}
	fs.BoolVar(&c.json, "json", false, "one JSON object per event (decoded headers, frames as base64)")
	fs.StringVar(&c.pcap, "pcap", "", "also write the frames to this pcapng `file`")
	sample := fs.Uint("sample", 1, "keep one matching frame in `N`")
	fs.IntVar(&c.opts.Rate, "rate", 1000, "at most `N` events per second")
	fs.IntVar(&c.count, "count", 0, "stop after `N` events (0: no limit)")
	fs.DurationVar(&c.duration, "duration", 0, "stop after this long (0: until Ctrl-C)")
	// Filter words and flags may come in any order.
	var words []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, flagError{err} // the flag package has said it
		}
		if fs.NArg() == 0 {
			break
		}
		words = append(words, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if *sample == 0 || *sample > 1<<31 {
		return nil, fmt.Errorf("golvs trace: --sample %d is not 1..2147483648", *sample)
	}
	if c.opts.Rate <= 0 {
		return nil, fmt.Errorf("golvs trace: --rate %d is not a positive number", c.opts.Rate)
	}
	if c.count < 0 || c.duration < 0 {
		return nil, errors.New("golvs trace: --count and --duration cannot be negative")
	}
	c.opts.Sample = uint32(*sample)
	c.filter = strings.Join(words, " ")
	if _, err := trace.ParseFilter(c.filter); err != nil {
		return nil, fmt.Errorf("golvs %w", err)
	}
	return c, nil
}

// flagError is an error the flag package has already printed.
type flagError struct{ error }

func (e flagError) Unwrap() error { return e.error }

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0 && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
}

func traceMain(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return traceRun(ctx, args, os.Stdout, os.Stderr, isTerminal(os.Stdout))
}

// traceRun is `golvs trace`: it streams the director's trace op and prints
// each event (text or JSON), writing a pcapng file on the side if asked.
func traceRun(ctx context.Context, args []string, stdout, stderr io.Writer, color bool) int {
	c, err := parseTraceArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		if !errors.As(err, new(flagError)) {
			fmt.Fprintln(stderr, err)
		}
		return 2
	}
	var pf *os.File
	if c.pcap != "" {
		if pf, err = os.Create(c.pcap); err != nil {
			fmt.Fprintf(stderr, "golvs trace: cannot write the pcap file: %v\n", err)
			return 2
		}
	}
	cl, err := control.Dial(control.SocketPath())
	if err != nil {
		fmt.Fprintln(stderr, err)
		if pf != nil {
			pf.Close()
			os.Remove(c.pcap)
		}
		return 2
	}
	defer cl.Close()
	if c.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.duration)
		defer cancel()
	}
	f := &trace.Formatter{Color: color && !c.json}
	var pcap *trace.Pcap
	var shown, dropped uint64
	var werr error
	open := func(l *control.TraceLine) error {
		filter := l.Filter
		if filter == "" {
			filter = "every frame"
		}
		fmt.Fprintf(stderr, "golvs trace: tracing %s on %s (one in %d, at most %d/s); Ctrl-C stops\n",
			filter, strings.Join(l.Interfaces, " "), c.opts.Sample, c.opts.Rate)
		if pf != nil {
			pcap, werr = trace.NewPcap(pf, l.Interfaces...)
		}
		return werr
	}
	each := func(l *control.TraceLine) error {
		if l.Dropped != nil {
			dropped = *l.Dropped
			return nil
		}
		if l.Event == nil || (c.count > 0 && shown >= uint64(c.count)) {
			return nil
		}
		shown++
		if c.json {
			werr = f.WriteJSON(stdout, l.Event)
		} else {
			werr = f.WriteText(stdout, l.Event)
		}
		if werr == nil && pcap != nil {
			if werr = pcap.Write(l.Event); werr == nil {
				werr = pcap.Flush()
			}
		}
		if werr != nil {
			return werr
		}
		if c.count > 0 && shown >= uint64(c.count) {
			return control.ErrTraceStop
		}
		return nil
	}
	terr := cl.Trace(ctx, c.filter, c.opts, open, each)
	code := 0
	if pcap != nil {
		if err := pcap.Flush(); err != nil && terr == nil {
			terr = err
		}
	}
	if pf != nil {
		if err := pf.Close(); err != nil && terr == nil {
			terr = fmt.Errorf("golvs trace: %s: %w", c.pcap, err)
		}
		if pcap == nil {
			os.Remove(c.pcap) // the trace never started: leave no empty file
		}
	}
	if terr != nil {
		fmt.Fprintln(stderr, terr)
		code = 1
	}
	fmt.Fprintf(stderr, "golvs trace: %d events shown, %d dropped\n", shown, dropped)
	return code
}
