package fs_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/repository/repositorytest"
)

func newRepo(t testing.TB) *fs.Repo {
	t.Helper()
	r, err := fs.New(fs.Config{Root: filepath.Join(t.TempDir(), "repo")})
	require.NoError(t, err)
	return r
}

func TestConformance(t *testing.T) {
	repositorytest.Run(t, func(t testing.TB) repository.Repository { return newRepo(t) })
}

func TestPermissions(t *testing.T) {
	r := newRepo(t)
	require.NoError(t, r.Put(context.Background(), "job/vm/obj", strings.NewReader("secret wal")))
	st, err := os.Stat(filepath.Join(r.Root(), "job", "vm", "obj"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	for _, d := range []string{"", "job", "job/vm"} {
		st, err := os.Stat(filepath.Join(r.Root(), d))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o700), st.Mode().Perm(), "dir %q", d)
	}
}

// A temporary file left by a crash is neither listed nor in the way.
func TestStrayTempFileIgnored(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	require.NoError(t, os.WriteFile(filepath.Join(r.Root(), ".tmp-deadbeef"), []byte("half"), 0o600))
	var n int
	require.NoError(t, r.List(ctx, "", func(repository.Object) error { n++; return nil }))
	assert.Zero(t, n)
	require.NoError(t, r.Put(ctx, "a", strings.NewReader("x")))
}

func TestNewRefusesFileRoot(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(f, nil, 0o600))
	_, err := fs.New(fs.Config{Root: f})
	require.ErrorContains(t, err, "not a directory")
	_, err = fs.New(fs.Config{})
	require.ErrorContains(t, err, "root directory is required")
}
