//go:build !race

package conntrack

// storeRelease stores v at *p with release order: a plain MOV on amd64
// (lock_amd64.s; see spinLock).
//
//go:noescape
func storeRelease(p *uint32, v uint32)
