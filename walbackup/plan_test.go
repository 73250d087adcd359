package walbackup_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

// twoRestorePoints runs a job on the fakes: WAL, restore point 1 at 09:00,
// more WAL, restore point 2 at 10:00, more WAL. Segments are 16 MiB.
func twoRestorePoints(t *testing.T) *harness {
	t.Helper()
	h, _ := twoRestorePointsUnreadable(t, 0)
	return h
}

// twoRestorePointsUnreadable is twoRestorePoints with segment n (4 or 5
// between the restore points, 7 after them; 0: none) written as bytes the
// WAL reader cannot read. It returns the events of the session that
// shipped it.
func twoRestorePointsUnreadable(t *testing.T, n int) (*harness, []walbackup.Event) {
	t.Helper()
	ctx := context.Background()
	h := newHarness(t, func(c *walbackup.Config) { c.Schedule = nil })
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	var events []walbackup.Event
	add := func() {
		if h.seq++; h.guest.SwitchSegment(nil) != "" && h.seq == n {
			h.guest.AddWAL(walName(n), bytes.Repeat([]byte("not WAL at all "), 100))
		}
	}
	for _, at := range []int{9, 10} {
		add()
		add()
		events = append(events, h.step(t, time.Date(2026, 11, 25, at, 0, 0, 0, time.UTC).Sub(h.clk.Now()))...)
		require.NoError(t, h.job.StartParent(ctx))
		events = append(events, h.idle(t)...)
		h.seq++ // the backup's segment
	}
	add()
	events = append(events, h.step(t, 15*time.Minute)...)
	require.NoError(t, h.job.Disable(ctx))
	return h, events
}

func walName(n int) string { return fmt.Sprintf("00000001%016X", n) }

func TestPlanChoosesTheRestorePointBeforeTheTarget(t *testing.T) {
	ctx := context.Background()
	h := twoRestorePoints(t)
	// Segments: 1, 2 (child), 3 (backup 1 at 0/3000028), 4, 5, 6 (backup 2 at
	// 0/6000028), 7 (child).
	iv, err := h.job.Interval(ctx, "vm1", 0)
	require.NoError(t, err)
	assert.Equal(t, uint64(42), iv.Instance.SystemID)
	assert.Equal(t, 2, iv.RestorePoints)
	assert.Equal(t, "0/3000128", iv.Earliest.LSN.String(), "restore point 1 is consistent at its stop")
	assert.Equal(t, time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC), iv.Earliest.Time)
	assert.Equal(t, "0/8000000", iv.Latest.LSN.String(), "the end of segment 7")

	latest, err := h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.Latest()})
	require.NoError(t, err)
	assert.Equal(t, "0/6000028", latest.RestorePoint.StartLSN.String(), "the newest restore point")
	assert.Equal(t, map[string]string{"recovery_target_action": "promote", "recovery_target_timeline": "latest"}, latest.Settings)
	require.Len(t, latest.Chain, 1)
	assert.Equal(t, latest.RestorePoint.ID, latest.Manifests[0].ID)

	between, err := h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.ToLSN(0x5000000)})
	require.NoError(t, err)
	assert.Equal(t, "0/3000028", between.RestorePoint.StartLSN.String(), "restore point 1: number 2 is consistent only later")
	assert.Equal(t, map[string]string{"recovery_target_action": "promote", "recovery_target_lsn": "0/5000000",
		"recovery_target_inclusive": "true", "recovery_target_timeline": "1"}, between.Settings)

	at := time.Date(2026, 11, 25, 9, 30, 0, 123456000, time.UTC)
	byTime, err := h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.ToTime(at).Exclusive()})
	require.NoError(t, err)
	assert.Equal(t, between.RestorePoint.ID, byTime.RestorePoint.ID)
	assert.Equal(t, "2026-11-25 09:30:00.123456+00", byTime.Settings["recovery_target_time"])
	assert.Equal(t, "false", byTime.Settings["recovery_target_inclusive"])

	// The WAL's summaries tell which names and transactions it holds; the
	// fakes' WAL holds none (the real ones are in the restore tests).
	_, err = h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.ToName("before upgrade")})
	require.ErrorIs(t, err, walbackup.ErrOutsideInterval)
	assert.Contains(t, err.Error(), `no restore point named "before upgrade" in the shipped WAL`)
	_, err = h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.ToXID(1000)})
	require.ErrorIs(t, err, walbackup.ErrOutsideInterval)
}

func TestPlanRefusesTargetsOutsideTheInterval(t *testing.T) {
	ctx := context.Background()
	h := twoRestorePoints(t)
	for name, target := range map[string]walbackup.Target{
		"LSN before the oldest restore point":  walbackup.ToLSN(0x2000000),
		"LSN past the shipped WAL":             walbackup.ToLSN(0x9000000),
		"time before the oldest restore point": walbackup.ToTime(time.Date(2026, 11, 25, 8, 30, 0, 0, time.UTC)),
	} {
		_, err := h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: target})
		require.ErrorIs(t, err, walbackup.ErrOutsideInterval, name)
		assert.Contains(t, err.Error(), "restorable from 0/3000128", name)
	}
	rps, err := h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.Latest()})
	require.NoError(t, err)
	_, err = h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.ToLSN(0x5000000), RestorePoint: rps.RestorePoint.ID})
	require.ErrorIs(t, err, walbackup.ErrOutsideInterval, "restore point 2 is consistent only after the target")
	_, err = h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.Latest(), RestorePoint: "20261125T000000Z-00000000"})
	require.ErrorIs(t, err, walbackup.ErrNoRestorePoint)
	_, err = h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm9", Target: walbackup.Latest()})
	require.ErrorIs(t, err, walbackup.ErrNoRestorePoint)
	_, err = h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.Latest(), SystemID: 43})
	require.ErrorIs(t, err, walbackup.ErrNoRestorePoint)
}

func TestTargetsRefusedBeforeAnyLookup(t *testing.T) {
	h := newHarness(t)
	for _, target := range []walbackup.Target{walbackup.ToTime(time.Time{}), walbackup.ToLSN(0), walbackup.ToXID(2),
		walbackup.ToName(""), walbackup.ToName(strings.Repeat("x", 64)), walbackup.Latest().Exclusive(),
		walbackup.ToName("n").Exclusive(), walbackup.Consistent().Exclusive()} {
		_, err := h.job.Plan(context.Background(), walbackup.RestoreRequest{Machine: "vm1", Target: target})
		require.ErrorContains(t, err, "restore target", "%v", target)
	}
	assert.Equal(t, "LSN 0/5000000 (exclusive)", walbackup.ToLSN(wal.LSN(0x5000000)).Exclusive().String())
}

// Shipped WAL the reader cannot read is unknown, never empty: the
// session warns with the reason when it ships it, Interval says which
// range and why, and targets that may lie there are planned (PostgreSQL
// finds them) instead of refused with an untrue reason.
func TestUnreadableWALIsUnknownNotEmpty(t *testing.T) {
	ctx := context.Background()
	h, events := twoRestorePointsUnreadable(t, 5)
	var warned []string
	for _, e := range events {
		if e.Kind == walbackup.EventWarning && strings.Contains(e.Message, "WAL summary") {
			warned = append(warned, e.Message)
		}
	}
	require.Len(t, warned, 1, "one warning, when it is shipped")
	assert.Contains(t, warned[0], "segment "+walName(5)+" from ")
	assert.Contains(t, warned[0], "magic number 6F6E", "the reason (\"no\" is not a page magic)")
	found := false
	for _, s := range h.sessions(t, h.job.ChildName()) {
		log, err := h.store.Log(ctx, s.ID, 0, 100)
		require.NoError(t, err)
		for _, e := range log {
			found = found || e.Severity == session.SeverityWarning && e.Message == warned[0]
		}
	}
	assert.True(t, found, "the warning is in the session's log")

	iv, err := h.job.Interval(ctx, "vm1", 0)
	require.NoError(t, err)
	require.Len(t, iv.Unknown, 1)
	assert.Equal(t, "0/5000000", iv.Unknown[0].From.String())
	assert.Equal(t, "0/6000000", iv.Unknown[0].To.String())
	assert.Contains(t, iv.Unknown[0].Reason, "magic number 6F6E")
	assert.Contains(t, iv.String(), "WAL summaries unknown from 0/5000000 to 0/6000000")

	// A name or a transaction may be in the unknown WAL: planned from
	// the restore point before it, not proven.
	for _, target := range []walbackup.Target{walbackup.ToName("before upgrade"), walbackup.ToXID(1000)} {
		plan, err := h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: target})
		require.NoError(t, err, "%v", target)
		assert.False(t, plan.Proven)
		assert.Equal(t, "0/3000028", plan.RestorePoint.StartLSN.String(), "%v: the restore point before the unknown WAL", target)
	}
	// A time after the last commit known: a commit after it may be in
	// the unknown WAL.
	plan, err := h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.ToTime(time.Date(2026, 11, 25, 10, 5, 0, 0, time.UTC))})
	require.NoError(t, err)
	assert.False(t, plan.Proven)
	plan, err = h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.ToLSN(0x5800000)})
	require.NoError(t, err)
	assert.True(t, plan.Proven, "an LSN target needs no summary")

	// The same with every segment readable: refused, with the true reason.
	h2 := twoRestorePoints(t)
	iv2, err := h2.job.Interval(ctx, "vm1", 0)
	require.NoError(t, err)
	assert.Empty(t, iv2.Unknown)
	_, err = h2.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.ToName("before upgrade")})
	require.ErrorIs(t, err, walbackup.ErrOutsideInterval)
	_, err = h2.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.ToTime(time.Date(2026, 11, 25, 10, 5, 0, 0, time.UTC))})
	require.ErrorIs(t, err, walbackup.ErrOutsideInterval)
	assert.Contains(t, err.Error(), "no commit shipped after it")
}

// Messages: the interval with the precision of the check, and a target
// in the future called that.
func TestPlanMessages(t *testing.T) {
	ctx := context.Background()
	h := twoRestorePoints(t)
	_, err := h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.ToTime(h.clk.Now().Add(time.Hour))})
	require.ErrorIs(t, err, walbackup.ErrOutsideInterval)
	assert.Contains(t, err.Error(), "it is in the future (now is 2026-11-25T10:15:00Z)")
	early := time.Date(2026, 11, 25, 8, 59, 59, 999999000, time.UTC)
	_, err = h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.ToTime(early)})
	require.ErrorIs(t, err, walbackup.ErrOutsideInterval)
	assert.Contains(t, err.Error(), "restorable from 0/3000128 (2026-11-25T09:00:00Z)")
}

// With a key, a plain bundle in the repository is refused with a named
// error wherever it is read (planning, fetching for recovery), never
// taken as WAL: anyone who can write to the repository could forge one.
func TestForgedPlainBundleRefused(t *testing.T) {
	ctx := context.Background()
	h, latest := keyedRestorePoint(t)

	var buf bytes.Buffer
	w, err := bundle.NewWriter(&buf, "forged", nil)
	require.NoError(t, err)
	forged := walName(9)
	_, err = w.Add(forged, bundle.Raw, bytes.NewReader(walSegment(forged, []byte("forged"))))
	require.NoError(t, err)
	_, err = w.Close()
	require.NoError(t, err)
	require.NoError(t, h.repo.Put(ctx, latest.Instance.NewBundleName(1, forged, forged), &buf))

	_, err = h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.Latest()})
	require.ErrorIs(t, err, bundle.ErrNotEncrypted)
	err = h.job.FetchFunc(latest.Instance)(ctx, forged, io.Discard)
	require.ErrorIs(t, err, bundle.ErrNotEncrypted)

	// A sealed bundle of this job copied to another name (here, claiming
	// other segments): it does not open there.
	refs, err := repository.Bundles(ctx, h.repo, latest.Instance, 1)
	require.NoError(t, err)
	var sealed []byte
	for _, ref := range refs {
		rc, err := h.repo.Get(ctx, ref.Object.Name, 0, -1)
		require.NoError(t, err)
		b, err := io.ReadAll(rc)
		rc.Close()
		require.NoError(t, err)
		if ref.First == forged {
			require.NoError(t, h.repo.Delete(ctx, ref.Object.Name))
		} else {
			sealed = b
		}
	}
	require.NotNil(t, sealed)
	_, err = h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.Latest()})
	require.NoError(t, err, "the plain bundle is gone")
	require.NoError(t, h.repo.Put(ctx, latest.Instance.NewBundleName(1, forged, forged), bytes.NewReader(sealed)))
	_, err = h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.Latest()})
	require.ErrorIs(t, err, bundle.ErrCorrupt)
	assert.ErrorContains(t, err, "another object name")
}

// With a key, an edited manifest is refused before anything is
// restored: restores trust its checksums.
func TestEditedManifestRefused(t *testing.T) {
	ctx := context.Background()
	h, plan := keyedRestorePoint(t)
	assert.NotEmpty(t, plan.RestorePoint.MAC, "written with a MAC")

	edited := *plan.RestorePoint
	edited.StopLSN += 0x1000 // say it is consistent later than it is
	b, err := repository.EncodeManifest(&edited)
	require.NoError(t, err)
	name := plan.Instance.ManifestName(edited.ID)
	require.NoError(t, h.repo.Delete(ctx, name))
	require.NoError(t, h.repo.Put(ctx, name, bytes.NewReader(b)))
	_, err = h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.Latest()})
	require.ErrorIs(t, err, repository.ErrManifestAuth)
	_, err = h.job.Restore(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.Latest()},
		walbackup.RestoreTo{Image: filepath.Join(t.TempDir(), "restored")})
	require.ErrorIs(t, err, repository.ErrManifestAuth, "nothing restored")
}

// keyedRestorePoint runs a job with a key on the fakes to one restore
// point and returns the plan of a restore to the latest state.
func keyedRestorePoint(t *testing.T) (*harness, *walbackup.Plan) {
	t.Helper()
	ctx := context.Background()
	key, err := bundle.NewKey(bytes.Repeat([]byte{7}, bundle.KeySize))
	require.NoError(t, err)
	h := newHarness(t, func(c *walbackup.Config) { c.Schedule, c.Key = nil, key })
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	h.addWAL()
	h.step(t, time.Hour)
	require.NoError(t, h.job.StartParent(ctx))
	h.idle(t)
	require.NoError(t, h.job.Disable(ctx))
	plan, err := h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.Latest()})
	require.NoError(t, err, "what the job wrote reads with its key")
	return h, plan
}
