//go:build !amd64 || race

package conntrack

import "sync/atomic"

// storeRelease stores v at *p with (at least) release order; see
// spinLock. The race detector must see it as the atomic it is.
func storeRelease(p *uint32, v uint32) { atomic.StoreUint32(p, v) }
