// Package conntrack is golvs's connection table: which real server each
// connection (and each persistence template) is bound to, its IPVS
// protocol state and when it expires. Workers look every packet up here
// (LookupIn for client -> VIP, LookupOut for NAT replies) and create a
// conn on a miss (Create); the control plane lists (Walk), expires and
// flushes.
//
// It is built from five mechanisms, a file each:
//
//   - entry.go: packed, pointer-free 16-byte keys and 104-byte entries
//     whose state, packet count and flags share one atomic word, and Refs
//     that name an entry for as long as it lives (a generation check);
//   - index.go: per shard, two open-addressing indices (linear probing,
//     backward-shift deletion, a tag byte per slot) of 4-byte entry
//     references: "in", keyed by the client's view of the flow, where
//     every entry lives, and "out", keyed by the real server's view, where
//     NAT replies find theirs (usually in another shard). Both are sized
//     from --conn-max when the table is made and never grow;
//   - slab.go: entries in 256-entry chunks of their home shard, lowest
//     chunk first, a chunk given back once it empties, so memory follows
//     the live table, not its high-water mark;
//   - wheel.go: per shard, a timing wheel of one-tick slots: a packet
//     only stores its entry's expiry, and the wheel re-files or expires
//     an entry when its slot comes round, one slot under the lock at a
//     time, never stopping the world;
//   - ipvsglue.go: IPVS's semantics: TCP state steps (state.go), the
//     dest's active/inactive counters, templates, per-state timeouts.
//
// plus v6.go (IPv6 flows: keys holding keyed 32-bit digests of their
// addresses, the full addresses beside each entry in IPv6 chunks of its
// own, checked on every match, so IPv4's 16-byte key, 104-byte entry and
// lookup are untouched), hash.go (the keyed hash that picks shard, slot
// and tag: a client cannot aim its flows at one shard without the table's
// secret key),
// defense.go (IPVS's drop_entry, drop_packet and secure_tcp defenses, and
// eviction at the limit) and sync.go (IPVS connection sync: the master's
// hook and per-entry state, in bits the entry does not otherwise use, and
// the backup's Install).
//
// Locking: each shard has a spin lock; a goroutine holds at most one at a
// time. An entry's end runs in three steps under one lock each (see
// teardown), and only the last frees it, so an entry reachable from an
// index is always allocated and never torn down twice.
//
// On the packet path the table never allocates, and an established flow's
// packet writes nothing to its entry unless its state or expiry tick
// changes; such a packet's lookup does not take the lock either, on
// amd64: it reads between two reads of the lock's word and is retried
// under the lock if a critical section ran meanwhile (the quiet path,
// table.go). A full table (the configured maximum) replaces a half-open or
// closing conn, or refuses and counts, instead of growing.
package conntrack
