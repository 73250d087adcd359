package walbackup_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/walbackup"
)

// Publishing a physical image: the instance runs from the cache to a
// point in time (a restore into the cache, recovered by the guest: file
// level images have no cheaper safe way), row-exact, takes writes, is a
// working restore session while published, and Unpublish stops it and
// removes the cache, leaving the repository byte for byte as it was.
// After a crash of the publishing host, a new Job of the same
// configuration unpublishes it from its cache alone.
func TestPublishPhysicalImage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var cfg walbackup.Config
	f := newPITRFixture(t, pitrWorkload{txns: 40, tweak: func(c *walbackup.Config) { cfg = *c }})
	k := len(f.txns) / 2
	before := treeSums(t, f.root)

	publish := func(t *testing.T, job *walbackup.Job) (*walbackup.Publication, *testenv.Postgres) {
		cache := filepath.Join(testenv.UserDir(t, f.pg.OSUser), "published")
		pg := testenv.PostgresFor(t, filepath.Join(cache, "data"), f.pg)
		pub, err := job.Publish(ctx, walbackup.PublishRequest{Machine: "db1", Target: walbackup.ToTime(f.txns[k].commit), Cache: cache,
			Guest: walbackup.Machine{ID: "db1"}, Recovery: f.recoveryOptions(pg)})
		require.NoError(t, err)
		return pub, pg
	}
	pub, pg := publish(t, f.job)
	assert.True(t, pub.Recovery.Promoted)
	assert.Equal(t, f.want(k+1), items(t, pg), "the rows committed by the target")
	rec := lastRestore(t, f.harness)
	assert.Equal(t, pub.Session, rec.ID)
	assert.Equal(t, session.StateWorking, rec.State, "listed as published")
	assert.Equal(t, "published into "+pub.Cache, rec.Result)
	pg.Exec(t, "postgres", "INSERT INTO items VALUES (1000000, 1)")
	assert.Equal(t, before, treeSums(t, f.root), "writes go to the cache, never the backup")

	require.NoError(t, f.job.Unpublish(ctx, pub.Cache))
	assert.NoDirExists(t, pub.Cache)
	rec = lastRestore(t, f.harness)
	assert.Equal(t, session.StateSuccess, rec.State)
	assert.Equal(t, "unpublished", rec.Result)
	assert.Equal(t, before, treeSums(t, f.root))
	require.Error(t, f.job.Unpublish(ctx, pub.Cache), "nothing left to unpublish")

	t.Run("after a host crash", func(t *testing.T) {
		pub, pg := publish(t, f.job)
		assert.Equal(t, f.want(k+1), items(t, pg))
		// The publishing process is gone; another one with the same
		// configuration cleans up from the cache alone.
		restarted, err := walbackup.NewJob(cfg)
		require.NoError(t, err)
		require.NoError(t, restarted.Unpublish(ctx, pub.Cache))
		assert.NoDirExists(t, pub.Cache)
		_, err = os.Stat(filepath.Join(pub.Cache, "data", "postmaster.pid"))
		assert.ErrorIs(t, err, fs.ErrNotExist, "its server is stopped")
		assert.Equal(t, session.StateSuccess, lastRestore(t, f.harness).State)
		assert.Equal(t, before, treeSums(t, f.root))
	})
}
