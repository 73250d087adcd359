package walbackup_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/walbackup"
)

// oneRestorePoint runs a job keeping 1 restore point: WAL, a restore
// point, more WAL; it returns the restore point.
func oneRestorePoint(t *testing.T, tweaks ...func(*walbackup.Config)) (*harness, *repository.Manifest) {
	t.Helper()
	ctx := context.Background()
	h := newHarness(t, append([]func(*walbackup.Config){func(c *walbackup.Config) {
		c.Schedule = nil
		c.Retention = walbackup.Retention{RestorePoints: 1}
	}}, tweaks...)...)
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	h.addWAL()
	h.step(t, 15*time.Minute)
	require.NoError(t, h.job.StartParent(ctx))
	h.idle(t)
	h.addWAL()
	h.step(t, 15*time.Minute)
	rps, err := repository.RestorePoints(ctx, h.repo, inst42, nil)
	require.NoError(t, err)
	require.Len(t, rps, 1)
	return h, rps[0]
}

// A parent session (and its expiry) while a restore of the oldest restore
// point runs: expiry leaves that restore point's image and WAL to the
// restore and says so in the parent session's log; the restore reads all
// of it; the next expiry after the restore removes it.
func TestExpiryDuringARestore(t *testing.T) {
	for name, tweak := range map[string]func(*walbackup.Config){
		"pins in the session store":         func(*walbackup.Config) {},
		"pins in the job (a store without)": func(c *walbackup.Config) { c.Sessions = storeOnly{c.Sessions} },
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			h, rp1 := oneRestorePoint(t, tweak)
			wanted := storedSegments(t, h) // every segment shipped so far
			require.NotEmpty(t, wanted)
			h.guest.SetRecovery(wanted, guest.RecoveryResult{Promoted: true})
			var during walbackup.Expired
			h.hv.SetFault(func(op hypervisortest.Op, _ string) error {
				if op != hypervisortest.OpRestore {
					return nil
				}
				// Mid-restore: a new restore point makes rp1 one too many
				// (a minute later: the restore's watchdog allows 5).
				h.clk.Add(time.Minute)
				h.addWAL()
				require.NoError(t, h.job.StartParent(ctx))
				h.idle(t)
				var err error
				during, err = h.job.Expire(ctx)
				require.NoError(t, err)
				return nil
			})
			res, err := h.job.Restore(ctx, walbackup.RestoreRequest{Machine: "vm1", RestorePoint: rp1.ID, Target: walbackup.Latest()},
				walbackup.RestoreTo{Image: filepath.Join(t.TempDir(), "disk"), Guest: walbackup.Machine{ID: "vm1"}})
			require.NoError(t, err, "the restore reads what it started from")
			assert.True(t, res.Recovery.Promoted)
			recs := h.guest.Recoveries()
			require.Len(t, recs, 1)
			assert.Empty(t, recs[0].Missing, "every WAL segment after the restore point was there")
			assert.Equal(t, []string{rp1.ID}, during.Held)
			assert.Empty(t, during.RestorePoints)

			parent := h.sessions(t, h.job.Name())[0]
			log, err := h.store.Log(ctx, parent.ID, 0, 100)
			require.NoError(t, err)
			assert.Contains(t, log[len(log)-1].Message, "expiry left restore points ["+rp1.ID+"]")

			// Once the restore has ended, the next expiry removes it.
			exp, err := h.job.Expire(ctx)
			require.NoError(t, err)
			assert.Equal(t, []string{rp1.ID}, exp.RestorePoints)
			assert.NotEmpty(t, exp.Bundles, "and the WAL before the kept restore point")
			assert.Empty(t, exp.Held)
			require.NoError(t, h.job.Disable(ctx))
		})
	}
}

// storeOnly hides every optional interface of a session store.
type storeOnly struct{ session.Store }

// A pin in the session store is seen by every process: one job value
// (another process) holds a plan, another one's expiry leaves it alone. A
// pin whose process died runs out after RestorePinTTL and stops holding.
func TestRestorePinsAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	h, rp1 := oneRestorePoint(t)
	h.clk.Add(time.Hour)
	h.addWAL()
	require.NoError(t, h.job.Disable(ctx)) // no more parents: the expiries below are the test's
	other := newHarness(t, func(c *walbackup.Config) {
		c.Schedule, c.Retention, c.Sessions, c.Repository, c.Clock = nil, walbackup.Retention{RestorePoints: 1}, h.store, h.repo, h.clk
	})
	plan, err := other.job.Plan(ctx, walbackup.RestoreRequest{Machine: "vm1", RestorePoint: rp1.ID, Target: walbackup.Consistent()})
	require.NoError(t, err)
	// A second restore point, taken by hand as a parent would.
	rp2 := putRestorePoint(t, h, 1, 9, 23)

	hold, err := other.job.Hold(ctx, plan, "restore")
	require.NoError(t, err)
	exp, err := h.job.Expire(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{rp1.ID}, exp.Held, "held by the other process's restore")
	for i := 0; i < 3; i++ { // a pin's time to live, renewed every third of it
		h.clk.Add(walbackup.RestorePinTTL / 3)
		now := h.clk.Now()
		require.Eventually(t, func() bool {
			pins, err := h.store.Pins(ctx, h.job.Name(), now)
			return err == nil && len(pins) == 1 && pins[0].Until.Sub(now) > walbackup.RestorePinTTL/2
		}, 10*time.Second, time.Millisecond, "renewed at %s", now)
	}
	exp, err = h.job.Expire(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{rp1.ID}, exp.Held, "still held: the pin was renewed")
	hold.Release(ctx)
	hold.Release(ctx) // idempotent

	// A restore whose process died: its pin is never renewed.
	pins := h.store
	require.NoError(t, pins.Pin(ctx, session.Pin{Job: h.job.Name(), ID: "crashed", Purpose: "restore", Machine: "vm1", SystemID: 42,
		RestorePoints: []string{rp1.ID}, Timeline: 1, StartLSN: rp1.StartLSN, Until: h.clk.Now().Add(walbackup.RestorePinTTL)}, h.clk.Now()))
	exp, err = h.job.Expire(ctx)
	require.NoError(t, err)
	assert.Equal(t, []string{rp1.ID}, exp.Held)
	h.clk.Add(walbackup.RestorePinTTL)
	exp, err = h.job.Expire(ctx)
	require.NoError(t, err)
	assert.Empty(t, exp.Held, "the dead restore's pin ran out")
	assert.Equal(t, []string{rp1.ID}, exp.RestorePoints)
	left, err := repository.RestorePoints(ctx, h.repo, inst42, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{rp2.ID}, ids(left))

	// A plan whose restore point was expired before it was held.
	_, err = other.job.Hold(ctx, plan, "drill")
	require.ErrorIs(t, err, walbackup.ErrNoRestorePoint)
	got, err := pins.Pins(ctx, h.job.Name(), h.clk.Now())
	require.NoError(t, err)
	assert.Empty(t, got, "nothing stays pinned")
}
