package walbackup

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/session"
)

// Defaults and limits of RunnerConfig.
const (
	// DefaultLeaseTTL is how long a job's lease lasts unrenewed: a job whose
	// process died runs elsewhere at most this long after the dead process
	// last renewed it.
	DefaultLeaseTTL = 30 * time.Second
	// MinLeaseTTL keeps polls (every LeaseTTL/3) at least a second apart.
	MinLeaseTTL = 3 * time.Second
)

// Errors of a Runner.
var (
	// ErrNoLeaser: the session store given to NewRunner does not implement
	// session.Leaser, so it cannot share jobs between processes.
	ErrNoLeaser = errors.New("session store cannot lease jobs (no session.Leaser)")
	// ErrUnknownJob: no job of the Runner has that name.
	ErrUnknownJob = errors.New("no such job in this runner")
	// ErrRunnerRunning: Run was called while it runs already.
	ErrRunnerRunning = errors.New("runner is already running")
)

// RunnerConfig configures a Runner. Zero values take the Default...
// constants, a real clock and slog.Default().
type RunnerConfig struct {
	// Jobs are the jobs this process may run. Every process sharing the
	// store lists the same jobs, by name, each with Job values of its own;
	// a Job belongs to one Runner, and Enable, Disable and Run are then the
	// Runner's to call (Job.Disable ends only the current run: the Runner
	// starts the job again while its shared flag says enabled).
	// StartParent, Restore, Verify and the others work as on any Job.
	Jobs []*Job
	// Holder names this process among those sharing the store; it must be
	// unique to the process and stable while it runs (host name and process
	// id, say). Required.
	Holder string
	// Sessions is the store the processes share; it must implement
	// session.Leaser. The jobs record their sessions in the same database.
	Sessions session.Store
	// LeaseTTL is how long a job's lease lasts unrenewed (at least
	// MinLeaseTTL). The Runner polls every LeaseTTL/3.
	LeaseTTL time.Duration
	Clock    clock.Clock // the jobs' clock
	Logger   *slog.Logger
	Observer func(RunnerEvent) // optional; called from the Runner's goroutines, must not block
}

// RunnerEventKind names what a RunnerEvent reports.
type RunnerEventKind string

const (
	// RunnerJobStarted: the Runner took a job's lease (Event.Lease) and
	// starts the job; its first child session follows.
	RunnerJobStarted RunnerEventKind = "job_started"
	// RunnerJobStopping: the job's lease was lost, or could not be renewed
	// before it ran out, or the Runner is stopping: the job is stopped at
	// once, as when Run's context ends (Event.Message says why).
	RunnerJobStopping RunnerEventKind = "job_stopping"
	// RunnerJobDisabling: the job's shared flag says disabled: the job is
	// disabled cleanly (a last ship, runtimes uninstalled), then its lease
	// released.
	RunnerJobDisabling RunnerEventKind = "job_disabling"
	// RunnerJobHandingOver: the Runner runs more than its share of the
	// enabled jobs (session.Roster): the job is stopped at once, its lease
	// kept and renewed until its run has ended (its child session ended
	// stopped), then released for a process below its share to take.
	RunnerJobHandingOver RunnerEventKind = "job_handing_over"
	// RunnerJobEnded: the job's run in this process has ended.
	RunnerJobEnded RunnerEventKind = "job_ended"
	// RunnerIdle: a poll is done; the Runner wakes by itself at Event.Next.
	RunnerIdle RunnerEventKind = "runner_idle"
	// RunnerStopped: Run returns; every job it ran has ended.
	RunnerStopped RunnerEventKind = "runner_stopped"
)

// RunnerEvent is what a Runner tells its observer, for metrics and tests.
type RunnerEvent struct {
	Kind    RunnerEventKind
	Job     string        // the parent job's name, for the job events
	Lease   session.Lease // RunnerJobStarted: the lease the job runs under
	Message string        // RunnerJobStopping, RunnerJobHandingOver: why
	Next    time.Time     // RunnerIdle: when the Runner polls next unless told to sooner
}

// Runner runs many jobs in one process and shares them with the other
// processes on the same session store, by lease, so each enabled job runs
// in exactly one process and moves when that process dies.
//
// Every LeaseTTL/3 on its clock the Runner polls each job: it reads the
// job's shared enabled flag; an enabled job whose lease it can take is
// started (Job.Run, on a context of its own); a lease it holds is renewed;
// a lease lost to another process stops that job at once, as does one it
// could not renew while more than a poll of it was left (the database
// unreachable); a job whose flag says disabled is disabled cleanly and its
// lease released. A job also checks, each time it wakes, that its lease as
// last renewed still runs on the clock, and stops itself when it does not
// (this process was paused past it), so it does not ship while another
// process may run it. A job whose process died starts
// elsewhere when its lease runs out, at most LeaseTTL after the dead
// process last renewed it: Runners that saw the lease wake when it ends.
// The job's start closes the sessions the dead process left running and
// ships the WAL that waited in the guests meanwhile, so nothing is lost.
//
// Leases are decided on each host's clock (see session.Leaser): the clocks
// of the hosts must agree to well within LeaseTTL/3.
//
// When the store is a session.Roster, each Runner announces itself at
// every poll and runs at most its share of the enabled jobs: their number
// divided by the processes present, rounded up. A Runner above its share
// (a process joined) hands the surplus over: it stops those runs, keeps
// their leases until they have ended, and releases them for the others
// to take at their next polls. A job left free for a lease's time to live
// while the processes present are at their shares (one that does not list
// it, say) runs beyond the share rather than nowhere, with a warning, and
// is never handed over for it; that wait starts again whenever the share
// changes, so the jobs of a process that left go to those below the new
// share first. Without a Roster jobs spread only loosely:
// each Runner takes what is free when it polls, starting at a place in
// the list of its own.
type Runner struct {
	cfg      RunnerConfig
	leaser   session.Leaser
	batcher  session.LeaseBatcher // nil: the store polls a job at a time
	roster   session.Roster       // nil: no shares, jobs spread loosely
	interval time.Duration
	jobs     []*runnerJob // in poll order
	byName   map[string]*runnerJob
	nudge    chan struct{}
	running  atomic.Bool
	wg       sync.WaitGroup // goroutines of a Run besides the jobs' own

	// Of the poll under way: the most jobs this Runner should hold (0:
	// no limit) and how many it holds; and the share last read fresh.
	share, holding, lastShare int

	mu     sync.Mutex
	active map[string]<-chan struct{} // runs under way and not being stopped, by job
}

// runnerJob is a job as its Runner sees it; only Run's goroutine touches it.
type runnerJob struct {
	job       *Job
	lease     session.Lease // valid while held
	until     atomic.Int64  // lease.Until in Unix microseconds, for the job's own check
	held      bool
	done      <-chan struct{} // the run under way; nil when none
	cancel    context.CancelFunc
	stopping  bool      // the run was canceled
	handing   bool      // the run was canceled to hand the job over; the lease is kept until it ends
	beyond    bool      // held past this Runner's share: it was free too long (see decide); never handed over for it
	capped    time.Time // since when the share kept this Runner from taking the job; zero when it did not
	disabling bool      // Disable was sent
	foreign   time.Time // when another holder's lease runs out, as last seen
}

// NewRunner checks cfg and returns a Runner that runs nothing until Run.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.New()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Observer == nil {
		cfg.Observer = func(RunnerEvent) {}
	}
	leaser, ok := cfg.Sessions.(session.Leaser)
	switch {
	case cfg.Sessions == nil:
		return nil, errors.New("new runner: session store is required")
	case !ok:
		return nil, fmt.Errorf("new runner: %w", ErrNoLeaser)
	case cfg.Holder == "" || len(cfg.Holder) > session.MaxNameLen:
		return nil, fmt.Errorf("new runner: holder must be 1 to %d bytes", session.MaxNameLen)
	case cfg.LeaseTTL < MinLeaseTTL:
		return nil, fmt.Errorf("new runner: lease time to live %v is below %v", cfg.LeaseTTL, MinLeaseTTL)
	case len(cfg.Jobs) == 0:
		return nil, errors.New("new runner: no jobs")
	}
	r := &Runner{cfg: cfg, leaser: leaser, interval: cfg.LeaseTTL / 3, byName: map[string]*runnerJob{},
		nudge: make(chan struct{}, 1), active: map[string]<-chan struct{}{}}
	r.batcher, _ = cfg.Sessions.(session.LeaseBatcher)
	r.roster, _ = cfg.Sessions.(session.Roster)
	for _, j := range cfg.Jobs {
		if j == nil {
			return nil, errors.New("new runner: nil job")
		}
		if _, dup := r.byName[j.Name()]; dup {
			return nil, fmt.Errorf("new runner: job %q listed twice", j.Name())
		}
		rj := &runnerJob{job: j}
		r.byName[j.Name()] = rj
		r.jobs = append(r.jobs, rj)
	}
	// Start at a place of this holder's own, so Runners polling at once
	// contend for different jobs first.
	h := fnv.New32a()
	h.Write([]byte(cfg.Holder))
	off := int(h.Sum32() % uint32(len(r.jobs)))
	r.jobs = append(r.jobs[off:], r.jobs[:off]...)
	return r, nil
}

// Enable records in the shared store that job should run; the first
// process to poll it afterwards takes its lease and starts it (this one at
// once, when Run runs). ErrUnknownJob when the Runner has no such job;
// errors of the store are returned wrapped. Idempotent; safe for
// concurrent use.
func (r *Runner) Enable(ctx context.Context, job string) error { return r.setEnabled(ctx, job, true) }

// Disable records in the shared store that job should not run: whichever
// process runs it disables it cleanly (a last ship, the runtimes
// uninstalled, the child session ended) at its next poll, within
// LeaseTTL/3, and releases its lease. Disable returns once the flag is
// written, not when the job has stopped: its child session's end says that.
// ErrUnknownJob when the Runner has no such job. Idempotent; safe for
// concurrent use.
func (r *Runner) Disable(ctx context.Context, job string) error { return r.setEnabled(ctx, job, false) }

func (r *Runner) setEnabled(ctx context.Context, job string, enabled bool) error {
	what := "disable"
	if enabled {
		what = "enable"
	}
	if _, ok := r.byName[job]; !ok {
		return fmt.Errorf("%s job %q: %w", what, job, ErrUnknownJob)
	}
	if err := r.leaser.SetJobEnabled(ctx, job, enabled); err != nil {
		return fmt.Errorf("%s job %q: %w", what, job, err)
	}
	select {
	case r.nudge <- struct{}{}:
	default:
	}
	return nil
}

// Running returns the names of the jobs this Runner runs now (started
// under its lease, not ended, not being stopped), sorted. Safe for
// concurrent use.
func (r *Runner) Running() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.active))
	for name := range r.active {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// setActive records a run under way (done not nil) or its end; a run that
// ended after another began leaves the newer one alone.
func (r *Runner) setActive(job string, done <-chan struct{}, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case on:
		r.active[job] = done
	case r.active[job] == done:
		delete(r.active, job)
	}
}

// Run polls the jobs until ctx ends, then stops every job it runs at once
// (as Job.Run does when its context ends), waits for them, releases their
// leases so other processes take them over at their next poll, and returns
// ctx's error. ErrRunnerRunning while another Run runs.
func (r *Runner) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunnerRunning
	}
	defer r.running.Store(false)
	for ctx.Err() == nil {
		next := r.poll(ctx)
		// The timer exists before the observer hears of it: a test clock
		// moved on the idle event must find it. Never negative: a mock
		// clock would go back to next.
		timer := r.cfg.Clock.Timer(max(next.Sub(r.cfg.Clock.Now()), 0))
		r.cfg.Observer(RunnerEvent{Kind: RunnerIdle, Next: next})
		select {
		case <-timer.C:
		case <-r.nudge:
			timer.Stop()
		case <-ctx.Done():
			timer.Stop()
		}
	}
	r.stopAll(ctx)
	r.cfg.Observer(RunnerEvent{Kind: RunnerStopped})
	return ctx.Err()
}

// poll brings every job in line with its flag and lease, and with this
// Runner's share of the jobs, and returns when to poll next: after the
// interval, or sooner when a lease held elsewhere runs out before.
func (r *Runner) poll(ctx context.Context) time.Time {
	start := r.cfg.Clock.Now()
	next := start.Add(r.interval)
	// Store calls share one interval: a hung store cannot hold up the
	// renewals of the next poll.
	pctx, cancel := clock.WithTimeout(r.cfg.Clock, ctx, r.interval)
	defer cancel()
	views := r.read(pctx)
	var fresh bool
	r.share, fresh = r.fairShare(pctx, start, views)
	if fresh {
		if r.share != r.lastShare {
			// Jobs move when shares do: a job the old share kept this
			// Runner from may have run elsewhere until now, so the wait
			// before running it beyond the share starts again.
			for _, rj := range r.jobs {
				rj.capped = time.Time{}
			}
		}
		r.lastShare = r.share
	}
	r.holding = 0
	for _, rj := range r.jobs {
		if rj.held {
			r.holding++
		}
	}
	var renew []*runnerJob
	for i, rj := range r.jobs {
		if rj.done != nil && isClosed(rj.done) {
			handed := rj.handing
			rj.reset()
			if handed && rj.held {
				r.release(pctx, rj)
			}
		}
		if rj.stopping {
			continue // canceled; its lease is not ours to renew
		}
		if r.decide(ctx, pctx, rj, views[i]) {
			renew = append(renew, rj)
		}
	}
	r.renewAll(pctx, renew)
	if fresh {
		r.shed()
	}
	for _, rj := range r.jobs {
		if rj.foreign.After(start) && rj.foreign.Before(next) {
			next = rj.foreign
		}
	}
	return next
}

// jobView is what a poll read of a job in the store.
type jobView struct {
	known, enabled bool
	// seen, from a batch read, is the job's lease as the store holds it:
	// a running lease of another holder is then not asked for.
	seen *session.Lease
}

// read reads every job's flag, and with a LeaseBatcher its lease too, in
// r.jobs order; a job whose read failed is not known.
func (r *Runner) read(pctx context.Context) []jobView {
	views := make([]jobView, len(r.jobs))
	if r.batcher == nil {
		for i, rj := range r.jobs {
			enabled, err := r.leaser.JobEnabled(pctx, rj.job.Name())
			if err != nil {
				r.cfg.Logger.Warn("read whether a job is enabled", "job", rj.job.Name(), "holder", r.cfg.Holder, "err", err)
				continue
			}
			views[i] = jobView{known: true, enabled: enabled}
		}
		return views
	}
	for lo := 0; lo < len(r.jobs); lo += session.MaxBatch {
		jobs := r.jobs[lo:min(lo+session.MaxBatch, len(r.jobs))]
		names := make([]string, len(jobs))
		for i, rj := range jobs {
			names[i] = rj.job.Name()
		}
		states, err := r.batcher.JobStates(pctx, names)
		if err == nil && len(states) != len(jobs) {
			err = fmt.Errorf("the store answered for %d of %d jobs", len(states), len(jobs))
		}
		if err != nil {
			r.cfg.Logger.Warn("read whether jobs are enabled and who holds them", "jobs", len(jobs), "holder", r.cfg.Holder, "err", err)
			continue
		}
		for i := range states {
			views[lo+i] = jobView{known: true, enabled: states[i].Enabled, seen: &states[i].Lease}
		}
	}
	return views
}

// fairShare announces this Runner and returns the most jobs it should
// run, 0 meaning no limit (no Roster, or alone): the enabled jobs over the
// processes present, rounded up; fresh says it was read in this poll.
// When this poll's reads failed it announces nothing (the others should
// not count on a process that cannot read the store) and keeps the share
// it last knew, unfresh: a store outage makes a Runner neither give jobs
// up nor take more.
func (r *Runner) fairShare(pctx context.Context, now time.Time, views []jobView) (share int, fresh bool) {
	if r.roster == nil {
		return 0, true
	}
	enabled := 0
	for _, v := range views {
		if !v.known {
			return r.lastShare, false
		}
		if v.enabled {
			enabled++
		}
	}
	if err := r.roster.Announce(pctx, r.cfg.Holder, now.Add(r.cfg.LeaseTTL)); err != nil {
		r.cfg.Logger.Warn("announce this runner", "holder", r.cfg.Holder, "err", err)
		return r.lastShare, false
	}
	present, err := r.roster.Present(pctx, now)
	if err != nil {
		r.cfg.Logger.Warn("read which runners are present", "holder", r.cfg.Holder, "err", err)
		return r.lastShare, false
	}
	n := len(present)
	if !slices.Contains(present, r.cfg.Holder) {
		n++
	}
	if n < 2 || enabled == 0 {
		return 0, true
	}
	return (enabled + n - 1) / n, true
}

// reset forgets a run that has ended.
func (rj *runnerJob) reset() {
	rj.cancel()
	rj.done, rj.cancel, rj.stopping, rj.handing, rj.disabling = nil, nil, false, false, false
}

// decide brings one job in line with its flag (when known) and this
// Runner's share, and tells whether the lease it holds is to be renewed.
func (r *Runner) decide(ctx, pctx context.Context, rj *runnerJob, v jobView) (renew bool) {
	if !v.known || !v.enabled || rj.held {
		rj.capped = time.Time{} // the share keeps it from nothing now
	}
	switch {
	case rj.done != nil:
		if v.known && !v.enabled && !rj.disabling && !rj.handing {
			r.disable(ctx, rj)
		}
		return true // also while it disables or hands over: it still runs
	case rj.held && v.known && !v.enabled:
		r.release(pctx, rj)
	case v.known && v.enabled:
		if l := v.seen; l != nil && l.Holder != "" && l.Holder != r.cfg.Holder && r.cfg.Clock.Now().Before(l.Until) {
			rj.held, rj.beyond, rj.foreign, rj.capped = false, false, l.Until, time.Time{} // runs elsewhere: nothing to ask
			return false
		}
		beyond := false
		if r.share > 0 && r.holding >= r.share && !rj.held {
			// Its share taken: left for a process below it, unless none
			// took it for a lease's time to live (one that lists other
			// jobs, or cannot start them): then it runs here, beyond the
			// share, rather than nowhere.
			now := r.cfg.Clock.Now()
			if rj.capped.IsZero() {
				rj.capped = now
			}
			if now.Sub(rj.capped) < r.cfg.LeaseTTL {
				return false
			}
			beyond = true
		}
		if r.acquire(ctx, pctx, rj) {
			rj.capped, rj.beyond = time.Time{}, rj.beyond || beyond
			if beyond {
				r.cfg.Logger.Warn("a job nobody took for a lease's time to live runs here beyond this process's share; do all processes list the same jobs?",
					"job", rj.job.Name(), "holder", r.cfg.Holder, "share", r.share)
			}
		}
	case rj.held:
		return true // the flag is unknown: keep what we hold, start nothing
	}
	return false
}

// renewAll renews the leases of jobs, in batches when the store takes them.
func (r *Runner) renewAll(pctx context.Context, jobs []*runnerJob) {
	if r.batcher == nil {
		for _, rj := range jobs {
			r.renew(pctx, rj)
		}
		return
	}
	for lo := 0; lo < len(jobs); lo += session.MaxBatch {
		batch := jobs[lo:min(lo+session.MaxBatch, len(jobs))]
		ls := make([]session.Lease, len(batch))
		for i, rj := range batch {
			ls[i] = rj.lease
		}
		renewed, lost, err := r.batcher.RenewLeases(pctx, ls, r.cfg.Clock.Now(), r.cfg.LeaseTTL)
		if err == nil && (len(renewed) != len(ls) || len(lost) != len(ls)) {
			err = fmt.Errorf("the store answered for %d of %d leases", len(renewed), len(ls))
		}
		for i, rj := range batch {
			switch {
			case err != nil:
				r.renewed(rj, session.Lease{}, err)
			case lost[i]:
				r.renewed(rj, session.Lease{}, session.ErrLeaseLost)
			default:
				r.renewed(rj, renewed[i], nil)
			}
		}
	}
}

// shed hands over the runs beyond this Runner's share, the last ones in
// its poll order (another process's order starts elsewhere), but none
// whose parent session runs (an image under way): those wait for a later
// poll.
func (r *Runner) shed() {
	if r.share == 0 {
		return
	}
	var running []*runnerJob
	for _, rj := range r.jobs {
		if rj.done != nil && !rj.stopping && !rj.handing && !rj.disabling && !rj.beyond {
			running = append(running, rj)
		}
	}
	excess := len(running) - r.share
	for i := len(running) - 1; i >= 0 && excess > 0; i-- {
		if rj := running[i]; !rj.job.parentRunning.Load() {
			r.handOver(rj, fmt.Sprintf("this process runs %d jobs, above its share of %d", len(running), r.share))
			excess--
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// acquire takes the job's lease if it can and starts the job; it tells
// whether the job runs here now.
func (r *Runner) acquire(ctx, pctx context.Context, rj *runnerJob) bool {
	name := rj.job.Name()
	l, ok, err := r.leaser.AcquireLease(pctx, name, r.cfg.Holder, r.cfg.Clock.Now(), r.cfg.LeaseTTL)
	if err != nil {
		r.cfg.Logger.Warn("acquire a job's lease", "job", name, "holder", r.cfg.Holder, "err", err)
		return false
	}
	if !ok {
		rj.held, rj.beyond, rj.foreign, rj.capped = false, false, l.Until, time.Time{}
		return false
	}
	if !rj.held {
		r.holding++
	}
	rj.setLease(l)
	rj.held, rj.foreign = true, time.Time{}
	r.cfg.Observer(RunnerEvent{Kind: RunnerJobStarted, Job: name, Lease: l})
	jctx, cancel := context.WithCancel(ctx)
	done, _, err := rj.job.launch(jctx, runOptions{
		note:  fmt.Sprintf("run by %s (lease token %d)", r.cfg.Holder, l.Token),
		holds: func(now time.Time) bool { return now.Before(time.UnixMicro(rj.until.Load())) },
		lease: &l,
		confirm: func(ctx context.Context) error {
			_, err := r.leaser.RenewLease(ctx, l, r.cfg.Clock.Now(), r.cfg.LeaseTTL)
			return err
		},
	})
	if err != nil {
		cancel()
		r.cfg.Logger.Error("start a job the runner holds: it runs outside the runner; lease released", "job", name,
			"holder", r.cfg.Holder, "err", err)
		r.cfg.Observer(RunnerEvent{Kind: RunnerJobEnded, Job: name})
		r.release(pctx, rj)
		return false
	}
	r.cfg.Logger.Info("job started under lease", "job", name, "holder", r.cfg.Holder, "token", l.Token)
	rj.done, rj.cancel = done, cancel
	r.setActive(name, done, true)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		<-done
		r.setActive(name, done, false)
		r.cfg.Observer(RunnerEvent{Kind: RunnerJobEnded, Job: name})
	}()
	return true
}

// renew extends the lease of a job the Runner holds. A lost lease stops
// the job; so does a failed renewal once less than a poll of the lease is
// left, before anyone else may take it.
func (r *Runner) renew(pctx context.Context, rj *runnerJob) {
	l, err := r.leaser.RenewLease(pctx, rj.lease, r.cfg.Clock.Now(), r.cfg.LeaseTTL)
	r.renewed(rj, l, err)
}

// renewed acts on the outcome of renewing rj's lease: l, or err.
func (r *Runner) renewed(rj *runnerJob, l session.Lease, err error) {
	switch {
	case err == nil:
		rj.setLease(l)
	case errors.Is(err, session.ErrLeaseLost):
		rj.held, rj.beyond = false, false
		r.stop(rj, "lease lost: another process took the job over")
	default:
		r.cfg.Logger.Warn("renew a job's lease", "job", rj.lease.Job, "holder", r.cfg.Holder, "until", rj.lease.Until, "err", err)
		if !r.cfg.Clock.Now().Before(rj.lease.Until.Add(-r.interval)) {
			rj.held, rj.beyond = false, false
			r.stop(rj, fmt.Sprintf("lease not renewed before it runs out at %v: %v", rj.lease.Until, err))
		}
	}
}

// setLease records the lease the job runs under.
func (rj *runnerJob) setLease(l session.Lease) {
	rj.lease = l
	rj.until.Store(l.Until.UnixMicro())
}

// handOver stops the job's run to give the job to another process; its
// lease is renewed until the run has ended and released by the next poll.
func (r *Runner) handOver(rj *runnerJob, why string) {
	rj.handing = true
	r.setActive(rj.job.Name(), rj.done, false)
	r.cfg.Logger.Info("handing a job over", "job", rj.job.Name(), "holder", r.cfg.Holder, "why", why)
	r.cfg.Observer(RunnerEvent{Kind: RunnerJobHandingOver, Job: rj.job.Name(), Message: why})
	rj.cancel()
}

// stop cancels the job's run, if any.
func (r *Runner) stop(rj *runnerJob, why string) {
	if rj.done == nil || rj.stopping {
		return
	}
	rj.stopping = true
	r.setActive(rj.job.Name(), rj.done, false)
	r.cfg.Logger.Warn("stopping a job at once", "job", rj.job.Name(), "holder", r.cfg.Holder, "why", why)
	r.cfg.Observer(RunnerEvent{Kind: RunnerJobStopping, Job: rj.job.Name(), Message: why})
	rj.cancel()
}

// disable disables the job cleanly in the background; the lease stays held
// (and renewed) until the job has ended, and is released by the next poll.
func (r *Runner) disable(ctx context.Context, rj *runnerJob) {
	rj.disabling = true
	r.cfg.Observer(RunnerEvent{Kind: RunnerJobDisabling, Job: rj.job.Name()})
	r.wg.Add(1)
	go func(j *Job) {
		defer r.wg.Done()
		if err := j.Disable(ctx); err != nil && !errors.Is(err, ErrNotEnabled) && ctx.Err() == nil {
			r.cfg.Logger.Error("disable a job", "job", j.Name(), "holder", r.cfg.Holder, "err", err)
		}
	}(rj.job)
}

func (r *Runner) release(ctx context.Context, rj *runnerJob) {
	rj.held, rj.beyond = false, false
	r.holding--
	if err := r.leaser.ReleaseLease(ctx, rj.lease); err != nil {
		r.cfg.Logger.Warn("release a job's lease (it runs out by itself)", "job", rj.lease.Job, "holder", r.cfg.Holder, "err", err)
	}
}

// stopAll ends every run at once, waits for them, and releases the leases.
func (r *Runner) stopAll(ctx context.Context) {
	for _, rj := range r.jobs {
		r.stop(rj, "the runner is stopping")
	}
	for _, rj := range r.jobs {
		if rj.done != nil {
			<-rj.done
			rj.reset()
		}
	}
	r.wg.Wait()
	rctx, cancel := clock.WithTimeout(r.cfg.Clock, context.WithoutCancel(ctx), r.interval)
	defer cancel()
	// Gone from the roster first, so the others' shares grow before the
	// jobs are free.
	if r.roster != nil {
		if err := r.roster.Withdraw(rctx, r.cfg.Holder); err != nil {
			r.cfg.Logger.Warn("withdraw this runner (its announcement runs out by itself)", "holder", r.cfg.Holder, "err", err)
		}
	}
	for _, rj := range r.jobs {
		if rj.held {
			r.release(rctx, rj)
		}
		rj.foreign = time.Time{}
	}
}
