package runtime

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCleanStale(t *testing.T) {
	base := t.TempDir()
	for _, d := range []string{"rt-stale", "rt-nolock", "rt-live", "rt-self", "other"} {
		require.NoError(t, os.Mkdir(filepath.Join(base, d), 0o700))
	}
	require.NoError(t, os.WriteFile(filepath.Join(base, "rt-stale", LockFile), nil, 0o600))
	require.NoError(t, HoldLock(filepath.Join(base, "rt-live", LockFile)))

	removed, err := CleanStale(base, filepath.Join(base, "rt-self"))
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{filepath.Join(base, "rt-stale"), filepath.Join(base, "rt-nolock")}, removed)
	entries, err := os.ReadDir(base)
	require.NoError(t, err)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	assert.ElementsMatch(t, []string{"rt-live", "rt-self", "other", InstallLockFile}, left)
}

// The cleaner removes nothing from a base folder another user could have
// planted folders in or could swap.
func TestCleanStaleRefusesUnsafeBase(t *testing.T) {
	open := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(open, "rt-x"), 0o700))
	require.NoError(t, os.Chmod(open, 0o777))
	_, err := CleanStale(open, "")
	require.ErrorIs(t, err, ErrUnsafeBase)
	assert.DirExists(t, filepath.Join(open, "rt-x"))

	link := filepath.Join(t.TempDir(), "link")
	require.NoError(t, os.Symlink(t.TempDir(), link))
	_, err = CleanStale(link, "")
	require.ErrorIs(t, err, ErrUnsafeBase)

	for _, tc := range []struct {
		mode  os.FileMode
		owner int
		want  string
	}{
		{os.ModeDir | 0o700, 0, ""},
		{os.ModeDir | 0o755, 0, ""},
		{os.ModeDir | 0o700, 1000, "owned by uid 1000, not by this user (uid 0)"},
		{os.ModeDir | 0o1777, 0, "writable by other users"},
		{os.ModeDir | 0o720, 0, "writable by other users"},
		{0o600, 0, "is not a folder"},
		{os.ModeSymlink | 0o777, 0, "is a symbolic link"},
	} {
		err := CheckBase("/b", tc.mode, tc.owner, 0)
		if tc.want == "" {
			assert.NoError(t, err, "%v", tc.mode)
			continue
		}
		assert.ErrorIs(t, err, ErrUnsafeBase, "%v", tc.mode)
		assert.ErrorContains(t, err, tc.want)
	}
}
