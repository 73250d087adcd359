package session

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Store is the configuration database that keeps session records.
//
// Every method is safe for concurrent use, also by several Store values (in
// several processes) that share one database. A method that takes a session
// id returns an error matching ErrNotFound when no such session exists.
// Input that breaks the rules of this package gives an error matching
// ErrInvalid and changes nothing.
type Store interface {
	// Create records a new session and returns it as stored: ID filled in
	// when it was empty, times normalized. The session must be starting or
	// working, with a start time and no end time. An existing ID gives
	// ErrExists. Not idempotent: a retry after an unknown outcome may find
	// ErrExists when the first call did land.
	Create(ctx context.Context, s Session) (Session, error)

	// Update replaces the state, end time, counters and result of the session
	// with s.ID. The change must be allowed by CanTransition, else the error
	// is a *TransitionError; job, kind, parent and start cannot change. The
	// check and the write are atomic, so of two concurrent updates that end a
	// session only one succeeds. Repeating an update of a running session is
	// harmless.
	Update(ctx context.Context, s Session) error

	// Append adds e to the log of session id and returns it with its Seq: the
	// next number in that session's log, starting at 1, with no gaps and no
	// repeats under concurrent appends. Entries may be appended to ended
	// sessions too (a late diagnosis is not dropped). Not idempotent.
	Append(ctx context.Context, id string, e Entry) (Entry, error)

	// Get returns the session with the given id.
	Get(ctx context.Context, id string) (Session, error)

	// List returns one page of a job's sessions, newest first (by start time,
	// then id). Page.Next is empty on the last page, otherwise it is passed
	// back as Query.Cursor for the next one; a malformed cursor gives
	// ErrInvalidCursor. A job with no sessions gives an empty page, not an
	// error. Sessions created while paging may or may not appear.
	List(ctx context.Context, q Query) (Page, error)

	// Log returns up to limit entries of session id with Seq greater than
	// after, in Seq order. limit <= 0 means DefaultPageSize.
	Log(ctx context.Context, id string, after int64, limit int) ([]Entry, error)
}

// Paging limits for List and Log.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// Query selects sessions for Store.List.
type Query struct {
	Job    string // required
	Kind   Kind   // empty for both kinds
	Limit  int    // page size; <= 0 means DefaultPageSize, capped at MaxPageSize
	Cursor string // from the previous Page.Next; empty for the first page
}

// Page is one page of List results.
type Page struct {
	Sessions []Session
	Next     string // cursor for the following page; empty when there is none
}

// Check validates q and returns its page size, for Store implementations.
func (q Query) Check() (limit int, err error) {
	if q.Job == "" {
		return 0, invalid("query needs a job name")
	}
	if q.Kind != "" && !q.Kind.Valid() {
		return 0, invalid("unknown kind %q", q.Kind)
	}
	return PageSize(q.Limit), nil
}

// PageSize applies the default and the cap to a requested page size.
func PageSize(n int) int {
	switch {
	case n <= 0:
		return DefaultPageSize
	case n > MaxPageSize:
		return MaxPageSize
	}
	return n
}

// Cursor is the position after which the next page of List starts: the
// start time and id of the last session of the previous page.
type Cursor struct {
	Start time.Time
	ID    string
}

// CursorAfter returns the cursor that continues after s.
func CursorAfter(s Session) Cursor { return Cursor{Start: Normalize(s.Start), ID: s.ID} }

// String encodes the cursor as an opaque token for Page.Next.
func (c Cursor) String() string {
	raw := strconv.FormatInt(c.Start.UnixMicro(), 10) + ":" + c.ID
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// ParseCursor decodes a token made by Cursor.String.
func ParseCursor(token string) (Cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return Cursor{}, fmt.Errorf("%w: %v", ErrInvalidCursor, err)
	}
	micros, id, ok := strings.Cut(string(raw), ":")
	if !ok || id == "" {
		return Cursor{}, fmt.Errorf("%w: %q", ErrInvalidCursor, token)
	}
	us, err := strconv.ParseInt(micros, 10, 64)
	if err != nil {
		return Cursor{}, fmt.Errorf("%w: %q", ErrInvalidCursor, token)
	}
	return Cursor{Start: time.UnixMicro(us).UTC(), ID: id}, nil
}

// Before reports whether s sorts after the cursor in List order (newest
// first), that is, belongs on a later page.
func (c Cursor) Before(s Session) bool {
	st := Normalize(s.Start)
	return st.Before(c.Start) || st.Equal(c.Start) && s.ID < c.ID
}

// Latest returns the newest session of a job, of the given kind or of
// either kind when kind is empty. It returns ErrNotFound when the job has
// none.
func Latest(ctx context.Context, st Store, job string, kind Kind) (Session, error) {
	p, err := st.List(ctx, Query{Job: job, Kind: kind, Limit: 1})
	if err != nil {
		return Session{}, err
	}
	if len(p.Sessions) == 0 {
		return Session{}, fmt.Errorf("latest session of job %q: %w", job, ErrNotFound)
	}
	return p.Sessions[0], nil
}
