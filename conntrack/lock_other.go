//go:build !amd64 || race

package conntrack

import "sync/atomic"

// storeRelease stores v at *p with (at least) release order; see
// spinLock. The race detector must see it as the atomic it is.
func storeRelease(p *uint32, v uint32) { atomic.StoreUint32(p, v) }

// optimistic: off where loads may be reordered, and under the race
// detector (the reads race with writers by design).
const optimistic = false
