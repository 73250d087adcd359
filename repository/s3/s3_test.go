package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/repositorytest"
	"github.com/pglogship/pglogship/repository/s3"
)

func config(m *testenv.MinIO, bucket, prefix string) s3.Config {
	return s3.Config{Endpoint: m.Endpoint, Bucket: bucket, Prefix: prefix, AccessKey: m.AccessKey, SecretKey: m.SecretKey, Insecure: true,
		Region: "us-east-1", PartSize: s3.MinPartSize}
}

func open(t testing.TB, cfg s3.Config) *s3.Repo {
	t.Helper()
	r, err := s3.New(cfg)
	require.NoError(t, err)
	require.NoError(t, r.Check(context.Background()))
	return r
}

// minIOBucket starts a MinIO with one empty bucket; an integration test,
// skipped only with -short.
func minIOBucket(t *testing.T) (*testenv.MinIO, string) {
	t.Helper()
	testenv.SkipIfShort(t)
	m := testenv.StartMinIO(t)
	return m, m.NewBucket(t)
}

func random(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

// The conformance suite, each case in its own prefix of one bucket. The
// part size is S3's minimum, so the suite's 5 MiB object goes through the
// staging upload and the copy commit, and the small ones through one
// conditional PutObject.
func TestConformanceMinIO(t *testing.T) {
	m, bucket := minIOBucket(t)
	var n atomic.Int64
	repositorytest.Run(t, func(t testing.TB) repository.Repository {
		return open(t, config(m, bucket, fmt.Sprintf("conformance/%d", n.Add(1))))
	})
	assert.Empty(t, m.IncompleteUploads(t), "no upload is left in progress")
	for _, k := range m.Keys(t, bucket) {
		assert.NotContains(t, k, s3.StagingPrefix, "no staging object is left")
	}
}

// A 40 MiB object in 5 MiB parts: whole, ranged reads across part
// boundaries right, its checksum in its metadata, nothing else left in the
// bucket; an identical Put writes nothing and other content conflicts.
func TestS3MultipartLarge(t *testing.T) {
	ctx := context.Background()
	m, bucket := minIOBucket(t)
	r := open(t, config(m, bucket, "big"))
	data := random(t, 40<<20)
	require.NoError(t, r.Put(ctx, "images/full", bytes.NewReader(data)))

	o, err := r.Stat(ctx, "images/full")
	require.NoError(t, err)
	assert.Equal(t, int64(len(data)), o.Size)
	assert.True(t, bytes.Equal(data, repositorytest.Get(t, r, "images/full", 0, -1)), "40 MiB round trip")
	const part = s3.MinPartSize
	for _, rg := range []struct{ off, n int64 }{
		{0, 1}, {part - 10, 20}, {3*part - 1, 2*part + 2}, {int64(len(data)) - 7, -1}, {int64(len(data)) - 7, 100}, {12345, 4096},
		{int64(len(data)) - 3, math.MaxInt64},
	} {
		end := int64(len(data))
		if rg.n >= 0 && rg.n < end-rg.off {
			end = rg.off + rg.n
		}
		assert.True(t, bytes.Equal(data[rg.off:end], repositorytest.Get(t, r, "images/full", rg.off, rg.n)), "range %d+%d", rg.off, rg.n)
	}

	client := m.Client(t)
	info, err := client.StatObject(ctx, bucket, "big/images/full", minio.StatObjectOptions{})
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	assert.Equal(t, hex.EncodeToString(sum[:]), info.UserMetadata["Pglogship-Sha256"], "the checksum is in the metadata")
	assert.Equal(t, []string{"big/images/full"}, m.Keys(t, bucket), "no staging object is left")
	assert.Empty(t, m.IncompleteUploads(t))

	require.NoError(t, r.Put(ctx, "images/full", bytes.NewReader(data)), "identical content: success")
	again, err := client.StatObject(ctx, bucket, "big/images/full", minio.StatObjectOptions{})
	require.NoError(t, err)
	assert.Equal(t, info.ETag, again.ETag, "and nothing was written")
	assert.Equal(t, info.LastModified, again.LastModified)

	other := bytes.Clone(data)
	other[len(other)/2] ^= 1
	require.ErrorIs(t, r.Put(ctx, "images/full", bytes.NewReader(other)), repository.ErrConflict, "one flipped bit")
	assert.True(t, bytes.Equal(data, repositorytest.Get(t, r, "images/full", 0, -1)), "a conflict never overwrites")
}

// Concurrent large Puts to one name: one copy commit wins, the rest get
// ErrConflict, identical ones succeed, and no staging object stays.
func TestS3ConcurrentLargeSameName(t *testing.T) {
	ctx := context.Background()
	m, bucket := minIOBucket(t)
	r := open(t, config(m, bucket, ""))
	const writers = 4
	contents := make([][]byte, writers)
	for i := range contents {
		contents[i] = random(t, s3.MinPartSize+1<<20)
	}
	contents[3] = contents[2] // two writers of the same content
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for i := range contents {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = r.Put(ctx, "race", bytes.NewReader(contents[i]))
		}(i)
	}
	wg.Wait()
	got := repositorytest.Get(t, r, "race", 0, -1)
	winners := 0
	for i, err := range errs {
		if bytes.Equal(contents[i], got) {
			require.NoError(t, err, "writer %d has the stored content", i)
			winners++
			continue
		}
		require.ErrorIs(t, err, repository.ErrConflict, "writer %d", i)
	}
	assert.GreaterOrEqual(t, winners, 1)
	assert.Equal(t, []string{"race"}, m.Keys(t, bucket))
	assert.Empty(t, m.IncompleteUploads(t))
}

// cancelAfter cancels its context once n bytes were read.
type cancelAfter struct {
	r      io.Reader
	n      int64
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n -= int64(n); c.n <= 0 {
		c.cancel()
	}
	return n, err
}

// A Put canceled after two parts went up leaves no object, no staging
// object and no upload in progress.
func TestS3CanceledPut(t *testing.T) {
	m, bucket := minIOBucket(t)
	r := open(t, config(m, bucket, "p"))
	for _, size := range []int{1 << 20, 40 << 20} {
		ctx, cancel := context.WithCancel(context.Background())
		err := r.Put(ctx, "obj", &cancelAfter{r: bytes.NewReader(random(t, size)), n: int64(size) * 3 / 4, cancel: cancel})
		cancel()
		require.ErrorIs(t, err, context.Canceled, "size %d", size)
		_, err = r.Stat(context.Background(), "obj")
		require.ErrorIs(t, err, repository.ErrNotFound)
		n := 0
		require.NoError(t, r.List(context.Background(), "", func(repository.Object) error { n++; return nil }))
		assert.Zero(t, n)
		assert.Empty(t, m.Keys(t, bucket), "no staging object")
		assert.Empty(t, m.IncompleteUploads(t), "the uploads were aborted")
	}
}

// Two repositories share a bucket under two prefixes: same names, separate
// objects, listings and deletes.
func TestS3PrefixIsolates(t *testing.T) {
	ctx := context.Background()
	m, bucket := minIOBucket(t)
	a := open(t, config(m, bucket, "site/a"))
	b := open(t, config(m, bucket, "site/b/"))
	require.NoError(t, a.Put(ctx, "wal/x", strings.NewReader("from a")))
	require.NoError(t, b.Put(ctx, "wal/x", strings.NewReader("from b")), "no conflict across prefixes")
	require.NoError(t, b.Put(ctx, "wal/y", strings.NewReader("only b")))
	assert.Equal(t, "from a", string(repositorytest.Get(t, a, "wal/x", 0, -1)))
	assert.Equal(t, "from b", string(repositorytest.Get(t, b, "wal/x", 0, -1)))
	list := func(r repository.Repository) (out []string) {
		require.NoError(t, r.List(ctx, "", func(o repository.Object) error { out = append(out, o.Name); return nil }))
		return out
	}
	assert.Equal(t, []string{"wal/x"}, list(a))
	assert.Equal(t, []string{"wal/x", "wal/y"}, list(b))
	_, err := a.Stat(ctx, "wal/y")
	require.ErrorIs(t, err, repository.ErrNotFound)
	require.NoError(t, a.Delete(ctx, "wal/x"))
	assert.Equal(t, "from b", string(repositorytest.Get(t, b, "wal/x", 0, -1)), "a delete stays in its prefix")
	assert.Equal(t, []string{"site/b/wal/x", "site/b/wal/y"}, m.Keys(t, bucket))
}

// Wrong credentials: a clear error naming access, never the secret, and
// never a plain "not found"; a missing bucket says so.
func TestS3WrongCredentials(t *testing.T) {
	ctx := context.Background()
	m, bucket := minIOBucket(t)
	good := open(t, config(m, bucket, ""))
	require.NoError(t, good.Put(ctx, "x", strings.NewReader("data")))

	cfg := config(m, bucket, "")
	cfg.SecretKey = "wrong-" + hex.EncodeToString(random(t, 16))
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	logger.Info("opening", "config", cfg)
	r, err := s3.New(cfg)
	require.NoError(t, err)
	var errs []error
	errs = append(errs, r.Check(ctx), r.Put(ctx, "y", strings.NewReader("data")), r.Delete(ctx, "x"))
	_, err = r.Get(ctx, "x", 0, -1)
	errs = append(errs, err)
	_, err = r.Stat(ctx, "x")
	errs = append(errs, err)
	errs = append(errs, r.List(ctx, "", func(repository.Object) error { return nil }))
	for i, err := range errs {
		require.ErrorIs(t, err, s3.ErrAccessDenied, "call %d", i)
		assert.NotErrorIs(t, err, repository.ErrNotFound, "call %d", i)
		assert.NotContains(t, err.Error(), cfg.SecretKey, "call %d", i)
		assert.NotContains(t, err.Error(), m.SecretKey, "call %d", i)
		t.Logf("call %d: %v", i, err)
	}
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), logs.String()} {
		assert.NotContains(t, s, cfg.SecretKey)
		assert.Contains(t, s, cfg.AccessKey)
	}
	assert.Equal(t, "data", string(repositorytest.Get(t, good, "x", 0, -1)), "nothing was deleted")

	missing, err := s3.New(config(m, "no-such-bucket", ""))
	require.NoError(t, err)
	require.ErrorIs(t, missing.Check(ctx), s3.ErrNoSuchBucket)
	require.ErrorIs(t, missing.Put(ctx, "y", strings.NewReader("data")), s3.ErrNoSuchBucket)
}

// Sweep removes the staging objects a crashed Put leaves, only when older
// than the cutoff, and never an object. (Uploads in progress it aborts
// where the store lists them by prefix, as AWS S3 does; MinIO lists them
// only by exact key, and expires stale ones itself after a day.)
func TestS3Sweep(t *testing.T) {
	ctx := context.Background()
	m, bucket := minIOBucket(t)
	r := open(t, config(m, bucket, "p"))
	require.NoError(t, r.Put(ctx, "keep", strings.NewReader("object")))
	core := minio.Core{Client: m.Client(t)}
	_, err := core.PutObject(ctx, bucket, "p/"+s3.StagingPrefix+"left", strings.NewReader("staged"), 6, "", "", minio.PutObjectOptions{})
	require.NoError(t, err)
	_, err = core.PutObject(ctx, bucket, "other/"+s3.StagingPrefix+"left", strings.NewReader("staged"), 6, "", "", minio.PutObjectOptions{})
	require.NoError(t, err)

	n, err := r.Sweep(ctx, time.Now().Add(-time.Hour))
	require.NoError(t, err)
	assert.Zero(t, n, "nothing is old enough")
	n, err = r.Sweep(ctx, time.Now().Add(time.Hour))
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, []string{"other/" + s3.StagingPrefix + "left", "p/keep"}, m.Keys(t, bucket), "only its own prefix")
}

// The check that no upload is left in progress sees one.
func TestMinIOIncompleteUploadsSeen(t *testing.T) {
	ctx := context.Background()
	m, bucket := minIOBucket(t)
	core := minio.Core{Client: m.Client(t)}
	id, err := core.NewMultipartUpload(ctx, bucket, "a/"+s3.StagingPrefix+"x", minio.PutObjectOptions{})
	require.NoError(t, err)
	assert.Len(t, m.IncompleteUploads(t), 1)
	require.NoError(t, core.AbortMultipartUpload(ctx, bucket, "a/"+s3.StagingPrefix+"x", id))
	assert.Empty(t, m.IncompleteUploads(t))
}

func TestS3BadConfig(t *testing.T) {
	for _, tt := range []struct {
		cfg  s3.Config
		want string
	}{
		{s3.Config{}, "endpoint and bucket are required"},
		{s3.Config{Endpoint: "http://127.0.0.1:9000", Bucket: "b", AccessKey: "a", SecretKey: "s"}, "host or host:port"},
		{s3.Config{Endpoint: "127.0.0.1:9000", Bucket: "b"}, "access key and secret key are required"},
		{s3.Config{Endpoint: "127.0.0.1:9000", Bucket: "b", AccessKey: "a", SecretKey: "s", Prefix: "../x"}, "prefix"},
		{s3.Config{Endpoint: "127.0.0.1:9000", Bucket: "b", AccessKey: "a", SecretKey: "s", PartSize: 1 << 20}, "part size"},
	} {
		_, err := s3.New(tt.cfg)
		require.ErrorContains(t, err, tt.want)
	}
	r, err := s3.New(s3.Config{Endpoint: "127.0.0.1:9000", Bucket: "b", AccessKey: "a", SecretKey: "s"})
	require.NoError(t, err)
	require.ErrorIs(t, r.Put(context.Background(), "a/../b", strings.NewReader("x")), repository.ErrInvalidName, "checked before any request")
}

// patternReader yields n bytes of a fixed pattern without allocating.
type patternReader struct{ n, off int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n-p.off)]
	for i := range b {
		x := uint64(p.off) + uint64(i)
		b[i] = byte(x ^ x>>8 ^ x>>16 ^ x>>24)
	}
	p.off += int64(len(b))
	return len(b), nil
}

// peakHeap samples the live heap while fn runs and returns its peak.
func peakHeap(fn func()) uint64 {
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	fn()
	close(stop)
	<-done
	return peak.Load()
}

// Memory stays flat in the object's size: putting 32 MiB and 160 MiB in
// 5 MiB parts peaks at about the same heap, a few parts at most.
func TestS3PutMemoryIsFlat(t *testing.T) {
	ctx := context.Background()
	m, bucket := minIOBucket(t)
	r := open(t, config(m, bucket, ""))
	var peaks []uint64
	for i, size := range []int64{32 << 20, 160 << 20} {
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		peak := peakHeap(func() {
			require.NoError(t, r.Put(ctx, fmt.Sprintf("big%d", i), &patternReader{n: size}))
		})
		grew := peak - min(peak, base.HeapAlloc)
		t.Logf("put of %d MiB: heap peaked %.1f MiB above where it started", size>>20, float64(grew)/(1<<20))
		assert.Less(t, grew, uint64(4*s3.MinPartSize), "a few parts at most")
		peaks = append(peaks, grew)
		o, err := r.Stat(ctx, fmt.Sprintf("big%d", i))
		require.NoError(t, err)
		assert.Equal(t, size, o.Size)
	}
	assert.Less(t, peaks[1], peaks[0]+2*s3.MinPartSize, "five times the object, not five times the memory")
}

// HTTPS is the default: the zero Insecure refuses to talk plain HTTP, so
// keys and data never travel in clear unless asked for.
func TestS3DefaultsToHTTPS(t *testing.T) {
	testenv.SkipIfShort(t)
	m := testenv.StartMinIO(t)
	cfg := config(m, m.NewBucket(t), "")
	cfg.Insecure = false
	r, err := s3.New(cfg)
	require.NoError(t, err)
	err = r.Check(context.Background())
	require.Error(t, err, "a plain-HTTP server is not spoken to over HTTPS")
	assert.NotContains(t, err.Error(), m.SecretKey)
}
