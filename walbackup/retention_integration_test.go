package walbackup_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/physical"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

// Retention over 30 virtual days on a real PostgreSQL: a daily parent at
// 22:00 takes physical images (a full one after 6 incremental ones), the
// child job ships every 8 hours, images are kept for 7 days. After every
// parent session exactly what the settings keep remains: the restore
// points of the last 7 days and the images they build on, and the WAL from
// the oldest of them on. At the end every kept restore point passes the
// restore drill.
func TestRetentionOver30DaysWithDrills(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRealJob(t, physicalImages(t, false, nil), func(c *walbackup.Config) {
		c.Schedule = walbackup.Daily(22, 0)
		c.LogBackupInterval = 8 * time.Hour
		c.Retention = walbackup.Retention{ImageDays: 7}
	})
	pg := r.pg
	pg.Exec(t, "postgres", "CREATE TABLE daily (day int, n int)")
	require.NoError(t, r.job.Enable(ctx))
	r.idle(t)
	inst := r.instance(t)
	seen := map[string]*repository.Manifest{}
	for day := 0; day < 30; day++ {
		pg.Exec(t, "postgres", fmt.Sprintf("INSERT INTO daily SELECT %d, generate_series(1, 100)", day))
		pg.SwitchWAL(t, 1)
		r.step(t, 24*time.Hour) // to 08:00 the next day: the 22:00 parent ran
		rps, err := repository.RestorePoints(ctx, r.repo, inst, nil)
		require.NoError(t, err)
		for _, m := range rps {
			seen[m.ID] = m
		}
		parentAt := time.Date(2026, 11, 25+day, 22, 0, 0, 0, time.UTC)
		assert.Equal(t, keptBy(seen, parentAt.AddDate(0, 0, -7)), ids(rps), "day %d", day)
		// Every bundle left holds WAL from the oldest kept restore point's
		// start on (one that also holds older WAL stays whole).
		oldest := wal.SegmentAt(1, rps[0].StartLSN, rps[0].SegmentSize()).String()
		refs, err := repository.Bundles(ctx, r.repo, inst, 1)
		require.NoError(t, err)
		for _, ref := range refs {
			require.GreaterOrEqual(t, ref.Last[:24], oldest, "day %d: %s ends before the oldest kept restore point", day, ref.Object.Name)
		}
		// Nothing is stored twice with two contents: by the bundles'
		// indexes every day (reading every bundle's content each day would
		// cost minutes), by the content at the end.
		storedSums(t, r.repo, inst, 1)
	}
	stored(t, r.repo, inst, 1)
	require.NoError(t, r.job.Disable(ctx))
	rep, err := r.job.Verify(ctx)
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Problems)

	rps, err := repository.RestorePoints(ctx, r.repo, inst, nil)
	require.NoError(t, err)
	t.Logf("after 30 days: %d restore points kept of %d taken", len(rps), len(seen))
	for _, m := range rps {
		dir := filepath.Join(testenv.UserDir(t, pg.OSUser), "drill")
		scratch := testenv.PostgresFor(t, dir, pg)
		res, err := r.job.Drill(ctx, walbackup.DrillRequest{Machine: "db1", RestorePoint: m.ID, SQL: []string{"SELECT count(*) FROM daily"},
			Scratch: walbackup.RestoreTo{Image: dir, Guest: walbackup.Machine{ID: "db1"}, Recovery: walbackup.RecoveryOptions{
				Port: scratch.Port, SocketDir: scratch.SocketDir, OSUser: pg.OSUser, Settings: map[string]string{"listen_addresses": "127.0.0.1"}}}})
		require.NoError(t, err)
		assert.True(t, res.Passed, "restore point %s (full %v): %v", m.ID, m.Full, res.Failures)
	}
}

// keptBy is what retention by days keeps of the restore points ever
// taken: those that stopped at or after cut, and the images they build on.
func keptBy(all map[string]*repository.Manifest, cut time.Time) []string {
	keep := map[string]bool{}
	var newest string
	for id, m := range all {
		newest = max(newest, id)
		if !m.StopTime.Before(cut) {
			keep[id] = true
		}
	}
	keep[newest] = true
	for id := range keep {
		for m := all[id]; m != nil && !m.Full; m = all[m.Base] {
			keep[m.Base] = true
		}
	}
	var out []string
	for id := range keep {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func ids(ms []*repository.Manifest) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// Expiry on branched timelines, on a real PostgreSQL (issue 21): RP1 on
// timeline 1, rows, a point in time, more WAL, RP2 on timeline 1; a restore
// in place to that point starts timeline 2 (same system identifier), which
// goes on archiving; RP3 on timeline 2 starts at an LSN below RP2's. With
// the newest 2 kept, the expiry after RP3 removes RP1 but keeps timeline
// 2's WAL from RP3's start, which a cutoff at RP2's start deleted; RP3, the
// newest, then restores to the latest state, every row of timeline 2 in
// it.
func TestRetentionOnBranchedTimelines(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	phys := physicalImages(t, true, nil)
	r := newRealJob(t, func(clk *clock.Mock, d guest.Deployer) hypervisor.Hypervisor {
		return fullImages{phys(clk, d).(*physical.Hypervisor)}
	}, func(c *walbackup.Config) {
		c.Clock = clock.New() // restore point times and commit times on one clock
		c.Retention = walbackup.Retention{RestorePoints: 2}
	})
	pg := r.pg
	parent := func() {
		time.Sleep(1100 * time.Millisecond) // restore point ids sort by their second
		require.NoError(t, r.job.StartParent(ctx))
		r.idle(t)
	}
	pg.Exec(t, "postgres", "CREATE TABLE rows (n int)")
	require.NoError(t, r.job.Enable(ctx))
	r.idle(t)
	pg.Exec(t, "postgres", "INSERT INTO rows SELECT generate_series(1, 10)")
	parent() // RP1
	pg.Exec(t, "postgres", "INSERT INTO rows SELECT generate_series(11, 20)")
	lsn, err := wal.ParseLSN(pg.Psql(t, "postgres", "SELECT pg_current_wal_insert_lsn()"))
	require.NoError(t, err)
	pg.SwitchWAL(t, 5)                                                        // timeline 1 runs far ahead of where timeline 2 will be
	pg.Exec(t, "postgres", "INSERT INTO rows SELECT generate_series(21, 30)") // lost by the restore
	parent()                                                                  // RP2
	require.NoError(t, r.job.Disable(ctx))

	res, err := r.job.Restore(ctx, walbackup.RestoreRequest{Machine: "db1", Target: walbackup.ToLSN(lsn)},
		walbackup.RestoreTo{Image: pg.DataDir, Guest: walbackup.Machine{ID: "db1"}, Force: true,
			Recovery: walbackup.RecoveryOptions{OSUser: pg.OSUser, Archive: true}})
	require.NoError(t, err, "%s", res.Recovery.Log)
	require.Equal(t, "2", pg.Psql(t, "postgres", "SELECT timeline_id FROM pg_control_checkpoint()"))
	require.Equal(t, "20", pg.Psql(t, "postgres", "SELECT count(*) FROM rows"))
	// The recovery left its target in postgresql.auto.conf (only
	// restore_command is dropped), and RP3's image would carry it into the
	// restore below: cleared as an operator would (a separate fix).
	for _, k := range []string{"recovery_target_lsn", "recovery_target_inclusive", "recovery_target_timeline", "recovery_target_action"} {
		pg.Exec(t, "postgres", "ALTER SYSTEM RESET "+k)
	}

	require.NoError(t, r.job.Enable(ctx))
	r.idle(t)
	pg.Exec(t, "postgres", "INSERT INTO rows SELECT generate_series(31, 40)")
	parent() // RP3, and the expiry after it
	pg.Exec(t, "postgres", "INSERT INTO rows SELECT generate_series(41, 50)")
	pg.SwitchWAL(t, 1)
	require.NoError(t, r.job.Disable(ctx))

	inst := r.instance(t)
	rps, err := repository.RestorePoints(ctx, r.repo, inst, nil)
	require.NoError(t, err)
	require.Len(t, rps, 2, "RP1 expired")
	rp2, rp3 := rps[0], rps[1]
	require.Equal(t, uint32(1), rp2.Timeline)
	require.Equal(t, uint32(2), rp3.Timeline)
	require.Less(t, rp3.StartLSN, rp2.StartLSN, "the case of the issue: RP3 starts below RP2 on another timeline")
	first := wal.SegmentAt(2, rp3.StartLSN, rp3.SegmentSize()).String()
	_, ok := stored(t, r.repo, inst, 2)[first]
	assert.True(t, ok, "timeline 2's WAL from RP3's start (%s) stays", first)
	rep, err := r.job.Verify(ctx)
	require.NoError(t, err)
	require.True(t, rep.OK(), "%v", rep.Problems)

	dir := filepath.Join(testenv.UserDir(t, pg.OSUser), "restored")
	restored := testenv.PostgresFor(t, dir, pg)
	res, err = r.job.Restore(ctx, walbackup.RestoreRequest{Machine: "db1", Target: walbackup.Latest()},
		walbackup.RestoreTo{Image: dir, Guest: walbackup.Machine{ID: "db1"}, Recovery: walbackup.RecoveryOptions{
			Port: restored.Port, SocketDir: restored.SocketDir, OSUser: pg.OSUser,
			Settings: map[string]string{"listen_addresses": "127.0.0.1"}}})
	require.NoError(t, err, "%s", res.Recovery.Log)
	assert.Equal(t, rp3.ID, res.Plan.RestorePoint.ID, "the newest restore point")
	assert.Equal(t, "40|1|20|31|50", restored.Psql(t, "postgres",
		"SELECT count(*), min(n), max(n) FILTER (WHERE n <= 30), min(n) FILTER (WHERE n > 20), max(n) FROM rows"),
		"rows 1-20 and 31-50: timeline 2's history, to its end")
	restored.Stop(t)
}

// fullImages takes every image full, so retention is not held back by
// chains: RP1 is no base of RP2.
type fullImages struct{ *physical.Hypervisor }

func (f fullImages) Snapshot(ctx context.Context, machine string, opts hypervisor.SnapshotOptions) (hypervisor.Snapshot, error) {
	opts.Base = nil
	return f.Hypervisor.Snapshot(ctx, machine, opts)
}
