package main

import (
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/session/postgres"
)

// TestMain lets the test binary act as the guest runtime, as the example's
// own binary does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "runtime" {
		os.Exit(runtime.Main())
	}
	os.Exit(m.Run())
}

// The example runs end to end against a real PostgreSQL in `make test`, as
// in `make demo`: run returns an error unless the restored instance holds
// exactly the rows committed by the target and the drill passed.
func TestQuickstartRuns(t *testing.T) {
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	t.Setenv("PGLOGSHIP_DEMO_DSN", pg.ConnString("postgres"))
	require.NoError(t, run())
	out := pg.Psql(t, "postgres", "select max(version) from pglogship.schema_migrations")
	require.Equal(t, strconv.Itoa(postgres.SchemaVersion), out, "the session store's schema was created")
	out = pg.Psql(t, "postgres", "select count(*) from pglogship.sessions where state in ('starting', 'working')")
	require.Equal(t, "0", out, "every session ended")
}

func TestQuickstartNeedsDSN(t *testing.T) {
	t.Setenv("PGLOGSHIP_DEMO_DSN", "")
	require.ErrorContains(t, run(), "make demo")
}
