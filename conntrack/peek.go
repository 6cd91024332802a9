package conntrack

// Peek finds a conn by its in key (out false) or out key (out true) and
// fills h, without a state transition or a refresh: related ICMP errors
// are matched to their conn this way (IPVS neither moves the state nor
// re-arms the timer for them).
func (t *Table) Peek(k *Key, out bool, h *Hit) bool {
	s := t.shardOf(k)
	s.mu.Lock()
	var e *Entry
	if out {
		e = s.out[*k]
	} else if e = s.in[*k]; e != nil && e.flags.Load()&FlagTemplate != 0 {
		e = nil
	}
	if e == nil {
		s.mu.Unlock()
		return false
	}
	fill(e, h)
	st := uint8(e.state.Load())
	h.OldState, h.NewState = st, st
	s.mu.Unlock()
	return true
}
