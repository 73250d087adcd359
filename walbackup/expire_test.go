package walbackup_test

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

func TestRetentionRefused(t *testing.T) {
	for name, r := range map[string]walbackup.Retention{
		"count and days":               {RestorePoints: 3, ImageDays: 7},
		"WAL days shorter than images": {ImageDays: 7, WALDays: 6},
		"WAL days with a count":        {RestorePoints: 3, WALDays: 7},
		"WAL days, images forever":     {WALDays: 7},
		"negative":                     {RestorePoints: -1},
	} {
		h := newHarness(t)
		cfg := walbackup.Config{Name: "j", Machines: []walbackup.Machine{{ID: "vm1"}}, LogBackupInterval: time.Hour,
			Hypervisor: h.hv, Guests: noBackupMode{}, Repository: h.repo, Sessions: h.store, Retention: r}
		_, err := walbackup.NewJob(cfg)
		require.ErrorContains(t, err, "retention", name)
	}
}

// days runs the job for n days with a daily parent at 22:00, a segment
// every interval, and returns the restore points left after each day.
func days(t *testing.T, h *harness, n int) [][]*repository.Manifest {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	var after [][]*repository.Manifest
	for d := 0; d < n; d++ {
		for i := 0; i < 96; i++ {
			h.addWAL()
			h.step(t, 15*time.Minute)
		}
		rps, err := repository.RestorePoints(ctx, h.repo, inst42, nil)
		require.NoError(t, err)
		after = append(after, rps)
	}
	require.NoError(t, h.job.Disable(ctx))
	return after
}

// storedSegments lists the WAL segments the repository still holds.
func storedSegments(t *testing.T, h *harness) []string {
	t.Helper()
	var names []string
	for n := range stored(t, h.repo, inst42, 1) {
		if f, err := wal.ParseFileName(n); err == nil && f.Kind == wal.Segment {
			names = append(names, n)
		}
	}
	return names
}

// With the last 3 restore points kept, exactly the newest 3 stay after
// every parent session, and the WAL from the oldest one's start on; the
// interval starts at the oldest kept restore point.
func TestRetentionByCount(t *testing.T) {
	h := newHarness(t, func(c *walbackup.Config) { c.Retention = walbackup.Retention{RestorePoints: 3} })
	after := days(t, h, 6)
	for d, rps := range after {
		assert.Len(t, rps, min(d+1, 3), "day %d", d)
	}
	last := after[len(after)-1]
	oldestSeg := wal.SegmentAt(1, last[0].StartLSN, 16<<20).String()
	kept := storedSegments(t, h)
	require.NotEmpty(t, kept, "the WAL after the kept restore points stays")
	for _, n := range kept {
		assert.GreaterOrEqual(t, n, oldestSeg, "WAL before the oldest kept restore point is gone")
	}
	iv, err := h.job.Interval(context.Background(), "vm1", 0)
	require.NoError(t, err)
	assert.Equal(t, last[0].StopLSN, iv.Earliest.LSN)
	assert.Equal(t, 3, iv.RestorePoints)
	parents := h.sessions(t, h.job.Name())
	assert.Equal(t, "success", string(parents[0].State))
}

// Incremental restore points keep the images they build on.
func TestRetentionKeepsBasesOfIncrementals(t *testing.T) {
	h := newHarness(t, func(c *walbackup.Config) { c.Retention = walbackup.Retention{RestorePoints: 2} })
	h.hv.SetIncremental(true)
	after := days(t, h, 5)
	last := after[len(after)-1]
	// Every image after the first builds on the one before it: the whole
	// chain back to the full image stays.
	require.Len(t, last, 5)
	assert.True(t, last[0].Full)
	for i := 1; i < len(last); i++ {
		assert.Equal(t, last[i-1].ID, last[i].Base)
	}
	_, chain, err := walbackup.ImageChain(context.Background(), h.repo, inst42, last[4].ID, nil)
	require.NoError(t, err)
	assert.Len(t, chain, 5)
}

// Images kept for 2 days and WAL for 4: after the parent of Dec 2 22:00,
// the restore points of Nov 30 22:00 on, and the WAL written in the last 4
// days, which reaches back before the oldest restore point kept.
func TestRetentionByDaysWithAWALWindow(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, func(c *walbackup.Config) { c.Retention = walbackup.Retention{ImageDays: 2, WALDays: 4} })
	after := days(t, h, 8)
	last := after[len(after)-1]
	var stops []string
	for _, m := range last {
		stops = append(stops, m.StopTime.Format("Jan 2"))
	}
	assert.Equal(t, []string{"Nov 30", "Dec 1", "Dec 2"}, stops)
	window := time.Date(2026, 11, 28, 22, 0, 0, 0, time.UTC) // expiry ran at Dec 2 22:00
	refs, err := repository.Bundles(ctx, h.repo, inst42, 1)
	require.NoError(t, err)
	require.NotEmpty(t, refs, "the WAL window is kept")
	var oldest time.Time
	for _, ref := range refs {
		b, err := bundle.Open(ctx, h.repo, ref.Object.Name, ref.Object.Size, nil)
		require.NoError(t, err)
		assert.False(t, b.Created().Before(window.Add(-15*time.Minute)), "%s written %v, before the window", ref.Object.Name, b.Created())
		if oldest.IsZero() || b.Created().Before(oldest) {
			oldest = b.Created()
		}
	}
	assert.True(t, oldest.Before(last[0].StartTime), "WAL of the window older than the oldest restore point is kept")
	// No gap from the oldest stored segment on.
	segs := storedSegments(t, h)
	require.Greater(t, len(segs), 1)
	sort.Strings(segs)
	for i := 1; i < len(segs); i++ {
		f, _ := wal.ParseFileName(segs[i-1])
		assert.Equal(t, f.Next(16<<20).String(), segs[i])
	}
}

// Objects of a restore point that never committed are removed by the next
// expiry, once a newer restore point exists.
func TestExpiryRemovesUnfinishedRestorePoints(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, func(c *walbackup.Config) { c.Retention = walbackup.Retention{RestorePoints: 5} })
	garbage := inst42.RestorePoint("20261125T000000Z-deadbeef") + "/disk.img"
	require.NoError(t, h.repo.Put(ctx, garbage, strings.NewReader("half an image")))
	days(t, h, 1)
	_, err := h.repo.Stat(ctx, garbage)
	require.ErrorIs(t, err, repository.ErrNotFound)
	log, err := h.store.Log(ctx, h.sessions(t, h.job.Name())[0].ID, 0, 100)
	require.NoError(t, err)
	assert.Contains(t, log[len(log)-1].Message, "1 unfinished restore points")
}

// A full image after every FullImageEvery incremental ones bounds the
// chains, so retention frees old images chain by chain: keeping the newest
// 2 of full, inc, inc, full, inc, inc, full keeps the second chain (the
// 2nd newest builds on it) and the last full one.
func TestFullImagesBoundChains(t *testing.T) {
	h := newHarness(t, func(c *walbackup.Config) {
		c.FullImageEvery = 2
		c.Retention = walbackup.Retention{RestorePoints: 2}
	})
	h.hv.SetIncremental(true)
	after := days(t, h, 7)
	var kinds []string
	for _, rps := range after {
		m := rps[len(rps)-1]
		if m.Full {
			kinds = append(kinds, "full")
		} else {
			kinds = append(kinds, "inc")
		}
	}
	assert.Equal(t, []string{"full", "inc", "inc", "full", "inc", "inc", "full"}, kinds)
	last := after[len(after)-1]
	require.Len(t, last, 4, "the second chain and the last full image")
	assert.True(t, last[0].Full)
	assert.Equal(t, last[0].ID, last[1].Base)
	assert.Equal(t, last[1].ID, last[2].Base)
	assert.True(t, last[3].Full)
}

// A dry run reports exactly what the expiry that follows removes, and
// removes nothing itself.
func TestExpireDryRun(t *testing.T) {
	ctx := context.Background()
	var cfg walbackup.Config
	h := newHarness(t, func(c *walbackup.Config) { cfg = *c }) // keeps everything
	days(t, h, 3)
	objects := func() []string {
		var names []string
		require.NoError(t, h.repo.List(ctx, "", func(o repository.Object) error {
			names = append(names, o.Name)
			return nil
		}))
		return names
	}
	before := objects()

	cfg.Retention = walbackup.Retention{RestorePoints: 1}
	cfg.Observer = nil
	job, err := walbackup.NewJob(cfg)
	require.NoError(t, err)
	would, err := job.ExpireDryRun(ctx)
	require.NoError(t, err)
	assert.Len(t, would.RestorePoints, 2, "the two older restore points")
	assert.NotEmpty(t, would.Bundles, "the WAL only they need")
	assert.Equal(t, before, objects(), "a dry run changes nothing")

	did, err := job.Expire(ctx)
	require.NoError(t, err)
	assert.Equal(t, would, did)
	assert.Less(t, len(objects()), len(before))
}
