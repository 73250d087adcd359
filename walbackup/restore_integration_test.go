package walbackup_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

// txn is one committed transaction of the workload: what it did to the
// items table, and when PostgreSQL says it committed. A transaction of a
// layout's own (pitrWorkload.during) has no ops and a note.
type txn struct {
	xid    uint32
	ops    []op
	note   string
	commit time.Time
}

type op struct {
	kind   string // insert, update, delete
	id, to int
}

// pitrWorkload says what a pitrFixture runs on and does besides its
// transactions on the items table; the zero value is the plain workload.
type pitrWorkload struct {
	pg   testenv.PostgresConfig // track_commit_timestamp is turned on
	txns int                    // transactions on items; 0: 80
	// before runs before the restore point is taken; during runs after
	// transaction i on items, on the workload's connection, and records
	// each transaction it commits with record or recordLast.
	before func(t *testing.T, f *pitrFixture)
	during func(t *testing.T, f *pitrFixture, conn *pgx.Conn, i int)
	tweak  func(c *walbackup.Config) // the job's configuration, after the fixture's own
}

// pitrFixture is a real PostgreSQL protected by a job on the real clock
// (so restore point times and commit times share one clock), with a
// physical restore point, then a workload of single-row inserts, updates
// and deletes, each its own transaction (and a layout's transactions in
// between), a named restore point in the middle, and all its WAL shipped.
type pitrFixture struct {
	*realJob
	txns    []txn // in commit order, which is WAL order: one committed at a time
	namedAt int   // transactions before it
	lsnAt   int   // transactions before lsn
	lsn     wal.LSN
}

func newPITRFixture(t *testing.T, w pitrWorkload) *pitrFixture {
	ctx := context.Background()
	f := &pitrFixture{}
	pgcfg := w.pg
	pgcfg.Settings = maps.Clone(pgcfg.Settings)
	if pgcfg.Settings == nil {
		pgcfg.Settings = map[string]string{}
	}
	pgcfg.Settings["track_commit_timestamp"] = "on"
	if w.txns == 0 {
		w.txns = 80
	}
	f.realJob = newRealJobOn(t, pgcfg, physicalImages(t, true, nil), func(c *walbackup.Config) {
		c.Clock = clock.New()
		if w.tweak != nil {
			w.tweak(c)
		}
	})
	pg := f.pg
	pg.Exec(t, "postgres", "CREATE TABLE items (id int PRIMARY KEY, val int)")
	if w.before != nil {
		w.before(t, f)
	}
	require.NoError(t, f.job.Enable(ctx))
	f.idle(t)
	require.NoError(t, f.job.StartParent(ctx))
	f.idle(t)

	conn := pg.Connect(t, "postgres")
	rng := rand.New(rand.NewPCG(7, 7))
	live := map[int]bool{}
	next := 1
	for i := 0; i < w.txns; i++ {
		var o op
		switch k := rng.IntN(3); {
		case k == 0 || len(live) < 3:
			o = op{kind: "insert", id: next, to: rng.IntN(1000)}
			next++
		case k == 1:
			o = op{kind: "update", id: pick(rng, live), to: rng.IntN(1000)}
		default:
			o = op{kind: "delete", id: pick(rng, live)}
		}
		tx, err := conn.Begin(ctx)
		require.NoError(t, err)
		var xid uint32
		require.NoError(t, tx.QueryRow(ctx, "SELECT txid_current()::text::bigint").Scan(&xid))
		switch o.kind {
		case "insert":
			_, err = tx.Exec(ctx, "INSERT INTO items VALUES ($1, $2)", o.id, o.to)
			live[o.id] = true
		case "update":
			_, err = tx.Exec(ctx, "UPDATE items SET val = $2 WHERE id = $1", o.id, o.to)
		case "delete":
			_, err = tx.Exec(ctx, "DELETE FROM items WHERE id = $1", o.id)
			delete(live, o.id)
		}
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
		f.txns = append(f.txns, txn{xid: xid, ops: []op{o}})
		switch i {
		case 30:
			var lsn string
			require.NoError(t, conn.QueryRow(ctx, "SELECT pg_create_restore_point('before the purge')::text").Scan(&lsn))
			f.namedAt = len(f.txns)
		case 55:
			var lsn string
			require.NoError(t, conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn))
			var err error
			f.lsn, err = wal.ParseLSN(lsn)
			require.NoError(t, err)
			f.lsnAt = len(f.txns)
		}
		if w.during != nil {
			w.during(t, f, conn, i)
		}
		if i%25 == 24 {
			_, err := conn.Exec(ctx, "SELECT pg_switch_wal()")
			require.NoError(t, err)
		}
		time.Sleep(time.Duration(2+rng.IntN(8)) * time.Millisecond) // commit times apart
	}
	pg.SwitchWAL(t, 1) // the last commits archived too
	require.NoError(t, f.job.Disable(ctx))
	for i := range f.txns {
		var ts time.Time
		require.NoError(t, conn.QueryRow(ctx, "SELECT pg_xact_commit_timestamp($1::text::xid)", strconv.FormatUint(uint64(f.txns[i].xid), 10)).Scan(&ts))
		f.txns[i].commit = ts
	}
	for i := 1; i < len(f.txns); i++ {
		require.True(t, f.txns[i].commit.After(f.txns[i-1].commit), "transactions %d and %d committed in this order", i-1, i)
	}
	return f
}

// record notes a transaction of the layout's, committed as xid; it
// returns its index in f.txns.
func (f *pitrFixture) record(xid uint32, note string) int {
	f.txns = append(f.txns, txn{xid: xid, note: note})
	return len(f.txns) - 1
}

// recordLast records the transaction the server committed last, for
// statements that commit on their own (CREATE DATABASE): on a server
// where nothing else commits meanwhile (autovacuum off).
func (f *pitrFixture) recordLast(t *testing.T, conn *pgx.Conn, note string) int {
	t.Helper()
	var xid uint32
	require.NoError(t, conn.QueryRow(context.Background(), "SELECT xid::text::bigint FROM pg_last_committed_xact()").Scan(&xid))
	if len(f.txns) > 0 {
		require.Greater(t, xid, f.txns[len(f.txns)-1].xid, "%s: the last commit is this one", note)
	}
	return f.record(xid, note)
}

func pick(rng *rand.Rand, live map[int]bool) int {
	ids := make([]int, 0, len(live))
	for id := range live {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids[rng.IntN(len(ids))]
}

// want is the items table after the first n transactions, as psql prints it.
func (f *pitrFixture) want(n int) string {
	rows := map[int]int{}
	for _, tx := range f.txns[:n] {
		for _, o := range tx.ops {
			switch o.kind {
			case "insert", "update":
				rows[o.id] = o.to
			case "delete":
				delete(rows, o.id)
			}
		}
	}
	ids := make([]int, 0, len(rows))
	for id := range rows {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%d|%d", id, rows[id])
	}
	return b.String()
}

// restore runs Job.Restore into a new directory, on a port and socket of
// its own, and returns a handle on the restored server.
func (f *pitrFixture) restore(t *testing.T, target walbackup.Target) (*testenv.Postgres, walbackup.RestoreResult, error) {
	t.Helper()
	dir := filepath.Join(testenv.UserDir(t, f.pg.OSUser), "restored")
	pg := testenv.PostgresFor(t, dir, f.pg)
	res, err := f.job.Restore(context.Background(), walbackup.RestoreRequest{Machine: "db1", Target: target},
		walbackup.RestoreTo{Image: dir, Guest: walbackup.Machine{ID: "db1"}, Recovery: f.recoveryOptions(pg)})
	return pg, res, err
}

// recoveryOptions runs a recovery as the scratch or restored server pg:
// its port and socket, the original's OS user, configuration file and
// release's binaries, listening on loopback only.
func (f *pitrFixture) recoveryOptions(pg *testenv.Postgres) walbackup.RecoveryOptions {
	return walbackup.RecoveryOptions{Port: pg.Port, SocketDir: pg.SocketDir, OSUser: f.pg.OSUser, ConfigFile: f.pg.ConfigFile,
		BinDir: f.pg.BinDir, Settings: map[string]string{"listen_addresses": "127.0.0.1"}}
}

// restoreChecked restores to target, which n transactions are committed
// by, and checks the items table row for row and, with check, the rest.
func (f *pitrFixture) restoreChecked(t *testing.T, target walbackup.Target, n int, check func(t *testing.T, pg *testenv.Postgres)) {
	t.Helper()
	pg, res, err := f.restore(t, target)
	require.NoError(t, err, "%s", res.Recovery.Log)
	assert.Equal(t, f.want(n), items(t, pg), "the rows of the %d transactions committed by %s", n, target)
	if check != nil {
		check(t, pg)
	}
	pg.Stop(t)
}

func items(t *testing.T, pg *testenv.Postgres) string {
	t.Helper()
	return pg.Psql(t, "postgres", "SELECT id, val FROM items ORDER BY id")
}

// Point-in-time correctness: 20 restores to random times over the
// workload, on the physical path, each into its own directory; every
// restored instance holds exactly the rows of the transactions committed
// at or before its target, row for row. Targets are commit times
// themselves (inclusive: that commit is in) and times between commits.
func TestPointInTimeRestores(t *testing.T) {
	t.Parallel()
	f := newPITRFixture(t, pitrWorkload{})
	rng := rand.New(rand.NewPCG(20, 26))
	for trial := 0; trial < 20; trial++ {
		k := rng.IntN(len(f.txns))
		target := f.txns[k].commit
		if trial%2 == 1 && k+1 < len(f.txns) {
			target = target.Add(f.txns[k+1].commit.Sub(target) / 2) // between k and k+1
		}
		n := 0
		for _, tx := range f.txns {
			if !tx.commit.After(target) {
				n++
			}
		}
		t.Run(fmt.Sprintf("%d/%d transactions", trial, n), func(t *testing.T) {
			pg, res, err := f.restore(t, walbackup.ToTime(target))
			require.NoError(t, err, "%s", res.Recovery.Log)
			assert.True(t, res.Recovery.Promoted)
			require.Equal(t, f.want(n), items(t, pg), "target %s: the rows of the %d transactions committed by then",
				target.Format(time.RFC3339Nano), n)
			pg.Stop(t)
		})
	}
}

// Restores to the latest state (nothing shipped is lost), to a named
// restore point, to an LSN and to a transaction; a target outside the
// restorable interval is a clear error before anything is written; a
// drill proves the restore point, and a failing check is reported.
func TestRestoreTargets(t *testing.T) {
	t.Parallel()
	f := newPITRFixture(t, pitrWorkload{})
	ctx := context.Background()
	t.Run("latest", func(t *testing.T) {
		pg, res, err := f.restore(t, walbackup.Latest())
		require.NoError(t, err, "%s", res.Recovery.Log)
		assert.Equal(t, f.want(len(f.txns)), items(t, pg), "every shipped transaction")
		pg.Stop(t)
	})
	t.Run("named restore point", func(t *testing.T) { f.restoreChecked(t, walbackup.ToName("before the purge"), f.namedAt, nil) })
	t.Run("LSN", func(t *testing.T) {
		pg, res, err := f.restore(t, walbackup.ToLSN(f.lsn))
		require.NoError(t, err, "%s", res.Recovery.Log)
		assert.Equal(t, f.want(f.lsnAt), items(t, pg))
		pg.Stop(t)
	})
	t.Run("transaction", func(t *testing.T) {
		k := 42
		pg, res, err := f.restore(t, walbackup.ToXID(f.txns[k].xid))
		require.NoError(t, err, "%s", res.Recovery.Log)
		assert.Equal(t, f.want(k+1), items(t, pg), "up to and including transaction %d", f.txns[k].xid)
		pg.Stop(t)
	})
	t.Run("outside the interval", func(t *testing.T) {
		last := f.txns[len(f.txns)-1].commit
		for name, target := range map[string]walbackup.Target{
			"after the last commit shipped": walbackup.ToTime(last.Add(time.Hour)),
			"before the restore point":      walbackup.ToTime(last.Add(-24 * time.Hour)),
			"a name never made":             walbackup.ToName("no such point"),
			"an LSN not shipped":            walbackup.ToLSN(f.lsn + 1<<40),
		} {
			dir := filepath.Join(t.TempDir(), "never")
			_, err := f.job.Restore(ctx, walbackup.RestoreRequest{Machine: "db1", Target: target},
				walbackup.RestoreTo{Image: dir, Guest: walbackup.Machine{ID: "db1"}})
			require.ErrorIs(t, err, walbackup.ErrOutsideInterval, name)
			assert.NoDirExists(t, dir, "%s: nothing written", name)
		}
	})
	t.Run("onto another machine", func(t *testing.T) {
		// Machine db2, through the deployer: its own data directory and
		// port, the same release.
		k := len(f.txns) / 3
		dir := filepath.Join(testenv.UserDir(t, f.pg.OSUser), "db2")
		pg := testenv.PostgresFor(t, dir, f.pg)
		require.NotEqual(t, f.pg.Port, pg.Port)
		res, err := f.job.Restore(ctx, walbackup.RestoreRequest{Machine: "db1", Target: walbackup.ToTime(f.txns[k].commit)},
			walbackup.RestoreTo{Image: dir, Guest: walbackup.Machine{ID: "db2"}, Recovery: f.recoveryOptions(pg)})
		require.NoError(t, err, "%s", res.Recovery.Log)
		assert.Equal(t, f.want(k+1), items(t, pg))
		pg.Stop(t)
		assert.NotZero(t, res.Plan.RestorePoint.ServerVersion, "the restore point records its release")
		rec := lastRestore(t, f.harness)
		assert.Equal(t, session.StateSuccess, rec.State)
		assert.Equal(t, "restored into "+dir, rec.Result)
		assert.Equal(t, res.Recovery.LSN, rec.Counters.LastLSN)

		// A machine whose binaries are of another major release, or that
		// has none: refused before anything is written.
		major := f.pg.Major(t)
		other := testenv.PostgresBinDirOf(t, major%13+14) // another of 13 to 18
		for name, binDir := range map[string]string{"another release": other, "no binaries": t.TempDir()} {
			dir := filepath.Join(testenv.UserDir(t, f.pg.OSUser), "db3")
			opts := f.recoveryOptions(pg)
			opts.BinDir = binDir
			_, err := f.job.Restore(ctx, walbackup.RestoreRequest{Machine: "db1", Target: walbackup.Latest()},
				walbackup.RestoreTo{Image: dir, Guest: walbackup.Machine{ID: "db3"}, Recovery: opts})
			require.ErrorIs(t, err, guest.ErrReleaseMismatch, name)
			assert.ErrorContains(t, err, fmt.Sprintf("restore of PostgreSQL %d onto db3", major), name)
			assert.NoDirExists(t, dir, "%s: nothing written", name)
			rec := lastRestore(t, f.harness)
			assert.Equal(t, session.StateFailed, rec.State, name)
			assert.Contains(t, rec.Result, "onto db3", name)
		}
	})
	t.Run("drill", func(t *testing.T) {
		for _, sql := range []string{"SELECT count(*) FROM items", "SELECT * FROM no_such_table"} {
			dir := filepath.Join(testenv.UserDir(t, f.pg.OSUser), "scratch")
			scratch := testenv.PostgresFor(t, dir, f.pg)
			res, err := f.job.Drill(ctx, walbackup.DrillRequest{Machine: "db1", SQL: []string{sql},
				Scratch: walbackup.RestoreTo{Image: dir, Guest: walbackup.Machine{ID: "db1"}, Recovery: walbackup.RecoveryOptions{
					Port: scratch.Port, SocketDir: scratch.SocketDir, OSUser: f.pg.OSUser,
					Settings: map[string]string{"listen_addresses": "127.0.0.1"}}}})
			require.NoError(t, err)
			assert.Equal(t, sql == "SELECT count(*) FROM items", res.Passed, "%s: %v", sql, res.Failures)
			if rec := lastRestore(t, f.harness); res.Passed {
				assert.Equal(t, session.StateSuccess, rec.State)
			} else {
				assert.Equal(t, session.StateFailed, rec.State, "a failed drill is recorded failed")
				assert.Contains(t, rec.Result, "no_such_table")
			}
			assert.Contains(t, res.Databases, "postgres")
			assert.Contains(t, res.Databases, "template1")
			assert.NoDirExists(t, dir, "the scratch copy is removed")
			ids, err := repository.RestorePointIDs(ctx, f.repo, f.instance(t))
			require.NoError(t, err)
			var drills []string
			require.NoError(t, f.repo.List(ctx, f.instance(t).RestorePoint(ids[0])+"/drills/", func(o repository.Object) error {
				drills = append(drills, o.Name)
				return nil
			}))
			assert.NotEmpty(t, drills, "the result is recorded with the restore point")
		}
	})
}

// A restore in place: the running instance is never overwritten unless
// forced; forced, the server is stopped and its data directory moved aside
// (kept), the restored instance runs in its place with every shipped
// transaction, on its own configuration, and goes on archiving for the job.
func TestRestoreInPlace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRealJob(t, physicalImages(t, true, nil), func(c *walbackup.Config) { c.Clock = clock.New() })
	pg := r.pg
	pg.Exec(t, "postgres", "CREATE TABLE kept (n int)")
	require.NoError(t, r.job.Enable(ctx))
	r.idle(t)
	pg.Exec(t, "postgres", "INSERT INTO kept SELECT generate_series(1, 10)")
	require.NoError(t, r.job.StartParent(ctx))
	r.idle(t)
	pg.Exec(t, "postgres", "INSERT INTO kept SELECT generate_series(11, 20)")
	pg.SwitchWAL(t, 1)
	require.NoError(t, r.job.Disable(ctx))

	to := walbackup.RestoreTo{Image: pg.DataDir, Guest: walbackup.Machine{ID: "db1"},
		Recovery: walbackup.RecoveryOptions{OSUser: pg.OSUser, Archive: true}}
	_, err := r.job.Restore(ctx, walbackup.RestoreRequest{Machine: "db1", Target: walbackup.Latest()}, to)
	require.ErrorIs(t, err, walbackup.ErrTargetExists)
	assert.Equal(t, "20", pg.Psql(t, "postgres", "SELECT count(*) FROM kept"), "the running instance is untouched")

	to.Force = true
	res, err := r.job.Restore(ctx, walbackup.RestoreRequest{Machine: "db1", Target: walbackup.Latest()}, to)
	require.NoError(t, err, "%s", res.Recovery.Log)
	assert.True(t, res.Recovery.Promoted)
	assert.Equal(t, "20", pg.Psql(t, "postgres", "SELECT count(*) FROM kept"), "every shipped transaction, in place")
	assert.Equal(t, "2", pg.Psql(t, "postgres", "SELECT timeline_id FROM pg_control_checkpoint()"))
	aside, err := filepath.Glob(pg.DataDir + ".replaced-*")
	require.NoError(t, err)
	require.Len(t, aside, 1, "the replaced data directory is kept")
	assert.FileExists(t, filepath.Join(aside[0], "PG_VERSION"))
	assert.Equal(t, "on", pg.Psql(t, "postgres", "SHOW archive_mode"), "in place, it goes on being protected")
	assert.NotEmpty(t, pg.Psql(t, "postgres", "SHOW archive_command"))
}
