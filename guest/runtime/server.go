package runtime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pglogship/pglogship/guest"
)

var _ guest.ServerControl = (*Runtime)(nil)

// CheckServer implements guest.ServerControl in the guest: see there.
func (r *Runtime) CheckServer(ctx context.Context, cfg guest.CheckConfig) (guest.CheckResult, error) {
	c := r.cfg.Conn
	if cfg.SocketDir != "" && strings.HasPrefix(c.Host, "/") {
		c.Host = cfg.SocketDir
	}
	c.Port, c.Database = cfg.Port, ""
	var res guest.CheckResult
	conn, err := Connect(ctx, c)
	if err != nil {
		res.Failures = append(res.Failures, fmt.Sprintf("the server does not answer: %v", err))
		return res, nil
	}
	err = conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&res.Version)
	var dbs []string
	if err == nil {
		var rows pgx.Rows
		if rows, err = conn.Query(ctx, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname"); err == nil {
			dbs, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
	}
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		res.Failures = append(res.Failures, fmt.Sprintf("the server answers, but not to a query: %v", err))
		return res, nil
	}
	sqlDB := cfg.Database
	if sqlDB == "" {
		sqlDB = "postgres"
	}
	for _, db := range dbs {
		c.Database = db
		conn, err := Connect(ctx, c)
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT 1")
		}
		if err == nil && db == sqlDB {
			for _, q := range cfg.SQL {
				if _, qerr := conn.Exec(ctx, q); qerr != nil {
					res.Failures = append(res.Failures, fmt.Sprintf("in %s, %q: %v", db, q, qerr))
				}
			}
		}
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
		if err != nil {
			res.Failures = append(res.Failures, fmt.Sprintf("database %s does not connect: %v", db, err))
			continue
		}
		res.Databases = append(res.Databases, db)
	}
	return res, nil
}

// StopServer implements guest.ServerControl in the guest: see there.
func (r *Runtime) StopServer(ctx context.Context, dataDir string) error {
	if err := checkGuestPath("data directory", dataDir); err != nil {
		return err
	}
	pf, err := readPidFile(dataDir)
	if errors.Is(err, fs.ErrNotExist) || err == nil && !alive(pf.pid) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop the server of %s: %w", dataDir, err)
	}
	version, err := os.ReadFile(filepath.Join(dataDir, "PG_VERSION"))
	if err != nil {
		return fmt.Errorf("stop the server of %s: %w", dataDir, err)
	}
	owner, err := serverUser("", dataDir)
	if err != nil {
		return err
	}
	pgCtl, err := findPgCtl("", strings.TrimSpace(string(version)))
	if err != nil {
		return err
	}
	rec := &recovery{rt: r, cfg: guest.RecoveryConfig{DataDir: dataDir}, owner: owner, pgCtl: pgCtl}
	return rec.stop()
}
