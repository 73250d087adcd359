package wal

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

func header(magic uint16, info uint16, tli uint32, addr uint64, sysid uint64, segSize uint32) []byte {
	b := make([]byte, LongHeaderSize)
	binary.LittleEndian.PutUint16(b[0:], magic)
	binary.LittleEndian.PutUint16(b[2:], info)
	binary.LittleEndian.PutUint32(b[4:], tli)
	binary.LittleEndian.PutUint64(b[8:], addr)
	binary.LittleEndian.PutUint64(b[24:], sysid)
	binary.LittleEndian.PutUint32(b[32:], segSize)
	return b
}

func TestCheckSegmentHeader(t *testing.T) {
	const seg, sys, v15 = 16 << 20, 7311571392434063147, 150018
	name := "000000020000000100000003"
	addr := uint64(1)<<32 + 3*seg
	good := header(0xD110, 2, 2, addr, sys, seg)
	require.NoError(t, CheckSegmentHeader(name, good, seg, sys, v15))
	require.NoError(t, CheckSegmentHeader(name+".partial", good, seg, sys, v15))
	require.NoError(t, CheckSegmentHeader("00000002.history", nil, seg, sys, v15), "text files are not checked")
	require.NoError(t, CheckSegmentHeader(name, header(0xD110, 2, 1, addr, sys, seg), seg, sys, v15),
		"a timeline's first segment begins with its parent's pages")

	tests := map[string][]byte{
		"magic":       header(0xD106, 2, 2, addr, sys, seg),
		"short":       header(0xD110, 0, 2, addr, sys, seg),
		"timeline":    header(0xD110, 2, 3, addr, sys, seg),
		"no timeline": header(0xD110, 2, 0, addr, sys, seg),
		"address":     header(0xD110, 2, 2, addr+seg, sys, seg),
		"sysid":       header(0xD110, 2, 2, addr, sys+1, seg),
		"segsize":     header(0xD110, 2, 2, addr, sys, seg*2),
		"length":      good[:20],
	}
	for what, b := range tests {
		require.ErrorIs(t, CheckSegmentHeader(name, b, seg, sys, v15), ErrBadSegment, what)
	}
	// Nothing is guessed for a release whose WAL this package does not
	// know, older or newer.
	for _, v := range []int{120022, 190000, 990000} {
		require.ErrorIs(t, CheckSegmentHeader(name, header(0xD118, 2, 2, addr, sys, seg), seg, sys, v), ErrBadSegment, "%d", v)
	}
	for v, magic := range map[int]uint16{130023: 0xD106, 140023: 0xD10D, 160014: 0xD113, 170010: 0xD116, 180004: 0xD118} {
		require.NoError(t, CheckSegmentHeader(name, header(magic, 2, 2, addr, sys, seg), seg, sys, v), "%d", v)
		require.ErrorIs(t, CheckSegmentHeader(name, header(magic+1, 2, 2, addr, sys, seg), seg, sys, v), ErrBadSegment, "%d", v)
	}
}

func FuzzCheckSegmentHeader(f *testing.F) {
	f.Add("000000010000000000000001", header(0xD110, 2, 1, 16<<20, 42, 16<<20))
	f.Fuzz(func(t *testing.T, name string, head []byte) {
		_ = CheckSegmentHeader(name, head, 16<<20, 42, 150000)
	})
}
