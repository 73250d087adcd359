package runtime

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
)

// outside is a folder of root's with a secret in it, that a recovery must
// leave as it is.
type outside struct {
	dir, secret string
}

func newOutside(t *testing.T) outside {
	t.Helper()
	o := outside{dir: t.TempDir()}
	require.NoError(t, os.Chmod(o.dir, 0o711))
	o.secret = filepath.Join(o.dir, "secret")
	require.NoError(t, os.WriteFile(o.secret, []byte("root's secret\n"), 0o600))
	return o
}

// requireUntouched: owned by root still, same modes, same content, and
// nothing new in it.
func (o outside) requireUntouched(t *testing.T) {
	t.Helper()
	for p, mode := range map[string]fs.FileMode{o.dir: fs.ModeDir | 0o711, o.secret: 0o600} {
		st, err := os.Lstat(p)
		require.NoError(t, err)
		assert.Equal(t, uint32(0), st.Sys().(*syscall.Stat_t).Uid, "%s is still root's", p)
		assert.Equal(t, mode, st.Mode(), "%s keeps its mode", p)
	}
	b, err := os.ReadFile(o.secret)
	require.NoError(t, err)
	assert.Equal(t, "root's secret\n", string(b))
	entries, err := os.ReadDir(o.dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "nothing was created beside the secret")
}

// A recovery run as root on a data directory the server user could have
// planted links in: a tablespace link to a directory the restore did not
// place is refused before anything changes, and links at the recovery log,
// its folder and postgresql.auto.conf, or one inside a tablespace, never
// hand over, write or read what they point to. The data directory and the
// tablespaces the restore placed are the server user's.
func TestRecoverLeavesPlantedLinksOutside(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the runtime hands over only as root")
	}
	osUser := osUserForTest(t)
	u, err := serverUser(osUser, "/")
	require.NoError(t, err)
	bin := t.TempDir()
	// pg_ctl says its release, then fails: what matters is what happened
	// before it ran.
	require.NoError(t, os.WriteFile(filepath.Join(bin, "pg_ctl"),
		[]byte("#!/bin/sh\n[ \"$1\" = --version ] && { echo 'pg_ctl (PostgreSQL) 15.18'; exit 0; }\necho no server here; exit 1\n"), 0o755))
	r := New(Config{})
	noFetch := func(context.Context, string, io.Writer) error { return guest.ErrNoSuchWAL }
	dataDir := func(t *testing.T) string {
		d := filepath.Join(t.TempDir(), "data")
		for _, sub := range []string{"pg_wal", "pg_tblspc", "base"} {
			require.NoError(t, os.MkdirAll(filepath.Join(d, sub), 0o700))
		}
		require.NoError(t, os.WriteFile(filepath.Join(d, "PG_VERSION"), []byte("15\n"), 0o600))
		return d
	}
	recover := func(d string, spaces map[uint32]string) error {
		_, err := r.Recover(context.Background(), guest.RecoveryConfig{DataDir: d, OSUser: osUser, BinDir: bin, Tablespaces: spaces}, noFetch)
		return err
	}
	requireOwner := func(t *testing.T, p string) {
		t.Helper()
		st, err := os.Lstat(p)
		require.NoError(t, err)
		assert.Equal(t, uint32(u.uid), st.Sys().(*syscall.Stat_t).Uid, "%s is the server user's", p)
	}

	t.Run("tablespace link the restore did not place", func(t *testing.T) {
		o, d := newOutside(t), dataDir(t)
		placed := filepath.Join(t.TempDir(), "16400")
		require.NoError(t, os.Mkdir(placed, 0o700))
		require.NoError(t, os.Symlink(placed, filepath.Join(d, "pg_tblspc", "16400")))
		require.NoError(t, os.Symlink(o.dir, filepath.Join(d, "pg_tblspc", "99")))
		err := recover(d, map[uint32]string{16400: placed})
		require.ErrorContains(t, err, "tablespace link pg_tblspc/99 points to \""+o.dir+"\"")
		o.requireUntouched(t)
		assert.NoFileExists(t, filepath.Join(d, "recovery.signal"), "nothing was changed")
		st, err := os.Stat(filepath.Join(d, "base"))
		require.NoError(t, err)
		assert.Equal(t, uint32(0), st.Sys().(*syscall.Stat_t).Uid, "nothing was handed over")

		// A link to the right directory under another OID is no better.
		require.NoError(t, os.Remove(filepath.Join(d, "pg_tblspc", "99")))
		require.NoError(t, os.Symlink(placed, filepath.Join(d, "pg_tblspc", "16401")))
		require.ErrorContains(t, recover(d, map[uint32]string{16400: placed}), "pg_tblspc/16401")
	})

	t.Run("tablespaces the restore placed", func(t *testing.T) {
		o, d := newOutside(t), dataDir(t)
		placed := filepath.Join(t.TempDir(), "16400")
		require.NoError(t, os.MkdirAll(filepath.Join(placed, "PG_15_202209061"), 0o700))
		require.NoError(t, os.Symlink(placed, filepath.Join(d, "pg_tblspc", "16400")))
		require.NoError(t, os.Symlink(o.dir, filepath.Join(placed, "PG_15_202209061", "escape")))
		require.NoError(t, os.Symlink(o.dir, filepath.Join(d, "base", "escape")))
		require.ErrorContains(t, recover(d, map[uint32]string{16400: placed}), "pg_ctl start")
		o.requireUntouched(t)
		for _, p := range []string{d, filepath.Join(d, "base"), filepath.Join(d, "base", "escape"), filepath.Join(d, RecoveryLog),
			filepath.Join(d, "recovery.signal"), filepath.Join(d, autoConf),
			placed, filepath.Join(placed, "PG_15_202209061"), filepath.Join(placed, "PG_15_202209061", "escape")} {
			requireOwner(t, p)
		}
	})

	t.Run("recovery log folder", func(t *testing.T) {
		o, d := newOutside(t), dataDir(t)
		require.NoError(t, os.Symlink(o.dir, filepath.Join(d, "log")))
		require.ErrorContains(t, recover(d, nil), "recovery log")
		o.requireUntouched(t)
	})

	t.Run("recovery log", func(t *testing.T) {
		o, d := newOutside(t), dataDir(t)
		require.NoError(t, os.Mkdir(filepath.Join(d, "log"), 0o700))
		require.NoError(t, os.Symlink(o.secret, filepath.Join(d, RecoveryLog)))
		require.ErrorContains(t, recover(d, nil), "recovery log")
		o.requireUntouched(t)
	})

	t.Run("postgresql.auto.conf", func(t *testing.T) {
		o, d := newOutside(t), dataDir(t)
		require.NoError(t, os.Symlink(o.secret, filepath.Join(d, autoConf)))
		require.Error(t, recover(d, nil))
		o.requireUntouched(t)
		st, err := os.Lstat(filepath.Join(d, autoConf))
		require.NoError(t, err)
		if st.Mode().IsRegular() {
			b, err := os.ReadFile(filepath.Join(d, autoConf))
			require.NoError(t, err)
			assert.NotContains(t, string(b), "root's secret", "the secret is not copied where the server user reads it")
		} else {
			assert.Equal(t, fs.ModeSymlink, st.Mode().Type(), "the link is left, not followed")
		}
	})

	t.Run("data directory", func(t *testing.T) {
		o, d := newOutside(t), dataDir(t)
		require.NoError(t, os.WriteFile(filepath.Join(o.dir, "PG_VERSION"), []byte("15\n"), 0o600))
		link := filepath.Join(filepath.Dir(d), "link")
		require.NoError(t, os.Symlink(o.dir, link))
		require.ErrorContains(t, recover(link, nil), "a symbolic link, refused")
		st, err := os.Stat(o.dir)
		require.NoError(t, err)
		assert.Equal(t, uint32(0), st.Sys().(*syscall.Stat_t).Uid)
	})

	t.Run("a file with another name", func(t *testing.T) {
		o, d := newOutside(t), dataDir(t)
		// Made by root here; a server user could where hard links to
		// others' files are allowed (fs.protected_hardlinks off).
		require.NoError(t, os.Link(o.secret, filepath.Join(d, "base", "secret")))
		require.ErrorContains(t, recover(d, nil), "has 2 names")
		st, err := os.Stat(o.secret)
		require.NoError(t, err)
		assert.Equal(t, uint32(0), st.Sys().(*syscall.Stat_t).Uid)
	})
}
