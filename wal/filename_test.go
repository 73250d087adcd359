package wal

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseFileName(t *testing.T) {
	tests := []struct {
		in   string
		want FileName
	}{
		{"000000010000000000000003", FileName{Kind: Segment, Timeline: 1, Seg: 3}},
		{"0000000200000001000000FF", FileName{Kind: Segment, Timeline: 2, Log: 1, Seg: 0xFF}},
		{"000000010000000000000003.partial", FileName{Kind: Partial, Timeline: 1, Seg: 3}},
		{"000000010000000000000002.00000028.backup", FileName{Kind: Backup, Timeline: 1, Seg: 2, Offset: 0x28}},
		{"00000002.history", FileName{Kind: History, Timeline: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseFileName(tt.in)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.in, got.String())
		})
	}
	for _, bad := range []string{"", "00000001", "00000000.history", "000000000000000000000003", "00000001000000000000000g",
		"000000010000000000000003.part", "000000010000000000000003x", "00000001000000000000003", "0000000100000000000000030",
		"000000010000000000000002.0000028.backup", "000000010000000000000002.00000028.backupX", "archive_status", ".tmp.x",
		"000000010000000000000003.partial.tmp", "0000000100000000000000aa"} {
		_, err := ParseFileName(bad)
		require.ErrorIs(t, err, ErrInvalidFileName, "%q", bad)
	}
}

func TestSegmentArithmetic(t *testing.T) {
	const seg16 = 16 << 20
	f, err := ParseFileName("0000000100000000000000FF")
	require.NoError(t, err)
	assert.Equal(t, "000000010000000100000000", f.Next(seg16).String(), "0xFF is the last 16 MiB segment of a log")
	assert.Equal(t, LSN(0xFF000000), f.StartLSN(seg16))
	g, _ := ParseFileName("000000010000000100000000")
	assert.Equal(t, LSN(1<<32), g.StartLSN(seg16))
	assert.Equal(t, uint64(4096), SegmentsPerLog(1<<20))
}

func FuzzParseFileName(f *testing.F) {
	for _, s := range []string{"000000010000000000000003", "00000002.history", "000000010000000000000002.00000028.backup", "000000010000000000000003.partial"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fn, err := ParseFileName(s)
		if err != nil {
			return
		}
		require.Equal(t, s, fn.String(), "parse and format agree")
	})
}

func TestSegmentAt(t *testing.T) {
	const seg16 = 16 << 20
	for _, c := range []struct {
		lsn  LSN
		size int64
		want string
	}{
		{0x1000000, seg16, "000000010000000000000001"},
		{0x1FFFFFF, seg16, "000000010000000000000001"},
		{0x1_FF000028, seg16, "0000000100000001000000FF"},
		{0x2_00000000, seg16, "000000010000000200000000"},
		{0x3000028, 1 << 30, "000000010000000000000000"},
	} {
		f := SegmentAt(1, c.lsn, c.size)
		require.Equal(t, c.want, f.String(), "%s", c.lsn)
		require.LessOrEqual(t, f.StartLSN(c.size), c.lsn)
		require.Greater(t, f.Next(c.size).StartLSN(c.size), c.lsn)
	}
}
