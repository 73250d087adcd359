package walbackup

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/memory"
	"github.com/pglogship/pglogship/session"
)

// fenceOf is a run's fence under lease token; confirm as the Runner's
// (nil: the lease is always confirmed).
func fenceOf(repo repository.Repository, token int64, confirm func(context.Context) error) *repoFence {
	if confirm == nil {
		confirm = func(context.Context) error { return nil }
	}
	return newRepoFence(repo, "Daily DB Job", session.Lease{Job: "Daily DB Job", Holder: "host", Token: token}, confirm)
}

// The fence's generations follow the leases: each run is fenced off by any
// later holder and by nothing before it; a stale run never claims above
// the holder, whether the session store refuses it or it claims late; a
// session store whose tokens started over opens a new epoch; the folder
// keeps only the newest few.
func TestRepoFenceGenerations(t *testing.T) {
	ctx := context.Background()
	repo := memory.New()
	var runs []*repoFence
	for token := int64(1); token <= 6; token++ {
		f := fenceOf(repo, token, nil)
		require.NoError(t, f.claim(ctx))
		runs = append(runs, f)
	}
	for i, f := range runs[:5] {
		require.ErrorIs(t, f.check(ctx), session.ErrFenced, "run %d", i+1)
	}
	require.NoError(t, runs[5].check(ctx))
	names := func() []string {
		var out []string
		require.NoError(t, repo.List(ctx, "jobs/", func(o repository.Object) error {
			out = append(out, o.Name[strings.LastIndex(o.Name, "/")+1:])
			return nil
		}))
		return out
	}
	assert.Equal(t, []string{generation(1, 4), generation(1, 5), generation(1, 6)}, names())

	// A stale run that had not claimed yet: the session store says its
	// lease is gone, so it claims nothing and is fenced off.
	lost := fenceOf(repo, 3, func(context.Context) error { return session.ErrLeaseLost })
	require.ErrorIs(t, lost.check(ctx), session.ErrFenced)
	assert.Len(t, names(), 3)

	// A stale run confirmed just before another process took the job over
	// and claimed: its late claim stays below the new holder's.
	var holder *repoFence
	late := fenceOf(repo, 7, func(context.Context) error {
		holder = fenceOf(repo, 8, nil)
		return holder.claim(ctx)
	})
	require.ErrorIs(t, late.check(ctx), session.ErrFenced)
	require.NoError(t, holder.check(ctx), "the holder is not fenced off by a late claim")

	// The same holding claims again (its process restarted): it shares the
	// generation.
	again := fenceOf(repo, 8, nil)
	require.NoError(t, again.claim(ctx))
	require.NoError(t, again.check(ctx))

	// The session store's tokens started over: a holder it confirms claims
	// a new epoch, above everything before.
	reset := fenceOf(repo, 1, nil)
	require.NoError(t, reset.claim(ctx))
	assert.Equal(t, generation(2, 1), *reset.name.Load())
	require.NoError(t, reset.check(ctx))
	require.ErrorIs(t, holder.check(ctx), session.ErrFenced)
	assert.Equal(t, []string{generation(1, 7), generation(1, 8), generation(2, 1)}, names())

	for _, bad := range []string{"1-2", generation(1, 2) + "x", "000000000a-00000000000000000002"} {
		_, _, ok := parseGeneration(bad)
		assert.False(t, ok, bad)
	}
}
