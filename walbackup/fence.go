package walbackup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/session"
)

// fenceFolder is the folder of a job's fence objects in the repository:
// "_fence" is no machine's component (Component never starts with "_").
const fenceFolder = "_fence/"

// repoFence keeps a run that lost its lease from committing to the
// repository. Each run under a lease claims a generation of the job's
// fence: the object jobs/<job>/_fence/<epoch, 10 digits>-<token, 20
// digits>, names ordered as the leases were given (the epoch grows only
// when the session store's tokens started over). Before every commit (a
// bundle, a history file, a direct upload's authorisation, a manifest, a
// retention delete) the run lists the folder: a greater generation means
// another process took the job over since, and the commit is refused with
// session.ErrFenced. A run confirms its lease with the session store
// after it lists and before it claims, so a stale run never claims, or
// claims below the new holder (its token is smaller): it cannot fence the
// holder off. What is left is the time between the check and the write
// (an upload under way), which the manifest's own check (ErrAbandoned)
// covers for restore points.
type repoFence struct {
	repo   repository.Repository
	folder string
	lease  session.Lease
	// confirm reports whether the lease is still the run's, from the
	// session store (session.ErrLeaseLost when not); nil: not checked.
	confirm func(context.Context) error
	name    atomic.Pointer[string] // the claimed generation; nil until claimed
}

func newRepoFence(repo repository.Repository, job string, l session.Lease, confirm func(context.Context) error) *repoFence {
	return &repoFence{repo: repo, folder: "jobs/" + repository.Component(job) + "/" + fenceFolder, lease: l, confirm: confirm}
}

// generation is the fence object's name (below the folder) of a lease
// token in an epoch.
func generation(epoch, token int64) string { return fmt.Sprintf("%010d-%020d", epoch, token) }

// parseGeneration reads a generation's epoch and token; ok false for any
// other name.
func parseGeneration(name string) (epoch, token int64, ok bool) {
	if len(name) != 31 || name[10] != '-' {
		return 0, 0, false
	}
	if _, err := fmt.Sscanf(name, "%010d-%020d", &epoch, &token); err != nil {
		return 0, 0, false
	}
	return epoch, token, generation(epoch, token) == name
}

// generations lists the fence's generations in ascending order (List
// calls back in name order).
func (f *repoFence) generations(ctx context.Context) ([]string, error) {
	var gens []string
	err := f.repo.List(ctx, f.folder, func(o repository.Object) error {
		if g := strings.TrimPrefix(o.Name, f.folder); validGeneration(g) {
			gens = append(gens, g)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the repository fence: %w", err)
	}
	return gens, nil
}

func validGeneration(name string) bool {
	_, _, ok := parseGeneration(name)
	return ok
}

// claim records the run's generation: its lease token, in the newest
// epoch, or in a new epoch when that one holds a greater token although
// the session store says the lease is the run's (its tokens started over).
func (f *repoFence) claim(ctx context.Context) error {
	gens, err := f.generations(ctx)
	if err != nil {
		return err
	}
	if f.confirm != nil {
		if err := f.confirm(ctx); err != nil {
			if errors.Is(err, session.ErrLeaseLost) {
				return fmt.Errorf("claim the repository fence: the lease is not this run's any more: %w", session.ErrFenced)
			}
			return fmt.Errorf("claim the repository fence: confirm the lease: %w", err)
		}
	}
	epoch := int64(1)
	if len(gens) > 0 {
		e, t, _ := parseGeneration(gens[len(gens)-1])
		epoch = e
		if t > f.lease.Token {
			epoch++
		}
	}
	g := generation(epoch, f.lease.Token)
	body := fmt.Sprintf("holder %s, lease token %d\n", f.lease.Holder, f.lease.Token)
	// Of one lease only its holder claims, so a name taken already is this
	// holding's (a run of the same process before a restart).
	if err := f.repo.Put(ctx, f.folder+g, strings.NewReader(body)); err != nil && !errors.Is(err, repository.ErrConflict) {
		return fmt.Errorf("claim the repository fence: %w", err)
	}
	f.name.Store(&g)
	f.prune(ctx, append(gens, g))
	return nil
}

// keptGenerations is how many of the newest fence objects claim keeps: the
// greatest alone decides, the few before it help people read the history.
const keptGenerations = 3

// prune removes all but the newest keptGenerations of gens, so the folder
// does not grow with every run. Best effort: a leftover only costs a
// longer listing, and a name removed and claimed again by a stale run
// stays below the newest.
func (f *repoFence) prune(ctx context.Context, gens []string) {
	sort.Strings(gens)
	for i := 0; i+keptGenerations < len(gens); i++ {
		_ = f.repo.Delete(ctx, f.folder+gens[i])
	}
}

// check refuses when a newer run claimed a greater generation; a run that
// could not claim one at its start claims it first.
func (f *repoFence) check(ctx context.Context) error {
	if f.name.Load() == nil {
		if err := f.claim(ctx); err != nil {
			return err
		}
	}
	gens, err := f.generations(ctx)
	if err != nil {
		return err
	}
	own := *f.name.Load()
	if len(gens) > 0 && gens[len(gens)-1] > own {
		return fmt.Errorf("the repository fence is at %s, claimed since by another run; this run (lease token %d) holds %s: %w",
			gens[len(gens)-1], f.lease.Token, own, session.ErrFenced)
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
