package wal

import (
	"bytes"
	"encoding/binary"
	"slices"
	"time"
)

// Summary is what a run of WAL holds, as a restore needs to know it without
// PostgreSQL: the span of valid records, the transactions that ended in it
// and when, and the named restore points. It is small and serialises to
// compact JSON with stable field names; Merge combines the summaries of
// consecutive runs.
type Summary struct {
	Timeline uint32 `json:"tli,omitzero"` // of the segments read (the latest, after Merge)

	First   LSN   `json:"first,omitzero"`   // start of the first valid record
	Last    LSN   `json:"last,omitzero"`    // start of the last valid record
	End     LSN   `json:"end,omitzero"`     // end of the last valid record (Record.End)
	Records int64 `json:"records,omitzero"` // valid records

	Commits int64 `json:"commits,omitzero"` // commit and commit-prepared records
	Aborts  int64 `json:"aborts,omitzero"`  // abort and abort-prepared records
	// FirstCommit and LastCommit are the earliest and latest commit
	// timestamps (xact_time; they need not be in LSN order).
	FirstCommit time.Time `json:"first_commit,omitzero"`
	LastCommit  time.Time `json:"last_commit,omitzero"`
	// MaxXID is the latest transaction id in records' xl_xid, in
	// PostgreSQL's circular order; 0 if none.
	MaxXID uint32 `json:"max_xid,omitzero"`

	RestorePoints []RestorePoint `json:"restore_points,omitempty"` // pg_create_restore_point, in WAL order

	// Stop, if set, is the first place where valid WAL ended before the
	// bytes did: zeroed or recycled space, a torn or corrupt record, a
	// truncated segment.
	Stop *Stop `json:"stop,omitempty"`
}

// RestorePoint is a named restore point, a target for recovery_target_name.
type RestorePoint struct {
	Name string    `json:"name"`
	LSN  LSN       `json:"lsn"`  // where its record starts
	End  LSN       `json:"end"`  // where its record ends: what pg_create_restore_point returned
	Time time.Time `json:"time"` // when it was created
}

// Stop says where valid WAL ended and why.
type Stop struct {
	LSN    LSN    `json:"lsn"`    // the record or page that is not valid
	Reason string `json:"reason"` // worded as PostgreSQL words it, where it has a word for it
}

// Merge returns the summary of the run s followed by the run next.
func (s Summary) Merge(next Summary) Summary {
	out := s
	if next.Timeline != 0 {
		out.Timeline = next.Timeline
	}
	if next.Records > 0 {
		if s.Records == 0 {
			out.First = next.First
		}
		out.Last, out.End = next.Last, next.End
	}
	out.Records += next.Records
	out.Commits += next.Commits
	out.Aborts += next.Aborts
	out.noteCommit(next.FirstCommit)
	out.noteCommit(next.LastCommit)
	out.noteXID(next.MaxXID)
	out.RestorePoints = slices.Concat(s.RestorePoints, next.RestorePoints)
	if out.Stop == nil && next.Stop != nil {
		stop := *next.Stop
		out.Stop = &stop
	} else if out.Stop != nil {
		stop := *out.Stop
		out.Stop = &stop
	}
	return out
}

func (s *Summary) noteCommit(t time.Time) {
	if t.IsZero() {
		return
	}
	if s.FirstCommit.IsZero() || t.Before(s.FirstCommit) {
		s.FirstCommit = t
	}
	if s.LastCommit.IsZero() || t.After(s.LastCommit) {
		s.LastCommit = t
	}
}

// firstNormalXID is FirstNormalTransactionId: 0 is invalid, 1 and 2 are
// bootstrap and frozen.
const firstNormalXID = 3

func (s *Summary) noteXID(xid uint32) {
	if xid < firstNormalXID {
		return
	}
	// TransactionIdFollows: xids compare modulo 2^32.
	if s.MaxXID == 0 || int32(xid-s.MaxXID) > 0 {
		s.MaxXID = xid
	}
}

// Opcodes (the high bits of xl_info) of the records a Summary reads
// (access/xact.h, catalog/pg_control.h).
const (
	xactOpMask         = 0x70
	xactCommit         = 0x00
	xactAbort          = 0x20
	xactCommitPrepared = 0x30
	xactAbortPrepared  = 0x40

	xlogRestorePoint = 0x70

	maxFNameLen      = 64              // MAXFNAMELEN
	restorePointSize = 8 + maxFNameLen // xl_restore_point
	pgEpochUnix      = 946684800       // 2000-01-01 00:00:00 UTC, where TimestampTz counts from
	minUnix          = -62135596800    // 0001-01-01: JSON cannot carry a time before
	maxUnix          = 253402300799    // 9999-12-31 23:59:59: nor after
	microsPerSecond  = int64(time.Second / time.Microsecond)
)

// add counts one valid record.
func (s *Summary) add(rec *Record) {
	if s.Records == 0 {
		s.First = rec.LSN
	}
	s.Records++
	s.Last, s.End = rec.LSN, rec.End
	s.noteXID(rec.XID)
	switch rec.Rmid {
	case RmgrXact:
		switch rec.Info & xactOpMask {
		case xactCommit, xactCommitPrepared:
			s.Commits++
			// xl_xact_commit starts with xact_time.
			if t, ok := timestampTz(rec.MainData); ok {
				s.noteCommit(t)
			}
		case xactAbort, xactAbortPrepared:
			s.Aborts++
		}
	case RmgrXLOG:
		if rec.Info&^0x0F == xlogRestorePoint && len(rec.MainData) >= restorePointSize {
			name := rec.MainData[8:restorePointSize]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			t, _ := timestampTz(rec.MainData)
			s.RestorePoints = append(s.RestorePoints, RestorePoint{Name: string(name), LSN: rec.LSN, End: rec.End, Time: t})
		}
	}
}

// timestampTz reads a TimestampTz, microseconds since 2000-01-01 UTC, from
// the first 8 bytes of b. Times JSON cannot carry (outside years 1 to
// 9999) are refused.
func timestampTz(b []byte) (time.Time, bool) {
	if len(b) < 8 {
		return time.Time{}, false
	}
	us := int64(binary.LittleEndian.Uint64(b))
	sec, frac := us/microsPerSecond, us%microsPerSecond
	if frac < 0 {
		sec, frac = sec-1, frac+microsPerSecond
	}
	sec += pgEpochUnix
	if sec < minUnix || sec > maxUnix {
		return time.Time{}, false
	}
	return time.Unix(sec, frac*int64(time.Microsecond)).UTC(), true
}
