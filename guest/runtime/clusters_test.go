package runtime

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/internal/testenv"
)

// FindClusters finds two real clusters of different releases running side
// by side (data directory, release, port, socket directory, postmaster),
// and, at the places it is given, a stopped cluster (found directly and
// through a postgresql.conf naming it), but no folder that is not a
// cluster.
func TestFindClusters(t *testing.T) {
	testenv.SkipIfShort(t)
	t.Parallel()
	a := testenv.StartPostgres(t, testenv.PostgresConfig{})
	b := testenv.StartPostgres(t, testenv.PostgresConfig{Major: 17})
	stopped := testenv.StartPostgres(t, testenv.PostgresConfig{Major: 16})
	stopped.Stop(t)
	places := t.TempDir()
	conf := filepath.Join(places, "etc", "16", "main", "postgresql.conf")
	require.NoError(t, os.MkdirAll(filepath.Dir(conf), 0o755))
	require.NoError(t, os.WriteFile(conf, []byte("port = 5433\ndata_directory = '"+stopped.DataDir+"'\t\t# use data in another directory\n"), 0o644))
	notCluster := filepath.Join(places, "lib", "14", "main")
	require.NoError(t, os.MkdirAll(notCluster, 0o755))

	got, err := FindClusters(context.Background(), "/proc", []string{filepath.Join(places, "etc", "*", "*", "postgresql.conf"),
		filepath.Join(places, "lib", "*", "*")})
	require.NoError(t, err)
	byDir := map[string]guest.Cluster{}
	for _, c := range got {
		byDir[c.DataDir] = c
	}
	real := func(dir string) string {
		r, err := filepath.EvalSymlinks(dir)
		require.NoError(t, err)
		return r
	}
	for _, pg := range []*testenv.Postgres{a, b} {
		c, ok := byDir[real(pg.DataDir)]
		require.True(t, ok, "%s found among %+v", pg.DataDir, got)
		assert.True(t, c.Running)
		assert.Equal(t, pg.Major(t), c.Major)
		assert.Equal(t, pg.Port, c.Port)
		assert.Equal(t, pg.SocketDir, c.SocketDir)
		assert.Positive(t, c.PID)
	}
	c, ok := byDir[real(stopped.DataDir)]
	require.True(t, ok, "the stopped cluster named by a postgresql.conf is found among %+v", got)
	assert.Equal(t, guest.Cluster{DataDir: real(stopped.DataDir), Major: 16}, c)
	assert.NotContains(t, byDir, notCluster, "a folder without PG_VERSION is no cluster")
	assert.NotEqual(t, byDir[real(a.DataDir)].Major, byDir[real(b.DataDir)].Major, "two releases side by side")
}
