package walbackup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
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

// Expired is what one expiry removed.
type Expired struct {
	RestorePoints []string // ids
	Bundles       []string // WAL bundle objects
	Garbage       []string // objects of restore points that never committed
}

// Expire removes, for every machine's clusters, the restore points the
// retention no longer keeps and the WAL no kept restore point needs. It
// never removes a kept restore point, the images a kept incremental one
// builds on, WAL from the oldest kept restore point's start onwards, or
// WAL inside the WALDays window. Each restore point's manifest goes before
// its objects, so a crash leaves garbage, never a restore point with
// missing parts; garbage is removed by the next expiry. The job runs it
// after each parent session.
func (j *Job) Expire(ctx context.Context) (Expired, error) {
	return j.expire(ctx, j.cfg.Repository)
}

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
		for _, inst := range insts {
			if err := j.expireInstance(ctx, repo, inst, &out); err != nil {
				errs = append(errs, fmt.Errorf("expire %s/%d: %w", inst.Machine, inst.SystemID, err))
			}
		}
	}
	return out, errors.Join(errs...)
}

func (j *Job) expireInstance(ctx context.Context, repo repository.Repository, inst repository.Instance, out *Expired) error {
	rps, err := repository.RestorePoints(ctx, repo, inst, j.auth())
	if err != nil {
		return err
	}
	if err := j.removeGarbage(ctx, repo, inst, rps, out); err != nil {
		return err
	}
	if len(rps) == 0 {
		return nil // WAL before any restore point: kept until one exists
	}
	keep := j.keptRestorePoints(rps)
	var oldest *repository.Manifest
	for _, m := range rps {
		if keep[m.ID] {
			if oldest == nil {
				oldest = m
			}
			continue
		}
		// The manifest first: once it is gone the restore point is not
		// offered any more, and its objects are garbage.
		if err := repo.Delete(ctx, inst.ManifestName(m.ID)); err != nil {
			return err
		}
		if err := j.deletePrefix(ctx, repo, inst.RestorePoint(m.ID)+"/"); err != nil {
			return err
		}
		out.RestorePoints = append(out.RestorePoints, m.ID)
	}
	return j.expireWAL(ctx, repo, inst, oldest.StartLSN, oldest.SegmentSize(), out)
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

// expireWAL deletes the bundles whose WAL ends at or before cutoff (the
// oldest kept restore point's start), on every timeline; with WALDays only
// those also written before the window, by the time in their index (a
// bundle that does not say when it was written stays). History files stay:
// they are tiny and recovery needs them to follow timelines.
func (j *Job) expireWAL(ctx context.Context, repo repository.Repository, inst repository.Instance, cutoff wal.LSN, segSize int64, out *Expired) error {
	folder := inst.Prefix() + "/wal/"
	var victims []repository.Object
	err := repo.List(ctx, folder, func(o repository.Object) error {
		ref, ok := repository.ParseBundleName(o.Name)
		if !ok {
			return nil
		}
		last, err := wal.ParseFileName(ref.Last)
		if err != nil {
			return nil
		}
		// A .backup or .partial name ends in its segment's WAL.
		last = wal.FileName{Kind: wal.Segment, Timeline: last.Timeline, Log: last.Log, Seg: last.Seg}
		if last.Next(segSize).StartLSN(segSize) <= cutoff {
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
// written right now is never touched.
func (j *Job) removeGarbage(ctx context.Context, repo repository.Repository, inst repository.Instance, rps []*repository.Manifest, out *Expired) error {
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
		if !committed[id] && id < newest {
			folders[id] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	for id := range folders {
		if err := j.deletePrefix(ctx, repo, prefix+id+"/"); err != nil {
			return err
		}
		out.Garbage = append(out.Garbage, id)
	}
	sort.Strings(out.Garbage)
	return nil
}

func (j *Job) deletePrefix(ctx context.Context, repo repository.Repository, prefix string) error {
	var names []string
	if err := repo.List(ctx, prefix, func(o repository.Object) error {
		names = append(names, o.Name)
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
