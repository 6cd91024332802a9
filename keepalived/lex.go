// Package keepalived reads keepalived.conf (keepalived.conf(5)) as a
// configuration source for golvs: the virtual_server,
// virtual_server_group, real_server, sorry_server and checker blocks, with
// include directives (globs and brace expansion), quoted strings,
// conditional configuration (@id lines) and keepalived's legacy spellings
// (lb_algo, lb_kind, nb_get_retry). It translates them into health
// services: the same IPVS table as the equivalent ipvsadm rules, plus the
// checkers, quorum and sorry server that package health runs.
//
// Reading is all or nothing: a file with any error is refused whole, the
// error naming the file, the line and what was wrong. Blocks golvs does
// not act on (vrrp_instance, global_defs, ...) are named in warnings,
// never dropped silently; an unknown keyword inside a block golvs
// implements is an error. It never touches the network or the data path.
package keepalived

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Pos is a place in a configuration file.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Error is a configuration error at a place.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// ErrConfig is what every configuration error wraps.
var ErrConfig = errors.New("keepalived: configuration error")

func (e *Error) Is(target error) bool { return target == ErrConfig }

func errorf(p Pos, format string, args ...any) *Error {
	return &Error{Pos: p, Msg: fmt.Sprintf(format, args...)}
}

// Limits that keep a hostile or broken file from growing without bound.
const (
	maxIncludeDepth = 16
	maxFiles        = 1024
	maxBytes        = 64 << 20 // all files together
	maxTokens       = 4 << 20
	maxLineLen      = 64 << 10
)

// token is one word of a line, with where it was.
type token struct {
	s      string
	pos    Pos
	quoted bool // any part was quoted: never a brace, never a comment
}

func (t token) isOpen() bool  { return !t.quoted && t.s == "{" }
func (t token) isClose() bool { return !t.quoted && t.s == "}" }

// reader reads a file and everything it includes into lines of tokens.
type reader struct {
	fs       FS
	configID string
	files    int
	bytes    int
	tokens   int
	lines    [][]token
}

// FS is how files are read; tests give an in-memory one. Paths are as
// written in the configuration, made absolute against the including
// file's directory.
type FS interface {
	ReadFile(name string) ([]byte, error)
	Glob(pattern string) ([]string, error)
}

type osFS struct{}

func (osFS) ReadFile(name string) ([]byte, error)  { return os.ReadFile(name) }
func (osFS) Glob(pattern string) ([]string, error) { return filepath.Glob(pattern) }

func (r *reader) readFile(name string, depth int, from Pos) error {
	if depth > maxIncludeDepth {
		return errorf(from, "include nested deeper than %d files (an include loop?)", maxIncludeDepth)
	}
	r.files++
	if r.files > maxFiles {
		return errorf(from, "more than %d files included", maxFiles)
	}
	b, err := r.fs.ReadFile(name)
	if err != nil {
		if from.File == "" {
			return fmt.Errorf("keepalived: %w", err)
		}
		return errorf(from, "include: %v", err)
	}
	r.bytes += len(b)
	if r.bytes > maxBytes {
		return errorf(from, "configuration larger than %d bytes", maxBytes)
	}
	text := string(b)
	for i, line := range strings.Split(text, "\n") {
		pos := Pos{File: name, Line: i + 1}
		if len(line) > maxLineLen {
			return errorf(pos, "line longer than %d bytes", maxLineLen)
		}
		if strings.IndexByte(line, 0) >= 0 {
			return errorf(pos, "NUL byte in the line")
		}
		line = strings.TrimRight(line, "\r")
		trim := strings.TrimLeft(line, " \t")
		if strings.HasPrefix(trim, "@") {
			keep, rest, err := r.conditional(trim, pos)
			if err != nil {
				return err
			}
			if !keep {
				continue
			}
			line = rest
			trim = strings.TrimLeft(rest, " \t")
		}
		if strings.HasPrefix(trim, "$") {
			return errorf(pos, "parameter substitution ($NAME) is not supported by golvs")
		}
		if w, rest, _ := strings.Cut(strings.TrimLeft(trim, " \t"), " "); isInclude(w) {
			// The pattern is the rest of the line, braces and all.
			pat := strings.TrimSpace(rest)
			if i := strings.IndexAny(pat, "#!"); i >= 0 {
				pat = strings.TrimSpace(pat[:i])
			}
			if pat == "" || strings.ContainsAny(pat, " \t") {
				return errorf(pos, "%s takes one file name or pattern", w)
			}
			if err := r.include(name, token{s: pat, pos: pos}, w, depth); err != nil {
				return err
			}
			continue
		}
		toks, err := tokenize(line, pos)
		if err != nil {
			return err
		}
		if len(toks) == 0 {
			continue
		}
		r.tokens += len(toks)
		if r.tokens > maxTokens {
			return errorf(pos, "more than %d words of configuration", maxTokens)
		}
		r.lines = append(r.lines, toks)
	}
	return nil
}

func isInclude(s string) bool {
	switch s {
	case "include", "includer", "includem", "includew", "includeb", "includea":
		return true
	}
	return false
}

// include reads the files a pattern names, relative to the including
// file's directory, in sorted order (glob's). Brace expressions expand
// first, as csh's. A pattern that matches nothing is an error, except
// for includer (keepalived: "readable" check only) which allows it.
func (r *reader) include(from string, pat token, kw string, depth int) error {
	p := pat.s
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(from), p)
	}
	pats, err := expandBraces(p)
	if err != nil {
		return errorf(pat.pos, "%s %s: %v", kw, pat.s, err)
	}
	var names []string
	for _, q := range pats {
		m, err := r.fs.Glob(q)
		if err != nil {
			return errorf(pat.pos, "%s %s: %v", kw, pat.s, err)
		}
		sort.Strings(m)
		names = append(names, m...)
	}
	if len(names) == 0 && kw != "includer" {
		return errorf(pat.pos, "%s %s: no file matches", kw, pat.s)
	}
	for _, n := range names {
		if err := r.readFile(n, depth+1, pat.pos); err != nil {
			return err
		}
	}
	return nil
}

// expandBraces expands csh-style {a,b} alternatives (nested allowed).
func expandBraces(s string) ([]string, error) {
	i := strings.IndexByte(s, '{')
	if i < 0 {
		if strings.IndexByte(s, '}') >= 0 {
			return nil, errors.New("unbalanced '}'")
		}
		return []string{s}, nil
	}
	depth, j := 0, -1
	var commas []int
	for k := i; k < len(s); k++ {
		switch s[k] {
		case '{':
			depth++
		case '}':
			depth--
		case ',':
			if depth == 1 {
				commas = append(commas, k)
			}
		}
		if depth == 0 {
			j = k
			break
		}
	}
	if j < 0 {
		return nil, errors.New("unbalanced '{'")
	}
	var parts []string
	start := i + 1
	for _, c := range commas {
		parts = append(parts, s[start:c])
		start = c + 1
	}
	parts = append(parts, s[start:j])
	var out []string
	for _, p := range parts {
		more, err := expandBraces(s[:i] + p + s[j+1:])
		if err != nil {
			return nil, err
		}
		out = append(out, more...)
		if len(out) > 1024 {
			return nil, errors.New("brace expression expands to more than 1024 patterns")
		}
	}
	return out, nil
}

// conditional handles an @ID or @^ID line: kept when the configuration
// id matches (or, with ^, does not).
func (r *reader) conditional(line string, pos Pos) (bool, string, error) {
	end := strings.IndexAny(line, " \t")
	if end < 0 {
		return false, "", errorf(pos, "conditional line %q has nothing after its id", line)
	}
	id, rest := line[1:end], line[end:]
	neg := strings.HasPrefix(id, "^")
	id = strings.TrimPrefix(id, "^")
	if id == "" {
		return false, "", errorf(pos, "conditional line without an id")
	}
	return (id == r.configID) != neg, rest, nil
}

// tokenize splits a line into words: whitespace separates them, braces
// are words of their own, '#' or '!' at the start of a word begins a
// comment, and "..." or '...' quote (with keepalived's backslash escapes
// inside double quotes).
func tokenize(line string, pos Pos) ([]token, error) {
	var out []token
	i := 0
	for i < len(line) {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			i++
			continue
		case c == '#' || c == '!':
			return out, nil
		case c == '{' || c == '}':
			out = append(out, token{s: string(c), pos: pos})
			i++
			continue
		}
		var b strings.Builder
		quoted := false
	word:
		for i < len(line) {
			c := line[i]
			switch {
			case c == ' ' || c == '\t' || c == '{' || c == '}':
				break word
			case c == '"' || c == '\'':
				quoted = true
				j := i + 1
				for ; j < len(line) && line[j] != c; j++ {
					if c == '"' && line[j] == '\\' && j+1 < len(line) {
						n, adv, err := unescape(line[j+1:])
						if err != nil {
							return nil, errorf(pos, "%v", err)
						}
						b.WriteString(n)
						j += adv
						continue
					}
					b.WriteByte(line[j])
				}
				if j >= len(line) {
					return nil, errorf(pos, "unterminated %c quote", c)
				}
				i = j + 1
			default:
				b.WriteByte(c)
				i++
			}
		}
		out = append(out, token{s: b.String(), pos: pos, quoted: quoted})
	}
	return out, nil
}

// unescape reads one escape after a backslash: it returns the text and
// how many bytes it used (after the backslash).
func unescape(s string) (string, int, error) {
	switch s[0] {
	case 'a':
		return "\a", 1, nil
	case 'b':
		return "\b", 1, nil
	case 'E':
		return "\x1b", 1, nil
	case 'f':
		return "\f", 1, nil
	case 'n':
		return "\n", 1, nil
	case 'r':
		return "\r", 1, nil
	case 't':
		return "\t", 1, nil
	case 'v':
		return "\v", 1, nil
	case 'x':
		n := 1
		for n < len(s) && n < 3 && strings.IndexByte("0123456789abcdefABCDEF", s[n]) >= 0 {
			n++
		}
		if n == 1 {
			return "", 0, errors.New(`\x without hex digits`)
		}
		v, _ := strconv.ParseUint(s[1:n], 16, 8)
		return string([]byte{byte(v)}), n, nil
	case 'c':
		if len(s) < 2 {
			return "", 0, errors.New(`\c at the end of the string`)
		}
		return string([]byte{s[1] & 0x1f}), 2, nil
	}
	if s[0] >= '0' && s[0] <= '7' {
		n := 1
		for n < len(s) && n < 3 && s[n] >= '0' && s[n] <= '7' {
			n++
		}
		v, _ := strconv.ParseUint(s[:n], 8, 16)
		return string([]byte{byte(v)}), n, nil
	}
	return s[:1], 1, nil
}

// node is a statement: a keyword, its arguments and, for a block, its
// children.
type node struct {
	key      token
	args     []token
	block    bool
	children []*node
	end      Pos
}

func (n *node) pos() Pos { return n.key.pos }

// parseTree builds the statement tree from lines. A statement is the
// words of a line up to a brace; '{' opens its block (on the same line or
// alone on the next), '}' closes the innermost block.
func parseTree(lines [][]token) ([]*node, error) {
	root := &node{block: true}
	stack := []*node{root}
	var last *node // the statement a '{' on its own line would open
	for _, l := range lines {
		i := 0
		for i < len(l) {
			t := l[i]
			top := stack[len(stack)-1]
			switch {
			case t.isOpen():
				if last == nil || last.block {
					return nil, errorf(t.pos, "'{' without a keyword before it")
				}
				last.block = true
				stack = append(stack, last)
				last = nil
				i++
				continue
			case t.isClose():
				if len(stack) == 1 {
					return nil, errorf(t.pos, "'}' without an open block")
				}
				top.end = t.pos
				stack = stack[:len(stack)-1]
				last = nil
				i++
				continue
			}
			n := &node{key: t}
			i++
			for i < len(l) && !l[i].isOpen() && !l[i].isClose() {
				n.args = append(n.args, l[i])
				i++
			}
			top.children = append(top.children, n)
			last = n
		}
	}
	if len(stack) > 1 {
		open := stack[len(stack)-1]
		return nil, errorf(open.pos(), "%s: block not closed ('}' missing)", open.key.s)
	}
	return root.children, nil
}
