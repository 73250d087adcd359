package walbackup

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/memory"
	"github.com/pglogship/pglogship/session"
)

// Runs claim the job's fence one after another and at once: every claim
// gets a generation of its own, each run is fenced off by any later one
// and by nothing before it, and the folder keeps only the newest few.
func TestRepoFenceGenerations(t *testing.T) {
	ctx := context.Background()
	repo := memory.New()
	var runs []*repoFence
	for i := 1; i <= 6; i++ {
		f := newRepoFence(repo, "Daily DB Job", session.Lease{Job: "Daily DB Job", Holder: "host", Token: int64(i)})
		require.NoError(t, f.claim(ctx))
		assert.Equal(t, int64(i), f.gen.Load())
		runs = append(runs, f)
	}
	for i, f := range runs[:5] {
		require.ErrorIs(t, f.check(ctx), session.ErrFenced, "run %d", i+1)
	}
	require.NoError(t, runs[5].check(ctx))
	var names []string
	require.NoError(t, repo.List(ctx, "jobs/", func(o repository.Object) error {
		names = append(names, o.Name[strings.LastIndex(o.Name, "/")+1:])
		return nil
	}))
	assert.Equal(t, []string{"00000000000000000004", "00000000000000000005", "00000000000000000006"}, names)

	// Claims at once, from runs of other holders: all distinct.
	var wg sync.WaitGroup
	gens := make(chan int64, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := newRepoFence(repo, "Daily DB Job", session.Lease{Job: "Daily DB Job", Holder: "host-" + string(rune('a'+i)), Token: 1})
			if assert.NoError(t, f.claim(ctx)) {
				gens <- f.gen.Load()
			}
		}()
	}
	wg.Wait()
	close(gens)
	seen := map[int64]bool{}
	for g := range gens {
		assert.False(t, seen[g], "generation %d claimed twice", g)
		assert.Greater(t, g, int64(6))
		seen[g] = true
	}
	assert.Len(t, seen, 8)

	// A run that could not claim at its start claims before its first
	// commit.
	late := newRepoFence(repo, "Daily DB Job", session.Lease{Job: "Daily DB Job", Holder: "host-z", Token: 9})
	require.NoError(t, late.check(ctx))
	assert.Equal(t, int64(15), late.gen.Load())
}
