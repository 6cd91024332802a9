// Package vrrp is golvs's VRRP speaker (RFC 3768 version 2, RFC 5798
// version 3, IPv4), interoperable with keepalived's: it elects one of two
// or more directors as the master of a virtual router and moves the VIPs
// to it when the master dies. It is the control side of high availability
// and never touches the packet path: what it decides reaches the data
// plane through a Follower (the director's serving switch, the connection
// sync daemon's role), and the master's claim on the addresses through
// gratuitous ARPs it sends itself.
//
// An instance sends and receives advertisements on a raw IP socket
// (protocol 112) bound to its interface, to the group 224.0.0.18 with TTL
// 255 or to configured unicast peers. Every received packet goes through
// one decoder (Decode) that fails closed, then through the checks RFC 5798
// section 7.1 asks for (TTL, version, checksum, VRID, authentication,
// address count and list), as keepalived applies them; a packet that fails
// is dropped and counted by reason, never half-used. The state machine
// (machine.go) is pure: it is driven by time and decoded adverts, so its
// elections, preemption and timers are tested without sockets.
//
// Like keepalived, golvs uses the interface's own MAC for the virtual
// addresses (no virtual MAC unless asked, which golvs does not support),
// sends garp_master_repeat (5) gratuitous ARPs per address on becoming
// master and another set garp_master_delay (5 s) later, and speaks VRRP
// version 2 unless told 3. Authentication is version 2's simple password
// (auth_type PASS); IPSEC-AH is refused with a clear error.
package vrrp
