package runtime

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pglogship/pglogship/guest"
)

// ConnConfig says how the runtime reaches PostgreSQL in the guest, in one of
// the three ways users authenticate: peer (Host is the socket directory and
// the runtime runs as an OS user mapped to User), a password, or a passfile.
// Password is never logged.
type ConnConfig struct {
	Host     string // socket directory (peer) or address
	Port     int    // 0 means 5432
	User     string // required
	Database string // empty means "postgres"
	Password string
	PassFile string // a .pgpass file
}

// String describes the connection without its password.
func (c ConnConfig) String() string {
	auth := "peer or trust"
	switch {
	case c.Password != "":
		auth = "password"
	case c.PassFile != "":
		auth = "passfile " + c.PassFile
	}
	return fmt.Sprintf("host=%s port=%d user=%s database=%s auth=%s", c.Host, c.port(), c.User, c.database(), auth)
}

func (c ConnConfig) port() int {
	if c.Port == 0 {
		return 5432
	}
	return c.Port
}

func (c ConnConfig) database() string {
	if c.Database == "" {
		return "postgres"
	}
	return c.Database
}

// Connect opens a connection. What the caller configured takes precedence
// over libpq's PG* environment variables.
func Connect(ctx context.Context, c ConnConfig) (*pgx.Conn, error) {
	if c.User == "" || c.Host == "" {
		return nil, errors.New("connect to postgresql: host and user are required")
	}
	kv := map[string]string{
		"host": c.Host, "port": strconv.Itoa(c.port()), "user": c.User, "dbname": c.database(),
		"sslmode": "disable", "application_name": "pglogship-runtime",
	}
	if c.PassFile != "" {
		kv["passfile"] = c.PassFile
	}
	var dsn strings.Builder
	for _, k := range []string{"host", "port", "user", "dbname", "sslmode", "application_name", "passfile"} {
		if v, ok := kv[k]; ok {
			fmt.Fprintf(&dsn, "%s='%s' ", k, strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v))
		}
	}
	cfg, err := pgx.ParseConfig(dsn.String())
	if err != nil {
		return nil, fmt.Errorf("connect to postgresql (%s): %w", c, err)
	}
	if c.Password != "" {
		cfg.Password = c.Password
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgresql (%s): %w", c, err)
	}
	return conn, nil
}

// Scan reports the instance behind conn.
func Scan(ctx context.Context, conn *pgx.Conn) (guest.Instance, error) {
	var (
		inst             guest.Instance
		version, sysid   string
		segSize, library *string
	)
	// archive_library exists from PostgreSQL 15 on: missing_ok gives NULL.
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num'),
			(SELECT system_identifier::text FROM pg_control_system()),
			current_setting('data_directory'),
			pg_is_in_recovery(),
			(SELECT timeline_id FROM pg_control_checkpoint()),
			(SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'),
			current_setting('wal_level'), current_setting('archive_mode'),
			current_setting('archive_command'), current_setting('archive_library', true)`).
		Scan(&version, &sysid, &inst.DataDir, &inst.InRecovery, &inst.Timeline, &segSize,
			&inst.WALLevel, &inst.ArchiveMode, &inst.ArchiveCommand, &library)
	if err != nil {
		return guest.Instance{}, fmt.Errorf("scan instance: %w", err)
	}
	if inst.Version, err = strconv.Atoi(version); err != nil {
		return guest.Instance{}, fmt.Errorf("scan instance: server_version_num %q", version)
	}
	if inst.SystemID, err = strconv.ParseUint(sysid, 10, 64); err != nil {
		return guest.Instance{}, fmt.Errorf("scan instance: system identifier %q", sysid)
	}
	if segSize != nil {
		if inst.WALSegmentSize, err = strconv.ParseInt(*segSize, 10, 64); err != nil {
			return guest.Instance{}, fmt.Errorf("scan instance: wal_segment_size %q", *segSize)
		}
	}
	if library != nil {
		inst.ArchiveLibrary = *library
	}
	inst.Running = true

	var failedAt *time.Time
	err = conn.QueryRow(ctx, `SELECT archived_count, coalesce(last_archived_wal, ''), failed_count,
			coalesce(last_failed_wal, ''), last_failed_time FROM pg_stat_archiver`).
		Scan(&inst.Archiver.ArchivedCount, &inst.Archiver.LastArchivedWAL, &inst.Archiver.FailedCount,
			&inst.Archiver.LastFailedWAL, &failedAt)
	if err != nil {
		return guest.Instance{}, fmt.Errorf("scan archiver: %w", err)
	}
	if failedAt != nil {
		inst.Archiver.LastFailedTime = failedAt.UTC()
	}

	rows, err := conn.Query(ctx, `SELECT oid, spcname, pg_tablespace_location(oid) FROM pg_tablespace
		WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY spcname`)
	if err != nil {
		return guest.Instance{}, fmt.Errorf("scan tablespaces: %w", err)
	}
	inst.Tablespaces, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (guest.Tablespace, error) {
		var ts guest.Tablespace
		err := r.Scan(&ts.OID, &ts.Name, &ts.Location)
		return ts, err
	})
	if err != nil {
		return guest.Instance{}, fmt.Errorf("scan tablespaces: %w", err)
	}
	rows, err = conn.Query(ctx, `SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname`)
	if err != nil {
		return guest.Instance{}, fmt.Errorf("scan databases: %w", err)
	}
	if inst.Databases, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return guest.Instance{}, fmt.Errorf("scan databases: %w", err)
	}
	return inst, nil
}
