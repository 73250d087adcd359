package walbackup_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/memory"
	"github.com/pglogship/pglogship/session"
	smem "github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

// A repository outage inside an interval is retried after 1, 2 and 4
// minutes (doubling), and the batch ships on the first retry after it ends,
// well before the next interval; the session warns once for the interval.
func TestShipRetriedWithBackoff(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	start := h.clk.Now()
	back := start.Add(15*time.Minute + 5*time.Minute) // the outage ends at 08:20
	var mu sync.Mutex
	var attempts []time.Duration
	h.repo.SetFault(func(op memory.Op, _ string) error {
		if op != memory.OpPut {
			return nil
		}
		now := h.clk.Now()
		mu.Lock()
		attempts = append(attempts, now.Sub(start))
		mu.Unlock()
		if now.Before(back) {
			return errors.New("connection refused")
		}
		return nil
	})
	h.addWAL()
	h.addWAL()
	evs := h.step(t, 29*time.Minute+59*time.Second) // up to just before the second interval
	mu.Lock()
	assert.Equal(t, []time.Duration{15 * time.Minute, 16 * time.Minute, 18 * time.Minute, 22 * time.Minute}, attempts,
		"the interval tries, then retries after 1, 2 and 4 minutes")
	mu.Unlock()
	var warnings, shipped int
	for _, e := range evs {
		switch e.Kind {
		case walbackup.EventWarning:
			warnings++
			assert.Contains(t, e.Message, "connection refused")
		case walbackup.EventBatchShipped:
			shipped++
			assert.Equal(t, 2, e.Files)
			assert.Equal(t, 7*time.Minute, e.Lag, "stored 7 minutes after the interval was due")
		}
	}
	assert.Equal(t, 1, warnings, "one warning for the interval, not one per retry")
	assert.Equal(t, 1, shipped)
	assert.Empty(t, h.guest.Waiting())
	require.NoError(t, h.job.Disable(ctx))
	c := h.sessions(t, h.job.ChildName())[0]
	assert.Equal(t, session.StateWarning, c.State)
	log, err := h.store.Log(ctx, c.ID, 0, 100)
	require.NoError(t, err)
	var retried bool
	for _, e := range log {
		retried = retried || e.Severity == session.SeverityInfo && strings.Contains(e.Message, "on retry 3")
	}
	assert.True(t, retried, "the session log says the batch shipped on the third retry")
}

// A guest that stops answering mid-ship is abandoned after the operation
// timeout of silence, the WAL stays in the guest, and Disable still ends
// the session while the guest hangs.
func TestHungGuestIsAbandoned(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	hanging := make(chan guesttest.Op, 10)
	h.guest.SetFault(func(op guesttest.Op, _ string) error {
		if op == guesttest.OpRead {
			hanging <- op
			return guesttest.ErrHang
		}
		return nil
	})
	h.addWAL()
	h.clk.Set(h.next) // the interval starts shipping and hangs
	<-hanging
	h.clk.Add(walbackup.DefaultOperationTimeout) // five silent minutes
	evs := h.idle(t)
	require.NotEmpty(t, evs)
	assert.Equal(t, walbackup.EventWarning, evs[0].Kind)
	assert.Contains(t, evs[0].Message, "no progress for 5m0s")
	assert.Len(t, h.guest.Waiting(), 1, "the WAL stays in the guest")

	// Now the guest hangs on everything, close included.
	h.guest.SetFault(func(op guesttest.Op, _ string) error { hanging <- op; return guesttest.ErrHang })
	disabled := make(chan error, 1)
	go func() { disabled <- h.job.Disable(ctx) }()
	for op := range hanging {
		h.clk.Add(walbackup.DefaultOperationTimeout)
		if op == guesttest.OpClose {
			break
		}
	}
	select {
	case err := <-disabled:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Disable blocked on a hung guest")
	}
	c := h.sessions(t, h.job.ChildName())[0]
	assert.True(t, c.State.Final())
	assert.Len(t, h.guest.Waiting(), 1)
}

// Run ties the job to a context: when it ends, the child session stops,
// the runtime is uninstalled, and Run returns the context's error.
func TestRunStopsWithItsContext(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- h.job.Run(ctx) }()
	h.idle(t)
	h.addWAL()
	h.step(t, 15*time.Minute)
	require.ErrorIs(t, h.job.Enable(context.Background()), walbackup.ErrEnabled)
	cancel()
	require.ErrorIs(t, <-ran, context.Canceled)
	assert.Equal(t, 0, h.guest.Installed(), "the runtime was uninstalled")
	c := h.sessions(t, h.job.ChildName())[0]
	assert.Equal(t, session.StateStopped, c.State)
	assert.Equal(t, int64(1), c.Counters.Files)
	require.ErrorIs(t, h.job.StartParent(context.Background()), walbackup.ErrNotEnabled)

	// Disable from elsewhere ends Run with nil.
	go func() { ran <- h.job.Run(context.Background()) }()
	h.idle(t)
	require.NoError(t, h.job.Disable(context.Background()))
	require.NoError(t, <-ran)
}

// errHostDied stands for everything a dead host can no longer do.
var errHostDied = errors.New("host died")

// deadStore is a session store whose host died: after kill, every call
// that writes fails, so the session record stays as the dying host left it.
type deadStore struct {
	session.Store
	deadFlag
}

func (s deadStore) Create(ctx context.Context, x session.Session) (session.Session, error) {
	return guard(s.deadFlag, func() (session.Session, error) { return s.Store.Create(ctx, x) })
}

func (s deadStore) Update(ctx context.Context, x session.Session) error {
	return guard0(s.deadFlag, func() error { return s.Store.Update(ctx, x) })
}

func (s deadStore) Append(ctx context.Context, id string, e session.Entry) (session.Entry, error) {
	return guard(s.deadFlag, func() (session.Entry, error) { return s.Store.Append(ctx, id, e) })
}

// deadFlag is the kill switch of a host's wrappers: once dead is set,
// every call they guard fails with errHostDied.
type deadFlag struct {
	dead *atomic.Bool
	// countdown, when set and armed (positive), kills the host at the
	// call that takes it to zero: a crash at a chosen point.
	countdown *atomic.Int64
}

func (d deadFlag) check() error {
	if d.countdown != nil && d.countdown.Add(-1) == 0 {
		d.dead.Store(true)
	}
	if d.dead.Load() {
		return errHostDied
	}
	return nil
}

// guard runs call unless the host is dead.
func guard[T any](d deadFlag, call func() (T, error)) (T, error) {
	if err := d.check(); err != nil {
		var zero T
		return zero, err
	}
	return call()
}

// guard0 is guard for calls that return only an error.
func guard0(d deadFlag, call func() error) error {
	if err := d.check(); err != nil {
		return err
	}
	return call()
}

// crashTrials is how many kill points the crash tests try: 100 by
// default, more with PGLOGSHIP_CRASH_TRIALS (make crash runs 1000).
func crashTrials(t *testing.T) int {
	if v := os.Getenv("PGLOGSHIP_CRASH_TRIALS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "PGLOGSHIP_CRASH_TRIALS")
		return n
	}
	return 100
}

// oldestNeeded is the first segment the repository must still hold: the
// start of the oldest restore point retention kept ("" when there is none).
func oldestNeeded(t *testing.T, repo repository.Repository, inst repository.Instance) string {
	t.Helper()
	rps, err := repository.RestorePoints(context.Background(), repo, inst, nil)
	require.NoError(t, err)
	if len(rps) == 0 {
		return ""
	}
	return wal.SegmentAt(rps[0].Timeline, rps[0].StartLSN, rps[0].SegmentSize()).String()
}

// needed keeps the files at or after the oldest needed segment: retention
// may delete what comes before it.
func needed(files map[string][]byte, from string) map[string][]byte {
	out := map[string][]byte{}
	for n, b := range files {
		if n >= from {
			out[n] = b
		}
	}
	return out
}

// The job's host is killed at random points (100 by default) while the
// child job ships and parent sessions take restore points and expire old
// ones (retention keeps 2): the context is canceled in the middle of a
// guest, repository or store call, and from then on nothing the host does
// reaches anything. After a restart every segment a kept restore point
// needs is in the repository or still in the guest, none is lost, none is
// stored with two contents; the restarted job ships the rest, closes the
// sessions the dead host left running, and Verify finds nothing wrong.
func TestJobKilledAtRandomPoints(t *testing.T) {
	for trial := 0; trial < crashTrials(t); trial++ {
		t.Run(fmt.Sprint(trial), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(trial), 11))
			g := newFakeGuest(42)
			repo, store := memory.New(), smem.New()
			inst := repository.Instance{Job: "Daily DB Job", Machine: "vm1", SystemID: 42}
			retain := func(c *walbackup.Config) { c.Retention = walbackup.Retention{RestorePoints: 2} }
			seq := 0
			addWAL := func(n int) {
				for i := 0; i < n; i++ {
					seq++
					g.SwitchWAL([]byte(fmt.Sprintf("segment %d of trial %d", seq, trial)))
				}
			}

			// Host 1 runs until it is killed at a random call.
			var dead atomic.Bool
			ctx, kill := context.WithCancel(context.Background())
			// Half the trials cut at any call, half at one of expiry's
			// deletes, whose windows are a call wide.
			var calls, deletes atomic.Int64
			cutAt, cutAtDelete := int64(1+rng.IntN(150)), int64(0)
			if trial%2 == 1 {
				cutAt, cutAtDelete = 0, int64(1+rng.IntN(4))
			}
			fault := func(isDelete bool) error {
				if dead.Load() {
					return errHostDied
				}
				n := calls.Add(1)
				if isDelete && deletes.Add(1) == cutAtDelete || n == cutAt {
					dead.Store(true)
					kill()
					return errHostDied
				}
				return nil
			}
			g.SetFault(func(guesttest.Op, string) error { return fault(false) })
			repo.SetFault(func(op memory.Op, _ string) error { return fault(op == memory.OpDelete) })
			h := newJobHarness(t, g, repo, deadStore{store, deadFlag{dead: &dead}}, retain)
			ran := make(chan error, 1)
			go func() { ran <- h.job.Run(ctx) }()
			alive := func() bool {
				select {
				case <-ran:
					return false
				default:
					return !dead.Load()
				}
			}
			if h.idleOrDead(t, ran) {
				for i := 0; i < 12 && alive(); i++ {
					addWAL(1 + rng.IntN(3))
					h.clk.Set(h.next) // an interval, so restore point ids differ
					if !h.idleOrDead(t, ran) {
						break
					}
					if rng.IntN(3) == 0 && alive() {
						_ = h.job.StartParent(ctx)
						if !h.idleOrDead(t, ran) {
							break
						}
					}
				}
			}
			kill()
			dead.Store(true)
			select {
			case <-ran:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after its context ended")
			}

			// Nothing is lost so far (the repository and guest are fine; only
			// the host died). stored fails on two contents for one name.
			g.SetFault(nil)
			repo.SetFault(nil)
			from := oldestNeeded(t, repo, inst)
			requireNothingLost(t, needed(g.Archived(), from), stored(t, repo, inst, 1), g.Waiting(),
				fmt.Sprintf("killed at call %d or delete %d", cutAt, cutAtDelete))
			// Whatever the dead host left is consistent: every committed
			// restore point whole, the WAL after it without a gap.
			rep, err := h.job.Verify(context.Background())
			require.NoError(t, err)
			require.True(t, rep.OK(), "right after the kill at call %d or delete %d: %v", cutAt, cutAtDelete, rep.Problems)

			// Host 2 starts the same job on the same guest, repository and
			// store, ships, takes a restore point (and expires), ships again.
			h2 := newJobHarness(t, g, repo, store, retain)
			h2.clk.Set(h.clk.Now().Add(time.Hour))
			require.NoError(t, h2.job.Enable(context.Background()))
			h2.idle(t)
			h2.step(t, 15*time.Minute)
			require.NoError(t, h2.job.StartParent(context.Background()))
			h2.idle(t)
			addWAL(1)
			h2.step(t, 15*time.Minute)
			require.NoError(t, h2.job.Disable(context.Background()))
			require.Empty(t, g.Waiting(), "the restarted job shipped everything")
			in := stored(t, repo, inst, 1)
			files := needed(g.Archived(), oldestNeeded(t, repo, inst))
			for n, want := range files {
				require.Equal(t, want, in[n], "%s after the restart", n)
			}
			for n, got := range in {
				require.Equal(t, g.Archived()[n], got, "%s stored as archived", n)
			}
			for _, job := range []string{h.job.Name(), h.job.ChildName()} {
				for _, s := range h2.sessions(t, job) {
					require.True(t, s.State.Final(), "session %s of %s left %s", s.ID, job, s.State)
				}
			}
			rep, err = h2.job.Verify(context.Background())
			require.NoError(t, err)
			require.True(t, rep.OK(), "killed at call %d or delete %d: %v", cutAt, cutAtDelete, rep.Problems)
		})
	}
}

// newJobHarness builds a job on the given fakes with a fresh mock clock.
func newJobHarness(t *testing.T, g *guesttest.Guest, repo *memory.Repo, store session.Store, tweaks ...func(*walbackup.Config)) *harness {
	t.Helper()
	h := &harness{clk: clock.NewMock(), guest: g, repo: repo, events: make(chan walbackup.Event, 1024)}
	h.clk.Set(time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC))
	h.hv = hypervisortest.New(h.clk, hypervisor.Machine{ID: "vm1"})
	h.list = store
	cfg := walbackup.Config{
		Name: "Daily DB Job", Machines: []walbackup.Machine{{ID: "vm1"}}, LogBackupInterval: 15 * time.Minute,
		Hypervisor: h.hv, Guests: guesttest.NewDeployer(map[string]*guesttest.Guest{"vm1": g}),
		Repository: repo, Sessions: store, Clock: h.clk, Logger: testenv.Logger(t),
		Observer: func(e walbackup.Event) { h.events <- e },
	}
	for _, tweak := range tweaks {
		tweak(&cfg)
	}
	job, err := walbackup.NewJob(cfg)
	require.NoError(t, err)
	h.job = job
	return h
}

// idleOrDead waits until the job is idle (true) or Run has returned (false).
func (h *harness) idleOrDead(t *testing.T, ran chan error) bool {
	t.Helper()
	for {
		select {
		case e := <-h.events:
			if e.Kind == walbackup.EventIdle {
				h.next = e.Next
				return true
			}
		case err := <-ran:
			ran <- err // leave it for the caller
			return false
		case <-time.After(10 * time.Second):
			t.Fatal("the job neither became idle nor stopped")
		}
	}
}

// A session left running by a host that died is closed as failed when the
// job starts again.
func TestStaleSessionClosedAtStart(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	old, err := h.store.Create(ctx, session.Session{Job: h.job.ChildName(), Kind: session.KindChild, State: session.StateWorking,
		Start: h.clk.Now().Add(-time.Hour)})
	require.NoError(t, err)
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	got, err := h.store.Get(ctx, old.ID)
	require.NoError(t, err)
	assert.Equal(t, session.StateFailed, got.State)
	assert.Contains(t, got.Result, "host program stopped")
	assert.Equal(t, h.clk.Now().UTC(), got.End)
	require.NoError(t, h.job.Disable(ctx))
}

// A split brain (a segment name the repository holds with other content)
// fails the session with a diagnosis; the later WAL keeps shipping.
func TestSplitBrainFailsTheSession(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	h.addWAL()
	name := h.guest.SwitchWAL([]byte("segment 2"))
	h.step(t, 15*time.Minute)
	h.guest.AddWAL(name, []byte("segment 2 of the other primary"))
	h.addWAL()
	var msg string
	for _, e := range h.step(t, 15*time.Minute) {
		if e.Kind == walbackup.EventWarning {
			msg = e.Message
		}
	}
	assert.Contains(t, msg, "split brain")
	assert.Contains(t, msg, name)
	assert.Empty(t, h.guest.Waiting(), "nothing is stuck in the guest")
	require.NoError(t, h.job.Disable(ctx))
	c := h.sessions(t, h.job.ChildName())[0]
	assert.Equal(t, session.StateFailed, c.State)
	assert.Equal(t, int64(3), c.Counters.Files, "segments 1 to 3 shipped")
}

// A guest unreachable at the start of a session is a warning once it
// answers within the session, and what waited ships then; one never
// reached fails the session.
func TestGuestUnreachable(t *testing.T) {
	for _, back := range []bool{true, false} {
		ctx := context.Background()
		h := newHarness(t)
		var down atomic.Bool
		down.Store(true)
		h.guest.SetFault(func(op guesttest.Op, _ string) error {
			if op == guesttest.OpDeploy && down.Load() {
				return errors.New("dial tcp 10.0.0.5:22: connect: no route to host")
			}
			return nil
		})
		require.NoError(t, h.job.Enable(ctx))
		evs := h.idle(t)
		require.NotEmpty(t, evs)
		assert.Contains(t, evs[0].Message, "unreachable, its WAL waits in the guest")
		h.addWAL()
		h.step(t, 15*time.Minute)
		if back {
			down.Store(false)
		}
		h.addWAL()
		h.step(t, 15*time.Minute)
		require.NoError(t, h.job.Disable(ctx))
		c := h.sessions(t, h.job.ChildName())[0]
		if back {
			assert.Equal(t, session.StateWarning, c.State)
			assert.Equal(t, int64(2), c.Counters.Files, "what waited shipped")
			assert.Empty(t, h.guest.Waiting())
		} else {
			assert.Equal(t, session.StateFailed, c.State)
			log, err := h.store.Log(ctx, c.ID, 0, 100)
			require.NoError(t, err)
			assert.Contains(t, log[len(log)-1].Message, "not reached during the whole session")
			assert.Len(t, h.guest.Waiting(), 2, "nothing lost: it waits in the guest")
		}
	}
}

// A refused host key is not an outage: the session fails and says why.
func TestHostKeyRefusedFailsTheSession(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	h.guest.SetFault(func(op guesttest.Op, _ string) error {
		if op == guesttest.OpDeploy {
			return fmt.Errorf("%w: knownhosts: key mismatch", guest.ErrHostKey)
		}
		return nil
	})
	require.NoError(t, h.job.Enable(ctx))
	evs := h.idle(t)
	require.NotEmpty(t, evs)
	assert.Contains(t, evs[0].Message, "refused, fix this")
	assert.Contains(t, evs[0].Message, "host key")
	require.NoError(t, h.job.Disable(ctx))
	assert.Equal(t, session.StateFailed, h.sessions(t, h.job.ChildName())[0].State)
	assert.Zero(t, h.guest.Deploys(), "nothing was deployed")
}

// A runtime killed in the middle of a session (the guest rebooted, an
// operator killed it) is deployed again on the next retry and the WAL
// ships; the session warns.
func TestRuntimeKilled(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	h.addWAL()
	h.step(t, 15*time.Minute)
	h.guest.KillRuntimes()
	h.addWAL()
	h.step(t, 16*time.Minute) // the interval fails, its first retry deploys again and ships
	assert.Empty(t, h.guest.Waiting())
	assert.Equal(t, 2, h.guest.Deploys())
	require.NoError(t, h.job.Disable(ctx))
	c := h.sessions(t, h.job.ChildName())[0]
	assert.Equal(t, session.StateWarning, c.State)
	assert.Equal(t, int64(2), c.Counters.Files)
	log, err := h.store.Log(ctx, c.ID, 0, 100)
	require.NoError(t, err)
	var said bool
	for _, e := range log {
		said = said || strings.Contains(e.Message, "stopped answering")
	}
	assert.True(t, said, "the log says the runtime was replaced")
}

// A release the library does not know (a PostgreSQL 19) is refused at the
// requirement check with its named error, which says what is supported:
// the session fails (an operator must act), and archive_command is never
// set.
func TestUnknownReleaseRefused(t *testing.T) {
	ctx := context.Background()
	h19 := guesttest.NewGuest(guest.Instance{Version: 190000, WALLevel: "replica", ArchiveMode: "on", SystemID: 42,
		Timeline: 1, WALSegmentSize: 16 << 20})
	h := newHarness(t, func(c *walbackup.Config) {
		c.Guests = guesttest.NewDeployer(map[string]*guesttest.Guest{"vm1": h19})
	})
	require.NoError(t, h.job.Enable(ctx))
	evs := h.idle(t)
	require.NotEmpty(t, evs)
	assert.Contains(t, evs[0].Message, "refused, fix this")
	assert.Contains(t, evs[0].Message, guest.ErrPostgresTooNew.Error())
	assert.Contains(t, evs[0].Message, "190000")
	require.NoError(t, h.job.Disable(ctx))
	assert.Equal(t, session.StateFailed, h.sessions(t, h.job.ChildName())[0].State)
	assert.Empty(t, h19.Instance().ArchiveCommand, "archive_command never set")
	assert.Zero(t, h19.Installed(), "the runtime uninstalled")
}
