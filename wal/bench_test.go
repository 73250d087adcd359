package wal_test

import (
	"bytes"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/wal"
)

// BenchmarkReader is what scanning costs the shipping path: the Reader over
// real pgbench WAL (testenv.WALCorpus: 64 segments, generated once and
// cached), from memory (the Reader alone) and from files (as bundling reads
// them, from the page cache), and for reference a bare CRC-32C pass over
// the same bytes, whole segments at a time.
func BenchmarkReader(b *testing.B) {
	paths := testenv.WALCorpus(b, 64)
	const inMemory = 8
	segs := make([][]byte, inMemory)
	for i := range segs {
		var err error
		segs[i], err = os.ReadFile(paths[i])
		require.NoError(b, err)
	}
	b.Run("memory", func(b *testing.B) {
		b.SetBytes(int64(inMemory * testenv.CorpusSegmentSize))
		b.ReportAllocs()
		var records int64
		for b.Loop() {
			r, err := wal.NewReader(wal.ReaderConfig{})
			require.NoError(b, err)
			for i, seg := range segs {
				_, err := r.Feed(filepath.Base(paths[i]), bytes.NewReader(seg))
				require.NoError(b, err)
			}
			records = r.Summary().Records
		}
		b.ReportMetric(float64(records), "records/op")
	})
	b.Run("files", func(b *testing.B) {
		size, err := testenv.RawSize(paths)
		require.NoError(b, err)
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			r, err := wal.NewReader(wal.ReaderConfig{})
			require.NoError(b, err)
			for _, p := range paths {
				f, err := os.Open(p)
				require.NoError(b, err)
				sum, err := r.Feed(filepath.Base(p), f)
				f.Close()
				require.NoError(b, err)
				require.Nil(b, sum.Stop)
			}
		}
	})
	b.Run("crc32c-only", func(b *testing.B) {
		b.SetBytes(int64(inMemory * testenv.CorpusSegmentSize))
		table := crc32.MakeTable(crc32.Castagnoli)
		for b.Loop() {
			for _, seg := range segs {
				crc32.Update(0, table, seg)
			}
		}
	})
}
