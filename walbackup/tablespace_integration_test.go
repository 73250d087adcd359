package walbackup_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/walbackup"
)

// tablespaceWorkload is a cluster with two user tablespaces used by two
// databases: items (the fixture's table) in ts1; a database "second"
// whose default tablespace is ts2, with a table in ts1 too; rows,
// a large transaction and DDL in both databases during the workload.
type tablespaceWorkload struct {
	locations map[string]string // tablespace name -> original location
	oids      map[string]uint32
	notes     []int // f.txns index of each note inserted into second.notes
	big       int   // f.txns index of the 50,000-row transaction
	later     int   // f.txns index of the DDL that makes a table in ts2
}

func newTablespaceFixture(t *testing.T, major int) (*pitrFixture, *tablespaceWorkload) {
	ctx := context.Background()
	w := &tablespaceWorkload{locations: map[string]string{}, oids: map[string]uint32{}}
	var second *pgx.Conn
	f := newPITRFixture(t, pitrWorkload{txns: layoutTxns,
		pg: testenv.PostgresConfig{Major: major, Settings: map[string]string{"autovacuum": "off"}}, // the originals stay quiet to be compared
		before: func(t *testing.T, f *pitrFixture) {
			for _, name := range []string{"ts1", "ts2"} {
				dir := filepath.Join(testenv.UserDir(t, f.pg.OSUser), "location of "+name)
				require.NoError(t, os.Mkdir(dir, 0o700))
				require.NoError(t, chownLike(dir, filepath.Dir(dir)))
				f.pg.Exec(t, "postgres", fmt.Sprintf("CREATE TABLESPACE %s LOCATION '%s'", name, dir))
				w.locations[name] = dir
				oid, err := strconv.ParseUint(f.pg.Psql(t, "postgres", "SELECT oid FROM pg_tablespace WHERE spcname = '"+name+"'"), 10, 32)
				require.NoError(t, err)
				w.oids[name] = uint32(oid)
			}
			f.pg.Exec(t, "postgres", "ALTER TABLE items SET TABLESPACE ts1")
			f.pg.Exec(t, "postgres", "CREATE DATABASE second TABLESPACE ts2")
			f.pg.Exec(t, "second", "CREATE TABLE notes (n int); CREATE TABLE big (n int) TABLESPACE ts1")
			second = f.pg.Connect(t, "second")
		},
		during: func(t *testing.T, f *pitrFixture, conn *pgx.Conn, i int) {
			switch {
			case i == 10:
				w.big = f.record(inTransaction(t, second, "INSERT INTO big SELECT generate_series(1, 50000)"), "50,000 rows in ts1 from second")
			case i == 20:
				w.later = f.record(inTransaction(t, conn, "CREATE TABLE later (n int) TABLESPACE ts2; INSERT INTO later VALUES (1)"), "DDL in ts2")
			case i%4 == 1:
				w.notes = append(w.notes, f.record(inTransaction(t, second, fmt.Sprintf("INSERT INTO notes VALUES (%d)", i)), "a note"))
			}
		}})
	require.NoError(t, second.Close(ctx))
	return f, w
}

// chownLike gives p the owner of like.
func chownLike(p, like string) error {
	st, err := os.Stat(like)
	if err != nil {
		return err
	}
	sys := st.Sys().(*syscall.Stat_t)
	return os.Chown(p, int(sys.Uid), int(sys.Gid))
}

// check checks a server restored with the first n transactions: the rows
// in both databases and both tablespaces, and where its tablespaces are.
func (w *tablespaceWorkload) check(t *testing.T, pg *testenv.Postgres, n int, locations map[string]string) {
	t.Helper()
	var notes []string
	for k, idx := range w.notes {
		if idx < n {
			notes = append(notes, strconv.Itoa(4*k+1))
		}
	}
	assert.Equal(t, strings.Join(notes, ","), pg.Psql(t, "second", "SELECT coalesce(string_agg(n::text, ',' ORDER BY n), '') FROM notes"), "notes in ts2")
	big := "0"
	if w.big < n {
		big = "50000"
	}
	assert.Equal(t, big, pg.Psql(t, "second", "SELECT count(*) FROM big"), "the large transaction in ts1")
	later := "0"
	if w.later < n {
		later = "1"
		assert.Equal(t, "1", pg.Psql(t, "postgres", "SELECT count(*) FROM later"))
	}
	assert.Equal(t, later, pg.Psql(t, "postgres", "SELECT count(*) FROM pg_class WHERE relname = 'later'"), "the DDL")
	var want []string
	for _, name := range []string{"ts1", "ts2"} {
		want = append(want, name+"="+locations[name])
	}
	assert.Equal(t, strings.Join(want, "\n"), pg.Psql(t, "postgres",
		"SELECT spcname || '=' || pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname LIKE 'ts_' ORDER BY 1"))
}

// defaultLocations are where a restore into dataDir puts the tablespaces
// when told nothing.
func (w *tablespaceWorkload) defaultLocations(dataDir string) map[string]string {
	out := map[string]string{}
	for name, oid := range w.oids {
		out[name] = hypervisor.DefaultTablespaceDir(dataDir, oid)
	}
	return out
}

// treeSums lists every file and directory below dir (not following links)
// with its type, mode, size, time and content's SHA-256.
func treeSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		e := fmt.Sprintf("%v %d %d", st.Mode(), st.Size(), st.ModTime().UnixNano())
		if st.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			e += " " + hex.EncodeToString(sum[:])
		}
		out[rel] = e
		return nil
	}))
	return out
}

// A cluster with two user tablespaces used by two databases, restored on
// the physical path beside the running original: to random times, to a
// named restore point and to the latest state, row for row in both
// databases, each restore's tablespaces in directories of its own beside
// its data directory, linked from pg_tblspc, and the original's
// tablespace directories untouched, byte for byte. Then a mapping puts
// them where the caller says, and a restore in place puts them back at
// their original locations, the old ones moved aside. On the oldest and
// the newest release, and on Debian's (0).
func TestRestoreWithTablespaces(t *testing.T) {
	onReleases(t, append([]int{0}, layoutReleases...), restoreWithTablespaces)
}

func restoreWithTablespaces(t *testing.T, major int) {
	ctx := context.Background()
	f, w := newTablespaceFixture(t, major)
	f.pg.Exec(t, "postgres", "CHECKPOINT") // nothing left for the original to write
	originals := map[string]map[string]string{}
	for name, dir := range w.locations {
		originals[name] = treeSums(t, dir)
		require.NotEmpty(t, originals[name])
	}

	f.restoreAtRandom(t, 16, 4, []int{w.big, w.big + 1, w.later + 1}, func(t *testing.T, pg *testenv.Postgres, n int) {
		w.check(t, pg, n, w.defaultLocations(pg.DataDir))
	})
	for name, target := range map[string]struct {
		t walbackup.Target
		n int
	}{"named restore point": {walbackup.ToName("before the purge"), f.namedAt}, "latest": {walbackup.Latest(), len(f.txns)}} {
		t.Run(name, func(t *testing.T) {
			f.restoreChecked(t, target.t, target.n, func(t *testing.T, pg *testenv.Postgres) {
				w.check(t, pg, target.n, w.defaultLocations(pg.DataDir))
			})
		})
	}
	for name, dir := range w.locations {
		assert.Equal(t, originals[name], treeSums(t, dir), "the original's tablespace %s is untouched", name)
	}

	t.Run("drill", func(t *testing.T) {
		dir := filepath.Join(testenv.UserDir(t, f.pg.OSUser), "scratch")
		scratch := testenv.PostgresFor(t, dir, f.pg)
		res, err := f.job.Drill(ctx, walbackup.DrillRequest{Machine: "db1", SQL: []string{"SELECT count(*) FROM items"},
			Scratch: walbackup.RestoreTo{Image: dir, Guest: walbackup.Machine{ID: "db1"}, Recovery: f.recoveryOptions(scratch)}})
		require.NoError(t, err)
		assert.True(t, res.Passed, "%v", res.Failures)
		assert.Contains(t, res.Databases, "second", "the database in ts2 connects")
		assert.NoDirExists(t, dir, "the scratch copy is removed")
		assert.NoDirExists(t, filepath.Dir(hypervisor.DefaultTablespaceDir(dir, 0)), "with its tablespaces")
	})

	base := testenv.UserDir(t, f.pg.OSUser)
	dataDir := filepath.Join(base, "mapped")
	pg := testenv.PostgresFor(t, dataDir, f.pg)
	recovery := f.recoveryOptions(pg)
	t.Run("mapping", func(t *testing.T) {
		to := walbackup.RestoreTo{Image: dataDir, Guest: walbackup.Machine{ID: "db1"}, Recovery: recovery}
		to.Tablespaces = map[string]string{"no such tablespace": filepath.Join(base, "x")}
		_, err := f.job.Restore(ctx, walbackup.RestoreRequest{Machine: "db1", Target: walbackup.Latest()}, to)
		require.ErrorIs(t, err, walbackup.ErrTablespace)
		assert.ErrorContains(t, err, w.locations["ts1"], "the error names the restore point's tablespaces")
		assert.NoDirExists(t, dataDir, "nothing is written")

		mapped := map[string]string{"ts1": filepath.Join(base, "disk a", "ts1"), "ts2": filepath.Join(base, "disk b", "ts2")}
		to.Tablespaces = map[string]string{strconv.FormatUint(uint64(w.oids["ts1"]), 10): mapped["ts1"], w.locations["ts2"]: mapped["ts2"]}
		res, err := f.job.Restore(ctx, walbackup.RestoreRequest{Machine: "db1", Target: walbackup.Latest()}, to)
		require.NoError(t, err, "%s", res.Recovery.Log)
		assert.Equal(t, f.want(len(f.txns)), items(t, pg))
		w.check(t, pg, len(f.txns), mapped)
		pg.Stop(t)
	})

	t.Run("in place", func(t *testing.T) {
		before := map[string]map[string]string{}
		for name, dir := range w.locations {
			before[name] = treeSums(t, dir)
		}
		to := walbackup.RestoreTo{Image: f.pg.DataDir, Guest: walbackup.Machine{ID: "db1"}, Force: true,
			Recovery: walbackup.RecoveryOptions{OSUser: f.pg.OSUser, BinDir: f.pg.BinDir}}
		res, err := f.job.Restore(ctx, walbackup.RestoreRequest{Machine: "db1", Target: walbackup.Latest()}, to)
		require.NoError(t, err, "%s", res.Recovery.Log)
		assert.Equal(t, f.want(len(f.txns)), items(t, f.pg))
		w.check(t, f.pg, len(f.txns), w.locations)
		for name, dir := range w.locations {
			aside, err := filepath.Glob(dir + ".replaced-*")
			require.NoError(t, err)
			require.Len(t, aside, 1, "the replaced tablespace %s is kept", name)
			assert.Equal(t, before[name], treeSums(t, aside[0]), "moved aside as it was")
		}
	})
}
