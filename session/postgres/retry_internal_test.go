package postgres

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
)

// goneRows is a result whose connection the server had closed: no row,
// and its goodbye as the error, as pgx reports it on the first Next.
type goneRows struct{ pgx.Rows }

func (goneRows) Next() bool { return false }
func (goneRows) Err() error {
	return &pgconn.PgError{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"}
}
func (goneRows) Close() {}

// A query whose first row fails on a dead connection is sent once more,
// and its rows are read from the new one; any other error is left alone.
func TestQuerySentAgainAfterADeadConnection(t *testing.T) {
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	ctx := context.Background()
	s, err := Open(ctx, Config{ConnString: pg.ConnString("postgres")})
	require.NoError(t, err)
	t.Cleanup(s.Close)

	rows := &pooledRows{Rows: goneRows{}, p: s.db, ctx: ctx, sql: "SELECT n FROM generate_series(1, 3) AS n"}
	var got []int
	for rows.Next() {
		var n int
		require.NoError(t, rows.Scan(&n))
		got = append(got, n)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []int{1, 2, 3}, got)

	other := &pooledRows{Rows: failedRows{}, p: s.db, ctx: ctx, sql: "SELECT 1"}
	require.False(t, other.Next())
	require.ErrorContains(t, other.Err(), "some other failure")
}

type failedRows struct{ pgx.Rows }

func (failedRows) Next() bool { return false }
func (failedRows) Err() error { return errors.New("some other failure") }
func (failedRows) Close()     {}
