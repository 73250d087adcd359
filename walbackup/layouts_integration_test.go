package walbackup_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/walbackup"
)

// Real cluster layouts, each restored on the physical path to a few random
// times, row for row, on a real server: the pitrFixture's workload on a
// cluster laid out as the test says, or with what the layout adds in
// between (pitrWorkload.during), checked by the layout after each restore.

// layoutTxns is the length of a layout's workload: enough for a WAL switch
// and the named restore point, short enough for make test.
const layoutTxns = 40

// layoutReleases are the releases each layout runs on: the oldest and the
// newest that pglogship supports.
var layoutReleases = []int{testenv.SupportedMajors[0], testenv.SupportedMajors[len(testenv.SupportedMajors)-1]}

// onReleases runs layout as a parallel subtest per release of majors (0:
// Debian's).
func onReleases(t *testing.T, majors []int, layout func(t *testing.T, major int)) {
	t.Parallel()
	for _, major := range majors {
		name := fmt.Sprintf("PostgreSQL %d", major)
		if major == 0 {
			name = "Debian's PostgreSQL"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			layout(t, major)
		})
	}
}

// restoreAtRandom restores f to count random times, at least one in each
// stretch of transactions between marks (indexes into f.txns), each into a
// new directory, and checks the items table row for row and, with check,
// what the layout adds; n is how many of f.txns committed by the target.
func (f *pitrFixture) restoreAtRandom(t *testing.T, seed uint64, count int, marks []int,
	check func(t *testing.T, pg *testenv.Postgres, n int)) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	bounds := append(append([]int{1}, marks...), len(f.txns)+1)
	var ns []int
	for i := 0; i+1 < len(bounds); i++ {
		if bounds[i] < bounds[i+1] {
			ns = append(ns, bounds[i]+rng.IntN(bounds[i+1]-bounds[i]))
		}
	}
	for len(ns) < count {
		ns = append(ns, 1+rng.IntN(len(f.txns)))
	}
	for trial, n := range ns {
		// The commit of the n-th transaction (inclusive: it is in), or a
		// time between it and the next.
		target := f.txns[n-1].commit
		if trial%2 == 1 && n < len(f.txns) {
			target = target.Add(f.txns[n].commit.Sub(target) / 2)
		}
		t.Run(fmt.Sprintf("%d/%d transactions", trial, n), func(t *testing.T) {
			pg, res, err := f.restore(t, walbackup.ToTime(target))
			require.NoError(t, err, "%s", res.Recovery.Log)
			require.True(t, res.Recovery.Promoted)
			require.Equal(t, f.want(n), items(t, pg), "target %s: the rows of the %d transactions committed by then",
				target.Format(time.RFC3339Nano), n)
			if check != nil {
				check(t, pg, n)
			}
			pg.Stop(t)
		})
	}
}

// pg_wal is a link to a directory outside the data directory (initdb -X):
// the restored pg_wal is a directory of its own, and the restored server
// never writes into the original's WAL directory.
func TestLayoutExternalWAL(t *testing.T) { onReleases(t, layoutReleases, layoutExternalWAL) }

func layoutExternalWAL(t *testing.T, major int) {
	f := newPITRFixture(t, pitrWorkload{pg: testenv.PostgresConfig{Major: major, ExternalWAL: true}, txns: layoutTxns})
	f.restoreAtRandom(t, 1, 3, nil, func(t *testing.T, pg *testenv.Postgres, _ int) {
		st, err := os.Lstat(filepath.Join(pg.DataDir, "pg_wal"))
		require.NoError(t, err)
		assert.True(t, st.IsDir(), "pg_wal restored as a directory, not a link: %v", st.Mode())
		_, err = os.Stat(filepath.Join(f.pg.WALDir, "00000002.history"))
		assert.ErrorIs(t, err, os.ErrNotExist, "the promoted restore's timeline is not in the original's WAL directory")
	})
	assert.Equal(t, "1", f.pg.Psql(t, "postgres", "SELECT timeline_id FROM pg_control_checkpoint()"), "the original is untouched")
}

// WAL segments of 64 MiB (initdb --wal-segsize=64).
func TestLayoutWALSegmentSize(t *testing.T) { onReleases(t, layoutReleases, layoutWALSegmentSize) }

func layoutWALSegmentSize(t *testing.T, major int) {
	f := newPITRFixture(t, pitrWorkload{pg: testenv.PostgresConfig{Major: major, InitdbArgs: []string{"--wal-segsize=64"}}, txns: layoutTxns})
	f.restoreAtRandom(t, 2, 3, nil, func(t *testing.T, pg *testenv.Postgres, _ int) {
		assert.Equal(t, "64MB", pg.Psql(t, "postgres", "SHOW wal_segment_size"))
	})
}

// Data checksums on: the restored cluster has them, and every page of it
// passes pg_checksums once the server is stopped (Debian's release), or,
// where the release's tree has no pg_checksums (the npm registry's), every
// page of the database is read into the cold shared buffers of the
// restarted server, which verifies each checksum as it reads.
func TestLayoutDataChecksums(t *testing.T) { onReleases(t, layoutReleases, layoutDataChecksums) }

func layoutDataChecksums(t *testing.T, major int) {
	f := newPITRFixture(t, pitrWorkload{pg: testenv.PostgresConfig{Major: major, InitdbArgs: []string{"--data-checksums"}}, txns: layoutTxns})
	f.restoreAtRandom(t, 3, 3, nil, func(t *testing.T, pg *testenv.Postgres, _ int) {
		assert.Equal(t, "on", pg.Psql(t, "postgres", "SHOW data_checksums"))
		if _, err := os.Stat(filepath.Join(pg.BinDir, "pg_checksums")); err != nil {
			out, err := pg.PgCtl("restart", "-m", "fast", "-w", "-l", pg.LogFile)
			require.NoError(t, err, "%s", out)
			pg.Exec(t, "postgres", "CREATE EXTENSION pg_prewarm")
			blocks, err := strconv.Atoi(pg.Psql(t, "postgres", `SELECT sum(pg_prewarm(oid, 'buffer')) FROM pg_class
				WHERE relkind IN ('r', 'i', 't', 'm', 'S') AND relpersistence = 'p'`))
			require.NoError(t, err)
			assert.Greater(t, blocks, 100, "every page of the database read")
			assert.Equal(t, "0", pg.Psql(t, "postgres", "SELECT checksum_failures FROM pg_stat_database WHERE datname = 'postgres'"))
			return
		}
		pg.Stop(t)
		out, err := pg.Tool("pg_checksums", "--check", "-D", pg.DataDir)
		require.NoError(t, err, "%s", out)
		assert.Contains(t, string(out), "Bad checksums:  0")
	})
}

// A Debian cluster (pg_createcluster), whose configuration files live in
// /etc/postgresql: the restore starts with the original's postgresql.conf
// (RecoveryOptions.ConfigFile) on the restored data directory, never the
// original's, and leaves the original's files alone. On Debian's release
// only: pg_createcluster makes clusters of the releases Debian installed.
func TestLayoutDebianCluster(t *testing.T) {
	t.Parallel()
	f := newPITRFixture(t, pitrWorkload{pg: testenv.PostgresConfig{Debian: true}, txns: layoutTxns})
	postmaster := func() string {
		b, err := os.ReadFile(filepath.Join(f.pg.DataDir, "postmaster.pid"))
		require.NoError(t, err)
		return strings.SplitN(string(b), "\n", 2)[0]
	}
	before := postmaster()
	externalPid := f.pg.Psql(t, "postgres", "SHOW external_pid_file")
	require.NotEmpty(t, externalPid, "pg_createcluster sets one")
	f.restoreAtRandom(t, 4, 3, nil, func(t *testing.T, pg *testenv.Postgres, _ int) {
		assert.Equal(t, pg.DataDir+"|"+f.pg.ConfigFile, pg.Psql(t, "postgres",
			"SELECT current_setting('data_directory') || '|' || current_setting('config_file')"))
		assert.NoFileExists(t, filepath.Join(pg.DataDir, "postgresql.conf"))
	})
	assert.Equal(t, before, postmaster(), "the original runs on")
	b, err := os.ReadFile(externalPid)
	require.NoError(t, err)
	assert.Equal(t, before, strings.TrimSpace(string(b)), "the original's external pid file is its own")
	for _, name := range []string{"recovery.signal", "backup_label"} {
		assert.NoFileExists(t, filepath.Join(f.pg.DataDir, name), "the original's data directory is untouched")
	}
}

// Unlogged tables, one from before the restore point and one made after
// it, both filled: restored empty, as PostgreSQL defines (made anew from
// their init fork at the end of recovery), the later one only once made,
// while the logged rows are exact.
func TestLayoutUnloggedTables(t *testing.T) { onReleases(t, layoutReleases, layoutUnloggedTables) }

func layoutUnloggedTables(t *testing.T, major int) {
	made := -1             // the transaction that made the later table
	rows, rows2 := 1000, 0 // in scratch and scratch2 on the original
	f := newPITRFixture(t, pitrWorkload{txns: layoutTxns, pg: testenv.PostgresConfig{Major: major},
		before: func(t *testing.T, f *pitrFixture) {
			f.pg.Exec(t, "postgres", "CREATE UNLOGGED TABLE scratch (n int); INSERT INTO scratch SELECT generate_series(1, 1000)")
		},
		during: func(t *testing.T, f *pitrFixture, conn *pgx.Conn, i int) {
			sql := "INSERT INTO scratch SELECT generate_series(1, 100)"
			switch {
			case i == 12:
				sql = "CREATE UNLOGGED TABLE scratch2 (n int); INSERT INTO scratch2 SELECT generate_series(1, 100)"
				rows2 += 100
			case i > 12 && i%5 == 0:
				sql += "; INSERT INTO scratch2 SELECT generate_series(1, 100)"
				rows, rows2 = rows+100, rows2+100
			case i%5 != 0:
				return
			default:
				rows += 100
			}
			xid := inTransaction(t, conn, sql)
			if i == 12 {
				made = f.record(xid, "scratch2 made")
			} else {
				f.record(xid, "unlogged rows")
			}
		}})
	require.Positive(t, made)
	require.Equal(t, fmt.Sprintf("%d|%d", rows, rows2), f.pg.Psql(t, "postgres", "SELECT (SELECT count(*) FROM scratch) || '|' || (SELECT count(*) FROM scratch2)"),
		"the original has the rows")
	// n == made: recovery stops before the commit that makes it.
	f.restoreAtRandom(t, 5, 3, []int{made, made + 1}, func(t *testing.T, pg *testenv.Postgres, n int) {
		assert.Equal(t, "0", pg.Psql(t, "postgres", "SELECT count(*) FROM scratch"))
		if n <= made {
			assert.Equal(t, "0", pg.Psql(t, "postgres", "SELECT count(*) FROM pg_class WHERE relname = 'scratch2'"), "not made by then")
			return
		}
		assert.Equal(t, "0", pg.Psql(t, "postgres", "SELECT count(*) FROM scratch2"))
		assert.Equal(t, "u", pg.Psql(t, "postgres", "SELECT relpersistence FROM pg_class WHERE relname = 'scratch2'"))
		pg.Exec(t, "postgres", "INSERT INTO scratch2 VALUES (1)") // usable
	})
}

// inTransaction runs sql in a transaction of its own and returns its xid.
func inTransaction(t *testing.T, conn *pgx.Conn, sql string) uint32 {
	t.Helper()
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	var xid uint32
	require.NoError(t, tx.QueryRow(ctx, "SELECT txid_current()::text::bigint").Scan(&xid))
	_, err = tx.Exec(ctx, sql)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	return xid
}

// Prepared transactions (two-phase commit): one prepared before the
// restore point and one after it, each committed later. PostgreSQL
// replays a PREPARE like any record and stops only before a commit, so a
// transaction whose PREPARE comes before the first commit after the target
// and whose COMMIT PREPARED does not is still prepared after the restore
// (pg_prepared_xacts, its rows not visible, its xid the original's), and
// can be committed there; one prepared later does not exist; one committed
// by the target has its rows.
func TestLayoutPreparedTransaction(t *testing.T) {
	onReleases(t, layoutReleases, layoutPreparedTransaction)
}

func layoutPreparedTransaction(t *testing.T, major int) {
	ctx := context.Background()
	type prepared struct {
		gid              string
		row              int
		xid              uint32
		at               int // transactions committed before its PREPARE
		committed        int // its COMMIT PREPARED in f.txns
		prepare, commitI int // workload steps that prepare (-1: before the restore point) and commit it
	}
	xacts := []*prepared{{gid: "early", row: 1, prepare: -1, commitI: 24}, {gid: "late", row: 2, prepare: 8, commitI: 31}}
	prepare := func(t *testing.T, conn *pgx.Conn, p *prepared, at int) {
		_, err := conn.Exec(ctx, "BEGIN")
		require.NoError(t, err)
		require.NoError(t, conn.QueryRow(ctx, "SELECT txid_current()::text::bigint").Scan(&p.xid))
		_, err = conn.Exec(ctx, fmt.Sprintf("INSERT INTO pending VALUES (%d, '%s'); PREPARE TRANSACTION '%s'", p.row, p.gid, p.gid))
		require.NoError(t, err)
		p.at = at
	}
	f := newPITRFixture(t, pitrWorkload{txns: layoutTxns,
		pg: testenv.PostgresConfig{Major: major, Settings: map[string]string{"max_prepared_transactions": "4"}},
		before: func(t *testing.T, f *pitrFixture) {
			f.pg.Exec(t, "postgres", "CREATE TABLE pending (id int, gid text)")
			conn := f.pg.Connect(t, "postgres")
			prepare(t, conn, xacts[0], 0)
		},
		during: func(t *testing.T, f *pitrFixture, conn *pgx.Conn, i int) {
			for _, p := range xacts {
				switch i {
				case p.prepare:
					prepare(t, conn, p, len(f.txns))
				case p.commitI:
					_, err := conn.Exec(ctx, fmt.Sprintf("COMMIT PREPARED '%s'", p.gid))
					require.NoError(t, err)
					p.committed = f.record(p.xid, "commit prepared "+p.gid)
				}
			}
		}})
	require.Equal(t, "1|early\n2|late", f.pg.Psql(t, "postgres", "SELECT id, gid FROM pending ORDER BY id"))
	// n == late.at: its PREPARE comes after the last commit by the target
	// and is replayed all the same; n == late.committed: recovery stops
	// before its COMMIT PREPARED.
	marks := []int{xacts[1].at, xacts[1].at + 1, xacts[0].committed + 1, xacts[1].committed, xacts[1].committed + 1}
	require.True(t, sortedInts(marks), "%v", marks)
	f.restoreAtRandom(t, 6, 6, marks, func(t *testing.T, pg *testenv.Postgres, n int) {
		var wantRows, wantPrepared []string
		for _, p := range xacts {
			switch {
			case p.committed < n:
				wantRows = append(wantRows, fmt.Sprintf("%d|%s", p.row, p.gid))
			case p.at <= n:
				wantPrepared = append(wantPrepared, fmt.Sprintf("%s|%d", p.gid, p.xid))
			}
		}
		assert.Equal(t, strings.Join(wantRows, "\n"), pg.Psql(t, "postgres", "SELECT id, gid FROM pending ORDER BY id"), "committed by the target")
		assert.Equal(t, strings.Join(wantPrepared, "\n"), pg.Psql(t, "postgres", "SELECT gid, transaction FROM pg_prepared_xacts ORDER BY gid"),
			"prepared and not committed by the target")
		for _, gp := range wantPrepared {
			gid, _, _ := strings.Cut(gp, "|")
			pg.Exec(t, "postgres", fmt.Sprintf("COMMIT PREPARED '%s'", gid))
		}
		assert.Equal(t, strconv.Itoa(len(wantRows)+len(wantPrepared)), pg.Psql(t, "postgres", "SELECT count(*) FROM pending"),
			"a prepared transaction commits on the restored server, with its rows")
	})
}

func sortedInts(s []int) bool {
	for i := 1; i < len(s); i++ {
		if s[i] < s[i-1] {
			return false
		}
	}
	return true
}

// A database dropped and one created after the restore point: restored to
// a time before the drop, the dropped database is there with its rows,
// after it it is gone; the created one is there once created, with the
// rows committed in it by the target. Restored to a time just before the
// drop's commit, PostgreSQL has replayed the removal of its files (DROP
// DATABASE removes them before it commits) and shows it as it would after
// an interrupted drop: listed, invalid (datconnlimit -2), refusing
// connections.
func TestLayoutDatabaseCreatedAndDropped(t *testing.T) {
	onReleases(t, layoutReleases, layoutDatabaseCreatedAndDropped)
}

func layoutDatabaseCreatedAndDropped(t *testing.T, major int) {
	ctx := context.Background()
	var created, filled, dropped int
	f := newPITRFixture(t, pitrWorkload{txns: layoutTxns,
		pg: testenv.PostgresConfig{Major: major, Settings: map[string]string{"autovacuum": "off"}}, // for recordLast
		before: func(t *testing.T, f *pitrFixture) {
			f.pg.CreateDatabase(t, "doomed")
			f.pg.Exec(t, "doomed", "CREATE TABLE kept (n int); INSERT INTO kept SELECT generate_series(1, 500)")
		},
		during: func(t *testing.T, f *pitrFixture, conn *pgx.Conn, i int) {
			switch i {
			case 8:
				_, err := conn.Exec(ctx, "CREATE DATABASE born")
				require.NoError(t, err)
				created = f.recordLast(t, conn, "create database born")
			case 14:
				born := f.pg.Connect(t, "born")
				filled = f.record(inTransaction(t, born, "CREATE TABLE rows (n int); INSERT INTO rows SELECT generate_series(1, 300)"), "rows in born")
				require.NoError(t, born.Close(ctx))
			case 26:
				_, err := conn.Exec(ctx, "DROP DATABASE doomed")
				require.NoError(t, err)
				dropped = f.recordLast(t, conn, "drop database doomed")
			}
		}})
	marks := []int{created + 1, filled + 1, dropped, dropped + 1}
	require.True(t, sortedInts(marks), "%v", marks)
	f.restoreAtRandom(t, 7, 5, marks, func(t *testing.T, pg *testenv.Postgres, n int) {
		var want []string
		if created < n {
			want = append(want, "born")
		}
		if dropped >= n {
			want = append(want, "doomed")
		}
		assert.Equal(t, strings.Join(want, ","), pg.Psql(t, "postgres",
			"SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_database WHERE datname IN ('born', 'doomed')"))
		switch {
		case dropped > n:
			assert.Equal(t, "500", pg.Psql(t, "doomed", "SELECT count(*) FROM kept"), "the dropped database's rows")
		case dropped == n:
			assert.Equal(t, "-2", pg.Psql(t, "postgres", "SELECT datconnlimit FROM pg_database WHERE datname = 'doomed'"), "invalid")
			conn, err := pgx.Connect(ctx, pg.ConnString("doomed"))
			if err == nil {
				conn.Close(ctx)
			}
			assert.ErrorContains(t, err, `cannot connect to invalid database "doomed"`)
		}
		if created < n {
			tables := "0"
			if filled < n {
				tables = "1"
			}
			assert.Equal(t, tables, pg.Psql(t, "born", "SELECT count(*) FROM pg_class WHERE relname = 'rows'"), "the table in born")
			if filled < n {
				assert.Equal(t, "300", pg.Psql(t, "born", "SELECT count(*) FROM rows"))
			}
		}
	})
}
