package walbackup_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/memory"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/walbackup"
)

var inst42 = repository.Instance{Job: "Daily DB Job", Machine: "vm1", SystemID: 42}

// A parent session holds PostgreSQL in backup mode around the image,
// ships the backup's WAL into the repository, and only then commits the
// restore point's manifest, with backup_label, LSNs, times and timeline.
func TestParentCommitsRestorePointAfterItsWAL(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	var mu sync.Mutex
	var puts []string
	h.repo.SetFault(func(op memory.Op, name string) error {
		if op == memory.OpPut {
			mu.Lock()
			puts = append(puts, name)
			mu.Unlock()
		}
		return nil
	})
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	h.addWAL()
	h.clk.Add(10 * time.Minute)
	require.NoError(t, h.job.StartParent(ctx))
	h.idle(t)

	ids, err := repository.RestorePointIDs(ctx, h.repo, inst42)
	require.NoError(t, err)
	require.Len(t, ids, 1)
	rp, err := repository.ReadManifest(ctx, h.repo, inst42, ids[0], nil)
	require.NoError(t, err)
	assert.True(t, rp.Full)
	assert.Contains(t, rp.BackupLabel, "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)")
	assert.Contains(t, rp.BackupLabel, "LABEL: pglogship "+rp.ID)
	assert.Equal(t, "0/2000028", rp.StartLSN.String())
	assert.Equal(t, "0/2000128", rp.StopLSN.String())
	assert.Equal(t, uint32(1), rp.Timeline)
	assert.Equal(t, h.clk.Now().UTC(), rp.StartTime)
	require.Len(t, rp.Objects, 1)
	assert.Equal(t, hypervisortest.DiskObject, rp.Objects[0].Name, "object names are relative to the restore point's folder")
	assert.Zero(t, h.guest.BackupsRunning(), "backup mode ended")
	assert.Equal(t, 1, h.guest.Installed(), "the parent's runtime is gone; the new child's runs")

	// The bundle holding the backup's segment was stored before the manifest.
	mu.Lock()
	defer mu.Unlock()
	walAt, manifestAt := -1, -1
	for i, n := range puts {
		switch {
		case strings.Contains(n, "/wal/") && strings.Contains(n, "000000010000000000000002"):
			walAt = i
		case strings.HasSuffix(n, "/manifest.json"):
			manifestAt = i
		}
	}
	require.GreaterOrEqual(t, walAt, 0, "the backup's WAL is in the repository: %v", puts)
	assert.Less(t, walAt, manifestAt, "WAL first, then the manifest commits the restore point")
	mu.Unlock()
	// The next child continues from the backup's segment: no false gap
	// although the parent's bundle ends with the .backup history file.
	h.addWAL()
	for _, e := range h.step(t, 15*time.Minute) {
		require.NotEqual(t, walbackup.EventWarning, e.Kind, e.Message)
	}
	mu.Lock()
	require.NoError(t, h.job.Disable(ctx))
	parent := h.sessions(t, h.job.Name())[0]
	assert.Equal(t, session.StateSuccess, parent.State)
	assert.Equal(t, int64(1), parent.Counters.Files)
	assert.Equal(t, session.StateSuccess, h.sessions(t, h.job.ChildName())[0].State)
}

// A restore point is not committed, and nothing of it is left, when the
// image export fails or when the backup's WAL cannot be stored; backup
// mode always ends, and the child session after it warns.
func TestParentFailureLeavesNoRestorePoint(t *testing.T) {
	for name, fault := range map[string]func(h *harness){
		"export": func(h *harness) {
			h.hv.SetFault(func(op hypervisortest.Op, _ string) error {
				if op == hypervisortest.OpExport {
					return errors.New("disk read error")
				}
				return nil
			})
		},
		"wal": func(h *harness) {
			h.repo.SetFault(func(op memory.Op, n string) error {
				if op == memory.OpPut && strings.Contains(n, "/wal/") {
					return errors.New("repository full")
				}
				return nil
			})
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t)
			require.NoError(t, h.job.Enable(ctx))
			h.idle(t)
			fault(h)
			h.clk.Add(time.Minute) // so the sessions after it are the newest
			require.NoError(t, h.job.StartParent(ctx))
			h.idle(t)
			ids, err := repository.RestorePointIDs(ctx, h.repo, inst42)
			require.NoError(t, err)
			assert.Empty(t, ids, "no restore point")
			var left []string
			require.NoError(t, h.repo.List(ctx, inst42.RestorePoint(""), func(o repository.Object) error {
				left = append(left, o.Name)
				return nil
			}))
			assert.Empty(t, left, "no objects of the failed restore point are left")
			assert.Zero(t, h.guest.BackupsRunning(), "backup mode ended")
			parent := h.sessions(t, h.job.Name())[0]
			assert.Equal(t, session.StateFailed, parent.State)
			assert.Contains(t, parent.Result, "no restore point of [vm1]")
			h.hv.SetFault(nil)
			h.repo.SetFault(nil)
			require.NoError(t, h.job.Disable(ctx))
			child := h.sessions(t, h.job.ChildName())[0]
			assert.Equal(t, parent.ID, child.ParentID)
			assert.Equal(t, session.StateWarning, child.State)
		})
	}
}

// A runtime without backup mode gives no restore point: an image without
// backup_label is no base for recovery with WAL.
func TestParentNeedsBackupMode(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, func(c *walbackup.Config) { c.Guests = noBackupMode{c.Guests} })
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	require.NoError(t, h.job.StartParent(ctx))
	h.idle(t)
	require.NoError(t, h.job.Disable(ctx))
	parent := h.sessions(t, h.job.Name())[0]
	assert.Equal(t, session.StateFailed, parent.State)
	log, err := h.store.Log(ctx, parent.ID, 0, 10)
	require.NoError(t, err)
	require.NotEmpty(t, log)
	assert.Contains(t, log[len(log)-1].Message, walbackup.ErrNoBackupMode.Error())
}

// A second start while a parent session runs is refused at once.
func TestStartWhileParentRuns(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	inSnapshot, release := make(chan struct{}), make(chan struct{})
	h.hv.SetFault(func(op hypervisortest.Op, _ string) error {
		if op == hypervisortest.OpSnapshot {
			close(inSnapshot)
			<-release
		}
		return nil
	})
	first := make(chan error, 1)
	go func() { first <- h.job.StartParent(ctx) }()
	<-inSnapshot
	require.ErrorIs(t, h.job.StartParent(ctx), walbackup.ErrParentRunning)
	close(release)
	require.NoError(t, <-first)
	h.idle(t)
	require.NoError(t, h.job.Disable(ctx))
	assert.Len(t, h.sessions(t, h.job.Name()), 1, "one parent session")
}

// parentStarts steps virtual time and returns when each parent session
// started, checking the child session ended before it and the next one
// started after it.
func parentStarts(t *testing.T, h *harness, d time.Duration) []time.Time {
	t.Helper()
	var starts []time.Time
	var order []string
	target := h.clk.Now().Add(d)
	for h.clk.Now().Before(target) {
		for _, e := range h.step(t, min(15*time.Minute, target.Sub(h.clk.Now()))) {
			if e.Kind != walbackup.EventSessionStarted && e.Kind != walbackup.EventSessionEnded {
				continue
			}
			order = append(order, string(e.Session.Kind)+" "+string(e.Kind))
			if e.Session.Kind == session.KindParent && e.Kind == walbackup.EventSessionStarted {
				starts = append(starts, e.Session.Start)
			}
		}
	}
	want := []string{}
	for range starts {
		want = append(want, "child session_ended", "parent session_started", "parent session_ended", "child session_started")
	}
	require.Equal(t, want, order, "every parent run ends the child session first and starts the next after it")
	return starts
}

func TestScheduleDailyForAWeek(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	starts := parentStarts(t, h, 7*24*time.Hour)
	require.NoError(t, h.job.Disable(ctx))
	require.Len(t, starts, 7)
	for i, s := range starts {
		assert.Equal(t, time.Date(2026, 11, 25+i, 22, 0, 0, 0, time.UTC), s, "run %d", i)
	}
	ids, err := repository.RestorePointIDs(ctx, h.repo, inst42)
	require.NoError(t, err)
	assert.Len(t, ids, 7, "a restore point a day")
}

func TestScheduleDailyOnWeekdays(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, func(c *walbackup.Config) { c.Schedule = walbackup.Daily(22, 0, time.Monday, time.Thursday) })
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	starts := parentStarts(t, h, 14*24*time.Hour) // from Wednesday 25 November
	require.NoError(t, h.job.Disable(ctx))
	var days []string
	for _, s := range starts {
		days = append(days, s.Format("Mon 2 15:04"))
	}
	assert.Equal(t, []string{"Thu 26 22:00", "Mon 30 22:00", "Thu 3 22:00", "Mon 7 22:00"}, days)
}

func TestScheduleEveryFourHours(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, func(c *walbackup.Config) { c.Schedule = walbackup.EveryHours(4) })
	require.NoError(t, h.job.Enable(ctx)) // at 08:00
	h.idle(t)
	starts := parentStarts(t, h, 24*time.Hour)
	require.NoError(t, h.job.Disable(ctx))
	var hours []string
	for _, s := range starts {
		hours = append(hours, s.Format("02 15:04"))
	}
	assert.Equal(t, []string{"25 12:00", "25 16:00", "25 20:00", "26 00:00", "26 04:00", "26 08:00"}, hours)
}

// A manual start between scheduled runs runs at once and leaves the
// schedule as it was.
func TestManualStartWhileScheduled(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	h.step(t, 4*time.Hour) // 12:00
	require.NoError(t, h.job.StartParent(ctx))
	h.idle(t)
	starts := parentStarts(t, h, 10*time.Hour+time.Minute)
	require.NoError(t, h.job.Disable(ctx))
	parents := h.sessions(t, h.job.Name())
	require.Len(t, parents, 2)
	assert.Equal(t, time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), parents[1].Start, "the manual run")
	assert.Equal(t, []time.Time{time.Date(2026, 11, 25, 22, 0, 0, 0, time.UTC)}, starts, "the scheduled run still comes")
}

// A scheduled run missed while the host program was down runs once at
// start-up, before the first child session; SkipMissedRun turns that off.
func TestMissedRunAtStartUp(t *testing.T) {
	for _, skip := range []bool{false, true} {
		ctx := context.Background()
		h := newHarness(t, func(c *walbackup.Config) { c.SkipMissedRun = skip })
		require.NoError(t, h.job.Enable(ctx)) // Wednesday 08:00
		h.idle(t)
		require.NoError(t, h.job.Disable(ctx))
		h.clk.Set(time.Date(2026, 11, 26, 23, 0, 0, 0, time.UTC)) // down over two 22:00 runs
		require.NoError(t, h.job.Enable(ctx))
		h.idle(t)
		parents := h.sessions(t, h.job.Name())
		if skip {
			assert.Empty(t, parents)
		} else {
			require.Len(t, parents, 1, "one run for the missed ones")
			assert.Equal(t, h.clk.Now().UTC(), parents[0].Start)
			assert.Equal(t, parents[0].ID, h.sessions(t, h.job.ChildName())[0].ParentID, "the child session follows it")
		}
		require.NoError(t, h.job.Disable(ctx))
	}
	// A job that never ran missed nothing.
	h := newHarness(t)
	h.clk.Set(time.Date(2026, 11, 26, 23, 0, 0, 0, time.UTC))
	require.NoError(t, h.job.Enable(context.Background()))
	h.idle(t)
	assert.Empty(t, h.sessions(t, h.job.Name()))
	require.NoError(t, h.job.Disable(context.Background()))
}

func TestScheduleNext(t *testing.T) {
	at := func(d, hh, mm int) time.Time { return time.Date(2026, 11, d, hh, mm, 0, 0, time.UTC) } // 25th is a Wednesday
	for _, c := range []struct {
		name string
		s    walbackup.Schedule
		from time.Time
		want time.Time
	}{
		{"daily later today", walbackup.Daily(22, 0), at(25, 8, 0), at(25, 22, 0)},
		{"daily at the time is strictly after", walbackup.Daily(22, 0), at(25, 22, 0), at(26, 22, 0)},
		{"daily on weekdays", walbackup.Daily(1, 30, time.Sunday), at(25, 8, 0), at(29, 1, 30)},
		{"every 4 hours", walbackup.EveryHours(4), at(25, 8, 0), at(25, 12, 0)},
		{"every 5 hours wraps at midnight", walbackup.EveryHours(5), at(25, 21, 0), at(26, 0, 0)},
		{"every 24 hours", walbackup.EveryHours(24), at(25, 0, 0), at(26, 0, 0)},
	} {
		assert.Equal(t, c.want, c.s.Next(c.from), c.name)
	}
}

func TestScheduleRefused(t *testing.T) {
	for _, s := range []walbackup.Schedule{walbackup.Daily(24, 0), walbackup.Daily(1, 60), walbackup.Daily(1, 0, 7),
		walbackup.EveryHours(0), walbackup.EveryHours(25)} {
		_, err := walbackup.NewJob(walbackup.Config{Name: "j", Machines: []walbackup.Machine{{ID: "vm1"}}, Schedule: s,
			LogBackupInterval: time.Hour, Hypervisor: hypervisortest.New(nil), Guests: guesttest.NewDeployer(nil),
			Repository: memory.New(), Sessions: newHarness(t).store})
		require.Error(t, err, "%#v", s)
	}
}

// noBackupMode deploys runtimes that hide their backup mode.
type noBackupMode struct{ guest.Deployer }

func (d noBackupMode) Deploy(ctx context.Context, t guest.Target) (guest.Runtime, error) {
	rt, err := d.Deployer.Deploy(ctx, t)
	if err != nil {
		return nil, err
	}
	return struct{ guest.Runtime }{rt}, nil
}

// Backup mode ends as soon as a Fixed snapshot is taken, before the
// export; a snapshot read live keeps it until the export is done.
func TestBackupModeAroundFixedAndLiveImages(t *testing.T) {
	for _, live := range []bool{false, true} {
		ctx := context.Background()
		h := newHarness(t)
		h.hv.SetLive(live)
		var during []int
		h.hv.SetFault(func(op hypervisortest.Op, _ string) error {
			if op == hypervisortest.OpExport {
				during = append(during, h.guest.BackupsRunning())
			}
			return nil
		})
		require.NoError(t, h.job.Enable(ctx))
		h.idle(t)
		require.NoError(t, h.job.StartParent(ctx))
		h.idle(t)
		require.NoError(t, h.job.Disable(ctx))
		want := 0
		if live {
			want = 1
		}
		assert.Equal(t, []int{want}, during, "backup mode during the export (live %v)", live)
		ids, err := repository.RestorePointIDs(ctx, h.repo, inst42)
		require.NoError(t, err)
		assert.Len(t, ids, 1)
	}
}
