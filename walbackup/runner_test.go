package walbackup_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/memory"
	"github.com/pglogship/pglogship/session"
	smem "github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/walbackup"
)

// process is one host process of a runner test: a Runner over jobs of its
// own on the shared guests, repository and store, killable.
type process struct {
	holder  string
	runner  *walbackup.Runner
	jobs    map[string]*walbackup.Job
	dead    atomic.Bool
	trip    atomic.Int64 // armed (positive): the process dies at the call that counts it down to zero
	leaseDn atomic.Bool  // only its lease calls fail
	// rosterDn: only its roster calls fail (with a roster world).
	rosterDn atomic.Bool
	// gate, while set, holds the Runner's goroutine after each poll from
	// its time on until it is closed: the process is paused (its jobs'
	// goroutines are not).
	gate atomic.Pointer[gate]
	stop func()
}

type gate struct {
	// from: polls made before it pass, even when their idle event comes
	// late (the clock may have moved on by then); a poll's time is read
	// off its next one, due a poll interval later.
	from time.Time
	ch   chan struct{}
}

// world is what the processes share: the guests (the VMs outlive any
// host), the repository and the session database.
type world struct {
	f      *fleet
	guests map[string]*guesttest.Guest // by job name, one machine each
	names  []string
	repo   *memory.Repo
	seq    map[string]int
	// batch makes the processes' stores LeaseBatchers, so their Runners
	// poll in batches rather than a job at a time.
	batch bool
	// roster makes them Rosters, so their Runners keep to their shares.
	roster bool
}

func newWorld(f *fleet, jobs int) *world {
	w := &world{f: f, guests: map[string]*guesttest.Guest{}, repo: memory.New(), seq: map[string]int{}}
	for i := 0; i < jobs; i++ {
		name := fmt.Sprintf("DB Job %02d", i)
		w.names = append(w.names, name)
		w.guests[name] = newFakeGuest(uint64(1000 + i))
	}
	return w
}

// process builds a Runner named holder over every job of the world, on
// store (a store value of its own, as a process would open).
func (w *world) process(t testing.TB, holder string, store session.Store, ttl time.Duration) *process {
	t.Helper()
	return w.processOf(t, holder, store, ttl, w.names)
}

// processOf is process over only the jobs names of the world.
func (w *world) processOf(t testing.TB, holder string, store session.Store, ttl time.Duration, names []string) *process {
	t.Helper()
	p := &process{holder: holder, jobs: map[string]*walbackup.Job{}}
	ds := newDeadSessions(store, p.deadFlag())
	ds.leasesDown = &p.leaseDn
	var sessions session.Store = ds
	switch {
	case w.batch && w.roster:
		sessions = deadBatchRosterSessions{deadBatchSessions{ds}, rosterPart{ds, &p.rosterDn}}
	case w.batch:
		sessions = deadBatchSessions{ds}
	case w.roster:
		sessions = deadRosterSessions{ds, rosterPart{ds, &p.rosterDn}}
	}
	var jobs []*walbackup.Job
	for _, name := range names {
		guests := map[string]*guesttest.Guest{"vm1": w.guests[name]}
		j := w.f.newJob(t, holder, name, guests, deadDeployer{guesttest.NewDeployer(guests), p.deadFlag()},
			deadRepo{w.repo, p.deadFlag()}, sessions)
		p.jobs[name] = j
		jobs = append(jobs, j)
	}
	observe := w.f.runnerObserver(holder)
	r, err := walbackup.NewRunner(walbackup.RunnerConfig{Jobs: jobs, Holder: holder, Sessions: sessions, LeaseTTL: ttl,
		Clock: w.f.clk, Logger: w.f.logger, Observer: func(e walbackup.RunnerEvent) {
			observe(e)
			if g := p.gate.Load(); g != nil && e.Kind == walbackup.RunnerIdle && e.Next.After(g.from) {
				<-g.ch
			}
		}})
	require.NoError(t, err)
	p.runner = r
	p.stop = w.f.startRunner(t, holder, r)
	return p
}

// deadFlag is p's kill switch, counting down to a crash when armed.
func (p *process) deadFlag() deadFlag { return deadFlag{dead: &p.dead, countdown: &p.trip} }

// kill makes every call of p fail and ends its context abruptly: its
// sessions and leases stay as they were.
func (p *process) kill() {
	p.dead.Store(true)
	p.stop()
}

func (p *process) set(t testing.TB, f *fleet, job string, enabled bool) {
	t.Helper()
	f.set(t, p.holder, p.runner, job, enabled)
}

// addWAL archives n segments in the guest of each job.
func (w *world) addWAL(n int, jobs ...string) {
	if len(jobs) == 0 {
		jobs = w.names
	}
	for _, name := range jobs {
		for i := 0; i < n; i++ {
			w.seq[name]++
			w.guests[name].SwitchWAL([]byte(fmt.Sprintf("%s segment %d", name, w.seq[name])))
		}
	}
}

// requireAllShipped checks that every file each guest ever archived is in
// the repository with its content, and none waits in a guest.
func (w *world) requireAllShipped(t testing.TB) {
	t.Helper()
	for i, name := range w.names {
		g := w.guests[name]
		require.Empty(t, g.Waiting(), "%s: WAL left in the guest", name)
		in := stored(t, w.repo, repository.Instance{Job: name, Machine: "vm1", SystemID: uint64(1000 + i)}, 1)
		archived := g.Archived()
		require.NotEmpty(t, archived)
		for n, want := range archived {
			require.Equal(t, want, in[n], "%s: %s in the repository", name, n)
		}
	}
}

// leaseOf returns who holds job's lease now, through a refused acquire.
func leaseOf(t testing.TB, store session.Store, job string, now time.Time) session.Lease {
	t.Helper()
	l, ok, err := store.(session.Leaser).AcquireLease(context.Background(), job, "an onlooker", now, time.Second)
	require.NoError(t, err)
	require.False(t, ok, "%s is held by nobody", job)
	return l
}

// newRunnerTest is a world of n jobs on a memory store, with a process
// "host-1" running.
func newRunnerTest(t *testing.T, n int) (*fleet, *world, *smem.Store, *process) {
	t.Helper()
	f := newFleet(testenv.Logger(t))
	w := newWorld(f, n)
	store := smem.New()
	return f, w, store, w.process(t, "host-1", store, 0)
}

// A Runner starts a job once its shared flag says enabled, holds its lease
// while it runs, and disables it cleanly (last ship, runtime uninstalled)
// and releases the lease once the flag says disabled.
func TestRunnerRunsEnabledJobsByLease(t *testing.T) {
	ctx := context.Background()
	f, w, store, p := newRunnerTest(t, 2)
	a, b := w.names[0], w.names[1]

	assert.Empty(t, p.runner.Running(), "jobs are disabled until enabled")
	w.f.step(t, time.Minute)
	assert.Empty(t, childSessions(t, store, a))

	p.set(t, f, a, true)
	assert.Equal(t, []string{a}, p.runner.Running(), "enabling polls at once")
	cs := childSessions(t, store, a)
	require.Len(t, cs, 1)
	assert.Equal(t, session.StateWorking, cs[0].State)
	holder, token := runBy(t, store, cs[0].ID)
	assert.Equal(t, "host-1", holder, "the session says who runs it")
	assert.Equal(t, int64(1), token)
	assert.Equal(t, 1, w.guests[a].Installed())
	assert.Zero(t, w.guests[b].Deploys(), "the disabled job does not run")

	w.addWAL(2, a)
	f.step(t, 15*time.Minute)
	assert.Empty(t, w.guests[a].Waiting(), "the job ships")
	l := leaseOf(t, store, a, f.clk.Now())
	assert.Equal(t, "host-1", l.Holder)
	assert.Equal(t, int64(1), l.Token, "renewed, not taken again")
	assert.True(t, l.Until.After(f.clk.Now().Add(walbackup.DefaultLeaseTTL*2/3-time.Second)), "renewed every TTL/3: %v", l.Until)

	w.addWAL(1, a)
	p.set(t, f, a, false)
	assert.Empty(t, p.runner.Running())
	cs = childSessions(t, store, a)
	// Warning: no restore point yet (no parent ran).
	assert.Contains(t, []session.State{session.StateSuccess, session.StateWarning}, cs[0].State)
	assert.Contains(t, cs[0].Result, "disabled", "disabled cleanly, not stopped")
	assert.Empty(t, w.guests[a].Waiting(), "with a last ship")
	assert.Zero(t, w.guests[a].Installed(), "and the runtime uninstalled")
	f.step(t, walbackup.DefaultLeaseTTL/3)
	_, ok, err := store.AcquireLease(ctx, a, "host-2", f.clk.Now(), time.Minute)
	require.NoError(t, err)
	assert.True(t, ok, "the lease was released: another process may take it before it runs out")

	require.ErrorIs(t, p.runner.Enable(ctx, "no such job"), walbackup.ErrUnknownJob)
	require.ErrorIs(t, p.runner.Run(ctx), walbackup.ErrRunnerRunning)
}

// A Runner whose lease was taken over stops that job at once (without
// writing its session's end: the store fences that off) and does not start
// it again while the other holds it.
func TestRunnerStopsJobWhoseLeaseIsLost(t *testing.T) {
	ctx := context.Background()
	f, w, store, p := newRunnerTest(t, 1)
	job := w.names[0]
	p.set(t, f, job, true)
	f.step(t, 5*time.Minute)

	// Another process takes the lease (as if this one had been paused past
	// its end): here, by releasing it in the store and acquiring it.
	l := leaseOf(t, store, job, f.clk.Now())
	require.NoError(t, store.ReleaseLease(ctx, l))
	other, ok, err := store.AcquireLease(ctx, job, "host-2", f.clk.Now(), time.Hour)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Greater(t, other.Token, l.Token)

	f.step(t, walbackup.DefaultLeaseTTL/3)
	assert.Empty(t, p.runner.Running())
	var stopping string
	for _, e := range f.seen {
		if e.runner != nil && e.runner.Kind == walbackup.RunnerJobStopping {
			stopping = e.runner.Message
		}
	}
	assert.Contains(t, stopping, "lease lost")
	cs := childSessions(t, store, job)
	require.Len(t, cs, 1)
	// Its own end is a write without the lease: fenced off, so the record
	// stays as the last write under the lease left it, for host-2 to
	// close when it starts the job.
	assert.Equal(t, session.StateWorking, cs[0].State, "the stale holder's end was fenced off")
	assert.Zero(t, w.guests[job].Installed(), "stopped at once, its runtime gone")

	f.step(t, 10*time.Minute)
	assert.Empty(t, p.runner.Running(), "not started again while host-2 holds it")
	assert.Len(t, childSessions(t, store, job), 1)
}

// A Runner that cannot renew a lease (its database connection is gone)
// stops the job while a poll of the lease is left, before another process
// may take it; the other starts it when the lease runs out, and the
// session records never overlap.
func TestRunnerStopsJobItCannotRenew(t *testing.T) {
	ttl := walbackup.DefaultLeaseTTL
	f, w, store, p1 := newRunnerTest(t, 1)
	job := w.names[0]
	p1.set(t, f, job, true)
	p2 := w.process(t, "host-2", store, ttl)
	assert.Equal(t, []string{job}, p1.runner.Running())
	assert.Empty(t, p2.runner.Running())

	until := leaseOf(t, store, job, f.clk.Now()).Until
	w.addWAL(1)
	p1.leaseDn.Store(true)
	f.step(t, ttl*2/3)
	assert.Empty(t, p1.runner.Running(), "stopped a poll before the lease runs out")
	cs := childSessions(t, store, job)
	require.Len(t, cs, 1)
	assert.Equal(t, session.StateStopped, cs[0].State)
	assert.True(t, cs[0].End.Before(until), "ended at %v, before the lease ran out at %v", cs[0].End, until)
	assert.Empty(t, p2.runner.Running(), "the lease still runs")

	f.step(t, until.Sub(f.clk.Now()))
	assert.Equal(t, []string{job}, p2.runner.Running(), "taken over the moment the lease ran out")
	cs = childSessions(t, store, job)
	require.Len(t, cs, 2)
	requireNoOverlap(t, cs, job)
	assert.True(t, cs[1].Start.Equal(until))
	holder, token := runBy(t, store, cs[1].ID)
	assert.Equal(t, "host-2", holder)
	assert.Equal(t, int64(2), token)

	p1.leaseDn.Store(false)
	f.step(t, 15*time.Minute)
	assert.Empty(t, p1.runner.Running(), "host-1 is back but host-2 holds the job")
	assert.Empty(t, w.guests[job].Waiting(), "what waited shipped from host-2")
}

// A process paused past its lease does not ship once the lease ran out,
// although its job's goroutine wakes before its Runner's can notice: the
// job checks its lease itself and stops, the process that took the job
// over ships, and the session records never overlap.
func TestPausedProcessDoesNotShipPastItsLease(t *testing.T) {
	f, w, store, p1 := newRunnerTest(t, 1)
	job := w.names[0]
	p1.set(t, f, job, true)
	// host-1 renews the lease, then freezes; an idle event of the start
	// still under way passes.
	g := &gate{from: f.clk.Now().Add(walbackup.DefaultLeaseTTL / 3), ch: make(chan struct{})}
	p1.gate.Store(g)
	f.step(t, walbackup.DefaultLeaseTTL/3)
	f.drop(runnerKey("host-1")) // so the fleet does not wait for it
	until := leaseOf(t, store, job, f.clk.Now()).Until
	p2 := w.process(t, "host-2", store, 0)
	w.addWAL(2)
	f.step(t, until.Sub(f.clk.Now()))
	assert.Equal(t, []string{job}, p2.runner.Running(), "host-2 took the job over when the lease ran out")

	// host-1's job wakes for its interval before host-2's does.
	from := len(f.seen)
	f.step(t, 15*time.Minute)
	woke := false
	for i, e := range f.seen {
		if e.holder == "host-1" && e.job != nil {
			require.NotEqual(t, walbackup.EventBatchShipped, e.job.Kind, "host-1 shipped past its lease")
			woke = woke || i >= from
		}
	}
	require.True(t, woke, "host-1's job woke after its lease ran out")
	assert.Empty(t, w.guests[job].Waiting(), "host-2 shipped")
	cs := childSessions(t, store, job)
	require.Len(t, cs, 2)
	requireNoOverlap(t, cs, job)
	assert.Equal(t, session.StateFailed, cs[0].State, "closed by host-2 at its start; host-1's own end came too late")

	// Resumed, host-1 finds the job taken.
	f.busy(runnerKey("host-1"))
	p1.gate.Store(nil)
	close(g.ch)
	f.settle(t)
	assert.Empty(t, p1.runner.Running())
	assert.Equal(t, []string{job}, p2.runner.Running())
	w.addWAL(1)
	f.step(t, 15*time.Minute)
	w.requireAllShipped(t)
}

// A Runner stopped on purpose ends its jobs at once and releases their
// leases, so another process takes them over at its next poll instead of
// waiting for the leases to run out.
func TestRunnerStopHandsJobsOver(t *testing.T) {
	f, w, store, p1 := newRunnerTest(t, 3)
	for _, name := range w.names {
		p1.set(t, f, name, true)
	}
	p2 := w.process(t, "host-2", store, 0)
	f.step(t, time.Minute)
	assert.Equal(t, w.names, p1.runner.Running())
	w.addWAL(1)

	stoppedAt := f.clk.Now()
	p1.stop()
	assert.Empty(t, p1.runner.Running())
	f.step(t, walbackup.DefaultLeaseTTL/3)
	assert.Equal(t, w.names, p2.runner.Running())
	for _, name := range w.names {
		cs := childSessions(t, store, name)
		require.Len(t, cs, 2)
		assert.Equal(t, session.StateStopped, cs[0].State)
		assert.LessOrEqual(t, cs[1].Start.Sub(stoppedAt), walbackup.DefaultLeaseTTL/3)
		requireNoOverlap(t, cs, name)
	}
	f.step(t, 15*time.Minute)
	w.requireAllShipped(t)
}

// Runner runs every job under its own lease in virtual time with the
// memory store; this is the three-process test of the issue on it (the
// real PostgreSQL store runs it in runner_integration_test.go).
func TestRunnersShareJobsByLeaseMemory(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%t", batch), func(t *testing.T) {
			store := smem.New()
			runnersScenario(t, batch, func(testing.TB) session.Store { return store })
		})
	}
}

// With a Roster, Runners run the enabled jobs in even shares: a process
// that joins gets its share from the one that ran them all, by clean
// hand-overs (the run stopped and its session ended before the lease is
// released, no two runs of a job at once), one that stops or dies leaves
// its share to the others, and nothing is lost on the way.
func TestRunnersShareJobsEvenly(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%t", batch), func(t *testing.T) {
			f, w, store, p1 := rosterWorld(t, batch)
			f.step(t, time.Minute)
			require.Equal(t, w.names, p1.runner.Running(), "alone, it runs every job")
			w.addWAL(1)

			counts := func(ps ...*process) []int {
				var out []int
				all := map[string]string{}
				for _, p := range ps {
					running := p.runner.Running()
					out = append(out, len(running))
					for _, name := range running {
						require.Empty(t, all[name], "%s runs in %s and %s", name, all[name], p.holder)
						all[name] = p.holder
					}
				}
				require.Len(t, all, len(w.names), "every job runs: %v", out)
				return out
			}
			handedOver := func(holder string) int { return handOvers(f, holder) }

			p2 := w.process(t, "host-2", store, 0)
			p3 := w.process(t, "host-3", store, 0)
			f.step(t, walbackup.DefaultLeaseTTL)
			assert.Equal(t, []int{4, 4, 4}, counts(p1, p2, p3))
			assert.Equal(t, 8, handedOver("host-1"), "host-1 handed over what was beyond its share, once")
			for _, name := range w.names {
				cs := childSessions(t, store, name)
				requireNoOverlap(t, cs, name)
				if len(cs) > 1 {
					assert.Equal(t, session.StateStopped, cs[0].State, "%s: the handed-over session ended cleanly", name)
				}
			}
			f.step(t, time.Minute)
			assert.Equal(t, 8, handedOver("host-1"), "shares that hold are left alone")
			assert.Zero(t, handedOver("host-2")+handedOver("host-3"))

			w.addWAL(1)
			p3.stop()
			f.step(t, walbackup.DefaultLeaseTTL)
			assert.Equal(t, []int{6, 6}, counts(p1, p2), "a stopped process's share goes to the others")
			p2.kill()
			f.step(t, 2*walbackup.DefaultLeaseTTL)
			assert.Equal(t, []int{12}, counts(p1), "so does a dead one's, once its leases and announcement ran out")

			w.addWAL(1)
			f.step(t, 15*time.Minute)
			w.requireAllShipped(t)
			for _, name := range w.names {
				requireNoOverlap(t, childSessions(t, store, name), name)
			}
		})
	}
}

// When a process leaves, its jobs go to the processes below their new
// share: one that reaches its share waits a lease's time to live before it
// takes another beyond it, however long the share had kept it from that
// job before (those runs were held elsewhere then). Here host-2 is the one
// Runner; host-1 and host-3 are announcements and leases written straight
// into the store, and host-3 leaves at each phase of host-2's polls.
func TestRunnerWaitsBeforeGoingBeyondAShareThatGrew(t *testing.T) {
	for _, batch := range []bool{false, true} {
		for _, phase := range []time.Duration{0, 10 * time.Second, 20 * time.Second, 30 * time.Second} {
			t.Run(fmt.Sprintf("batch=%t/phase=%v", batch, phase), func(t *testing.T) {
				ctx := context.Background()
				f := newFleet(testenv.LoggerAt(t, slog.LevelError))
				w := newWorld(f, 12)
				w.batch, w.roster = batch, true
				store := smem.New()
				ghosts := map[string][]session.Lease{}
				for i, name := range w.names {
					require.NoError(t, store.SetJobEnabled(ctx, name, true))
					holder := map[int]string{0: "host-1", 2: "host-3"}[i/4]
					if holder == "" {
						continue
					}
					l, ok, err := store.AcquireLease(ctx, name, holder, f.clk.Now(), 24*time.Hour)
					require.NoError(t, err)
					require.True(t, ok)
					ghosts[holder] = append(ghosts[holder], l)
				}
				for holder := range ghosts {
					require.NoError(t, store.Announce(ctx, holder, f.clk.Now().Add(24*time.Hour)))
				}
				p2 := w.process(t, "host-2", store, 0)
				f.step(t, 2*time.Minute+phase)
				require.Equal(t, w.names[4:8], p2.runner.Running(), "host-2 runs its share, the jobs nobody held")

				for _, l := range ghosts["host-3"] {
					require.NoError(t, store.ReleaseLease(ctx, l))
				}
				require.NoError(t, store.Withdraw(ctx, "host-3"))
				f.step(t, walbackup.DefaultLeaseTTL/2)
				assert.Len(t, p2.runner.Running(), 6, "host-2 took its new share, and no more yet")
				f.step(t, walbackup.DefaultLeaseTTL+walbackup.DefaultLeaseTTL/3)
				assert.Len(t, p2.runner.Running(), 8, "then what nobody took in a lease's time to live, beyond its share")
			})
		}
	}
}

// A process that does not list every job (a configuration mistake) counts
// as present: the other keeps to its share at first, then, once a job was
// left free for a lease's time to live, runs it beyond its share rather
// than leave it unprotected, and never hands such a job over.
func TestRunnerTakesJobsNobodyTakes(t *testing.T) {
	f := newFleet(testenv.LoggerAt(t, slog.LevelError))
	w := newWorld(f, 6)
	w.batch, w.roster = true, true
	store := smem.New()
	p1 := w.process(t, "host-1", store, 0)
	p2 := w.processOf(t, "host-2", store, 0, w.names[:1]) // lists one job only
	for _, name := range w.names {
		p1.set(t, f, name, true)
	}
	f.step(t, walbackup.DefaultLeaseTTL/3)
	running := len(p1.runner.Running()) + len(p2.runner.Running())
	assert.Less(t, running, len(w.names), "shares of 3 first: the jobs host-2 does not list wait")
	f.step(t, 2*walbackup.DefaultLeaseTTL)
	assert.Len(t, p1.runner.Running(), len(w.names)-len(p2.runner.Running()), "then every job runs")
	assert.LessOrEqual(t, len(p2.runner.Running()), 1)
	before := handOvers(f, "")
	f.step(t, 10*time.Minute)
	assert.Equal(t, before, handOvers(f, ""), "nothing runs beyond the share is handed back and forth")
	assert.Len(t, p1.runner.Running(), len(w.names)-len(p2.runner.Running()))
	w.addWAL(1)
	f.step(t, 15*time.Minute)
	w.requireAllShipped(t)
}

// A Runner whose roster calls fail keeps the share it last knew: it
// neither hands jobs over nor takes more than that while it cannot tell
// who is present, so one failed read does not make jobs move back and
// forth; every job keeps running, and once the roster answers again the
// shares even out.
func TestRunnerKeepsItsShareWhileTheRosterFails(t *testing.T) {
	f, w, store, p1 := rosterWorld(t, true)
	p2, p3 := w.process(t, "host-2", store, 0), w.process(t, "host-3", store, 0)
	f.step(t, walbackup.DefaultLeaseTTL)
	require.Len(t, p1.runner.Running(), 4)
	before := handOvers(f, "")
	p1.rosterDn.Store(true)
	p3.kill()
	f.step(t, 3*walbackup.DefaultLeaseTTL)
	assert.Equal(t, before, handOvers(f, ""), "no job moved for an unknown roster")
	assert.Len(t, p1.runner.Running(), 4, "host-1 kept its share, and took no more while it could not tell who is present")
	assert.Len(t, append(p1.runner.Running(), p2.runner.Running()...), len(w.names), "every job runs")
	p1.rosterDn.Store(false)
	f.step(t, 2*walbackup.DefaultLeaseTTL)
	assert.Len(t, append(p1.runner.Running(), p2.runner.Running()...), len(w.names))
	assert.LessOrEqual(t, len(p1.runner.Running()), 6+2, "about even again (jobs taken beyond a share stay)")
	w.addWAL(1)
	f.step(t, 15*time.Minute)
	w.requireAllShipped(t)
}

// rosterWorld is a world of 12 jobs on a memory store that is a Roster,
// polled in batches or not, with a process "host-1" that runs and enabled
// every job.
func rosterWorld(t *testing.T, batch bool) (*fleet, *world, *smem.Store, *process) {
	t.Helper()
	f := newFleet(testenv.LoggerAt(t, slog.LevelWarn))
	w := newWorld(f, 12)
	w.batch, w.roster = batch, true
	store := smem.New()
	p1 := w.process(t, "host-1", store, 0)
	for _, name := range w.names {
		p1.set(t, f, name, true)
	}
	return f, w, store, p1
}

// handOvers counts the hand-overs the fleet saw, of holder ("": of all).
func handOvers(f *fleet, holder string) int {
	n := 0
	for _, e := range f.seen {
		if e.runner != nil && (holder == "" || e.holder == holder) && e.runner.Kind == walbackup.RunnerJobHandingOver {
			n++
		}
	}
	return n
}

type onlyStore struct{ session.Store }

func TestNewRunnerRefuses(t *testing.T) {
	f := newFleet(discardLogger())
	store := smem.New()
	job := f.newJob(t, "h", "A", map[string]*guesttest.Guest{"vm1": newFakeGuest(1)}, nil, memory.New(), store)
	other := f.newJob(t, "h", "A", map[string]*guesttest.Guest{"vm1": newFakeGuest(1)}, nil, memory.New(), store)
	ok := walbackup.RunnerConfig{Jobs: []*walbackup.Job{job}, Holder: "host-1", Sessions: store}
	for name, tc := range map[string]struct {
		mutate func(*walbackup.RunnerConfig)
		want   string
	}{
		"no store":    {func(c *walbackup.RunnerConfig) { c.Sessions = nil }, "session store is required"},
		"no leases":   {func(c *walbackup.RunnerConfig) { c.Sessions = onlyStore{store} }, "no session.Leaser"},
		"no holder":   {func(c *walbackup.RunnerConfig) { c.Holder = "" }, "holder must be"},
		"short lease": {func(c *walbackup.RunnerConfig) { c.LeaseTTL = time.Second }, "below"},
		"no jobs":     {func(c *walbackup.RunnerConfig) { c.Jobs = nil }, "no jobs"},
		"twice":       {func(c *walbackup.RunnerConfig) { c.Jobs = append(c.Jobs, other) }, "listed twice"},
		"nil job":     {func(c *walbackup.RunnerConfig) { c.Jobs = append(c.Jobs, nil) }, "nil job"},
	} {
		cfg := ok
		tc.mutate(&cfg)
		_, err := walbackup.NewRunner(cfg)
		require.ErrorContains(t, err, tc.want, name)
	}
	_, err := walbackup.NewRunner(walbackup.RunnerConfig{Jobs: []*walbackup.Job{job}, Holder: "h", Sessions: onlyStore{store}})
	require.ErrorIs(t, err, walbackup.ErrNoLeaser)
	_, err = walbackup.NewRunner(ok)
	require.NoError(t, err)
}
