package walbackup_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/memory"
	"github.com/pglogship/pglogship/walbackup"
)

// fiveSegments is a backlog of five 5000-byte files of timeline 1, each
// with its own content.
func fiveSegments() map[string][]byte {
	files := map[string][]byte{}
	for i := 1; i <= 5; i++ {
		files[seg(1, i)] = bytes.Repeat([]byte{byte('a' + i)}, 5000)
	}
	return files
}

// A backlog larger than BundleBytes goes in several bundles, every file in
// exactly one, all read back before the guest lets them go.
func TestShipOnceSplitsTheBacklogIntoBundles(t *testing.T) {
	ctx := context.Background()
	files := fiveSegments()
	g, rt := fakeGuest(t, files)
	repo := &getCounter{Repository: memory.New()}
	got, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{BundleBytes: 10000})
	require.NoError(t, err)
	assert.Equal(t, 5, got.Files)
	assert.Equal(t, int64(25000), got.RawBytes)
	assert.Len(t, got.Objects, 3, "two files per bundle, the last one alone")
	assert.Empty(t, g.Waiting())
	for _, obj := range got.Objects {
		assert.Positive(t, repo.gets(obj), "%s read back", obj)
	}
	refs, err := repository.Bundles(ctx, repo, inst, 1)
	require.NoError(t, err)
	require.Len(t, refs, 3)
	assert.Equal(t, files, stored(t, repo, inst, 1), "each file once, as the guest had it")
}

// The read-back of a bundle runs while the next one is stored: the first
// read-back is held until the second bundle's Put has begun, which it
// could never be if they ran one after another.
func TestShipOnceReadsBackWhileTheNextBundleIsStored(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g, rt := fakeGuest(t, fiveSegments())
	repo := &overlapping{Repository: memory.New(), secondPut: make(chan struct{})}
	got, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{BundleBytes: 10000})
	require.NoError(t, err, "the first read-back waited for the second bundle's Put")
	assert.Equal(t, 5, got.Files)
	assert.Empty(t, g.Waiting())
}

// A bundle that fails its read-back keeps its files (and those after it)
// in the guest; the bundles verified before it count, and their files
// leave the guest. The next ship stores the rest, and every copy agrees.
func TestShipOnceCountsTheBundlesVerifiedBeforeAFailure(t *testing.T) {
	ctx := context.Background()
	files := fiveSegments()
	g, rt := fakeGuest(t, files)
	mem := memory.New()
	repo := &flipNth{Repository: mem, n: 2}
	got, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{BundleBytes: 10000})
	require.ErrorIs(t, err, bundle.ErrCorrupt)
	assert.Equal(t, 2, got.Files)
	assert.Equal(t, []string{seg(1, 1), seg(1, 2)}, got.Names)
	require.Len(t, got.Objects, 1)
	assert.Equal(t, []string{seg(1, 3), seg(1, 4), seg(1, 5)}, g.Waiting(), "the corrupt bundle's files and the later ones stay")

	_, err = mem.Stat(ctx, repo.flipped)
	require.ErrorIs(t, err, repository.ErrNotFound, "the bundle that failed its read-back is deleted")
	got, err = walbackup.ShipOnce(ctx, rt, mem, inst, walbackup.ShipOptions{BundleBytes: 10000})
	require.NoError(t, err)
	assert.Equal(t, 3, got.Files)
	assert.Empty(t, g.Waiting())
	assert.Equal(t, files, stored(t, mem, inst, 1))
}

// A bundle the repository refuses to store stops the ship; the bundle
// read back before it counts.
func TestShipOnceStoreFailureAfterAVerifiedBundle(t *testing.T) {
	ctx := context.Background()
	g, rt := fakeGuest(t, fiveSegments())
	mem := memory.New()
	down := errors.New("repository unreachable")
	puts := 0
	var mu sync.Mutex
	mem.SetFault(func(op memory.Op, _ string) error {
		mu.Lock()
		defer mu.Unlock()
		if op != memory.OpPut {
			return nil
		}
		if puts++; puts == 2 {
			return down
		}
		return nil
	})
	got, err := walbackup.ShipOnce(ctx, rt, mem, inst, walbackup.ShipOptions{BundleBytes: 10000})
	require.ErrorIs(t, err, down)
	assert.Equal(t, []string{seg(1, 1), seg(1, 2)}, got.Names)
	assert.Equal(t, []string{seg(1, 3), seg(1, 4), seg(1, 5)}, g.Waiting())
}

// getCounter counts the reads of each object.
type getCounter struct {
	repository.Repository
	mu sync.Mutex
	n  map[string]int
}

func (c *getCounter) Get(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[name]++
	c.mu.Unlock()
	return c.Repository.Get(ctx, name, off, length)
}

func (c *getCounter) gets(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

// overlapping holds the first bundle's reads until a second bundle's Put
// has begun.
type overlapping struct {
	repository.Repository
	mu        sync.Mutex
	bundles   int
	secondPut chan struct{}
}

func (o *overlapping) Put(ctx context.Context, name string, r io.Reader) error {
	if strings.Contains(name, "/wal/") {
		o.mu.Lock()
		if o.bundles++; o.bundles == 2 {
			close(o.secondPut)
		}
		o.mu.Unlock()
	}
	return o.Repository.Put(ctx, name, r)
}

func (o *overlapping) Get(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	select {
	case <-o.secondPut:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return o.Repository.Get(ctx, name, off, length)
}

// flipNth stores its nth object with one byte changed in its middle.
type flipNth struct {
	repository.Repository
	mu      sync.Mutex
	puts, n int
	flipped string
}

func (f *flipNth) Put(ctx context.Context, name string, r io.Reader) error {
	f.mu.Lock()
	f.puts++
	flip := f.puts == f.n
	if flip {
		f.flipped = name
	}
	f.mu.Unlock()
	if !flip {
		return f.Repository.Put(ctx, name, r)
	}
	return flipping{f.Repository}.Put(ctx, name, r)
}

// A file the repository holds already (its bundle stored, the guest kept
// it: the host stopped before the read-back, or the guest's remove failed)
// leaves the guest only once its stored bytes pass their checksum; a
// stored copy that does not is shipped again, in a newer bundle that
// readers take first.
func TestShipOnceChecksTheStoredCopyBeforeTheGuestLetsGo(t *testing.T) {
	ctx := context.Background()
	files := map[string][]byte{seg(1, 1): bytes.Repeat([]byte("one"), 1000), seg(1, 2): bytes.Repeat([]byte("two"), 1000)}
	g, rt := fakeGuest(t, files)
	repo := memory.New()
	failRemoves(g)
	// Both ships at the same (zero) time: the copy stored again must still
	// be the one readers take.
	got, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	require.Error(t, err)
	require.Len(t, g.Waiting(), 2)
	g.SetFault(nil)

	// The stored bundle goes bad afterwards (its index intact).
	obj := got.Objects[0]
	require.Empty(t, got.Objects[1:])
	rc, err := repo.Get(ctx, obj, 0, -1)
	require.NoError(t, err)
	b, err := io.ReadAll(rc)
	rc.Close()
	require.NoError(t, err)
	var first bundle.Entry
	eachEntry(t, repo, inst, 1, func(_ *bundle.Reader, e bundle.Entry) {
		if e.Name == seg(1, 1) {
			first = e
		}
	})
	require.NotZero(t, first.Length)
	b[first.Offset+first.Length/2] ^= 1 // inside the first file's frame
	require.NoError(t, repo.Delete(ctx, obj))
	require.NoError(t, repo.Put(ctx, obj, bytes.NewReader(b)))

	got, err = walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	require.NoError(t, err)
	assert.Equal(t, 2, got.Files)
	assert.Empty(t, g.Waiting())
	require.Len(t, got.Objects, 1, "the corrupt copy's file is stored again")
	assert.Contains(t, got.Objects[0], seg(1, 1)+"_"+seg(1, 1), "only the file whose stored copy failed")
	for n, want := range files {
		var buf bytes.Buffer
		require.NoError(t, walbackup.FetchWAL(ctx, repo, inst, n, nil, &buf), n)
		assert.Equal(t, want, buf.Bytes(), n)
	}
}

// A bundle whose index cannot be read does not hide the copies other
// bundles hold; with no other copy, its error is the answer.
func TestFetchWALSkipsAnUnreadableOverlappingBundle(t *testing.T) {
	ctx := context.Background()
	files := map[string][]byte{seg(1, 1): []byte("one"), seg(1, 2): []byte("two")}
	_, rt := fakeGuest(t, files)
	repo := memory.New()
	_, err := walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{})
	require.NoError(t, err)
	junk := inst.WALFolder(1) + seg(1, 1) + "_" + seg(1, 3) + "_0badf00d.bundle"
	require.NoError(t, repo.Put(ctx, junk, strings.NewReader("not a bundle")))
	for n, want := range files {
		var buf bytes.Buffer
		require.NoError(t, walbackup.FetchWAL(ctx, repo, inst, n, nil, &buf), n)
		assert.Equal(t, want, buf.Bytes(), n)
	}
	err = walbackup.FetchWAL(ctx, repo, inst, seg(1, 3), nil, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "0badf00d", "the only bundle that could hold it is named")
}

// A ship that fails after a split brain keeps the guest's conflicting
// copy (kept aside in the repository too) in the guest, so the next ship
// reports the split brain again instead of losing the alert; the verified
// files leave the guest.
func TestShipOnceFailureAfterASplitBrainKeepsTheConflictInTheGuest(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	g, rt := fakeGuest(t, map[string][]byte{seg(1, 1): []byte("one")})
	_, err := walbackup.ShipOnce(ctx, rt, mem, inst, walbackup.ShipOptions{})
	require.NoError(t, err)
	g.AddWAL(seg(1, 1), []byte("one, as the other primary wrote it"))
	g.AddWAL(seg(1, 2), []byte("two"))
	g.AddWAL(seg(1, 3), []byte("three"))
	down := errors.New("repository unreachable")
	var mu sync.Mutex
	puts := 0
	mem.SetFault(func(op memory.Op, name string) error {
		mu.Lock()
		defer mu.Unlock()
		if op != memory.OpPut || !strings.HasPrefix(name, inst.WALFolder(1)) {
			return nil
		}
		if puts++; puts == 2 {
			return down // the second new bundle
		}
		return nil
	})
	got, err := walbackup.ShipOnce(ctx, rt, mem, inst, walbackup.ShipOptions{BundleBytes: 1})
	require.ErrorIs(t, err, down)
	assert.Equal(t, []string{seg(1, 2)}, got.Names, "the verified bundle's file left the guest")
	assert.Equal(t, []string{seg(1, 1), seg(1, 3)}, g.Waiting(), "the conflicting copy and the unshipped file stay")

	mem.SetFault(nil)
	got, err = walbackup.ShipOnce(ctx, rt, mem, inst, walbackup.ShipOptions{})
	require.ErrorIs(t, err, walbackup.ErrSplitBrain, "reported again")
	assert.Equal(t, 1, got.Files)
	assert.Empty(t, g.Waiting())
}
