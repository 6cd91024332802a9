package director

import "github.com/golvs/golvs/sched"

// schedSets is the schedulers' counter set (CounterSets): lblc/lblcr
// picks that made no cache entry because the cache was at its cap,
// summed over the current services.
func (d *Director) schedSets() []CounterSet {
	var n uint64
	if s := d.snap.Load(); s != nil {
		for _, sv := range s.List {
			if c, ok := sv.Sched.(sched.CacheCounter); ok {
				n += c.NotCached()
			}
		}
	}
	return []CounterSet{{
		Name:  "lblc_cache",
		Help:  "lblc/lblcr picks that created no cache entry because the cache was at its cap (current semantics: 24576 entries, the kernel's; classic: golvs's memory bound of 1048576), summed over the services now configured; each such pick was still served.",
		Label: "event", Names: []string{"not-cached"}, Values: []uint64{n},
	}}
}
