package walbackup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pglogship/pglogship/guest"
)

// ErrNoDump: the staging guest's runtime cannot dump databases.
var ErrNoDump = errors.New("runtime cannot dump databases")

// ExportRequest asks for a logical export of databases of one instance as
// they were at a point in time.
type ExportRequest struct {
	// Machine, SystemID, DataDir, Target and RestorePoint pick the
	// instance and the point in time, as in RestoreRequest.
	Machine      string
	SystemID     uint64
	DataDir      string
	Target       Target
	RestorePoint string
	// Databases are dumped, each with pg_dump in its directory format.
	Databases []string
	// Staging is where the instance is restored and started, as a drill's
	// scratch (DrillRequest.Scratch): a scratch image that is removed
	// afterwards, and the guest whose runtime recovers it and runs pg_dump
	// of the instance's release. Force is ignored: an export never
	// replaces anything.
	Staging RestoreTo
	// Dir is a new directory in the staging guest; each database is
	// dumped into Dir/<database>. What is there is the caller's.
	Dir string
	// BinDir holds pg_dump in the staging guest; empty: the release's
	// usual place (Debian's postgresql-client-<major>), then PATH.
	BinDir string
}

// ExportResult is what an export did.
type ExportResult struct {
	RestorePoint string
	Recovery     guest.RecoveryResult
	Dumps        []guest.DatabaseDump
	Took         time.Duration
}

// Export restores the instance to the request's target on a scratch
// server in the staging guest, dumps the databases with the guest's own
// pg_dump of the instance's release, and tears the scratch server down:
// the server stopped, its image and tablespaces removed, the dumps kept in
// req.Dir. The restore points it reads are held (Job.Hold) meanwhile. A
// staging guest without pg_dump of the release gives guest.ErrNoPgDump,
// naming what to install.
func (j *Job) Export(ctx context.Context, req ExportRequest) (res ExportResult, err error) {
	start := j.cfg.Clock.Now()
	switch {
	case req.Staging.Image == "" || req.Staging.Guest.ID == "":
		return res, errors.New("export: the staging image path and the guest that starts it are required")
	case len(req.Databases) == 0:
		return res, errors.New("export: name at least one database")
	case req.Dir == "":
		return res, errors.New("export: the directory the dumps go into is required")
	}
	plan, err := j.Plan(ctx, RestoreRequest{Machine: req.Machine, SystemID: req.SystemID, DataDir: req.DataDir, Target: req.Target,
		RestorePoint: req.RestorePoint})
	if err != nil {
		return res, err
	}
	res.RestorePoint = plan.RestorePoint.ID
	rr := j.recordRestore(ctx, plan, fmt.Sprintf("export of %v on %s", req.Databases, req.Staging.Guest.ID))
	defer func() { rr.end(ctx, err, fmt.Sprintf("exported %v into %s", req.Databases, req.Dir), res.Recovery) }()
	defer func() {
		j.cfg.Observer(Event{Kind: EventExport, Machine: plan.Instance.Machine, Instance: j.instanceOf(plan.Instance.Machine, plan.RestorePoint.DataDir),
			RestorePoint: plan.RestorePoint.ID, Passed: err == nil})
	}()
	rt, err := j.deployFor(ctx, req.Staging.Guest)
	if err != nil {
		return res, err
	}
	defer j.closeRuntime(ctx, rt, req.Staging.Guest)
	dumper, ok := rt.(guest.Dumper)
	ctl, ok2 := rt.(guest.ServerControl)
	if !ok || !ok2 {
		return res, fmt.Errorf("export on %s: %w", req.Staging.Guest.ID, ErrNoDump)
	}
	if err := j.checkGuestRelease(ctx, plan, req.Staging.Guest, req.Staging.Recovery.BinDir, rt); err != nil {
		return res, err
	}
	hold, err := j.Hold(ctx, plan, "export")
	if err != nil {
		return res, err
	}
	defer hold.Release(ctx)
	scratch := req.Staging
	scratch.Force = false
	spaces, err := j.placeTablespaces(plan, scratch)
	if err != nil {
		return res, err
	}
	if _, err := j.makeRoom(ctx, scratch, spaces, ""); err != nil {
		return res, fmt.Errorf("export: %w", err)
	}
	placed, err := j.restoreImage(ctx, plan, scratch.Image, spaces, nil)
	if err != nil {
		return res, fmt.Errorf("export: %w", err)
	}
	defer j.removeScratch(scratch.Image, placed, "export")
	opts := scratch.recoveryOf(placed)
	defer func() {
		octx, cancel := j.op(context.WithoutCancel(ctx))
		defer cancel()
		if err := ctl.StopServer(octx, opts.DataDir); err != nil {
			j.cfg.Logger.Warn("stop the export's server", "dir", opts.DataDir, "err", err)
		}
	}()
	if res.Recovery, err = j.recoverWith(ctx, rt, plan, req.Staging.Guest, opts); err != nil {
		return res, fmt.Errorf("export: %w", err)
	}
	// pg_dump takes as long as the databases need: no operation timeout.
	dump, err := dumper.Dump(ctx, guest.DumpConfig{DataDir: opts.DataDir, Port: opts.Port, SocketDir: opts.SocketDir,
		Databases: req.Databases, Dir: req.Dir, BinDir: req.BinDir})
	res.Dumps = dump.Dumps
	if err != nil {
		return res, fmt.Errorf("export on %s: %w", req.Staging.Guest.ID, err)
	}
	res.Took = j.cfg.Clock.Now().Sub(start)
	return res, nil
}
