package bundle

import (
	"context"
	"fmt"
	"io"
	"sort"
)

// Verify reads a stored bundle back completely and checks that it holds
// exactly the files in want, each with the SHA-256 its sender computed. It is
// the read-back that must succeed before shipped WAL may be deleted at its
// source.
func Verify(ctx context.Context, src Getter, name string, size int64, key *Key, want map[string][32]byte) error {
	r, err := Open(ctx, src, name, size, key)
	if err != nil {
		return err
	}
	entries := r.Entries()
	if len(entries) != len(want) {
		names := make([]string, 0, len(entries))
		for _, e := range entries {
			names = append(names, e.Name)
		}
		sort.Strings(names)
		return fmt.Errorf("verify bundle %s: holds %d files %v, want %d", name, len(entries), names, len(want))
	}
	for _, e := range entries {
		sum, ok := want[e.Name]
		if !ok {
			return fmt.Errorf("verify bundle %s: unexpected file %s", name, e.Name)
		}
		if sum != e.SHA256 {
			return &CorruptError{Bundle: name, File: e.Name, Reason: "sha256 differs from the sender's"}
		}
		if _, err := r.WriteFile(ctx, e.Name, io.Discard); err != nil {
			return err
		}
	}
	return nil
}
