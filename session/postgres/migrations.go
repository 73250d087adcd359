package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrSchemaTooNew is returned by Open when the database was migrated by a
// newer pglogship than this one; running against it could corrupt it.
var ErrSchemaTooNew = errors.New("session store schema is newer than this version of pglogship")

// migrations are applied in order; migration i brings the schema to version
// i+1. Never edit a released migration: append a new one. "{s}" stands for
// the quoted schema name.
var migrations = []string{
	`CREATE TABLE {s}.sessions (
		id            text COLLATE "C" PRIMARY KEY,
		job           text NOT NULL,
		kind          text NOT NULL CHECK (kind IN ('parent', 'child')),
		parent_id     text NOT NULL DEFAULT '',
		state         text NOT NULL,
		start_time    timestamptz NOT NULL,
		end_time      timestamptz,
		files         bigint NOT NULL DEFAULT 0,
		bytes         bigint NOT NULL DEFAULT 0,
		first_segment text NOT NULL DEFAULT '',
		last_segment  text NOT NULL DEFAULT '',
		first_lsn     pg_lsn NOT NULL DEFAULT '0/0',
		last_lsn      pg_lsn NOT NULL DEFAULT '0/0',
		result        text NOT NULL DEFAULT '',
		log_count     bigint NOT NULL DEFAULT 0
	);
	CREATE INDEX sessions_job_start ON {s}.sessions (job, start_time DESC, id DESC);
	CREATE TABLE {s}.session_log (
		session_id text COLLATE "C" NOT NULL REFERENCES {s}.sessions (id) ON DELETE CASCADE,
		seq        bigint NOT NULL,
		at         timestamptz NOT NULL,
		severity   text NOT NULL,
		message    text NOT NULL,
		PRIMARY KEY (session_id, seq)
	);`,
	// 2: job leases (session.Leaser) and the wanted state of each job.
	// A released lease keeps its row, with holder '', so the fencing token
	// keeps growing.
	`CREATE TABLE {s}.leases (
		job        text COLLATE "C" PRIMARY KEY,
		holder     text COLLATE "C" NOT NULL,
		token      bigint NOT NULL,
		expires_at timestamptz NOT NULL
	);
	CREATE TABLE {s}.job_state (
		job     text COLLATE "C" PRIMARY KEY,
		enabled boolean NOT NULL
	);`,
	// 3: pins of running restores and drills (session.Pinner). The system
	// identifier is text: it is a uint64, beyond bigint.
	`CREATE TABLE {s}.pins (
		job            text COLLATE "C" NOT NULL,
		id             text COLLATE "C" NOT NULL,
		purpose        text NOT NULL,
		machine        text NOT NULL,
		system_id      text NOT NULL,
		restore_points text[] NOT NULL,
		timeline       bigint NOT NULL,
		start_lsn      pg_lsn NOT NULL,
		expires_at     timestamptz NOT NULL,
		PRIMARY KEY (job, id)
	);`,
	// 4: the processes sharing the store (session.Roster).
	`CREATE TABLE {s}.runners (
		holder     text COLLATE "C" PRIMARY KEY,
		expires_at timestamptz NOT NULL
	);`,
	// 5: a child session's counters per instance (session.InstanceCounters).
	`ALTER TABLE {s}.sessions ADD COLUMN instances jsonb NOT NULL DEFAULT '[]';`,
	// 6: restore sessions (session.KindRestore).
	`ALTER TABLE {s}.sessions DROP CONSTRAINT sessions_kind_check;
	ALTER TABLE {s}.sessions ADD CONSTRAINT sessions_kind_check CHECK (kind IN ('parent', 'child', 'restore'));`,
}

// SchemaVersion is the schema version this package writes.
var SchemaVersion = len(migrations)

// migrate brings the schema up to SchemaVersion. The advisory lock makes
// concurrent Opens take turns; the one that comes second finds the work done.
func migrate(ctx context.Context, tx pgx.Tx, schema string) error {
	quoted := pgx.Identifier{schema}.Sanitize()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('pglogship.migrate'), hashtext($1))`, schema); err != nil {
		return fmt.Errorf("lock schema: %w", err)
	}
	setup := `CREATE SCHEMA IF NOT EXISTS ` + quoted + `;
		CREATE TABLE IF NOT EXISTS ` + quoted + `.schema_migrations (
			version    integer PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`
	if _, err := tx.Exec(ctx, setup); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	var version int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+quoted+`.schema_migrations`).Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > SchemaVersion {
		return fmt.Errorf("%w: database has version %d, this build knows %d", ErrSchemaTooNew, version, SchemaVersion)
	}
	for v := version + 1; v <= SchemaVersion; v++ {
		if _, err := tx.Exec(ctx, strings.ReplaceAll(migrations[v-1], "{s}", quoted)); err != nil {
			return fmt.Errorf("apply migration %d: %w", v, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+quoted+`.schema_migrations (version) VALUES ($1)`, v); err != nil {
			return fmt.Errorf("record migration %d: %w", v, err)
		}
	}
	return nil
}
