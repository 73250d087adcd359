package walbackup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/session"
)

// fenceFolder is the folder of a job's fence objects in the repository:
// "_fence" is no machine's component (Component never starts with "_").
const fenceFolder = "_fence/"

// repoFence keeps a run that lost its lease from committing to the
// repository. Every run under a lease claims the next generation of the
// job's fence when it starts: it puts jobs/<job>/_fence/<G, 20 digits>,
// G one above the greatest there (objects are never overwritten, so of
// two runs claiming at once one gets G and the other G+1). Before every
// commit (a bundle, a manifest, a retention delete) the run lists the
// folder: a greater generation means another process took the job over
// since, and the commit is refused with session.ErrFenced. The repository
// keeps its own count, so a session store whose lease tokens started over
// does not fence anyone off for good. What is left is the time between the
// check and the write, which the session store's fence and the manifest's
// own check (ErrAbandoned) cover.
type repoFence struct {
	repo   repository.Repository
	folder string
	lease  session.Lease
	gen    atomic.Int64 // 0 until claimed
}

func newRepoFence(repo repository.Repository, job string, l session.Lease) *repoFence {
	return &repoFence{repo: repo, folder: "jobs/" + repository.Component(job) + "/" + fenceFolder, lease: l}
}

// top is the greatest generation of the fence.
func (f *repoFence) top(ctx context.Context) (int64, error) {
	var top int64
	err := f.repo.List(ctx, f.folder, func(o repository.Object) error {
		if g, err := strconv.ParseInt(strings.TrimPrefix(o.Name, f.folder), 10, 64); err == nil && g > top {
			top = g
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("read the repository fence: %w", err)
	}
	return top, nil
}

// claim takes the next generation, fencing off every run before it.
func (f *repoFence) claim(ctx context.Context) error {
	top, err := f.top(ctx)
	if err != nil {
		return err
	}
	for try := 0; try < 10; try++ {
		g := top + 1 + int64(try)
		body := fmt.Sprintf("holder %s, lease token %d\n", f.lease.Holder, f.lease.Token)
		err := f.repo.Put(ctx, f.folder+fmt.Sprintf("%020d", g), strings.NewReader(body))
		if err == nil {
			f.gen.Store(g)
			f.prune(ctx, g)
			return nil
		}
		if !errors.Is(err, repository.ErrConflict) {
			return fmt.Errorf("claim the repository fence: %w", err)
		}
	}
	return errors.New("claim the repository fence: other runs claimed every generation tried")
}

// keptGenerations is how many of the newest fence objects claim keeps: the
// greatest alone decides, the few before it help people read the history.
const keptGenerations = 3

// prune removes the fence objects more than keptGenerations below g, so
// the folder does not grow with every run. Best effort: a leftover only
// costs a longer listing.
func (f *repoFence) prune(ctx context.Context, g int64) {
	var old []string
	_ = f.repo.List(ctx, f.folder, func(o repository.Object) error {
		if n, err := strconv.ParseInt(strings.TrimPrefix(o.Name, f.folder), 10, 64); err == nil && n <= g-keptGenerations {
			old = append(old, o.Name)
		}
		return nil
	})
	for _, name := range old {
		_ = f.repo.Delete(ctx, name)
	}
}

// check refuses when another run claimed a newer generation; a run that
// could not claim one yet claims it first.
func (f *repoFence) check(ctx context.Context) error {
	if f.gen.Load() == 0 {
		if err := f.claim(ctx); err != nil {
			return err
		}
	}
	top, err := f.top(ctx)
	if err != nil {
		return err
	}
	if g := f.gen.Load(); top > g {
		return fmt.Errorf("the repository fence is at generation %d, claimed since by another run; this run (lease token %d) holds %d: %w",
			top, f.lease.Token, g, session.ErrFenced)
	}
	return nil
}

// checkFence refuses a commit of a run whose lease another process took
// over, and has the run stop; nil outside a run under a lease.
func (j *Job) checkFence(ctx context.Context) error {
	f := j.fence.Load()
	if f == nil {
		return nil
	}
	err := f.check(ctx)
	if errors.Is(err, session.ErrFenced) {
		j.fencedOff.Store(true) // the run stops at its next wake
	}
	return err
}

// fencedRepo checks the run's fence before every write.
type fencedRepo struct {
	repository.Repository
	j *Job
}

func (r fencedRepo) Put(ctx context.Context, name string, rd io.Reader) error {
	if err := r.j.checkFence(ctx); err != nil {
		return err
	}
	return r.Repository.Put(ctx, name, rd)
}

func (r fencedRepo) Delete(ctx context.Context, name string) error {
	if err := r.j.checkFence(ctx); err != nil {
		return err
	}
	return r.Repository.Delete(ctx, name)
}
