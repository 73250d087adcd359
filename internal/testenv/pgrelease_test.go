package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every release testenv knows starts on loopback and a private socket, and
// is the release it was asked for, read back from the server.
func TestPostgresReleases(t *testing.T) {
	SkipIfShort(t)
	for _, r := range Releases {
		t.Run(fmt.Sprint(r.Major), func(t *testing.T) {
			t.Parallel()
			pg := StartPostgres(t, PostgresConfig{Major: r.Major})
			version := pg.Psql(t, "postgres", "SELECT version()")
			t.Log(version)
			assert.True(t, strings.HasPrefix(version, fmt.Sprintf("PostgreSQL %d.", r.Major)), version)
			assert.Equal(t, r.Major, pg.Major(t))
			assert.Equal(t, "127.0.0.1", pg.Psql(t, "postgres", "SHOW listen_addresses"))
		})
	}
}

// A tarball is extracted only below its folder, with regular files and
// folders only.
func TestExtractRefusesWhatLeavesTheFolder(t *testing.T) {
	tgz := func(hdrs ...*tar.Header) *bytes.Buffer {
		var buf bytes.Buffer
		gz := gzip.NewWriter(&buf)
		tw := tar.NewWriter(gz)
		for _, h := range hdrs {
			require.NoError(t, tw.WriteHeader(h))
			if h.Typeflag == tar.TypeReg {
				_, err := tw.Write(make([]byte, h.Size))
				require.NoError(t, err)
			}
		}
		require.NoError(t, tw.Close())
		require.NoError(t, gz.Close())
		return &buf
	}
	for name, h := range map[string]*tar.Header{
		"parent":      {Name: "package/../../x", Typeflag: tar.TypeReg, Mode: 0o644},
		"outside":     {Name: "other/x", Typeflag: tar.TypeReg, Mode: 0o644},
		"a link":      {Name: "package/x", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"},
		"a hard link": {Name: "package/x", Typeflag: tar.TypeLink, Linkname: "package/y"},
	} {
		dir := t.TempDir()
		require.Error(t, extract(tgz(h), dir), name)
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		assert.Empty(t, entries, name)
	}
	dir := t.TempDir()
	require.NoError(t, extract(tgz(&tar.Header{Name: "package/native/bin/postgres", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 3}), dir))
	fi, err := os.Stat(filepath.Join(dir, "native", "bin", "postgres"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm(), "no setuid bit from a tarball")
}
