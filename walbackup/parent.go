package walbackup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/wal"
)

// ErrParentRunning: a parent session of the job is running; a job runs one
// at a time.
var ErrParentRunning = errors.New("a parent session of this job is already running")

// ErrNoBackupMode: the guest runtime cannot put PostgreSQL in backup mode,
// so no application-aware image can be taken.
var ErrNoBackupMode = errors.New("runtime cannot hold backup mode")

// ErrSameSystemID: two instances of one machine (Machine.Instances) have
// one system identifier, one a copy of the other (a standby, a cloned
// data directory): their WAL and restore points would share one chain.
var ErrSameSystemID = errors.New("two instances of the machine have the same system identifier")

// runParent ends the child session (cs may be nil when none runs), takes a
// restore point of every machine, and starts the next child session after
// it.
func (j *Job) runParent(ctx context.Context, cs *childSession) *childSession {
	if cs != nil {
		j.endChild(ctx, cs, "ended for a new parent session")
	}
	j.parentRunning.Store(true)
	defer j.parentRunning.Store(false)
	octx, cancel := j.op(ctx)
	rec, err := j.sessions().Create(octx, session.Session{Job: j.cfg.Name, Kind: session.KindParent, State: session.StateWorking, Start: j.cfg.Clock.Now()})
	cancel()
	if err != nil {
		j.cfg.Logger.Error("create parent session", "job", j.cfg.Name, "err", err)
	}
	j.cfg.Observer(Event{Kind: EventSessionStarted, Session: rec})
	if j.run.note != "" {
		j.parentLog(ctx, rec, session.SeverityInfo, j.run.note)
	}
	var failed []string
	for _, m := range j.cfg.Machines {
		dirs, err := j.instancesNow(ctx, m)
		if err != nil {
			failed = append(failed, m.ID)
			j.parentAlert(ctx, rec, session.SeverityError, FailureNoRestorePoint, about{machine: m.ID},
				fmt.Sprintf("machine %s: no restore point: %v", m.ID, err))
			continue
		}
		seen := map[uint64]string{} // the system identifiers imaged so far, and whose
		groups, shared := j.imageGroups(m, dirs)
		for _, group := range groups {
			if j.fencedOff.Load() {
				// Another process holds the job now: no more images.
				for _, dir := range group {
					failed = append(failed, instanceName(m.ID, dir))
				}
				continue
			}
			for _, mb := range j.takeRestorePoints(ctx, m, group, dirs, seen, shared, &rec) {
				if mb.err != nil {
					failed = append(failed, mb.name)
					j.parentAlert(ctx, rec, session.SeverityError, FailureNoRestorePoint, about{m.ID, mb.dir},
						fmt.Sprintf("machine %s: no restore point: %v", mb.name, mb.err))
					continue
				}
				j.countRestorePoint(ctx, &rec, mb.name, mb.rp)
				j.cfg.Observer(Event{Kind: EventRestorePoint, Session: rec, Machine: m.ID, Instance: mb.dir, RestorePoint: mb.rp.ID, Time: mb.rp.StopTime})
			}
		}
	}
	rec.State = session.StateSuccess
	var exp Expired
	var expErr error
	if !j.fencedOff.Load() {
		// Silence from the repository is bounded, as for every other call.
		ectx, w, stop := watch(ctx, j.cfg.Clock, j.cfg.OperationTimeout)
		exp, expErr = j.expire(ectx, fencedRepo{watchedRepo{j.cfg.Repository, w}, j})
		expErr = explain(ectx, expErr)
		stop()
	}
	if expErr != nil {
		rec.State = session.StateWarning
		j.parentAlert(ctx, rec, session.SeverityWarning, FailureExpiry, about{},
			fmt.Sprintf("expiry: %v (what it did not remove is removed by the next one)", expErr))
	} else if len(exp.RestorePoints)+len(exp.Bundles)+len(exp.Garbage)+len(exp.Images) > 0 {
		msg := fmt.Sprintf("expiry removed restore points %v, %d WAL bundles and %d unfinished restore points",
			exp.RestorePoints, len(exp.Bundles), len(exp.Garbage))
		if len(exp.Images) > 0 {
			msg += fmt.Sprintf(", and shared images %v", exp.Images)
		}
		j.parentLog(ctx, rec, session.SeverityInfo, msg)
	}
	if len(exp.Held) > 0 {
		j.parentLog(ctx, rec, session.SeverityInfo, fmt.Sprintf("expiry left restore points %v and their WAL to running restores or drills: a later expiry removes them",
			exp.Held))
	}
	rec.End = j.cfg.Clock.Now()
	if len(failed) > 0 {
		sort.Strings(failed)
		rec.State, rec.Result = session.StateFailed, fmt.Sprintf("no restore point of %v", failed)
	}
	if rec.ID != "" {
		octx, cancel := j.op(ctx)
		if err := j.sessions().Update(octx, rec); err != nil {
			j.cfg.Logger.Error("update parent session", "session", rec.ID, "err", err)
		}
		cancel()
	}
	j.cfg.Observer(Event{Kind: EventSessionEnded, Session: rec})
	next := j.startChild(ctx, rec.ID)
	if len(failed) > 0 {
		j.alert(ctx, next, session.SeverityWarning, FailureNoRestorePoint, about{}, fmt.Sprintf("the parent session failed for %v: WAL shipped in this session has no restore point before it", failed))
	}
	return next
}

// countRestorePoint adds a restore point to the parent session's counters
// and log; name is its machine (and instance).
func (j *Job) countRestorePoint(ctx context.Context, rec *session.Session, name string, rp *repository.Manifest) {
	kind := "full"
	if !rp.Full {
		kind = "incremental on " + rp.Base
	}
	if rp.SharedImage {
		kind = "machine's " + kind // one image for all its instances
	}
	var size int64
	for _, o := range rp.Objects {
		size += o.Size
	}
	rec.Counters.Files += int64(len(rp.Objects))
	rec.Counters.Bytes += size
	if rec.Counters.FirstLSN == 0 || rp.StartLSN < rec.Counters.FirstLSN {
		rec.Counters.FirstLSN = rp.StartLSN
	}
	rec.Counters.LastLSN = max(rec.Counters.LastLSN, rp.StopLSN)
	j.parentLog(ctx, *rec, session.SeverityInfo, fmt.Sprintf("machine %s: restore point %s, %s image of %d objects (%d bytes), backup from %s to %s on timeline %d",
		name, rp.ID, kind, len(rp.Objects), size, rp.StartLSN, rp.StopLSN, rp.Timeline))
}

// parentAlert is parentLog for a warning or an error, which the observer
// hears of too, with what it is about.
func (j *Job) parentAlert(ctx context.Context, rec session.Session, sev session.Severity, f Failure, a about, msg string) {
	j.parentLog(ctx, rec, sev, msg)
	j.cfg.Observer(Event{Kind: EventWarning, Session: rec, Machine: a.machine, Instance: a.instance, Failure: f, Message: msg})
}

func (j *Job) parentLog(ctx context.Context, rec session.Session, sev session.Severity, msg string) {
	if rec.ID == "" {
		j.cfg.Logger.Warn(msg, "job", j.cfg.Name)
		return
	}
	octx, cancel := j.op(ctx)
	defer cancel()
	if _, err := j.sessions().Append(octx, rec.ID, session.Entry{Time: j.cfg.Clock.Now(), Severity: sev, Message: msg}); err != nil {
		j.cfg.Logger.Error("append session log", "session", rec.ID, "err", err)
	}
}

// member is one instance in a restore point: its runtime, what the
// parent learns of it, and how far it got. Instances imaged together (a
// shared image) are members of one group.
type member struct {
	dir, name string // data directory ("" for the machine's only instance) and name in logs
	rt        guest.Runtime
	bm        guest.BackupMode
	gi        guest.Instance
	inst      repository.Instance
	base      *repository.Manifest // the newest restore point an image may build on
	rp        *repository.Manifest
	backup    bool // in backup mode
	committed bool
	err       error
}

// imageGroups splits m's instances this session (dirs) into those imaged
// together. A hypervisor that images an instance at a time
// (hypervisor.InstanceImager) takes each alone. One that images whole
// machines takes one image for all the instances of a machine that lists
// several (Instances or AllInstances), every one in backup mode around it:
// a shared image, which each instance's restore point names. Otherwise
// the machine's one instance is imaged alone, its image under its restore
// point.
func (j *Job) imageGroups(m Machine, dirs []string) (groups [][]string, shared bool) {
	if _, ok := j.cfg.Hypervisor.(hypervisor.InstanceImager); ok || (len(m.Instances) == 0 && !m.AllInstances) {
		for _, dir := range dirs {
			groups = append(groups, []string{dir})
		}
		return groups, false
	}
	return [][]string{dirs}, true
}

// takeRestorePoints takes an application-aware restore point of each instance
// of group (data directories of m; dirs are all of m's instances this
// session, seen the system identifiers imaged so far, a copy of one is
// refused): every instance in backup mode around one snapshot, the image
// exported once (under the restore point's folder, or the machine's
// shared image folder when shared), the WAL from each backup's start to its
// stop shipped, and then each manifest, which commits that instance's
// restore point. An instance that fails is left out with its error; what
// an uncommitted restore point wrote is deleted.
func (j *Job) takeRestorePoints(ctx context.Context, m Machine, group, dirs []string, seen map[uint64]string, shared bool, rec *session.Session) []*member {
	mbs := make([]*member, len(group))
	for i, dir := range group {
		mbs[i] = &member{dir: dir, name: instanceName(m.ID, dir)}
	}
	defer func() {
		for _, mb := range mbs {
			j.leave(ctx, mb)
		}
	}()
	var live []*member
	for _, mb := range mbs {
		if mb.err = j.prepare(ctx, m, mb, dirs, seen); mb.err == nil {
			live = append(live, mb)
		}
	}
	if len(live) == 0 {
		return mbs
	}
	base := commonBase(live, shared)
	id := repository.NewRestorePointID(j.cfg.Clock.Now())
	var started []*member
	for _, mb := range live {
		mb.rp = &repository.Manifest{Version: repository.ManifestVersion, ID: id, Job: j.cfg.Name, Machine: m.ID, SystemID: mb.gi.SystemID,
			DataDir: cmp.Or(mb.dir, mb.gi.DataDir), ServerVersion: mb.gi.Version, WALSegmentSize: mb.gi.WALSegmentSize,
			StartTime: j.cfg.Clock.Now(), SharedImage: shared}
		octx, cancel := j.op(ctx)
		start, err := mb.bm.StartBackup(octx, "pglogship "+id)
		cancel()
		if mb.err = err; err == nil {
			mb.backup = true
			mb.rp.StartLSN, mb.rp.Timeline = start.LSN, start.Timeline
			started = append(started, mb)
		}
	}
	if len(started) == 0 {
		return mbs
	}
	folder := started[0].inst.RestorePoint(id)
	if shared {
		folder = started[0].inst.SharedImage(id)
	}
	defer func() {
		committed := false
		for _, mb := range started {
			committed = committed || mb.committed
			if !mb.committed {
				j.deleteUncommitted(context.WithoutCancel(ctx), mb.inst, id)
			}
		}
		if shared && !committed {
			j.deleteFolder(context.WithoutCancel(ctx), folder+"/")
		}
	}()
	// Each instance's backup ends as early as the image allows; one that
	// cannot end its backup has no restore point, the others go on.
	endBackup := func() error {
		var errs []error
		for _, mb := range started {
			octx, cancel := j.op(ctx)
			stop, err := mb.bm.StopBackup(octx)
			cancel()
			mb.backup = false
			if err != nil {
				mb.err = err
				errs = append(errs, err)
				continue
			}
			mb.rp.StopLSN, mb.rp.StopTime = stop.LSN, j.cfg.Clock.Now()
			mb.rp.BackupLabel, mb.rp.TablespaceMap = stop.BackupLabel, stop.TablespaceMap
		}
		if len(errs) == len(started) {
			return errors.Join(errs...)
		}
		return nil
	}
	dataDir := ""
	if !shared {
		dataDir = group[0]
	}
	var baseImage *hypervisor.Image
	if base != nil {
		baseImage = imageOf(base, started[0].inst)
	}
	img, err := j.image(ctx, folder, m, dataDir, baseImage, endBackup)
	for _, mb := range started {
		switch {
		case err != nil:
			mb.err = cmp.Or(mb.err, err)
		case mb.err == nil:
			mb.err = j.commit(ctx, rec, m, mb, img, folder, base)
		}
	}
	return mbs
}

// prepare deploys mb's runtime, has it archive into the job's WAL folder,
// and learns the instance: its identity (a copy of another one is refused)
// and the newest restore point an image may build on.
func (j *Job) prepare(ctx context.Context, m Machine, mb *member, dirs []string, seen map[uint64]string) error {
	octx, cancel := j.op(ctx)
	rt, err := j.cfg.Guests.Deploy(octx, guest.Target{Machine: m.ID, Address: m.Address, DataDir: mb.dir})
	cancel()
	if err != nil {
		return fmt.Errorf("deploy runtime: %w", err)
	}
	mb.rt = rt
	bm, ok := rt.(guest.BackupMode)
	if !ok {
		return ErrNoBackupMode
	}
	mb.bm = bm
	// Archiving must run: pg_backup_stop waits for the backup's WAL.
	octx, cancel = j.op(ctx)
	err = rt.PrepareArchive(octx, guest.ArchiveConfig{Dir: j.walDir(mb.dir), Codec: j.cfg.Shipping.Compression})
	if err == nil {
		mb.gi, err = rt.Scan(octx)
	}
	cancel()
	if err != nil {
		return err
	}
	mb.inst = repository.Instance{Job: j.cfg.Name, Machine: m.ID, SystemID: mb.gi.SystemID}
	if mb.dir != "" {
		if owner, ok := seen[mb.gi.SystemID]; ok {
			return sameSystemID(mb.dir, owner, mb.gi.SystemID)
		}
		octx, cancel := j.op(ctx)
		err := j.checkChainOwner(octx, mb.inst, mb.dir, dirs)
		cancel()
		if err != nil {
			return err
		}
		seen[mb.gi.SystemID] = mb.dir
	}
	mb.base, err = j.incrementalBase(ctx, mb.inst)
	return err
}

// leave ends mb's backup if it still runs (closing the runtime would end
// it too) and uninstalls its runtime.
func (j *Job) leave(ctx context.Context, mb *member) {
	if mb.rt == nil {
		return
	}
	octx, cancel := j.op(context.WithoutCancel(ctx))
	defer cancel()
	if mb.backup {
		if _, err := mb.bm.StopBackup(octx); err != nil {
			j.cfg.Logger.Warn("end backup mode after a failed image", "machine", mb.name, "err", err)
		}
	}
	if err := mb.rt.Close(octx); err != nil {
		j.cfg.Logger.Warn("uninstall runtime after the parent session", "machine", mb.name, "err", err)
	}
}

// commonBase is the restore point the group's image builds on: each
// member's newest, when they are one image (an instance new to a shared
// image, or one whose last image failed, needs a full image).
func commonBase(live []*member, shared bool) *repository.Manifest {
	for _, mb := range live {
		if mb.base == nil || mb.base.SharedImage != shared || mb.base.ID != live[0].base.ID {
			return nil
		}
	}
	return live[0].base
}

// commit makes mb's restore point usable and commits it: the WAL from
// its backup's start to its stop shipped into the repository and checked,
// then the manifest with the image exported to folder.
func (j *Job) commit(ctx context.Context, rec *session.Session, m Machine, mb *member, img hypervisor.Image, folder string, base *repository.Manifest) error {
	rp := mb.rp
	got, err := j.ship(ctx, m, mb.rt, mb.inst)
	if err != nil {
		return fmt.Errorf("ship the backup's wal: %w", err)
	}
	if got.Files > 0 {
		how := "through the host"
		if got.Direct {
			how = "directly from the guest"
		}
		j.parentLog(ctx, *rec, session.SeverityInfo, fmt.Sprintf("machine %s: shipped %d WAL files from %s to %s for the restore point, %s",
			mb.name, got.Files, got.First, got.Last, how))
	}
	if msg := unsummarizedWarning(mb.name, got.Unsummarized); msg != "" {
		j.parentAlert(ctx, *rec, session.SeverityWarning, FailureSummaryUnknown, about{m.ID, mb.dir}, msg)
	}
	if err := j.walCovered(ctx, mb.inst, rp.Timeline, rp.StartLSN, rp.StopLSN, mb.gi.WALSegmentSize); err != nil {
		return err
	}
	if err := fillImage(rp, img, folder, mb.inst, base); err != nil {
		return err
	}
	octx, cancel := j.op(ctx)
	defer cancel()
	if err := repository.WriteManifest(octx, fencedRepo{j.cfg.Repository, j}, mb.inst, rp, j.auth()); err != nil {
		return err
	}
	mb.committed = true
	return nil
}

// image snapshots the machine and exports the image under the restore
// point's folder, calling endBackup as early as the image allows: right
// after a Fixed snapshot, else once the export is done. The export may take
// as long as the image needs while its progress moves.
func (j *Job) image(ctx context.Context, folder string, m Machine, dataDir string, base *hypervisor.Image,
	endBackup func() error) (hypervisor.Image, error) {
	opts := hypervisor.SnapshotOptions{Quiesce: j.cfg.Quiesce, DataDir: dataDir, Base: base}
	octx, cancel := j.op(ctx)
	snap, err := j.cfg.Hypervisor.Snapshot(octx, m.ID, opts)
	if errors.Is(err, hypervisor.ErrUnsupported) && opts.Quiesce {
		j.cfg.Logger.Info("the guest cannot be quiesced; the image is crash-consistent, which backup mode makes recoverable", "machine", m.ID)
		opts.Quiesce = false
		snap, err = j.cfg.Hypervisor.Snapshot(octx, m.ID, opts)
	}
	cancel()
	if err != nil {
		return hypervisor.Image{}, fmt.Errorf("snapshot: %w", err)
	}
	defer func() {
		octx, cancel := j.op(context.WithoutCancel(ctx))
		defer cancel()
		if err := snap.Release(octx); err != nil {
			j.cfg.Logger.Warn("release snapshot", "machine", m.ID, "err", err)
		}
	}()
	fixed, _ := snap.(hypervisor.Fixed)
	early := fixed != nil && fixed.Fixed()
	if early {
		if err := endBackup(); err != nil {
			return hypervisor.Image{}, err
		}
	}
	wctx, w, stop := watch(ctx, j.cfg.Clock, j.cfg.OperationTimeout)
	defer stop()
	img, err := snap.Export(wctx, watchedRepo{j.cfg.Repository, w}, folder, func(p hypervisor.Progress) {
		w.kick()
		j.cfg.Progress(Event{Kind: EventProgress, Machine: m.ID, Instance: dataDir, Message: "image export", Bytes: p.Done, Total: p.Total})
	})
	if err != nil {
		return hypervisor.Image{}, fmt.Errorf("export image: %w", explain(wctx, err))
	}
	if !early {
		if err := endBackup(); err != nil {
			return hypervisor.Image{}, err
		}
	}
	return img, nil
}

// newestRestorePoint returns the newest committed restore point of inst,
// or nil when there is none.
func (j *Job) newestRestorePoint(ctx context.Context, inst repository.Instance) (*repository.Manifest, error) {
	octx, cancel := j.op(ctx)
	defer cancel()
	ids, err := repository.RestorePointIDs(octx, j.cfg.Repository, inst)
	if err != nil {
		return nil, err
	}
	for i := len(ids) - 1; i >= 0; i-- {
		m, err := repository.ReadManifest(octx, j.cfg.Repository, inst, ids[i], j.auth())
		if !errors.Is(err, repository.ErrAbandoned) {
			return m, err
		}
	}
	return nil, nil
}

// incrementalBase is the restore point the next image may build on: the
// newest one, unless its chain already holds FullImageEvery incremental
// images (then nil: a full image).
func (j *Job) incrementalBase(ctx context.Context, inst repository.Instance) (*repository.Manifest, error) {
	base, err := j.newestRestorePoint(ctx, inst)
	if err != nil || base == nil || j.cfg.FullImageEvery < 0 {
		return base, err
	}
	octx, cancel := j.op(ctx)
	defer cancel()
	ms, _, err := ImageChain(octx, j.cfg.Repository, inst, base.ID, j.auth())
	if err != nil {
		j.cfg.Logger.Warn("the newest restore point's chain is broken; taking a full image", "restore_point", base.ID, "err", err)
		return nil, nil
	}
	if len(ms)-1 >= j.cfg.FullImageEvery {
		return nil, nil
	}
	return base, nil
}

// ship runs ShipOnce on rt under a watchdog, on the path the child
// would take: directly when the mode allows it and the guest reaches the
// repository.
func (j *Job) ship(ctx context.Context, m Machine, rt guest.Runtime, inst repository.Instance) (Shipped, error) {
	d, why := j.reachable(ctx, m, rt)
	if d == nil && j.cfg.Shipping.Mode == ShipDirect {
		return Shipped{}, fmt.Errorf("shipping mode direct, and %s", why)
	}
	wctx, w, cancel := watch(ctx, j.cfg.Clock, j.cfg.OperationTimeout)
	defer cancel()
	opts := ShipOptions{Key: j.cfg.Key, Time: j.cfg.Clock.Now(), BundleBytes: j.cfg.Shipping.HostBundleBytes, Clock: j.cfg.Clock, tap: j.cfg.summaryFilter}
	if d != nil {
		d.Guest = watchedDirect{d.Guest, w}
		opts.Direct = d
	}
	got, err := ShipOnce(wctx, watchedRuntime{rt, w}, fencedRepo{watchedRepo{j.cfg.Repository, w}, j}, inst, opts)
	return got, explain(wctx, err)
}

// walCovered checks that every segment from the one holding start to the
// one holding the last byte before stop is in the repository.
func (j *Job) walCovered(ctx context.Context, inst repository.Instance, tli uint32, start, stop wal.LSN, segSize int64) error {
	if segSize <= 0 {
		return fmt.Errorf("unknown wal segment size")
	}
	octx, cancel := j.op(ctx)
	refs, err := repository.Bundles(octx, j.cfg.Repository, inst, tli)
	cancel()
	if err != nil {
		return err
	}
	last := wal.SegmentAt(tli, max(stop, start+1)-1, segSize)
	for f := wal.SegmentAt(tli, start, segSize); f.String() <= last.String(); f = f.Next(segSize) {
		if len(repository.Covering(refs, f.String())) == 0 {
			return fmt.Errorf("wal segment %s, needed from the backup's start %s to its stop %s, is not in the repository", f, start, stop)
		}
	}
	return nil
}

// deleteUncommitted removes what an uncommitted restore point left behind.
func (j *Job) deleteUncommitted(ctx context.Context, inst repository.Instance, id string) {
	octx, cancel := j.op(ctx)
	defer cancel()
	// The manifest first: a commit whose answer was lost goes before the
	// objects it names. A tombstone there stays: an expiry took the name so
	// that nothing commits under it.
	manifest := inst.ManifestName(id)
	var err error
	if _, rerr := repository.ReadManifest(octx, j.cfg.Repository, inst, id, nil); !errors.Is(rerr, repository.ErrAbandoned) {
		err = j.cfg.Repository.Delete(octx, manifest)
	}
	if err == nil {
		err = j.deletePrefix(octx, j.cfg.Repository, inst.RestorePoint(id)+"/", manifest)
	}
	if err != nil {
		j.cfg.Logger.Warn("delete the objects of an uncommitted restore point; expiry removes them later", "restore_point", id, "err", err)
	}
}

// deleteFolder removes the objects of a shared image no restore point
// committed.
func (j *Job) deleteFolder(ctx context.Context, folder string) {
	octx, cancel := j.op(ctx)
	defer cancel()
	if err := j.deletePrefix(octx, j.cfg.Repository, folder); err != nil {
		j.cfg.Logger.Warn("delete the objects of an unused shared image; expiry removes them later", "folder", folder, "err", err)
	}
}

// imageOf is the hypervisor's view of a committed restore point.
func imageOf(m *repository.Manifest, inst repository.Instance) *hypervisor.Image {
	prefix := inst.ImagePrefix(m)
	img := &hypervisor.Image{Machine: m.Machine, Taken: m.StartTime, Full: m.Full, Prefix: prefix, Meta: m.Meta}
	if !m.Full {
		// A shared image builds on a shared image (ImageChain checks).
		img.Base = inst.ImagePrefix(&repository.Manifest{ID: m.Base, SharedImage: m.SharedImage})
	}
	for _, o := range m.Objects {
		img.Objects = append(img.Objects, hypervisor.ImageObject{Name: prefix + "/" + o.Name, Size: o.Size, SHA256: o.SHA256})
	}
	return img
}

// fillImage records the image exported to folder in the manifest: object
// names relative to it, and the base by restore point id.
func fillImage(rp *repository.Manifest, img hypervisor.Image, folder string, inst repository.Instance, base *repository.Manifest) error {
	prefix := folder + "/"
	for _, o := range img.Objects {
		rel, ok := strings.CutPrefix(o.Name, prefix)
		if !ok {
			return fmt.Errorf("image object %s is outside the restore point's folder %s", o.Name, prefix)
		}
		rp.Objects = append(rp.Objects, repository.ManifestObject{Name: rel, Size: o.Size, SHA256: o.SHA256})
	}
	rp.Full, rp.Meta = img.Full, img.Meta
	if !img.Full {
		if base == nil || img.Base != inst.ImagePrefix(base) {
			return fmt.Errorf("incremental image builds on %q, not on the newest restore point", img.Base)
		}
		rp.Base = base.ID
	}
	return nil
}
