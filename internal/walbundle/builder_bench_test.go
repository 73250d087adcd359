package walbundle_test

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/internal/walbundle"
	"github.com/pglogship/pglogship/repository/bundle"
)

// BenchmarkBuild bundles 1 GiB of real WAL as the guest does when it
// ships directly: each file compressed, summed and summarized, the
// bundle summed as it is written.
func BenchmarkBuild(b *testing.B) {
	segs := testenv.WALCorpus(b, 64)
	b.SetBytes(64 * testenv.CorpusSegmentSize)
	for i := 0; i < b.N; i++ {
		h := sha256.New()
		bl, err := walbundle.New(io.MultiWriter(io.Discard, h), "x/y.bundle", nil, time.Now(), nil)
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range segs {
			f, err := os.Open(s)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := bl.Add(filepath.Base(s), bundle.Raw, f, nil); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
		res, err := bl.Close()
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Unknown) > 0 {
			b.Fatalf("unsummarized: %+v", res.Unknown[0])
		}
	}
}

// BenchmarkAddFiles is BenchmarkBuild through AddFiles, two files at once,
// with each codec.
func BenchmarkAddFiles(b *testing.B) {
	for _, c := range []struct {
		name  string
		codec bundle.Codec
	}{{"zstd", bundle.Zstd}, {"s2", bundle.S2}} {
		b.Run(c.name, func(b *testing.B) { benchmarkAddFiles(b, c.codec) })
	}
}

func benchmarkAddFiles(b *testing.B, codec bundle.Codec) {
	segs := testenv.WALCorpus(b, 64)
	b.SetBytes(64 * testenv.CorpusSegmentSize)
	names := make([]string, len(segs))
	for i, s := range segs {
		names[i] = filepath.Base(s)
	}
	dir := filepath.Dir(segs[0])
	open := func(n string) (io.ReadCloser, error) { return os.Open(filepath.Join(dir, n)) }
	for i := 0; i < b.N; i++ {
		bl, err := walbundle.New(io.Discard, "x/y.bundle", nil, time.Now(), nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := bl.AddFiles(context.Background(), names, open, 2, codec); err != nil {
			b.Fatal(err)
		}
		res, err := bl.Close()
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Unknown) > 0 || len(res.Files) != len(names) {
			b.Fatalf("%d files, unsummarized: %+v", len(res.Files), res.Unknown)
		}
	}
}
