package qemu

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/qemu/qmp"
	"github.com/pglogship/pglogship/hypervisor/qemu/qmp/qmptest"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	repofs "github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/repository/memory"
)

const (
	mib      = 1 << 20
	diskSize = 16 * mib
)

// lab is a bare QEMU (no guest OS) with a 16 MiB disk, a Hypervisor for
// it and a file system repository.
type lab struct {
	q    *testenv.BareQEMU
	h    *Hypervisor
	repo *repofs.Repo
	dir  string // for test files
}

func newLab(t *testing.T, edit func(*Config)) *lab {
	t.Helper()
	testenv.SkipIfShort(t)
	q := testenv.StartBareQEMU(t, testenv.BareQEMUConfig{DiskSize: diskSize})
	dir := t.TempDir()
	cfg := Config{
		VMs:     []VM{{ID: "vm1", Name: "db1", QMPSocket: q.QMPSocket, SSHAddr: "127.0.0.1:2201"}},
		WorkDir: filepath.Join(dir, "work"),
		QemuImg: q.QemuImg,
		Logger:  testenv.Logger(t),
	}
	if edit != nil {
		edit(&cfg)
	}
	h, err := New(cfg)
	require.NoError(t, err)
	repo, err := repofs.New(repofs.Config{Root: filepath.Join(dir, "repo")})
	require.NoError(t, err)
	return &lab{q: q, h: h, repo: repo, dir: dir}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// randomFile writes n random bytes to a new file and returns its path:
// guest data that does not compress.
func (l *lab) randomFile(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	f, err := os.CreateTemp(l.q.Dir, "random-")
	require.NoError(t, err)
	_, err = f.Write(b)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return f.Name()
}

// backup snapshots, exports under prefix and releases.
func (l *lab) backup(t *testing.T, prefix string, base *hypervisor.Image) hypervisor.Image {
	t.Helper()
	ctx := ctxT(t)
	s, err := l.h.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{Base: base})
	require.NoError(t, err)
	start := time.Now()
	img, err := s.Export(ctx, l.repo, prefix, nil)
	require.NoError(t, err)
	t.Logf("%s: full=%v, stored %d bytes, dirty %q bytes, export %v", prefix, img.Full, img.Objects[0].Size,
		img.Meta[MetaDirtyBytes], time.Since(start).Round(time.Millisecond))
	require.NoError(t, s.Release(ctx))
	return img
}

func (l *lab) restore(t *testing.T, name string, chain ...hypervisor.Image) string {
	t.Helper()
	target := filepath.Join(l.dir, name)
	require.NoError(t, l.h.Restore(ctxT(t), chain, l.repo, target, nil))
	return target
}

func (l *lab) copyDisk(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(l.dir, name)
	l.q.CopyDisk(t, p)
	return p
}

// jobs returns QEMU's jobs.
func (l *lab) jobs(t *testing.T) []jobInfo {
	t.Helper()
	var jobs []jobInfo
	l.q.Execute(t, "query-jobs", nil, &jobs)
	return jobs
}

// bitmaps returns the names of the disk node's dirty bitmaps and counts.
func (l *lab) bitmaps(t *testing.T) map[string]int64 {
	t.Helper()
	n, err := queryNode(ctxT(t), l.q.Control(), l.q.Node)
	require.NoError(t, err)
	m := map[string]int64{}
	for _, bm := range n.DirtyBitmaps {
		if bm.Name != "" {
			m[bm.Name] = bm.Count
		}
	}
	return m
}

// requireNothingLeft checks that no job, target node or file of a
// snapshot remains, and that the machine is free.
func (l *lab) requireNothingLeft(t *testing.T) {
	t.Helper()
	assert.Empty(t, l.jobs(t))
	nodes, err := queryNodes(ctxT(t), l.q.Control())
	require.NoError(t, err)
	for name := range nodes {
		assert.False(t, strings.HasPrefix(name, "pgls-"), "target node %s left", name)
	}
	entries, err := os.ReadDir(l.h.cfg.WorkDir)
	require.NoError(t, err)
	assert.Empty(t, entries, "files left in WorkDir")
	l.h.mu.Lock()
	assert.Empty(t, l.h.held, "machine still held")
	l.h.mu.Unlock()
}

func TestQEMUFullImageIsThePointInTime(t *testing.T) {
	// 16 MiB at 16 MiB/s: the job runs for about a second, long enough
	// for the guest to write while it copies.
	l := newLab(t, func(c *Config) { c.JobSpeed = 16 * mib })
	ctx := ctxT(t)
	l.q.WriteFile(t, l.randomFile(t, 2*mib), 1*mib, 2*mib)
	l.q.Write(t, 0x5a, 12*mib, 1*mib)
	atSnapshot := l.copyDisk(t, "at-snapshot.qcow2")

	s, err := l.h.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{})
	require.NoError(t, err)
	assert.False(t, s.Taken().IsZero())
	// The guest writes on, over data copied already and data not yet
	// copied, while the job runs.
	l.q.Write(t, 0x11, 1*mib, 1*mib)
	l.q.Write(t, 0x22, 12*mib, 64<<10)
	jobs := l.jobs(t)
	require.Len(t, jobs, 1)
	assert.Equal(t, "running", jobs[0].Status, "the writes must land while the job copies")

	var mu sync.Mutex
	var seen []hypervisor.Progress
	img, err := s.Export(ctx, l.repo, "vm1/images/0001", func(p hypervisor.Progress) {
		mu.Lock()
		seen = append(seen, p)
		mu.Unlock()
	})
	require.NoError(t, err)
	require.NoError(t, s.Release(ctx))
	require.NoError(t, s.Release(ctx), "Release is idempotent")
	l.requireNothingLeft(t)

	assert.True(t, img.Full)
	assert.Equal(t, "vm1", img.Machine)
	assert.Equal(t, s.Taken(), img.Taken)
	assert.Empty(t, img.Base)
	require.Len(t, img.Objects, 1)
	obj := img.Objects[0]
	assert.Equal(t, "vm1/images/0001/"+ObjectName, obj.Name)
	stat, err := l.repo.Stat(ctx, obj.Name)
	require.NoError(t, err)
	assert.Equal(t, stat.Size, obj.Size)
	assert.Len(t, obj.SHA256, 64)
	assert.Equal(t, FormatQcow2, img.Meta[MetaFormat])
	assert.Equal(t, "disk0", img.Meta[MetaNode])
	assert.Equal(t, strconv.Itoa(diskSize), img.Meta[MetaVirtualSize])
	assert.True(t, strings.HasPrefix(img.Meta[MetaBitmap], bitmapPrefix))
	assert.Contains(t, l.bitmaps(t), img.Meta[MetaBitmap], "the image's bitmap counts on in QEMU")
	// The stored image is about the data written, not the disk size.
	assert.Less(t, obj.Size, int64(3*mib+256<<10))

	// Progress: the job's copy of the whole disk, then the upload to its end.
	mu.Lock()
	require.NotEmpty(t, seen)
	assert.Contains(t, seen, hypervisor.Progress{Done: diskSize, Total: diskSize})
	last := seen[len(seen)-1]
	mu.Unlock()
	assert.Equal(t, last.Total, last.Done)

	restored := l.restore(t, "restored.qcow2", img)
	assert.True(t, l.q.Identical(t, atSnapshot, restored), "restore must equal the disk at the snapshot")
	assert.False(t, l.q.Identical(t, l.q.Disk, restored), "writes after the snapshot must not be in the image")
	out, err := exec.Command(l.q.QemuImg, "info", "--output=json", restored).Output()
	require.NoError(t, err)
	var info map[string]any
	require.NoError(t, json.Unmarshal(out, &info))
	assert.Equal(t, "qcow2", info["format"])
	assert.NotContains(t, info, "backing-filename", "a restored image stands alone")
}

func TestQEMUIncrementalChainStoresOnlyTheChanges(t *testing.T) {
	l := newLab(t, nil)
	l.q.WriteFile(t, l.randomFile(t, 4*mib), 0, 4*mib)
	atFull := l.copyDisk(t, "at-full.qcow2")
	full := l.backup(t, "vm1/images/0001", nil)
	require.True(t, full.Full)

	// Known writes of data that does not compress, so the stored size
	// shows what the image costs beyond the changed bytes themselves.
	l.q.WriteFile(t, l.randomFile(t, 3*mib), 6*mib, 3*mib)
	l.q.WriteFile(t, l.randomFile(t, 1*mib), 12*mib, 1*mib)
	atInc1 := l.copyDisk(t, "at-inc1.qcow2")
	dirty := l.bitmaps(t)[full.Meta[MetaBitmap]]
	assert.EqualValues(t, 4*mib, dirty, "QEMU's dirty count of the full image's bitmap")

	inc1 := l.backup(t, "vm1/images/0002", &full)
	require.False(t, inc1.Full, "the full image's bitmap is intact")
	assert.Equal(t, full.Prefix, inc1.Base)
	assert.Equal(t, strconv.FormatInt(dirty, 10), inc1.Meta[MetaDirtyBytes])
	stored := inc1.Objects[0].Size
	t.Logf("incremental: stored %d bytes for %d dirty bytes (%.4fx)", stored, dirty, float64(stored)/float64(dirty))
	assert.LessOrEqual(t, float64(stored), 1.1*float64(dirty), "incremental stored size at most 1.1x the dirty bytes")

	// Zeroes over old data must read as zeroes after restore, not as the
	// full image's data underneath.
	l.q.WriteZeroes(t, 1*mib, 1*mib)
	l.q.Write(t, 0x77, 15*mib, 64<<10)
	atInc2 := l.copyDisk(t, "at-inc2.qcow2")
	inc2 := l.backup(t, "vm1/images/0003", &inc1)
	require.False(t, inc2.Full)
	assert.Equal(t, strconv.Itoa(mib+64<<10), inc2.Meta[MetaDirtyBytes])
	assert.Less(t, inc2.Objects[0].Size, int64(64<<10), "zeroes and a pattern, compressed")
	assert.Equal(t, map[string]int64{inc2.Meta[MetaBitmap]: 0}, l.bitmaps(t),
		"only the newest image's bitmap is kept")

	assert.True(t, l.q.Identical(t, atFull, l.restore(t, "full.qcow2", full)))
	assert.True(t, l.q.Identical(t, atInc1, l.restore(t, "inc1.qcow2", full, inc1)))
	assert.True(t, l.q.Identical(t, atInc2, l.restore(t, "inc2.qcow2", full, inc1, inc2)))

	ctx := ctxT(t)
	for name, chain := range map[string][]hypervisor.Image{
		"no full image": {inc1, inc2},
		"gap":           {full, inc2},
		"empty":         nil,
	} {
		err := l.h.Restore(ctx, chain, l.repo, filepath.Join(l.dir, "bad.qcow2"), nil)
		assert.Error(t, err, name)
		assert.NoFileExists(t, filepath.Join(l.dir, "bad.qcow2"))
	}
}

func TestQEMUMissingBitmapGivesAFullImage(t *testing.T) {
	l := newLab(t, nil)
	l.q.Write(t, 0x5a, 0, 1*mib)
	full := l.backup(t, "vm1/images/0001", nil)

	l.q.Execute(t, "block-dirty-bitmap-remove", map[string]string{"node": "disk0", "name": full.Meta[MetaBitmap]}, nil)
	l.q.Write(t, 0x6b, 2*mib, 1*mib)
	now := l.copyDisk(t, "now.qcow2")
	next := l.backup(t, "vm1/images/0002", &full)
	assert.True(t, next.Full, "without the base's bitmap the image must be full")
	assert.Empty(t, next.Base)
	assert.True(t, l.q.Identical(t, now, l.restore(t, "next.qcow2", next)))

	// A base of another machine, or of another node, gives a full image too.
	other := next
	other.Machine = "vm2"
	assert.True(t, l.backup(t, "vm1/images/0003", &other).Full)
}

func TestQEMUAbandonedIncrementalKeepsTheBaseComplete(t *testing.T) {
	l := newLab(t, nil)
	ctx := ctxT(t)
	full := l.backup(t, "vm1/images/0001", nil)

	l.q.Write(t, 0x01, 0, 1*mib)
	s, err := l.h.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{Base: &full})
	require.NoError(t, err)
	require.NoError(t, s.Release(ctx)) // never exported
	l.requireNothingLeft(t)
	assert.Equal(t, []string{full.Meta[MetaBitmap]}, mapKeys(l.bitmaps(t)))

	// An export that fails after the job copied everything: the base's
	// bitmap must still count from the full image.
	l.q.Write(t, 0x02, 4*mib, 1*mib)
	s, err = l.h.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{Base: &full})
	require.NoError(t, err)
	failing := memory.New()
	failing.SetFault(func(memory.Op, string) error { return errors.New("repository down") })
	_, err = s.Export(ctx, failing, "vm1/images/0002", nil)
	require.ErrorContains(t, err, "repository down")
	require.NoError(t, s.Release(ctx))
	l.requireNothingLeft(t)

	l.q.Write(t, 0x03, 8*mib, 1*mib)
	now := l.copyDisk(t, "now.qcow2")
	inc := l.backup(t, "vm1/images/0002", &full)
	require.False(t, inc.Full)
	assert.Equal(t, strconv.Itoa(3*mib), inc.Meta[MetaDirtyBytes], "every write since the full image")
	assert.True(t, l.q.Identical(t, now, l.restore(t, "inc.qcow2", full, inc)))
}

func mapKeys(m map[string]int64) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// corruptGetter serves objects with one byte flipped, or cut short.
type corruptGetter struct {
	repo     hypervisor.ObjectGetter
	truncate bool
}

func (g corruptGetter) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	rc, err := g.repo.Get(ctx, name, offset, length)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	if g.truncate {
		b = b[:len(b)-100]
	} else {
		b[len(b)/2] ^= 0x40
	}
	return io.NopCloser(strings.NewReader(string(b))), nil
}

func TestQEMURestoreRefusesCorruptObjectsAndExistingTargets(t *testing.T) {
	l := newLab(t, nil)
	ctx := ctxT(t)
	l.q.WriteFile(t, l.randomFile(t, 1*mib), 0, 1*mib)
	img := l.backup(t, "vm1/images/0001", nil)

	target := filepath.Join(l.dir, "target.qcow2")
	for name, g := range map[string]corruptGetter{"flipped byte": {repo: l.repo}, "truncated": {repo: l.repo, truncate: true}} {
		err := l.h.Restore(ctx, []hypervisor.Image{img}, g, target, nil)
		require.ErrorIs(t, err, ErrCorrupt, name)
		assert.NoFileExists(t, target, name)
	}
	entries, err := os.ReadDir(l.h.cfg.WorkDir)
	require.NoError(t, err)
	assert.Empty(t, entries, "the temporary folder is removed")
	dirEntries, err := os.ReadDir(l.dir)
	require.NoError(t, err)
	for _, e := range dirEntries {
		assert.NotContains(t, e.Name(), ".partial-")
	}

	require.NoError(t, os.WriteFile(target, []byte("keep me"), 0o600))
	err = l.h.Restore(ctx, []hypervisor.Image{img}, l.repo, target, nil)
	require.ErrorIs(t, err, fs.ErrExist)
	b, err := os.ReadFile(target)
	require.NoError(t, err)
	assert.Equal(t, "keep me", string(b))
}

func TestQEMUOneSnapshotPerMachine(t *testing.T) {
	l := newLab(t, nil)
	ctx := ctxT(t)
	ms, err := l.h.Machines(ctx)
	require.NoError(t, err)
	assert.Equal(t, []hypervisor.Machine{{ID: "vm1", Name: "db1", GuestAddr: "127.0.0.1:2201"}}, ms)

	// Of concurrent snapshots of one machine, one wins; the rest are busy.
	var wg sync.WaitGroup
	snaps := make(chan hypervisor.Snapshot, 4)
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := l.h.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{})
			if err != nil {
				errs <- err
				return
			}
			snaps <- s
		}()
	}
	wg.Wait()
	close(snaps)
	close(errs)
	require.Len(t, snaps, 1)
	for err := range errs {
		require.ErrorIs(t, err, hypervisor.ErrBusy)
	}
	s := <-snaps
	_, err = l.h.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{})
	require.ErrorIs(t, err, hypervisor.ErrBusy)
	_, err = l.h.Snapshot(ctx, "nope", hypervisor.SnapshotOptions{})
	require.ErrorIs(t, err, hypervisor.ErrNotFound)
	require.NoError(t, s.Release(ctx))
	_, err = s.Export(ctx, l.repo, "vm1/images/x", nil)
	require.Error(t, err, "a released snapshot cannot be exported")

	_, err = l.h.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{Quiesce: true})
	require.ErrorIs(t, err, hypervisor.ErrUnsupported, "no guest agent socket")

	s, err = l.h.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{})
	require.NoError(t, err, "free again after Release")
	require.NoError(t, s.Release(ctx))
	l.requireNothingLeft(t)
}

func TestQEMURefusalsCarryQEMUsMessage(t *testing.T) {
	// The raw file node cannot hold persistent bitmaps; QEMU says so.
	l := newLab(t, func(c *Config) { c.VMs[0].Node = "disk0-file" })
	ctx := ctxT(t)
	for range 2 { // the failure frees the machine: the second is not ErrBusy
		_, err := l.h.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{})
		require.Error(t, err)
		var qe *qmp.Error
		require.ErrorAs(t, err, &qe)
		assert.Equal(t, qmp.ClassGenericError, qe.Class)
		assert.Contains(t, err.Error(), "Can't store persistent bitmaps to disk0-file")
		l.requireNothingLeft(t)
	}
}

func TestQEMUExportEndsWithItsContext(t *testing.T) {
	l := newLab(t, func(c *Config) { c.JobSpeed = 1 * mib }) // a 16 s job
	ctx := ctxT(t)
	s, err := l.h.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{})
	require.NoError(t, err)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = s.Export(short, l.repo, "vm1/images/0001", nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Len(t, l.jobs(t), 1, "the job runs on until Release")

	require.NoError(t, s.Release(ctx))
	l.requireNothingLeft(t)
	assert.Empty(t, l.bitmaps(t), "the unexported snapshot's bitmap is removed")
	var objs int
	require.NoError(t, l.repo.List(ctx, "", func(repository.Object) error {
		objs++
		return nil
	}))
	assert.Zero(t, objs)
}

func TestQEMUQuiesceFreezesAroundTheTransaction(t *testing.T) {
	agent := qmptest.NewAgent(t)
	l := newLab(t, func(c *Config) {
		c.VMs[0].GuestAgentSocket = agent.Socket
		c.GuestAgentTimeout = 500 * time.Millisecond
	})
	ctx := ctxT(t)
	s, err := l.h.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{Quiesce: true})
	require.NoError(t, err)
	assert.Equal(t, []string{"guest-sync-delimited", "guest-fsfreeze-freeze", "guest-fsfreeze-thaw"}, agent.Calls())
	assert.False(t, agent.Frozen())
	require.NoError(t, s.Release(ctx))

	agent.FailFreeze("failed to freeze /var/lib/postgresql: Device or resource busy")
	_, err = l.h.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{Quiesce: true})
	require.ErrorContains(t, err, "Device or resource busy")
	assert.False(t, agent.Frozen(), "a failed freeze is thawed")
	l.requireNothingLeft(t)

	agent.FailFreeze("")
	agent.SetSilent(true) // no agent runs in the guest
	_, err = l.h.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{Quiesce: true})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	l.requireNothingLeft(t)
}

// Publish fetches the chain as it is stored, each image backed by the one
// before, and puts an overlay on it: the overlay reads as the restored
// disk, a write into it lands in the overlay only (the fetched chain, and
// the repository, stay as they were), an existing directory is refused,
// and a chain that does not verify leaves nothing.
func TestQEMUPublishOverlaysTheChain(t *testing.T) {
	l := newLab(t, nil)
	l.q.WriteFile(t, l.randomFile(t, 2*mib), 0, 2*mib)
	full := l.backup(t, "vm1/images/0001", nil)
	l.q.Write(t, 0x5a, 4*mib, mib)
	inc := l.backup(t, "vm1/images/0002", &full)
	require.False(t, inc.Full)
	restored := l.restore(t, "restored.qcow2", full, inc)
	before := l.repoSums(t)

	ctx := ctxT(t)
	dir := filepath.Join(l.dir, "published")
	disk, err := l.h.Publish(ctx, []hypervisor.Image{full, inc}, l.repo, dir, nil)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, OverlayName), disk)
	assert.True(t, l.q.Identical(t, restored, disk), "the overlay reads as the restored disk")
	info := l.q.BackingChain(t, disk)
	assert.Equal(t, []string{disk, filepath.Join(dir, "001.qcow2"), filepath.Join(dir, "000.qcow2")}, info, "the stored chain, not one converted image")
	for _, f := range info[1:] {
		st, err := os.Stat(f)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o400), st.Mode().Perm(), "%s is read-only", f)
	}

	// A write lands in the overlay only.
	top := filepath.Join(dir, "001.qcow2")
	topCopy := filepath.Join(l.dir, "top-before.qcow2")
	l.q.ConvertOf(t, top, topCopy)
	out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 64k", disk).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.False(t, l.q.Identical(t, restored, disk), "the write is in the overlay")
	assert.True(t, l.q.Identical(t, topCopy, top), "the chain under it is unchanged")
	assert.Equal(t, before, l.repoSums(t), "the repository is only read")

	_, err = l.h.Publish(ctx, []hypervisor.Image{full, inc}, l.repo, dir, nil)
	require.ErrorIs(t, err, fs.ErrExist)
	bad := filepath.Join(l.dir, "bad")
	_, err = l.h.Publish(ctx, []hypervisor.Image{full, inc, inc}, l.repo, bad, nil)
	require.Error(t, err)
	assert.NoDirExists(t, bad)
}

// repoSums is the SHA-256 of every object in the lab's repository.
func (l *lab) repoSums(t *testing.T) map[string][32]byte {
	t.Helper()
	sums := map[string][32]byte{}
	require.NoError(t, filepath.WalkDir(filepath.Join(l.dir, "repo"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		sums[p] = sha256.Sum256(b)
		return err
	}))
	return sums
}
