package walbackup_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/local"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

// deployedRuntime starts a real PostgreSQL and deploys the real runtime
// for it through the local deployer, archiving into dir; the runtime is
// closed when the test ends.
func deployedRuntime(t *testing.T) (*testenv.Postgres, guest.Runtime, string, repository.Instance) {
	t.Helper()
	ctx := context.Background()
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	d, err := local.New(local.Config{
		Binary: testenv.BuildRuntime(t),
		Conn:   runtime.ConnConfig{Host: pg.Host, Port: pg.Port, User: pg.User, Password: pg.Password},
		Logger: testenv.Logger(t),
	})
	require.NoError(t, err)
	rt, err := d.Deploy(ctx, guest.Target{Machine: "localhost"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = rt.Close(ctx) })
	dir := filepath.Join(testenv.UserDir(t, pg.OSUser), "wal")
	require.NoError(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: dir}))
	scan, err := rt.Scan(ctx)
	require.NoError(t, err)
	return pg, rt, dir, repository.Instance{Job: "Daily DB Job", Machine: "localhost", SystemID: scan.SystemID}
}

// Real PostgreSQL, the real runtime, a real file-system repository: every
// archived segment ends up in the repository exactly once, byte-identical,
// and gone from the guest.
func TestShipOnceRealWAL(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t)
	ctx := context.Background()
	pg, rt, dir, inst := deployedRuntime(t)
	repo, err := fs.New(fs.Config{Root: t.TempDir()})
	require.NoError(t, err)

	originals := map[string][]byte{}
	for round := 0; round < 3; round++ {
		pg.SwitchWAL(t, 4) // returns once archived: the folder holds still
		files, err := rt.Ready(ctx)
		require.NoError(t, err)
		require.GreaterOrEqual(t, len(files), 4)
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(dir, f.Name))
			require.NoError(t, err)
			originals[f.Name] = b
		}
		got, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
		require.NoError(t, err)
		assert.Equal(t, len(files), got.Files)
		assert.Less(t, got.StoredBytes, got.RawBytes, "compressed in the guest")
	}
	in := stored(t, repo, inst, 1)
	require.Len(t, in, len(originals), "every archived segment is in the repository")
	for n, b := range originals {
		assert.Equal(t, b, in[n], "%s byte-identical", n)
		_, err := os.Stat(filepath.Join(dir, n))
		assert.True(t, os.IsNotExist(err), "%s is gone from the guest", n)
	}
	refs, err := repository.Bundles(ctx, repo, inst, 1)
	require.NoError(t, err)
	assert.Len(t, refs, 3, "one bundle per interval")
	count := map[string]int{}
	for _, ref := range refs {
		r, err := bundleOpen(ctx, repo, ref)
		require.NoError(t, err)
		for _, e := range r {
			count[e]++
		}
	}
	for n, c := range count {
		assert.Equal(t, 1, c, "%s stored exactly once", n)
	}

	// Each segment carries the summary of its WAL: the workload committed
	// in every one of them.
	var commits int64
	for _, ref := range refs {
		b, err := bundle.Open(ctx, repo, ref.Object.Name, ref.Object.Size, nil)
		require.NoError(t, err)
		for _, e := range b.Entries() {
			if f, _ := wal.ParseFileName(e.Name); f.Kind != wal.Segment {
				continue
			}
			require.NotNil(t, e.Meta, "%s has a summary", e.Name)
			var sum wal.Summary
			require.NoError(t, json.Unmarshal(e.Meta, &sum))
			assert.Positive(t, sum.Records, e.Name)
			commits += sum.Commits
		}
	}
	assert.Positive(t, commits)
}
