//go:build !race

package director

// raceEnabled: the race detector is on (single-goroutine tests that
// only compute skip: it finds nothing there and slows them tenfold).
const raceEnabled = false
