package walbackup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/wal"
)

// Job is a backup job with PostgreSQL machines: the parent job's image
// sessions and the child job's WAL shipping sessions. One goroutine, started
// by Enable and ended by Disable, owns all its sessions; the other methods
// talk to it.
type Job struct {
	cfg   Config
	child string

	mu   sync.Mutex // guards cmds and done across Enable and the commands
	cmds chan command
	done chan struct{} // closed when the loop has ended
}

type command struct {
	kind  string // "parent" or "disable"
	reply chan error
}

// NewJob checks cfg and returns a disabled Job.
func NewJob(cfg Config) (*Job, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("new job: %w", err)
	}
	cfg.Machines = append([]Machine(nil), cfg.Machines...)
	return &Job{cfg: cfg, child: ChildJobName(cfg.Name)}, nil
}

// Name is the parent job's name; ChildName the child job's.
func (j *Job) Name() string      { return j.cfg.Name }
func (j *Job) ChildName() string { return j.child }

// ErrNotEnabled is returned by commands to a job that is not enabled.
var ErrNotEnabled = errors.New("job is not enabled")

// Enable starts the job: the first child session starts now, and it returns
// once that session is running. ctx bounds only the start; the job runs
// until Disable.
func (j *Job) Enable(ctx context.Context) error {
	j.mu.Lock()
	if j.done != nil {
		select {
		case <-j.done:
		default:
			j.mu.Unlock()
			return errors.New("job is already enabled")
		}
	}
	j.cmds, j.done = make(chan command), make(chan struct{})
	cmds, done := j.cmds, j.done
	j.mu.Unlock()
	started := make(chan error, 1)
	go j.loop(cmds, done, started)
	select {
	case err := <-started:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Disable ends the running child session (a last ship, then the runtime is
// stopped and uninstalled from every guest) and stops the job. It returns
// when that is done.
func (j *Job) Disable(ctx context.Context) error { return j.send(ctx, "disable") }

// StartParent runs a parent session now: the child session ends first, the
// image is taken, and a new child session starts after it. It returns when
// the new child session runs.
func (j *Job) StartParent(ctx context.Context) error { return j.send(ctx, "parent") }

func (j *Job) send(ctx context.Context, kind string) error {
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
		if kind == "disable" {
			<-done
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop owns the sessions. Work is due at the next interval of the child
// session or the next scheduled parent run; commands come in between.
func (j *Job) loop(cmds <-chan command, done chan<- struct{}, started chan<- error) {
	defer close(done)
	ctx := context.Background() // sessions end through Disable, not by cancellation
	cs := j.startChild(ctx, "")
	started <- nil
	nextParent := time.Time{}
	if j.cfg.Schedule != nil {
		nextParent = j.cfg.Schedule.Next(j.cfg.Clock.Now())
	}
	for {
		now := j.cfg.Clock.Now()
		due := cs.nextTick
		if !nextParent.IsZero() && nextParent.Before(due) {
			due = nextParent
		}
		if !due.After(now) {
			if !nextParent.IsZero() && !nextParent.After(now) {
				cs = j.runParent(ctx, cs)
				nextParent = j.cfg.Schedule.Next(j.cfg.Clock.Now())
			} else {
				j.tick(ctx, cs)
			}
			continue
		}
		timer := j.cfg.Clock.Timer(due.Sub(now))
		j.cfg.Observer(Event{Kind: EventIdle})
		select {
		case <-timer.C:
		case c := <-cmds:
			timer.Stop()
			switch c.kind {
			case "disable":
				j.endChild(ctx, cs, "ended because the job was disabled")
				c.reply <- nil
				return
			case "parent":
				cs = j.runParent(ctx, cs)
				c.reply <- nil
			}
		}
	}
}

// childSession is the running child session and its runtimes.
type childSession struct {
	rec      session.Session
	start    time.Time
	nextTick time.Time
	machines []*machineState
	warnings int
	errors   int
}

type machineState struct {
	m       Machine
	rt      guest.Runtime
	inst    repository.Instance
	segSize int64
	last    map[uint32]wal.FileName // newest segment stored, per timeline

	// While shipping fails: when it started and how much WAL waited then,
	// to estimate when the guest's temporary folder fills up.
	stuckSince   time.Time
	stuckWaiting int64
}

func (j *Job) log(ctx context.Context, cs *childSession, sev session.Severity, msg string) {
	if _, err := j.cfg.Sessions.Append(ctx, cs.rec.ID, session.Entry{Time: j.cfg.Clock.Now(), Severity: sev, Message: msg}); err != nil {
		j.cfg.Logger.Error("append session log", "session", cs.rec.ID, "err", err)
	}
	switch sev {
	case session.SeverityWarning:
		cs.warnings++
		j.cfg.Observer(Event{Kind: EventWarning, Session: cs.rec, Message: msg})
	case session.SeverityError:
		cs.errors++
		j.cfg.Observer(Event{Kind: EventWarning, Session: cs.rec, Message: msg})
	}
}

// startChild creates a child session and deploys the runtime into every
// guest. A machine that cannot be reached is logged and retried each
// interval.
func (j *Job) startChild(ctx context.Context, parentID string) *childSession {
	now := j.cfg.Clock.Now()
	rec, err := j.cfg.Sessions.Create(ctx, session.Session{Job: j.child, Kind: session.KindChild, ParentID: parentID, State: session.StateStarting, Start: now})
	if err != nil {
		j.cfg.Logger.Error("create child session", "job", j.child, "err", err)
	}
	cs := &childSession{rec: rec, start: now, nextTick: now.Add(j.cfg.LogBackupInterval)}
	for _, m := range j.cfg.Machines {
		cs.machines = append(cs.machines, &machineState{m: m})
	}
	j.deployAll(ctx, cs)
	cs.rec.State = session.StateWorking
	j.update(ctx, cs)
	j.cfg.Observer(Event{Kind: EventSessionStarted, Session: cs.rec})
	return cs
}

func (j *Job) deployAll(ctx context.Context, cs *childSession) {
	for _, ms := range cs.machines {
		if ms.rt != nil {
			continue
		}
		rt, err := j.cfg.Guests.Deploy(ctx, guest.Target{Machine: ms.m.ID, Address: ms.m.Address})
		if err == nil {
			err = rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: j.cfg.WALDir})
			if err != nil {
				rt.Close(ctx)
			}
		}
		var inst guest.Instance
		if err == nil {
			if inst, err = rt.Scan(ctx); err != nil {
				rt.Close(ctx)
			}
		}
		if err != nil {
			j.log(ctx, cs, session.SeverityError, fmt.Sprintf("machine %s: cannot start the runtime: %v", ms.m.ID, err))
			continue
		}
		ms.rt = rt
		ms.inst = repository.Instance{Job: j.cfg.Name, Machine: ms.m.ID, SystemID: inst.SystemID}
		ms.segSize = inst.WALSegmentSize
		ms.last = j.lastStored(ctx, ms.inst, inst.Timeline)
		j.log(ctx, cs, session.SeverityInfo, fmt.Sprintf("machine %s: runtime deployed, PostgreSQL %d, system identifier %d", ms.m.ID, inst.Version, inst.SystemID))
	}
}

// tick is one interval: retry machines not yet reached, then ship.
func (j *Job) tick(ctx context.Context, cs *childSession) {
	due := cs.nextTick
	cs.nextTick = cs.nextTick.Add(j.cfg.LogBackupInterval)
	j.deployAll(ctx, cs)
	j.shipAll(ctx, cs, due)
}

// shipAll ships every machine; due is when this batch was due, for the lag
// the observer sees.
func (j *Job) shipAll(ctx context.Context, cs *childSession, due time.Time) {
	for _, ms := range cs.machines {
		if ms.rt == nil {
			continue
		}
		got, err := ShipOnce(ctx, ms.rt, j.cfg.Repository, ms.inst, j.cfg.Key)
		if err != nil {
			j.log(ctx, cs, session.SeverityWarning, fmt.Sprintf("machine %s: WAL not shipped this interval, kept in the guest: %v", ms.m.ID, err))
			j.warnFilling(ctx, cs, ms)
			continue
		}
		ms.stuckSince = time.Time{}
		if got.Files == 0 {
			j.log(ctx, cs, session.SeverityInfo, fmt.Sprintf("machine %s: no new WAL", ms.m.ID))
			continue
		}
		j.checkGaps(ctx, cs, ms, got.Names)
		c := &cs.rec.Counters
		c.Files += int64(got.Files)
		c.Bytes += got.RawBytes
		if c.FirstSegment == "" || got.First < c.FirstSegment {
			c.FirstSegment = got.First
		}
		if got.Last > c.LastSegment {
			c.LastSegment = got.Last
		}
		j.log(ctx, cs, session.SeverityInfo, fmt.Sprintf("machine %s: shipped %d files (%d bytes, %d stored) from %s to %s",
			ms.m.ID, got.Files, got.RawBytes, got.StoredBytes, got.First, got.Last))
		j.cfg.Observer(Event{Kind: EventBatchShipped, Session: cs.rec, Machine: ms.m.ID, Files: got.Files, Bytes: got.RawBytes,
			Lag: j.cfg.Clock.Now().Sub(due)})
	}
	j.update(ctx, cs)
}

func (j *Job) update(ctx context.Context, cs *childSession) {
	if cs.rec.ID == "" {
		return
	}
	if err := j.cfg.Sessions.Update(ctx, cs.rec); err != nil {
		j.cfg.Logger.Error("update session", "session", cs.rec.ID, "err", err)
	}
}

// endChild ships once more, stops and uninstalls every runtime, and closes
// the session record with its result.
func (j *Job) endChild(ctx context.Context, cs *childSession, why string) {
	j.shipAll(ctx, cs, j.cfg.Clock.Now())
	for _, ms := range cs.machines {
		if ms.rt == nil {
			continue
		}
		if err := ms.rt.Close(ctx); err != nil {
			j.log(ctx, cs, session.SeverityWarning, fmt.Sprintf("machine %s: uninstall runtime: %v", ms.m.ID, err))
		}
		ms.rt = nil
	}
	cs.rec.State = session.StateSuccess
	switch {
	case cs.errors > 0:
		cs.rec.State = session.StateFailed
	case cs.warnings > 0:
		cs.rec.State = session.StateWarning
	}
	cs.rec.End = j.cfg.Clock.Now()
	cs.rec.Result = why
	j.update(ctx, cs)
	j.cfg.Observer(Event{Kind: EventSessionEnded, Session: cs.rec})
}

// runParent ends the child session, takes the image of every machine, and
// starts the next child session after it.
func (j *Job) runParent(ctx context.Context, cs *childSession) *childSession {
	j.endChild(ctx, cs, "ended for a new parent session")
	now := j.cfg.Clock.Now()
	rec, err := j.cfg.Sessions.Create(ctx, session.Session{Job: j.cfg.Name, Kind: session.KindParent, State: session.StateWorking, Start: now})
	if err != nil {
		j.cfg.Logger.Error("create parent session", "job", j.cfg.Name, "err", err)
	}
	j.cfg.Observer(Event{Kind: EventSessionStarted, Session: rec})
	var failed []string
	for _, m := range j.cfg.Machines {
		if err := j.image(ctx, rec, m); err != nil {
			failed = append(failed, m.ID)
			_, aerr := j.cfg.Sessions.Append(ctx, rec.ID, session.Entry{Time: j.cfg.Clock.Now(), Severity: session.SeverityError,
				Message: fmt.Sprintf("machine %s: no image: %v", m.ID, err)})
			if aerr != nil {
				j.cfg.Logger.Error("append session log", "session", rec.ID, "err", aerr)
			}
		}
	}
	rec.State, rec.End = session.StateSuccess, j.cfg.Clock.Now()
	if len(failed) > 0 {
		sort.Strings(failed)
		rec.State, rec.Result = session.StateFailed, fmt.Sprintf("no image of %v", failed)
	}
	if rec.ID != "" {
		if err := j.cfg.Sessions.Update(ctx, rec); err != nil {
			j.cfg.Logger.Error("update parent session", "session", rec.ID, "err", err)
		}
	}
	j.cfg.Observer(Event{Kind: EventSessionEnded, Session: rec})
	next := j.startChild(ctx, rec.ID)
	if len(failed) > 0 {
		j.log(ctx, next, session.SeverityWarning, fmt.Sprintf("the parent session failed for %v: WAL shipped in this session has no restore point before it", failed))
	}
	return next
}

// image takes one machine's image into the repository. Application-aware
// backup mode and restore point manifests come with the parent-job work.
func (j *Job) image(ctx context.Context, rec session.Session, m Machine) error {
	snap, err := j.cfg.Hypervisor.Snapshot(ctx, m.ID, hypervisor.SnapshotOptions{})
	if err != nil {
		return err
	}
	defer snap.Release(ctx)
	prefix := "jobs/" + repository.Component(j.cfg.Name) + "/" + repository.Component(m.ID) + "/images/" + rec.ID
	_, err = snap.Export(ctx, j.cfg.Repository, prefix, nil)
	return err
}

// lastStored finds the newest segment the repository holds for a timeline,
// so continuity is checked across sessions too.
func (j *Job) lastStored(ctx context.Context, inst repository.Instance, timeline uint32) map[uint32]wal.FileName {
	last := map[uint32]wal.FileName{}
	refs, err := repository.Bundles(ctx, j.cfg.Repository, inst, timeline)
	if err != nil {
		return last
	}
	for _, r := range refs {
		if f, err := wal.ParseFileName(r.Last); err == nil && f.Kind == wal.Segment {
			if cur, ok := last[timeline]; !ok || r.Last > cur.String() {
				last[timeline] = f
			}
		}
	}
	return last
}

// checkGaps warns when shipped segments do not follow the newest stored
// one of their timeline: WAL in between is missing, and recovery cannot
// pass the gap.
func (j *Job) checkGaps(ctx context.Context, cs *childSession, ms *machineState, names []string) {
	if ms.segSize <= 0 {
		return
	}
	for _, n := range names {
		f, err := wal.ParseFileName(n)
		if err != nil || f.Kind != wal.Segment {
			continue
		}
		prev, ok := ms.last[f.Timeline]
		switch {
		case !ok:
		case f.String() <= prev.String():
			continue // shipped again after a crash: not newer
		default:
			if want := prev.Next(ms.segSize); want != f {
				j.log(ctx, cs, session.SeverityWarning, fmt.Sprintf("machine %s: gap in timeline %d: segments %s up to before %s are missing",
					ms.m.ID, f.Timeline, want, f))
			}
		}
		ms.last[f.Timeline] = f
	}
}

// warnFilling estimates, while shipping fails, when the guest's temporary
// folder will be full at the rate WAL has been piling up; then archiving
// fails and PostgreSQL keeps WAL in pg_wal instead.
func (j *Job) warnFilling(ctx context.Context, cs *childSession, ms *machineState) {
	sr, ok := ms.rt.(guest.SpaceReporter)
	if !ok {
		return
	}
	sp, err := sr.FolderSpace(ctx)
	if err != nil {
		return
	}
	now := j.cfg.Clock.Now()
	if ms.stuckSince.IsZero() {
		ms.stuckSince, ms.stuckWaiting = now, sp.Waiting
		return
	}
	grown, elapsed := sp.Waiting-ms.stuckWaiting, now.Sub(ms.stuckSince)
	if grown <= 0 || elapsed <= 0 {
		return
	}
	full := time.Duration(float64(sp.Free) / float64(grown) * float64(elapsed)).Round(time.Minute)
	j.log(ctx, cs, session.SeverityWarning, fmt.Sprintf("machine %s: WAL is piling up in the temporary folder: %d bytes waiting, %d bytes free; full in about %v at this rate",
		ms.m.ID, sp.Waiting, sp.Free, full))
}
