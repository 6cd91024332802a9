package forward

// DR forwards a frame by direct routing (ipvsadm -g): only the Ethernet
// addresses change, to the real server's MAC on a directly connected
// network. The IP header, TTL included, and the L4 header are untouched:
// the real server holds the VIP itself (on lo, with arp_ignore=1 and
// arp_announce=2) and answers the client directly.
func DR(frame []byte, src, dst [6]byte) {
	MAC(frame, src, dst)
}
