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
	return []CounterSet{
		{
			Name:  "drops",
			Help:  "Frames golvs did not forward, by cause (arp-answered counts ARP requests for VIPs it answered; tx-errors is added when a worker's transmit socket closes).",
			Label: "cause", Names: CounterNames[:], Values: drops[:],
		},
		{
			Name:  "mode_events",
			Help:  "Events of the DR, TUN and FULLNAT forwarding paths (ICMP sent and relayed, GSO segmentation, TOA, local ports).",
			Label: "event", Names: ModeCounterNames[:], Values: modes[:],
		},
		d.syncCounterSet(),
	}
}
