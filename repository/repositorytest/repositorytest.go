// Package repositorytest is the conformance suite for repository.Repository
// implementations. A backend passes when Run passes against it:
//
//	func TestConformance(t *testing.T) {
//		repositorytest.Run(t, func(t testing.TB) repository.Repository { return openEmpty(t) })
//	}
//
// It checks the contract documented on repository.Repository: round trips,
// ranged reads, ordered listing, idempotent deletes, immutability with
// conflicts, concurrent writers, and that an interrupted write leaves
// nothing visible.
package repositorytest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/repository"
)

// Run runs the suite as subtests of t. newRepo is called once per subtest
// and must return an empty repository, registering its cleanup with t.
func Run(t *testing.T, newRepo func(t testing.TB) repository.Repository) {
	tests := []struct {
		name string
		fn   func(*testing.T, repository.Repository)
	}{
		{"PutGet", putGet},
		{"Large", large},
		{"Ranges", ranges},
		{"Conflict", conflict},
		{"NotFound", notFound},
		{"InvalidNames", invalidNames},
		{"List", list},
		{"Delete", deleteIdempotent},
		{"InterruptedPut", interruptedPut},
		{"CanceledPut", canceledPut},
		{"ConcurrentSameName", concurrentSameName},
		{"ConcurrentWriters", concurrentWriters},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newRepo(t)) })
	}
}

// Get reads a whole object or a range of it.
func Get(t testing.TB, r repository.Repository, name string, off, n int64) []byte {
	t.Helper()
	rc, err := r.Get(context.Background(), name, off, n)
	require.NoError(t, err, "get %s", name)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	require.NoError(t, err, "read %s", name)
	return b
}

func random(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func putGet(t *testing.T, r repository.Repository) {
	ctx := context.Background()
	data := []byte("hello, wal")
	require.NoError(t, r.Put(ctx, "job/vm/obj", bytes.NewReader(data)))
	assert.Equal(t, data, Get(t, r, "job/vm/obj", 0, -1))
	o, err := r.Stat(ctx, "job/vm/obj")
	require.NoError(t, err)
	assert.Equal(t, repository.Object{Name: "job/vm/obj", Size: int64(len(data))}, o)

	require.NoError(t, r.Put(ctx, "empty", bytes.NewReader(nil)), "empty objects are allowed")
	assert.Empty(t, Get(t, r, "empty", 0, -1))
	o, err = r.Stat(ctx, "empty")
	require.NoError(t, err)
	assert.Equal(t, int64(0), o.Size)
}

func large(t *testing.T, r repository.Repository) {
	ctx := context.Background()
	data := random(t, 5<<20+123)
	require.NoError(t, r.Put(ctx, "big", bytes.NewReader(data)))
	assert.True(t, bytes.Equal(data, Get(t, r, "big", 0, -1)), "5 MiB round trip")
	assert.True(t, bytes.Equal(data[3<<20:3<<20+4096], Get(t, r, "big", 3<<20, 4096)), "range in the middle")
}

func ranges(t *testing.T, r repository.Repository) {
	ctx := context.Background()
	data := []byte("0123456789")
	require.NoError(t, r.Put(ctx, "r", bytes.NewReader(data)))
	tests := []struct {
		off, n int64
		want   string
	}{
		{0, -1, "0123456789"},
		{0, 10, "0123456789"},
		{3, 4, "3456"},
		{7, -1, "789"},
		{7, 100, "789"},
		{10, -1, ""},
		{10, 5, ""},
		{4, 0, ""},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, string(Get(t, r, "r", tt.off, tt.n)), "offset %d length %d", tt.off, tt.n)
	}
	for _, off := range []int64{11, -1} {
		_, err := r.Get(ctx, "r", off, 1)
		assert.ErrorIs(t, err, repository.ErrInvalidRange, "offset %d", off)
	}
}

func conflict(t *testing.T, r repository.Repository) {
	ctx := context.Background()
	require.NoError(t, r.Put(ctx, "a", strings.NewReader("first")))
	require.NoError(t, r.Put(ctx, "a", strings.NewReader("first")), "identical content: success, a safe retry")
	for _, other := range []string{"second", "firs", "first!", ""} {
		require.ErrorIs(t, r.Put(ctx, "a", strings.NewReader(other)), repository.ErrConflict, "content %q", other)
	}
	assert.Equal(t, "first", string(Get(t, r, "a", 0, -1)), "a conflict never overwrites")
}

func notFound(t *testing.T, r repository.Repository) {
	ctx := context.Background()
	_, err := r.Get(ctx, "nope", 0, -1)
	require.ErrorIs(t, err, repository.ErrNotFound)
	_, err = r.Stat(ctx, "dir/nope")
	require.ErrorIs(t, err, repository.ErrNotFound)
}

func invalidNames(t *testing.T, r repository.Repository) {
	ctx := context.Background()
	for _, name := range []string{"", "/abs", "a/../b", "a//b", ".hidden", "a/.tmp", "sp ace", "semi;colon"} {
		require.ErrorIs(t, r.Put(ctx, name, strings.NewReader("x")), repository.ErrInvalidName, "put %q", name)
		_, err := r.Get(ctx, name, 0, -1)
		require.ErrorIs(t, err, repository.ErrInvalidName, "get %q", name)
		_, err = r.Stat(ctx, name)
		require.ErrorIs(t, err, repository.ErrInvalidName, "stat %q", name)
		require.ErrorIs(t, r.Delete(ctx, name), repository.ErrInvalidName, "delete %q", name)
	}
	n := 0
	require.NoError(t, r.List(ctx, "", func(repository.Object) error { n++; return nil }))
	assert.Zero(t, n, "nothing was written")
}

func names(t testing.TB, r repository.Repository, prefix string) []string {
	t.Helper()
	out := []string{}
	require.NoError(t, r.List(context.Background(), prefix, func(o repository.Object) error {
		out = append(out, o.Name)
		return nil
	}))
	return out
}

func list(t *testing.T, r repository.Repository) {
	ctx := context.Background()
	all := []string{"a/b/c", "a/b/d", "a/bb", "a/c", "b", "a-b", "a/b/c2"}
	for _, n := range all {
		require.NoError(t, r.Put(ctx, n, strings.NewReader(n)))
	}
	assert.Equal(t, []string{"a-b", "a/b/c", "a/b/c2", "a/b/d", "a/bb", "a/c", "b"}, names(t, r, ""), "lexical order")
	assert.Equal(t, []string{"a/b/c", "a/b/c2", "a/b/d"}, names(t, r, "a/b/"))
	assert.Equal(t, []string{"a/b/c", "a/b/c2", "a/b/d", "a/bb"}, names(t, r, "a/b"), "a prefix may end mid-component")
	assert.Equal(t, []string{"a/b/c", "a/b/c2"}, names(t, r, "a/b/c"))
	assert.Empty(t, names(t, r, "zzz"))

	var sizes []int64
	require.NoError(t, r.List(ctx, "a/b/", func(o repository.Object) error { sizes = append(sizes, o.Size); return nil }))
	assert.Equal(t, []int64{5, 6, 5}, sizes)

	stop := errors.New("stop here")
	seen := 0
	err := r.List(ctx, "", func(repository.Object) error { seen++; return stop })
	require.Equal(t, stop, err, "the callback's error is returned as is")
	assert.Equal(t, 1, seen)
}

func deleteIdempotent(t *testing.T, r repository.Repository) {
	ctx := context.Background()
	require.NoError(t, r.Put(ctx, "d/x", strings.NewReader("x")))
	require.NoError(t, r.Delete(ctx, "d/x"))
	require.NoError(t, r.Delete(ctx, "d/x"), "deleting a missing object succeeds")
	require.NoError(t, r.Delete(ctx, "never/was"))
	_, err := r.Stat(ctx, "d/x")
	require.ErrorIs(t, err, repository.ErrNotFound)
	assert.Empty(t, names(t, r, "d/"))
	require.NoError(t, r.Put(ctx, "d/x", strings.NewReader("y")), "a deleted name can be written again")
}

// failingReader yields n bytes, then fails.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func interruptedPut(t *testing.T, r repository.Repository) {
	ctx := context.Background()
	broken := errors.New("connection to the guest lost")
	err := r.Put(ctx, "w/seg", &failingReader{data: random(t, 1<<20), err: broken})
	require.Error(t, err)
	require.ErrorIs(t, err, broken, "the reader's error is in the chain")
	_, err = r.Stat(ctx, "w/seg")
	require.ErrorIs(t, err, repository.ErrNotFound, "nothing visible after an interrupted put")
	assert.Empty(t, names(t, r, ""), "no partial object is listed")
	require.NoError(t, r.Put(ctx, "w/seg", strings.NewReader("whole")), "the name is still free")
	assert.Equal(t, "whole", string(Get(t, r, "w/seg", 0, -1)))
}

// cancelingReader cancels its context after the first read.
type cancelingReader struct {
	data   []byte
	cancel context.CancelFunc
}

func (c *cancelingReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.data[:min(len(c.data), 4096)])
	c.data = c.data[n:]
	c.cancel()
	return n, nil
}

func canceledPut(t *testing.T, r repository.Repository) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := r.Put(ctx, "c/obj", &cancelingReader{data: random(t, 1<<20), cancel: cancel})
	require.Error(t, err, "a put whose context is canceled midway fails")
	_, err = r.Stat(context.Background(), "c/obj")
	require.ErrorIs(t, err, repository.ErrNotFound)
	assert.Empty(t, names(t, r, ""))
}

func concurrentSameName(t *testing.T, r repository.Repository) {
	ctx := context.Background()
	const writers = 8
	contents := make([][]byte, writers)
	for i := range contents {
		contents[i] = random(t, 256<<10)
	}
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = r.Put(ctx, "race/obj", bytes.NewReader(contents[i]))
		}(i)
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		if err == nil {
			require.Equal(t, -1, winner, "two different contents both won")
			winner = i
			continue
		}
		require.ErrorIs(t, err, repository.ErrConflict, "writer %d", i)
	}
	require.NotEqual(t, -1, winner, "one writer wins")
	assert.True(t, bytes.Equal(contents[winner], Get(t, r, "race/obj", 0, -1)), "the object is the winner's, whole")

	// Identical content from many writers at once: all succeed.
	same := random(t, 64<<10)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = r.Put(ctx, "race/same", bytes.NewReader(same))
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "writer %d of identical content", i)
	}
	assert.True(t, bytes.Equal(same, Get(t, r, "race/same", 0, -1)))
	assert.Equal(t, []string{"race/obj", "race/same"}, names(t, r, ""), "no temporary files are listed")
}

func concurrentWriters(t *testing.T, r repository.Repository) {
	ctx := context.Background()
	const writers, each = 8, 10
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				name := fmt.Sprintf("many/w%d/%03d", w, i)
				if err := r.Put(ctx, name, strings.NewReader(name)); err != nil {
					errc <- fmt.Errorf("%s: %w", name, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		require.NoError(t, err)
	}
	got := names(t, r, "many/")
	require.Len(t, got, writers*each)
	for _, n := range got {
		assert.Equal(t, n, string(Get(t, r, n, 0, -1)))
	}
}
