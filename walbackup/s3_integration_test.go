package walbackup_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/s3"
)

// getRecord is one Get through a rangeRecorder: the range asked for and
// the bytes the caller read.
type getRecord struct {
	name        string
	off, length int64
	read        atomic.Int64
}

// rangeRecorder is a repository that records every Get.
type rangeRecorder struct {
	repository.Repository
	mu   sync.Mutex
	gets []*getRecord
}

func (r *rangeRecorder) Get(ctx context.Context, name string, off, n int64) (io.ReadCloser, error) {
	rc, err := r.Repository.Get(ctx, name, off, n)
	if err != nil {
		return nil, err
	}
	g := &getRecord{name: name, off: off, length: n}
	r.mu.Lock()
	r.gets = append(r.gets, g)
	r.mu.Unlock()
	return struct {
		io.Reader
		io.Closer
	}{io.TeeReader(rc, writerFunc(func(p []byte) { g.read.Add(int64(len(p))) })), rc}, nil
}

type writerFunc func([]byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

// take returns the Gets recorded since the last take.
func (r *rangeRecorder) take() []*getRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.gets
	r.gets = nil
	return g
}

// rangeHeaders records the Range header of every HTTP GET.
type rangeHeaders struct {
	mu     sync.Mutex
	ranges []string
}

func (h *rangeHeaders) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && !strings.Contains(req.URL.RawQuery, "list-type") && req.URL.RawQuery != "location=" {
		h.mu.Lock()
		h.ranges = append(h.ranges, req.Header.Get("Range"))
		h.mu.Unlock()
	}
	return http.DefaultTransport.RoundTrip(req)
}

func (h *rangeHeaders) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.ranges
	h.ranges = nil
	return r
}

// The child job end to end into a real MinIO: PostgreSQL, OpenSSH, the
// runtime deployed over SSH, the S3 repository and the PostgreSQL session
// store. Every archived file lands in the bucket exactly once,
// byte-identical, and leaves the guest; then one segment read out of a
// bundle costs one ranged GET of exactly its frame.
func TestJobShipsRealWALToMinIO(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t)
	ctx := context.Background()
	m := testenv.StartMinIO(t)
	bucket := m.NewBucket(t)
	headers := &rangeHeaders{}
	s3repo, err := s3.New(s3.Config{Endpoint: m.Endpoint, Bucket: bucket, Prefix: "pglogship/site1", Insecure: true,
		AccessKey: m.AccessKey, SecretKey: m.SecretKey, Region: "us-east-1", Transport: headers})
	require.NoError(t, err)
	require.NoError(t, s3repo.Check(ctx))
	repo := &rangeRecorder{Repository: s3repo}

	inst, originals := shipRealWALOverSSH(t, repo, 0)

	keys := m.Keys(t, bucket)
	require.NotEmpty(t, keys)
	for _, k := range keys {
		assert.True(t, strings.HasPrefix(k, "pglogship/site1/"+inst.Prefix()+"/"), "%s is under the repository's prefix and instance", k)
	}
	assert.Empty(t, m.IncompleteUploads(t), "no upload is left in progress")

	// The bundle with the most segments; read its middle one.
	refs, err := repository.Bundles(ctx, repo, inst, 1)
	require.NoError(t, err)
	var ref repository.BundleRef
	var entries []bundle.Entry
	for _, rf := range refs {
		br, err := bundle.Open(ctx, repo, rf.Object.Name, rf.Object.Size, nil)
		require.NoError(t, err)
		if len(br.Entries()) > len(entries) {
			ref, entries = rf, br.Entries()
		}
	}
	require.GreaterOrEqual(t, len(entries), 2, "a bundle holds several segments")
	repo.take()
	headers.take()
	br, err := bundle.Open(ctx, repo, ref.Object.Name, ref.Object.Size, nil)
	require.NoError(t, err)
	opening := repo.take()
	require.NotEmpty(t, opening, "opening reads the bundle")
	for _, g := range opening {
		assert.Positive(t, g.length, "opening reads ranges")
		assert.Less(t, g.length, ref.Object.Size, "opening never reads the whole bundle")
	}
	headers.take()

	e := entries[len(entries)/2]
	var buf bytes.Buffer
	_, err = br.WriteFile(ctx, e.Name, &buf)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(originals[e.Name], buf.Bytes()), "%s byte-identical out of the bundle", e.Name)
	gets := repo.take()
	ranges := headers.take()
	t.Logf("%d files shipped; %s (%d bytes, %d files): %s is %d bytes at %d; HTTP GETs: %q",
		len(originals), ref.Object.Name, ref.Object.Size, len(entries), e.Name, e.Length, e.Offset, ranges)
	require.Len(t, gets, 1, "one Get for one segment")
	assert.Equal(t, e.Offset, gets[0].off)
	assert.Equal(t, e.Length, gets[0].length)
	assert.Equal(t, e.Length, gets[0].read.Load(), "exactly its frame is read")
	assert.Less(t, e.Length*2, ref.Object.Size, "a small part of the bundle")
	assert.Equal(t, []string{fmt.Sprintf("bytes=%d-%d", e.Offset, e.Offset+e.Length-1)}, ranges,
		"one HTTP GET, with the frame's range")
}
