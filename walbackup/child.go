package walbackup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/wal"
)

// childSession is the running child session and its runtimes.
type childSession struct {
	rec       session.Session
	due       time.Time // when the current interval's batch was due
	nextTick  time.Time
	nextRetry time.Time // zero when no retry is planned
	retries   int       // retries since the last interval
	machines  []*machineState
	pending   []Machine // AllInstances machines whose instances are not known yet
	warnings  int
	errors    int
}

// machineState is one instance of a machine in a child session: the
// machine's only one, or one of its Machine.Instances.
type machineState struct {
	m       Machine
	dataDir string // the instance's data directory; empty: the machine's only instance
	name    string // for messages: the machine, and the instance when it has several
	counter int    // its index in the session's Counters.Instances
	rt      guest.Runtime
	inst    repository.Instance
	segSize int64
	version int                     // server_version_num
	last    map[uint32]wal.FileName // newest segment stored, per timeline
	failing bool                    // the last ship failed; retried with backoff
	failed  int64                   // pg_stat_archiver's failed_count when last looked at
	reached bool                    // a runtime ran in this session
	direct  *Direct                 // set while the WAL ships directly

	// While shipping fails: when it started and how much WAL waited then,
	// to estimate when the guest's temporary folder fills up.
	stuckSince   time.Time
	stuckWaiting int64
}

// snapshot is the session record as the observer gets it: a copy of its
// own, which the job's later counting does not change.
func (cs *childSession) snapshot() session.Session {
	rec := cs.rec
	rec.Counters.Instances = slices.Clone(rec.Counters.Instances)
	return rec
}

// about says which instance a warning concerns: a machine, and the data
// directory of one of its instances when it has several.
type about struct{ machine, instance string }

func (ms *machineState) about() about { return about{ms.m.ID, ms.dataDir} }

// log appends an informational line to the session's log.
func (j *Job) log(ctx context.Context, cs *childSession, msg string) {
	j.alert(ctx, cs, session.SeverityInfo, "", about{}, msg)
}

// alert records a warning or an error of the session about a: in its log,
// and to the observer with what it is about (f).
func (j *Job) alert(ctx context.Context, cs *childSession, sev session.Severity, f Failure, a about, msg string) {
	octx, cancel := j.op(ctx)
	defer cancel()
	if _, err := j.sessions().Append(octx, cs.rec.ID, session.Entry{Time: j.cfg.Clock.Now(), Severity: sev, Message: msg}); err != nil {
		j.cfg.Logger.Error("append session log", "session", cs.rec.ID, "err", err)
	}
	switch sev {
	case session.SeverityWarning:
		cs.warnings++
	case session.SeverityError:
		cs.errors++
	default:
		return
	}
	j.cfg.Observer(Event{Kind: EventWarning, Session: cs.snapshot(), Machine: a.machine, Instance: a.instance, Failure: f, Message: msg})
}

// report records a machine's failure: in the session log at sev, or, on a
// retry, in the logger only (an outage does not flood the session record).
func (j *Job) report(ctx context.Context, cs *childSession, retry bool, sev session.Severity, f Failure, a about, msg string) {
	if retry {
		j.cfg.Logger.Warn(msg, "job", j.child, "session", cs.rec.ID, "retry", cs.retries)
		return
	}
	j.alert(ctx, cs, sev, f, a, msg)
}

// startChild creates a child session and deploys the runtime into every
// guest. A machine that cannot be reached is logged and retried.
func (j *Job) startChild(ctx context.Context, parentID string) *childSession {
	now := j.cfg.Clock.Now()
	octx, cancel := j.op(ctx)
	rec, err := j.sessions().Create(octx, session.Session{Job: j.child, Kind: session.KindChild, ParentID: parentID, State: session.StateStarting, Start: now})
	cancel()
	if err != nil {
		j.cfg.Logger.Error("create child session", "job", j.child, "err", err)
	}
	cs := &childSession{rec: rec, due: now, nextTick: now.Add(j.cfg.LogBackupInterval)}
	if j.run.note != "" && rec.ID != "" {
		j.log(ctx, cs, j.run.note)
	}
	for _, m := range j.cfg.Machines {
		j.addInstances(ctx, cs, m, false)
	}
	j.deployAll(ctx, cs, false)
	cs.rec.State = session.StateWorking
	j.update(ctx, cs)
	j.cfg.Observer(Event{Kind: EventSessionStarted, Session: cs.snapshot()})
	j.planRetry(cs)
	return cs
}

// addInstances adds m's instances to the session, each with its counters;
// a machine whose instances cannot be found now (AllInstances, the guest
// unreachable) is tried again with the next deploys.
func (j *Job) addInstances(ctx context.Context, cs *childSession, m Machine, retry bool) bool {
	dirs, err := j.instancesNow(ctx, m)
	if err != nil {
		j.report(ctx, cs, retry, session.SeverityWarning, FailureUnreachable, about{machine: m.ID},
			fmt.Sprintf("machine %s: %v; its WAL waits in the guest and the job keeps trying", m.ID, err))
		if !slices.ContainsFunc(cs.pending, func(p Machine) bool { return p.ID == m.ID }) {
			cs.pending = append(cs.pending, m)
		}
		return false
	}
	for _, dir := range dirs {
		if len(dir) > session.MaxNameLen || len(cs.rec.Counters.Instances) >= session.MaxInstances {
			j.alert(ctx, cs, session.SeverityError, FailureRefused, about{machine: m.ID},
				fmt.Sprintf("machine %s: instance %.80q not protected: data directories of at most %d bytes, at most %d instances per job",
					m.ID, dir, session.MaxNameLen, session.MaxInstances))
			continue
		}
		cs.machines = append(cs.machines, &machineState{m: m, dataDir: dir, name: instanceName(m.ID, dir),
			counter: len(cs.rec.Counters.Instances)})
		cs.rec.Counters.Instances = append(cs.rec.Counters.Instances, session.InstanceCounters{Machine: m.ID, DataDir: dir})
	}
	if m.AllInstances {
		j.log(ctx, cs, fmt.Sprintf("machine %s: %d PostgreSQL instances found: %s", m.ID, len(dirs), strings.Join(dirs, ", ")))
		j.warnGone(ctx, cs, m, dirs)
	}
	return true
}

// warnGone reports each instance of m with restore points whose data
// directory is not among dirs, the instances running now: its chain stays
// for retention to expire.
func (j *Job) warnGone(ctx context.Context, cs *childSession, m Machine, dirs []string) {
	octx, cancel := j.op(ctx)
	defer cancel()
	insts, err := repository.Instances(octx, j.cfg.Repository, j.cfg.Name, m.ID)
	if err != nil {
		return // the ships that follow report the repository
	}
	for _, inst := range insts {
		rps, err := repository.RestorePoints(octx, j.cfg.Repository, inst, j.auth())
		if err != nil || len(rps) == 0 {
			continue
		}
		if dir := rps[len(rps)-1].DataDir; dir != "" && !slices.Contains(dirs, dir) {
			j.alert(ctx, cs, session.SeverityWarning, FailureInstanceGone, about{m.ID, dir}, fmt.Sprintf("machine %s: instance %s (system identifier %d) no longer runs: nothing of it is shipped; its restore points and WAL are kept as retention says",
				m.ID, dir, inst.SystemID))
		}
	}
}

func (j *Job) deployAll(ctx context.Context, cs *childSession, retry bool) {
	pending := cs.pending
	cs.pending = nil
	for _, m := range pending {
		j.addInstances(ctx, cs, m, retry)
	}
	for _, ms := range cs.machines {
		if ms.rt != nil {
			continue
		}
		if err := j.deploy(ctx, cs, ms); err != nil {
			sev, f, what := session.SeverityWarning, FailureUnreachable, "unreachable, its WAL waits in the guest and the job keeps trying"
			if mustFix(err) {
				sev, f, what = session.SeverityError, FailureRefused, "refused, fix this and the job ships what waits"
			}
			j.report(ctx, cs, retry, sev, f, ms.about(), fmt.Sprintf("machine %s: %s: %v", ms.name, what, err))
			continue
		}
		ms.reached = true
		j.log(ctx, cs, fmt.Sprintf("machine %s: runtime deployed, PostgreSQL %d, system identifier %d",
			ms.name, ms.version, ms.inst.SystemID))
		j.route(ctx, cs, ms, false)
		octx, cancel := j.op(ctx)
		ids, err := repository.RestorePointIDs(octx, j.cfg.Repository, ms.inst)
		cancel()
		if err == nil && len(ids) == 0 {
			j.alert(ctx, cs, session.SeverityWarning, FailureNoRestorePoint, ms.about(), fmt.Sprintf("machine %s: no restore point in the repository yet: the WAL shipped now can be restored only once the parent job has taken an image", ms.name))
		}
	}
}

// mustFix tells a deploy error an operator must fix (a requirement not
// met, a refused host key, no runtime for the guest) from a guest that is
// only unreachable for now.
func mustFix(err error) bool {
	for _, e := range []error{ErrSameSystemID, guest.ErrHostKey, guest.ErrNoRuntime, guest.ErrPostgresTooOld, guest.ErrPostgresTooNew, guest.ErrWALLevel,
		guest.ErrArchiveModeOff, guest.ErrArchiveCommandTaken, guest.ErrTempFolder} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// deploy starts the runtime in one guest, prepares archiving and scans the
// instance; on error nothing is left running.
func (j *Job) deploy(ctx context.Context, cs *childSession, ms *machineState) error {
	octx, cancel := j.op(ctx)
	defer cancel()
	rt, err := j.cfg.Guests.Deploy(octx, guest.Target{Machine: ms.m.ID, Address: ms.m.Address, DataDir: ms.dataDir})
	if err != nil {
		return err
	}
	var inst guest.Instance
	err = rt.PrepareArchive(octx, guest.ArchiveConfig{Dir: j.walDir(ms.dataDir), Codec: j.cfg.Shipping.Compression})
	if err == nil {
		inst, err = rt.Scan(octx)
	}
	for _, o := range cs.machines {
		if err == nil && o != ms && o.m.ID == ms.m.ID && o.rt != nil && o.inst.SystemID == inst.SystemID {
			err = sameSystemID(ms.dataDir, o.dataDir, inst.SystemID)
		}
	}
	if err == nil && ms.dataDir != "" {
		var others []string
		for _, o := range cs.machines {
			if o.m.ID == ms.m.ID {
				others = append(others, o.dataDir)
			}
		}
		err = j.checkChainOwner(octx, repository.Instance{Job: j.cfg.Name, Machine: ms.m.ID, SystemID: inst.SystemID}, ms.dataDir, others)
	}
	if err != nil {
		cctx, ccancel := j.op(context.WithoutCancel(ctx))
		defer ccancel()
		if cerr := rt.Close(cctx); cerr != nil {
			j.cfg.Logger.Warn("close runtime after a failed start", "machine", ms.name, "err", cerr)
		}
		return err
	}
	ms.rt = rt
	ms.inst = repository.Instance{Job: j.cfg.Name, Machine: ms.m.ID, SystemID: inst.SystemID}
	if ms.inst.SystemID != 0 {
		cs.rec.Counters.Instances[ms.counter].SystemID = ms.inst.SystemID
	}
	ms.segSize, ms.version = inst.WALSegmentSize, inst.Version
	ms.failed = inst.Archiver.FailedCount
	ms.last = j.lastStored(octx, ms.inst, inst.Timeline)
	return nil
}

// tick is one interval: start runtimes not yet running, then ship.
func (j *Job) tick(ctx context.Context, cs *childSession) {
	cs.due = cs.nextTick
	cs.nextTick = cs.nextTick.Add(j.cfg.LogBackupInterval)
	cs.retries = 0
	j.deployAll(ctx, cs, false)
	j.shipAll(ctx, cs, cs.due, false)
	j.planRetry(cs)
}

// retry ships the machines whose last ship failed, and starts runtimes
// that could not start.
func (j *Job) retry(ctx context.Context, cs *childSession) {
	cs.retries++
	j.deployAll(ctx, cs, true)
	j.shipAll(ctx, cs, cs.due, true)
	j.planRetry(cs)
}

// planRetry schedules the next retry while a machine fails: RetryDelay
// after the interval's first attempt, doubling each time, as long as it
// comes before the next interval.
func (j *Job) planRetry(cs *childSession) {
	cs.nextRetry = time.Time{}
	if len(cs.pending) > 0 {
		if at := j.cfg.Clock.Now().Add(j.cfg.RetryDelay << min(cs.retries, 20)); at.Before(cs.nextTick) {
			cs.nextRetry = at
		}
		return
	}
	for _, ms := range cs.machines {
		if ms.rt == nil || ms.failing {
			at := j.cfg.Clock.Now().Add(j.cfg.RetryDelay << min(cs.retries, 20))
			if at.Before(cs.nextTick) {
				cs.nextRetry = at
			}
			return
		}
	}
}

// shipAll ships every machine (on a retry, only those that failed); due is
// when this batch was due, for the lag the observer sees.
func (j *Job) shipAll(ctx context.Context, cs *childSession, due time.Time, retry bool) {
	for _, ms := range cs.machines {
		if j.fencedOff.Load() {
			break // another process holds the job now
		}
		if ms.rt == nil || retry && !ms.failing {
			continue
		}
		if !retry {
			j.checkArchiver(ctx, cs, ms)
		}
		if ms.direct == nil && j.cfg.Shipping.Mode == ShipDirect {
			// Direct only: look again whether the guest reaches the
			// repository now; until it does, the WAL waits.
			if !j.route(ctx, cs, ms, retry) {
				ms.failing = true
				continue
			}
		}
		got, err := j.shipMachine(ctx, ms)
		if err != nil && ms.direct != nil && j.cfg.Shipping.Mode != ShipDirect && unreachable(err) && !j.route(ctx, cs, ms, false) {
			// The guest lost the repository (or the log shipping server):
			// the WAL falls back to the host at once, for the rest of the
			// session.
			more, merr := j.shipMachine(ctx, ms)
			got.merge(more)
			err = merr
		}
		if got.Files > 0 && err != nil && !errors.Is(err, ErrSplitBrain) {
			j.count(cs, ms, got) // verified and gone from the guest before the failure
			j.cfg.Observer(Event{Kind: EventBatchShipped, Session: cs.snapshot(), Machine: ms.m.ID, Instance: ms.dataDir, Files: got.Files,
				Bytes: got.RawBytes, Lag: j.cfg.Clock.Now().Sub(due), Direct: got.Direct, Server: viaOf(got, ms)})
			j.checkGaps(ctx, cs, ms, got.Names) // so the retry continues from these
		}
		if errors.Is(err, ErrSplitBrain) {
			// Not a reason to retry: what could ship did, the rest is
			// kept aside; an operator must look.
			j.alert(ctx, cs, session.SeverityError, FailureSplitBrain, ms.about(), fmt.Sprintf("machine %s: %v", ms.name, err))
			err = nil
		}
		if err != nil {
			ms.failing = true
			j.report(ctx, cs, retry, session.SeverityWarning, FailureShip, ms.about(),
				fmt.Sprintf("machine %s: WAL not shipped, kept in the guest (retried with backoff): %v", ms.name, err))
			if !retry {
				j.warnFilling(ctx, cs, ms)
			}
			j.replaceIfDead(ctx, cs, ms)
			continue
		}
		ms.failing, ms.stuckSince = false, time.Time{}
		if got.Files == 0 {
			j.cfg.Observer(Event{Kind: EventCaughtUp, Session: cs.snapshot(), Machine: ms.m.ID, Instance: ms.dataDir})
			if !retry {
				j.log(ctx, cs, fmt.Sprintf("machine %s: no new WAL", ms.name))
			}
			continue
		}
		j.checkGaps(ctx, cs, ms, got.Names)
		if msg := unsummarizedWarning(ms.name, got.Unsummarized); msg != "" {
			j.alert(ctx, cs, session.SeverityWarning, FailureSummaryUnknown, ms.about(), msg)
		}
		j.count(cs, ms, got)
		after := ""
		if retry {
			after = fmt.Sprintf(" on retry %d", cs.retries)
		}
		j.log(ctx, cs, fmt.Sprintf("machine %s: shipped %d files (%d bytes, %d stored) from %s to %s%s",
			ms.name, got.Files, got.RawBytes, got.StoredBytes, got.First, got.Last, after))
		j.cfg.Observer(Event{Kind: EventBatchShipped, Session: cs.snapshot(), Machine: ms.m.ID, Instance: ms.dataDir, Files: got.Files, Bytes: got.RawBytes,
			Lag: j.cfg.Clock.Now().Sub(due), Direct: got.Direct, Server: viaOf(got, ms)})
	}
	if !retry {
		for _, ms := range cs.machines {
			if ms.rt != nil && !ms.failing { // a failing one was asked by warnFilling
				j.folder(ctx, cs, ms)
			}
		}
	}
	j.update(ctx, cs)
}

// folder asks how full an instance's temporary WAL folder is, when its
// runtime can say (guest.SpaceReporter), and tells the observer; ok is
// false when it could not be read.
func (j *Job) folder(ctx context.Context, cs *childSession, ms *machineState) (sp guest.Space, ok bool) {
	sr, ok := ms.rt.(guest.SpaceReporter)
	if !ok {
		return sp, false
	}
	octx, cancel := j.op(ctx)
	sp, err := sr.FolderSpace(octx)
	cancel()
	if err != nil {
		return sp, false // the ship's own report says what is wrong with the guest
	}
	j.cfg.Observer(Event{Kind: EventFolder, Session: cs.snapshot(), Machine: ms.m.ID, Instance: ms.dataDir, Waiting: sp.Waiting, Free: sp.Free})
	return sp, true
}

// route chooses the path of a machine's WAL: from the guest when the job
// can authorise it and the guest reaches the repository (itself, when the
// mode allows it, or through the named log shipping server), else through
// the host (or, in mode direct, nowhere until it can). It says which and
// why in the session log and to the observer, and reports whether the WAL
// can ship now. quiet keeps a failed retry's warning out of the session
// log.
func (j *Job) route(ctx context.Context, cs *childSession, ms *machineState, quiet bool) bool {
	d, why := j.reachable(ctx, ms.m, ms.rt)
	was := ms.direct != nil
	ms.direct = d
	var msg string
	switch {
	case d != nil && d.Via != nil:
		msg = fmt.Sprintf("machine %s: WAL ships from the guest through log shipping server %s to the repository (shipping mode %s; the guest reaches it there)",
			ms.name, d.Via, j.cfg.Shipping.Mode)
	case d != nil:
		msg = fmt.Sprintf("machine %s: WAL ships directly from the guest to the repository (shipping mode %s; the guest reaches it)", ms.name, j.cfg.Shipping.Mode)
	case j.cfg.Shipping.Mode == ShipDirect:
		j.report(ctx, cs, quiet, session.SeverityWarning, FailureShippingPath, ms.about(),
			fmt.Sprintf("machine %s: WAL not shipped, kept in the guest: shipping mode direct, and %s", ms.name, why))
		return false
	case was:
		msg = fmt.Sprintf("machine %s: WAL ships through the host from now on (shipping mode %s): %s", ms.name, j.cfg.Shipping.Mode, why)
	default:
		msg = fmt.Sprintf("machine %s: WAL ships through the host (shipping mode %s): %s", ms.name, j.cfg.Shipping.Mode, why)
	}
	if d == nil && (was || j.cfg.Shipping.Server != nil) {
		// Lost the way around the host, or the named server is out of reach.
		j.alert(ctx, cs, session.SeverityWarning, FailureShippingPath, ms.about(), msg)
	} else {
		j.log(ctx, cs, msg)
	}
	j.cfg.Observer(Event{Kind: EventShippingPath, Session: cs.snapshot(), Machine: ms.m.ID, Instance: ms.dataDir, Direct: d != nil, Server: d.server(), Message: msg})
	return d != nil
}

// reachable returns how m's WAL ships from rt's guest without passing
// through the host, or why it cannot: directly when the mode allows it,
// else through the named log shipping server, each as directFor allows
// and as the guest's probe of the repository finds.
func (j *Job) reachable(ctx context.Context, m Machine, rt guest.Runtime) (*Direct, string) {
	sh := j.cfg.Shipping
	why := "the job ships through the host"
	if sh.Mode != ShipHost {
		d, w := j.directFor(m, rt, nil)
		if d != nil {
			if w = j.probe(ctx, d); w == "" {
				return d, ""
			}
		}
		why = w
	}
	if sh.Server == nil || sh.Mode == ShipDirect {
		return nil, why
	}
	d, w := j.directFor(m, rt, sh.Server)
	if d != nil {
		w = j.probe(ctx, d)
	}
	if w == "" {
		return d, ""
	}
	if sh.Mode == ShipHost {
		return nil, fmt.Sprintf("through log shipping server %s: %s", sh.Server, w)
	}
	return nil, fmt.Sprintf("%s; through log shipping server %s: %s", why, sh.Server, w)
}

// probe asks the guest to try d's way to the repository and says why it
// failed ("" when it works).
func (j *Job) probe(ctx context.Context, d *Direct) string {
	octx, cancel := j.op(ctx)
	defer cancel()
	if err := d.probe(octx); err != nil {
		return probeFailure(err)
	}
	return ""
}

// directFor returns how m's WAL could ship from rt's guest without
// passing through the host, itself or through the log shipping server
// via, or why it cannot.
func (j *Job) directFor(m Machine, rt guest.Runtime, via *guest.ShippingServer) (*Direct, string) {
	if j.cfg.Key != nil {
		return nil, "bundles are sealed with the job's key, which stays on the host"
	}
	g, ok := rt.(guest.DirectShipper)
	if !ok {
		return nil, "the guest's runtime cannot ship directly"
	}
	d := &Direct{Guest: g, TTL: j.cfg.Shipping.AuthorizationTTL, MaxBytes: j.cfg.Shipping.DirectBundleBytes, Clock: j.cfg.Clock, Via: via,
		fence: j.checkFence}
	if up, ok := j.cfg.Repository.(repository.DirectUploader); ok {
		d.Uploads = up
		return d, ""
	}
	if via != nil {
		if m.RepositorySFTP != nil {
			d.SFTP = m.RepositorySFTP
			return d, ""
		}
		return nil, "the repository cannot authorise uploads (S3-compatible stores can) and the machine has no SFTP access of its own to it (RepositorySFTP) to use there"
	}
	if m.RepositoryPath != "" || m.RepositorySFTP != nil {
		d.Dir, d.SFTP = m.RepositoryPath, m.RepositorySFTP
		return d, ""
	}
	return nil, "the repository cannot authorise uploads (S3-compatible stores can) and the machine has no access of its own to it (RepositoryPath, RepositorySFTP)"
}

// server names the log shipping server d ships through, if any.
func (d *Direct) server() string {
	if d == nil || d.Via == nil {
		return ""
	}
	return d.Via.String()
}

// unreachable tells a direct send that failed because the guest lost the
// repository (or its authorisation, or the server's host key changed)
// from other failures.
func unreachable(err error) bool {
	return errors.Is(err, guest.ErrUnreachable) || errors.Is(err, guest.ErrUploadDenied) || errors.Is(err, guest.ErrHostKey)
}

// shipMachine runs ShipOnce under a watchdog: it may take as long as the
// WAL needs, but is abandoned after OperationTimeout without progress.
func (j *Job) shipMachine(ctx context.Context, ms *machineState) (Shipped, error) {
	wctx, w, cancel := watch(ctx, j.cfg.Clock, j.cfg.OperationTimeout)
	defer cancel()
	opts := ShipOptions{Key: j.cfg.Key, Time: j.cfg.Clock.Now(), BundleBytes: j.cfg.Shipping.HostBundleBytes, Clock: j.cfg.Clock, tap: j.cfg.summaryFilter}
	if ms.direct != nil {
		d := *ms.direct
		d.Guest = watchedDirect{d.Guest, w}
		opts.Direct = &d
	}
	got, err := ShipOnce(wctx, watchedRuntime{ms.rt, w}, fencedRepo{watchedRepo{j.cfg.Repository, w}, j}, ms.inst, opts)
	return got, explain(wctx, err)
}

// count adds a batch to the session's counters and to its instance's.
func (j *Job) count(cs *childSession, ms *machineState, got Shipped) {
	addBatch(&cs.rec.Counters, got, ms.segSize)
	ic := &cs.rec.Counters.Instances[ms.counter]
	c := session.Counters{Files: ic.Files, Bytes: ic.Bytes, FirstSegment: ic.FirstSegment, LastSegment: ic.LastSegment,
		FirstLSN: ic.FirstLSN, LastLSN: ic.LastLSN}
	addBatch(&c, got, ms.segSize)
	ic.Files, ic.Bytes, ic.FirstSegment, ic.LastSegment, ic.FirstLSN, ic.LastLSN = c.Files, c.Bytes, c.FirstSegment, c.LastSegment,
		c.FirstLSN, c.LastLSN
}

// addBatch adds what a batch shipped to c; segSize 0 leaves the LSN range.
func addBatch(c *session.Counters, got Shipped, segSize int64) {
	c.Files += int64(got.Files)
	c.Bytes += got.RawBytes
	if c.FirstSegment == "" || got.First < c.FirstSegment {
		c.FirstSegment = got.First
	}
	if got.Last > c.LastSegment {
		c.LastSegment = got.Last
	}
	if segSize <= 0 {
		return
	}
	for _, n := range got.Names {
		f, err := wal.ParseFileName(n)
		if err != nil || f.Kind != wal.Segment {
			continue
		}
		start, end := f.StartLSN(segSize), f.Next(segSize).StartLSN(segSize)
		if c.FirstLSN == 0 || start < c.FirstLSN {
			c.FirstLSN = start
		}
		if end > c.LastLSN {
			c.LastLSN = end
		}
	}
}

func (j *Job) update(ctx context.Context, cs *childSession) {
	if cs.rec.ID == "" {
		return
	}
	octx, cancel := j.op(ctx)
	defer cancel()
	if err := j.sessions().Update(octx, cs.rec); err != nil {
		j.cfg.Logger.Error("update session", "session", cs.rec.ID, "err", err)
	}
}

// replaceIfDead asks a runtime whose ship failed for its instance; when it
// does not answer either (killed, its connection dropped) it is let go, and
// the next retry deploys a new one.
func (j *Job) replaceIfDead(ctx context.Context, cs *childSession, ms *machineState) {
	if ms.rt == nil {
		return
	}
	octx, cancel := j.op(ctx)
	_, err := ms.rt.Scan(octx)
	cancel()
	if err == nil {
		return // the runtime is fine; the repository or the file was not
	}
	j.log(ctx, cs, fmt.Sprintf("machine %s: the runtime stopped answering (%v); it is deployed again", ms.name, err))
	octx, cancel = j.op(context.WithoutCancel(ctx))
	_ = ms.rt.Close(octx) // best effort: a dead runtime may not close
	cancel()
	ms.rt, ms.direct = nil, nil // the path is chosen again with the next runtime
}

// endChild ships once more, stops and uninstalls every runtime, and closes
// the session record with its result.
func (j *Job) endChild(ctx context.Context, cs *childSession, why string) {
	j.shipAll(ctx, cs, j.cfg.Clock.Now(), false)
	for _, ms := range cs.machines {
		if !ms.reached {
			j.alert(ctx, cs, session.SeverityError, FailureUnreachable, ms.about(),
				fmt.Sprintf("machine %s: not reached during the whole session: its WAL waits in the guest", ms.name))
		}
	}
	for _, m := range cs.pending {
		j.alert(ctx, cs, session.SeverityError, FailureUnreachable, about{machine: m.ID}, fmt.Sprintf("machine %s: its instances were not found during the whole session: their WAL waits in the guest", m.ID))
	}
	j.closeRuntimes(ctx, cs)
	state := session.StateSuccess
	switch {
	case cs.errors > 0:
		state = session.StateFailed
	case cs.warnings > 0:
		state = session.StateWarning
	}
	j.finish(ctx, cs, state, why)
}

// stopChild ends the session at once, as Stopped with why, when the job's
// context has ended or its lease ran out: no last ship (the host is going
// away, or the job runs elsewhere), the runtimes are stopped within the
// operation timeout.
func (j *Job) stopChild(ctx context.Context, cs *childSession, why string) {
	ctx = context.WithoutCancel(ctx)
	j.closeRuntimes(ctx, cs)
	j.finish(ctx, cs, session.StateStopped, why)
}

func (j *Job) closeRuntimes(ctx context.Context, cs *childSession) {
	for _, ms := range cs.machines {
		if ms.rt == nil {
			continue
		}
		octx, cancel := j.op(ctx)
		if err := ms.rt.Close(octx); err != nil {
			j.alert(ctx, cs, session.SeverityWarning, FailureRuntime, ms.about(), fmt.Sprintf("machine %s: uninstall runtime: %v", ms.name, err))
		}
		cancel()
		ms.rt, ms.direct = nil, nil
	}
}

func (j *Job) finish(ctx context.Context, cs *childSession, state session.State, why string) {
	cs.rec.State, cs.rec.End, cs.rec.Result = state, j.cfg.Clock.Now(), why
	j.update(ctx, cs)
	j.cfg.Observer(Event{Kind: EventSessionEnded, Session: cs.snapshot()})
}

// lastStored finds the newest segment the repository holds for a timeline,
// so continuity is checked across sessions too.
func (j *Job) lastStored(ctx context.Context, inst repository.Instance, timeline uint32) map[uint32]wal.FileName {
	last := map[uint32]wal.FileName{}
	refs, err := repository.Bundles(ctx, j.cfg.Repository, inst, timeline)
	if err != nil {
		return last
	}
	sort.Slice(refs, func(a, b int) bool { return refs[a].Last > refs[b].Last })
	for _, r := range refs {
		if cur, ok := last[timeline]; ok && r.Last < cur.String() {
			break // newest first: nothing further on can be newer
		}
		f, err := wal.ParseFileName(r.Last)
		if err != nil {
			continue
		}
		if f.Kind != wal.Segment {
			// A .backup or .partial name ends the bundle; which segments
			// it holds, only its index says.
			if f, err = j.newestSegmentIn(ctx, r); err != nil {
				j.cfg.Logger.Warn("read a bundle's index to check continuity", "bundle", r.Object.Name, "err", err)
				continue
			}
		}
		if cur, ok := last[timeline]; f.Timeline != 0 && f.Kind == wal.Segment && (!ok || f.String() > cur.String()) {
			last[timeline] = f
		}
	}
	return last
}

// newestSegmentIn returns the newest segment a bundle holds (the zero
// name, timeline 0, when it holds none).
func (j *Job) newestSegmentIn(ctx context.Context, r repository.BundleRef) (wal.FileName, error) {
	b, err := bundle.Open(ctx, j.cfg.Repository, r.Object.Name, r.Object.Size, j.cfg.Key)
	if err != nil {
		return wal.FileName{}, err
	}
	var newest wal.FileName
	for _, e := range b.Entries() {
		if f, err := wal.ParseFileName(e.Name); err == nil && f.Kind == wal.Segment && f.String() > newest.String() {
			newest = f
		}
	}
	return newest, nil
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
				j.alert(ctx, cs, session.SeverityWarning, FailureGap, ms.about(), fmt.Sprintf("machine %s: gap in timeline %d: segments %s up to before %s are missing",
					ms.name, f.Timeline, want, f))
			}
		}
		ms.last[f.Timeline] = f
	}
}

// checkArchiver reports archive_command failures since the last look:
// PostgreSQL then keeps the WAL in pg_wal and retries, but pg_wal grows, and
// a full temporary folder is the usual cause.
func (j *Job) checkArchiver(ctx context.Context, cs *childSession, ms *machineState) {
	octx, cancel := j.op(ctx)
	inst, err := ms.rt.Scan(octx)
	cancel()
	if err != nil {
		return // the ship that follows reports an unreachable guest
	}
	a := inst.Archiver
	if a.FailedCount > ms.failed {
		sp, _ := j.folder(ctx, cs, ms) // asked only now: the message is its one use
		j.alert(ctx, cs, session.SeverityError, FailureArchiveCommand, ms.about(), fmt.Sprintf("machine %s: archive_command failed %d times since the last interval, last for %s at %s; PostgreSQL keeps that WAL in pg_wal and retries it. The temporary folder %s has %d bytes free",
			ms.name, a.FailedCount-ms.failed, a.LastFailedWAL, a.LastFailedTime.UTC().Format(time.RFC3339), j.walDir(ms.dataDir), sp.Free))
	}
	ms.failed = a.FailedCount // also when a restart reset the counters
}

// warnFilling estimates, while shipping fails, when the guest's temporary
// folder will be full at the rate WAL has been piling up; then archiving
// fails and PostgreSQL keeps WAL in pg_wal instead.
func (j *Job) warnFilling(ctx context.Context, cs *childSession, ms *machineState) {
	sp, ok := j.folder(ctx, cs, ms)
	if !ok {
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
	j.alert(ctx, cs, session.SeverityWarning, FailureFolderFilling, ms.about(), fmt.Sprintf("machine %s: WAL is piling up in the temporary folder: %d bytes waiting, %d bytes free; full in about %v at this rate",
		ms.name, sp.Waiting, sp.Free, full))
}

// viaOf names the log shipping server a batch went through, if any.
func viaOf(got Shipped, ms *machineState) string {
	if !got.Direct {
		return ""
	}
	return ms.direct.server()
}
