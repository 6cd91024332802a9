package ipvssync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// The wire format of IPVS sync messages (ip_vs_sync.c, spec §7.2-§7.3).
// Every field is big-endian.
//
// Version 1 message header (8 bytes):
//
//	 0               1               2               3
//	+---------------+---------------+-------------------------------+
//	| reserved = 0  |    syncid     |   size (header included)      |
//	+---------------+---------------+-------------------------------+
//	|   nr_conns    |  version = 1  |          spare = 0            |
//	+---------------+---------------+-------------------------------+
//
// then nr_conns records, each starting on a 4-byte boundary (zero padding
// between records counts in size; there is none after the last):
//
//	+---------------+---------------+-------+-----------------------+
//	| type (1=IPv6) |   protocol    | ver 0 | record length (12 bit)|
//	+---------------+---------------+-------+-----------------------+
//	|                           flags                               |
//	+-------------------------------+-------------------------------+
//	|            state              |            cport              |
//	+-------------------------------+-------------------------------+
//	|            vport              |            dport              |
//	+-------------------------------+-------------------------------+
//	|                          fwmark                               |
//	+---------------------------------------------------------------+
//	|                     timeout (seconds)                         |
//	+---------------------------------------------------------------+
//	|     caddr, vaddr, daddr: 4 bytes each (IPv4) or 16 (IPv6)     |
//	+---------------------------------------------------------------+
//	|     options: type (1), length (1), data; the record length    |
//	|     includes them                                             |
//	+---------------------------------------------------------------+
//
// Version 0 (legacy): a 4-byte header (nr_conns, syncid, size) and
// 24-byte IPv4 records (reserved, protocol, cport, vport, dport, caddr,
// vaddr, daddr, 16-bit flags, state), each followed by the 24-byte
// sequence block when the flags carry SEQ bits. No timeout, no fwmark.

// Conn flags as IPVS numbers them (IP_VS_CONN_F_*).
const (
	FlagFwdMask   = 0x0007 // the forwarding method (ipvs.Method values)
	FlagSync      = 0x0020 // the conn was created by sync
	FlagHashed    = 0x0040 // never sent
	FlagNoOutput  = 0x0080 // no replies seen (DR, TUN)
	FlagInactive  = 0x0100 // not counted in activeconns
	FlagOutSeq    = 0x0200
	FlagInSeq     = 0x0400
	FlagSeqMask   = 0x0600
	FlagNoCPort   = 0x0800
	FlagTemplate  = 0x1000 // a persistence template
	FlagOnePacket = 0x2000

	// BackupMask is what a backup keeps of the received flags
	// (IP_VS_CONN_F_BACKUP_MASK); it then adds FlagSync.
	BackupMask = FlagFwdMask | FlagNoOutput | FlagInactive | FlagSeqMask | FlagNoCPort | FlagTemplate
)

// Sizes.
const (
	HeaderLen   = 8  // version 1 message header
	HeaderLenV0 = 4  // version 0 message header
	RecordLen4  = 36 // version 1 IPv4 record before options
	RecordLen6  = 72 // version 1 IPv6 record before options
	RecordLenV0 = 24 // version 0 record before the sequence block
	SeqLen      = 24 // the sequence block: in_seq then out_seq, 3 words each

	maxRecordLen = 0x0fff // the 12-bit record length field
	MaxConns     = 255    // nr_conns is one byte
)

// Option types of version 1 records.
const (
	OptSeq    = 1    // sequence data, 24 bytes
	OptPEData = 2    // persistence engine data, at most 255 bytes
	OptPEName = 3    // persistence engine name, at most 16 bytes
	OptParam  = 0x40 // IPVS_OPT_F_PARAM: a receiver may skip an unknown option with this bit

	// OptLocal is golvs's own option: a FULLNAT conn's local address
	// and port (a 4-byte IPv4 or, in an IPv6 record, a 16-byte IPv6
	// address, then a 2-byte port). It carries the
	// OptParam bit and a type number the kernel does not use (0x20), so
	// a kernel backup skips it and keeps the rest of the record.
	OptLocal = OptParam | 0x20

	maxPEData = 255 // IP_VS_PEDATA_MAXLEN
	maxPEName = 16  // IP_VS_PENAME_MAXLEN
)

// Seq is one direction's sequence adjustment (struct ip_vs_seq).
type Seq struct {
	InitSeq, Delta, PrevDelta uint32
}

// Conn is one sync record: a connection or a persistence template as the
// master sends it. Addresses of a record are all IPv4 or all IPv6.
type Conn struct {
	Proto   uint8
	Flags   uint32
	State   uint16
	CPort   uint16
	VPort   uint16
	DPort   uint16
	FWMark  uint32 // version 1 only
	Timeout uint32 // seconds; version 1 only (0: the protocol's timeout for the state)
	CAddr   netip.Addr
	VAddr   netip.Addr
	DAddr   netip.Addr

	HasSeq        bool // option 1 present (version 1), or SEQ flags (version 0)
	InSeq, OutSeq Seq
	// PEData and PEName point into the decoded message: copy them to
	// keep them past the next message.
	PEData, PEName []byte
	// LAddr and LPort are a FULLNAT conn's local address and port
	// (golvs's option OptLocal); LAddr is invalid when absent.
	LAddr netip.Addr
	LPort uint16
}

// V6 reports whether the record is an IPv6 one (its addresses are
// 16-byte ones, v4-mapped included: the record type says the family).
func (c *Conn) V6() bool { return c.CAddr.Is6() }

// recordLen is the length of c's version 1 record, options included,
// padding not.
func (c *Conn) recordLen() int {
	n := RecordLen4
	if c.V6() {
		n = RecordLen6
	}
	if c.HasSeq {
		n += 2 + SeqLen
	}
	if len(c.PEData) > 0 {
		n += 2 + len(c.PEData)
		if len(c.PEName) > 0 {
			n += 2 + len(c.PEName)
		}
	}
	if c.LAddr.IsValid() {
		n += 2 + localLen(c.V6())
	}
	return n
}

// localLen is the length of OptLocal's data in a record of the family.
func localLen(v6 bool) int {
	if v6 {
		return 16 + 2
	}
	return 4 + 2
}

// Errors of the encoder.
var (
	ErrTooLong  = errors.New("ipvssync: record longer than the 12-bit length field")
	ErrAddrMix  = errors.New("ipvssync: a record's addresses must all be IPv4 or all IPv6")
	ErrV0NoIPv6 = errors.New("ipvssync: version 0 carries IPv4 only")
)

func addr4(b []byte, a netip.Addr) {
	v := a.As4()
	copy(b, v[:])
}

// checkAddrs makes sure a record's addresses share one family.
func (c *Conn) checkAddrs() error {
	v6 := c.V6()
	for _, a := range []netip.Addr{c.CAddr, c.VAddr, c.DAddr} {
		if !a.IsValid() || a.Is6() != v6 {
			return ErrAddrMix
		}
	}
	if c.LAddr.IsValid() && c.LAddr.Is6() != v6 {
		return fmt.Errorf("%w: the FULLNAT local address must be of the record's family", ErrAddrMix)
	}
	return nil
}

// AppendRecord appends c's version 1 record (without padding) to b, as
// ip_vs_sync_conn writes it: flags as given (callers strip HASHED), the
// sequence option when HasSeq, PE data then PE name when PEData is set,
// then golvs's FULLNAT option when LAddr is valid.
func AppendRecord(b []byte, c *Conn) ([]byte, error) {
	if err := c.checkAddrs(); err != nil {
		return b, err
	}
	if len(c.PEData) > maxPEData || len(c.PEName) > maxPEName {
		return b, fmt.Errorf("ipvssync: PE data (%d bytes) or name (%d bytes) too long", len(c.PEData), len(c.PEName))
	}
	n := c.recordLen()
	if n > maxRecordLen {
		return b, ErrTooLong
	}
	off := len(b)
	b = extend(b, n)
	r := b[off:]
	if c.V6() {
		r[0] = 1
	}
	r[1] = c.Proto
	binary.BigEndian.PutUint16(r[2:], uint16(n)) // version 0 in the top 4 bits
	binary.BigEndian.PutUint32(r[4:], c.Flags)
	binary.BigEndian.PutUint16(r[8:], c.State)
	binary.BigEndian.PutUint16(r[10:], c.CPort)
	binary.BigEndian.PutUint16(r[12:], c.VPort)
	binary.BigEndian.PutUint16(r[14:], c.DPort)
	binary.BigEndian.PutUint32(r[16:], c.FWMark)
	binary.BigEndian.PutUint32(r[20:], c.Timeout)
	p := 24
	if c.V6() {
		for _, a := range []netip.Addr{c.CAddr, c.VAddr, c.DAddr} {
			v := a.As16()
			copy(r[p:], v[:])
			p += 16
		}
	} else {
		for _, a := range []netip.Addr{c.CAddr, c.VAddr, c.DAddr} {
			addr4(r[p:], a)
			p += 4
		}
	}
	if c.HasSeq {
		r[p], r[p+1] = OptSeq, SeqLen
		p += 2
		p = putSeq(r, p, c.InSeq)
		p = putSeq(r, p, c.OutSeq)
	}
	if len(c.PEData) > 0 {
		r[p], r[p+1] = OptPEData, byte(len(c.PEData))
		p += 2 + copy(r[p+2:], c.PEData)
		if len(c.PEName) > 0 {
			r[p], r[p+1] = OptPEName, byte(len(c.PEName))
			p += 2 + copy(r[p+2:], c.PEName)
		}
	}
	if c.LAddr.IsValid() {
		n := localLen(c.V6())
		r[p], r[p+1] = OptLocal, byte(n)
		if c.V6() {
			v := c.LAddr.As16()
			copy(r[p+2:], v[:])
		} else {
			addr4(r[p+2:], c.LAddr)
		}
		binary.BigEndian.PutUint16(r[p+n:], c.LPort)
	}
	return b, nil
}

// extend appends n zero bytes to b, allocating only when b lacks the
// room (append(b, make([]byte, n)...) allocates under the race detector).
func extend(b []byte, n int) []byte {
	b = slices.Grow(b, n)
	b = b[:len(b)+n]
	clear(b[len(b)-n:])
	return b
}

func putSeq(r []byte, p int, s Seq) int {
	binary.BigEndian.PutUint32(r[p:], s.InitSeq)
	binary.BigEndian.PutUint32(r[p+4:], s.Delta)
	binary.BigEndian.PutUint32(r[p+8:], s.PrevDelta)
	return p + 12
}

func getSeq(r []byte) Seq {
	return Seq{binary.BigEndian.Uint32(r), binary.BigEndian.Uint32(r[4:]), binary.BigEndian.Uint32(r[8:])}
}

// AppendRecordV0 appends c's version 0 record: IPv4 only, 16-bit flags,
// the sequence block when the flags carry SEQ bits.
func AppendRecordV0(b []byte, c *Conn) ([]byte, error) {
	if err := c.checkAddrs(); err != nil {
		return b, err
	}
	if c.V6() {
		return b, ErrV0NoIPv6
	}
	n := RecordLenV0
	if c.Flags&FlagSeqMask != 0 {
		n += SeqLen
	}
	off := len(b)
	b = extend(b, n)
	r := b[off:]
	r[1] = c.Proto
	binary.BigEndian.PutUint16(r[2:], c.CPort)
	binary.BigEndian.PutUint16(r[4:], c.VPort)
	binary.BigEndian.PutUint16(r[6:], c.DPort)
	addr4(r[8:], c.CAddr)
	addr4(r[12:], c.VAddr)
	addr4(r[16:], c.DAddr)
	binary.BigEndian.PutUint16(r[20:], uint16(c.Flags))
	binary.BigEndian.PutUint16(r[22:], c.State)
	if n > RecordLenV0 {
		putSeq(r, 24, c.InSeq)
		putSeq(r, 36, c.OutSeq)
	}
	return b, nil
}

// Message builds one sync message: a header and records up to a length
// limit, padded between records as the kernel pads them. The zero value
// is not usable; see NewMessage.
type Message struct {
	b      []byte
	v0     bool
	maxLen int
}

// NewMessage starts a message of version 1 (v0 false) or 0 for syncid,
// of at most maxLen bytes (a larger first record still fits: a buffer
// always holds at least one record). buf is reused when large enough.
func NewMessage(buf []byte, v0 bool, syncid uint8, maxLen int) *Message {
	m := &Message{}
	m.Reset(buf, v0, syncid, maxLen)
	return m
}

// Reset starts the message again.
func (m *Message) Reset(buf []byte, v0 bool, syncid uint8, maxLen int) {
	m.v0, m.maxLen = v0, maxLen
	if v0 {
		m.b = append(buf[:0], 0, syncid, 0, HeaderLenV0)
		return
	}
	m.b = append(buf[:0], 0, syncid, 0, HeaderLen, 0, 1, 0, 0)
}

// V0 reports whether the message is a version 0 one.
func (m *Message) V0() bool { return m.v0 }

// Len returns the message length so far.
func (m *Message) Len() int { return len(m.b) }

// Conns returns the number of records.
func (m *Message) Conns() int {
	if m.v0 {
		return int(m.b[0])
	}
	return int(m.b[4])
}

// Bytes returns the message (its size field is always current).
func (m *Message) Bytes() []byte { return m.b }

// Fits reports whether a record of length n (version 1: before padding)
// still fits, as ip_vs_sync_conn decides before queueing the buffer: the
// message's record count has room and the padded record stays within
// maxLen. An empty message always takes one record.
func (m *Message) Fits(n int) bool {
	if m.Conns() >= MaxConns {
		return false
	}
	if m.Conns() == 0 {
		return true
	}
	pad := 0
	if !m.v0 {
		pad = (4 - len(m.b)&3) & 3
	}
	return len(m.b)+pad+n <= m.maxLen
}

// RecordLen returns the length c's record takes in this message's
// version (before padding).
func (m *Message) RecordLen(c *Conn) int {
	if m.v0 {
		if c.Flags&FlagSeqMask != 0 {
			return RecordLenV0 + SeqLen
		}
		return RecordLenV0
	}
	return c.recordLen()
}

// Add appends c (the caller checked Fits) and updates the header.
func (m *Message) Add(c *Conn) error {
	var err error
	if m.v0 {
		if m.b, err = AppendRecordV0(m.b, c); err != nil {
			return err
		}
		m.b[0]++
	} else {
		old := len(m.b)
		for len(m.b)&3 != 0 {
			m.b = append(m.b, 0)
		}
		if m.b, err = AppendRecord(m.b, c); err != nil {
			m.b = m.b[:old]
			return err
		}
		m.b[4]++
	}
	binary.BigEndian.PutUint16(m.b[2:], uint16(len(m.b)))
	return nil
}
