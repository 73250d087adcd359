package postgres

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pooled runs the store's statements on its pool and sends one again, on
// a new connection, when it failed because its pooled connection was
// dead: the server restarted (or ended the backend) since the connection
// was last used, so the statement never ran. Without it, the first write
// of every pooled connection after a restart of the configuration
// database fails, such as a job's last word on its session when the host
// program stops.
type pooled struct{ pool *pgxpool.Pool }

// deadConn tells an error of a connection the server had closed from
// any other.
func deadConn(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// admin_shutdown, crash_shutdown, cannot_connect_now
		return pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03"
	}
	return err != nil && (pgconn.SafeToRetry(err) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed))
}

// again runs op once more after a dead connection, dropping the pool's
// idle connections first: after a restart they are all dead.
func (p pooled) again(op func() error) error {
	err := op()
	if deadConn(err) {
		p.pool.Reset()
		err = op()
	}
	return err
}

func (p pooled) Exec(ctx context.Context, sql string, args ...any) (tag pgconn.CommandTag, err error) {
	err = p.again(func() error {
		tag, err = p.pool.Exec(ctx, sql, args...)
		return err
	})
	return tag, err
}

func (p pooled) Query(ctx context.Context, sql string, args ...any) (rows pgx.Rows, err error) {
	err = p.again(func() error {
		rows, err = p.pool.Query(ctx, sql, args...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &pooledRows{Rows: rows, p: p, ctx: ctx, sql: sql, args: args}, nil
}

// pooledRows sends its query once more when the first row fails on a
// dead connection: pgx reports the server's goodbye on the connection
// there, not from Query.
type pooledRows struct {
	pgx.Rows
	p       pooled
	ctx     context.Context
	sql     string
	args    []any
	started bool
	err     error // of the query sent again
}

func (r *pooledRows) Next() bool {
	if r.err != nil {
		return false
	}
	if r.Rows.Next() {
		r.started = true
		return true
	}
	if r.started || !deadConn(r.Rows.Err()) {
		r.started = true
		return false
	}
	r.started = true
	r.Rows.Close()
	r.p.pool.Reset()
	rows, err := r.p.pool.Query(r.ctx, r.sql, r.args...)
	if err != nil {
		r.err = err
		return false
	}
	r.Rows = rows
	return r.Rows.Next()
}

func (r *pooledRows) Err() error {
	if r.err != nil {
		return r.err
	}
	return r.Rows.Err()
}

func (p pooled) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return pooledRow{p, ctx, sql, args}
}

// Begin starts a transaction; nothing ran yet when it fails, so it is
// always safe to begin again.
func (p pooled) Begin(ctx context.Context) (tx pgx.Tx, err error) {
	err = p.again(func() error {
		tx, err = p.pool.Begin(ctx)
		return err
	})
	return tx, err
}

// pooledRow runs its statement when scanned, as pgx's rows do.
type pooledRow struct {
	p    pooled
	ctx  context.Context
	sql  string
	args []any
}

func (r pooledRow) Scan(dest ...any) error {
	return r.p.again(func() error { return r.p.pool.QueryRow(r.ctx, r.sql, r.args...).Scan(dest...) })
}
