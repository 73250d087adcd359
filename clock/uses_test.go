package clock_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// Library code takes time from the injected Clock: these would tie it to
// the wall clock, so lifecycle tests could no longer run in virtual time.
var wallClock = map[string]bool{"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true,
	"AfterFunc": true, "Tick": true, "NewTicker": true, "NewTimer": true}

// TestLibraryUsesTheInjectedClock scans the module's library code (not
// tests, test infrastructure or example programs) for calls of package
// time's clock functions, and for a Clock's own WithTimeout or
// WithDeadline, whose contexts report a virtual deadline that network code
// would take for a wall-clock one (use clock.WithTimeout).
func TestLibraryUsesTheInjectedClock(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var scanned int
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch rel {
			case "internal/testenv", "examples", ".git", "testdata":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		scanned++
		timeName := ""
		for _, imp := range f.Imports {
			if imp.Path.Value == `"time"` {
				timeName = "time"
				if imp.Name != nil {
					timeName = imp.Name.Name
				}
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			x, isIdent := sel.X.(*ast.Ident)
			switch {
			case isIdent && timeName != "" && x.Name == timeName && wallClock[sel.Sel.Name]:
				t.Errorf("%s: time.%s: take time from the injected Clock", fset.Position(sel.Pos()), sel.Sel.Name)
			case (sel.Sel.Name == "WithTimeout" || sel.Sel.Name == "WithDeadline") && !(isIdent && (x.Name == "context" || x.Name == "clock")):
				t.Errorf("%s: %s on a Clock: use clock.WithTimeout, which reports no virtual deadline", fset.Position(sel.Pos()), sel.Sel.Name)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if scanned < 50 {
		t.Fatalf("scanned only %d files from %s", scanned, root)
	}
}
