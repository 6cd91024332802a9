//go:build race

package conntrack

// raceEnabled: the race detector is on (single-goroutine simulations skip).
const raceEnabled = true
