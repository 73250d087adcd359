package walbackup_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/walbackup"
)

// fleet drives Runners (processes) and their jobs in virtual time: one
// mock clock, and the events of every Runner and job on one channel, so a
// test knows when everything waits for the clock and can step it to the
// next wake-up, as harness.step does for one job.
type fleet struct {
	clk    *clock.Mock
	logger *slog.Logger
	events chan fleetEvent
	actors map[string]*actor // "runner <holder>", "job <holder> <name>"
	nbusy  int               // actors busy: settle waits for none, in O(1) per event
	seen   []fleetEvent      // every event handled, in order
	// settled, when set, runs each time everything waits again.
	settled func()
}

type fleetEvent struct {
	holder string
	name   string                 // the job, for a job's event
	job    *walbackup.Event       // from a job
	runner *walbackup.RunnerEvent // from a Runner
}

// actor is a Runner or a job: busy while it works, else waiting for the
// clock until next (zero: for a command only).
type actor struct {
	busy bool
	next time.Time
}

func newFleet(logger *slog.Logger) *fleet { return newFleetOf(logger, 1<<16) }

// newFleetOf is newFleet with room for events events between two reads:
// the mock clock delivers timers on the stepping goroutine, which reads
// the events, so a job blocked on a full channel would stop the clock.
func newFleetOf(logger *slog.Logger, events int) *fleet {
	f := &fleet{clk: clock.NewMock(), logger: logger, events: make(chan fleetEvent, events), actors: map[string]*actor{}}
	f.clk.Set(time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC))
	return f
}

func runnerKey(holder string) string    { return "runner " + holder }
func jobKey(holder, name string) string { return "job " + holder + " " + name }

// jobObserver and runnerObserver feed the fleet.
func (f *fleet) jobObserver(holder, name string) func(walbackup.Event) {
	return func(e walbackup.Event) { f.events <- fleetEvent{holder: holder, name: name, job: &e} }
}

func (f *fleet) runnerObserver(holder string) func(walbackup.RunnerEvent) {
	return func(e walbackup.RunnerEvent) { f.events <- fleetEvent{holder: holder, runner: &e} }
}

func (f *fleet) handle(e fleetEvent) {
	f.seen = append(f.seen, e)
	if e.job != nil {
		if e.job.Kind == walbackup.EventIdle {
			f.put(jobKey(e.holder, e.name), &actor{next: e.job.Next})
		}
		return
	}
	switch r := e.runner; r.Kind {
	case walbackup.RunnerIdle:
		f.put(runnerKey(e.holder), &actor{next: r.Next})
	case walbackup.RunnerStopped:
		f.drop(runnerKey(e.holder))
	case walbackup.RunnerJobStarted, walbackup.RunnerJobStopping, walbackup.RunnerJobDisabling, walbackup.RunnerJobHandingOver:
		f.put(jobKey(e.holder, r.Job), &actor{busy: true})
	case walbackup.RunnerJobEnded:
		f.drop(jobKey(e.holder, r.Job))
	}
}

// put and drop change the actors, keeping count of the busy ones.
func (f *fleet) put(key string, a *actor) {
	f.drop(key)
	f.actors[key] = a
	if a.busy {
		f.nbusy++
	}
}

func (f *fleet) drop(key string) {
	if old, ok := f.actors[key]; ok && old.busy {
		f.nbusy--
	}
	delete(f.actors, key)
}

// busy marks an actor as working, before the test makes it work.
func (f *fleet) busy(key string) { f.put(key, &actor{busy: true}) }

// settle handles events until every actor waits.
func (f *fleet) settle(t testing.TB) {
	t.Helper()
	for {
		if f.nbusy == 0 {
			if f.settled != nil {
				f.settled()
			}
			return
		}
		select {
		case e := <-f.events:
			f.handle(e)
		case <-time.After(60 * time.Second):
			for k, a := range f.actors {
				if a.busy {
					t.Fatalf("%s never became idle", k)
				}
			}
			t.Fatalf("fleet: %d actors counted busy, none is", f.nbusy)
		}
	}
}

// step advances virtual time by d, stopping at each time an actor said it
// would wake and letting everything settle there.
func (f *fleet) step(t testing.TB, d time.Duration) {
	t.Helper()
	target := f.clk.Now().Add(d)
	for {
		f.settle(t)
		var wake time.Time
		for _, a := range f.actors {
			if !a.next.IsZero() && (wake.IsZero() || a.next.Before(wake)) {
				wake = a.next
			}
		}
		if wake.IsZero() || wake.After(target) {
			break
		}
		for _, a := range f.actors {
			if !a.next.IsZero() && !a.next.After(wake) {
				a.busy, a.next = true, time.Time{}
				f.nbusy++
			}
		}
		f.clk.Set(wake)
	}
	f.clk.Set(target)
	f.settle(t)
}

// startRunner runs r until the returned stop is called, which cancels its
// context and waits for Run to return.
func (f *fleet) startRunner(t testing.TB, holder string, r *walbackup.Runner) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	f.busy(runnerKey(holder))
	go func() { ran <- r.Run(ctx) }()
	f.settle(t)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-ran:
				require.ErrorIs(t, err, context.Canceled)
			case <-time.After(60 * time.Second):
				t.Fatalf("runner %s did not stop", holder)
			}
			// Its jobs' last events and its own came before Run returned.
			for drained := false; !drained; {
				select {
				case e := <-f.events:
					f.handle(e)
				default:
					drained = true
				}
			}
			for k := range f.actors {
				if strings.HasPrefix(k, jobKey(holder, "")) || k == runnerKey(holder) {
					f.drop(k)
				}
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// set enables or disables a job through runner r (held by holder), which
// polls at once, and lets everything settle.
func (f *fleet) set(t testing.TB, holder string, r *walbackup.Runner, job string, enabled bool) {
	t.Helper()
	f.busy(runnerKey(holder))
	var err error
	if enabled {
		err = r.Enable(context.Background(), job)
	} else {
		err = r.Disable(context.Background(), job)
	}
	require.NoError(t, err)
	f.settle(t)
}

// fleetJob builds job name over one fake guest per machine, reporting to f
// as run by holder.
func (f *fleet) newJob(t testing.TB, holder, name string, guests map[string]*guesttest.Guest, deployer guest.Deployer,
	repo repository.Repository, store session.Store) *walbackup.Job {
	t.Helper()
	var ids []string
	for id := range guests {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var machines []walbackup.Machine
	var hvm []hypervisor.Machine
	for _, id := range ids {
		machines = append(machines, walbackup.Machine{ID: id})
		hvm = append(hvm, hypervisor.Machine{ID: id})
	}
	if deployer == nil {
		deployer = guesttest.NewDeployer(guests)
	}
	job, err := walbackup.NewJob(walbackup.Config{
		Name: name, Machines: machines, LogBackupInterval: 15 * time.Minute,
		Hypervisor: hypervisortest.New(f.clk, hvm...), Guests: deployer, Repository: repo, Sessions: store,
		Clock: f.clk, Logger: f.logger, Observer: f.jobObserver(holder, name),
	})
	require.NoError(t, err)
	return job
}

func newFakeGuest(systemID uint64) *guesttest.Guest {
	return guesttest.NewGuest(guest.Instance{Version: 150000, WALLevel: "replica", ArchiveMode: "on", SystemID: systemID,
		Timeline: 1, WALSegmentSize: 16 << 20})
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// childSessions returns a job's child sessions, oldest first.
func childSessions(t testing.TB, store session.Store, job string) []session.Session {
	t.Helper()
	var all []session.Session
	q := session.Query{Job: walbackup.ChildJobName(job), Kind: session.KindChild, Limit: session.MaxPageSize}
	for {
		p, err := store.List(context.Background(), q)
		require.NoError(t, err)
		all = append(all, p.Sessions...)
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
	}
	sort.Slice(all, func(a, b int) bool {
		if !all[a].Start.Equal(all[b].Start) {
			return all[a].Start.Before(all[b].Start)
		}
		// One instant: a session closed at it came first.
		return !all[a].End.IsZero() && all[b].End.IsZero()
	})
	return all
}

// runBy returns the holder and lease token a session's log names.
func runBy(t testing.TB, store session.Store, id string) (holder string, token int64) {
	t.Helper()
	log, err := store.Log(context.Background(), id, 0, 10)
	require.NoError(t, err)
	for _, e := range log {
		if strings.HasPrefix(e.Message, "run by ") {
			var h string
			var tok int64
			if _, err := fmt.Sscanf(e.Message, "run by %s (lease token %d)", &h, &tok); err == nil {
				return h, tok
			}
		}
	}
	return "", 0
}

// requireNoOverlap checks that a job's child sessions never ran at once:
// each ended no later than the next one started, and only the newest may
// still run.
func requireNoOverlap(t testing.TB, sessions []session.Session, job string) {
	t.Helper()
	for i, s := range sessions {
		if i == len(sessions)-1 {
			break
		}
		next := sessions[i+1]
		require.False(t, s.End.IsZero(), "%s: session %s still runs while %s started at %v", job, s.ID, next.ID, next.Start)
		require.False(t, s.End.After(next.Start), "%s: session %s ran until %v, past the start of %s at %v",
			job, s.ID, s.End, next.ID, next.Start)
	}
}

// deadSessions is a Runner's session store whose process can be killed:
// deadStore for the session records, and the lease calls too. While
// leasesDown (optional) is set, only the lease calls fail.
type deadSessions struct {
	deadStore
	leaser     session.Leaser
	leasesDown *atomic.Bool
}

func newDeadSessions(st session.Store, d deadFlag) deadSessions {
	return deadSessions{deadStore: deadStore{st, d}, leaser: st.(session.Leaser)}
}

// Fenced passes the store's fencing on, behind the kill switch.
func (s deadSessions) Fenced(l session.Lease) session.Store {
	return deadStore{s.deadStore.Store.(session.Fencer).Fenced(l), s.deadFlag}
}

// leases is the kill switch of the lease calls.
func (s deadSessions) leases() deadFlag {
	if s.leasesDown != nil && s.leasesDown.Load() {
		return deadFlag{dead: s.leasesDown}
	}
	return s.deadFlag
}

func (s deadSessions) AcquireLease(ctx context.Context, job, holder string, now time.Time, ttl time.Duration) (session.Lease, bool, error) {
	if err := s.leases().check(); err != nil {
		return session.Lease{}, false, err
	}
	return s.leaser.AcquireLease(ctx, job, holder, now, ttl)
}

func (s deadSessions) RenewLease(ctx context.Context, l session.Lease, now time.Time, ttl time.Duration) (session.Lease, error) {
	return guard(s.leases(), func() (session.Lease, error) { return s.leaser.RenewLease(ctx, l, now, ttl) })
}

func (s deadSessions) ReleaseLease(ctx context.Context, l session.Lease) error {
	return guard0(s.leases(), func() error { return s.leaser.ReleaseLease(ctx, l) })
}

func (s deadSessions) SetJobEnabled(ctx context.Context, job string, enabled bool) error {
	return guard0(s.leases(), func() error { return s.leaser.SetJobEnabled(ctx, job, enabled) })
}

func (s deadSessions) JobEnabled(ctx context.Context, job string) (bool, error) {
	return guard(s.leases(), func() (bool, error) { return s.leaser.JobEnabled(ctx, job) })
}

// deadBatchSessions is deadSessions with the store's LeaseBatcher, behind
// the same kill switch: a Runner over it polls in batches.
type deadBatchSessions struct{ deadSessions }

func (s deadBatchSessions) JobStates(ctx context.Context, jobs []string) ([]session.JobState, error) {
	return guard(s.leases(), func() ([]session.JobState, error) {
		return s.leaser.(session.LeaseBatcher).JobStates(ctx, jobs)
	})
}

func (s deadBatchSessions) RenewLeases(ctx context.Context, ls []session.Lease, now time.Time, ttl time.Duration) ([]session.Lease, []bool, error) {
	if err := s.leases().check(); err != nil {
		return nil, nil, err
	}
	return s.leaser.(session.LeaseBatcher).RenewLeases(ctx, ls, now, ttl)
}

// rosterPart is the store's session.Roster behind a process's kill switch
// of its lease calls, and one of its own (down, optional).
type rosterPart struct {
	ds   deadSessions
	down *atomic.Bool
}

func (p rosterPart) roster() session.Roster { return p.ds.leaser.(session.Roster) }

func (p rosterPart) flag() deadFlag {
	if p.down != nil && p.down.Load() {
		return deadFlag{dead: p.down}
	}
	return p.ds.leases()
}

func (p rosterPart) Announce(ctx context.Context, holder string, until time.Time) error {
	return guard0(p.flag(), func() error { return p.roster().Announce(ctx, holder, until) })
}

func (p rosterPart) Present(ctx context.Context, now time.Time) ([]string, error) {
	return guard(p.flag(), func() ([]string, error) { return p.roster().Present(ctx, now) })
}

func (p rosterPart) Withdraw(ctx context.Context, holder string) error {
	return guard0(p.ds.leases(), func() error { return p.roster().Withdraw(ctx, holder) })
}

// deadRosterSessions and deadBatchRosterSessions add the Roster: Runners
// over them keep to their shares.
type (
	deadRosterSessions struct {
		deadSessions
		rosterPart
	}
	deadBatchRosterSessions struct {
		deadBatchSessions
		rosterPart
	}
)

// deadRepo is a process's view of the shared repository: after the kill
// every call fails.
type deadRepo struct {
	repository.Repository
	deadFlag
}

func (r deadRepo) Put(ctx context.Context, name string, rd io.Reader) error {
	return guard0(r.deadFlag, func() error { return r.Repository.Put(ctx, name, rd) })
}

func (r deadRepo) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	return guard(r.deadFlag, func() (io.ReadCloser, error) { return r.Repository.Get(ctx, name, offset, length) })
}

func (r deadRepo) Stat(ctx context.Context, name string) (repository.Object, error) {
	return guard(r.deadFlag, func() (repository.Object, error) { return r.Repository.Stat(ctx, name) })
}

func (r deadRepo) List(ctx context.Context, prefix string, fn func(repository.Object) error) error {
	return guard0(r.deadFlag, func() error { return r.Repository.List(ctx, prefix, fn) })
}

func (r deadRepo) Delete(ctx context.Context, name string) error {
	return guard0(r.deadFlag, func() error { return r.Repository.Delete(ctx, name) })
}

// deadDeployer is a process's way into the shared guests (which survive
// it): after the kill its deploys and its runtimes' calls fail.
type deadDeployer struct {
	guest.Deployer
	deadFlag
}

func (d deadDeployer) Deploy(ctx context.Context, t guest.Target) (guest.Runtime, error) {
	rt, err := guard(d.deadFlag, func() (guest.Runtime, error) { return d.Deployer.Deploy(ctx, t) })
	if err != nil {
		return nil, err
	}
	return deadRuntime{rt, d.deadFlag}, nil
}

type deadRuntime struct {
	guest.Runtime
	deadFlag
}

func (r deadRuntime) Scan(ctx context.Context) (guest.Instance, error) {
	return guard(r.deadFlag, func() (guest.Instance, error) { return r.Runtime.Scan(ctx) })
}

func (r deadRuntime) PrepareArchive(ctx context.Context, cfg guest.ArchiveConfig) error {
	return guard0(r.deadFlag, func() error { return r.Runtime.PrepareArchive(ctx, cfg) })
}

func (r deadRuntime) Ready(ctx context.Context) ([]guest.File, error) {
	return guard(r.deadFlag, func() ([]guest.File, error) { return r.Runtime.Ready(ctx) })
}

func (r deadRuntime) Read(ctx context.Context, names []string, fn func(guest.Frame) error) error {
	return guard0(r.deadFlag, func() error { return r.Runtime.Read(ctx, names, fn) })
}

func (r deadRuntime) Remove(ctx context.Context, names []string) error {
	return guard0(r.deadFlag, func() error { return r.Runtime.Remove(ctx, names) })
}

func (r deadRuntime) Close(ctx context.Context) error {
	return guard0(r.deadFlag, func() error { return r.Runtime.Close(ctx) })
}
