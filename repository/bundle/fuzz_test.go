package bundle_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/memory"
)

// FuzzReader feeds arbitrary bytes to the reader: it must return an error
// or verified content, never panic, hang or allocate without bound.
func FuzzReader(f *testing.F) {
	f.Add(write(f, []file{{segName(1), walLike(1, 2000)}, {segName(2), nil}}, nil, bundle.Raw), false)
	f.Add(write(f, []file{{segName(1), walLike(1, 2000)}}, key(f, 5), bundle.Raw), true)
	f.Add([]byte("PGLSBNDL"), false)
	f.Fuzz(func(t *testing.T, data []byte, encrypted bool) {
		var k *bundle.Key
		if encrypted {
			k = key(t, 5)
		}
		repo := memory.New()
		require.NoError(t, repo.Put(context.Background(), "b", bytes.NewReader(data)))
		r, err := bundle.Open(context.Background(), repo, "b", int64(len(data)), k)
		if err != nil {
			return
		}
		for _, e := range r.Entries() {
			got, err := r.WriteFile(context.Background(), e.Name, io.Discard)
			if err == nil {
				require.Equal(t, e, got)
			}
		}
	})
}
