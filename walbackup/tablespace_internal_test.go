package walbackup

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTablespaceDirs(t *testing.T) {
	const tsMap = "16436 /srv/ts1\n16437 /srv/ts2\n"
	dirs := func(to RestoreTo) map[uint32]placedTablespace {
		t.Helper()
		got, err := tablespaceDirs(to, tsMap)
		require.NoError(t, err)
		out := map[uint32]placedTablespace{}
		for _, ts := range got {
			out[ts.OID] = ts
		}
		return out
	}
	got := dirs(RestoreTo{Image: "/r/data"})
	assert.Equal(t, "/r/data.tablespaces/16436", got[16436].Dir, "beside the image, never the original's")
	assert.Equal(t, "/r/data.tablespaces/16437", got[16437].Dir)
	assert.False(t, got[16436].Original)

	got = dirs(RestoreTo{Image: "/r/data", Tablespaces: map[string]string{"16436": "/new/a/", "/srv/ts2": "/new/b"}})
	assert.Equal(t, "/new/a", got[16436].Dir, "by OID")
	assert.Equal(t, "/new/b", got[16437].Dir, "by original location")

	got = dirs(RestoreTo{Image: "/srv/data", Force: true, Tablespaces: map[string]string{"16437": "/new/b"}})
	assert.Equal(t, placedTablespace{Tablespace: Tablespace{16436, "/srv/ts1"}, Dir: "/srv/ts1", Original: true}, got[16436], "in place: back where it was")
	assert.Equal(t, "/new/b", got[16437].Dir)
	assert.False(t, got[16437].Original)

	none, err := tablespaceDirs(RestoreTo{Image: "/r/data"}, "")
	require.NoError(t, err)
	assert.Empty(t, none)

	for name, m := range map[string]map[string]string{
		"unknown OID":           {"99": "/x"},
		"unknown path":          {"/srv/ts9": "/x"},
		"relative":              {"16436": "x"},
		"same directory":        {"16436": "/x", "16437": "/x/"},
		"by OID and path apart": {"16436": "/x", "/srv/ts1": "/y"},
	} {
		_, err := tablespaceDirs(RestoreTo{Image: "/r/data", Tablespaces: m}, tsMap)
		assert.ErrorIs(t, err, ErrTablespace, name)
	}
	_, err = tablespaceDirs(RestoreTo{Image: "/r/data", Tablespaces: map[string]string{"99": "/x"}}, tsMap)
	assert.ErrorContains(t, err, "16436 (/srv/ts1), 16437 (/srv/ts2)", "the error lists what the restore point has")
	_, err = tablespaceDirs(RestoreTo{Image: "/r/data"}, "garbage")
	assert.Error(t, err)
}

func TestCheckReplaced(t *testing.T) {
	dir := t.TempDir()
	image, ts := filepath.Join(dir, "data"), filepath.Join(dir, "ts")
	require.NoError(t, os.MkdirAll(filepath.Join(image, "pg_tblspc"), 0o700))
	require.NoError(t, os.Mkdir(ts, 0o700))
	require.NoError(t, os.Symlink(ts+"/", filepath.Join(image, "pg_tblspc", "16436")))
	assert.NoError(t, checkReplaced(image, placedTablespace{Tablespace: Tablespace{OID: 16436}, Dir: ts, Original: true}))
	err := checkReplaced(image, placedTablespace{Tablespace: Tablespace{OID: 16436}, Dir: "/etc", Original: true})
	assert.ErrorIs(t, err, ErrTablespace, "a location the instance does not use is never moved aside")
	assert.ErrorIs(t, checkReplaced(image, placedTablespace{Tablespace: Tablespace{OID: 99}, Dir: ts, Original: true}), ErrTablespace)
}

func TestMoveAside(t *testing.T) {
	dir := t.TempDir()
	a, b, missing := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "missing")
	require.NoError(t, os.WriteFile(a, []byte("a"), 0o600))
	require.NoError(t, os.WriteFile(b, []byte("b"), 0o600))
	moved, err := moveAside([]string{a, missing, b}, ".aside")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{a: a + ".aside", b: b + ".aside"}, moved)
	assert.NoFileExists(t, a)
	require.NoError(t, moveBack(moved))
	assert.FileExists(t, a)
	assert.FileExists(t, b)

	// A failure part way moves back what was moved.
	require.NoError(t, os.Mkdir(b+".aside", 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(b+".aside", "x"), nil, 0o600))
	_, err = moveAside([]string{a, b}, ".aside")
	require.Error(t, err)
	assert.FileExists(t, a, "moved back")
	assert.NoFileExists(t, a+".aside")
}
