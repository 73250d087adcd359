package walbackup_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/remote"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	fsrepo "github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/repository/s3"
	sftprepo "github.com/pglogship/pglogship/repository/sftp"
	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

// hostBytes counts the WAL that passes through the host: segment and
// bundle bytes the runtime streams to it, and bundle bytes it puts.
type hostBytes struct {
	segments, bundles atomic.Int64
}

func isSegment(name string) bool {
	f, err := wal.ParseFileName(name)
	return err == nil && f.Kind != wal.History
}

// countingS3 is the S3 repository, counting the WAL bundle bytes the host
// puts (not an image's);
// it stays a repository.DirectUploader.
type countingS3 struct {
	*s3.Repo
	c *hostBytes
}

func (r countingS3) Put(ctx context.Context, name string, rd io.Reader) error {
	return r.Repo.Put(ctx, name, r.c.countBundle(name, rd))
}

// countBundle returns rd, counting what is read of it into c.bundles
// when name is a WAL bundle.
func (c *hostBytes) countBundle(name string, rd io.Reader) io.Reader {
	if _, ok := repository.ParseBundleName(name); ok && strings.Contains(name, "/wal/") {
		return io.TeeReader(rd, writerFunc(func(p []byte) { c.bundles.Add(int64(len(p))) }))
	}
	return rd
}

// countingDeployer hands out runtimes that count the segment bytes they
// stream to the host.
type countingDeployer struct {
	guest.Deployer
	c *hostBytes
}

func (d countingDeployer) Deploy(ctx context.Context, t guest.Target) (guest.Runtime, error) {
	rt, err := d.Deployer.Deploy(ctx, t)
	if err != nil {
		return nil, err
	}
	return countingRuntime{rt.(*remote.Runtime), d.c}, nil
}

type countingRuntime struct {
	*remote.Runtime
	c *hostBytes
}

// StreamBundle counts a bundle the guest streams through the host.
func (r countingRuntime) StreamBundle(ctx context.Context, req guest.StageRequest, fn func(io.Reader) error) (guest.Staged, error) {
	return r.Runtime.StreamBundle(ctx, req, func(rd io.Reader) error {
		return fn(io.TeeReader(rd, writerFunc(func(p []byte) { r.c.segments.Add(int64(len(p))) })))
	})
}

func (r countingRuntime) Read(ctx context.Context, names []string, fn func(guest.Frame) error) error {
	return r.Runtime.Read(ctx, names, func(f guest.Frame) error {
		if isSegment(f.Name) {
			f.Data = io.TeeReader(f.Data, writerFunc(func(p []byte) { r.c.segments.Add(int64(len(p))) }))
		}
		return fn(f)
	})
}

func minIORepo(t *testing.T, m *testenv.MinIO, bucket, guestEndpoint string) *s3.Repo {
	t.Helper()
	r, err := s3.New(s3.Config{Endpoint: m.Endpoint, GuestEndpoint: guestEndpoint, Bucket: bucket, Prefix: "site1", Insecure: true,
		AccessKey: m.AccessKey, SecretKey: m.SecretKey, Region: "us-east-1"})
	require.NoError(t, err)
	require.NoError(t, r.Check(context.Background()))
	return r
}

// Direct shipping into a real MinIO: the child job (and the parent's
// backup WAL) ship real WAL with no WAL byte passing through the host,
// every bundle carries the store's own checksum, the session record says
// which path and why, and restores from the directly shipped WAL are row
// exact to the latest state and to random times.
func TestDirectShippingToMinIO(t *testing.T) {
	t.Parallel()
	m, _, s3repo := minIOBucketRepo(t, "")
	var c hostBytes
	f := newPITRFixture(t, pitrWorkload{txns: 50, tweak: func(cfg *walbackup.Config) {
		cfg.Repository = countingS3{s3repo, &c}
		cfg.Guests = countingDeployer{cfg.Guests, &c}
		cfg.Shipping.Mode = walbackup.ShipDirect
	}})
	ctx := context.Background()
	inst := f.instance(t)

	assert.Zero(t, c.segments.Load(), "no segment byte streamed to the host")
	assert.Zero(t, c.bundles.Load(), "no bundle byte put by the host")
	refs, err := repository.Bundles(ctx, s3repo, inst, 1)
	require.NoError(t, err)
	require.NotEmpty(t, refs)
	for _, r := range refs {
		obj, _, err := s3repo.StoredChecksum(ctx, r.Object.Name)
		require.NoError(t, err, "%s was stored under an authorisation, with the store's checksum", r.Object.Name)
		assert.Equal(t, r.Object.Size, obj.Size)
	}
	log := sessionLog(t, f.harness, walbackup.ChildJobName("Daily DB Job"))
	assert.Contains(t, log, "WAL ships directly from the guest to the repository (shipping mode direct", log)
	assert.Empty(t, m.IncompleteUploads(t))

	t.Run("latest", func(t *testing.T) {
		pg, res, err := f.restore(t, walbackup.Latest())
		require.NoError(t, err, "%s", res.Recovery.Log)
		assert.Equal(t, f.want(len(f.txns)), items(t, pg), "every shipped transaction")
		pg.Stop(t)
	})
	f.restoreAtRandom(t, 16, 4, []int{f.namedAt, f.lsnAt}, nil)
}

// unreachableMinIO is a MinIO the host reaches and guests do not: its
// guest endpoint is where nothing listens.
func unreachableMinIO(t *testing.T) (*testenv.MinIO, string, *s3.Repo) {
	return minIOBucketRepo(t, "127.0.0.1:1")
}

// minIOBucketRepo starts a MinIO with an empty bucket and opens the
// repository in it, signing guests' authorisations for guestEndpoint
// (empty: where the host reaches it).
func minIOBucketRepo(t *testing.T, guestEndpoint string) (*testenv.MinIO, string, *s3.Repo) {
	t.Helper()
	testenv.SkipIfShort(t)
	m := testenv.StartMinIO(t)
	bucket := m.NewBucket(t)
	return m, bucket, minIORepo(t, m, bucket, guestEndpoint)
}

// In mode auto, a guest that cannot reach the store (its endpoint, as the
// guest would see it, answers nothing) ships through the host, and the
// session record says so and why.
func TestAutoShipsThroughTheHostWhenTheGuestCannotReachTheStore(t *testing.T) {
	t.Parallel()
	m, bucket, s3repo := unreachableMinIO(t)
	var c hostBytes
	r := newRealJob(t, fakeImages, func(cfg *walbackup.Config) {
		cfg.Repository = countingS3{s3repo, &c}
		cfg.Guests = countingDeployer{cfg.Guests, &c}
	})
	ctx := context.Background()
	require.NoError(t, r.job.Enable(ctx))
	events := r.idle(t)
	r.pg.SwitchWAL(t, 3)
	events = append(events, r.step(t, walbackup.DefaultLogBackupInterval)...)
	var path *walbackup.Event
	for i, e := range events {
		if e.Kind == walbackup.EventShippingPath {
			path = &events[i]
		}
	}
	require.NotNil(t, path, "the observer is told the path")
	assert.False(t, path.Direct)
	assert.Contains(t, path.Message, "cannot reach the repository")
	log := sessionLog(t, r.harness, walbackup.ChildJobName("Daily DB Job"))
	assert.Contains(t, log, "WAL ships through the host (shipping mode auto): the guest cannot reach the repository", log)
	assert.Positive(t, c.segments.Load(), "the WAL went through the host")
	assert.NotEmpty(t, m.Keys(t, bucket), "into the store")
	ss := r.sessions(t, walbackup.ChildJobName("Daily DB Job"))
	require.NotEmpty(t, ss)
	assert.GreaterOrEqual(t, ss[0].Counters.Files, int64(3), log)
	require.NoError(t, r.job.Disable(ctx))
}

// In mode direct, the same guest ships nothing: the WAL waits in the
// guest and every interval warns.
func TestDirectModeWarnsWhenTheGuestCannotReachTheStore(t *testing.T) {
	t.Parallel()
	m, bucket, s3repo := unreachableMinIO(t)
	r := newRealJob(t, fakeImages, func(cfg *walbackup.Config) {
		cfg.Repository = s3repo
		cfg.Shipping.Mode = walbackup.ShipDirect
	})
	ctx := context.Background()
	require.NoError(t, r.job.Enable(ctx))
	r.idle(t)
	r.pg.SwitchWAL(t, 2)
	r.step(t, walbackup.DefaultLogBackupInterval)
	log := sessionLog(t, r.harness, walbackup.ChildJobName("Daily DB Job"))
	assert.Contains(t, log, "warning machine db1: WAL not shipped, kept in the guest: shipping mode direct, and the guest cannot reach the repository", log)
	assert.Empty(t, m.Keys(t, bucket), "nothing shipped")
	files, err := os.ReadDir(r.walDir)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, len(files), 2, "the WAL waits in the guest")
	require.NoError(t, r.job.Disable(ctx))
}

// faultyGuest wraps a real runtime's direct shipping with faults.
type faultyGuest struct {
	guest.DirectShipper
	beforeSend func()
	afterSend  func() error // replaces a successful send's answer
	lie        bool         // the guest reports other checksums than it bundled
}

func (g *faultyGuest) StageBundle(ctx context.Context, req guest.StageRequest) (guest.Staged, error) {
	s, err := g.DirectShipper.StageBundle(ctx, req)
	if err == nil && g.lie {
		s.Files[0].Sum.Digest[0] ^= 1
	}
	return s, err
}

func (g *faultyGuest) SendBundle(ctx context.Context, object string, to guest.Destination) error {
	if g.beforeSend != nil {
		g.beforeSend()
	}
	err := g.DirectShipper.SendBundle(ctx, object, to)
	if err == nil && g.afterSend != nil {
		return g.afterSend()
	}
	return err
}

// Direct shipping's faults on a real runtime, PostgreSQL and MinIO, one
// ShipOnce each: an authorisation that expires before its upload, a guest
// whose bundle does not match what it reported, and a host that crashes
// between the upload and the verification. None loses WAL or counts it
// twice; nothing unverified stays in the repository.
func TestDirectShippingFaults(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, bucket, repo := minIOBucketRepo(t, "")
	pg, rt, _, inst := deployedRuntime(t)
	direct := func(g *faultyGuest, ttl time.Duration) walbackup.ShipOptions {
		g.DirectShipper = rt.(guest.DirectShipper)
		return walbackup.ShipOptions{Direct: &walbackup.Direct{Guest: g, Uploads: repo, TTL: ttl, MaxBytes: 1 << 30, Clock: clock.New()}}
	}
	waiting := func() []string {
		files, err := rt.Ready(ctx)
		require.NoError(t, err)
		var names []string
		for _, f := range files {
			names = append(names, f.Name)
		}
		return names
	}
	pg.SwitchWAL(t, 3)
	before := waiting()
	require.GreaterOrEqual(t, len(before), 3)

	t.Run("the authorisation expires before the upload", func(t *testing.T) {
		_, err := walbackup.ShipOnce(ctx, rt, repo, inst, direct(&faultyGuest{beforeSend: func() { time.Sleep(2 * time.Second) }}, time.Second))
		require.ErrorIs(t, err, guest.ErrUploadDenied)
		assert.Equal(t, before, waiting(), "the WAL stays in the guest")
		assert.Empty(t, m.Keys(t, bucket), "nothing stored")
	})
	t.Run("a bundle that is not what the guest reported", func(t *testing.T) {
		_, err := walbackup.ShipOnce(ctx, rt, repo, inst, direct(&faultyGuest{lie: true}, time.Minute))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "checksum differs")
		assert.Equal(t, before, waiting(), "the WAL stays in the guest")
		assert.Empty(t, m.Keys(t, bucket), "the unverified bundle was deleted")
	})
	t.Run("the host crashes between the upload and the verification", func(t *testing.T) {
		lost := errors.New("host crashed")
		_, err := walbackup.ShipOnce(ctx, rt, repo, inst, direct(&faultyGuest{afterSend: func() error { return lost }}, time.Minute))
		require.ErrorIs(t, err, lost)
		assert.Equal(t, before, waiting(), "the WAL stays in the guest")
		require.Len(t, m.Keys(t, bucket), 1, "stored, not verified")
		// The next session finds the stored files, checks them against the
		// guest's and lets them go; nothing is stored twice.
		got, err := walbackup.ShipOnce(ctx, rt, repo, inst, direct(&faultyGuest{}, time.Minute))
		require.NoError(t, err)
		assert.Equal(t, len(before), got.Files)
		assert.Empty(t, waiting())
		assert.Len(t, m.Keys(t, bucket), 1, "no second bundle")
		in := stored(t, repo, inst, 1)
		assert.Len(t, in, len(before))
	})
	t.Run("the store's checksum is what the host checks", func(t *testing.T) {
		pg.SwitchWAL(t, 2)
		got, err := walbackup.ShipOnce(ctx, rt, repo, inst, direct(&faultyGuest{}, time.Minute))
		require.NoError(t, err)
		require.True(t, got.Direct)
		require.Len(t, got.Objects, 1)
		_, sum, err := repo.StoredChecksum(ctx, got.Objects[0])
		require.NoError(t, err)
		assert.NotEqual(t, [32]byte{}, sum)
	})
}

// An upload cut anywhere, from its first byte to its last, stores
// nothing and keeps the WAL in the guest; the next ship stores it once.
func TestDirectUploadCutAtAnyPoint(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t)
	ctx := context.Background()
	m := testenv.StartMinIO(t)
	bucket := m.NewBucket(t)
	proxy := testenv.StartProxy(t, m.Endpoint)
	repo := minIORepo(t, m, bucket, proxy.Addr) // the guest reaches the store through the proxy
	pg, rt, _, inst := deployedRuntime(t)
	opts := walbackup.ShipOptions{Direct: &walbackup.Direct{Guest: rt.(guest.DirectShipper), Uploads: repo, TTL: time.Minute,
		MaxBytes: 1 << 30, Clock: clock.New()}}
	pg.SwitchWAL(t, 3)
	files, err := rt.Ready(ctx)
	require.NoError(t, err)
	var raw int64
	for _, f := range files {
		raw += f.Size
	}
	// The request's head is a few hundred bytes, the bundle over a MiB.
	for _, cut := range []int64{0, 1, 300, 4 << 10, 256 << 10, 1 << 20} {
		proxy.CutAfter(cut)
		_, err := walbackup.ShipOnce(ctx, rt, repo, inst, opts)
		require.Error(t, err, "cut after %d bytes", cut)
		left, err := rt.Ready(ctx)
		require.NoError(t, err)
		require.Equal(t, files, left, "cut after %d bytes: the WAL stays in the guest", cut)
		require.Empty(t, m.Keys(t, bucket), "cut after %d bytes: nothing stored", cut)
	}
	proxy.CutAfter(-1)
	got, err := walbackup.ShipOnce(ctx, rt, repo, inst, opts)
	require.NoError(t, err)
	assert.Equal(t, len(files), got.Files)
	assert.Greater(t, got.StoredBytes, int64(1<<20), "every cut above fell inside the upload")
	assert.Equal(t, raw, got.RawBytes)
	assert.Len(t, stored(t, repo, inst, 1), len(files))
	assert.Len(t, m.Keys(t, bucket), 1)
}

// In mode auto, a guest that loses the store mid-session (here its path
// to it goes down) falls back to the host in the same interval, says so,
// and loses nothing; the next session ships directly again once the path
// is back.
func TestAutoFallsBackMidSession(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t)
	m := testenv.StartMinIO(t)
	bucket := m.NewBucket(t)
	proxy := testenv.StartProxy(t, m.Endpoint)
	s3repo := minIORepo(t, m, bucket, proxy.Addr)
	var c hostBytes
	r := newRealJob(t, fakeImages, func(cfg *walbackup.Config) {
		cfg.Repository = countingS3{s3repo, &c}
		cfg.Guests = countingDeployer{cfg.Guests, &c}
	})
	ctx := context.Background()
	child := walbackup.ChildJobName("Daily DB Job")
	require.NoError(t, r.job.Enable(ctx))
	r.idle(t)
	r.pg.SwitchWAL(t, 2)
	r.step(t, walbackup.DefaultLogBackupInterval)
	require.Zero(t, c.segments.Load(), "direct first: %s", sessionLog(t, r.harness, child))

	proxy.Down()
	r.pg.SwitchWAL(t, 2)
	r.step(t, walbackup.DefaultLogBackupInterval)
	log := sessionLog(t, r.harness, child)
	assert.Contains(t, log, "warning machine db1: WAL ships through the host from now on (shipping mode auto): the guest cannot reach the repository", log)
	assert.Positive(t, c.segments.Load(), "then through the host")
	files, err := os.ReadDir(r.walDir)
	require.NoError(t, err)
	var waiting []string
	for _, f := range files {
		if isSegment(f.Name()) {
			waiting = append(waiting, f.Name())
		}
	}
	assert.Empty(t, waiting, "nothing waits in the guest: %s", log)
	require.NoError(t, r.job.Disable(ctx))
	ss := r.sessions(t, child)
	require.Len(t, ss, 1)
	inst := r.instance(t)
	in := stored(t, s3repo, inst, 1)
	assert.GreaterOrEqual(t, int64(len(in)), ss[0].Counters.Files-1, "every counted file is stored (the .history aside)")
	assert.GreaterOrEqual(t, ss[0].Counters.Files, int64(4))

	proxy.Up()
	before := c.segments.Load()
	require.NoError(t, r.job.Enable(ctx))
	r.idle(t)
	r.pg.SwitchWAL(t, 2)
	r.step(t, walbackup.DefaultLogBackupInterval)
	assert.Equal(t, before, c.segments.Load(), "direct again in the next session: %s", sessionLog(t, r.harness, child))
	require.NoError(t, r.job.Disable(ctx))
}

// Direct shipping puts no secret of the store's into the guest: the
// runtime's environment and arguments and every file in the guest's WAL
// folder (staged bundles included) hold no form of the secret key, and
// the authorisations' signatures reach neither the logs nor the session
// records.
func TestDirectShippingKeepsTheStoreSecretOutOfTheGuest(t *testing.T) {
	t.Parallel()
	m, _, s3repo := minIOBucketRepo(t, "")
	var c hostBytes
	r := newRealJob(t, fakeImages, func(cfg *walbackup.Config) {
		cfg.Repository = s3repo
		cfg.Guests = countingDeployer{cfg.Guests, &c}
		cfg.Shipping.Mode = walbackup.ShipDirect
	})
	ctx := context.Background()
	child := walbackup.ChildJobName("Daily DB Job")
	require.NoError(t, r.job.Enable(ctx))
	r.idle(t)
	r.pg.SwitchWAL(t, 2)
	r.step(t, walbackup.DefaultLogBackupInterval)
	log := sessionLog(t, r.harness, child)
	require.Contains(t, log, "shipped", log)
	require.Zero(t, c.segments.Load())

	secrets := forms([]byte(m.SecretKey))
	// The runtimes this test binary runs, this job's among them: their
	// environment and command line.
	procs, err := filepath.Glob("/proc/[0-9]*/exe")
	require.NoError(t, err)
	var runtimes int
	for _, exe := range procs {
		if target, err := os.Readlink(exe); err != nil || filepath.Base(target) != "pglogship-runtime" {
			continue
		}
		runtimes++
		for _, f := range []string{"environ", "cmdline"} {
			b, err := os.ReadFile(filepath.Join(filepath.Dir(exe), f))
			require.NoError(t, err)
			for _, s := range secrets {
				assert.NotContains(t, string(b), s, "the secret key in the runtime's %s", f)
			}
		}
	}
	require.Positive(t, runtimes, "the runtime is running")
	require.NoError(t, filepath.WalkDir(r.walDir, func(path string, d iofs.DirEntry, err error) error {
		if errors.Is(err, iofs.ErrNotExist) {
			return nil // shipped WAL the runtime unlinks in the background
		}
		require.NoError(t, err)
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, iofs.ErrNotExist) {
			return nil
		}
		require.NoError(t, err)
		for _, s := range secrets {
			assert.False(t, strings.Contains(string(b), s), "the secret key in %s", path)
		}
		return nil
	}))
	require.NoError(t, r.job.Disable(ctx))
	all := r.logs.String() + sessionLog(t, r.harness, child)
	for _, s := range append(secrets, "X-Amz-Signature=") {
		assert.NotContains(t, all, s)
	}
}

// Direct shipping into a file system repository the guest reaches
// itself (its own mount of the repository's folder; here the same
// folder): no WAL byte passes through the host, the host reads every
// bundle back before the WAL leaves the guest, and the WAL is stored
// byte-identical.
func TestDirectShippingIntoTheGuestsOwnMount(t *testing.T) {
	t.Parallel()
	var c hostBytes
	root := filepath.Join(t.TempDir(), "repository")
	repo, err := fsrepo.New(fsrepo.Config{Root: root})
	require.NoError(t, err)
	r2 := newRealJob(t, fakeImages, func(cfg *walbackup.Config) {
		cfg.Repository = repo
		cfg.Guests = countingDeployer{cfg.Guests, &c}
		cfg.Shipping.Mode = walbackup.ShipDirect
		cfg.Machines[0].RepositoryPath = root
	})
	shipDirectlyAndCheck(t, r2, &c, repo, "WAL ships directly from the guest to the repository (shipping mode direct")
}

// shipDirectlyAndCheck runs r's job for one interval of real WAL and
// checks that it shipped the way the session log line path says, with no
// WAL byte through the host (c counts them), byte-identical into repo, and
// that the files left the guest.
func shipDirectlyAndCheck(t *testing.T, r *realJob, c *hostBytes, repo repository.Repository, path string) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, r.job.Enable(ctx))
	r.idle(t)
	r.pg.SwitchWAL(t, 3)
	originals := map[string][]byte{}
	entries, err := os.ReadDir(r.walDir)
	require.NoError(t, err)
	for _, e := range entries {
		if isSegment(e.Name()) {
			b, err := os.ReadFile(filepath.Join(r.walDir, e.Name()))
			require.NoError(t, err)
			originals[e.Name()] = b
		}
	}
	require.GreaterOrEqual(t, len(originals), 3)
	r.step(t, walbackup.DefaultLogBackupInterval)
	require.NoError(t, r.job.Disable(ctx))
	log := sessionLog(t, r.harness, walbackup.ChildJobName("Daily DB Job"))
	assert.Contains(t, log, path, log)
	assert.Zero(t, c.segments.Load(), "no segment byte through the host")
	assert.Zero(t, c.bundles.Load(), "no bundle byte put by the host")
	in := stored(t, repo, r.instance(t), 1)
	for n, b := range originals {
		assert.Equal(t, b, in[n], "%s byte-identical", n)
		_, err := os.Stat(filepath.Join(r.walDir, n))
		assert.True(t, os.IsNotExist(err), "%s left the guest", n)
	}
}

// countingWALRepo counts the WAL bundle bytes the host puts into any
// repository.
type countingWALRepo struct {
	repository.Repository
	c *hostBytes
}

func (r countingWALRepo) Put(ctx context.Context, name string, rd io.Reader) error {
	return r.Repository.Put(ctx, name, r.c.countBundle(name, rd))
}

// Direct shipping into an SFTP repository through the guest's own
// account: a key of the guest's (not the host's), the server's host key
// verified; no WAL byte passes through the host, which reads every bundle
// back; the WAL is stored byte-identical. A server with another host key
// is refused.
func TestDirectShippingOverTheGuestsOwnSFTPAccount(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t)
	ctx := context.Background()
	sshd := testenv.StartSSHD(t, testenv.SSHDConfig{})
	root := filepath.Join(testenv.UserDir(t, sshd.User), "repository")
	cc := sshd.ClientConfig(t)
	repo, err := sftprepo.New(ctx, sftprepo.Config{Addr: sshd.Addr, User: sshd.User, Auth: cc.Auth, HostKeyCallback: cc.HostKeyCallback, Root: root})
	require.NoError(t, err)
	t.Cleanup(func() { repo.Close() })
	guestKey := filepath.Join(t.TempDir(), "guest_ed25519_key")
	sshd.AddClientKey(t, guestKey)
	var c hostBytes
	r := newRealJob(t, fakeImages, func(cfg *walbackup.Config) {
		cfg.Repository = countingWALRepo{repo, &c}
		cfg.Guests = countingDeployer{cfg.Guests, &c}
		cfg.Shipping.Mode = walbackup.ShipDirect
		cfg.Machines[0].RepositorySFTP = &guest.SFTPAccess{Addr: sshd.Addr, User: sshd.User, KeyFile: guestKey,
			KnownHosts: sshd.KnownHostsLine, Root: root}
	})
	shipDirectlyAndCheck(t, r, &c, repo, "WAL ships directly from the guest to the repository (shipping mode direct")

	t.Run("a server with another host key is refused", func(t *testing.T) {
		other := testenv.StartSSHD(t, testenv.SSHDConfig{})
		rt, err := r.deployer.Deploy(ctx, guest.Target{Machine: "db1"})
		require.NoError(t, err)
		defer rt.Close(ctx)
		err = rt.(guest.DirectShipper).ProbeDestination(ctx, guest.Destination{SFTP: &guest.SFTPAccess{Addr: sshd.Addr, User: sshd.User,
			KeyFile: guestKey, KnownHosts: other.KnownHostsLine, Root: root}})
		require.ErrorIs(t, err, guest.ErrHostKey)
	})
}

// farDeployer hands out runtimes whose guest cannot open a connection to
// the repository itself (as behind a firewall): a send or probe that is
// not through a log shipping server fails as unreachable.
type farDeployer struct{ countingDeployer }

func (d farDeployer) Deploy(ctx context.Context, t guest.Target) (guest.Runtime, error) {
	rt, err := d.countingDeployer.Deploy(ctx, t)
	if err != nil {
		return nil, err
	}
	return farRuntime{rt.(countingRuntime)}, nil
}

type farRuntime struct{ countingRuntime }

func (r farRuntime) ProbeDestination(ctx context.Context, to guest.Destination) error {
	if to.Via == nil {
		return fmt.Errorf("%w: no route to %s", guest.ErrUnreachable, to)
	}
	return r.countingRuntime.ProbeDestination(ctx, to)
}

func (r farRuntime) SendBundle(ctx context.Context, object string, to guest.Destination) error {
	if to.Via == nil {
		return fmt.Errorf("%w: no route to %s", guest.ErrUnreachable, to)
	}
	return r.countingRuntime.SendBundle(ctx, object, to)
}

// A named log shipping server (Shipping.Server): a real OpenSSH server the
// guest logs into with a key of its own, which connects on to the real
// MinIO. A guest that cannot reach the store itself ships through it in
// mode auto; in mode host the server is used without trying the store
// first. Either way the WAL passes through the server (a proxy in front of
// it counts the bytes), none through the host, and it is stored
// byte-identical and leaves the guest. A server whose host key is not the
// one given is refused: the WAL then ships through the host, and the
// session warns.
func TestShippingThroughANamedLogShippingServer(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t)
	sshd := testenv.StartSSHD(t, testenv.SSHDConfig{})
	proxy := testenv.StartProxy(t, sshd.Addr)
	guestKey := filepath.Join(t.TempDir(), "guest_ed25519_key")
	sshd.AddClientKey(t, guestKey)
	server := &guest.ShippingServer{Addr: proxy.Addr, User: sshd.User, KeyFile: guestKey, KnownHosts: sshd.KnownHostsLine}

	for _, mode := range []walbackup.ShippingMode{walbackup.ShipAuto, walbackup.ShipHost} {
		t.Run(string(mode), func(t *testing.T) {
			_, _, s3repo := minIOBucketRepo(t, "")
			var c hostBytes
			before := proxy.Sent()
			r := newRealJob(t, fakeImages, func(cfg *walbackup.Config) {
				cfg.Repository = countingS3{s3repo, &c}
				cfg.Guests = farDeployer{countingDeployer{cfg.Guests, &c}}
				cfg.Shipping.Mode = mode
				cfg.Shipping.Server = server
			})
			shipDirectlyAndCheck(t, r, &c, s3repo, "WAL ships from the guest through log shipping server "+server.String()+
				" to the repository (shipping mode "+string(mode)+"; the guest reaches it there)")
			refs, err := repository.Bundles(context.Background(), s3repo, r.instance(t), 1)
			require.NoError(t, err)
			require.NotEmpty(t, refs)
			var bundles int64
			for _, b := range refs {
				bundles += b.Object.Size
			}
			assert.Greater(t, proxy.Sent()-before, bundles, "every bundle went through the log shipping server")
			if mode == walbackup.ShipAuto {
				log := sessionLog(t, r.harness, walbackup.ChildJobName("Daily DB Job"))
				assert.NotContains(t, log, "warning machine db1: WAL ships", log)
			}
		})
	}

	t.Run("a server with another host key", func(t *testing.T) {
		_, _, s3repo := minIOBucketRepo(t, "")
		other := testenv.StartSSHD(t, testenv.SSHDConfig{})
		var c hostBytes
		r := newRealJob(t, fakeImages, func(cfg *walbackup.Config) {
			cfg.Repository = countingS3{s3repo, &c}
			cfg.Guests = farDeployer{countingDeployer{cfg.Guests, &c}}
			cfg.Shipping.Mode = walbackup.ShipHost
			s := *server
			s.KnownHosts = other.KnownHostsLine
			cfg.Shipping.Server = &s
		})
		ctx := context.Background()
		require.NoError(t, r.job.Enable(ctx))
		r.idle(t)
		r.pg.SwitchWAL(t, 2)
		r.step(t, walbackup.DefaultLogBackupInterval)
		require.NoError(t, r.job.Disable(ctx))
		log := sessionLog(t, r.harness, walbackup.ChildJobName("Daily DB Job"))
		assert.Contains(t, log, "warning machine db1: WAL ships through the host (shipping mode host): through log shipping server "+
			server.String()+": ", log)
		assert.Contains(t, log, "host key", log)
		assert.Positive(t, c.segments.Load(), "the WAL went through the host")
		ss := r.sessions(t, walbackup.ChildJobName("Daily DB Job"))
		require.NotEmpty(t, ss)
		assert.GreaterOrEqual(t, ss[0].Counters.Files, int64(2), log)
	})
}

// Shipping directly, a timeline history file goes from the guest to the
// store too, as an object of its own under an authorisation (the store
// kept its checksum), not through the host; it is read back before it
// leaves the guest. Other content already under its name is a split
// brain, kept aside, never overwritten.
func TestDirectShippingSendsHistoryFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, _, repo := minIOBucketRepo(t, "")
	_, rt, dir, inst := deployedRuntime(t)
	var c hostBytes
	counted := countingRuntime{rt.(*remote.Runtime), &c}
	history := func(name, content string) {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		st, err := os.Stat(dir)
		require.NoError(t, err)
		sys := st.Sys().(*syscall.Stat_t)
		require.NoError(t, os.Chown(p, int(sys.Uid), int(sys.Gid)))
	}
	direct := walbackup.ShipOptions{Direct: &walbackup.Direct{Guest: counted, Uploads: repo, TTL: time.Minute, MaxBytes: 1 << 30,
		Clock: clock.New()}}

	content := "1\t0/3000000\tno recovery target specified\n"
	history("00000002.history", content)
	got, err := walbackup.ShipOnce(ctx, counted, repo, inst, direct)
	require.NoError(t, err)
	obj := inst.HistoryName("00000002.history")
	assert.Contains(t, got.Objects, obj)
	assert.True(t, got.Direct)
	assert.Zero(t, c.segments.Load(), "no byte of it through the host")
	stored, sum, err := repo.StoredChecksum(ctx, obj)
	require.NoError(t, err, "stored under an authorisation, with the store's checksum")
	assert.Equal(t, int64(len(content)), stored.Size)
	assert.Equal(t, sha256.Sum256([]byte(content)), sum)
	rc, err := repo.Get(ctx, obj, 0, -1)
	require.NoError(t, err)
	b, err := io.ReadAll(rc)
	rc.Close()
	require.NoError(t, err)
	assert.Equal(t, content, string(b))
	_, err = os.Stat(filepath.Join(dir, "00000002.history"))
	assert.True(t, os.IsNotExist(err), "gone from the guest once verified")

	// Another history of timeline 2 (a second promotion to the same
	// timeline elsewhere): kept aside, the stored one untouched.
	history("00000002.history", "1\t0/4000000\tno recovery target specified\n")
	_, err = walbackup.ShipOnce(ctx, counted, repo, inst, direct)
	require.ErrorIs(t, err, walbackup.ErrSplitBrain)
	rc, err = repo.Get(ctx, obj, 0, -1)
	require.NoError(t, err)
	b, err = io.ReadAll(rc)
	rc.Close()
	require.NoError(t, err)
	assert.Equal(t, content, string(b), "never overwritten")
}
