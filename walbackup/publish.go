package walbackup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/session"
)

// PublicationFile is the file in a publication's cache that says what it
// is, so Unpublish finds its session and server also from another process
// (after the publishing host crashed).
const PublicationFile = "publication.json"

// PublishRequest asks to run an instance straight from the backup.
type PublishRequest struct {
	// Machine, SystemID, DataDir, Target and RestorePoint pick the
	// instance and the point in time, as in RestoreRequest.
	Machine      string
	SystemID     uint64
	DataDir      string
	Target       Target
	RestorePoint string
	// Cache is a new directory on this host for everything the
	// publication makes and writes; Unpublish removes it. The backup is
	// only read.
	Cache string
	// Guest, when set, starts the published instance right away: its
	// runtime recovers the data directory the publication made (a
	// physical image) to Target, as Recovery says. Leave it empty for a
	// disk image: boot a machine from Publication.Disk, then call Recover.
	Guest    Machine
	Recovery RecoveryOptions
}

// Publication is an instance published from the backup.
type Publication struct {
	Session   string    `json:"session"` // its restore session, working while published
	Job       string    `json:"job"`
	Cache     string    `json:"cache"`
	Disk      string    `json:"disk"`     // what to boot (a disk image), or the data directory (a physical image)
	Guest     string    `json:"guest"`    // the machine that runs it, when Publish started it
	DataDir   string    `json:"data_dir"` // its data directory in Guest
	Published time.Time `json:"published"`
	// Pin holds its restore points against expiry while the publishing
	// process renews it; Unpublish removes it from any process.
	Pin string `json:"pin"`
	// Plan is what was published (not in PublicationFile).
	Plan *Plan `json:"-"`
	// Recovery is how the instance recovered, when Publish started it.
	Recovery guest.RecoveryResult `json:"-"`
}

// Publish runs an instance straight from a restore point and the shipped
// WAL, the way an operator looks into a backup without restoring it
// first. With a hypervisor.Publisher (QEMU) the image chain is fetched as
// it is stored and a copy-on-write overlay put on it (no conversion into
// one image); boot a machine from Publication.Disk and Recover it. Other
// hypervisors (physical) have no cheaper safe way than a restore into
// the cache, which the guest then recovers (req.Guest). Everything is
// written under req.Cache, the backup is only read, and its restore
// points are held against expiry until Unpublish while this process runs
// (a pin it renews; after it ends, the pin runs out within
// RestorePinTTL). The publication is a restore session, working until
// Unpublish.
func (j *Job) Publish(ctx context.Context, req PublishRequest) (*Publication, error) {
	if req.Cache == "" || !filepath.IsAbs(req.Cache) {
		return nil, fmt.Errorf("publish: the cache must be a new directory, by absolute path (got %q)", req.Cache)
	}
	plan, err := j.Plan(ctx, RestoreRequest{Machine: req.Machine, SystemID: req.SystemID, DataDir: req.DataDir, Target: req.Target,
		RestorePoint: req.RestorePoint})
	if err != nil {
		return nil, err
	}
	if req.Guest.ID != "" {
		if err := j.checkGuestRelease(ctx, plan, req.Guest, req.Recovery.BinDir, nil); err != nil {
			return nil, err
		}
	}
	rr := j.recordRestore(ctx, plan, "publish into "+req.Cache)
	pub, err := j.publish(ctx, plan, req, rr.rec.ID)
	if err != nil {
		rr.end(ctx, err, "", pub.Recovery)
		return nil, err
	}
	rr.rec.Result = "published into " + req.Cache
	rr.update(ctx)
	return pub, nil
}

func (j *Job) publish(ctx context.Context, plan *Plan, req PublishRequest, id string) (pub *Publication, err error) {
	pub = &Publication{Session: id, Job: j.cfg.Name, Cache: req.Cache, Plan: plan, Published: j.cfg.Clock.Now()}
	hold, err := j.Hold(ctx, plan, "publish")
	if err != nil {
		return pub, err
	}
	pub.Pin = hold.pin.ID
	// Others may pass through (the server's user to a data directory in
	// it), not list it.
	if err := os.Mkdir(req.Cache, 0o711); err != nil {
		hold.Release(ctx)
		return pub, fmt.Errorf("publish: %w", err)
	}
	defer func() {
		if err != nil {
			hold.Release(ctx)
			if rerr := os.RemoveAll(req.Cache); rerr != nil {
				j.cfg.Logger.Warn("remove a failed publication's cache", "cache", req.Cache, "err", rerr)
			}
		}
	}()
	if p, ok := j.cfg.Hypervisor.(hypervisor.Publisher); ok {
		wctx, src, kick, cancel := j.imageReader(ctx, plan, "image publish", nil)
		pub.Disk, err = p.Publish(wctx, plan.Chain, src, filepath.Join(req.Cache, "image"), kick)
		err = explain(wctx, err)
		cancel()
	} else {
		pub.Disk = filepath.Join(req.Cache, "data")
		var spaces []placedTablespace
		var placed map[uint32]string
		if spaces, err = j.placeTablespaces(plan, RestoreTo{Image: pub.Disk}); err == nil {
			placed, err = j.restoreImage(ctx, plan, pub.Disk, spaces, nil)
		}
		req.Recovery.Tablespaces = placed
	}
	if err != nil {
		return pub, fmt.Errorf("publish restore point %s: %w", plan.RestorePoint.ID, err)
	}
	if req.Guest.ID != "" {
		pub.Guest, pub.DataDir = req.Guest.ID, req.Recovery.DataDir
		if pub.DataDir == "" {
			pub.DataDir = pub.Disk
			req.Recovery.DataDir = pub.Disk
		}
	}
	// Written before the server starts, so an Unpublish after a crash
	// finds what to stop.
	if err := writePublication(pub); err != nil {
		return pub, err
	}
	if req.Guest.ID != "" {
		if pub.Recovery, err = j.Recover(ctx, plan, req.Guest, req.Recovery); err != nil {
			j.stopPublished(ctx, pub)
			return pub, err
		}
	}
	j.publications.Store(req.Cache, hold)
	return pub, nil
}

func writePublication(pub *Publication) error {
	b, err := json.MarshalIndent(pub, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(pub.Cache, PublicationFile), b, 0o600); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// Unpublish ends the publication in cache: the server Publish started is
// stopped (a machine booted from a published disk the caller stops
// first), everything under cache is removed, the hold on its restore
// points is released, and its session ends. It works from any process
// with the same configuration, also after the publishing host crashed
// (its hold then runs out by itself).
func (j *Job) Unpublish(ctx context.Context, cache string) error {
	b, err := os.ReadFile(filepath.Join(cache, PublicationFile))
	if err != nil {
		return fmt.Errorf("unpublish %s: not a publication: %w", cache, err)
	}
	var pub Publication
	if err := json.Unmarshal(b, &pub); err != nil {
		return fmt.Errorf("unpublish %s: %s: %w", cache, PublicationFile, err)
	}
	if pub.Job != j.cfg.Name || pub.Cache != cache {
		return fmt.Errorf("unpublish %s: a publication of job %q at %s, not of this job here", cache, pub.Job, pub.Cache)
	}
	if err := j.stopPublished(ctx, &pub); err != nil {
		return fmt.Errorf("unpublish %s: %w", cache, err)
	}
	if err := os.RemoveAll(cache); err != nil {
		return fmt.Errorf("unpublish %s: %w", cache, err)
	}
	if h, ok := j.publications.LoadAndDelete(cache); ok {
		h.(*Hold).Release(ctx)
	} else if pub.Pin != "" { // published by another process, or before a crash
		octx, cancel := j.op(ctx)
		err := j.pins.Unpin(octx, pub.Job, pub.Pin)
		cancel()
		if err != nil {
			j.cfg.Logger.Warn("remove the pin of a publication: it runs out by itself", "cache", cache, "err", err)
		}
	}
	j.endPublication(ctx, pub.Session)
	return nil
}

// stopPublished stops the server Publish started, if it did.
func (j *Job) stopPublished(ctx context.Context, pub *Publication) error {
	if pub.Guest == "" {
		return nil
	}
	g := Machine{ID: pub.Guest}
	for _, m := range j.cfg.Machines {
		if m.ID == pub.Guest {
			g = m
		}
	}
	rt, err := j.deployFor(ctx, g)
	if err != nil {
		return err
	}
	defer j.closeRuntime(ctx, rt, g)
	ctl, ok := rt.(guest.ServerControl)
	if !ok {
		return fmt.Errorf("stop the published server on %s: %w", g.ID, ErrNoRecovery)
	}
	octx, cancel := j.op(ctx)
	defer cancel()
	return ctl.StopServer(octx, pub.DataDir)
}

// endPublication ends the publication's session, if it still runs.
func (j *Job) endPublication(ctx context.Context, id string) {
	if id == "" {
		return
	}
	octx, cancel := j.op(ctx)
	defer cancel()
	rec, err := j.cfg.Sessions.Get(octx, id)
	if err == nil && !rec.State.Final() {
		rec.State, rec.End, rec.Result = session.StateSuccess, j.cfg.Clock.Now(), "unpublished"
		err = j.cfg.Sessions.Update(octx, rec)
	}
	if err != nil && !errors.Is(err, session.ErrNotFound) {
		j.cfg.Logger.Error("end the publication's session", "session", id, "err", err)
	}
}
