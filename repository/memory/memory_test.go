package memory_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/memory"
	"github.com/pglogship/pglogship/repository/repositorytest"
)

func read(t *testing.T, r *memory.Repo, name string, off, n int64) string {
	t.Helper()
	rc, err := r.Get(context.Background(), name, off, n)
	require.NoError(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	return string(b)
}

func TestContract(t *testing.T) {
	ctx := context.Background()
	r := memory.New()
	require.NoError(t, r.Put(ctx, "a/b", strings.NewReader("hello world")))
	require.NoError(t, r.Put(ctx, "a/b", strings.NewReader("hello world")), "same content is idempotent")
	require.ErrorIs(t, r.Put(ctx, "a/b", strings.NewReader("other")), repository.ErrConflict)
	assert.Equal(t, "hello world", read(t, r, "a/b", 0, -1), "a conflict keeps the original")
	assert.Equal(t, "world", read(t, r, "a/b", 6, 100))
	assert.Equal(t, "lo", read(t, r, "a/b", 3, 2))
	assert.Equal(t, "", read(t, r, "a/b", 11, -1))
	_, err := r.Get(ctx, "a/b", 12, 1)
	require.ErrorIs(t, err, repository.ErrInvalidRange)
	_, err = r.Get(ctx, "a/missing", 0, -1)
	require.ErrorIs(t, err, repository.ErrNotFound)
	require.ErrorIs(t, r.Put(ctx, "../x", strings.NewReader("")), repository.ErrInvalidName)

	require.NoError(t, r.Put(ctx, "a/a", strings.NewReader("1")))
	require.NoError(t, r.Put(ctx, "b", strings.NewReader("22")))
	var names []string
	require.NoError(t, r.List(ctx, "a/", func(o repository.Object) error {
		names = append(names, o.Name)
		return nil
	}))
	assert.Equal(t, []string{"a/a", "a/b"}, names)
	o, err := r.Stat(ctx, "b")
	require.NoError(t, err)
	assert.Equal(t, int64(2), o.Size)

	require.NoError(t, r.Delete(ctx, "b"))
	require.NoError(t, r.Delete(ctx, "b"), "delete is idempotent")
	_, err = r.Stat(ctx, "b")
	require.ErrorIs(t, err, repository.ErrNotFound)
}

func TestFault(t *testing.T) {
	ctx := context.Background()
	r := memory.New()
	down := errors.New("repository unreachable")
	r.SetFault(func(op memory.Op, name string) error {
		if op == memory.OpPut {
			return down
		}
		return nil
	})
	require.ErrorIs(t, r.Put(ctx, "x", strings.NewReader("1")), down)
	_, err := r.Stat(ctx, "x")
	require.ErrorIs(t, err, repository.ErrNotFound, "a failed put leaves nothing")
	r.SetFault(nil)
	require.NoError(t, r.Put(ctx, "x", strings.NewReader("1")))
}

func TestConformance(t *testing.T) {
	repositorytest.Run(t, func(testing.TB) repository.Repository { return memory.New() })
}
