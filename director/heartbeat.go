package director

import "sync/atomic"

// heartbeat tells a watcher (the BGP announcer) whether the data path is
// running: Run marks it, and every worker counts its loop's rounds, at
// least one every 100 ms when idle (netio.Group.Wait's timeout), so a
// worker that stops coming round is seen as stalled.
type heartbeat struct {
	running atomic.Bool
	beats   []paddedBeat // by worker id
}

type paddedBeat struct {
	n atomic.Uint64
	_ [56]byte // one cache line each: workers beat once per batch
}

func (h *heartbeat) init(workers int) { h.beats = make([]paddedBeat, workers) }

func (w *Worker) beat() {
	if w.id < len(w.d.hb.beats) {
		w.d.hb.beats[w.id].n.Add(1)
	}
}

// Heartbeats reports whether Run is forwarding (started and not told to
// stop) and how many rounds each worker's loop has made; a count that
// stops moving while running is a stalled worker.
func (d *Director) Heartbeats() (running bool, beats []uint64) {
	beats = make([]uint64, len(d.hb.beats))
	for i := range d.hb.beats {
		beats[i] = d.hb.beats[i].n.Load()
	}
	return d.hb.running.Load(), beats
}
