package conntrack

import (
	"encoding/binary"
	"math"
	"testing"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// keysFrom are the flows a client would aim: one source address, every
// source port, one VIP; then consecutive source addresses.
func keysFrom(n int) []Key {
	ks := make([]Key, n)
	for i := range ks {
		ks[i] = Key{SrcIP: [4]byte{198, 18, byte(i >> 24), byte(i >> 16)}, DstIP: [4]byte{198, 18, 0, 100}, SrcPort: uint16(i), DstPort: 80, Proto: 6}
	}
	return ks
}

// chiSquare of counts against a uniform spread, normalised: about 1 for
// a uniform spread, far above for a skewed one.
func chiSquare(counts []int, total int) float64 {
	exp := float64(total) / float64(len(counts))
	var x float64
	for _, c := range counts {
		d := float64(c) - exp
		x += d * d / exp
	}
	return x / float64(len(counts)-1)
}

// Structured keys (the ports and addresses a client controls, counted up)
// spread evenly over the 256 shards, over the slots of an index and over
// the tag bytes, and the spread of any two bits does not depend on each
// other (the second round mixes the product's halves).
func TestHashSpread(t *testing.T) {
	hk := newHashKey(42)
	const n = 1 << 18
	shards := make([]int, 256)
	x := newIndex(1000)
	slots := make([]int, x.size)
	tags := make([]int, 128)
	for _, k := range keysFrom(n) {
		h := hk.sum(&k)
		shards[h&255]++
		slots[x.home(h)]++
		tags[tagOf(h)&0x7f]++
	}
	for name, c := range map[string][]int{"shards": shards, "slots": slots, "tags": tags} {
		// The normalised chi-square of a uniform spread is 1 +- a few
		// sqrt(2/(k-1)); 1.5 is far outside that for every k here.
		if x := chiSquare(c, n); x > 1.5 {
			t.Errorf("%s: chi-square %.2f per degree of freedom, want about 1", name, x)
		}
	}
}

// The hash is keyed: keys a client found to share a shard under one
// table's key (by trying them, as an attacker with the key could) spread
// over all shards under another's. Without the 192-bit key there is no
// way to find such keys but chance.
func TestHashKeyed(t *testing.T) {
	a, b := newHashKey(1), newHashKey(2)
	var aimed []Key
	for _, k := range keysFrom(1 << 20) {
		if a.sum(&k)&255 == 0 {
			aimed = append(aimed, k)
		}
	}
	counts := make([]int, 256)
	most := 0
	for _, k := range aimed {
		s := b.sum(&k) & 255
		counts[s]++
		most = max(most, counts[s])
	}
	// ~4096 keys over 256 shards: 16 each, binomial sd 4.
	if lim := 16 + 8*4; most > lim || chiSquare(counts, len(aimed)) > 1.5 {
		t.Fatalf("%d keys aimed at one shard under key A: under key B up to %d share a shard (limit %d)", len(aimed), most, lim)
	}
	// Two tables made with Seed 0 draw different keys.
	if x, y := newHashKey(0), newHashKey(0); x == y {
		t.Fatal("two random hash keys are equal")
	}
}

// Flipping any one input bit flips each output bit with probability 1/2
// (avalanche), within a few percent, over many keys.
func TestHashAvalanche(t *testing.T) {
	hk := newHashKey(7)
	ks := keysFrom(2000)
	var worst float64
	for bit := range 128 {
		var flips [64]int
		for _, k := range ks {
			h := hk.sum(&k)
			k2 := k
			b := (*[16]byte)(unsafe.Pointer(&k2))
			b[bit/8] ^= 1 << (bit % 8)
			d := h ^ hk.sum(&k2)
			for o := range 64 {
				flips[o] += int(d >> o & 1)
			}
		}
		for _, f := range flips {
			worst = max(worst, math.Abs(float64(f)/float64(len(ks))-0.5))
		}
	}
	if worst > 0.06 {
		t.Fatalf("an input bit flips an output bit with probability 0.5 +- %.3f, want within 0.06", worst)
	}
}

var hashSink uint64

// BenchmarkHash compares the keyed hash with the seeded xxhash it
// replaced (the key copied behind the seed into a 24-byte buffer).
func BenchmarkHash(b *testing.B) {
	ks := keysFrom(1024)
	b.Run("keyed-mum", func(b *testing.B) {
		hk := newHashKey(3)
		for i := 0; i < b.N; i++ {
			hashSink += hk.sum(&ks[i&1023])
		}
	})
	b.Run("seeded-xxhash", func(b *testing.B) {
		seed := uint64(3)
		for i := 0; i < b.N; i++ {
			var buf [24]byte
			binary.LittleEndian.PutUint64(buf[:8], seed)
			*(*Key)(unsafe.Pointer(&buf[8])) = ks[i&1023]
			hashSink += xxhash.Sum64(buf[:])
		}
	})
}
