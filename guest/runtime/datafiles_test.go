package runtime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/proto"
	"github.com/pglogship/pglogship/repository/checksum"
)

// fakeCluster lays out a data directory with one tablespace, files a base
// backup leaves out, and links and a FIFO the listing must not follow.
func fakeCluster(t *testing.T) (dataDir, outside string) {
	t.Helper()
	top := t.TempDir()
	dataDir, ts, outside := filepath.Join(top, "data"), filepath.Join(top, "ts"), filepath.Join(top, "outside")
	files := map[string]string{
		"data/PG_VERSION":                      "16\n",
		"data/postgresql.conf":                 "x = 1\n",
		"data/base/1/1259":                     "catalog",
		"data/base/1/pg_internal.init":         "cache",
		"data/base/1/pgsql_tmp12.0":            "tmp",
		"data/base/pgsql_tmp/pgsql_tmp1.0":     "tmp",
		"data/global/pg_control":               "control",
		"data/global/pg_internal.init":         "cache",
		"data/pg_wal/000000010000000000000001": "wal",
		"data/pg_wal/archive_status/x.ready":   "",
		"data/pg_stat_tmp/global.stat":         "stats",
		"data/pg_replslot/s/state":             "slot",
		"data/pg_subtrans/0000":                "sub",
		"data/pg_notify/0000":                  "n",
		"data/postmaster.pid":                  "123",
		"data/postmaster.opts":                 "opts",
		"data/backup_label":                    "old label",
		"data/tablespace_map":                  "old map",
		"data/sub/backup_label":                "kept: not at the top",
		"data/empty":                           "",
		"ts/PG_16_1/5/16385":                   "in a tablespace",
		"ts/PG_16_1/pgsql_tmp/pgsql_tmp2.0":    "tmp",
		"outside/secret":                       "secret",
	}
	for name, content := range files {
		p := filepath.Join(top, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o700))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	}
	for _, d := range []string{"data/pg_dynshmem", "data/pg_serial", "data/pg_snapshots", "data/pg_tblspc"} {
		require.NoError(t, os.MkdirAll(filepath.Join(top, d), 0o700))
	}
	require.NoError(t, os.Symlink(ts, filepath.Join(dataDir, "pg_tblspc", "16384")))
	require.NoError(t, os.Symlink(outside, filepath.Join(dataDir, "pg_tblspc", "notanoid")))
	require.NoError(t, os.Symlink(outside, filepath.Join(dataDir, "evil")))
	require.NoError(t, os.Symlink("../../PG_VERSION", filepath.Join(dataDir, "base", "1", "link")))
	require.NoError(t, os.Symlink(outside, filepath.Join(ts, "PG_16_1", "evil")))
	require.NoError(t, syscall.Mkfifo(filepath.Join(dataDir, "fifo"), 0o600))
	return dataDir, outside
}

func TestListDataFiles(t *testing.T) {
	dataDir, _ := fakeCluster(t)
	var got []guest.DataFile
	require.NoError(t, ListDataFiles(context.Background(), dataDir, guest.DataListOptions{Checksums: true}, func(f guest.DataFile) error {
		got = append(got, f)
		return nil
	}))
	var paths []string
	for _, f := range got {
		paths = append(paths, f.Path)
	}
	assert.Equal(t, []string{".", "PG_VERSION", "base", "base/1", "base/1/1259", "empty", "global", "global/pg_control",
		"pg_dynshmem", "pg_notify", "pg_replslot", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans",
		"pg_tblspc", "pg_tblspc/16384", "pg_tblspc/16384/PG_16_1", "pg_tblspc/16384/PG_16_1/5", "pg_tblspc/16384/PG_16_1/5/16385",
		"pg_wal", "postgresql.conf", "sub", "sub/backup_label"}, paths)
	byPath := map[string]guest.DataFile{}
	for _, f := range got {
		byPath[f.Path] = f
	}
	assert.True(t, byPath["pg_tblspc/16384"].Dir, "the tablespace link is listed as the directory it points to")
	sum := sha256.Sum256([]byte("in a tablespace"))
	f := byPath["pg_tblspc/16384/PG_16_1/5/16385"]
	assert.Equal(t, hex.EncodeToString(sum[:]), f.SHA256)
	assert.Equal(t, int64(len("in a tablespace")), f.Size)
	assert.Equal(t, uint32(0o600), f.Mode)
	assert.NotZero(t, f.ModTime)
	assert.Equal(t, hex.EncodeToString(sha256.New().Sum(nil)), byPath["empty"].SHA256)

	got = got[:0]
	require.NoError(t, ListDataFiles(context.Background(), dataDir, guest.DataListOptions{}, func(f guest.DataFile) error {
		got = append(got, f)
		return nil
	}))
	for _, f := range got {
		assert.Empty(t, f.SHA256, "no checksums unless asked")
	}

	require.NoError(t, os.Symlink(dataDir, filepath.Join(dataDir, "pg_tblspc", "1")))
	err := ListDataFiles(context.Background(), dataDir, guest.DataListOptions{}, func(guest.DataFile) error { return nil })
	require.ErrorContains(t, err, "loop")
}

func TestDataOpenerRefusesUnsafePaths(t *testing.T) {
	dataDir, _ := fakeCluster(t)
	o := newDataOpener(dataDir)
	defer o.Close()
	for _, p := range []string{"PG_VERSION", "base/1/1259", "pg_tblspc/16384/PG_16_1/5/16385", "sub/backup_label"} {
		f, err := o.open(p)
		require.NoError(t, err, p)
		f.Close()
	}
	tests := map[string]error{
		"/etc/passwd":                         guest.ErrUnsafePath,
		"../outside/secret":                   guest.ErrUnsafePath,
		"base/../../outside/secret":           guest.ErrUnsafePath,
		"./PG_VERSION":                        guest.ErrUnsafePath,
		"evil/secret":                         guest.ErrUnsafePath, // a link out of the data directory
		"base/1/link":                         guest.ErrUnsafePath, // a link inside it: not followed either
		"pg_tblspc/notanoid/secret":           guest.ErrUnsafePath, // only pg_tblspc/<oid> links
		"pg_tblspc/16384/PG_16_1/evil/secret": guest.ErrUnsafePath,
		"pg_tblspc/16384":                     guest.ErrUnsafePath, // a directory
		"base":                                guest.ErrUnsafePath,
		"fifo":                                guest.ErrUnsafePath,
		"base/99/1":                           errVanished,
		"PG_VERSION/x":                        errVanished,
		"pg_tblspc/99/PG_16_1/1":              errVanished,
	}
	for p, want := range tests {
		f, err := o.open(p)
		require.ErrorIs(t, err, want, p)
		require.Nil(t, f)
	}
}

func TestSendDataFiles(t *testing.T) {
	dataDir, _ := fakeCluster(t)
	var wire bytes.Buffer
	snd, err := NewSender(proto.NewWriter(&wire), guest.Instance{})
	require.NoError(t, err)
	vanished, err := sendDataFiles(snd, dataDir, []string{"PG_VERSION", "base/99/1", "pg_tblspc/16384/PG_16_1/5/16385", "empty"})
	require.NoError(t, err)
	assert.Equal(t, []string{"base/99/1"}, vanished)
	r := proto.NewReader(&wire)
	for _, want := range []string{"PG_VERSION", "pg_tblspc/16384/PG_16_1/5/16385", "empty"} {
		start, raw, end := receive(t, r)
		assert.Equal(t, want, start.Name)
		content, err := os.ReadFile(filepath.Join(dataDir, want))
		require.NoError(t, err)
		assert.Equal(t, content, raw)
		assert.Equal(t, checksum.Of(checksum.SHA256, content).String(), end.Sum, "data files sum with SHA-256")
	}

	wire.Reset()
	_, err = sendDataFiles(snd, dataDir, []string{"PG_VERSION", "evil/secret"})
	require.ErrorIs(t, err, guest.ErrUnsafePath)
	assert.Zero(t, wire.Len(), "nothing is sent when one path is refused")
}

// A file swapped for a link between the listing and the checksum read is
// not followed: the sum is of nothing outside the data directory.
func TestHashDoesNotFollowALink(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "outside")
	require.NoError(t, os.WriteFile(secret, []byte("not the server's"), 0o600))
	link := filepath.Join(dir, "16384")
	require.NoError(t, os.Symlink(secret, link))
	w := &dataWalker{buf: make([]byte, 4096)}
	_, err := w.hash(link)
	require.ErrorIs(t, err, syscall.ELOOP)
	_, err = w.hash(secret)
	require.NoError(t, err, "a regular file is summed")
}
