// Package bench is "golvs bench": measurements of golvs's parts away from
// the packet path, for choosing a scheduler and sizing a connection table.
//
// "golvs bench sched" replays the same seeded workloads into every
// scheduler of package sched through a deterministic discrete-event
// simulation: Poisson arrivals, heavy-tailed (Pareto) connection lengths,
// real servers of different capacities and weights with a FIFO queue each,
// a server that leaves and comes back, a weight change, many clients behind
// few addresses, and a Zipf-distributed set of request targets with a cache
// per server. Connections bind to their dest for their whole life, so the
// least-connection family sees real counters. It reports fairness (Jain's
// index, coefficient of variation, Maglev's overprovision factor), queueing
// delay percentiles, cache hit ratio and how many flows move when a server
// leaves or joins.
//
// "golvs bench conntrack" measures the real conntrack.Table: memory per
// entry and the cost of insert, lookup and expiry at several sizes.
//
// The metric functions (Jain, CV, Overprovision, MovedFraction, Percentile)
// are pure and exported so that tests and other tools share one definition.
// Nothing in this package runs in the director: it must never be imported
// by a package on the packet path.
package bench
