package sched

import (
	"errors"

	"github.com/golvs/golvs/ipvs"
)

// Sentinel errors of this package, beside ErrUnknown.
var (
	// ErrFlag is matched (errors.Is) by every *FlagError.
	ErrFlag = errors.New("sched: bad scheduler flag")
	// ErrTooManyDests is returned by mh when a service has more dests
	// than its lookup table has slots (the kernel's EINVAL).
	ErrTooManyDests = errors.New("sched: more dests than table slots")
)

func overloaded(d *ipvs.Dest) bool { return d.Flags()&ipvs.DestOverload != 0 }

func cloneDests(ds []*ipvs.Dest) []*ipvs.Dest {
	if len(ds) == 0 {
		return nil
	}
	return append([]*ipvs.Dest(nil), ds...)
}

func indexOf(ds []*ipvs.Dest, d *ipvs.Dest) int {
	for i, x := range ds {
		if x == d {
			return i
		}
	}
	return -1
}

// stateless gives the schedulers that keep no state (lc, wlc, sed, nq, fo,
// ovf, twos, none) their no-op callbacks: they read svc.Dests, the
// caller's immutable snapshot, at decision time, as the kernel reads
// svc->destinations under RCU.
type stateless struct{}

func (stateless) Init(*Service) error                { return nil }
func (stateless) AddDest(*Service, *ipvs.Dest) error { return nil }
func (stateless) DelDest(*Service, *ipvs.Dest) error { return nil }
func (stateless) UpdDest(*Service, *ipvs.Dest) error { return nil }
