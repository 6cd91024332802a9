package testutil

import (
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryPackageHasDoc enforces the house rule: every package says, in
// its doc comment, what it does in the packet path and what it must never
// do. The comment must follow Go's convention ("Package name ..." or, for
// a command, "Command name ...") and, for a library package, say what it
// must never do ("never" or "must not").
func TestEveryPackageHasDoc(t *testing.T) {
	root := filepath.Join("..", "..")
	type pkg struct {
		name string
		doc  string
	}
	pkgs := map[string]*pkg{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		dir := filepath.Dir(path)
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments|parser.PackageClauseOnly)
		if err != nil {
			return err
		}
		p := pkgs[dir]
		if p == nil {
			p = &pkg{name: f.Name.Name}
			pkgs[dir] = p
		}
		if f.Doc != nil {
			if p.doc != "" {
				return fmt.Errorf("%s: package %s has a second doc comment (keep one, in one file)", path, p.name)
			}
			p.doc = f.Doc.Text()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 10 {
		t.Fatalf("found only %d packages; is the walk rooted right?", len(pkgs))
	}
	for dir, p := range pkgs {
		switch {
		case p.doc == "":
			t.Errorf("package %s (%s) has no doc comment", p.name, dir)
		case p.name == "main":
			cmd := filepath.Base(dir)
			if !strings.HasPrefix(p.doc, "Command "+cmd+" ") {
				t.Errorf("%s: a command's doc comment must begin %q: %q", dir, "Command "+cmd+" ", firstLine(p.doc))
			}
		case !strings.HasPrefix(p.doc, "Package "+p.name+" "):
			t.Errorf("%s: the doc comment must begin %q: %q", dir, "Package "+p.name+" ", firstLine(p.doc))
		case !strings.Contains(p.doc, "never") && !strings.Contains(p.doc, "must not"):
			t.Errorf("package %s: the doc comment does not say what it must never do", p.name)
		}
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
