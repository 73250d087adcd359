package walbundle_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/walbundle"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/repository/memory"
)

// AddFiles bundles files in the order given, whatever order its workers
// finish in, byte-identical, with either codec; a file that cannot be
// read fails it, and a codec that does not compress is refused.
func TestAddFiles(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	files := map[string][]byte{}
	var names []string
	for i := 0; i < 9; i++ {
		name := fmt.Sprintf("%08X.history", i+2) // not segments: no summaries
		b := make([]byte, rng.IntN(3<<20))
		for j := range b {
			b[j] = byte(rng.IntN(7))
		}
		files[name] = b
		names = append(names, name)
	}
	open := func(n string) (io.ReadCloser, error) {
		if n == "broken" {
			return nil, errors.New("cannot open broken")
		}
		time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond) // workers finish out of order
		return io.NopCloser(bytes.NewReader(files[n])), nil
	}
	for _, run := range []struct {
		workers int
		codec   bundle.Codec
	}{{1, bundle.Zstd}, {2, bundle.Zstd}, {4, bundle.Zstd}, {1, bundle.S2}, {2, bundle.S2}} {
		workers := run.workers
		var buf bytes.Buffer
		b, err := walbundle.New(&buf, "b", nil, time.Now(), nil)
		require.NoError(t, err)
		require.NoError(t, b.AddFiles(ctx, names, open, workers, run.codec))
		res, err := b.Close()
		require.NoError(t, err)
		require.Len(t, res.Files, len(names))
		repo := memory.New()
		require.NoError(t, repo.Put(ctx, "b", bytes.NewReader(buf.Bytes())))
		r, err := bundle.Open(ctx, repo, "b", int64(buf.Len()), nil)
		require.NoError(t, err)
		for i, e := range r.Entries() {
			require.Equal(t, names[i], e.Name, "in the order given")
			require.Equal(t, run.codec, e.Codec)
			require.Equal(t, checksum.Of(checksum.XXH3, files[e.Name]), res.Files[i].Sum)
			require.Equal(t, res.Files[i].Sum, e.Sum, "the index holds the guest's XXH3")
			var out bytes.Buffer
			_, err := r.WriteFile(ctx, e.Name, &out)
			require.NoError(t, err)
			require.True(t, bytes.Equal(files[e.Name], out.Bytes()), e.Name)
		}
	}
	b, err := walbundle.New(io.Discard, "b", nil, time.Now(), nil)
	require.NoError(t, err)
	err = b.AddFiles(ctx, append(append(names[:3:3], "broken"), names[3:]...), open, 2, bundle.S2)
	require.ErrorContains(t, err, "cannot open broken")
	b, err = walbundle.New(io.Discard, "b", nil, time.Now(), nil)
	require.NoError(t, err)
	require.ErrorContains(t, b.AddFiles(ctx, names, open, 2, bundle.Raw), "not a compressed one")
}

// A segment whose WAL cannot be read (a page magic no release writes) is
// bundled as it is and reported unknown with the reason, on the path the
// guest builds bundles by (direct shipping and the runtime's stream),
// never summarized as empty.
func TestUnreadableSegmentIsUnknown(t *testing.T) {
	ctx := context.Background()
	seg := bytes.Repeat([]byte("no"), 8<<20) // 16 MiB, page magic 0x6F6E
	name := "000000010000000000000003"
	open := func(string) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(seg)), nil }
	for _, codec := range []bundle.Codec{bundle.Zstd, bundle.S2} {
		b, err := walbundle.New(io.Discard, "b", nil, time.Now(), nil)
		require.NoError(t, err)
		require.NoError(t, b.AddFiles(ctx, []string{name}, open, 2, codec))
		res, err := b.Close()
		require.NoError(t, err)
		require.Len(t, res.Files, 1, "bundled all the same")
		require.Len(t, res.Unknown, 1)
		require.Equal(t, name, res.Unknown[0].Segment)
		require.Contains(t, res.Unknown[0].Reason, "magic")
	}
}
