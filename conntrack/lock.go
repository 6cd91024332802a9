package conntrack

import (
	"runtime"
	"sync/atomic"
)

// spinLock guards a shard. Critical sections are a few dozen nanoseconds
// and rarely contended (flows spread over 256 shards), so a CAS to take it
// and a release store to drop it beat sync.Mutex's atomic add on the
// per-packet path; a waiter yields instead of burning its core.
//
// The release. Go's atomic store is sequentially consistent: on amd64 it
// is an XCHG, a full barrier that waits for the store buffer to drain,
// and it was the single most expensive instruction of an established
// packet (about 6 ns of ~74). Dropping a lock needs only release order:
// every load and store of the critical section must be visible before
// the lock reads free. On amd64 (TSO) a plain MOV gives exactly that, as
// the kernel's spin_unlock does, so Unlock is one MOV in assembly
// (lock_amd64.s): the call is opaque to the compiler, which therefore
// moves no memory access across it. Elsewhere, and under the race
// detector (which must see the release to order the sections), it is
// the atomic store (lock_other.go).
//
// The word is also a sequence (a seqlock's): odd while the lock is held,
// and one more on each take and each release, so a reader that finds it
// even and the same before and after its reads knows no critical section
// ran in between (the quiet lookups, table.go).
//
// Lock order: a goroutine holds at most one shard lock at a time. Under a
// shard lock the table may take only leaf locks that never take a shard
// lock themselves (a dest's counter lock in Bind).
type spinLock struct{ v uint32 }

func (l *spinLock) Lock() {
	for {
		v := atomic.LoadUint32(&l.v)
		if v&1 == 0 && atomic.CompareAndSwapUint32(&l.v, v, v+1) {
			return
		}
		for i := 0; atomic.LoadUint32(&l.v)&1 != 0; i++ {
			if i > 16 {
				runtime.Gosched()
				i = 0
			}
		}
	}
}

func (l *spinLock) Unlock() { storeRelease(&l.v, atomic.LoadUint32(&l.v)+1) }

// lockFrom takes the lock only if its word is still seq (even): no
// critical section ran since seq was read.
func (l *spinLock) lockFrom(seq uint32) bool { return atomic.CompareAndSwapUint32(&l.v, seq, seq+1) }

// seq returns the lock word: odd while the lock is held, and different
// after every critical section since (it wraps after 2^31 of them, far
// more than can run during one quiet lookup).
func (l *spinLock) seq() uint32 { return atomic.LoadUint32(&l.v) }
