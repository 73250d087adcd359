package guesttest_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/wal"
)

// The fake's segments read as WAL: one switch record each, chained from
// segment to segment, nothing stopping the reader.
func TestSegmentIsValidWAL(t *testing.T) {
	r, err := wal.NewReader(wal.ReaderConfig{})
	require.NoError(t, err)
	f := wal.FileName{Kind: wal.Segment, Timeline: 1, Log: 0, Seg: 1}
	for i := 0; i < 3; i++ {
		require.NoError(t, r.BeginSegment(f.String()))
		_, err := r.Write(guesttest.Segment(f, 16<<20, 42, 150018, []byte("payload")))
		require.NoError(t, err)
		sum, err := r.EndSegment()
		require.NoError(t, err)
		assert.Nil(t, sum.Stop, "segment %s", f)
		assert.Equal(t, int64(1), sum.Records)
		f = f.Next(16 << 20)
	}
}
