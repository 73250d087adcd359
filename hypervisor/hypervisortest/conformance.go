package hypervisortest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/memory"
)

// Harness gives Run a hypervisor to check and ways to change a machine and
// to compare a restore with it.
type Harness struct {
	// New returns the hypervisor under test, whose inventory holds Machine.
	// It is called once per subtest.
	New     func(t testing.TB) hypervisor.Hypervisor
	Machine string
	// Change writes to the machine, so that later images differ from
	// earlier ones.
	Change func(t testing.TB)
	// State captures what the machine holds now, for Same.
	State func(t testing.TB) any
	// Same reports whether a restore written to target holds state.
	Same func(t testing.TB, target string, state any) bool
	// Target returns a path that does not exist yet, where Restore may
	// write (a directory or a file, as the hypervisor's targets are).
	Target func(t testing.TB) string
}

// Run checks a hypervisor.Hypervisor against the contract: the inventory,
// ErrNotFound and ErrBusy, idempotent Release, one Export per snapshot,
// objects under the prefix with the SHA-256 of what was stored, a full
// image restored equal to the machine at its point in time (for Fixed
// snapshots even when the machine changed before the export), an
// incremental chain restored equal to the machine at the second snapshot,
// and restores that refuse an existing target, a corrupted object and a
// chain without its full image, leaving nothing at the target.
func Run(t *testing.T, h Harness) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"Machines", confMachines},
		{"UnknownMachine", confUnknown},
		{"OneSnapshotAtATime", confBusy},
		{"FullImage", confFull},
		{"IncrementalChain", confIncremental},
		{"RestoreRefusals", confRefusals},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, h) })
	}
}

func confMachines(t *testing.T, h Harness) {
	hv := h.New(t)
	ms, err := hv.Machines(context.Background())
	require.NoError(t, err)
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	assert.Contains(t, ids, h.Machine)
	again, err := hv.Machines(context.Background())
	require.NoError(t, err)
	assert.Equal(t, ms, again, "reading the inventory changes nothing")
}

func confUnknown(t *testing.T, h Harness) {
	_, err := h.New(t).Snapshot(context.Background(), "no-such-machine", hypervisor.SnapshotOptions{})
	require.ErrorIs(t, err, hypervisor.ErrNotFound)
}

func confBusy(t *testing.T, h Harness) {
	ctx := context.Background()
	hv := h.New(t)
	snap, err := hv.Snapshot(ctx, h.Machine, hypervisor.SnapshotOptions{})
	require.NoError(t, err)
	_, err = hv.Snapshot(ctx, h.Machine, hypervisor.SnapshotOptions{})
	require.ErrorIs(t, err, hypervisor.ErrBusy, "a second snapshot while one is held")
	require.NoError(t, snap.Release(ctx))
	require.NoError(t, snap.Release(ctx), "Release is idempotent")
	again, err := hv.Snapshot(ctx, h.Machine, hypervisor.SnapshotOptions{})
	require.NoError(t, err, "free again after Release")
	require.NoError(t, again.Release(ctx))
}

// export takes an image into repo under prefix; with change, the machine
// changes between the snapshot and the export. It returns the image and
// the state it must restore to.
func export(t *testing.T, h Harness, hv hypervisor.Hypervisor, repo repository.Repository, prefix string, base *hypervisor.Image, change bool) (hypervisor.Image, any) {
	t.Helper()
	ctx := context.Background()
	state := h.State(t)
	snap, err := hv.Snapshot(ctx, h.Machine, hypervisor.SnapshotOptions{Base: base})
	require.NoError(t, err)
	defer func() { require.NoError(t, snap.Release(ctx)) }()
	fixed, _ := snap.(hypervisor.Fixed)
	if change && fixed != nil && fixed.Fixed() {
		h.Change(t) // the image stays at its point in time
	}
	img, err := snap.Export(ctx, repo, prefix, nil)
	require.NoError(t, err)
	_, err = snap.Export(ctx, repo, prefix+"-again", nil)
	require.Error(t, err, "one Export per snapshot")
	assert.Equal(t, h.Machine, img.Machine)
	assert.Equal(t, prefix, img.Prefix)
	require.NotEmpty(t, img.Objects)
	for _, o := range img.Objects {
		require.True(t, strings.HasPrefix(o.Name, prefix+"/"), "object %s under the prefix", o.Name)
		rc, err := repo.Get(ctx, o.Name, 0, -1)
		require.NoError(t, err)
		b, err := io.ReadAll(rc)
		rc.Close()
		require.NoError(t, err)
		sum := sha256.Sum256(b)
		assert.Equal(t, o.Size, int64(len(b)), "%s size", o.Name)
		assert.Equal(t, hex.EncodeToString(sum[:]), o.SHA256, "%s checksum of what was stored", o.Name)
	}
	for k, v := range img.Meta {
		assert.NotContains(t, strings.ToLower(k), "password", "Meta never holds secrets (%s=%s)", k, v)
	}
	return img, state
}

func confFull(t *testing.T, h Harness) {
	ctx := context.Background()
	hv, repo := h.New(t), memory.New()
	img, state := export(t, h, hv, repo, "images/full", nil, true)
	assert.True(t, img.Full, "no base: a full image")
	assert.Empty(t, img.Base)
	target := h.Target(t)
	require.NoError(t, hv.Restore(ctx, []hypervisor.Image{img}, repo, target, nil))
	assert.True(t, h.Same(t, target, state), "the restore holds the machine as it was at the snapshot")
}

func confIncremental(t *testing.T, h Harness) {
	ctx := context.Background()
	hv, repo := h.New(t), memory.New()
	first, _ := export(t, h, hv, repo, "images/1", nil, false)
	h.Change(t)
	second, state := export(t, h, hv, repo, "images/2", &first, true)
	chain := []hypervisor.Image{first, second}
	if second.Full {
		chain = chain[1:] // the contract allows a full image instead
	} else {
		assert.Equal(t, first.Prefix, second.Base, "an incremental image names its base")
	}
	target := h.Target(t)
	require.NoError(t, hv.Restore(ctx, chain, repo, target, nil))
	assert.True(t, h.Same(t, target, state), "the chain restores the machine as it was at the second snapshot")
	if !second.Full {
		err := hv.Restore(ctx, []hypervisor.Image{second}, repo, h.Target(t), nil)
		assert.Error(t, err, "an incremental image without its full one is refused")
	}
}

func confRefusals(t *testing.T, h Harness) {
	ctx := context.Background()
	hv, repo := h.New(t), memory.New()
	img, _ := export(t, h, hv, repo, "images/full", nil, false)

	target := h.Target(t)
	require.NoError(t, os.WriteFile(target, []byte("already here"), 0o600))
	require.Error(t, hv.Restore(ctx, []hypervisor.Image{img}, repo, target, nil), "an existing target")
	b, err := os.ReadFile(target)
	require.NoError(t, err)
	assert.Equal(t, "already here", string(b), "and it is left as it was")

	// One flipped byte in the middle of an object.
	o := img.Objects[len(img.Objects)-1]
	rc, err := repo.Get(ctx, o.Name, 0, -1)
	require.NoError(t, err)
	content, err := io.ReadAll(rc)
	rc.Close()
	require.NoError(t, err)
	content[len(content)/2] ^= 0x40
	require.NoError(t, repo.Delete(ctx, o.Name))
	require.NoError(t, repo.Put(ctx, o.Name, bytes.NewReader(content)))
	target = h.Target(t)
	err = hv.Restore(ctx, []hypervisor.Image{img}, repo, target, nil)
	require.Error(t, err, "a corrupted object")
	_, statErr := os.Stat(target)
	assert.True(t, errors.Is(statErr, os.ErrNotExist), "nothing left at the target after a refused restore")
}
