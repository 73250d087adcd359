package runtime

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRemoveMovesOutThenUnlinks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	names := []string{"000000010000000000000001", "000000010000000000000002", "000000010000000000000003"}
	for _, n := range names {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte(n), 0o600))
	}
	s := &server{dir: dir}
	require.NoError(t, s.remove(ctx, names[:2]))
	left, err := Ready(dir)
	require.NoError(t, err)
	require.Len(t, left, 1, "gone from the folder when remove returns")
	assert.Equal(t, names[2], left[0].Name)

	// Another runtime's purger removed the folder meanwhile.
	s.purge.wait()
	require.NoError(t, os.RemoveAll(filepath.Join(dir, removed)))
	require.NoError(t, s.remove(ctx, names))
	require.NoError(t, s.remove(ctx, names), "removing again is fine")
	s.purge.wait()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "the files are unlinked, then their folder")
}

func TestPurgeStopsWithItsContext(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, removed)
	require.NoError(t, os.Mkdir(bin, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(bin, "000000010000000000000001"), nil, 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var p purger
	p.start(ctx, bin)
	p.wait()
	entries, err := os.ReadDir(bin)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "left for the next runtime")
	p.start(context.Background(), bin)
	p.wait()
	_, err = os.Stat(bin)
	assert.ErrorIs(t, err, os.ErrNotExist)
}
