package walbackup_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

// The whole path on every supported release, each a real server started
// by testenv (Debian's 15, the others from the npm registry): the job's
// requirement checks pass, a parent takes a restore point in backup mode
// on the physical hypervisor with PostgreSQL's backup_label kept, the
// child ships real WAL whose every segment header matches the cluster and
// release, the shipped WAL's summaries are read (no range unknown), and
// restores to random times, an LSN, a transaction, a named restore point
// and the latest state come back row for row; a drill passes.
func TestReleaseMatrix(t *testing.T) {
	t.Parallel()
	for _, major := range testenv.SupportedMajors {
		t.Run(fmt.Sprintf("PostgreSQL %d", major), func(t *testing.T) {
			t.Parallel()
			releaseMatrix(t, major)
		})
	}
}

func releaseMatrix(t *testing.T, major int) {
	ctx := context.Background()
	f := newPITRFixture(t, pitrWorkload{pg: testenv.PostgresConfig{Major: major}, txns: 60})
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(f.pg.LogFile)
			t.Logf("server log:\n%s", b)
		}
	})
	version := f.pg.Psql(t, "postgres", "SELECT version()")
	t.Log(version)
	require.True(t, strings.HasPrefix(version, fmt.Sprintf("PostgreSQL %d.", major)), version)
	var versionNum int
	require.NoError(t, f.pg.Connect(t, "postgres").QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&versionNum))
	inst := f.instance(t)

	// The requirement checks passed: the child session deployed, said
	// which release it found and set archive_command.
	children := f.sessions(t, f.job.ChildName())
	require.NotEmpty(t, children)
	log, err := f.store.Log(ctx, children[len(children)-1].ID, 0, 100)
	require.NoError(t, err)
	var said []string
	for _, e := range log {
		said = append(said, e.Message)
	}
	assert.Contains(t, strings.Join(said, "\n"), fmt.Sprintf("PostgreSQL %d,", versionNum))
	assert.Contains(t, f.pg.Psql(t, "postgres", "SHOW archive_command"), "pglogship")

	// The restore point: backup mode, PostgreSQL's own backup_label.
	rps, err := repository.RestorePoints(ctx, f.repo, inst, nil)
	require.NoError(t, err)
	require.Len(t, rps, 1, "the parent session said: %s", sessionLog(t, f.harness, f.job.Name()))
	rp := rps[0]
	assert.Contains(t, rp.BackupLabel, "START WAL LOCATION: "+rp.StartLSN.String())
	assert.Contains(t, rp.BackupLabel, "LABEL: ")
	assert.Less(t, rp.StartLSN, rp.StopLSN)

	// Every shipped segment: the header of this cluster and release.
	segments := 0
	refs, err := repository.Bundles(ctx, f.repo, inst, 1)
	require.NoError(t, err)
	for _, ref := range refs {
		b, err := bundle.Open(ctx, f.repo, ref.Object.Name, ref.Object.Size, nil)
		require.NoError(t, err)
		for _, e := range b.Entries() {
			if fn, err := wal.ParseFileName(e.Name); err != nil || fn.Kind != wal.Segment {
				continue
			}
			head := &limited{n: wal.LongHeaderSize}
			_, _ = b.WriteFile(ctx, e.Name, head)
			require.NoError(t, wal.CheckSegmentHeader(e.Name, head.b, rp.SegmentSize(), inst.SystemID, versionNum))
			segments++
		}
	}
	assert.Positive(t, segments)

	// The summaries of the shipped WAL were read: nothing unknown, and a
	// time target is proven before the restore.
	iv, err := f.job.Interval(ctx, "db1", inst.SystemID)
	require.NoError(t, err)
	assert.Empty(t, iv.Unknown, "every summary computed on PostgreSQL %d", major)
	last := f.txns[len(f.txns)-1].commit
	plan, err := f.job.Plan(ctx, walbackup.RestoreRequest{Machine: "db1", Target: walbackup.ToTime(last)})
	require.NoError(t, err)
	assert.True(t, plan.Proven, "the last commit is known from the shipped WAL")

	rng := rand.New(rand.NewPCG(uint64(major), 18))
	for trial := 0; trial < 3; trial++ {
		k := rng.IntN(len(f.txns))
		target := f.txns[k].commit
		if trial == 1 && k+1 < len(f.txns) {
			target = target.Add(f.txns[k+1].commit.Sub(target) / 2)
		}
		n := 0
		for _, tx := range f.txns {
			if !tx.commit.After(target) {
				n++
			}
		}
		t.Run(fmt.Sprintf("time %d of %d transactions", trial, n), func(t *testing.T) {
			f.restoreChecked(t, walbackup.ToTime(target), n, nil)
		})
	}
	t.Run("LSN", func(t *testing.T) { f.restoreChecked(t, walbackup.ToLSN(f.lsn), f.lsnAt, nil) })
	t.Run("transaction", func(t *testing.T) {
		k := 17 + rng.IntN(20)
		f.restoreChecked(t, walbackup.ToXID(f.txns[k].xid), k+1, nil)
	})
	t.Run("named restore point", func(t *testing.T) { f.restoreChecked(t, walbackup.ToName("before the purge"), f.namedAt, nil) })
	t.Run("latest", func(t *testing.T) {
		f.restoreChecked(t, walbackup.Latest(), len(f.txns), func(t *testing.T, pg *testenv.Postgres) {
			assert.Equal(t, major, pg.Major(t), "restored on its own release")
		})
	})
	t.Run("drill", func(t *testing.T) {
		dir := filepath.Join(testenv.UserDir(t, f.pg.OSUser), "scratch")
		scratch := testenv.PostgresFor(t, dir, f.pg)
		res, err := f.job.Drill(ctx, walbackup.DrillRequest{Machine: "db1", SQL: []string{"SELECT count(*) FROM items"},
			Scratch: walbackup.RestoreTo{Image: dir, Guest: walbackup.Machine{ID: "db1"}, Recovery: f.recoveryOptions(scratch)}})
		require.NoError(t, err)
		assert.True(t, res.Passed, "%v", res.Failures)
		assert.NoDirExists(t, dir)
	})
}

// limited keeps the first n bytes written to it.
type limited struct {
	b []byte
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.n - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// sessionLog is the log of job's newest session, for failure messages.
func sessionLog(t *testing.T, h *harness, job string) string {
	t.Helper()
	ss := h.sessions(t, job)
	if len(ss) == 0 {
		return "(no session)"
	}
	log, err := h.store.Log(context.Background(), ss[0].ID, 0, 100)
	require.NoError(t, err)
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", ss[0].State, ss[0].Result)
	for _, e := range log {
		fmt.Fprintf(&b, "\n  %s %s", e.Severity, e.Message)
	}
	return b.String()
}
