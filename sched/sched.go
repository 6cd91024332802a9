// Package sched holds IPVS's schedulers: given a virtual service's dests
// (in kernel list order, newest first) with their live counters and flags,
// and a new connection's addresses, pick the real server the kernel would
// pick. It runs only on the connection-setup path (a conntrack miss), never
// per established packet, and must never allocate there.
package sched

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/golvs/golvs/ipvs"
)

// Service is what a scheduler sees of a virtual service: its protocol and
// flags (read at decision time, so sh-port and the like take effect on the
// next pick) and its dest list in kernel order.
type Service struct {
	Key   ipvs.ServiceKey
	Flags uint32
	Dests []*ipvs.Dest
}

// Packet is the part of a new connection's first packet that schedulers
// read. Inverse marks a packet seen in the reply direction (sh, mh then
// hash the destination address and port instead of the source).
type Packet struct {
	Proto   uint8
	Src     netip.Addr
	Dst     netip.Addr
	SrcPort uint16
	DstPort uint16
	Inverse bool
}

// Scheduler is one service's instance of an IPVS scheduler. The callbacks
// mirror the kernel's (init_service, add_dest, del_dest, upd_dest): the
// control plane calls them with the service's new dest list after each
// change, never concurrently with each other. Schedule may run on many
// workers at once and concurrently with a callback; stateful schedulers
// keep their own copy of the list under their own lock.
type Scheduler interface {
	// Name is the name ipvsadm -s uses.
	Name() string
	// Init binds the scheduler to a service (ipvsadm -A, or -E with a
	// different scheduler), with the dests it already has.
	Init(svc *Service) error
	// AddDest, DelDest and UpdDest are called after the list changed;
	// svc.Dests is the new list, d the dest concerned.
	AddDest(svc *Service, d *ipvs.Dest) error
	DelDest(svc *Service, d *ipvs.Dest) error
	UpdDest(svc *Service, d *ipvs.Dest) error
	// Schedule picks a dest for a new connection, or nil when none is
	// available. It must not allocate.
	Schedule(svc *Service, p *Packet) *ipvs.Dest
}

// Factory creates a scheduler instance for a director of the given kernel
// semantics (only lblc and lblcr have rules of their own that depend on
// it; the overhead and OVERLOAD rules live with ipvs.Dest).
type Factory func(ipvs.Semantics) Scheduler

var registry = map[string]Factory{}

// Register adds a scheduler to the registry; called from init functions.
func Register(name string, f Factory) {
	if _, dup := registry[name]; dup {
		panic("sched: Register called twice for " + name)
	}
	registry[name] = f
}

// ErrUnknown is returned (wrapped) for a scheduler name that is not known.
var ErrUnknown = errors.New("sched: unknown scheduler")

// Names lists the registered schedulers, sorted.
func Names() []string {
	n := make([]string, 0, len(registry))
	for k := range registry {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// New creates a scheduler by name, with the current semantics.
func New(name string) (Scheduler, error) { return NewFor(name, ipvs.Current) }

// NewFor creates a scheduler by name for a director of semantics sem.
func NewFor(name string, sem ipvs.Semantics) (Scheduler, error) {
	f, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknown, name, strings.Join(Names(), ", "))
	}
	return f(sem), nil
}
