package walbackup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/wal"
)

// Retention says how long restore points and WAL are kept. The zero value
// keeps everything.
type Retention struct {
	// RestorePoints keeps the newest so many restore points of each
	// cluster; ImageDays keeps those taken in the last so many days. At
	// most one of the two is set.
	RestorePoints int
	ImageDays     int
	// WALDays keeps WAL for the last so many days, so any point of them
	// can be restored; it must be at least ImageDays. Zero keeps WAL as
	// long as the restore point it follows: it goes with that restore
	// point.
	WALDays int
}

func (r Retention) validate() error {
	switch {
	case r.RestorePoints < 0 || r.ImageDays < 0 || r.WALDays < 0:
		return errors.New("retention: negative count")
	case r.RestorePoints > 0 && r.ImageDays > 0:
		return errors.New("retention: keep restore points by count or by days, not both")
	case r.WALDays > 0 && r.RestorePoints > 0:
		return errors.New("retention: WAL kept for days needs images kept for days too, to compare them")
	case r.WALDays > 0 && r.WALDays < r.ImageDays:
		return fmt.Errorf("retention: WAL kept for %d days, less than the %d days images are kept: restore points would lose the WAL after them",
			r.WALDays, r.ImageDays)
	case r.WALDays > 0 && r.ImageDays == 0:
		return errors.New("retention: WAL kept for days while images are kept forever: set ImageDays too")
	}
	return nil
}

func (r Retention) keepsAll() bool { return r.RestorePoints == 0 && r.ImageDays == 0 }

// Expired is what one expiry removed, and what it left for running
// restores.
type Expired struct {
	RestorePoints []string // ids
	Bundles       []string // WAL bundle objects
	Garbage       []string // objects of restore points that never committed
	// Images are the machines' shared images (ids) that no restore point
	// uses any more.
	Images []string
	// Held are the restore points (ids) retention no longer keeps, or the
	// objects of one whose manifest is gone, that a running restore or
	// drill holds (Job.Hold): left in place, for a later expiry to remove
	// once the pin is released or has run out.
	Held []string
}

// Expire removes, for every machine's clusters, the restore points the
// retention no longer keeps and the WAL no kept restore point needs. It
// never removes a kept restore point, the images a kept incremental one
// builds on, what a running restore or drill holds, the WAL any of those
// needs, or WAL inside the WALDays window. A restore point needs the WAL of
// its own timeline from its start on, and that of every timeline that
// branched off that one after its start (a restore to the latest state
// follows them), never WAL by a cutoff common to all timelines; history
// files all stay. Each restore point's manifest goes before its objects, so
// a crash leaves garbage, never a restore point with missing parts;
// garbage is removed by the next expiry. The job runs it after each parent
// session.
func (j *Job) Expire(ctx context.Context) (Expired, error) {
	return j.expire(ctx, j.cfg.Repository)
}

// ExpireDryRun reports what Expire would remove now, and what it would
// leave to running restores, without removing or writing anything.
func (j *Job) ExpireDryRun(ctx context.Context) (Expired, error) {
	return j.expire(ctx, dryRun{j.cfg.Repository})
}

// dryRun is a repository whose writes and deletes do nothing, so expire
// decides through it as it would and changes nothing. Its reads still see
// every object: each decision of expire rests on a fresh listing or on
// what it decided before, never on an object being gone.
type dryRun struct{ repository.Repository }

func (dryRun) Put(ctx context.Context, _ string, _ io.Reader) error { return ctx.Err() }
func (dryRun) Delete(ctx context.Context, _ string) error           { return ctx.Err() }

// expire is Expire through repo, which the parent session watches.
func (j *Job) expire(ctx context.Context, repo repository.Repository) (Expired, error) {
	var out Expired
	if j.cfg.Retention.keepsAll() {
		return out, nil
	}
	var errs []error
	for _, m := range j.cfg.Machines {
		insts, err := repository.Instances(ctx, repo, j.cfg.Name, m.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		removed := map[repository.Instance]map[string]bool{} // restore points this expiry removed
		for _, inst := range insts {
			n := len(out.RestorePoints)
			if err := j.expireInstance(ctx, repo, inst, &out); err != nil {
				errs = append(errs, fmt.Errorf("expire %s/%d: %w", inst.Machine, inst.SystemID, err))
			}
			removed[inst] = map[string]bool{}
			for _, id := range out.RestorePoints[n:] {
				removed[inst][id] = true
			}
		}
		if err := j.expireSharedImages(ctx, repo, m.ID, insts, removed, &out); err != nil {
			errs = append(errs, fmt.Errorf("expire the shared images of %s: %w", m.ID, err))
		}
	}
	return out, errors.Join(errs...)
}

// expireSharedImages deletes the machine's shared images that no restore
// point uses any more: no committed manifest of any of its instances (insts)
// names one, and no running restore or drill holds it. Only images older
// than the newest restore point go, so the one a parent session writes now
// stays. Restore points this expiry removed (removed, by instance) count
// as gone even where a dry run left them. An image none of whose restore
// points this expiry removed (a parent that failed before it committed
// any) is first claimed by a tombstone at each instance's manifest name,
// so no late writer commits a restore point that names it.
func (j *Job) expireSharedImages(ctx context.Context, repo repository.Repository, machine string, insts []repository.Instance,
	removed map[repository.Instance]map[string]bool, out *Expired) error {
	folder := repository.SharedImages(j.cfg.Name, machine)
	found := map[string]bool{}
	if err := repo.List(ctx, folder, func(o repository.Object) error {
		id, _, _ := strings.Cut(strings.TrimPrefix(o.Name, folder), "/")
		found[id] = true
		return nil
	}); err != nil {
		return err
	}
	if len(found) == 0 {
		return nil
	}
	used := map[string]bool{}
	newest := ""
	for _, inst := range insts {
		rps, err := repository.RestorePoints(ctx, repo, inst, j.auth())
		if err != nil {
			return err
		}
		for _, m := range rps {
			if !removed[inst][m.ID] {
				used[m.ID] = used[m.ID] || m.SharedImage
			}
			newest = max(newest, m.ID)
		}
		pins, err := j.pinsOf(ctx, inst)
		if err != nil {
			return err
		}
		for _, p := range pins {
			for _, id := range p.RestorePoints {
				used[id] = true
			}
		}
	}
	gone := map[string]bool{}
	for _, ids := range removed {
		maps.Copy(gone, ids)
	}
	ids := slices.Sorted(maps.Keys(found))
	for _, id := range ids {
		if used[id] || id >= newest {
			continue
		}
		if !gone[id] {
			committed, err := j.abandonEverywhere(ctx, repo, insts, id)
			if err != nil {
				return err
			}
			if committed {
				continue
			}
		}
		if err := j.deletePrefix(ctx, repo, folder+id+"/"); err != nil {
			return err
		}
		out.Images = append(out.Images, id)
	}
	return nil
}

// abandonEverywhere claims restore point id of each instance with a
// tombstone; true when one of them committed it meanwhile.
func (j *Job) abandonEverywhere(ctx context.Context, repo repository.Repository, insts []repository.Instance, id string) (bool, error) {
	for _, inst := range insts {
		err := repository.AbandonRestorePoint(ctx, repo, inst, id)
		if errors.Is(err, repository.ErrCommitted) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
	return false, nil
}

func (j *Job) expireInstance(ctx context.Context, repo repository.Repository, inst repository.Instance, out *Expired) error {
	rps, err := repository.RestorePoints(ctx, repo, inst, j.auth())
	if err != nil {
		return err
	}
	pins, err := j.pinsOf(ctx, inst)
	if err != nil {
		return err
	}
	if err := j.removeGarbage(ctx, repo, inst, rps, pins, out); err != nil {
		return err
	}
	if len(rps) == 0 {
		return nil // WAL before any restore point: kept until one exists
	}
	keep := j.keptRestorePoints(rps)
	var starts []walStart
	for _, m := range rps {
		if keep[m.ID] {
			starts = append(starts, walStart{m.Timeline, m.StartLSN})
			continue
		}
		if p, ok := heldBy(pins, m.ID); ok {
			j.held(inst, m.ID, p, out)
			continue
		}
		// The manifest first: once it is gone the restore point is not
		// offered any more, and its objects are garbage.
		if err := repo.Delete(ctx, inst.ManifestName(m.ID)); err != nil {
			return err
		}
		// A restore that pinned it since the pins were read has read its
		// manifest before it went (Hold checks after pinning): its objects
		// stay until it ends.
		if pins, err = j.pinsOf(ctx, inst); err != nil {
			return err
		}
		if p, ok := heldBy(pins, m.ID); ok {
			j.held(inst, m.ID, p, out)
			continue
		}
		if err := j.deletePrefix(ctx, repo, inst.RestorePoint(m.ID)+"/"); err != nil {
			return err
		}
		out.RestorePoints = append(out.RestorePoints, m.ID)
	}
	// Pins carry their WAL's start, so it is kept also for a restore point
	// whose manifest an earlier expiry removed.
	for _, p := range pins {
		starts = append(starts, walStart{p.Timeline, p.StartLSN})
	}
	return j.expireWAL(ctx, repo, inst, starts, rps[0].SegmentSize(), out)
}

// held notes that expiry left restore point id to the restore that holds
// it.
func (j *Job) held(inst repository.Instance, id string, p session.Pin, out *Expired) {
	out.Held = append(out.Held, id)
	j.cfg.Logger.Info("expiry leaves a restore point to a running "+p.Purpose+": a later expiry removes it", "job", j.cfg.Name,
		"machine", inst.Machine, "restore_point", id, "pin_until", p.Until)
}

// keptRestorePoints applies the image retention, and keeps the images
// every kept incremental restore point builds on.
func (j *Job) keptRestorePoints(rps []*repository.Manifest) map[string]bool {
	r := j.cfg.Retention
	keep := map[string]bool{}
	byID := map[string]*repository.Manifest{}
	for _, m := range rps {
		byID[m.ID] = m
	}
	cut := j.cfg.Clock.Now().AddDate(0, 0, -r.ImageDays)
	for i, m := range rps {
		switch {
		case r.RestorePoints > 0:
			keep[m.ID] = i >= len(rps)-r.RestorePoints
		case r.ImageDays > 0:
			keep[m.ID] = !m.StopTime.Before(cut)
		}
	}
	keep[rps[len(rps)-1].ID] = true // the newest always stays
	for _, m := range rps {
		for b := m; keep[m.ID] && b != nil && !b.Full; b = byID[b.Base] {
			keep[b.Base] = true
		}
	}
	return keep
}

// walStart is where a restore point (or a restore holding one) starts
// reading WAL.
type walStart struct {
	timeline uint32
	lsn      wal.LSN
}

// walNeeds is, for each timeline, the LSN from which some start needs its
// WAL: a start needs its own timeline from its LSN on, and every timeline
// whose history says it branched off the start's timeline at or after the
// start's LSN from its branch point on (through intermediate timelines
// too: their histories list the start's timeline as well). A timeline no
// start needs is absent.
func walNeeds(starts []walStart, hist map[uint32][]historyEntry) map[uint32]wal.LSN {
	need := map[uint32]wal.LSN{}
	note := func(tli uint32, lsn wal.LSN) {
		if cur, ok := need[tli]; !ok || lsn < cur {
			need[tli] = lsn
		}
	}
	for _, s := range starts {
		note(s.timeline, s.lsn)
		for tli, h := range hist {
			for _, e := range h {
				if e.parent == s.timeline && e.switchAt >= s.lsn {
					note(tli, h[len(h)-1].switchAt)
					break
				}
			}
		}
	}
	return need
}

// expireWAL deletes the bundles whose WAL ends at or before the point from
// which the starts need their timeline (walNeeds), and those of timelines
// no start needs; a timeline whose history file is missing or unreadable
// is kept whole, since what branches where is not known. With WALDays only
// bundles also written before the window go, by the time in their index (a
// bundle that does not say when it was written stays). History files stay:
// they are tiny and recovery needs them to follow timelines.
func (j *Job) expireWAL(ctx context.Context, repo repository.Repository, inst repository.Instance, starts []walStart, segSize int64, out *Expired) error {
	hist, unknown, err := readHistories(ctx, repo, inst, j.cfg.Key)
	if err != nil {
		return err
	}
	need := walNeeds(starts, hist)
	folder := inst.Prefix() + "/wal/"
	var victims []repository.Object
	err = repo.List(ctx, folder, func(o repository.Object) error {
		ref, ok := repository.ParseBundleName(o.Name)
		if !ok {
			return nil
		}
		last, err := wal.ParseFileName(ref.Last)
		if err != nil {
			return nil
		}
		if tli := last.Timeline; tli != 1 && (unknown[tli] || hist[tli] == nil) {
			return nil
		}
		// A .backup or .partial name ends in its segment's WAL.
		last = wal.FileName{Kind: wal.Segment, Timeline: last.Timeline, Log: last.Log, Seg: last.Seg}
		if from, ok := need[last.Timeline]; !ok || last.Next(segSize).StartLSN(segSize) <= from {
			victims = append(victims, o)
		}
		return nil
	})
	if err != nil {
		return err
	}
	window := j.cfg.Clock.Now().AddDate(0, 0, -j.cfg.Retention.WALDays)
	for _, o := range victims {
		if j.cfg.Retention.WALDays > 0 {
			b, err := bundle.Open(ctx, repo, o.Name, o.Size, j.cfg.Key)
			if err != nil {
				return fmt.Errorf("read the index of %s: %w", o.Name, err)
			}
			if b.Created().IsZero() || !b.Created().Before(window) {
				continue
			}
		}
		if err := repo.Delete(ctx, o.Name); err != nil {
			return err
		}
		out.Bundles = append(out.Bundles, o.Name)
	}
	return nil
}

// removeGarbage deletes the objects of restore points that never
// committed (a parent that crashed, an expiry cut off after the
// manifest), older than the newest committed one so a restore point being
// written right now is never touched, and not held by a running restore
// (whose manifest an expiry removed after the restore had read it). Each
// one's manifest name is first claimed by a tombstone, so a writer that
// comes back late (paused past its lease) can never commit a restore point
// whose objects are gone: its manifest is refused (ErrAbandoned).
func (j *Job) removeGarbage(ctx context.Context, repo repository.Repository, inst repository.Instance, rps []*repository.Manifest,
	pins []session.Pin, out *Expired) error {
	committed := map[string]bool{}
	newest := ""
	for _, m := range rps {
		committed[m.ID] = true
		newest = max(newest, m.ID)
	}
	prefix := inst.RestorePoint("")
	folders := map[string]bool{}
	err := repo.List(ctx, prefix, func(o repository.Object) error {
		id, _, _ := strings.Cut(strings.TrimPrefix(o.Name, prefix), "/")
		// A folder that holds only its tombstone is done.
		if !committed[id] && id < newest && o.Name != inst.ManifestName(id) {
			folders[id] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	for id := range folders {
		if p, ok := heldBy(pins, id); ok {
			j.held(inst, id, p, out)
			continue
		}
		err := repository.AbandonRestorePoint(ctx, repo, inst, id)
		if errors.Is(err, repository.ErrCommitted) {
			continue // its writer committed it just now: not garbage
		}
		if err != nil {
			return err
		}
		if err := j.deletePrefix(ctx, repo, prefix+id+"/", inst.ManifestName(id)); err != nil {
			return err
		}
		out.Garbage = append(out.Garbage, id)
	}
	sort.Strings(out.Garbage)
	return nil
}

// deletePrefix deletes every object under prefix but those named in keep.
func (j *Job) deletePrefix(ctx context.Context, repo repository.Repository, prefix string, keep ...string) error {
	var names []string
	if err := repo.List(ctx, prefix, func(o repository.Object) error {
		if !slices.Contains(keep, o.Name) {
			names = append(names, o.Name)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, n := range names {
		if err := repo.Delete(ctx, n); err != nil {
			return err
		}
	}
	return nil
}
