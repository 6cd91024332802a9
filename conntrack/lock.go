package conntrack

import (
	"runtime"
	"sync/atomic"
)

// spinLock guards a shard. Critical sections are a few dozen nanoseconds
// and rarely contended (flows spread over 256 shards), so a CAS to take it
// and a plain release store to drop it beat sync.Mutex's atomic add on
// the per-packet path; a waiter yields instead of burning its core.
//
// Lock order: a goroutine holds at most one shard lock at a time. Under a
// shard lock the table may take only leaf locks that never take a shard
// lock themselves (a dest's counter lock in Bind).
type spinLock struct{ v atomic.Uint32 }

func (l *spinLock) Lock() {
	for !l.v.CompareAndSwap(0, 1) {
		for i := 0; l.v.Load() != 0; i++ {
			if i > 16 {
				runtime.Gosched()
				i = 0
			}
		}
	}
}

func (l *spinLock) Unlock() { l.v.Store(0) }
