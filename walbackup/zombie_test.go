package walbackup_test

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/memory"
	"github.com/pglogship/pglogship/session"
	smem "github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/session/postgres"
	"github.com/pglogship/pglogship/walbackup"
)

// copyRestorePoint commits a copy of restore point from under a new id
// taken at t, as another process's parent session would.
func copyRestorePoint(t *testing.T, repo repository.Repository, from string, at time.Time) string {
	t.Helper()
	ctx := context.Background()
	m, err := repository.ReadManifest(ctx, repo, inst42, from, nil)
	require.NoError(t, err)
	c := *m
	c.ID = repository.NewRestorePointID(at)
	for _, o := range m.Objects {
		rc, err := repo.Get(ctx, inst42.RestorePoint(from)+"/"+o.Name, 0, -1)
		require.NoError(t, err)
		require.NoError(t, repo.Put(ctx, inst42.RestorePoint(c.ID)+"/"+o.Name, rc))
		rc.Close()
	}
	require.NoError(t, repository.WriteManifest(ctx, repo, inst42, &c, nil))
	return c.ID
}

// firstRestorePoint waits for the running job's first child session,
// ships WAL for an interval and takes a restore point, its first.
func firstRestorePoint(t *testing.T, h *harness, repo repository.Repository) []string {
	t.Helper()
	h.idle(t)
	h.addWAL()
	h.step(t, 15*time.Minute)
	require.NoError(t, h.job.StartParent(context.Background()))
	h.idle(t)
	rps, err := repository.RestorePointIDs(context.Background(), repo, inst42)
	require.NoError(t, err)
	require.Len(t, rps, 1)
	return rps
}

// A process paused past its lease in the middle of a parent session, its
// image stored but its manifest not yet written, comes back after another
// process took a newer restore point and expired the paused one's objects
// as garbage: its manifest is refused (ErrAbandoned), so no restore point
// ever points at deleted objects; Verify finds nothing wrong; and the
// restore point is not offered.
func TestPausedWriterCannotCommitAfterItsObjectsWereRemoved(t *testing.T) {
	ctx := context.Background()
	var cfg walbackup.Config
	h := newHarness(t, func(c *walbackup.Config) {
		c.Schedule = nil
		c.Retention = walbackup.Retention{RestorePoints: 2}
		cfg = *c
	})
	require.NoError(t, h.job.Enable(ctx))
	rp1 := firstRestorePoint(t, h, h.repo)

	// The other process: same job, same repository and store.
	cfg.Observer = nil
	other, err := walbackup.NewJob(cfg)
	require.NoError(t, err)

	var zombie string
	var during walbackup.Expired
	h.repo.SetFault(func(op memory.Op, name string) error {
		if op != memory.OpPut || !strings.HasSuffix(name, "/manifest.json") || zombie != "" {
			return nil
		}
		// Paused right before the commit; meanwhile the other process
		// takes a newer restore point and runs expiry.
		zombie = strings.TrimSuffix(strings.TrimPrefix(name, inst42.RestorePoint("")), "/manifest.json")
		h.repo.SetFault(nil)
		copyRestorePoint(t, h.repo, rp1[0], h.clk.Now().Add(time.Hour))
		during, err = other.Expire(ctx)
		require.NoError(t, err)
		return nil
	})
	h.clk.Add(time.Minute)
	h.addWAL()
	require.NoError(t, h.job.StartParent(ctx))
	h.idle(t)

	require.NotEmpty(t, zombie)
	assert.Equal(t, []string{zombie}, during.Garbage, "the paused writer's objects went as garbage")
	parents := h.sessions(t, h.job.Name())
	require.NotEmpty(t, parents)
	assert.Equal(t, session.StateFailed, parents[0].State)
	log, err := h.store.Log(ctx, parents[0].ID, 0, 100)
	require.NoError(t, err)
	var said []string
	for _, e := range log {
		said = append(said, e.Message)
	}
	assert.Contains(t, strings.Join(said, "\n"), repository.ErrAbandoned.Error())

	rps, err := repository.RestorePoints(ctx, h.repo, inst42, nil)
	require.NoError(t, err)
	require.Len(t, rps, 2)
	for _, m := range rps {
		assert.NotEqual(t, zombie, m.ID, "the abandoned restore point is not offered")
	}
	_, err = repository.ReadManifest(ctx, h.repo, inst42, zombie, nil)
	require.ErrorIs(t, err, repository.ErrAbandoned)
	var left []string
	require.NoError(t, h.repo.List(ctx, inst42.RestorePoint(zombie)+"/", func(o repository.Object) error {
		left = append(left, o.Name)
		return nil
	}))
	assert.Equal(t, []string{inst42.ManifestName(zombie)}, left, "only the tombstone stays")
	rep := verify(t, h)
	assert.True(t, rep.OK(), "%v", rep.Problems)
	assert.Equal(t, 2, rep.RestorePoints)

	// A second expiry has nothing left to do with it.
	again, err := other.Expire(ctx)
	require.NoError(t, err)
	assert.Empty(t, again.Garbage)
	require.NoError(t, h.job.Disable(ctx))
}

// A restore point whose image object is gone (however that came about) is
// reported by Verify, naming the object.
func TestVerifyReportsARestorePointWithAMissingObject(t *testing.T) {
	h := twoRestorePoints(t)
	ctx := context.Background()
	ids, err := repository.RestorePointIDs(ctx, h.repo, inst42)
	require.NoError(t, err)
	obj := inst42.RestorePoint(ids[1]) + "/disk.img"
	require.NoError(t, h.repo.Delete(ctx, obj))
	rep := verify(t, h)
	require.Len(t, rep.Problems, 1, "%v", rep.Problems)
	assert.Equal(t, walbackup.ProblemCorrupt, rep.Problems[0].Kind)
	assert.Equal(t, obj, rep.Problems[0].Object)
}

// fencingStore is a session store that leases jobs and fences writes.
type fencingStore interface {
	session.Store
	session.Leaser
	session.Fencer
}

// fencingStores open a repository and a session store for the fencing
// tests: in memory, and real (MinIO and PostgreSQL, as processes on
// several hosts share them).
var fencingStores = map[string]func(t *testing.T) (repository.Repository, fencingStore){
	"memory": func(*testing.T) (repository.Repository, fencingStore) { return memory.New(), smem.New() },
	"MinIO and PostgreSQL": func(t *testing.T) (repository.Repository, fencingStore) {
		_, _, repo := minIOBucketRepo(t, "")
		pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
		st, err := postgres.Open(context.Background(), postgres.Config{ConnString: pg.ConnString("postgres"), Schema: "fencing"})
		require.NoError(t, err)
		t.Cleanup(st.Close)
		return repo, st
	},
}

// writeErrors is a fencing session store that records the errors its
// updates and appends returned (the writes of a running session).
type writeErrors struct {
	session.Store
	mu   *sync.Mutex
	errs *[]error
}

func (w writeErrors) Fenced(l session.Lease) session.Store {
	return writeErrors{w.Store.(session.Fencer).Fenced(l), w.mu, w.errs}
}

func (w writeErrors) seen(err error) error {
	if err != nil {
		w.mu.Lock()
		*w.errs = append(*w.errs, err)
		w.mu.Unlock()
	}
	return err
}

func (w writeErrors) Update(ctx context.Context, s session.Session) error {
	return w.seen(w.Store.Update(ctx, s))
}

func (w writeErrors) Append(ctx context.Context, id string, e session.Entry) (session.Entry, error) {
	out, err := w.Store.Append(ctx, id, e)
	return out, w.seen(err)
}

// A stale lease holder that has not noticed it lost the job (paused, or
// its renewals lost) ships once more after another process took the job
// over: the session update and log entries of that batch are refused with
// session.ErrFenced, the store keeps only what was written while the
// lease was its own, and the run stops at once.
func TestStaleHolderSessionWritesAreFenced(t *testing.T) {
	for name, open := range fencingStores {
		t.Run(name, func(t *testing.T) {
			repo, store := open(t)
			staleHolderSessionWrites(t, repo, store)
		})
	}
}

func staleHolderSessionWrites(t *testing.T, repo repository.Repository, store fencingStore) {
	ctx := context.Background()
	var mu sync.Mutex
	var errs []error
	h := newHarness(t, func(c *walbackup.Config) {
		c.Schedule = nil
		c.Repository = repo
		c.Sessions = writeErrors{store, &mu, &errs}
	})
	l1, ok, err := store.AcquireLease(ctx, h.job.Name(), "host-1", h.clk.Now(), time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	done, err := walbackup.LaunchUnderLease(ctx, h.job, l1)
	require.NoError(t, err)
	h.idle(t)
	child := walbackup.ChildJobName(h.job.Name())
	page, err := store.List(ctx, session.Query{Job: child})
	require.NoError(t, err)
	require.Len(t, page.Sessions, 1)
	before := page.Sessions[0]
	logBefore, err := store.Log(ctx, before.ID, 0, 0)
	require.NoError(t, err)
	require.NotEmpty(t, logBefore, "written under the lease")

	// Another process takes the job over; this one does not know yet.
	require.NoError(t, store.ReleaseLease(ctx, l1))
	l2, ok, err := store.AcquireLease(ctx, h.job.Name(), "host-2", h.clk.Now(), time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	h.addWAL()
	h.clk.Add(15 * time.Minute)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the fenced-off run did not stop")
	}

	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, errs, "the stale holder tried to write")
	for _, err := range errs {
		require.ErrorIs(t, err, session.ErrFenced)
	}
	after, err := store.Get(ctx, before.ID)
	require.NoError(t, err)
	assert.Equal(t, before, after, "the session record is as the lease holder left it")
	logAfter, err := store.Log(ctx, before.ID, 0, 0)
	require.NoError(t, err)
	assert.Equal(t, logBefore, logAfter, "no log entry of the stale holder")
	err = store.Fenced(l2).Update(ctx, after)
	require.NoError(t, err, "the new holder writes")
}

// A stale lease holder's repository commits are refused once another run
// claimed the next generation of the job's repository fence, also with a
// session store that fences nothing: its bundle (the WAL stays in the
// guest), and its restore point's manifest when the claim comes after the
// stale run's parent session stored its images and backup WAL. Each refusal carries
// session.ErrFenced, the run stops at once, and the repository keeps only
// what was committed before.
func TestStaleHolderRepositoryCommitsAreFenced(t *testing.T) {
	for name, open := range fencingStores {
		for _, commit := range []string{"bundle", "manifest"} {
			t.Run(name+"/"+commit, func(t *testing.T) {
				repo, store := open(t)
				staleHolderRepositoryCommit(t, repo, store, commit == "manifest")
			})
		}
	}
}

// claimingRepo runs claim, once it is set, inside the first put of WAL
// after an image: a parent session's backup WAL, its last commit before
// the manifest.
type claimingRepo struct {
	repository.Repository
	claim *func()
	image *bool
}

func (r claimingRepo) Put(ctx context.Context, name string, rd io.Reader) error {
	if c := *r.claim; c != nil {
		if strings.Contains(name, "/restorepoints/") {
			*r.image = true
		} else if *r.image && strings.Contains(name, "/wal/") {
			*r.claim = nil
			c()
		}
	}
	return r.Repository.Put(ctx, name, rd)
}

func staleHolderRepositoryCommit(t *testing.T, repo repository.Repository, store fencingStore, manifest bool) {
	ctx := context.Background()
	var claim func()
	var image bool
	h := newHarness(t, func(c *walbackup.Config) {
		c.Schedule = nil
		c.Retention = walbackup.Retention{RestorePoints: 1}
		c.Repository = claimingRepo{repo, &claim, &image}
		c.Sessions = struct{ session.Store }{store} // no session.Fencer
	})
	l1, ok, err := store.AcquireLease(ctx, h.job.Name(), "host-1", h.clk.Now(), time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	done, err := walbackup.LaunchUnderLease(ctx, h.job, l1)
	require.NoError(t, err)
	rps := firstRestorePoint(t, h, repo) // committed under the lease
	h.addWAL()
	h.step(t, 15*time.Minute)
	bundles, err := repository.Bundles(ctx, repo, inst42, 1)
	require.NoError(t, err)
	require.NotEmpty(t, bundles)
	require.Empty(t, h.guest.Waiting(), "shipped under the lease")

	// Another process takes the job over and claims the next generation of
	// the fence, as its run does when it starts.
	require.NoError(t, store.ReleaseLease(ctx, l1))
	_, ok, err = store.AcquireLease(ctx, h.job.Name(), "host-2", h.clk.Now(), time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	var fence []string
	require.NoError(t, repo.List(ctx, "jobs/", func(o repository.Object) error {
		if strings.Contains(o.Name, "/_fence/") {
			fence = append(fence, o.Name)
		}
		return nil
	}))
	folder := "jobs/" + repository.Component(h.job.Name()) + "/_fence/"
	require.Equal(t, []string{folder + "0000000001-00000000000000000001"}, fence, "the run claimed its lease's generation")
	claimNext := func() {
		require.NoError(t, repo.Put(ctx, folder+"0000000001-00000000000000000002", strings.NewReader("host-2\n")))
	}

	h.addWAL()
	if manifest {
		claim = claimNext // after the images and the backup WAL passed the fence
		require.NoError(t, h.job.StartParent(ctx))
	} else {
		claimNext()
		h.clk.Add(15 * time.Minute)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the fenced-off run did not stop")
	}
	var refused []string
	for len(h.events) > 0 {
		e := <-h.events
		for _, msg := range []string{e.Message, e.Session.Result} {
			if strings.Contains(msg, session.ErrFenced.Error()) {
				refused = append(refused, msg)
			}
		}
	}
	parent, err := session.Latest(ctx, store, h.job.Name(), session.KindParent)
	require.NoError(t, err)
	log, err := store.Log(ctx, parent.ID, 0, 0)
	require.NoError(t, err)
	for _, e := range log {
		if strings.Contains(e.Message, session.ErrFenced.Error()) {
			refused = append(refused, e.Message)
		}
	}
	require.NotEmpty(t, refused, "the stale run was told its commits are fenced off")
	got, err := repository.RestorePointIDs(ctx, repo, inst42)
	require.NoError(t, err)
	assert.Equal(t, rps, got, "no restore point of the stale run, and nothing expired")
	if manifest {
		assert.Equal(t, session.StateFailed, parent.State, parent.Result)
		assert.Contains(t, strings.Join(refused, "\n"), "machine vm1: no restore point: ")
		return
	}
	after, err := repository.Bundles(ctx, repo, inst42, 1)
	require.NoError(t, err)
	assert.Equal(t, bundles, after, "no bundle of the stale run")
	assert.NotEmpty(t, h.guest.Waiting(), "the WAL stays in the guest")
}
