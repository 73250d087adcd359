package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// FolderFiles reads every file of a folder (a guest's temporary WAL folder
// on this host), by name; dot files (being written) are left out.
func FolderFiles(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if e.IsDir() || e.Name()[0] == '.' {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		out[e.Name()] = b
	}
	return out
}
