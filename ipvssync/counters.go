package ipvssync

// Counter indices: the master's, the backup's, then one per Reason and
// one per Outcome.
const (
	cntMsgsSent      = iota // messages sent by the master
	cntBytesSent            // their bytes (UDP payload)
	cntConnsSent            // records in them
	cntConnsQueued          // records the master queued
	cntQueueFull            // messages dropped: the queue was at sync_qlen_max
	cntSendErrors           // messages the socket refused
	cntEncodeErrors         // conns that could not be encoded
	cntMsgsReceived         // messages the backup received
	cntBytesReceived        // their bytes
	cntConnsReceived        // records in messages that decoded
	cntRecvErrors           // socket errors on receive
	cntForeign              // unicast mode: datagrams from another address than the peer
	cntReason
	cntOutcome  = cntReason + int(numReasons)
	numCounters = cntOutcome + int(NoLocalAddr) + 1
)

var outcomeNames = [...]string{
	Installed: "installed", Updated: "updated", Replaced: "replaced",
	IgnoredInactive: "ignored-inactive", NoDest: "no-real-server", TableFull: "table-full",
	NoLocalAddr: "no-local-address",
}

// CounterNames names the counters Counters returns, in order: what the
// master sent, what the backup received, every reason a message was
// dropped ("drop-*") or a record skipped ("skip-*"), and what became of
// the records installed.
var CounterNames = func() []string {
	n := []string{
		"msgs-sent", "bytes-sent", "conns-sent", "conns-queued", "queue-full", "send-errors", "encode-errors",
		"msgs-received", "bytes-received", "conns-received", "receive-errors", "foreign-sender",
	}
	for r := Reason(0); r < numReasons; r++ {
		switch {
		case r == OK:
			n = append(n, "messages-decoded")
		case r.Drop():
			n = append(n, "drop-"+r.String())
		default:
			n = append(n, "skip-"+r.String())
		}
	}
	return append(n, outcomeNames[:]...)
}()

// Counters reads the daemon's counters (atomic loads), in CounterNames
// order. They count from the daemon's creation, across starts and stops.
func (d *Daemon) Counters() []uint64 {
	out := make([]uint64, numCounters)
	for i := range out {
		out[i] = d.cnt[i].Load()
	}
	// "messages-decoded" is derived: received minus dropped.
	var dropped uint64
	for r := Reason(1); r < numReasons; r++ {
		if r.Drop() {
			dropped += out[cntReason+int(r)]
		}
	}
	out[cntReason] = out[cntMsgsReceived] - dropped
	return out
}

// Counter returns one counter by name (tests, status lines); ok is false
// for an unknown name.
func (d *Daemon) Counter(name string) (v uint64, ok bool) {
	for i, n := range CounterNames {
		if n == name {
			return d.Counters()[i], true
		}
	}
	return 0, false
}
