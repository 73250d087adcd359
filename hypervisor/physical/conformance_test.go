package physical_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/internal/testenv"
)

// The physical hypervisor passes the conformance suite on a real
// PostgreSQL. Its snapshots are read live during Export, so the suite
// changes the cluster only between images: the change is a file in the
// data directory, which an image must carry like any other.
func TestConformance(t *testing.T) {
	testenv.SkipIfShort(t)
	var pg *testenv.Postgres
	n := 0
	marker := func() string { return filepath.Join(pg.DataDir, "conformance.marker") }
	hypervisortest.Run(t, hypervisortest.Harness{
		New: func(t testing.TB) hypervisor.Hypervisor {
			pg = testenv.StartPostgres(t, testenv.PostgresConfig{})
			return newHypervisor(t.(*testing.T), pg)
		},
		Machine: "db1",
		Change: func(t testing.TB) {
			n++
			require.NoError(t, os.WriteFile(marker(), []byte(fmt.Sprintf("change %d", n)), 0o600))
		},
		State: func(t testing.TB) any {
			b, err := os.ReadFile(marker())
			if os.IsNotExist(err) {
				return ""
			}
			require.NoError(t, err)
			return string(b)
		},
		Same: func(t testing.TB, target string, state any) bool {
			// The restored cluster first, so an empty target never passes.
			if _, err := os.Stat(filepath.Join(target, "PG_VERSION")); err != nil {
				return false
			}
			b, err := os.ReadFile(filepath.Join(target, "conformance.marker"))
			if os.IsNotExist(err) {
				return state == ""
			}
			require.NoError(t, err)
			return string(b) == state
		},
		Target: func(t testing.TB) string { return filepath.Join(t.TempDir(), "restored") },
	})
}
