package walbackup

import (
	"context"
	"fmt"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/session"
)

// RestoreJobName is the job name under which a job's restores, drills and
// exports are recorded as sessions of kind session.KindRestore, beside
// the parent's and the child's.
func RestoreJobName(parent string) string { return parent + " Restore" }

// restoreRecord is the session record of one restore, drill or export.
// Its store is the job's own (not fenced: restores hold no lease).
type restoreRecord struct {
	j   *Job
	rec session.Session
}

// recordRestore creates the session record of a restore of plan; what
// says which kind ("restore", "drill", "export") and where it goes. A
// store that fails is logged, and the restore goes on.
func (j *Job) recordRestore(ctx context.Context, plan *Plan, what string) *restoreRecord {
	r := &restoreRecord{j: j, rec: session.Session{Job: RestoreJobName(j.cfg.Name), Kind: session.KindRestore,
		State: session.StateWorking, Start: j.cfg.Clock.Now()}}
	r.rec.Counters.FirstLSN = plan.RestorePoint.StartLSN
	octx, cancel := j.op(ctx)
	rec, err := j.cfg.Sessions.Create(octx, r.rec)
	cancel()
	if err != nil {
		j.cfg.Logger.Error("create restore session", "job", r.rec.Job, "err", err)
		return r
	}
	r.rec = rec
	r.log(ctx, session.SeverityInfo, fmt.Sprintf("%s of machine %s (system identifier %d) from restore point %s, to %s",
		what, plan.Instance.Machine, plan.Instance.SystemID, plan.RestorePoint.ID, plan.Target))
	return r
}

func (r *restoreRecord) log(ctx context.Context, sev session.Severity, msg string) {
	if r.rec.ID == "" {
		return
	}
	octx, cancel := r.j.op(context.WithoutCancel(ctx))
	defer cancel()
	if _, err := r.j.cfg.Sessions.Append(octx, r.rec.ID, session.Entry{Time: r.j.cfg.Clock.Now(), Severity: sev, Message: msg}); err != nil {
		r.j.cfg.Logger.Error("append restore session log", "session", r.rec.ID, "err", err)
	}
}

// end records the outcome: failed with err, else success with result;
// the WAL files recovery fetched and the LSN it reached count.
func (r *restoreRecord) end(ctx context.Context, err error, result string, rec guest.RecoveryResult) {
	if r.rec.ID == "" {
		return
	}
	r.rec.State, r.rec.Result = session.StateSuccess, result
	if err != nil {
		r.rec.State, r.rec.Result = session.StateFailed, err.Error()
		r.log(ctx, session.SeverityError, err.Error())
	}
	r.rec.End = r.j.cfg.Clock.Now()
	r.rec.Counters.Files = int64(rec.Fetched)
	r.rec.Counters.LastLSN = rec.LSN
	r.update(ctx)
}

// update writes the record as it is now.
func (r *restoreRecord) update(ctx context.Context) {
	if r.rec.ID == "" {
		return
	}
	octx, cancel := r.j.op(context.WithoutCancel(ctx))
	defer cancel()
	if err := r.j.cfg.Sessions.Update(octx, r.rec); err != nil {
		r.j.cfg.Logger.Error("update restore session", "session", r.rec.ID, "err", err)
	}
}
