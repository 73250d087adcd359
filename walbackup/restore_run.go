package walbackup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/wal"
)

// ErrNoRecovery: the guest's runtime cannot start a recovery.
var ErrNoRecovery = errors.New("runtime cannot run a recovery")

// ErrTargetExists: the restore's target exists (an instance in place) and
// Force was not set; nothing was changed.
var ErrTargetExists = errors.New("restore target exists")

// RestoreTo says where a restore puts the instance and how it starts.
type RestoreTo struct {
	// Image is where the hypervisor writes the restored image: a new
	// directory for physical images (on the host running pglogship), a new
	// qcow2 file for QEMU. It must not exist: nothing is overwritten.
	Image string
	// Guest is the machine whose runtime starts PostgreSQL in recovery
	// (deployed like the job's machines). An empty ID restores the image
	// only, for a host program that must first boot a VM from it; it then
	// calls Recover.
	Guest Machine
	// Recovery is how the guest starts the restored instance.
	Recovery RecoveryOptions
	// Force restores in place over an existing Image: the server running
	// on it is stopped (through Guest) and the existing directory or file
	// is moved aside to Image + ".replaced-<time>", kept, never deleted,
	// as is every existing tablespace directory the restore writes; the
	// tablespaces go back to their original locations. Without it an
	// existing Image or tablespace directory is ErrTargetExists.
	Force bool
	// Tablespaces says where a physical image's tablespaces are restored,
	// like pg_basebackup's --tablespace-mapping: the key is a tablespace's
	// OID ("16436") or its original location, the value a new absolute
	// directory. A tablespace not named goes to its original location with
	// Force, and otherwise beside Image (hypervisor.DefaultTablespaceDir:
	// Image + ".tablespaces/<oid>"), never where the original is, so a
	// restore beside a running original cannot touch its files. A key that
	// names no tablespace of the restore point is ErrTablespace. Images that
	// keep tablespaces where they were (QEMU disks) take no mapping.
	Tablespaces map[string]string
}

// recovery is Recovery with its data directory defaulting to Image, where
// a physical image is restored.
func (to RestoreTo) recovery() RecoveryOptions {
	opts := to.Recovery
	if opts.DataDir == "" {
		opts.DataDir = to.Image
	}
	return opts
}

// recoveryOf is recovery for a restore that placed tablespaces in placed
// (by OID): the only ones the guest hands over.
func (to RestoreTo) recoveryOf(placed map[uint32]string) RecoveryOptions {
	opts := to.recovery()
	if len(placed) > 0 {
		opts.Tablespaces = maps.Clone(placed)
	}
	return opts
}

// RecoveryOptions say how the restored instance starts.
type RecoveryOptions struct {
	// DataDir is the restored data directory as the guest sees it; empty
	// means RestoreTo.Image (a physical image on this same host).
	DataDir string
	// Port and SocketDir are where the restored server listens, so it can
	// run beside the original; zero values keep its configuration.
	Port      int
	SocketDir string
	// ConfigFile is postgresql.conf where it lives outside the data
	// directory (Debian: /etc/postgresql/<version>/<cluster>/postgresql.conf).
	ConfigFile string
	// OSUser runs PostgreSQL when the guest's runtime runs as root;
	// empty: the data directory's owner.
	OSUser string
	// BinDir holds pg_ctl; empty: found from the data directory's version.
	BinDir string
	// Prefetch is how many segments are fetched ahead of recovery;
	// 0: guest.DefaultPrefetch.
	Prefetch int
	// TablespaceMap writes the restore point's tablespace_map, for images
	// that keep tablespaces where they were (QEMU disks). Physical images
	// link pg_tblspc/<oid> to the directories they restored the
	// tablespaces into and must not get it: recovery would point the links
	// back at the original locations.
	TablespaceMap bool
	// Tablespaces are the directories the restore placed a physical
	// image's tablespaces in, by OID (Restore and Drill fill it with where
	// they put them). A runtime running as root refuses a link in
	// pg_tblspc to anywhere else (guest.RecoveryConfig.Tablespaces); with
	// TablespaceMap, the map's paths are allowed as well.
	Tablespaces map[uint32]string
	// Archive keeps archive_mode as configured, for a restore in place
	// that goes on being protected; by default the restored instance does
	// not archive, so its WAL never mixes with the original's.
	Archive bool
	// Settings are more postgresql.conf settings for the restored server.
	Settings map[string]string
}

// RestoreResult is what a restore did.
type RestoreResult struct {
	Plan     *Plan
	Recovery guest.RecoveryResult
	Took     time.Duration // on the job's clock
}

// Restore plans a restore (refusing a target outside the restorable
// interval before anything is written), holds what the plan reads against
// expiry until it returns (Job.Hold), writes the image chain through the
// hypervisor, and, when to.Guest is set, starts PostgreSQL there in
// recovery up to the target and waits until it has promoted. A restore
// that fails after writing removes what it wrote; one whose recovery
// fails leaves the restored directories moved aside to
// <path>.failed-<time> for inspection, and with Force moves back what it
// replaced. The error says which.
func (j *Job) Restore(ctx context.Context, req RestoreRequest, to RestoreTo) (RestoreResult, error) {
	plan, err := j.Plan(ctx, req)
	if err != nil {
		return RestoreResult{}, err
	}
	rr := j.recordRestore(ctx, plan, "restore into "+to.Image)
	res, err := j.restore(ctx, plan, to)
	rr.end(ctx, err, "restored into "+to.Image, res.Recovery)
	return res, err
}

// restore is Restore of plan.
func (j *Job) restore(ctx context.Context, plan *Plan, to RestoreTo) (RestoreResult, error) {
	start := j.cfg.Clock.Now()
	res := RestoreResult{Plan: plan}
	if to.Image == "" {
		return res, errors.New("restore: no target image path")
	}
	if to.Guest.ID != "" {
		if err := j.checkGuestRelease(ctx, plan, to.Guest, to.Recovery.BinDir, nil); err != nil {
			return res, err
		}
	}
	hold, err := j.Hold(ctx, plan, "restore")
	if err != nil {
		return res, err
	}
	defer hold.Release(ctx)
	spaces, err := j.placeTablespaces(plan, to)
	if err != nil {
		return res, err
	}
	stamp := start.UTC().Format("20060102T150405Z")
	replaced, err := j.makeRoom(ctx, to, spaces, stamp)
	if err != nil {
		return res, err
	}
	placed, err := j.restoreImage(ctx, plan, to.Image, spaces, nil)
	if err != nil {
		if berr := moveBack(replaced); berr != nil {
			return res, errors.Join(err, fmt.Errorf("restore in place: %w", berr))
		}
		return res, err
	}
	if to.Guest.ID != "" {
		if res.Recovery, err = j.Recover(ctx, plan, to.Guest, to.recoveryOf(placed)); err != nil {
			return res, errors.Join(err, j.keepFailed(to, spaces, replaced, stamp))
		}
	}
	res.Took = j.cfg.Clock.Now().Sub(start)
	return res, nil
}

// placeTablespaces decides where a physical image's tablespaces go (nil
// for a hypervisor whose images keep them where they were).
func (j *Job) placeTablespaces(plan *Plan, to RestoreTo) ([]placedTablespace, error) {
	if _, ok := j.cfg.Hypervisor.(hypervisor.TablespaceRestorer); !ok {
		if len(to.Tablespaces) > 0 {
			return nil, fmt.Errorf("restore: %w: this hypervisor's images keep tablespaces where they were", ErrTablespace)
		}
		return nil, nil
	}
	return tablespaceDirs(to, plan.RestorePoint.TablespaceMap)
}

// makeRoom checks the restore's destinations: none may exist, or, with
// Force, the server running on Image is stopped and every one that exists
// is moved aside to <path>.replaced-<stamp>. It returns what it moved.
func (j *Job) makeRoom(ctx context.Context, to RestoreTo, spaces []placedTablespace, stamp string) (map[string]string, error) {
	paths := []string{to.Image}
	for _, ts := range spaces {
		paths = append(paths, ts.Dir)
	}
	var existing []string
	for i, p := range paths {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("restore to %s: %w", p, err)
		}
		if i > 0 && to.Force && spaces[i-1].Original {
			if err := checkReplaced(to.Image, spaces[i-1]); err != nil {
				return nil, fmt.Errorf("restore in place: %w", err)
			}
		}
		existing = append(existing, p)
	}
	if len(existing) == 0 {
		return nil, nil
	}
	if !to.Force {
		return nil, fmt.Errorf("restore to %s: %w: an instance is never overwritten unless the restore is forced", strings.Join(existing, ", "), ErrTargetExists)
	}
	if existing[0] == to.Image && to.Guest.ID != "" {
		if err := j.stopServer(ctx, to); err != nil {
			return nil, err
		}
	}
	moved, err := moveAside(existing, ".replaced-"+stamp)
	if err != nil {
		return nil, fmt.Errorf("restore in place: %w (a mount point cannot be moved: map its tablespace elsewhere with RestoreTo.Tablespaces)", err)
	}
	for orig, aside := range moved {
		j.cfg.Logger.Info("restore in place: what it replaces was moved aside", "path", orig, "aside", aside)
	}
	return moved, nil
}

// stopServer stops the server running on the in-place restore's data
// directory.
func (j *Job) stopServer(ctx context.Context, to RestoreTo) error {
	dataDir := to.recovery().DataDir
	rt, err := j.deployFor(ctx, to.Guest)
	if err != nil {
		return err
	}
	defer j.closeRuntime(ctx, rt, to.Guest)
	ctl, ok := rt.(guest.ServerControl)
	if !ok {
		return fmt.Errorf("restore in place on %s: %w: it cannot stop the running server", to.Guest.ID, ErrNoRecovery)
	}
	octx, cancel := j.op(ctx)
	defer cancel()
	if err := ctl.StopServer(octx, dataDir); err != nil {
		return fmt.Errorf("restore in place: stop the server on %s: %w", dataDir, err)
	}
	return nil
}

// keepFailed moves what a restore whose recovery failed wrote aside to
// <path>.failed-<stamp>, and what it replaced back; the error says where
// things are.
func (j *Job) keepFailed(to RestoreTo, spaces []placedTablespace, replaced map[string]string, stamp string) error {
	if _, err := os.Lstat(filepath.Join(to.Image, "postmaster.pid")); err == nil {
		// A server still runs on it (or left its pid file): moving the
		// directory under it would be worse than leaving it.
		return fmt.Errorf("the restored instance is left in place at %s: a postmaster.pid is in it", to.Image)
	}
	paths := []string{to.Image}
	for _, ts := range spaces {
		paths = append(paths, ts.Dir)
	}
	failed, err := moveAside(paths, ".failed-"+stamp)
	if err != nil {
		return fmt.Errorf("the restored instance is left in place at %s: %w", to.Image, err)
	}
	var where []string
	for _, p := range paths {
		if aside, ok := failed[p]; ok {
			where = append(where, aside)
		}
	}
	msg := "what the restore wrote was moved aside to " + strings.Join(where, ", ")
	j.cfg.Logger.Warn("restore failed: what it wrote was moved aside", "paths", where)
	if len(replaced) == 0 {
		return errors.New(msg)
	}
	if err := moveBack(replaced); err != nil {
		return fmt.Errorf("%s; what it replaced is still aside: %w", msg, err)
	}
	return fmt.Errorf("%s; what it replaced is back in place (its server is not started)", msg)
}

// RestoreImage writes a plan's image chain to target through the
// hypervisor, verifying every object it reads. A physical image's
// tablespaces go beside target (hypervisor.DefaultTablespaceDir). It holds
// nothing against expiry: the caller holds the plan (Job.Hold).
func (j *Job) RestoreImage(ctx context.Context, plan *Plan, target string, progress func(hypervisor.Progress)) error {
	_, err := j.restoreImage(ctx, plan, target, nil, progress)
	return err
}

// restoreImage is RestoreImage with the tablespaces at spaces' places
// (with a TablespaceRestorer); it returns where each one went.
func (j *Job) restoreImage(ctx context.Context, plan *Plan, target string, spaces []placedTablespace, progress func(hypervisor.Progress)) (map[uint32]string, error) {
	if target == "" {
		return nil, errors.New("restore image: no target")
	}
	wctx, src, kick, cancel := j.imageReader(ctx, plan, "image restore", progress)
	defer cancel()
	var placed map[uint32]string
	var err error
	if tr, ok := j.cfg.Hypervisor.(hypervisor.TablespaceRestorer); ok {
		opts := hypervisor.RestoreOptions{Tablespaces: map[uint32]string{}, Progress: kick}
		for _, ts := range spaces {
			opts.Tablespaces[ts.OID] = ts.Dir
		}
		placed, err = tr.RestoreTablespaces(wctx, plan.Chain, src, target, opts)
	} else {
		err = j.cfg.Hypervisor.Restore(wctx, plan.Chain, src, target, kick)
	}
	if err != nil {
		return nil, fmt.Errorf("restore image of restore point %s to %s: %w", plan.RestorePoint.ID, target, explain(wctx, err))
	}
	return placed, nil
}

// imageReader is how a restore reads plan's images: through the
// repository under the operation timeout, which progress (reported to
// Config.Progress as what, and to progress when set) keeps alive.
func (j *Job) imageReader(ctx context.Context, plan *Plan, what string, progress func(hypervisor.Progress)) (context.Context, hypervisor.ObjectGetter,
	func(hypervisor.Progress), context.CancelFunc) {
	wctx, w, cancel := watch(ctx, j.cfg.Clock, j.cfg.OperationTimeout)
	kick := func(p hypervisor.Progress) {
		w.kick()
		j.cfg.Progress(Event{Kind: EventProgress, Machine: plan.Instance.Machine, Instance: plan.RestorePoint.DataDir, Message: what,
			Bytes: p.Done, Total: p.Total})
		if progress != nil {
			progress(p)
		}
	}
	return wctx, watchedRepo{j.cfg.Repository, w}, kick, cancel
}

// Recover starts the restored data directory in the guest in recovery up
// to the plan's target, with the restore point's backup_label, fetching
// WAL from the repository as recovery asks for it, and waits until the
// server has promoted. The server keeps running afterwards. Like
// RestoreImage, it expects the caller to hold the plan (Job.Hold).
func (j *Job) Recover(ctx context.Context, plan *Plan, g Machine, opts RecoveryOptions) (guest.RecoveryResult, error) {
	rt, err := j.deployFor(ctx, g)
	if err != nil {
		return guest.RecoveryResult{}, err
	}
	defer j.closeRuntime(ctx, rt, g)
	return j.recoverWith(ctx, rt, plan, g, opts)
}

func (j *Job) deployFor(ctx context.Context, g Machine) (guest.Runtime, error) {
	octx, cancel := j.op(ctx)
	defer cancel()
	rt, err := j.cfg.Guests.Deploy(octx, guest.Target{Machine: g.ID, Address: g.Address})
	if err != nil {
		return nil, fmt.Errorf("deploy runtime on %s: %w", g.ID, err)
	}
	return rt, nil
}

func (j *Job) closeRuntime(ctx context.Context, rt guest.Runtime, g Machine) {
	octx, cancel := j.op(context.WithoutCancel(ctx))
	defer cancel()
	if err := rt.Close(octx); err != nil {
		j.cfg.Logger.Warn("uninstall the runtime after a restore", "machine", g.ID, "err", err)
	}
}

func (j *Job) recoverWith(ctx context.Context, rt guest.Runtime, plan *Plan, g Machine, opts RecoveryOptions) (guest.RecoveryResult, error) {
	rec, ok := rt.(guest.Recoverer)
	if !ok {
		return guest.RecoveryResult{}, fmt.Errorf("recover on %s: %w", g.ID, ErrNoRecovery)
	}
	cfg := guest.RecoveryConfig{DataDir: opts.DataDir, BackupLabel: plan.RestorePoint.BackupLabel, OSUser: opts.OSUser,
		ConfigFile: opts.ConfigFile, BinDir: opts.BinDir, Prefetch: opts.Prefetch, Settings: recoverySettings(plan, opts),
		Tablespaces: maps.Clone(opts.Tablespaces)}
	if opts.TablespaceMap {
		// The tablespaces stayed where they were (a QEMU disk): the map's
		// paths are the restore's own.
		cfg.TablespaceMap = plan.RestorePoint.TablespaceMap
		spaces, err := ParseTablespaceMap(cfg.TablespaceMap)
		if err != nil {
			return guest.RecoveryResult{}, fmt.Errorf("recover restore point %s: %w", plan.RestorePoint.ID, err)
		}
		for _, ts := range spaces {
			if cfg.Tablespaces == nil {
				cfg.Tablespaces = map[uint32]string{}
			}
			cfg.Tablespaces[ts.OID] = ts.Path
		}
	}
	res, err := rec.Recover(ctx, cfg, j.FetchFunc(plan.Instance))
	if err != nil {
		return res, fmt.Errorf("recover restore point %s on %s to %s: %w", plan.RestorePoint.ID, g.ID, plan.Target, err)
	}
	return res, nil
}

// FetchFunc returns what a guest's recovery calls for each WAL file it
// needs: FetchWAL from the repository, with guest.ErrNoSuchWAL for a file
// the repository does not hold.
func (j *Job) FetchFunc(inst repository.Instance) guest.FetchFunc {
	x := newWALIndex(j.cfg.Repository, inst, j.cfg.Key) // one listing and index read per bundle, not per file
	return func(ctx context.Context, name string, w io.Writer) error {
		cw := &countingWriter{w: w}
		var dst io.Writer = cw
		if zr, ok := w.(guest.ZstdReceiver); ok {
			dst = countingZstd{cw, zr} // keeps the receiver's compressed path
		}
		err := x.fetch(ctx, name, dst)
		if errors.Is(err, repository.ErrNotFound) {
			return fmt.Errorf("%w: %w", guest.ErrNoSuchWAL, err)
		}
		if err == nil {
			j.cfg.Progress(Event{Kind: EventWALFetched, Machine: inst.Machine, Message: name, Bytes: cw.n, Files: 1})
		}
		return err
	}
}

// recoverySettings are the plan's recovery settings plus where the server
// listens and whether it archives.
func recoverySettings(plan *Plan, opts RecoveryOptions) map[string]string {
	s := maps.Clone(plan.Settings)
	for k, v := range opts.Settings {
		s[k] = v
	}
	if opts.Port != 0 {
		s["port"] = strconv.Itoa(opts.Port)
	}
	if opts.SocketDir != "" {
		s["unix_socket_directories"] = opts.SocketDir
	}
	if !opts.Archive {
		s["archive_mode"] = "off"
	}
	return s
}

// DrillRequest says which restore point a restore drill proves, and where
// it may work.
type DrillRequest struct {
	Machine  string
	SystemID uint64 // 0: the cluster with the newest restore point
	DataDir  string // picks the instance by its data directory instead (RestoreRequest.DataDir)
	// RestorePoint is the restore point to prove; empty: the newest.
	RestorePoint string
	// Scratch is where the drill restores and starts the instance: a new
	// Image path, the Guest that starts it (the recovered server must be
	// able to use Image there: physical images on this host), and how it
	// listens (a Port and SocketDir beside the original).
	Scratch RestoreTo
	// SQL are statements that must succeed in the restored instance
	// (database postgres).
	SQL []string
}

// DrillResult is what a drill found. It is also stored with the restore
// point (docs/repository-format.md).
type DrillResult struct {
	RestorePoint string        `json:"restore_point"`
	Time         time.Time     `json:"time"`
	Passed       bool          `json:"passed"`
	Timeline     uint32        `json:"timeline"`
	LSN          wal.LSN       `json:"lsn"`
	Databases    []string      `json:"databases"`
	Failures     []string      `json:"failures,omitempty"`
	Took         time.Duration `json:"took"`
}

// Drill proves a restore point: holding it against expiry (Job.Hold), it
// restores it, with only the WAL it needs to be consistent, into Scratch, starts it, checks that PostgreSQL
// answers, that every database connects and that the SQL runs, records the
// result with the restore point, then stops the instance and removes
// Scratch.Image. The error is for a drill that could not run; a restore
// point that fails the checks gives a result with Passed false.
func (j *Job) Drill(ctx context.Context, req DrillRequest) (res DrillResult, err error) {
	start := j.cfg.Clock.Now()
	res = DrillResult{Time: start}
	if req.Scratch.Image == "" || req.Scratch.Guest.ID == "" {
		return res, errors.New("drill: the scratch image path and the guest that starts it are required")
	}
	plan, err := j.Plan(ctx, RestoreRequest{Machine: req.Machine, SystemID: req.SystemID, DataDir: req.DataDir, Target: Consistent(),
		RestorePoint: req.RestorePoint})
	if err != nil {
		return res, err
	}
	defer func() { // also a drill that failed before its checks
		j.cfg.Observer(Event{Kind: EventDrill, Machine: plan.Instance.Machine, Instance: j.instanceOf(plan.Instance.Machine, plan.RestorePoint.DataDir),
			RestorePoint: plan.RestorePoint.ID, Passed: err == nil && res.Passed})
	}()
	res.RestorePoint = plan.RestorePoint.ID
	rr := j.recordRestore(ctx, plan, "drill on "+req.Scratch.Guest.ID)
	defer func() {
		failed := err
		if failed == nil && !res.Passed {
			failed = fmt.Errorf("the drill failed: %s", strings.Join(res.Failures, "; "))
		}
		rr.end(ctx, failed, "the drill passed", guest.RecoveryResult{LSN: res.LSN})
	}()
	if err := j.checkGuestRelease(ctx, plan, req.Scratch.Guest, req.Scratch.Recovery.BinDir, nil); err != nil {
		return res, err
	}
	hold, err := j.Hold(ctx, plan, "drill")
	if err != nil {
		return res, err
	}
	defer hold.Release(ctx)
	scratch := req.Scratch
	scratch.Force = false // a drill never replaces anything
	spaces, err := j.placeTablespaces(plan, scratch)
	if err != nil {
		return res, err
	}
	if _, err := j.makeRoom(ctx, scratch, spaces, ""); err != nil {
		return res, fmt.Errorf("drill: %w", err)
	}
	placed, err := j.restoreImage(ctx, plan, scratch.Image, spaces, nil)
	if err != nil {
		res.Failures = append(res.Failures, err.Error())
		return res, j.recordDrill(ctx, plan, &res, start)
	}
	defer j.removeScratch(scratch.Image, placed, "drill")
	rt, err := j.deployFor(ctx, req.Scratch.Guest)
	if err != nil {
		return res, err
	}
	defer j.closeRuntime(ctx, rt, req.Scratch.Guest)
	opts := req.Scratch.recoveryOf(placed)
	ctl, ok := rt.(guest.ServerControl)
	if !ok {
		return res, fmt.Errorf("drill on %s: %w: it cannot check a server", req.Scratch.Guest.ID, ErrNoRecovery)
	}
	defer func() {
		octx, cancel := j.op(context.WithoutCancel(ctx))
		defer cancel()
		if err := ctl.StopServer(octx, opts.DataDir); err != nil {
			j.cfg.Logger.Warn("stop the drill's server", "dir", opts.DataDir, "err", err)
		}
	}()
	rec, err := j.recoverWith(ctx, rt, plan, req.Scratch.Guest, opts)
	if err != nil {
		res.Failures = append(res.Failures, err.Error())
		return res, j.recordDrill(ctx, plan, &res, start)
	}
	res.Timeline, res.LSN = rec.Timeline, rec.LSN
	octx, cancel := j.op(ctx)
	check, err := ctl.CheckServer(octx, guest.CheckConfig{SocketDir: opts.SocketDir, Port: opts.Port, SQL: req.SQL})
	cancel()
	if err != nil {
		return res, fmt.Errorf("drill on %s: check the server: %w", req.Scratch.Guest.ID, err)
	}
	res.Databases, res.Failures = check.Databases, append(res.Failures, check.Failures...)
	return res, j.recordDrill(ctx, plan, &res, start)
}

// recordDrill stores a drill's result with its restore point.
func (j *Job) recordDrill(ctx context.Context, plan *Plan, res *DrillResult, start time.Time) error {
	res.Passed = len(res.Failures) == 0
	res.Took = j.cfg.Clock.Now().Sub(start)
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	name := plan.Instance.RestorePoint(plan.RestorePoint.ID) + "/drills/" + res.Time.UTC().Format("20060102T150405.000000Z") + ".json"
	octx, cancel := j.op(ctx)
	defer cancel()
	if err := j.cfg.Repository.Put(octx, name, bytes.NewReader(b)); err != nil {
		return fmt.Errorf("record the drill of restore point %s: %w", plan.RestorePoint.ID, err)
	}
	return nil
}

// removeScratch removes a scratch image a drill or an export restored,
// with the tablespaces it placed.
func (j *Job) removeScratch(image string, placed map[uint32]string, what string) {
	paths := []string{image}
	for _, dir := range placed {
		paths = append(paths, dir)
	}
	for _, p := range paths {
		if err := os.RemoveAll(p); err != nil {
			j.cfg.Logger.Warn("remove the "+what+"'s scratch image", "path", p, "err", err)
		}
	}
	// The default tablespaces' container, once empty (never what it did
	// not make).
	os.Remove(filepath.Dir(hypervisor.DefaultTablespaceDir(image, 0)))
}

// checkGuestRelease refuses to restore plan onto guest g when its
// PostgreSQL binaries (in binDir, or found by release) are not of the
// restore point's major release (guest.ErrReleaseMismatch), before anything
// is written. It asks rt, or a runtime it deploys on g. A restore point
// that does not record its release, or a runtime that cannot tell, passes:
// the recovery checks the release again before it starts the server.
func (j *Job) checkGuestRelease(ctx context.Context, plan *Plan, g Machine, binDir string, rt guest.Runtime) error {
	v := plan.RestorePoint.ServerVersion
	if v == 0 {
		return nil
	}
	if rt == nil {
		var err error
		if rt, err = j.deployFor(ctx, g); err != nil {
			return err
		}
		defer j.closeRuntime(ctx, rt, g)
	}
	rc, ok := rt.(guest.ReleaseChecker)
	if !ok {
		return nil
	}
	octx, cancel := j.op(ctx)
	defer cancel()
	if err := rc.CheckRelease(octx, v/10000, binDir); err != nil {
		return fmt.Errorf("restore of PostgreSQL %d onto %s: %w", v/10000, g.ID, err)
	}
	return nil
}

// countingZstd counts the bytes a guest.ZstdReceiver is handed, raw or
// compressed.
type countingZstd struct {
	*countingWriter
	zr guest.ZstdReceiver
}

func (c countingZstd) Zstd(rawSize int64, sum checksum.Sum) io.Writer {
	return &countingWriter{w: c.zr.Zstd(rawSize, sum), total: &c.n}
}

// countingWriter counts what passes through it, for EventWALFetched;
// into total as well when set.
type countingWriter struct {
	w     io.Writer
	n     int64
	total *int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if c.total != nil {
		*c.total += int64(n)
	}
	return n, err
}
