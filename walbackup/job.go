package walbackup

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/session"
)

// Job is a backup job with PostgreSQL machines: the parent job's image
// sessions and the child job's WAL shipping sessions. One goroutine, started
// by Enable or Run and ended by Disable or Run's context, owns all its
// sessions; the other methods talk to it.
type Job struct {
	cfg   Config
	child string

	mu   sync.Mutex // guards cmds and done across starts and commands
	cmds chan command
	done chan struct{} // closed when the loop has ended
	// run is how the current run was started (by a Runner: under a
	// lease); written before the loop starts, read by it.
	run runOptions

	parentRunning atomic.Bool
	// fencedOff is set when a write of the run (session or repository)
	// was refused because another process holds the job's lease now.
	fencedOff atomic.Bool
	// fence is the repository fence of the run under a lease, if any.
	fence atomic.Pointer[repoFence]

	pins session.Pinner // the store's, or localPins
	// publications are the holds of this process's publications, by
	// cache directory (Publish, Unpublish).
	publications sync.Map
}

type cmdKind int

const (
	cmdParent cmdKind = iota
	cmdDisable
)

type command struct {
	kind  cmdKind
	reply chan error
}

// NewJob checks cfg and returns a disabled Job.
func NewJob(cfg Config) (*Job, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("new job: %w", err)
	}
	cfg.Machines = append([]Machine(nil), cfg.Machines...)
	j := &Job{cfg: cfg, child: ChildJobName(cfg.Name), pins: &localPins{}}
	if p, ok := cfg.Sessions.(session.Pinner); ok {
		j.pins = p
	}
	return j, nil
}

// Name is the parent job's name; ChildName the child job's.
func (j *Job) Name() string      { return j.cfg.Name }
func (j *Job) ChildName() string { return j.child }

// Errors of a Job's commands.
var (
	// ErrNotEnabled: the job is not running.
	ErrNotEnabled = errors.New("job is not enabled")
	// ErrEnabled: the job is running already.
	ErrEnabled = errors.New("job is already enabled")
)

// Enable starts the job: the first child session starts now, and Enable
// returns once that session is running. The job runs until Disable; ctx
// bounds only the wait (if it ends first, the job still starts).
func (j *Job) Enable(ctx context.Context) error {
	_, err := j.start(ctx, context.WithoutCancel(ctx))
	return err
}

// Run enables the job and runs it until ctx ends or Disable is called, for
// host programs that tie the job to their own lifetime. When ctx ends the
// job stops at once: the call under way is abandoned (safe at any point:
// nothing leaves a guest before the repository holds it verified), the
// runtimes are stopped and uninstalled, and the child session ends as
// Stopped. Run returns when all that is done: nil after Disable, else
// ctx's error.
func (j *Job) Run(ctx context.Context) error {
	done, err := j.start(ctx, ctx)
	if done != nil {
		<-done
	}
	if err != nil {
		return err
	}
	return ctx.Err()
}

// runOptions tell a run started by a Runner from one started by Enable or
// Run.
type runOptions struct {
	// note is logged first in every session of the run: who runs it.
	note string
	// holds reports whether the run may go on at now: its lease, as last
	// renewed, still runs. The loop asks at every wake and stops the
	// session when it says no (the process was paused past its lease, and
	// may run elsewhere by now). Nil: always.
	holds func(now time.Time) bool
	// lease is the lease the run holds, if any: the session writes of the
	// run are fenced with it when the store is a session.Fencer, and its
	// repository commits with the job's fence.
	lease *session.Lease
	// confirm asks the session store whether lease is still the run's
	// (session.ErrLeaseLost when not), before the run claims the fence.
	confirm func(context.Context) error
	// sessions is where the run's sessions are written (launch sets it).
	sessions session.Store
}

// fenceWatch is a store whose writes tell the job when they were fenced
// off: another process took the job over, and this run must stop.
type fenceWatch struct {
	session.Store
	lost *atomic.Bool
}

func (f fenceWatch) seen(err error) error {
	if errors.Is(err, session.ErrFenced) {
		f.lost.Store(true)
	}
	return err
}

func (f fenceWatch) Create(ctx context.Context, s session.Session) (session.Session, error) {
	out, err := f.Store.Create(ctx, s)
	return out, f.seen(err)
}

func (f fenceWatch) Update(ctx context.Context, s session.Session) error {
	return f.seen(f.Store.Update(ctx, s))
}

func (f fenceWatch) Append(ctx context.Context, id string, e session.Entry) (session.Entry, error) {
	out, err := f.Store.Append(ctx, id, e)
	return out, f.seen(err)
}

// sessions is the store the current run writes its sessions to; only the
// loop calls it.
func (j *Job) sessions() session.Store { return j.run.sessions }

// start launches the loop on loopCtx and waits, within ctx, for the first
// child session. done is nil when nothing was started.
func (j *Job) start(ctx, loopCtx context.Context) (<-chan struct{}, error) {
	done, started, err := j.launch(loopCtx, runOptions{})
	if err != nil {
		return nil, err
	}
	select {
	case <-started:
		return done, nil
	case <-ctx.Done():
		return done, ctx.Err()
	}
}

// launch starts the loop on loopCtx without waiting for it: started is
// closed once the first child session runs, done when the loop has ended.
// Commands sent meanwhile wait for the first session. ErrEnabled while the
// job runs already.
func (j *Job) launch(loopCtx context.Context, run runOptions) (done, started <-chan struct{}, err error) {
	j.mu.Lock()
	if j.done != nil {
		select {
		case <-j.done:
		default:
			j.mu.Unlock()
			return nil, nil, ErrEnabled
		}
	}
	run.sessions = j.cfg.Sessions
	j.fencedOff.Store(false)
	j.fence.Store(nil)
	if run.lease != nil {
		j.fence.Store(newRepoFence(j.cfg.Repository, j.cfg.Name, *run.lease, run.confirm))
	}
	if f, ok := j.cfg.Sessions.(session.Fencer); ok && run.lease != nil {
		run.sessions = fenceWatch{f.Fenced(*run.lease), &j.fencedOff}
	}
	j.cmds, j.done, j.run = make(chan command), make(chan struct{}), run
	cmds, d := j.cmds, j.done
	j.mu.Unlock()
	s := make(chan struct{})
	go j.loop(loopCtx, cmds, d, s)
	return d, s, nil
}

// Disable ends the running child session (a last ship, then the runtime is
// stopped and uninstalled from every guest) and stops the job. It returns
// when that is done.
func (j *Job) Disable(ctx context.Context) error { return j.send(ctx, cmdDisable) }

// StartParent runs a parent session now: the child session ends first, the
// restore points are taken, and a new child session starts after it. It
// returns when the new child session runs, or ErrParentRunning at once
// while a parent session runs (one at a time per job).
func (j *Job) StartParent(ctx context.Context) error {
	if j.parentRunning.Load() {
		return ErrParentRunning
	}
	return j.send(ctx, cmdParent)
}

func (j *Job) send(ctx context.Context, kind cmdKind) error {
	j.mu.Lock()
	cmds, done := j.cmds, j.done
	j.mu.Unlock()
	if done == nil {
		return ErrNotEnabled
	}
	c := command{kind: kind, reply: make(chan error, 1)}
	select {
	case cmds <- c:
	case <-done:
		return ErrNotEnabled
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.reply:
		if kind == cmdDisable {
			<-done
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop owns the sessions. Work is due at the next interval of the child
// session, its next retry, or the next scheduled parent run; commands come
// in between. When ctx ends the child session is stopped.
func (j *Job) loop(ctx context.Context, cmds <-chan command, done chan<- struct{}, started chan<- struct{}) {
	defer close(done)
	if f := j.fence.Load(); f != nil {
		octx, cancel := j.op(ctx)
		if err := f.claim(octx); err != nil {
			j.cfg.Logger.Warn("claim the repository fence (tried again before the first commit)", "job", j.cfg.Name, "err", err)
		}
		cancel()
	}
	j.closeStale(ctx)
	var cs *childSession
	if j.missedRun(ctx) {
		cs = j.runParent(ctx, nil)
	} else {
		cs = j.startChild(ctx, "")
	}
	close(started)
	var nextParent time.Time
	if j.cfg.Schedule != nil {
		nextParent = j.cfg.Schedule.Next(j.cfg.Clock.Now())
	}
	for {
		if ctx.Err() != nil {
			j.stopChild(ctx, cs, "stopped: the host program ended the job")
			return
		}
		now := j.cfg.Clock.Now()
		if j.run.holds != nil && !j.run.holds(now) {
			j.stopChild(ctx, cs, "stopped: this process's lease on the job ran out (it was paused or cut off from the session store); the job may run elsewhere")
			return
		}
		if j.fencedOff.Load() {
			j.stopChild(ctx, cs, "stopped: another process holds the job's lease now (this run's writes were fenced off)")
			return
		}
		switch {
		case isDue(nextParent, now):
			cs = j.runParent(ctx, cs)
			nextParent = j.cfg.Schedule.Next(j.cfg.Clock.Now())
			continue
		case isDue(cs.nextTick, now):
			j.tick(ctx, cs)
			continue
		case isDue(cs.nextRetry, now):
			j.retry(ctx, cs)
			continue
		}
		wake := earliest(cs.nextTick, cs.nextRetry, nextParent)
		timer := j.cfg.Clock.Timer(wake.Sub(now))
		j.cfg.Observer(Event{Kind: EventIdle, Next: wake})
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
		case c := <-cmds:
			timer.Stop()
			switch c.kind {
			case cmdDisable:
				j.endChild(ctx, cs, "ended because the job was disabled")
				c.reply <- nil
				return
			case cmdParent:
				cs = j.runParent(ctx, cs)
				c.reply <- nil
			}
		}
	}
}

// isDue reports whether a planned time (zero: none) has come.
func isDue(at, now time.Time) bool { return !at.IsZero() && !at.After(now) }

// earliest returns the earliest non-zero time.
func earliest(ts ...time.Time) time.Time {
	var e time.Time
	for _, t := range ts {
		if !t.IsZero() && (e.IsZero() || t.Before(e)) {
			e = t
		}
	}
	return e
}

// op bounds one short call (deploy, scan, close, a store write) by the
// operation timeout.
func (j *Job) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return clock.WithTimeout(j.cfg.Clock, ctx, j.cfg.OperationTimeout)
}

// missedRun reports whether a scheduled parent run came due while the job
// was not running (the host program was down), counting from the newest
// session of the job; a job that never ran missed nothing.
func (j *Job) missedRun(ctx context.Context) bool {
	if j.cfg.Schedule == nil || j.cfg.SkipMissedRun {
		return false
	}
	var last time.Time
	for _, q := range []session.Query{{Job: j.cfg.Name, Limit: 1}, {Job: j.child, Limit: 1}} {
		octx, cancel := j.op(ctx)
		p, err := j.sessions().List(octx, q)
		cancel()
		if err != nil {
			j.cfg.Logger.Error("list sessions to find a missed run", "job", q.Job, "err", err)
			return false
		}
		if len(p.Sessions) > 0 && p.Sessions[0].Start.After(last) {
			last = p.Sessions[0].Start
		}
	}
	return !last.IsZero() && !j.cfg.Schedule.Next(last.In(j.cfg.Clock.Now().Location())).After(j.cfg.Clock.Now())
}

// closeStale ends the sessions of this job that an earlier run left
// running: its host stopped (killed, crashed, lost power) before it could
// end them. One job runs in one place (when several processes share the
// store, a Runner's lease sees to that), so a running session found at
// start-up cannot belong to anyone else.
func (j *Job) closeStale(ctx context.Context) {
	for _, name := range []string{j.cfg.Name, j.child} {
		octx, cancel := j.op(ctx)
		p, err := j.sessions().List(octx, session.Query{Job: name})
		cancel()
		if err != nil {
			j.cfg.Logger.Error("list sessions to close stale ones", "job", name, "err", err)
			continue
		}
		for _, s := range p.Sessions {
			if s.State.Final() {
				continue
			}
			s.State, s.Result = session.StateFailed, "ended abnormally: the host program stopped while the session ran (found at the next start)"
			s.End = j.cfg.Clock.Now()
			if s.End.Before(s.Start) {
				s.End = s.Start
			}
			octx, cancel := j.op(ctx)
			err := j.sessions().Update(octx, s)
			if err == nil {
				_, err = j.sessions().Append(octx, s.ID, session.Entry{Time: s.End, Severity: session.SeverityError, Message: s.Result})
			}
			cancel()
			if err != nil {
				j.cfg.Logger.Error("close stale session", "session", s.ID, "err", err)
				continue
			}
			j.cfg.Logger.Warn("closed a session left running by an earlier run", "job", name, "session", s.ID)
		}
	}
}
