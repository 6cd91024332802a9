package control

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/golvs/golvs/ipvsadm"
)

// A streamed conns reply carries its batch as rows of text, one conn a
// line, rather than JSON objects: a row is written with appends and read
// with a split and three address parses, several times cheaper than
// reflection-driven JSON for hundreds of thousands of conns.
//
//	PROTO STATE EXPIRES CLIENT VIRTUAL DEST [PENAME PEDATA]
//	6 ESTABLISHED 899 198.18.0.10:40000 198.18.0.100:80 198.19.0.11:80

// appendConnRow appends c's row, newline-terminated.
func appendConnRow(b []byte, c *ipvsadm.Conn) []byte {
	b = strconv.AppendUint(b, uint64(c.Proto), 10)
	b = append(b, ' ')
	b = append(b, c.State...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(c.Expires), 10)
	b = append(b, ' ')
	b = c.Client.AppendTo(b)
	b = append(b, ' ')
	b = c.Virtual.AppendTo(b)
	b = append(b, ' ')
	b = c.Dest.AppendTo(b)
	if c.PEName != "" {
		b = append(b, ' ')
		b = append(b, c.PEName...)
		b = append(b, ' ')
		b = append(b, c.PEData...)
	}
	return append(b, '\n')
}

// parseConnRows reads the rows of a batch into out (reused).
func parseConnRows(rows string, out []ipvsadm.Conn) ([]ipvsadm.Conn, error) {
	out = out[:0]
	for len(rows) > 0 {
		line, rest, _ := strings.Cut(rows, "\n")
		rows = rest
		f := strings.Fields(line)
		if len(f) != 6 && len(f) != 8 {
			return out, fmt.Errorf("golvs: bad conn row %q", line)
		}
		proto, err1 := strconv.ParseUint(f[0], 10, 8)
		exp, err2 := strconv.ParseUint(f[2], 10, 32)
		cl, err3 := netip.ParseAddrPort(f[3])
		vi, err4 := netip.ParseAddrPort(f[4])
		de, err5 := netip.ParseAddrPort(f[5])
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil {
			return out, fmt.Errorf("golvs: bad conn row %q", line)
		}
		c := ipvsadm.Conn{Proto: uint8(proto), State: f[1], Expires: uint32(exp), Client: cl, Virtual: vi, Dest: de}
		if len(f) == 8 {
			c.PEName, c.PEData = f[6], f[7]
		}
		out = append(out, c)
	}
	return out, nil
}
