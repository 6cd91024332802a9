//go:build !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm)

package conntrack

// ConnKey4 is Key{SrcIP: src, DstIP: dst, SrcPort: sport, DstPort: dport,
// Proto: proto} (key_le.go builds it as two words on little-endian
// machines).
func ConnKey4(src, dst [4]byte, sport, dport uint16, proto uint8) Key {
	return Key{SrcIP: src, DstIP: dst, SrcPort: sport, DstPort: dport, Proto: proto}
}
