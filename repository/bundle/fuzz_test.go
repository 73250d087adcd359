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

// FuzzFrame wraps arbitrary bytes as the only frame of an otherwise valid
// bundle (header, index and trailer checksums correct), so the fuzzer
// reaches the frame and chunk parser instead of stopping at the trailer.
func FuzzFrame(f *testing.F) {
	valid := write(f, []file{{segName(1), walLike(1, 3000)}}, nil, bundle.Raw)
	r, err := bundle.Open(context.Background(), store(f, valid), "b", int64(len(valid)), nil)
	require.NoError(f, err)
	e := r.Entries()[0]
	f.Add(valid[e.Offset:e.Offset+e.Length], e.RawSize)
	f.Add([]byte("FRM1\x01\x00\x01x"), int64(0))
	f.Fuzz(func(t *testing.T, frame []byte, rawSize int64) {
		if len(frame) == 0 || rawSize < 0 {
			return
		}
		data := bundle.Assemble(frame, segName(1), rawSize, e.Sum)
		r, err := bundle.Open(context.Background(), store(t, data), "b", int64(len(data)), nil)
		require.NoError(t, err, "the harness builds a valid envelope")
		_, _ = r.WriteFile(context.Background(), segName(1), io.Discard)
	})
}
