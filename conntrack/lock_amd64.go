//go:build !race

package conntrack

// storeRelease stores v at *p with release order: a plain MOV on amd64
// (lock_amd64.s; see spinLock).
//
//go:noescape
func storeRelease(p *uint32, v uint32)

// optimistic: lookups of a packet that changes nothing read without the
// shard lock (the quiet path, table.go), which needs loads kept in order:
// amd64 does not reorder loads with loads.
const optimistic = true
