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
		stored(t, r.repo, inst, 1) // and nothing is stored twice with two contents
	}
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
