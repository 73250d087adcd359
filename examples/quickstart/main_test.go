package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
)

// The example runs against a real PostgreSQL in `make test`, as in `make demo`.
func TestQuickstartRuns(t *testing.T) {
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	t.Setenv("PGLOGSHIP_DEMO_DSN", pg.ConnString("postgres"))
	require.NoError(t, run())
	out := pg.Psql(t, "postgres", "select max(version) from pglogship.schema_migrations")
	require.Equal(t, "1", out, "the session store's schema was created")
}

func TestQuickstartNeedsDSN(t *testing.T) {
	t.Setenv("PGLOGSHIP_DEMO_DSN", "")
	require.ErrorContains(t, run(), "make demo")
}
