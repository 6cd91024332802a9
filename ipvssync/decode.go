package ipvssync

import (
	"encoding/binary"
	"net/netip"
)

// Reason says why a message was dropped or a record skipped. A backup
// counts every one where operators see them (Counters).
type Reason uint8

// Message drops: nothing of the message is installed.
const (
	OK                Reason = iota
	DropShort                // shorter than a header
	DropSize                 // the size field is not the datagram's length
	DropSyncID               // another syncid than the backup's (which is not 0)
	DropTruncated            // a record runs past the end of the message
	DropRecordVersion        // a record's version nibble is not 0
	DropRecordType           // a record type other than 0 (IPv4) or 1 (IPv6)
	DropRecordShort          // a record length shorter than its fixed part
	DropOption               // an option cut short, of length 0, past its record, of a bad length, or repeated
	numDrops
)

// Record skips: that record is not installed, the others are.
const (
	SkipOption Reason = numDrops + iota // an unknown option without the PARAM bit
	SkipFlags                           // ONE_PACKET, or TEMPLATE with NO_CPORT (rejected by current kernels)
	SkipProto                           // a protocol golvs does not handle (TCP and UDP are)
	SkipState                           // a state out of range for its protocol, or a template state other than NONE/ASSURED
	SkipPE                              // persistence engine data (golvs has no engine, like a kernel without the module)
	numReasons
)

var reasonNames = [numReasons]string{
	OK: "ok", DropShort: "short", DropSize: "bad-size", DropSyncID: "other-syncid",
	DropTruncated: "truncated", DropRecordVersion: "bad-record-version", DropRecordType: "bad-record-type",
	DropRecordShort: "bad-record-length", DropOption: "bad-option",
	SkipOption: "unknown-option", SkipFlags: "bad-flags", SkipProto: "unsupported-protocol",
	SkipState: "bad-state", SkipPE: "pe-data",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Drop reports whether r drops a whole message.
func (r Reason) Drop() bool { return r > OK && r < numDrops }

// Record is one decoded record and whether it is to be installed.
type Record struct {
	Conn
	Skip Reason // OK: install it
}

// numStates is how many states each protocol has in the kernel
// (pp->num_states); templates have two (NONE, ASSURED).
func numStates(proto uint8) int {
	switch proto {
	case 6:
		return 11 // IP_VS_TCP_S_LAST
	case 17:
		return 1 // IP_VS_UDP_S_LAST
	}
	return 0
}

// Decoder decodes sync messages as a backup receives them. It keeps its
// record slice between messages, so decoding allocates nothing once warm.
// A decoder is not safe for concurrent use.
type Decoder struct {
	// SyncID is the backup's syncid: messages with another one are
	// dropped, unless it is 0 (accept all).
	SyncID uint8
	recs   []Record
}

// Decode parses one message (the whole UDP payload). It fails closed:
// the message is checked to its end before anything is returned, so a
// message that is dropped (drop.Drop()) yields no records at all, never a
// prefix of them (the kernel installs the records before a bad one; golvs
// installs none). Otherwise it returns every record with its Skip reason;
// the records to install carry flags already filtered as a current
// kernel's backup does (ONE_PACKET and TEMPLATE|NO_CPORT records skipped,
// the rest masked with BackupMask, FlagSync added) and templates' states
// checked. version is 0 or 1. The records' PE data point into msg.
func (d *Decoder) Decode(msg []byte) (recs []Record, version int, drop Reason) {
	d.recs = d.recs[:0]
	if len(msg) < HeaderLenV0 {
		return nil, 0, DropShort
	}
	if int(binary.BigEndian.Uint16(msg[2:])) != len(msg) {
		return nil, 0, DropSize
	}
	if d.SyncID != 0 && msg[1] != d.SyncID {
		return nil, 0, DropSyncID
	}
	if len(msg) >= HeaderLen && msg[0] == 0 && msg[5] == 1 && msg[6] == 0 && msg[7] == 0 {
		if r := d.decodeV1(msg); r != OK {
			d.recs = d.recs[:0]
			return nil, 1, r
		}
		return d.recs, 1, OK
	}
	if r := d.decodeV0(msg); r != OK {
		d.recs = d.recs[:0]
		return nil, 0, r
	}
	return d.recs, 0, OK
}

func (d *Decoder) add() *Record {
	d.recs = append(d.recs, Record{})
	return &d.recs[len(d.recs)-1]
}

func (d *Decoder) decodeV1(msg []byte) Reason {
	n := int(msg[4])
	next := HeaderLen
	for i := 0; i < n; i++ {
		p := next
		if p+RecordLen4 > len(msg) {
			return DropTruncated
		}
		vs := binary.BigEndian.Uint16(msg[p+2:])
		size := int(vs & maxRecordLen)
		end := p + size
		if end > len(msg) {
			return DropTruncated
		}
		if vs>>12 != 0 {
			return DropRecordVersion
		}
		rec := d.add()
		if r := decodeRecord(msg[p:], size, rec); r.Drop() {
			return r
		} else {
			rec.Skip = r
		}
		next = p + (size+3)&^3
	}
	return OK
}

// decodeRecord decodes one version 1 record of length size at the start
// of b (which holds at least its IPv4 fixed part, checked by the caller)
// as ip_vs_proc_sync_conn does: a drop reason for a malformed record, a
// skip reason for one the backup refuses, or OK.
func decodeRecord(b []byte, size int, rec *Record) Reason {
	c := &rec.Conn
	r := b[:size]
	var fixed int
	switch b[0] {
	case 0:
		fixed = RecordLen4
	case 1:
		fixed = RecordLen6
	default:
		if b[0]&1 != 0 {
			fixed = RecordLen6 // the kernel tests only the IPv6 bit
		} else {
			return DropRecordType
		}
	}
	if fixed > size {
		return DropRecordShort
	}
	c.Proto = r[1]
	c.Flags = binary.BigEndian.Uint32(r[4:])
	c.State = binary.BigEndian.Uint16(r[8:])
	c.CPort = binary.BigEndian.Uint16(r[10:])
	c.VPort = binary.BigEndian.Uint16(r[12:])
	c.DPort = binary.BigEndian.Uint16(r[14:])
	c.FWMark = binary.BigEndian.Uint32(r[16:])
	c.Timeout = binary.BigEndian.Uint32(r[20:])
	if fixed == RecordLen6 {
		c.CAddr = netip.AddrFrom16([16]byte(r[24:40]))
		c.VAddr = netip.AddrFrom16([16]byte(r[40:56]))
		c.DAddr = netip.AddrFrom16([16]byte(r[56:72]))
	} else {
		c.CAddr = netip.AddrFrom4([4]byte(r[24:28]))
		c.VAddr = netip.AddrFrom4([4]byte(r[28:32]))
		c.DAddr = netip.AddrFrom4([4]byte(r[32:36]))
	}
	// Options: every one is checked; an unknown mandatory one stops the
	// walk and skips the record (the kernel's "goto out").
	skip := OK
	var seen uint8
	for p := fixed; p < len(r); {
		if p+2 > len(r) {
			return DropOption
		}
		typ, n := r[p], int(r[p+1])
		p += 2
		if n == 0 || p+n > len(r) {
			return DropOption
		}
		data := r[p : p+n]
		switch typ &^ OptParam {
		case OptSeq:
			if n != SeqLen || seen&1 != 0 {
				return DropOption
			}
			seen |= 1
			c.HasSeq = true
			c.InSeq, c.OutSeq = getSeq(data), getSeq(data[12:])
		case OptPEData:
			if n > maxPEData || seen&2 != 0 {
				return DropOption
			}
			seen |= 2
			c.PEData = data
		case OptPEName:
			if n > maxPEName || seen&4 != 0 {
				return DropOption
			}
			seen |= 4
			c.PEName = data
		default:
			if typ == OptLocal && n == localLen(fixed == RecordLen6) && seen&8 == 0 {
				seen |= 8
				if n == 6 {
					c.LAddr = netip.AddrFrom4([4]byte(data[:4]))
				} else {
					c.LAddr = netip.AddrFrom16([16]byte(data[:16]))
				}
				c.LPort = binary.BigEndian.Uint16(data[n-2:])
			} else if typ&OptParam == 0 {
				skip = SkipOption
			}
		}
		if skip != OK {
			return skip
		}
		p += n
	}
	return backupChecks(c)
}

// backupChecks applies the backup's per-record rules of a current
// kernel to c (flags as received): the flag filter, the mask, the state
// range, persistence engine data, and golvs's own limits.
func backupChecks(c *Conn) Reason {
	raw := c.Flags
	if raw&FlagOnePacket != 0 || raw&(FlagTemplate|FlagNoCPort) == FlagTemplate|FlagNoCPort {
		return SkipFlags
	}
	c.Flags = raw&BackupMask | FlagSync
	if c.Flags&FlagTemplate == 0 {
		ns := numStates(c.Proto)
		if ns == 0 {
			return SkipProto
		}
		if int(c.State) >= ns {
			return SkipState
		}
	} else {
		if c.State >= 2 {
			return SkipState
		}
		if c.Proto != 0 && numStates(c.Proto) == 0 {
			return SkipProto
		}
	}
	if len(c.PEData) > 0 {
		return SkipPE
	}
	return OK
}

func (d *Decoder) decodeV0(msg []byte) Reason {
	n := int(msg[0])
	p := HeaderLenV0
	for i := 0; i < n; i++ {
		if p+RecordLenV0 > len(msg) {
			return DropTruncated
		}
		r := msg[p:]
		rec := d.add()
		c := &rec.Conn
		c.Proto = r[1]
		c.CPort = binary.BigEndian.Uint16(r[2:])
		c.VPort = binary.BigEndian.Uint16(r[4:])
		c.DPort = binary.BigEndian.Uint16(r[6:])
		c.CAddr = netip.AddrFrom4([4]byte(r[8:12]))
		c.VAddr = netip.AddrFrom4([4]byte(r[12:16]))
		c.DAddr = netip.AddrFrom4([4]byte(r[16:20]))
		c.Flags = uint32(binary.BigEndian.Uint16(r[20:]))
		c.State = binary.BigEndian.Uint16(r[22:])
		p += RecordLenV0
		if c.Flags&FlagSeqMask != 0 {
			if p+SeqLen > len(msg) {
				return DropTruncated
			}
			c.HasSeq = true
			c.InSeq, c.OutSeq = getSeq(msg[p:]), getSeq(msg[p+12:])
			p += SeqLen
		}
		rec.Skip = backupChecks(c)
	}
	return OK
}
