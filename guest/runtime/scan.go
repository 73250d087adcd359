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
	// SSLMode is libpq's sslmode for a TCP Host: disable, allow, prefer,
	// require, verify-ca or verify-full; empty means DefaultSSLMode. A
	// socket directory never uses SSL, whatever it says.
	SSLMode string
	// SSLRootCert is a file in the guest with the CA certificates that
	// verify-ca and verify-full check the server against; empty means the
	// system's.
	SSLRootCert string
}

// DefaultSSLMode is the sslmode of a TCP connection when ConnConfig leaves
// it empty: SSL when the server offers it, as libpq does by default.
const DefaultSSLMode = "prefer"

var sslModes = map[string]bool{"disable": true, "allow": true, "prefer": true, "require": true, "verify-ca": true, "verify-full": true}

func (c ConnConfig) socket() bool { return strings.HasPrefix(c.Host, "/") }

// sslMode is the sslmode Connect uses: disable on a socket, where it means
// nothing, so PGSSLMODE cannot ask for it either.
func (c ConnConfig) sslMode() string {
	switch {
	case c.socket():
		return "disable"
	case c.SSLMode == "":
		return DefaultSSLMode
	}
	return c.SSLMode
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
	s := fmt.Sprintf("host=%s port=%d user=%s database=%s auth=%s", c.Host, c.port(), c.User, c.database(), auth)
	if !c.socket() {
		s += " sslmode=" + c.sslMode()
	}
	return s
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
	dsn, err := c.connString()
	if err != nil {
		return nil, fmt.Errorf("connect to postgresql: %w", err)
	}
	cfg, err := pgx.ParseConfig(dsn)
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

// connString is the keyword/value string Connect parses, without the
// password.
func (c ConnConfig) connString() (string, error) {
	if c.User == "" || c.Host == "" {
		return "", errors.New("host and user are required")
	}
	if c.SSLMode != "" && !sslModes[c.SSLMode] {
		return "", fmt.Errorf("sslmode %q: want disable, allow, prefer, require, verify-ca or verify-full", c.SSLMode)
	}
	kv := map[string]string{
		"host": c.Host, "port": strconv.Itoa(c.port()), "user": c.User, "dbname": c.database(),
		"sslmode": c.sslMode(), "application_name": "pglogship-runtime",
	}
	if c.PassFile != "" {
		kv["passfile"] = c.PassFile
	}
	if c.SSLRootCert != "" && !c.socket() {
		kv["sslrootcert"] = c.SSLRootCert
	}
	var dsn strings.Builder
	for _, k := range []string{"host", "port", "user", "dbname", "sslmode", "sslrootcert", "application_name", "passfile"} {
		if v, ok := kv[k]; ok {
			fmt.Fprintf(&dsn, "%s='%s' ", k, strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v))
		}
	}
	return strings.TrimSpace(dsn.String()), nil
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
