package ipvsadm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Line is one command of a rules file.
type Line struct {
	Num  int      // 1-based line number in the input
	Text string   // the line, without its end of line
	Args []string // its words, without "ipvsadm"
	Cmd  *Command
}

// ParseRules reads the format of ipvsadm -R and ipvsadm -S (spec §6.7)
// with a NewParser.
func ParseRules(r io.Reader) ([]Line, error) { return NewParser().ParseRules(r) }

// ParseRules reads the format of ipvsadm -R and ipvsadm -S (spec §6.7):
// each line is split into words at spaces, tabs, CRs and LFs; every word
// "ipvsadm" is dropped wherever it is; lines with no words are skipped;
// the rest is parsed as a command line. golvs also skips lines whose first
// word begins with '#' (ipvsadm leaves that to the ipvsadm-restore
// wrapper). -R inside the input is refused as ipvsadm refuses it. The
// first error stops the reading; it is an *Error naming the line ("line 3:
// <line>: <message>"), returned with the lines parsed before it.
func (p *Parser) ParseRules(r io.Reader) ([]Line, error) {
	br := bufio.NewReader(r)
	var out []Line
	for n := 1; ; n++ {
		text, rerr := br.ReadString('\n')
		if rerr != nil && rerr != io.EOF {
			return out, fmt.Errorf("ipvsadm: reading rules: %w", rerr)
		}
		if text == "" && rerr == io.EOF {
			return out, nil
		}
		text = strings.TrimRight(text, "\r\n")
		var args []string
		for _, w := range strings.FieldsFunc(text, func(r rune) bool {
			return r == ' ' || r == '\t' || r == '\r' || r == '\n'
		}) {
			if w != "ipvsadm" {
				args = append(args, w)
			}
		}
		if len(args) > 0 && !strings.HasPrefix(args[0], "#") {
			c, err := p.Parse(args)
			if err == nil && c.Cmd == CmdRestore {
				err = p.tryHelp()
			}
			if err != nil {
				var e *Error
				if errors.As(err, &e) {
					le := *e
					le.Line, le.Text, le.Err = n, text, e
					return out, &le
				}
				return out, fmt.Errorf("line %d: %s: %w", n, text, err)
			}
			out = append(out, Line{Num: n, Text: text, Args: args, Cmd: c})
		}
		if rerr == io.EOF {
			return out, nil
		}
	}
}
