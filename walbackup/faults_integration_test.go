package walbackup_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/hypervisor/physical"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

func fakeImages(clk *clock.Mock, _ guest.Deployer) hypervisor.Hypervisor {
	return hypervisortest.New(clk, hypervisor.Machine{ID: "db1"})
}

// physicalImages is newRealJob's hypervisor for image tests: the physical
// one over the job's deployer, on the job's mock clock unless the job
// runs on real time; out, when not nil, gets it.
func physicalImages(t *testing.T, realTime bool, out **physical.Hypervisor) func(*clock.Mock, guest.Deployer) hypervisor.Hypervisor {
	return func(clk *clock.Mock, d guest.Deployer) hypervisor.Hypervisor {
		cfg := physical.Config{Machines: []physical.Machine{{ID: "db1"}}, Guests: d, Clock: clk, Logger: testenv.Logger(t)}
		if realTime {
			cfg.Clock = nil
		}
		h, err := physical.New(cfg)
		require.NoError(t, err)
		if out != nil {
			*out = h
		}
		return h
	}
}

// waitFor polls a PostgreSQL query until it returns want (real time: it is
// the server's own archiver that is awaited).
func waitFor(t *testing.T, pg *testenv.Postgres, sql string, ok func(string) bool, what string) string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out := pg.Psql(t, "postgres", sql)
		if ok(out) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %q after 2 minutes", what, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The temporary folder fills up (a 40 MB file system holds two 16 MiB
// segments): archive_command fails, PostgreSQL keeps the WAL in pg_wal
// (never dropped), the session fails loudly with the failures and the free
// space, and once the job has shipped (freeing the folder) the kept WAL is
// archived and shipped too: nothing is lost.
func TestArchiveFailsWhenTheFolderIsFull(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRealJob(t, fakeImages, func(c *walbackup.Config) {
		c.WALDir = testenv.SmallFS(t, "postgres", 40<<20) // the server's OS user when root
	})
	pg := r.pg
	require.NoError(t, r.job.Enable(ctx)) // archiving proven with one segment: 16 of 40 MB used
	r.idle(t)
	failedBefore, err := strconv.Atoi(pg.Psql(t, "postgres", "SELECT failed_count FROM pg_stat_archiver"))
	require.NoError(t, err)
	pg.Exec(t, "postgres", "CREATE TABLE fill (x text)")
	for i := 0; i < 3; i++ {
		pg.Exec(t, "postgres", "INSERT INTO fill SELECT repeat('x', 100) FROM generate_series(1, 1000)")
		pg.Exec(t, "postgres", "SELECT pg_switch_wal()")
	}
	waitFor(t, pg, "SELECT failed_count FROM pg_stat_archiver", func(s string) bool { n, err := strconv.Atoi(s); return err == nil && n > failedBefore }, "archive_command never failed")
	failedWAL := pg.Psql(t, "postgres", "SELECT last_failed_wal FROM pg_stat_archiver")
	_, err = os.Stat(filepath.Join(pg.DataDir, "pg_wal", failedWAL))
	require.NoError(t, err, "PostgreSQL keeps %s in pg_wal", failedWAL)

	var msg string
	for _, e := range r.step(t, walbackup.DefaultLogBackupInterval) {
		if e.Kind == walbackup.EventWarning && strings.Contains(e.Message, "archive_command failed") {
			msg = e.Message
		}
	}
	assert.Contains(t, msg, failedWAL)
	assert.Contains(t, msg, "bytes free")

	// Shipping freed the folder: the archiver catches up when woken.
	pg.Exec(t, "postgres", "SELECT pg_switch_wal()")
	waitFor(t, pg, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", func(s string) bool { return s > failedWAL },
		"the kept WAL was never archived")
	r.step(t, walbackup.DefaultLogBackupInterval)
	require.NoError(t, r.job.Disable(ctx))

	in := stored(t, r.repo, r.instance(t), 1)
	assert.Contains(t, in, failedWAL, "the WAL that failed to archive reached the repository")
	var segs []string
	for n := range in {
		if f, err := wal.ParseFileName(n); err == nil && f.Kind == wal.Segment {
			segs = append(segs, n)
		}
	}
	rep, err := r.job.Verify(ctx)
	require.NoError(t, err)
	assert.True(t, rep.OK(), "%v", rep.Problems)
	c, err := session.Latest(ctx, r.store, r.job.ChildName(), session.KindChild)
	require.NoError(t, err)
	assert.Equal(t, session.StateFailed, c.State, "the session fails loudly")
	t.Logf("segments in the repository: %d; the failed one was %s", len(segs), failedWAL)
}

// PostgreSQL restarted during a session, then promoted to a new timeline
// (archive recovery of its own WAL ends in a new timeline, as a failover
// or a restore in place does): the session ships on, the history file and
// the new timeline's segments (and the old one's last, partial segment)
// reach the repository, and Verify follows the branch.
func TestPostgresRestartedAndPromotedDuringASession(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRealJob(t, fakeImages)
	pg := r.pg
	require.NoError(t, r.job.Enable(ctx))
	r.idle(t)
	pg.SwitchWAL(t, 2)
	r.step(t, walbackup.DefaultLogBackupInterval)

	out, err := pg.PgCtl("restart", "-m", "fast", "-w", "-l", pg.LogFile)
	require.NoError(t, err, "%s", out)
	pg.SwitchWAL(t, 1)
	r.step(t, walbackup.DefaultLogBackupInterval)

	// A clean stop, then a start in archive recovery with nothing more to
	// restore: recovery ends at once and PostgreSQL moves to timeline 2.
	out, err = pg.PgCtl("stop", "-m", "fast", "-w")
	require.NoError(t, err, "%s", out)
	pg.WriteDataFile(t, "recovery.signal", "")
	out, err = pg.PgCtl("start", "-w", "-l", pg.LogFile, "-o", "-c restore_command=false")
	require.NoError(t, err, "%s", out)
	waitFor(t, pg, "SELECT pg_is_in_recovery()", func(s string) bool { return s == "f" }, "never promoted")
	assert.Equal(t, "2", pg.Psql(t, "postgres", "SELECT timeline_id FROM pg_control_checkpoint()"))
	pg.SwitchWAL(t, 2)
	r.step(t, walbackup.DefaultLogBackupInterval)
	require.NoError(t, r.job.Disable(ctx))

	inst := r.instance(t)
	tl2 := stored(t, r.repo, inst, 2)
	assert.NotEmpty(t, tl2, "timeline 2's segments are in the repository")
	var partial bool
	for n := range stored(t, r.repo, inst, 1) {
		partial = partial || strings.HasSuffix(n, ".partial")
	}
	assert.True(t, partial, "the old timeline's last segment, as .partial")
	var hist bytes.Buffer
	require.NoError(t, walbackup.FetchWAL(ctx, r.repo, inst, "00000002.history", nil, &hist))
	assert.Contains(t, hist.String(), "1\t")
	assertShippedAll(t, r.walDir, "everything left the guest")
	c, err := session.Latest(ctx, r.store, r.job.ChildName(), session.KindChild)
	require.NoError(t, err)
	log, err := r.store.Log(ctx, c.ID, 0, 100)
	require.NoError(t, err)
	require.NotEmpty(t, log)
	for _, e := range log {
		if e.Severity != session.SeverityInfo {
			assert.Contains(t, e.Message, "no restore point", "the only warning: no parent ran (a restart or a new timeline is none)")
		}
	}
	assert.Equal(t, session.StateWarning, c.State)
	rep, err := r.job.Verify(ctx)
	require.NoError(t, err)
	assert.True(t, rep.OK(), "%v", rep.Problems)
}
