package trace

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Formatter prints events for people (Text) or programs (JSON). Text
// output, one block per event (testdata/*.txt has one per mode):
//
//	15:09:26.535898 #1 ext0 request TCP 198.18.0.10:40000 > 198.18.0.100:80 (60 bytes)
//	  service  TCP 198.18.0.100:80 wlc, method Masq
//	  conn     miss: new connection, state SYN_RECV
//	  sched    wlc (classic): least overhead / weight; overhead = active*256 + inactive
//	             dest                     weight   active inactive  overhead
//	           > 198.19.0.12:80                2        1        0       256  chosen
//	             198.19.0.11:80                1        2        3       515
//	           -> 198.19.0.12:80
//	  before   ext0, 60 bytes
//	    eth       02:00:5e:00:0c:0a > 02:00:5e:00:d1:01 type IPv4
//	    ip        198.18.0.10 > 198.18.0.100 ttl 64 id 4660 len 44 DF csum 0x9c05 ok
//	    tcp       40000 > 80 [S] seq 1000 win 64240 hlen 24 opts <mss 1460> data 0 csum 0x702a ok
//	  after    int0, 60 bytes (* changed, + added)
//	    eth       *02:00:5e:00:d1:02 > *02:00:5e:00:5e:02 type IPv4
//	    ip        198.18.0.10 > *198.19.0.12 ttl *63 id 4660 len 44 DF csum *0x9d5c ok
//	    tcp       40000 > 80 [S] seq 1000 win 64240 hlen 24 opts <mss 1460> data 0 csum *0x7081 ok
//	  verdict  forwarded out int0
//
// A value marked * differs from the received frame; a header line marked
// + was added by the rewrite (a tunnel's outer header, a TOA option).
type Formatter struct {
	// Color adds ANSI colours; set it only when writing to a terminal.
	Color bool
	// Loc is the time zone of the timestamps (nil: local time).
	Loc *time.Location
}

// ANSI colours.
const (
	cReset   = "\x1b[0m"
	cBold    = "\x1b[1m"
	cChanged = "\x1b[1;33m" // bold yellow
	cAdded   = "\x1b[32m"   // green
	cChosen  = "\x1b[1;32m" // bold green
	cDrop    = "\x1b[1;31m" // bold red
	cDim     = "\x1b[2m"
)

func (f *Formatter) c(color, s string) string {
	if !f.Color || s == "" {
		return s
	}
	return color + s + cReset
}

// JSONEvent is the --json form of an event: its fields (frames as base64)
// plus both frames decoded and the list of header fields the rewrite
// changed ("ip.dst", "+outer-ip", ...).
type JSONEvent struct {
	*Event
	BeforeHeaders *Headers `json:"before_headers,omitempty"`
	AfterHeaders  *Headers `json:"after_headers,omitempty"`
	Changed       []string `json:"changed,omitempty"`
}

// JSON returns the --json form of e.
func JSON(e *Event) *JSONEvent {
	j := &JSONEvent{Event: e}
	tun := e.Method == "Tunnel"
	if len(e.Before) > 0 {
		j.BeforeHeaders = Decode(e.Before, tun)
	}
	if len(e.After) > 0 {
		j.AfterHeaders = Decode(e.After, tun)
		var bl []hline
		if j.BeforeHeaders != nil {
			bl = j.BeforeHeaders.lines()
		}
		for _, l := range diff(bl, j.AfterHeaders.lines()) {
			if l.added {
				j.Changed = append(j.Changed, "+"+l.name)
				continue
			}
			for _, fl := range l.fields {
				if fl.changed {
					j.Changed = append(j.Changed, l.name+"."+fl.key)
				}
			}
		}
	}
	return j
}

// WriteJSON writes e as one line of JSON.
func (f *Formatter) WriteJSON(w io.Writer, e *Event) error {
	b, err := json.Marshal(JSON(e))
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteText writes e for a person, as the type's comment shows.
func (f *Formatter) WriteText(w io.Writer, e *Event) error {
	var b strings.Builder
	f.text(&b, e)
	_, err := io.WriteString(w, b.String())
	return err
}

func (f *Formatter) text(b *strings.Builder, e *Event) {
	tun := e.Method == "Tunnel"
	var before, after *Headers
	if len(e.Before) > 0 {
		before = Decode(e.Before, tun)
	}
	if len(e.After) > 0 {
		after = Decode(e.After, tun)
	}
	loc := f.Loc
	if loc == nil {
		loc = time.Local
	}
	// Summary line: when, where from, and the flow as received.
	head := fmt.Sprintf("%s #%d %s %s", e.Time.In(loc).Format("15:04:05.000000"), e.Seq, e.InIf, e.Dir)
	if before != nil {
		head += " " + flow(before)
	}
	head += fmt.Sprintf(" (%d bytes)", e.Len)
	b.WriteString(f.c(cBold, head))
	b.WriteByte('\n')

	if e.Service != "" {
		s := e.Service
		if e.Method != "" {
			s += ", method " + e.Method
		}
		row(b, "service", s)
	}
	row(b, "conn", connLine(e))
	if e.Template != "" {
		row(b, "persist", "template "+e.Template)
	}
	if e.Sched != nil {
		f.sched(b, e.Sched, before)
	}
	var bl []hline
	if before != nil {
		size := fmt.Sprintf("%d bytes", e.Len)
		if len(e.Before) < e.Len {
			size += fmt.Sprintf(", %d kept", len(e.Before))
		}
		row(b, "before", e.InIf+", "+size)
		bl = before.lines()
		f.lines(b, bl)
		if before.Error != "" {
			row(b, "  decode", before.Error)
		}
	}
	if after != nil {
		size := fmt.Sprintf("%d bytes", e.AfterLen)
		if len(e.After) < e.AfterLen {
			size += fmt.Sprintf(", %d kept", len(e.After))
		}
		out := e.OutIf
		if out == "" {
			out = "?"
		}
		row(b, "after", out+", "+size+" "+f.c(cDim, "(* changed, + added)"))
		f.lines(b, diff(bl, after.lines()))
		if after.Error != "" {
			row(b, "  decode", after.Error)
		}
	}
	v := e.Verdict
	switch {
	case v == "forwarded" && e.OutIf != "":
		v = f.c(cChosen, v) + " out " + e.OutIf
	case strings.HasPrefix(v, "dropped"):
		v = f.c(cDrop, v)
	case v == "":
		v = "-"
	}
	row(b, "verdict", v)
}

func row(b *strings.Builder, k, v string) {
	fmt.Fprintf(b, "  %-8s %s\n", k, v)
}

// flow names the frame's connection as received: protocol and the
// innermost addresses and ports.
func flow(h *Headers) string {
	src, dst, proto := h.addrs()
	if !src.IsValid() {
		if h.Eth != nil {
			return h.Eth.Type
		}
		return "?"
	}
	ap := func(a netip.Addr, p uint16) string { return netip.AddrPortFrom(a, p).String() }
	switch {
	case h.TCP != nil:
		return fmt.Sprintf("TCP %s > %s", ap(src, h.TCP.SPort), ap(dst, h.TCP.DPort))
	case h.UDP != nil:
		return fmt.Sprintf("UDP %s > %s", ap(src, h.UDP.SPort), ap(dst, h.UDP.DPort))
	case h.ICMP != nil && h.ICMP.V6:
		return fmt.Sprintf("ICMPv6 %s > %s %s", src, dst, h.ICMP.Name)
	case h.ICMP != nil:
		return fmt.Sprintf("ICMP %s > %s %s", src, dst, h.ICMP.Name)
	}
	return fmt.Sprintf("proto %d %s > %s", proto, src, dst)
}

// addrs returns the (inner) IP header's addresses and protocol, IPv4 or
// IPv6.
func (h *Headers) addrs() (src, dst netip.Addr, proto uint8) {
	switch {
	case h.IP != nil:
		return h.IP.Src, h.IP.Dst, h.IP.Proto
	case h.IP6 != nil:
		return h.IP6.Src, h.IP6.Dst, h.IP6.Proto
	}
	return
}

func connLine(e *Event) string {
	state := ""
	switch {
	case e.StateOld != "" && e.StateNew != "" && e.StateOld != e.StateNew:
		state = "state " + e.StateOld + " -> " + e.StateNew
	case e.StateNew != "":
		state = "state " + e.StateNew
	case e.StateOld != "":
		state = "state " + e.StateOld
	}
	var s string
	switch e.Lookup {
	case "hit":
		s = "hit"
		if e.StateOld != "" && e.StateOld == e.StateNew {
			state += " (unchanged)"
		}
	case "miss":
		s = "miss: new connection"
		if e.Verdict != "" && e.Verdict != "forwarded" {
			s = "miss"
		}
	case "reuse":
		s = "reuse: an ended connection's entry taken over by a new one"
	case "none", "":
		s = "none"
	default:
		s = e.Lookup
	}
	if state != "" {
		s += ", " + state
	}
	return s
}

// schedRule says in a line how a scheduler picks, so the table reads; the
// overhead formula the scheduler used (SchedInfo.Formula, by the
// director's semantics) follows it.
var schedRule = map[string]string{
	"rr":    "round robin, in list order",
	"wrr":   "weighted round robin",
	"lc":    "least overhead",
	"wlc":   "least overhead / weight",
	"sed":   "least overhead / weight",
	"nq":    "a server with no active connection first, else least overhead / weight",
	"lblc":  "the address's cached server unless overloaded, else wlc",
	"lblcr": "least loaded of the address's cached set unless overloaded, else wlc",
	"fo":    "the available server with the highest weight",
	"ovf":   "the highest weight whose active count is under its weight",
	"twos":  "two weighted random draws, the lower overhead / weight wins",
	"sh":    "hash of the source address into 256 buckets",
	"dh":    "hash of the destination address into 256 buckets",
	"mh":    "maglev hash of the source address into the lookup table",
}

// oldFormula is the formula of events that carry none (from a director
// that predates the two semantics: classic's).
var oldFormula = map[string]string{
	"lc":  "overhead = active*256 + inactive",
	"wlc": "overhead = active*256 + inactive",
	"sed": "overhead = active + 1",
	"nq":  "overhead = active + 1",
}

func (f *Formatter) sched(b *strings.Builder, s *SchedInfo, before *Headers) {
	head := s.Name
	if s.Semantics != "" {
		head += " (" + s.Semantics + ")"
	}
	if r, ok := schedRule[s.Name]; ok {
		head += ": " + r
	}
	if fm := s.Formula; fm != "" {
		head += "; " + fm
	} else if fm := oldFormula[s.Name]; fm != "" {
		head += "; " + fm
	}
	row(b, "sched", head)
	ind := strings.Repeat(" ", 11)
	switch s.Name {
	case "sh", "dh", "mh":
		what := "source"
		a := ""
		if before != nil {
			if src, dst, _ := before.addrs(); src.IsValid() {
				a = src.String()
				if s.Name == "dh" {
					what, a = "destination", dst.String()
				}
				if src.Is6() {
					a += ", its four words XORed"
				}
			}
		}
		line := fmt.Sprintf("bucket %d", s.Bucket)
		if s.Name == "mh" {
			line = fmt.Sprintf("slot %d", s.Bucket)
		}
		if a != "" {
			line += " (" + what + " " + a + ")"
		}
		if s.Probes > 0 {
			line += fmt.Sprintf(", %d more probes (fallback)", s.Probes)
		}
		line += " -> " + chosen(s)
		b.WriteString(ind + f.c(cChosen, line) + "\n")
	default:
		if s.Name == "lblc" || s.Name == "lblcr" {
			a := "the destination"
			if before != nil {
				if _, dst, _ := before.addrs(); dst.IsValid() {
					a = dst.String()
				}
			}
			line := "cache miss for " + a + ": a new entry"
			if s.CacheHit {
				line = "cache hit for " + a + ": " + strings.Join(s.Cached, " ")
			}
			b.WriteString(ind + line + "\n")
		}
		if len(s.Dests) > 0 {
			fmt.Fprintf(b, "%s  %-22s %8s %8s %8s %9s\n", ind, "dest", "weight", "active", "inactive", "overhead")
			for _, d := range s.Dests {
				var notes []string
				if !d.Available {
					notes = append(notes, "unavailable")
				}
				if d.Overloaded {
					notes = append(notes, "overloaded")
				}
				if d.Weight == 0 {
					notes = append(notes, "quiesced")
				}
				mark := "  "
				if d.Addr == s.Chosen && s.Chosen.IsValid() {
					mark = "> "
					notes = append([]string{"chosen"}, notes...)
				}
				line := fmt.Sprintf("%s%-22s %8d %8d %8d %9d", mark, d.Addr, d.Weight, d.Active, d.Inactive, d.Overhead)
				if len(notes) > 0 {
					line += "  " + strings.Join(notes, ", ")
				}
				if mark == "> " {
					line = f.c(cChosen, line)
				}
				b.WriteString(ind + line + "\n")
			}
		}
		b.WriteString(ind + "-> " + f.c(cChosen, chosen(s)) + "\n")
	}
	if s.Note != "" {
		b.WriteString(ind + "note: " + s.Note + "\n")
	}
}

func chosen(s *SchedInfo) string {
	if !s.Chosen.IsValid() {
		return "no server chosen"
	}
	return s.Chosen.String()
}

// hline is one decoded header as a row of named fields, the unit the
// before/after comparison works on.
type hline struct {
	name   string
	fields []hfield
	added  bool // no such header before the rewrite
}

type hfield struct {
	key, label, val string
	nodiff          bool // status words, not header fields
	changed         bool
}

func (h *Headers) lines() []hline {
	var ls []hline
	if h.Eth != nil {
		ls = append(ls, hline{name: "eth", fields: []hfield{
			{key: "src", val: h.Eth.Src}, {key: "dst", label: ">", val: h.Eth.Dst}, {key: "type", label: "type", val: h.Eth.Type},
		}})
	}
	if h.Outer != nil {
		ls = append(ls, ipLine("outer-ip", h.Outer, true))
	}
	if h.Outer6 != nil {
		ls = append(ls, ip6Lines("outer-ip6", h.Outer6)...)
	}
	if u := h.OuterUDP; u != nil {
		ls = append(ls, udpLine("outer-udp", u))
	}
	if g := h.GUE; g != nil {
		ls = append(ls, hline{name: "gue", fields: []hfield{
			{key: "version", label: "version", val: strconv.Itoa(int(g.Version))},
			{key: "proto", label: "proto", val: strconv.Itoa(int(g.Proto))},
			{key: "hlen", label: "hlen", val: strconv.Itoa(g.HLen)},
		}})
	}
	if h.IP != nil {
		ls = append(ls, ipLine("ip", h.IP, false))
	}
	if h.IP6 != nil {
		ls = append(ls, ip6Lines("ip6", h.IP6)...)
	}
	if t := h.TCP; t != nil {
		fs := []hfield{
			{key: "sport", val: strconv.Itoa(int(t.SPort))}, {key: "dport", label: ">", val: strconv.Itoa(int(t.DPort))},
			{key: "flags", val: "[" + t.Flags + "]"},
			{key: "seq", label: "seq", val: strconv.FormatUint(uint64(t.Seq), 10)},
		}
		if strings.Contains(t.Flags, ".") {
			fs = append(fs, hfield{key: "ack", label: "ack", val: strconv.FormatUint(uint64(t.Ack), 10)})
		}
		fs = append(fs,
			hfield{key: "win", label: "win", val: strconv.Itoa(int(t.Win))},
			hfield{key: "hlen", label: "hlen", val: strconv.Itoa(t.HLen)},
		)
		if len(t.Options) > 0 {
			fs = append(fs, hfield{key: "options", label: "opts", val: "<" + strings.Join(t.Options, ",") + ">"})
		}
		fs = append(fs,
			hfield{key: "data", label: "data", val: strconv.Itoa(t.Data)},
			hfield{key: "csum", label: "csum", val: hex16(t.Csum)},
			hfield{key: "csum_status", val: t.CsumStat, nodiff: true},
		)
		ls = append(ls, hline{name: "tcp", fields: fs})
		if t.TOA != nil {
			ls = append(ls, hline{name: "toa", fields: []hfield{
				{key: "kind", label: "kind", val: strconv.Itoa(int(t.TOA.Kind))},
				{key: "len", label: "len", val: strconv.Itoa(int(t.TOA.Len))},
				{key: "client", label: "client", val: t.TOA.Client.String()},
			}})
		}
	}
	if u := h.UDP; u != nil {
		ls = append(ls, udpLine("udp", u))
	}
	if c := h.ICMP; c != nil {
		ls = append(ls, hline{name: "icmp", fields: []hfield{
			{key: "type", label: "type", val: strconv.Itoa(int(c.Type))},
			{key: "code", label: "code", val: strconv.Itoa(int(c.Code))},
			{key: "name", val: "(" + c.Name + ")", nodiff: true},
			{key: "csum", label: "csum", val: hex16(c.Csum)},
			{key: "csum_status", val: c.CsumStat, nodiff: true},
		}})
		if c.V6 {
			ls[len(ls)-1].name = "icmp6"
		}
		if q := c.Quote; q != nil {
			fs := []hfield{{key: "src", val: q.Src.String()}, {key: "dst", label: ">", val: q.Dst.String()},
				{key: "proto", label: "proto", val: strconv.Itoa(int(q.Proto))}}
			if q.SPort != 0 || q.DPort != 0 {
				fs = append(fs, hfield{key: "sport", label: "ports", val: strconv.Itoa(int(q.SPort))},
					hfield{key: "dport", label: ">", val: strconv.Itoa(int(q.DPort))})
			}
			ls = append(ls, hline{name: "quote", fields: fs})
		}
	}
	return ls
}

func ipLine(name string, ip *IPHeader, outer bool) hline {
	fs := []hfield{{key: "src", val: ip.Src.String()}, {key: "dst", label: ">", val: ip.Dst.String()}}
	if outer {
		fs = append(fs, hfield{key: "proto", label: "proto", val: strconv.Itoa(int(ip.Proto))})
	}
	fs = append(fs,
		hfield{key: "ttl", label: "ttl", val: strconv.Itoa(int(ip.TTL))},
	)
	if ip.TOS != 0 {
		fs = append(fs, hfield{key: "tos", label: "tos", val: hex8(ip.TOS)})
	}
	fs = append(fs,
		hfield{key: "id", label: "id", val: strconv.Itoa(int(ip.ID))},
		hfield{key: "len", label: "len", val: strconv.Itoa(int(ip.Len))},
	)
	if ip.DF {
		fs = append(fs, hfield{key: "df", val: "DF"})
	}
	if ip.Frag {
		fs = append(fs, hfield{key: "frag", val: "frag"})
	}
	fs = append(fs, hfield{key: "csum", label: "csum", val: hex16(ip.Csum)}, hfield{key: "csum_status", val: ip.CsumStat, nodiff: true})
	return hline{name: name, fields: fs}
}

// ip6Lines are an IPv6 header's line and a line for its extension-header
// walk (when it has extension headers): each header with its length, a
// fragment's offset, MF and identification, then the upper-layer
// protocol the walk found.
func ip6Lines(name string, ip *IP6Header) []hline {
	fs := []hfield{{key: "src", val: ip.Src.String()}, {key: "dst", label: ">", val: ip.Dst.String()},
		{key: "next", label: "next", val: strconv.Itoa(int(ip.Next))},
		{key: "hlim", label: "hlim", val: strconv.Itoa(int(ip.HopLimit))}}
	if ip.TClass != 0 {
		fs = append(fs, hfield{key: "tclass", label: "tc", val: hex8(ip.TClass)})
	}
	if ip.Flow != 0 {
		fs = append(fs, hfield{key: "flow", label: "flow", val: fmt.Sprintf("0x%05x", ip.Flow)})
	}
	fs = append(fs, hfield{key: "len", label: "plen", val: strconv.Itoa(int(ip.Len))})
	out := []hline{{name: name, fields: fs}}
	if len(ip.Ext) > 0 {
		var walk []string
		for _, e := range ip.Ext {
			w := fmt.Sprintf("%s(%d)", e.Kind, e.Len)
			if e.Kind == "fragment" {
				w = fmt.Sprintf("fragment(off %d", e.Offset)
				if e.More {
					w += " MF"
				}
				w += fmt.Sprintf(" id %d)", e.ID)
			}
			walk = append(walk, w)
		}
		out = append(out, hline{name: name + "-ext", fields: []hfield{
			{key: "chain", val: strings.Join(walk, " > ")},
			{key: "proto", label: "> proto", val: strconv.Itoa(int(ip.Proto))},
		}})
	}
	return out
}

func udpLine(name string, u *UDPHeader) hline {
	return hline{name: name, fields: []hfield{
		{key: "sport", val: strconv.Itoa(int(u.SPort))}, {key: "dport", label: ">", val: strconv.Itoa(int(u.DPort))},
		{key: "len", label: "len", val: strconv.Itoa(int(u.Len))},
		{key: "csum", label: "csum", val: hex16(u.Csum)},
		{key: "csum_status", val: u.CsumStat, nodiff: true},
	}}
}

func hex16(v uint16) string { return fmt.Sprintf("0x%04x", v) }
func hex8(v uint8) string   { return fmt.Sprintf("0x%02x", v) }

// diff marks, in the after lines, the fields whose values differ from the
// before line of the same name, and the lines with no such before line.
func diff(before, after []hline) []hline {
	out := make([]hline, len(after))
	for i, a := range after {
		a.fields = append([]hfield(nil), a.fields...)
		var prev *hline
		for j := range before {
			if before[j].name == a.name {
				prev = &before[j]
				break
			}
		}
		if prev == nil {
			a.added = true
		} else {
			for k := range a.fields {
				fl := &a.fields[k]
				if fl.nodiff {
					continue
				}
				fl.changed = true
				for _, p := range prev.fields {
					if p.key == fl.key {
						fl.changed = p.val != fl.val
						break
					}
				}
			}
		}
		out[i] = a
	}
	return out
}

func (f *Formatter) lines(b *strings.Builder, ls []hline) {
	for _, l := range ls {
		mark := " "
		if l.added {
			mark = "+"
		}
		var parts []string
		for _, fl := range l.fields {
			v := fl.val
			switch {
			case fl.changed:
				v = f.c(cChanged, "*"+v)
			case fl.key == "csum_status" && fl.val != CsumOK:
				v = f.c(cDrop, v)
			}
			if fl.label != "" {
				v = fl.label + " " + v
			}
			parts = append(parts, v)
		}
		line := fmt.Sprintf("  %s %-9s %s", mark, l.name, strings.Join(parts, " "))
		if l.added {
			line = f.c(cAdded, line)
		}
		b.WriteString(line + "\n")
	}
}
