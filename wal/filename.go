package wal

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrInvalidFileName is returned (wrapped) for a name that is not a WAL file
// PostgreSQL archives.
var ErrInvalidFileName = errors.New("invalid wal file name")

// Kind tells the files PostgreSQL archives apart.
type Kind int

const (
	Segment Kind = iota // 000000010000000000000003
	Partial             // 000000010000000000000003.partial: the last, incomplete segment of a timeline
	Backup              // 000000010000000000000003.00000028.backup: a base backup's history file
	History             // 00000002.history: how a timeline branched off
)

func (k Kind) String() string {
	return [...]string{"segment", "partial", "backup", "history"}[k]
}

// FileName is a parsed WAL file name.
type FileName struct {
	Kind     Kind
	Timeline uint32
	Log      uint32 // high 32 bits of the segment's position (unused for History)
	Seg      uint32 // segment number within Log, in units of the segment size
	Offset   uint32 // Backup only: where the backup started within the segment
}

// ParseFileName parses the name of a file PostgreSQL archives.
func ParseFileName(name string) (FileName, error) {
	bad := func() (FileName, error) { return FileName{}, fmt.Errorf("%w: %q", ErrInvalidFileName, name) }
	if stem, ok := strings.CutSuffix(name, ".history"); ok {
		tli, ok := hex32(stem)
		if !ok || tli == 0 {
			return bad()
		}
		return FileName{Kind: History, Timeline: tli}, nil
	}
	if len(name) < 24 {
		return bad()
	}
	tli, ok1 := hex32(name[:8])
	log, ok2 := hex32(name[8:16])
	seg, ok3 := hex32(name[16:24])
	if !ok1 || !ok2 || !ok3 || tli == 0 {
		return bad()
	}
	f := FileName{Kind: Segment, Timeline: tli, Log: log, Seg: seg}
	switch rest := name[24:]; {
	case rest == "":
	case rest == ".partial":
		f.Kind = Partial
	case len(rest) == len(".00000028.backup") && strings.HasPrefix(rest, ".") && strings.HasSuffix(rest, ".backup"):
		off, ok := hex32(rest[1:9])
		if !ok {
			return bad()
		}
		f.Kind, f.Offset = Backup, off
	default:
		return bad()
	}
	return f, nil
}

// hex32 parses exactly 8 upper-case hex digits, as PostgreSQL writes them.
func hex32(s string) (uint32, bool) {
	if len(s) != 8 {
		return 0, false
	}
	for i := 0; i < 8; i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'A' <= c && c <= 'F') {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 16, 32)
	return uint32(v), err == nil
}

// String formats the name the way PostgreSQL does.
func (f FileName) String() string {
	switch f.Kind {
	case History:
		return fmt.Sprintf("%08X.history", f.Timeline)
	case Partial:
		return fmt.Sprintf("%08X%08X%08X.partial", f.Timeline, f.Log, f.Seg)
	case Backup:
		return fmt.Sprintf("%08X%08X%08X.%08X.backup", f.Timeline, f.Log, f.Seg, f.Offset)
	}
	return fmt.Sprintf("%08X%08X%08X", f.Timeline, f.Log, f.Seg)
}

// SegmentsPerLog is how many segments of segSize make up one Log value
// (PostgreSQL's XLogSegmentsPerXLogId).
func SegmentsPerLog(segSize int64) uint64 { return 0x100000000 / uint64(segSize) }

// StartLSN is where the segment's WAL begins, for a segment size segSize.
func (f FileName) StartLSN(segSize int64) LSN {
	return LSN((uint64(f.Log)*SegmentsPerLog(segSize) + uint64(f.Seg)) * uint64(segSize))
}

// Next returns the following segment's name on the same timeline.
func (f FileName) Next(segSize int64) FileName {
	n := FileName{Kind: Segment, Timeline: f.Timeline, Log: f.Log, Seg: f.Seg + 1}
	if uint64(n.Seg) >= SegmentsPerLog(segSize) {
		n.Log, n.Seg = f.Log+1, 0
	}
	return n
}

// SegmentAt returns the segment of timeline tli that holds lsn.
func SegmentAt(tli uint32, lsn LSN, segSize int64) FileName {
	no := uint64(lsn) / uint64(segSize)
	per := SegmentsPerLog(segSize)
	return FileName{Kind: Segment, Timeline: tli, Log: uint32(no / per), Seg: uint32(no % per)}
}
