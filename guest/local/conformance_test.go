package local_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/guest/local"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/internal/testenv"
)

// The local deployer and the real runtime pass the conformance suite on a
// real PostgreSQL.
func TestConformance(t *testing.T) {
	testenv.SkipIfShort(t)
	var pg *testenv.Postgres
	var dir string
	guesttest.RunConformance(t, guesttest.Harness{
		New: func(t testing.TB) (guest.Deployer, guest.Target) {
			pg = testenv.StartPostgres(t, testenv.PostgresConfig{})
			dir = filepath.Join(testenv.UserDir(t, pg.OSUser), "wal")
			d, err := local.New(local.Config{
				Binary: testenv.BuildRuntime(t),
				Conn:   runtime.ConnConfig{Host: pg.Host, Port: pg.Port, User: pg.User, Password: pg.Password},
				Logger: testenv.Logger(t),
			})
			require.NoError(t, err)
			return d, guest.Target{Machine: "localhost"}
		},
		Dir: func(testing.TB) string { return dir },
		Archive: func(t testing.TB, _ guest.Runtime, n int) map[string][]byte {
			pg.SwitchWAL(t, n)
			return testenv.FolderFiles(t, dir)
		},
	})
}
