package session

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/pglogship/pglogship/wal"
)

// Kind tells parent sessions (image backups) from child sessions (WAL
// shipping) and restore sessions (restores, drills, exports).
type Kind string

const (
	KindParent  Kind = "parent"
	KindChild   Kind = "child"
	KindRestore Kind = "restore"
)

// Valid reports whether k is one of the defined kinds.
func (k Kind) Valid() bool { return k == KindParent || k == KindChild || k == KindRestore }

// State is where a session is in its life.
type State string

const (
	StateStarting State = "starting" // created, runtime or snapshot being prepared
	StateWorking  State = "working"  // running
	StateSuccess  State = "success"  // ended, nothing to report
	StateWarning  State = "warning"  // ended, with warnings in its log
	StateFailed   State = "failed"   // ended, did not do its work
	StateStopped  State = "stopped"  // ended early on request (job disabled, host shutting down)
)

// Valid reports whether s is one of the defined states.
func (s State) Valid() bool {
	switch s {
	case StateStarting, StateWorking, StateSuccess, StateWarning, StateFailed, StateStopped:
		return true
	}
	return false
}

// Final reports whether s ends a session.
func (s State) Final() bool {
	switch s {
	case StateSuccess, StateWarning, StateFailed, StateStopped:
		return true
	}
	return false
}

// CanTransition reports whether a session in state from may be updated to
// state to. A running session may stay where it is (to update its counters),
// move from Starting to Working, or end; a finished session never changes.
func CanTransition(from, to State) bool {
	if !from.Valid() || !to.Valid() || from.Final() {
		return false
	}
	switch to {
	case StateStarting:
		return from == StateStarting
	case StateWorking:
		return true // from Starting or Working
	default:
		return to.Final()
	}
}

// Severity grades a log entry.
type Severity string

const (
	SeverityInfo    Severity = "info"
	SeverityWarning Severity = "warning"
	SeverityError   Severity = "error"
)

// Valid reports whether v is one of the defined severities.
func (v Severity) Valid() bool {
	return v == SeverityInfo || v == SeverityWarning || v == SeverityError
}

// Counters sum up what a session did. For a child session they describe the
// WAL it shipped; a parent session uses Files and Bytes for its image.
type Counters struct {
	Files        int64   // files shipped or written
	Bytes        int64   // their size before compression
	FirstSegment string  // first WAL segment shipped, e.g. 000000010000000000000003
	LastSegment  string  // last WAL segment shipped
	FirstLSN     wal.LSN // start of the WAL range covered
	LastLSN      wal.LSN // end of the WAL range covered
	// Instances are a child session's counters per PostgreSQL instance,
	// one for each instance it protects; the fields above sum them up.
	// At most MaxInstances.
	Instances []InstanceCounters
}

// InstanceCounters are what a child session shipped of one instance.
type InstanceCounters struct {
	Machine string `json:"machine"`
	// DataDir names the instance when its machine has several; empty for
	// a machine's only instance.
	DataDir      string  `json:"data_dir,omitempty"`
	SystemID     uint64  `json:"system_id,string,omitempty"` // 0 until the instance was reached
	Files        int64   `json:"files"`
	Bytes        int64   `json:"bytes"`
	FirstSegment string  `json:"first_segment,omitempty"`
	LastSegment  string  `json:"last_segment,omitempty"`
	FirstLSN     wal.LSN `json:"first_lsn"`
	LastLSN      wal.LSN `json:"last_lsn"`
}

// MaxInstances is the most per-instance counters a session keeps.
const MaxInstances = 10000

// Session is one run of a parent or child job.
//
// Times are kept at microsecond precision and in UTC: stores truncate them,
// as PostgreSQL's timestamptz does.
type Session struct {
	ID       string // unique; assigned by Store.Create when empty
	Job      string // the name of the job that ran it, e.g. "Daily DB Job PostgreSQL Log Backup"
	Kind     Kind
	ParentID string // for a child session: the parent session it follows, if any
	State    State
	Start    time.Time
	End      time.Time // zero while the session runs
	Counters Counters
	Result   string // one line for operators: why it failed or was stopped
}

// Entry is one line of a session's log.
type Entry struct {
	Seq      int64 // 1, 2, 3... within a session, assigned by Store.Append
	Time     time.Time
	Severity Severity
	Message  string
}

// Limits on free-text fields, so one bad caller cannot bloat the database.
const (
	MaxNameLen    = 512
	MaxMessageLen = 64 << 10
)

// NewID returns a random session id (128 bits, hex).
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// Normalize returns t truncated to microseconds and in UTC: the form a Store
// returns. The zero time stays zero.
func Normalize(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Round(0).Truncate(time.Microsecond).UTC()
}

// ValidateNew checks a session about to be created. Stores call it so every
// implementation refuses the same input.
func ValidateNew(s Session) error {
	if err := ValidateJobName(s.Job); err != nil {
		return err
	}
	switch {
	case !s.Kind.Valid():
		return invalid("unknown kind %q", s.Kind)
	case s.Kind == KindParent && s.ParentID != "":
		return invalid("a parent session has no parent")
	case s.State != StateStarting && s.State != StateWorking:
		return invalid("a new session must be starting or working, not %q", s.State)
	case s.Start.IsZero():
		return invalid("start time is required")
	case !s.End.IsZero():
		return invalid("a new session has no end time")
	case len(s.ID) > MaxNameLen || len(s.ParentID) > MaxNameLen:
		return invalid("ids are at most %d bytes", MaxNameLen)
	}
	return validateCommon(s)
}

// ValidateUpdate checks that cur may be replaced by next. Job, kind, parent
// and start never change; the state must follow CanTransition; an ended
// session has an end time not before its start.
func ValidateUpdate(cur, next Session) error {
	switch {
	case next.Job != cur.Job || next.Kind != cur.Kind || next.ParentID != cur.ParentID:
		return invalid("job, kind and parent of session %s cannot change", cur.ID)
	case !Normalize(next.Start).Equal(Normalize(cur.Start)):
		return invalid("start time of session %s cannot change", cur.ID)
	case !CanTransition(cur.State, next.State):
		return &TransitionError{ID: cur.ID, From: cur.State, To: next.State}
	case next.State.Final() && next.End.IsZero():
		return invalid("an ended session needs an end time")
	case !next.State.Final() && !next.End.IsZero():
		return invalid("a running session has no end time")
	case next.State.Final() && next.End.Before(next.Start):
		return invalid("end time is before start time")
	}
	return validateCommon(next)
}

func validateCommon(s Session) error {
	c := s.Counters
	switch {
	case c.Files < 0 || c.Bytes < 0:
		return invalid("counters cannot be negative")
	case len(c.FirstSegment) > MaxNameLen || len(c.LastSegment) > MaxNameLen:
		return invalid("segment names are at most %d bytes", MaxNameLen)
	case len(s.Result) > MaxMessageLen:
		return invalid("result is at most %d bytes", MaxMessageLen)
	case len(c.Instances) > MaxInstances:
		return invalid("at most %d instances' counters", MaxInstances)
	}
	for _, ic := range c.Instances {
		switch {
		case ic.Files < 0 || ic.Bytes < 0:
			return invalid("counters cannot be negative")
		case ic.Machine == "" || len(ic.Machine) > MaxNameLen || len(ic.DataDir) > MaxNameLen:
			return invalid("an instance's machine is 1 to %d bytes, its data directory at most that", MaxNameLen)
		case len(ic.FirstSegment) > MaxNameLen || len(ic.LastSegment) > MaxNameLen:
			return invalid("segment names are at most %d bytes", MaxNameLen)
		}
	}
	return nil
}

// ValidateEntry checks a log entry about to be appended.
func ValidateEntry(e Entry) error {
	switch {
	case !e.Severity.Valid():
		return invalid("unknown severity %q", e.Severity)
	case e.Time.IsZero():
		return invalid("entry time is required")
	case len(e.Message) > MaxMessageLen:
		return invalid("message is at most %d bytes", MaxMessageLen)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Errors returned (possibly wrapped) by every Store.
var (
	ErrNotFound          = errors.New("session not found")
	ErrExists            = errors.New("session already exists")
	ErrInvalid           = errors.New("invalid session")
	ErrInvalidTransition = errors.New("invalid session state transition")
	ErrInvalidCursor     = errors.New("invalid page cursor")
)

// TransitionError reports a refused state change. It matches
// ErrInvalidTransition with errors.Is.
type TransitionError struct {
	ID       string
	From, To State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("session %s: cannot go from %s to %s", e.ID, e.From, e.To)
}

// Is makes errors.Is(err, ErrInvalidTransition) true.
func (e *TransitionError) Is(target error) bool { return target == ErrInvalidTransition }
