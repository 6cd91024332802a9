package director

// CounterSet is one named group of the director's counters, as exporters
// (golvs's Prometheus endpoint) read them: a set becomes the series
// golvs_<Name>_total{<Label>="<Names[i]>"} (golvs_<Name> for a gauge).
// Counters added to an existing set (a new entry in CounterNames, say)
// appear in every exporter without further work; a new set needs one line
// in CounterSets.
type CounterSet struct {
	Name   string // series stem, e.g. "drops"
	Help   string
	Label  string // label naming each entry, e.g. "cause"
	Names  []string
	Values []uint64 // same length as Names
	Gauge  bool     // current values rather than counts that only grow
}

// CounterSets reads the director's counter sets now (atomic loads only;
// nothing on the packet path waits for it).
func (d *Director) CounterSets() []CounterSet {
	drops := d.Drops.Get()
	modes := d.ModeCounters()
	sets := []CounterSet{
		{
			Name:  "drops",
			Help:  "Frames golvs did not forward, by cause (arp-answered and arp-other count the ARP frames it handled; tx-errors is added when a worker's transmit socket closes).",
			Label: "cause", Names: CounterNames[:], Values: drops[:],
		},
		{
			Name:  "mode_events",
			Help:  "Events of the forwarding paths (ICMP errors sent, rate-limited and relayed, datagrams fragmented, GSO segmentation, TOA, local ports).",
			Label: "event", Names: ModeCounterNames[:], Values: modes[:],
		},
	}
	sets = append(sets, d.housekeepingSets()...) // resolve.go
	// The kernel's IPv4 reassembly in the director's namespace (it
	// reassembles fragments for golvs): only where it can be read.
	if k := d.KernelStats(); len(k) > 0 {
		ks := CounterSet{Name: "kernel_reasm", Label: "counter",
			Help: "The kernel's IPv4 reassembly counters of the director's network namespace (/proc/net/snmp Ip Reasm*), golvs's and the host's together."}
		for _, s := range kernelIPStats {
			if v, ok := k[s[0]]; ok {
				ks.Names = append(ks.Names, s[1])
				ks.Values = append(ks.Values, v)
			}
		}
		sets = append(sets, ks)
	}
	return sets
}
