package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrBadSegment is returned (wrapped) when a segment's content does not
// match its name or its cluster.
var ErrBadSegment = errors.New("wal segment does not match its name")

// pageMagic is XLOG_PAGE_MAGIC by major version: the first two bytes of
// every WAL page. It is the list of supported releases: a release whose
// WAL this package has not been checked against has no entry, and is
// refused rather than guessed at.
var pageMagic = map[int]uint16{13: 0xD106, 14: 0xD10D, 15: 0xD110, 16: 0xD113, 17: 0xD116, 18: 0xD118}

// Oldest and newest PostgreSQL major releases whose WAL this package knows.
const (
	OldestMajor = 13
	NewestMajor = 18
)

// PageMagic returns XLOG_PAGE_MAGIC for a server_version_num.
func PageMagic(serverVersion int) (uint16, bool) {
	m, ok := pageMagic[serverVersion/10000]
	return m, ok
}

// LongHeaderSize is how many bytes of a segment CheckSegmentHeader reads.
const LongHeaderSize = 40

const xlpLongHeader = 0x0002

// CheckSegmentHeader checks the long page header that starts every segment
// (and .partial file) against the file's name and its cluster: page magic
// of the server's version, the long-header flag, the timeline (the name's
// or, in a timeline's first segment, an earlier one), the page
// address, the system identifier and the segment size. Other file kinds
// pass unchecked.
func CheckSegmentHeader(name string, head []byte, segSize int64, systemID uint64, serverVersion int) error {
	f, err := ParseFileName(name)
	if err != nil {
		return err
	}
	if f.Kind != Segment && f.Kind != Partial {
		return nil
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadSegment, name, fmt.Sprintf(format, args...))
	}
	if len(head) < LongHeaderSize {
		return bad("shorter than a page header")
	}
	magic := binary.LittleEndian.Uint16(head[0:])
	want, ok := PageMagic(serverVersion)
	switch {
	case !ok:
		return bad("server version %d: PostgreSQL %d to %d are supported", serverVersion, OldestMajor, NewestMajor)
	case magic != want:
		return bad("page magic %#04x, want %#04x for server version %d", magic, want, serverVersion)
	}
	if info := binary.LittleEndian.Uint16(head[2:]); info&xlpLongHeader == 0 {
		return bad("first page has no long header")
	}
	// The first segment of a new timeline starts with the old timeline's
	// pages up to the switch point, so an earlier timeline is fine.
	if tli := binary.LittleEndian.Uint32(head[4:]); tli == 0 || tli > f.Timeline {
		return bad("page timeline %d, name says %d", tli, f.Timeline)
	}
	if addr, want := LSN(binary.LittleEndian.Uint64(head[8:])), f.StartLSN(segSize); addr != want {
		return bad("page address %s, name says %s", addr, want)
	}
	if sys := binary.LittleEndian.Uint64(head[24:]); sys != systemID {
		return bad("system identifier %d, this cluster is %d", sys, systemID)
	}
	if size := binary.LittleEndian.Uint32(head[32:]); int64(size) != segSize {
		return bad("segment size %d, want %d", size, segSize)
	}
	return nil
}
