package repository_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/fs"
)

// Probe writes, reads back and removes its object in a real file-system
// repository, and says which step failed when the root is not a directory.
func TestProbe(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "repo")
	repo, err := fs.New(fs.Config{Root: root})
	require.NoError(t, err)
	require.NoError(t, repository.Probe(ctx, repo, time.Now(), "host1"))
	var left []string
	require.NoError(t, repo.List(ctx, "", func(o repository.Object) error {
		left = append(left, o.Name)
		return nil
	}))
	assert.Empty(t, left, "the probe object is removed")

	require.NoError(t, os.RemoveAll(root))
	require.NoError(t, os.WriteFile(root, []byte("not a directory"), 0o600))
	err = repository.Probe(ctx, repo, time.Now(), "host1")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "probe: write probe/")
}
