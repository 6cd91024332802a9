package sched

import (
	"fmt"
	"strings"

	"github.com/golvs/golvs/ipvs"
)

// FlagNames are the names ipvsadm's -b accepts, in ipvsadm's order.
var FlagNames = []string{"flag-1", "flag-2", "flag-3", "sh-fallback", "sh-port", "mh-fallback", "mh-port"}

var flagBits = map[string]uint32{
	"flag-1":      ipvs.SvcSched1,
	"flag-2":      ipvs.SvcSched2,
	"flag-3":      ipvs.SvcSched3,
	"sh-fallback": ipvs.SvcSched1,
	"sh-port":     ipvs.SvcSched2,
	"mh-fallback": ipvs.SvcSched1,
	"mh-port":     ipvs.SvcSched2,
}

// FlagError is a -b flag that ipvsadm refuses: unknown ("invalid
// scheduler flag `x'"), or meant for another scheduler ("incompatible
// scheduler flag `x'"). Its text starts with ipvsadm's words and goes on
// with what is allowed. It matches ErrFlag and ipvs.ErrInvalid.
type FlagError struct {
	Flag         string   // the offending name
	Sched        string   // the scheduler it was checked against
	Incompatible bool     // known name, wrong scheduler
	Allowed      []string // the names allowed with Sched
}

func (e *FlagError) Error() string {
	if e.Incompatible {
		return fmt.Sprintf("incompatible scheduler flag `%s' (scheduler %s allows: %s)", e.Flag, e.Sched, strings.Join(e.Allowed, ", "))
	}
	return fmt.Sprintf("invalid scheduler flag `%s' (allowed: %s)", e.Flag, strings.Join(FlagNames, ", "))
}

// Is makes errors.Is(err, ErrFlag) and errors.Is(err, ipvs.ErrInvalid) true.
func (e *FlagError) Is(target error) bool { return target == ErrFlag || target == ipvs.ErrInvalid }

// schedOrDefault is ipvsadm's rule: with no -s the flags are checked
// against the default scheduler, wlc.
func schedOrDefault(sched string) string {
	if sched == "" {
		return ipvs.DefaultScheduler
	}
	return sched
}

// AllowedFlags returns the -b names ipvsadm accepts with the scheduler:
// flag-1..3 always, sh-* only with sh, mh-* only with mh.
func AllowedFlags(sched string) []string {
	switch schedOrDefault(sched) {
	case "sh":
		return []string{"flag-1", "flag-2", "flag-3", "sh-fallback", "sh-port"}
	case "mh":
		return []string{"flag-1", "flag-2", "flag-3", "mh-fallback", "mh-port"}
	}
	return []string{"flag-1", "flag-2", "flag-3"}
}

// CheckFlag validates one -b name for a scheduler ("" means wlc) and
// returns its bit.
func CheckFlag(sched, name string) (uint32, error) {
	bit, ok := flagBits[name]
	if !ok {
		return 0, &FlagError{Flag: name, Sched: schedOrDefault(sched), Allowed: AllowedFlags(sched)}
	}
	s := schedOrDefault(sched)
	if (strings.HasPrefix(name, "sh-") && s != "sh") || (strings.HasPrefix(name, "mh-") && s != "mh") {
		return 0, &FlagError{Flag: name, Sched: s, Incompatible: true, Allowed: AllowedFlags(sched)}
	}
	return bit, nil
}

// ParseFlags parses a -b list ("sh-fallback,sh-port") for a scheduler
// ("" means wlc), as ipvsadm's parse_sched_flags does: names separated by
// commas, empty items skipped (strtok), the first bad name fails. An
// empty list, which ipvsadm does not survive, is refused as an invalid
// flag. The result holds only SvcSched1..3; -b replaces those three bits
// of the service flags.
func ParseFlags(sched, list string) (uint32, error) {
	var flags uint32
	seen := false
	for _, name := range strings.Split(list, ",") {
		if name == "" {
			continue
		}
		seen = true
		bit, err := CheckFlag(sched, name)
		if err != nil {
			return 0, err
		}
		flags |= bit
	}
	if !seen {
		return 0, &FlagError{Flag: list, Sched: schedOrDefault(sched), Allowed: AllowedFlags(sched)}
	}
	return flags, nil
}

// FormatFlags renders the scheduler flags as ipvsadm's print_sched_flags
// does, for listings (" (" + it + ")") and -S (" -b " + it), both printed
// only when flags&ipvs.SvcSchedMask != 0. The names depend on the
// scheduler: sh-fallback,sh-port for sh, mh-fallback,mh-port for mh,
// flag-1,flag-2,flag-3 otherwise. Like ipvsadm, sh and mh print no name
// for flag-3, so the result can be empty although a flag is set.
func FormatFlags(sched string, flags uint32) string {
	var names [3]string
	n := 0
	add := func(bit uint32, name string) {
		if flags&bit != 0 {
			names[n] = name
			n++
		}
	}
	switch sched {
	case "sh":
		add(ipvs.SvcSched1, "sh-fallback")
		add(ipvs.SvcSched2, "sh-port")
	case "mh":
		add(ipvs.SvcSched1, "mh-fallback")
		add(ipvs.SvcSched2, "mh-port")
	default:
		add(ipvs.SvcSched1, "flag-1")
		add(ipvs.SvcSched2, "flag-2")
		add(ipvs.SvcSched3, "flag-3")
	}
	return strings.Join(names[:n], ",")
}

// Check reports whether a scheduler name is registered, with the error
// New would return.
func Check(name string) error {
	if _, ok := registry[name]; !ok {
		return fmt.Errorf("%w %q (known: %s)", ErrUnknown, name, strings.Join(Names(), ", "))
	}
	return nil
}
