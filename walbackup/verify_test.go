package walbackup_test

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/walbackup"
)

// replace swaps an object's content, as bit rot or an operator would.
func replace(t *testing.T, repo repository.Repository, name string, edit func([]byte) []byte) {
	t.Helper()
	ctx := context.Background()
	rc, err := repo.Get(ctx, name, 0, -1)
	require.NoError(t, err)
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	rc.Close()
	require.NoError(t, repo.Delete(ctx, name))
	require.NoError(t, repo.Put(ctx, name, bytes.NewReader(edit(b))))
}

func bundleHolding(t *testing.T, h *harness, segment string) repository.BundleRef {
	t.Helper()
	refs, err := repository.Bundles(context.Background(), h.repo, inst42, 1)
	require.NoError(t, err)
	for _, ref := range refs {
		names, err := bundleOpen(context.Background(), h.repo, ref)
		require.NoError(t, err)
		for _, n := range names {
			if n == segment {
				return ref
			}
		}
	}
	t.Fatalf("no bundle holds %s", segment)
	return repository.BundleRef{}
}

func verify(t *testing.T, h *harness) walbackup.VerifyReport {
	t.Helper()
	rep, err := h.job.Verify(context.Background())
	require.NoError(t, err)
	return rep
}

func TestVerify(t *testing.T) {
	const seg4 = "000000010000000000000004"
	t.Run("clean", func(t *testing.T) {
		h := twoRestorePoints(t)
		rep := verify(t, h)
		assert.True(t, rep.OK(), "%v", rep.Problems)
		assert.Equal(t, 1, rep.Instances)
		assert.Equal(t, 2, rep.RestorePoints)
		assert.Equal(t, 9, rep.WALFiles, "7 segments and 2 .backup files")
		assert.Positive(t, rep.Bytes)
	})
	t.Run("a flipped byte in a bundle", func(t *testing.T) {
		h := twoRestorePoints(t)
		ref := bundleHolding(t, h, seg4)
		replace(t, h.repo, ref.Object.Name, func(b []byte) []byte { b[40] ^= 0x80; return b })
		rep := verify(t, h)
		require.Len(t, rep.Problems, 2, "%v", rep.Problems)
		assert.Equal(t, walbackup.ProblemCorrupt, rep.Problems[0].Kind)
		assert.Equal(t, ref.Object.Name, rep.Problems[0].Object)
		assert.Equal(t, walbackup.ProblemGap, rep.Problems[1].Kind, "an unreadable segment is a missing one")
		assert.Equal(t, seg4, rep.Problems[1].Segment)
	})
	t.Run("a bundle gone", func(t *testing.T) {
		h := twoRestorePoints(t)
		ref := bundleHolding(t, h, seg4)
		require.NoError(t, h.repo.Delete(context.Background(), ref.Object.Name))
		rep := verify(t, h)
		require.NotEmpty(t, rep.Problems)
		assert.Equal(t, walbackup.ProblemGap, rep.Problems[0].Kind)
		assert.Equal(t, ref.First, rep.Problems[0].Segment, "the first missing segment is named")
	})
	t.Run("one segment with two contents", func(t *testing.T) {
		h := twoRestorePoints(t)
		var buf bytes.Buffer
		w, err := bundle.NewWriter(&buf, "planted", nil)
		require.NoError(t, err)
		_, err = w.Add(seg4, bundle.Raw, strings.NewReader("another history"))
		require.NoError(t, err)
		_, err = w.Close()
		require.NoError(t, err)
		require.NoError(t, h.repo.Put(context.Background(), inst42.NewBundleName(1, seg4, seg4), &buf))
		rep := verify(t, h)
		require.Len(t, rep.Problems, 1, "%v", rep.Problems)
		assert.Equal(t, walbackup.ProblemConflict, rep.Problems[0].Kind)
		assert.Equal(t, seg4, rep.Problems[0].Segment)
	})
	t.Run("the same content in a bundle of SHA-256 sums", func(t *testing.T) {
		// As an earlier release shipped it again: a copy, not a conflict.
		h := twoRestorePoints(t)
		ctx := context.Background()
		ref := bundleHolding(t, h, seg4)
		r, err := bundle.Open(ctx, h.repo, ref.Object.Name, ref.Object.Size, nil)
		require.NoError(t, err)
		var content bytes.Buffer
		_, err = r.WriteFile(ctx, seg4, &content)
		require.NoError(t, err)
		var buf bytes.Buffer
		w, err := bundle.NewWriter(&buf, "planted", nil)
		require.NoError(t, err)
		_, err = w.Add(seg4, bundle.Raw, &content)
		require.NoError(t, err)
		_, err = w.Close()
		require.NoError(t, err)
		require.NoError(t, h.repo.Put(ctx, inst42.NewBundleName(1, seg4, seg4), &buf))
		rep := verify(t, h)
		assert.True(t, rep.OK(), "%v", rep.Problems)
		assert.Equal(t, 9, rep.WALFiles, "counted once")
	})
	t.Run("an image object changed", func(t *testing.T) {
		h := twoRestorePoints(t)
		ids, err := repository.RestorePointIDs(context.Background(), h.repo, inst42)
		require.NoError(t, err)
		obj := inst42.RestorePoint(ids[0]) + "/disk.img"
		replace(t, h.repo, obj, func(b []byte) []byte { return append(b, 'x') })
		rep := verify(t, h)
		require.Len(t, rep.Problems, 1, "%v", rep.Problems)
		assert.Equal(t, walbackup.ProblemCorrupt, rep.Problems[0].Kind)
		assert.Equal(t, obj, rep.Problems[0].Object)
	})
	t.Run("an incremental's base gone", func(t *testing.T) {
		h := newHarness(t, func(c *walbackup.Config) { c.Schedule = nil })
		h.hv.SetIncremental(true)
		ctx := context.Background()
		require.NoError(t, h.job.Enable(ctx))
		h.idle(t)
		for i := 0; i < 2; i++ {
			h.clk.Add(time.Hour) // restore point ids sort by their second
			require.NoError(t, h.job.StartParent(ctx))
			h.idle(t)
		}
		require.NoError(t, h.job.Disable(ctx))
		ids, err := repository.RestorePointIDs(ctx, h.repo, inst42)
		require.NoError(t, err)
		require.Len(t, ids, 2)
		require.NoError(t, h.repo.Delete(ctx, inst42.ManifestName(ids[0])))
		rep := verify(t, h)
		require.NotEmpty(t, rep.Problems)
		assert.Equal(t, walbackup.ProblemManifest, rep.Problems[0].Kind)
		assert.Contains(t, rep.Problems[0].Detail, ids[0])
	})
}
