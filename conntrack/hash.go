package conntrack

import (
	"crypto/rand"
	"encoding/binary"
	"math/bits"
	"unsafe"
)

// hashKey is the table's keyed hash: 192 random bits drawn when the table
// is made (crypto/rand), or derived from Config.Seed in tests.
//
// Why keyed, and why this one. Clients choose their source address and
// port, so a fixed hash would let one client aim every flow at one shard
// (one lock, one slice of --conn-max) or one probe chain. STYLE.md's
// seeded xxhash stops that, but costs a copy of the key into a buffer and
// ~15 ns of an ~80 ns packet path. The key is already two 64-bit words, so
// the hash is wyhash's mixing step run twice ("mum": multiply the words
// after XOR with secret words, as a full 64x64->128-bit product, and fold
// the halves), as Go's runtime does for its map hash on CPUs without AES
// to stop the same hash-flooding attack:
//
//	h1 = fold((a ^ k0) * (b ^ k1)),   h = fold((h1 ^ k2) * m)
//
// Every output bit of the 128-bit product depends on every bit of both
// whitened words, and the whitening words are secret: without k0 and k1 a
// client cannot compute which shard, slot or tag any key gets, so it can
// do no better than chance at piling flows onto one shard. It never sees
// a hash value either: the only signal is timing, and a shard's lock or a
// probe chain is not observable at a resolution that would reveal 128
// secret bits. (A multiplication is not a PRF and this is no proof; it
// is the bar Go's own maps set. The cost: ~2 ns, two MULQ.) And should a
// client manage it anyway, it only fills its shard's share of --conn-max,
// where new conns replace its own half-open ones (defense.go).
type hashKey struct{ k0, k1, k2 uint64 }

// mulFold is wyhash's constant for the second round (any odd constant
// with well-spread bits serves).
const mulFold = 0xe7037ed1a0b428db

func newHashKey(seed uint64) hashKey {
	if seed == 0 {
		var b [24]byte
		_, _ = rand.Read(b[:])
		return hashKey{binary.LittleEndian.Uint64(b[0:]), binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:])}
	}
	// Tests and benchmarks: a reproducible key from the seed.
	s := seed
	return hashKey{splitmix(&s), splitmix(&s), splitmix(&s)}
}

func splitmix(s *uint64) uint64 {
	*s += 0x9e3779b97f4a7c15
	z := *s
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// sum hashes a key. Which bits serve what: the shard is the low bits, the
// index slot comes from the high 32 bits (index.go), the tag from bits
// 16..23; all are mixed by the second round.
func (hk *hashKey) sum(k *Key) uint64 {
	p := unsafe.Pointer(k)
	a := *(*uint64)(p)
	b := *(*uint64)(unsafe.Add(p, 8))
	return mum(mum(a^hk.k0, b^hk.k1)^hk.k2, mulFold)
}
