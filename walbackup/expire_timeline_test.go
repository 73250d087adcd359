package walbackup_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

// tlSeg names segment n of timeline tli (16 MiB segments, log 0).
func tlSeg(tli uint32, n int) string { return fmt.Sprintf("%08X%016X", tli, n) }

// putSegments stores one bundle per segment first..last of a timeline.
func putSegments(t *testing.T, h *harness, tli uint32, first, last int) {
	t.Helper()
	for n := first; n <= last; n++ {
		var buf bytes.Buffer
		name := inst42.NewBundleName(tli, tlSeg(tli, n), tlSeg(tli, n))
		w, err := bundle.NewWriter(&buf, name, nil)
		require.NoError(t, err)
		_, err = w.Add(tlSeg(tli, n), bundle.Raw, bytes.NewReader([]byte(fmt.Sprintf("WAL %d of timeline %d", n, tli))))
		require.NoError(t, err)
		_, err = w.Close()
		require.NoError(t, err)
		require.NoError(t, h.repo.Put(context.Background(), name, &buf))
	}
}

// putRestorePoint commits a full restore point of timeline tli whose
// backup starts in segment n, taken at hour.
func putRestorePoint(t *testing.T, h *harness, tli uint32, n, hour int) *repository.Manifest {
	t.Helper()
	ctx := context.Background()
	at := time.Date(2026, 11, 25, hour, 0, 0, 0, time.UTC)
	start := wal.LSN(uint64(n)<<24 | 0x28)
	m := &repository.Manifest{Version: repository.ManifestVersion, ID: repository.NewRestorePointID(at), Job: inst42.Job,
		Machine: inst42.Machine, SystemID: inst42.SystemID, Timeline: tli, StartLSN: start, StopLSN: start + 0x100,
		StartTime: at, StopTime: at, BackupLabel: "START WAL LOCATION: " + start.String(), Full: true}
	disk := []byte("image of " + m.ID)
	sum := sha256.Sum256(disk)
	require.NoError(t, h.repo.Put(ctx, inst42.RestorePoint(m.ID)+"/"+hypervisortest.DiskObject, bytes.NewReader(disk)))
	m.Objects = []repository.ManifestObject{{Name: hypervisortest.DiskObject, Size: int64(len(disk)), SHA256: hex.EncodeToString(sum[:])}}
	require.NoError(t, repository.WriteManifest(ctx, h.repo, inst42, m, nil))
	return m
}

// putHistory stores timeline tli's history file, branched off its parent
// at lsn.
func putHistory(t *testing.T, h *harness, tli, parent uint32, lsn wal.LSN) {
	t.Helper()
	body := fmt.Sprintf("%d\t%s\tbefore 2026-11-25 09:30:00+00\n", parent, lsn)
	require.NoError(t, h.repo.Put(context.Background(), inst42.HistoryName(fmt.Sprintf("%08X.history", tli)), bytes.NewReader([]byte(body))))
}

// segmentsLeft lists the segments a timeline's bundles still hold.
func segmentsLeft(t *testing.T, h *harness, tli uint32) []string {
	t.Helper()
	var out []string
	for n := range stored(t, h.repo, inst42, tli) {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func segs(tli uint32, first, last int) []string {
	var out []string
	for n := first; n <= last; n++ {
		out = append(out, tlSeg(tli, n))
	}
	return out
}

// Expiry keeps, per kept restore point, the WAL of its own timeline from
// its start and of the timelines branching off it after that, never WAL
// by one LSN cutoff over every timeline. The case of issue 21: RP1 on
// timeline 1 in segment 1, RP2 on timeline 1 in segment 5, a restore to
// 0/3800000 (timeline 2), RP3 on timeline 2 in segment 4. Keeping 2, the
// cutoff at RP2's start deleted timeline 2's segments 3 and 4, and RP3,
// the newest, could not be restored.
func TestExpiryFollowsTimelines(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		keep     int
		history  bool
		rp3      bool
		tl1, tl2 []string // segments left
	}{
		{name: "the newest restore point on the new timeline", keep: 2, history: true, rp3: true,
			tl1: segs(1, 5, 8), tl2: segs(2, 4, 7)},
		{name: "only the newest kept: the old timeline goes", keep: 1, history: true, rp3: true,
			tl1: nil, tl2: segs(2, 4, 7)},
		{name: "a timeline that branched off before every kept restore point goes", keep: 1, history: true,
			tl1: segs(1, 5, 8), tl2: nil},
		{name: "a timeline without its history file stays whole", keep: 1, history: false, rp3: false,
			tl1: segs(1, 5, 8), tl2: segs(2, 3, 7)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *walbackup.Config) {
				c.Schedule = nil
				c.Retention = walbackup.Retention{RestorePoints: tc.keep}
			})
			putSegments(t, h, 1, 1, 8)
			putSegments(t, h, 2, 3, 7)
			if tc.history {
				putHistory(t, h, 2, 1, 0x3800000)
			}
			rp1 := putRestorePoint(t, h, 1, 1, 9)
			rp2 := putRestorePoint(t, h, 1, 5, 10)
			rps := []*repository.Manifest{rp1, rp2}
			if tc.rp3 {
				rps = append(rps, putRestorePoint(t, h, 2, 4, 11))
			}
			exp, err := h.job.Expire(ctx)
			require.NoError(t, err)
			left, err := repository.RestorePoints(ctx, h.repo, inst42, nil)
			require.NoError(t, err)
			kept := rps[len(rps)-tc.keep:]
			assert.Equal(t, ids(kept), ids(left))
			assert.Equal(t, tc.tl1, segmentsLeft(t, h, 1), "timeline 1")
			assert.Equal(t, tc.tl2, segmentsLeft(t, h, 2), "timeline 2")
			assert.Len(t, exp.RestorePoints, len(rps)-tc.keep)
			if tc.history {
				_, err := h.repo.Stat(ctx, inst42.HistoryName("00000002.history"))
				require.NoError(t, err, "history files stay")
			}

			// The newest restore point restores to the end of its WAL,
			// every segment from its start there, and the repository
			// verifies clean.
			plan, err := h.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.Latest()})
			require.NoError(t, err)
			newest := rps[len(rps)-1]
			assert.Equal(t, newest.ID, plan.RestorePoint.ID)
			last := tc.tl1
			if newest.Timeline == 2 {
				last = tc.tl2
			}
			for _, n := range last {
				require.NoError(t, walbackup.FetchWAL(ctx, h.repo, inst42, n, nil, io.Discard), n)
			}
			rep, err := h.job.Verify(ctx)
			require.NoError(t, err)
			assert.True(t, rep.OK(), "%v", rep.Problems)
		})
	}
}
