//go:build 386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm

package conntrack

import (
	"encoding/binary"
	"unsafe"
)

// ConnKey4 is Key{SrcIP: src, DstIP: dst, SrcPort: sport, DstPort: dport,
// Proto: proto}, an IPv4 conn's key, written as the two words the hash
// and the compare read. Built field by field, a key is ten narrow stores
// that the hash's two 8-byte loads then wait on (a store-forwarding
// stall, a few ns of every packet). The words are laid out for a
// little-endian machine (this file's build constraint; key_be.go builds
// the literal elsewhere). TestConnKey4 holds it to the literal.
func ConnKey4(src, dst [4]byte, sport, dport uint16, proto uint8) (k Key) {
	w := (*[2]uint64)(unsafe.Pointer(&k))
	w[0] = uint64(binary.LittleEndian.Uint32(src[:])) | uint64(binary.LittleEndian.Uint32(dst[:]))<<32
	w[1] = uint64(sport) | uint64(dport)<<16 | uint64(proto)<<32
	return k
}
