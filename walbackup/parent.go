package walbackup

import (
	"context"
	"fmt"
	"sort"

	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/session"
)

// runParent ends the child session, takes the image of every machine, and
// starts the next child session after it.
func (j *Job) runParent(ctx context.Context, cs *childSession) *childSession {
	j.endChild(ctx, cs, "ended for a new parent session")
	octx, cancel := j.op(ctx)
	rec, err := j.cfg.Sessions.Create(octx, session.Session{Job: j.cfg.Name, Kind: session.KindParent, State: session.StateWorking, Start: j.cfg.Clock.Now()})
	cancel()
	if err != nil {
		j.cfg.Logger.Error("create parent session", "job", j.cfg.Name, "err", err)
	}
	j.cfg.Observer(Event{Kind: EventSessionStarted, Session: rec})
	var failed []string
	for _, m := range j.cfg.Machines {
		if err := j.image(ctx, rec, m); err != nil {
			failed = append(failed, m.ID)
			octx, cancel := j.op(ctx)
			_, aerr := j.cfg.Sessions.Append(octx, rec.ID, session.Entry{Time: j.cfg.Clock.Now(), Severity: session.SeverityError,
				Message: fmt.Sprintf("machine %s: no image: %v", m.ID, err)})
			cancel()
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
		octx, cancel := j.op(ctx)
		if err := j.cfg.Sessions.Update(octx, rec); err != nil {
			j.cfg.Logger.Error("update parent session", "session", rec.ID, "err", err)
		}
		cancel()
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
	defer snap.Release(context.WithoutCancel(ctx))
	prefix := "jobs/" + repository.Component(j.cfg.Name) + "/" + repository.Component(m.ID) + "/images/" + rec.ID
	_, err = snap.Export(ctx, j.cfg.Repository, prefix, nil)
	return err
}
