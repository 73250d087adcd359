// Package memory is a session.Store that keeps records in process memory.
// It also implements session.Leaser, for the leases and wanted job states of
// one process (or of tests that run several runners in one process),
// session.Roster, for the runners of one process, and session.Pinner, for
// the restores of one process.
//
// It is complete and safe for concurrent use, and forgets everything when the
// process exits: use it for tests, demos and host programs that keep no
// history. session/postgres keeps records across restarts and processes.
package memory

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/pglogship/pglogship/session"
)

var (
	_ session.Store  = (*Store)(nil)
	_ session.Fencer = (*Store)(nil)
)

// Store is an in-memory session.Store. The zero value is not usable; call New.
type Store struct {
	mu       sync.Mutex
	sessions map[string]*record
	leases   map[string]*leaseRow              // by job
	enabled  map[string]bool                   // by job
	pins     map[string]map[string]session.Pin // by job, then id
	roster   map[string]time.Time              // announcements by holder
}

type record struct {
	s   session.Session
	log []session.Entry
}

// New returns an empty store.
func New() *Store {
	return &Store{sessions: make(map[string]*record), leases: make(map[string]*leaseRow), enabled: make(map[string]bool),
		pins: make(map[string]map[string]session.Pin), roster: make(map[string]time.Time)}
}

// Create implements session.Store.
func (m *Store) Create(ctx context.Context, s session.Session) (session.Session, error) {
	return m.create(ctx, s, nil)
}

// Update implements session.Store.
func (m *Store) Update(ctx context.Context, s session.Session) error { return m.update(ctx, s, nil) }

// Append implements session.Store.
func (m *Store) Append(ctx context.Context, id string, e session.Entry) (session.Entry, error) {
	return m.append(ctx, id, e, nil)
}

// create, update and append write when fence is nil or still its job's
// lease, checked under the same lock as the write.
func (m *Store) create(ctx context.Context, s session.Session, fence *session.Lease) (session.Session, error) {
	if err := ctx.Err(); err != nil {
		return session.Session{}, err
	}
	if err := session.ValidateNew(s); err != nil {
		return session.Session{}, err
	}
	if s.ID == "" {
		s.ID = session.NewID()
	}
	s = normalize(s)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.holds(fence); err != nil {
		return session.Session{}, fmt.Errorf("create session %s: %w", s.ID, err)
	}
	if _, ok := m.sessions[s.ID]; ok {
		return session.Session{}, fmt.Errorf("create session %s: %w", s.ID, session.ErrExists)
	}
	m.sessions[s.ID] = &record{s: s}
	return normalize(s), nil
}

func (m *Store) update(ctx context.Context, s session.Session, fence *session.Lease) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.holds(fence); err != nil {
		return fmt.Errorf("update session %s: %w", s.ID, err)
	}
	r, ok := m.sessions[s.ID]
	if !ok {
		return fmt.Errorf("update session %s: %w", s.ID, session.ErrNotFound)
	}
	if err := session.ValidateUpdate(r.s, s); err != nil {
		return err
	}
	r.s = normalize(s)
	return nil
}

func (m *Store) append(ctx context.Context, id string, e session.Entry, fence *session.Lease) (session.Entry, error) {
	if err := ctx.Err(); err != nil {
		return session.Entry{}, err
	}
	if err := session.ValidateEntry(e); err != nil {
		return session.Entry{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.holds(fence); err != nil {
		return session.Entry{}, fmt.Errorf("append to session %s: %w", id, err)
	}
	r, ok := m.sessions[id]
	if !ok {
		return session.Entry{}, fmt.Errorf("append to session %s: %w", id, session.ErrNotFound)
	}
	e.Seq = int64(len(r.log)) + 1
	e.Time = session.Normalize(e.Time)
	r.log = append(r.log, e)
	return e, nil
}

// Get implements session.Store.
func (m *Store) Get(ctx context.Context, id string) (session.Session, error) {
	if err := ctx.Err(); err != nil {
		return session.Session{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.sessions[id]
	if !ok {
		return session.Session{}, fmt.Errorf("get session %s: %w", id, session.ErrNotFound)
	}
	return normalize(r.s), nil
}

// List implements session.Store.
func (m *Store) List(ctx context.Context, q session.Query) (session.Page, error) {
	if err := ctx.Err(); err != nil {
		return session.Page{}, err
	}
	limit, err := q.Check()
	if err != nil {
		return session.Page{}, err
	}
	var after *session.Cursor
	if q.Cursor != "" {
		c, err := session.ParseCursor(q.Cursor)
		if err != nil {
			return session.Page{}, err
		}
		after = &c
	}
	m.mu.Lock()
	var matches []session.Session
	for _, r := range m.sessions {
		if r.s.Job != q.Job || q.Kind != "" && r.s.Kind != q.Kind {
			continue
		}
		if after != nil && !after.Before(r.s) {
			continue
		}
		matches = append(matches, normalize(r.s))
	}
	m.mu.Unlock()
	slices.SortFunc(matches, newestFirst)
	var p session.Page
	if len(matches) > limit {
		matches = matches[:limit]
		p.Next = session.CursorAfter(matches[limit-1]).String()
	}
	p.Sessions = matches
	return p, nil
}

func newestFirst(a, b session.Session) int {
	if c := b.Start.Compare(a.Start); c != 0 {
		return c
	}
	switch {
	case a.ID > b.ID:
		return -1
	case a.ID < b.ID:
		return 1
	}
	return 0
}

// Log implements session.Store.
func (m *Store) Log(ctx context.Context, id string, after int64, limit int) ([]session.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	limit = session.PageSize(limit)
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.sessions[id]
	if !ok {
		return nil, fmt.Errorf("log of session %s: %w", id, session.ErrNotFound)
	}
	// Seq n lives at index n-1.
	start := max(after, 0)
	if start >= int64(len(r.log)) {
		return []session.Entry{}, nil
	}
	end := min(start+int64(limit), int64(len(r.log)))
	return slices.Clone(r.log[start:end]), nil
}

// normalize returns s as the store keeps it: times normalized, and a copy
// of its slices, so neither the caller's nor a reader's changes reach it.
func normalize(s session.Session) session.Session {
	s.Start = session.Normalize(s.Start)
	s.End = session.Normalize(s.End)
	s.Counters.Instances = slices.Clone(s.Counters.Instances)
	return s
}
