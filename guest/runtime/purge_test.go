package runtime

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeWAL(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte(n), 0o600))
	}
}

func TestRemoveMovesOutThenUnlinks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	names := []string{"000000010000000000000001", "000000010000000000000002", "000000010000000000000003"}
	writeWAL(t, dir, names...)
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
	require.NoError(t, os.Mkdir(filepath.Join(dir, removed), 0o700))
	writeWAL(t, filepath.Join(dir, removed), "000000010000000000000001")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var p purger
	p.start(ctx, dir)
	p.wait()
	entries, err := os.ReadDir(filepath.Join(dir, removed))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "left for the next runtime")
	p.start(context.Background(), dir)
	p.wait()
	_, err = os.Stat(filepath.Join(dir, removed))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// A .removed that links elsewhere (the folder's owner may not be the
// runtime's user) is refused: nothing is moved there or unlinked there.
func TestRemoveRefusesALinkedBin(t *testing.T) {
	ctx := context.Background()
	dir, elsewhere := t.TempDir(), t.TempDir()
	writeWAL(t, dir, "000000010000000000000001")
	writeWAL(t, elsewhere, "000000010000000000000009")
	for _, target := range []string{elsewhere, "."} {
		link := filepath.Join(dir, removed)
		os.Remove(link)
		require.NoError(t, os.Symlink(target, link))
		s := &server{dir: dir}
		require.Error(t, s.remove(ctx, []string{"000000010000000000000001"}), "link to %s", target)
		s.purge.start(ctx, dir)
		s.purge.wait()
		left, err := Ready(dir)
		require.NoError(t, err)
		assert.Len(t, left, 1, "the WAL stays (link to %s)", target)
		_, err = os.Stat(filepath.Join(elsewhere, "000000010000000000000009"))
		assert.NoError(t, err, "nothing elsewhere unlinked")
	}
}
