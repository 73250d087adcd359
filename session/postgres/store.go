package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/wal"
)

var (
	_ session.Store  = (*Store)(nil)
	_ session.Fencer = (*Store)(nil)
)

// DefaultSchema is the PostgreSQL schema that holds the tables when
// Config.Schema is empty.
const DefaultSchema = "pglogship"

// Config configures Open.
type Config struct {
	// ConnString locates the configuration database, as a URL
	// (postgres://...) or key=value pairs. Required.
	ConnString string
	// Schema holds pglogship's tables; created when missing. Lower-case
	// letters, digits and underscores, starting with a letter or underscore.
	Schema string
	// MaxConns caps the pool; 0 keeps pgx's default.
	MaxConns int32
	// Logger receives migration notices; nil means slog.Default().
	Logger *slog.Logger
}

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Store is a session.Store in PostgreSQL. Its methods are safe for
// concurrent use. Close it when done.
type Store struct {
	pool   *pgxpool.Pool
	db     pooled // the pool, sending a statement again after a dead connection
	schema string // quoted
}

// Open connects to the database, checks it answers within ctx, and creates
// or migrates the schema. A database migrated by a newer release gives
// ErrSchemaTooNew.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.ConnString == "" {
		return nil, errors.New("open session store: connection string is required")
	}
	if cfg.Schema == "" {
		cfg.Schema = DefaultSchema
	}
	if !schemaName.MatchString(cfg.Schema) {
		return nil, fmt.Errorf("open session store: invalid schema name %q", cfg.Schema)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	pc, err := pgxpool.ParseConfig(cfg.ConnString)
	if err != nil {
		// pgx's parse errors can quote the string, password included.
		return nil, errors.New("open session store: cannot parse connection string")
	}
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open session store: %w", err)
	}
	s := &Store{pool: pool, db: pooled{pool}, schema: pgx.Identifier{cfg.Schema}.Sanitize()}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return migrate(ctx, tx, cfg.Schema) })
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open session store: %w", err)
	}
	cfg.Logger.Debug("session store ready", "schema", cfg.Schema, "version", SchemaVersion)
	return s, nil
}

// Close closes the pool, waiting for connections in use to be returned. It
// is safe to call more than once.
func (s *Store) Close() { s.pool.Close() }

// table returns the quoted, schema-qualified name of a table.
func (s *Store) table(name string) string { return s.schema + "." + name }

const columns = `id, job, kind, parent_id, state, start_time, end_time, files, bytes,
	first_segment, last_segment, first_lsn::text, last_lsn::text, result, instances`

func scanSession(row pgx.Row) (session.Session, error) {
	var (
		x         session.Session
		end       *time.Time
		firstLSN  string
		lastLSN   string
		kind, st  string
		firstSeg  string
		lastSeg   string
		files, by int64
		instances []byte
	)
	err := row.Scan(&x.ID, &x.Job, &kind, &x.ParentID, &st, &x.Start, &end, &files, &by,
		&firstSeg, &lastSeg, &firstLSN, &lastLSN, &x.Result, &instances)
	if err != nil {
		return session.Session{}, err
	}
	x.Kind, x.State = session.Kind(kind), session.State(st)
	x.Start = session.Normalize(x.Start)
	if end != nil {
		x.End = session.Normalize(*end)
	}
	c := session.Counters{Files: files, Bytes: by, FirstSegment: firstSeg, LastSegment: lastSeg}
	if c.FirstLSN, err = wal.ParseLSN(firstLSN); err != nil {
		return session.Session{}, err
	}
	if c.LastLSN, err = wal.ParseLSN(lastLSN); err != nil {
		return session.Session{}, err
	}
	if err := json.Unmarshal(instances, &c.Instances); err != nil {
		return session.Session{}, fmt.Errorf("session %s: its instances' counters: %w", x.ID, err)
	}
	if len(c.Instances) == 0 {
		c.Instances = nil
	}
	x.Counters = c
	return x, nil
}

// instancesJSON is the instances column's value: a JSON array, also when
// there are none.
func instancesJSON(ics []session.InstanceCounters) (string, error) {
	if ics == nil {
		ics = []session.InstanceCounters{}
	}
	b, err := json.Marshal(ics)
	return string(b), err
}

// endTime maps the zero time to NULL.
func endTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = session.Normalize(t)
	return &t
}

// db is what the writes run on: the pool, or a fenced write's
// transaction.
type db interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Create implements session.Store.
func (s *Store) Create(ctx context.Context, x session.Session) (session.Session, error) {
	return s.create(ctx, s.db, x)
}

// Update implements session.Store.
func (s *Store) Update(ctx context.Context, x session.Session) error { return s.update(ctx, s.db, x) }

// Append implements session.Store.
func (s *Store) Append(ctx context.Context, id string, e session.Entry) (session.Entry, error) {
	return s.append(ctx, s.db, id, e)
}

func (s *Store) create(ctx context.Context, q db, x session.Session) (session.Session, error) {
	if err := session.ValidateNew(x); err != nil {
		return session.Session{}, err
	}
	if x.ID == "" {
		x.ID = session.NewID()
	}
	x.Start = session.Normalize(x.Start)
	c := x.Counters
	instances, err := instancesJSON(c.Instances)
	if err != nil {
		return session.Session{}, fmt.Errorf("create session %s: %w", x.ID, err)
	}
	tag, err := q.Exec(ctx, `INSERT INTO `+s.table("sessions")+` (id, job, kind, parent_id, state, start_time,
		files, bytes, first_segment, last_segment, first_lsn, last_lsn, result, instances)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::pg_lsn, $12::pg_lsn, $13, $14)
		ON CONFLICT (id) DO NOTHING`,
		x.ID, x.Job, string(x.Kind), x.ParentID, string(x.State), x.Start,
		c.Files, c.Bytes, c.FirstSegment, c.LastSegment, c.FirstLSN.String(), c.LastLSN.String(), x.Result, instances)
	if err != nil {
		return session.Session{}, fmt.Errorf("create session %s: %w", x.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return session.Session{}, fmt.Errorf("create session %s: %w", x.ID, session.ErrExists)
	}
	return x, nil
}

func (s *Store) update(ctx context.Context, q db, x session.Session) error {
	err := pgx.BeginFunc(ctx, q, func(tx pgx.Tx) error {
		cur, err := scanSession(tx.QueryRow(ctx, `SELECT `+columns+` FROM `+s.table("sessions")+` WHERE id = $1 FOR UPDATE`, x.ID))
		if errors.Is(err, pgx.ErrNoRows) {
			return session.ErrNotFound
		}
		if err != nil {
			return err
		}
		if err := session.ValidateUpdate(cur, x); err != nil {
			return err
		}
		c := x.Counters
		instances, err := instancesJSON(c.Instances)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE `+s.table("sessions")+` SET state = $2, end_time = $3, files = $4, bytes = $5,
			first_segment = $6, last_segment = $7, first_lsn = $8::pg_lsn, last_lsn = $9::pg_lsn, result = $10, instances = $11
			WHERE id = $1`,
			x.ID, string(x.State), endTime(x.End), c.Files, c.Bytes, c.FirstSegment, c.LastSegment,
			c.FirstLSN.String(), c.LastLSN.String(), x.Result, instances)
		return err
	})
	if err != nil {
		return fmt.Errorf("update session %s: %w", x.ID, err)
	}
	return nil
}

func (s *Store) append(ctx context.Context, q db, id string, e session.Entry) (session.Entry, error) {
	if err := session.ValidateEntry(e); err != nil {
		return session.Entry{}, err
	}
	e.Time = session.Normalize(e.Time)
	// One statement: the row lock taken by the UPDATE orders concurrent
	// appenders, so each gets the next number.
	err := q.QueryRow(ctx, `WITH n AS (
			UPDATE `+s.table("sessions")+` SET log_count = log_count + 1 WHERE id = $1 RETURNING log_count
		)
		INSERT INTO `+s.table("session_log")+` (session_id, seq, at, severity, message)
		SELECT $1, log_count, $2, $3, $4 FROM n RETURNING seq`,
		id, e.Time, string(e.Severity), e.Message).Scan(&e.Seq)
	if errors.Is(err, pgx.ErrNoRows) {
		err = session.ErrNotFound
	}
	if err != nil {
		return session.Entry{}, fmt.Errorf("append to session %s: %w", id, err)
	}
	return e, nil
}

// Get implements session.Store.
func (s *Store) Get(ctx context.Context, id string) (session.Session, error) {
	x, err := scanSession(s.db.QueryRow(ctx, `SELECT `+columns+` FROM `+s.table("sessions")+` WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		err = session.ErrNotFound
	}
	if err != nil {
		return session.Session{}, fmt.Errorf("get session %s: %w", id, err)
	}
	return x, nil
}

// List implements session.Store.
func (s *Store) List(ctx context.Context, q session.Query) (session.Page, error) {
	limit, err := q.Check()
	if err != nil {
		return session.Page{}, err
	}
	var (
		where strings.Builder
		args  = []any{q.Job}
	)
	where.WriteString(`job = $1`)
	if q.Kind != "" {
		args = append(args, string(q.Kind))
		fmt.Fprintf(&where, ` AND kind = $%d`, len(args))
	}
	if q.Cursor != "" {
		c, err := session.ParseCursor(q.Cursor)
		if err != nil {
			return session.Page{}, err
		}
		args = append(args, c.Start, c.ID)
		fmt.Fprintf(&where, ` AND (start_time, id) < ($%d, $%d)`, len(args)-1, len(args))
	}
	args = append(args, limit+1) // one more tells whether a next page exists
	rows, err := s.db.Query(ctx, `SELECT `+columns+` FROM `+s.table("sessions")+` WHERE `+where.String()+
		fmt.Sprintf(` ORDER BY start_time DESC, id DESC LIMIT $%d`, len(args)), args...)
	if err != nil {
		return session.Page{}, fmt.Errorf("list sessions of %q: %w", q.Job, err)
	}
	found, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (session.Session, error) { return scanSession(r) })
	if err != nil {
		return session.Page{}, fmt.Errorf("list sessions of %q: %w", q.Job, err)
	}
	var p session.Page
	if len(found) > limit {
		found = found[:limit]
		p.Next = session.CursorAfter(found[limit-1]).String()
	}
	p.Sessions = found
	return p, nil
}

// Log implements session.Store.
func (s *Store) Log(ctx context.Context, id string, after int64, limit int) ([]session.Entry, error) {
	rows, err := s.db.Query(ctx, `SELECT seq, at, severity, message FROM `+s.table("session_log")+`
		WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, id, after, session.PageSize(limit))
	if err != nil {
		return nil, fmt.Errorf("log of session %s: %w", id, err)
	}
	entries, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (session.Entry, error) {
		var e session.Entry
		var sev string
		err := r.Scan(&e.Seq, &e.Time, &sev, &e.Message)
		e.Severity, e.Time = session.Severity(sev), session.Normalize(e.Time)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("log of session %s: %w", id, err)
	}
	if len(entries) == 0 {
		// Tell an empty log from a missing session.
		var exists bool
		err := s.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+s.table("sessions")+` WHERE id = $1)`, id).Scan(&exists)
		if err != nil {
			return nil, fmt.Errorf("log of session %s: %w", id, err)
		}
		if !exists {
			return nil, fmt.Errorf("log of session %s: %w", id, session.ErrNotFound)
		}
	}
	return entries, nil
}
