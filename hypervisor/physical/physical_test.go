package physical_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest/local"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/physical"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository/bundle"
	repofs "github.com/pglogship/pglogship/repository/fs"
)

// onDisk is a file or directory as the test sees it, independently of the
// runtime's listing.
type onDisk struct {
	dir     bool
	size    int64
	modTime int64
	mode    uint32
	sha256  string
}

// leftOutByTest says what a base backup may leave out, per PostgreSQL's
// low-level backup documentation, written out again here on purpose.
func leftOutByTest(rel string) bool {
	name, first := path.Base(rel), strings.SplitN(rel, "/", 2)[0]
	top := !strings.Contains(rel, "/")
	switch {
	case strings.HasPrefix(name, "pgsql_tmp") || name == "pg_internal.init":
		return true
	case top && (name == "postmaster.pid" || name == "postmaster.opts" || name == "backup_label" || name == "tablespace_map"):
		return true
	case !top && strings.Contains("pg_wal pg_replslot pg_dynshmem pg_notify pg_serial pg_snapshots pg_stat_tmp pg_subtrans", first):
		return true
	}
	return false
}

// clusterOnDisk walks the data directory (following pg_tblspc/<oid>) and
// returns what an image must hold.
func clusterOnDisk(t *testing.T, dataDir string) map[string]onDisk {
	t.Helper()
	out := map[string]onDisk{}
	var walk func(abs, rel string)
	walk = func(abs, rel string) {
		entries, err := os.ReadDir(abs)
		require.NoError(t, err)
		for _, d := range entries {
			childRel := path.Join(rel, d.Name())
			childAbs := filepath.Join(abs, d.Name())
			if leftOutByTest(childRel) {
				continue
			}
			st, err := os.Lstat(childAbs)
			require.NoError(t, err)
			if st.Mode()&fs.ModeSymlink != 0 {
				if rel != "pg_tblspc" {
					continue
				}
				st, err = os.Stat(childAbs)
				require.NoError(t, err)
			}
			e := onDisk{dir: st.IsDir(), modTime: st.ModTime().UnixNano(), mode: uint32(st.Mode().Perm())}
			if !e.dir {
				b, err := os.ReadFile(childAbs)
				require.NoError(t, err)
				sum := sha256.Sum256(b)
				e.size, e.sha256 = int64(len(b)), hex.EncodeToString(sum[:])
			}
			out[childRel] = e
			if e.dir {
				walk(childAbs, childRel)
			}
		}
	}
	walk(dataDir, "")
	return out
}

func paths[V any](m map[string]V) []string {
	var out []string
	for p := range m {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func indexByPath(idx *physical.Index) map[string]physical.IndexEntry {
	m := map[string]physical.IndexEntry{}
	for _, e := range idx.Files {
		m[e.Path] = e
	}
	return m
}

func newHypervisor(t *testing.T, pg *testenv.Postgres) *physical.Hypervisor {
	t.Helper()
	d, err := local.New(local.Config{
		Binary: testenv.BuildRuntime(t),
		Conn:   runtime.ConnConfig{Host: pg.Host, Port: pg.Port, User: pg.User, Password: pg.Password},
		Logger: testenv.Logger(t),
	})
	require.NoError(t, err)
	hv, err := physical.New(physical.Config{
		Machines: []physical.Machine{{ID: "db1", Name: "database host"}},
		Guests:   d, Clock: clock.New(), Logger: testenv.Logger(t),
	})
	require.NoError(t, err)
	return hv
}

// export takes one image and releases the snapshot (twice: idempotent).
func export(t *testing.T, hv *physical.Hypervisor, repo *repofs.Repo, prefix string, base *hypervisor.Image) hypervisor.Image {
	t.Helper()
	ctx := context.Background()
	snap, err := hv.Snapshot(ctx, "db1", hypervisor.SnapshotOptions{Base: base})
	require.NoError(t, err)
	_, err = hv.Snapshot(ctx, "db1", hypervisor.SnapshotOptions{})
	require.ErrorIs(t, err, hypervisor.ErrBusy, "one snapshot of a machine at a time")
	var last hypervisor.Progress
	img, err := snap.Export(ctx, repo, prefix, func(p hypervisor.Progress) { last = p })
	require.NoError(t, err)
	assert.Equal(t, last.Total, last.Done, "progress ends complete")
	_, err = snap.Export(ctx, repo, prefix+"-again", nil)
	require.Error(t, err, "a snapshot exports once")
	require.NoError(t, snap.Release(ctx))
	require.NoError(t, snap.Release(ctx), "release is idempotent")

	require.Len(t, img.Objects, 2)
	for _, o := range img.Objects {
		b := readObject(t, repo, o.Name)
		sum := sha256.Sum256(b)
		assert.Equal(t, o.SHA256, hex.EncodeToString(sum[:]), "%s: the image records the stored object's checksum", o.Name)
		assert.Equal(t, o.Size, int64(len(b)))
	}
	assert.Equal(t, prefix, img.Prefix)
	assert.Equal(t, "db1", img.Machine)
	return img
}

func readObject(t *testing.T, src hypervisor.ObjectGetter, name string) []byte {
	t.Helper()
	rc, err := src.Get(context.Background(), name, 0, -1)
	require.NoError(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	return b
}

func storedIn(idx *physical.Index, prefix string) []string {
	var out []string
	for _, e := range idx.Files {
		if !e.Dir && e.Image == prefix {
			out = append(out, e.Path)
		}
	}
	return out
}

func bundleEntries(t *testing.T, repo *repofs.Repo, img hypervisor.Image) []string {
	t.Helper()
	name := img.Prefix + "/" + physical.FilesObject
	st, err := repo.Stat(context.Background(), name)
	require.NoError(t, err)
	r, err := bundle.Open(context.Background(), repo, name, st.Size, nil)
	require.NoError(t, err)
	var out []string
	for _, e := range r.Entries() {
		out = append(out, e.Name)
	}
	sort.Strings(out)
	return out
}

func objectSize(img hypervisor.Image, name string) int64 {
	for _, o := range img.Objects {
		if o.Name == img.Prefix+"/"+name {
			return o.Size
		}
	}
	return -1
}

func TestImagesOfARealCluster(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{Settings: map[string]string{"autovacuum": "off"}})
	tsDir := testenv.UserDir(t, pg.OSUser)
	pg.Exec(t, "postgres", "CREATE TABLESPACE ts LOCATION '"+tsDir+"'")
	pg.Exec(t, "postgres", "CREATE TABLE in_ts TABLESPACE ts AS SELECT generate_series(1, 1000) x")
	pg.Exec(t, "postgres", "CHECKPOINT")
	tsOID := pg.Psql(t, "postgres", "SELECT oid FROM pg_tablespace WHERE spcname = 'ts'")
	inTS := pg.Psql(t, "postgres", "SELECT pg_relation_filepath('in_ts')")
	require.True(t, strings.HasPrefix(inTS, "pg_tblspc/"+tsOID+"/"), inTS)
	// What an image must leave out, besides what the server keeps there.
	for name, content := range map[string]string{
		"backup_label": "an old label", "tablespace_map": "an old map", "base/pgsql_tmp/pgsql_tmp42.0": "spill",
		"same-size.conf": "content A",
	} {
		p := filepath.Join(pg.DataDir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o700))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	}
	require.NoError(t, os.Symlink("/etc", filepath.Join(pg.DataDir, "evil")))

	hv := newHypervisor(t, pg)
	repo, err := repofs.New(repofs.Config{Root: t.TempDir()})
	require.NoError(t, err)

	// A full image lists every file and directory, and only those.
	before := clusterOnDisk(t, pg.DataDir)
	full := export(t, hv, repo, "img/full", nil)
	assert.True(t, full.Full)
	assert.Empty(t, full.Base)
	assert.Equal(t, physical.Format, full.Meta[physical.MetaFormat])
	fullIdx, err := hv.ReadIndex(ctx, repo, full)
	require.NoError(t, err)
	fullBy := indexByPath(fullIdx)
	delete(fullBy, ".")
	assert.Equal(t, paths(before), paths(fullBy), "every file and directory of the cluster, nothing left out wrongly")
	for _, p := range []string{"pg_wal", "pg_replslot", "pg_stat_tmp", "pg_subtrans", "pg_notify", "pg_tblspc/" + tsOID} {
		assert.True(t, fullBy[p].Dir, "%s is kept as a directory", p)
	}
	for _, p := range []string{"postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map", "evil", "base/pgsql_tmp", "global/pg_internal.init"} {
		assert.NotContains(t, fullBy, p)
	}
	for p := range fullBy {
		assert.False(t, strings.HasPrefix(p, "pg_wal/"), "%s: no WAL in the image", p)
	}
	assert.Contains(t, fullBy, inTS, "tablespace contents are in the image")
	assert.Equal(t, storedIn(fullIdx, full.Prefix), bundleEntries(t, repo, full), "a full image stores every file")
	for p, d := range before {
		if !d.dir && fullBy[p].ModTime == d.modTime {
			assert.Equal(t, d.sha256, fullBy[p].SHA256, "%s as on disk", p)
		}
	}

	// Changes: a new table, rows into the tablespace, a checkpoint, and a
	// file whose content changes but not its size or time.
	pg.Exec(t, "postgres", "CREATE TABLE fresh (x int)")
	pg.Exec(t, "postgres", "INSERT INTO fresh SELECT generate_series(1, 10000)")
	pg.Exec(t, "postgres", "INSERT INTO in_ts SELECT generate_series(1, 1000)")
	pg.Exec(t, "postgres", "CHECKPOINT")
	fresh := pg.Psql(t, "postgres", "SELECT pg_relation_filepath('fresh')")
	sneaky := filepath.Join(pg.DataDir, "same-size.conf")
	require.NoError(t, os.WriteFile(sneaky, []byte("content B"), 0o600))
	mtime := time.Unix(0, fullBy["same-size.conf"].ModTime)
	require.NoError(t, os.Chtimes(sneaky, mtime, mtime))

	after := clusterOnDisk(t, pg.DataDir)
	inc := export(t, hv, repo, "img/inc1", &full)
	assert.False(t, inc.Full)
	assert.Equal(t, full.Prefix, inc.Base)
	incIdx, err := hv.ReadIndex(ctx, repo, inc)
	require.NoError(t, err)
	incBy := indexByPath(incIdx)
	delete(incBy, ".")
	assert.Equal(t, paths(after), paths(incBy))
	var changed []string
	for p, d := range after {
		if b, ok := fullBy[p]; !d.dir && (!ok || b.Size != d.size || b.ModTime != d.modTime || b.SHA256 != d.sha256) {
			changed = append(changed, p)
		}
	}
	sort.Strings(changed)
	stored := storedIn(incIdx, inc.Prefix)
	assert.Equal(t, changed, stored, "the incremental stores exactly the files whose size, time or content changed")
	assert.Equal(t, stored, bundleEntries(t, repo, inc))
	for _, p := range []string{fresh, inTS, "global/pg_control", "same-size.conf"} {
		assert.Contains(t, stored, p)
	}
	assert.NotContains(t, stored, "PG_VERSION")
	for _, p := range paths(incBy) {
		if e := incBy[p]; !e.Dir && e.Image == full.Prefix {
			assert.Equal(t, fullBy[p].SHA256, e.SHA256, "%s points at the full image's copy", p)
		}
	}
	fullSize, incSize := objectSize(full, physical.FilesObject), objectSize(inc, physical.FilesObject)
	t.Logf("cluster: %d entries; full image stores %d files in %d bytes; incremental stores %d files in %d bytes",
		len(fullIdx.Files), len(storedIn(fullIdx, full.Prefix)), fullSize, len(stored), incSize)
	assert.Less(t, incSize*4, fullSize, "the incremental is much smaller than the full image")

	// An incremental on an incremental, with nothing changed since.
	inc2 := export(t, hv, repo, "img/inc2", &inc)
	inc2Idx, err := hv.ReadIndex(ctx, repo, inc2)
	require.NoError(t, err)
	assert.Empty(t, storedIn(inc2Idx, inc2.Prefix), "nothing changed, nothing stored")

	// Restore: every file byte-identical to the index, and to the source
	// where the server has not touched it since.
	target := filepath.Join(t.TempDir(), "restored")
	var last hypervisor.Progress
	require.NoError(t, hv.Restore(ctx, []hypervisor.Image{full, inc, inc2}, repo, target, func(p hypervisor.Progress) { last = p }))
	assert.Equal(t, last.Total, last.Done)
	assert.Positive(t, last.Total)
	restored := clusterOnDisk(t, target)
	assert.Equal(t, paths(incBy), paths(restored))
	same := 0
	for p, e := range incBy {
		r := restored[p]
		assert.Equal(t, e.Dir, r.dir, p)
		assert.Equal(t, e.Mode, r.mode, p)
		assert.Equal(t, e.ModTime, r.modTime, p)
		if e.Dir {
			continue
		}
		assert.Equal(t, e.Size, r.size, p)
		assert.Equal(t, e.SHA256, r.sha256, "%s byte-identical to the index", p)
		if src := after[p]; src.modTime == e.ModTime && src.size == e.Size {
			assert.Equal(t, src.sha256, r.sha256, "%s byte-identical to the source", p)
			same++
		}
	}
	assert.Greater(t, same, len(stored), "most files are compared with the source")
	link, err := os.Readlink(filepath.Join(target, "pg_tblspc", tsOID))
	require.NoError(t, err, "the tablespace is a link, as PostgreSQL requires")
	oid, err := strconv.ParseUint(tsOID, 10, 32)
	require.NoError(t, err)
	assert.Equal(t, hypervisor.DefaultTablespaceDir(target, uint32(oid)), link, "into its own directory beside the target")
	assert.FileExists(t, filepath.Join(link, strings.TrimPrefix(inTS, "pg_tblspc/"+tsOID+"/")))
	for _, d := range []string{"pg_wal", "pg_replslot", "pg_stat_tmp"} {
		entries, err := os.ReadDir(filepath.Join(target, d))
		require.NoError(t, err)
		assert.Empty(t, entries, d)
	}
	root, err := os.Stat(target)
	require.NoError(t, err)
	assert.Equal(t, fullIdx.Files[0].Mode, uint32(root.Mode().Perm()), "the data directory keeps its mode")

	// An existing target is never overwritten.
	err = hv.Restore(ctx, []hypervisor.Image{full, inc}, repo, target, nil)
	require.ErrorIs(t, err, fs.ErrExist)
	_, err = os.Stat(filepath.Join(target, "PG_VERSION"))
	require.NoError(t, err, "the existing target is left alone")

	// Broken chains are refused before anything is written.
	skipped := inc2
	broken := map[string][]hypervisor.Image{
		"no full image":  {inc},
		"a gap":          {full, skipped},
		"two full":       {full, full},
		"base elsewhere": {full, withBase(inc, "img/other")},
	}
	for name, chain := range broken {
		dir := filepath.Join(t.TempDir(), "x")
		err := hv.Restore(ctx, chain, repo, dir, nil)
		require.ErrorIs(t, err, physical.ErrBrokenChain, name)
		assert.NoDirExists(t, dir, name)
	}

	// Corrupted objects are refused, and what was written is removed.
	flip := func(name string, at int64) func() {
		p := filepath.Join(repo.Root(), name)
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		orig := append([]byte(nil), b...)
		b[at] ^= 0x40
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return func() { require.NoError(t, os.WriteFile(p, orig, 0o600)) }
	}
	br, err := bundle.Open(ctx, repo, full.Prefix+"/"+physical.FilesObject, objectSize(full, physical.FilesObject), nil)
	require.NoError(t, err)
	e, ok := br.Entry("PG_VERSION")
	require.True(t, ok)
	undo := flip(full.Prefix+"/"+physical.FilesObject, e.Offset+e.Length/2)
	dir := filepath.Join(t.TempDir(), "corrupt")
	err = hv.Restore(ctx, []hypervisor.Image{full, inc}, repo, dir, nil)
	require.ErrorIs(t, err, bundle.ErrCorrupt)
	assert.Contains(t, err.Error(), "PG_VERSION")
	assert.NoDirExists(t, dir, "a failed restore removes what it wrote")
	undo()
	undo = flip(inc.Prefix+"/"+physical.IndexObject, 40)
	err = hv.Restore(ctx, []hypervisor.Image{full, inc}, repo, dir, nil)
	require.ErrorIs(t, err, physical.ErrChecksum)
	assert.NoDirExists(t, dir)
	undo()
	require.NoError(t, hv.Restore(ctx, []hypervisor.Image{full, inc}, repo, dir, nil), "whole again")
	assert.Equal(t, restored, clusterOnDisk(t, dir), "full and incremental restore the same cluster as the longer chain")

	// Tablespaces where the caller says, in new directories only.
	chain := []hypervisor.Image{full, inc}
	base := t.TempDir()
	mapped := filepath.Join(base, "new", "parents", "ts")
	placed, err := hv.RestoreTablespaces(ctx, chain, repo, filepath.Join(base, "one"),
		hypervisor.RestoreOptions{Tablespaces: map[uint32]string{uint32(oid): mapped, 999: "/not/in/the/image"}})
	require.NoError(t, err)
	assert.Equal(t, map[uint32]string{uint32(oid): mapped}, placed)
	link, err = os.Readlink(filepath.Join(base, "one", "pg_tblspc", tsOID))
	require.NoError(t, err)
	assert.Equal(t, mapped, link)
	assert.Equal(t, restored, clusterOnDisk(t, filepath.Join(base, "one")))
	assert.NoDirExists(t, "/not/in/the/image")
	for name, to := range map[string]string{
		"an existing tablespace directory": mapped,
		"inside the data directory":        filepath.Join(base, "two", "ts"),
		"holding the data directory":       base,
		"relative":                         "ts",
	} {
		_, err := hv.RestoreTablespaces(ctx, chain, repo, filepath.Join(base, "two"),
			hypervisor.RestoreOptions{Tablespaces: map[uint32]string{uint32(oid): to}})
		require.Error(t, err, name)
		assert.NoDirExists(t, filepath.Join(base, "two"), "%s: refused before anything is written", name)
	}
	require.NoError(t, hv.Restore(ctx, chain, repo, filepath.Join(base, "three"), nil))
	_, err = hv.RestoreTablespaces(ctx, chain, repo, filepath.Join(base, "four"),
		hypervisor.RestoreOptions{Tablespaces: map[uint32]string{uint32(oid): hypervisor.DefaultTablespaceDir(filepath.Join(base, "three"), uint32(oid))}})
	require.ErrorIs(t, err, fs.ErrExist, "another restore's tablespace is never overwritten")

	// A corrupt tablespace file: the tablespace, the parents made for it
	// and the target are removed.
	br, err = bundle.Open(ctx, repo, inc.Prefix+"/"+physical.FilesObject, objectSize(inc, physical.FilesObject), nil)
	require.NoError(t, err)
	e, ok = br.Entry(inTS)
	require.True(t, ok)
	undo = flip(inc.Prefix+"/"+physical.FilesObject, e.Offset+e.Length/2)
	made := filepath.Join(base, "made")
	_, err = hv.RestoreTablespaces(ctx, chain, repo, filepath.Join(base, "five"),
		hypervisor.RestoreOptions{Tablespaces: map[uint32]string{uint32(oid): filepath.Join(made, "a", "ts")}})
	require.ErrorIs(t, err, bundle.ErrCorrupt)
	assert.NoDirExists(t, filepath.Join(base, "five"))
	assert.NoDirExists(t, made, "the parents it made are removed with the tablespace")
	undo()
}

func withBase(img hypervisor.Image, base string) hypervisor.Image {
	img.Base = base
	return img
}
