package hypervisortest_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/repository/memory"
)

func TestSnapshotExportRestore(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewMock()
	clk.Add(time.Hour)
	hv := hypervisortest.New(clk, hypervisor.Machine{ID: "vm1", Name: "db"})
	hv.SetDisk("vm1", []byte("disk v1"))
	repo := memory.New()

	snap, err := hv.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{})
	require.NoError(t, err)
	_, err = hv.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{})
	require.ErrorIs(t, err, hypervisor.ErrBusy, "one held snapshot per machine")
	hv.SetDisk("vm1", []byte("disk v2, written after the snapshot"))

	img, err := snap.Export(ctx, repo, "rp/1", nil)
	require.NoError(t, err)
	require.NoError(t, snap.Release(ctx))
	require.NoError(t, snap.Release(ctx), "release is idempotent")
	assert.True(t, img.Full)
	assert.Equal(t, clk.Now(), img.Taken)

	target := filepath.Join(t.TempDir(), "a")
	require.NoError(t, hv.Restore(ctx, []hypervisor.Image{img}, repo, target, nil))
	got, ok := hv.Restored(target)
	require.True(t, ok)
	assert.Equal(t, "disk v1", string(got), "the image is the point in time of the snapshot")
	require.Error(t, hv.Restore(ctx, []hypervisor.Image{img}, repo, target, nil), "never overwrite a target")

	_, err = hv.Snapshot(ctx, "vm9", hypervisor.SnapshotOptions{})
	require.ErrorIs(t, err, hypervisor.ErrNotFound)
}

func TestRestoreVerifiesChecksum(t *testing.T) {
	ctx := context.Background()
	hv := hypervisortest.New(clock.NewMock(), hypervisor.Machine{ID: "vm1"})
	hv.SetDisk("vm1", []byte("good"))
	repo := memory.New()
	snap, err := hv.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{})
	require.NoError(t, err)
	img, err := snap.Export(ctx, repo, "rp", nil)
	require.NoError(t, err)
	img.Objects[0].SHA256 = strings.Repeat("0", 64)
	require.ErrorContains(t, hv.Restore(ctx, []hypervisor.Image{img}, repo, "t", nil), "checksum mismatch")
	_, ok := hv.Restored("t")
	assert.False(t, ok)
}

func TestFault(t *testing.T) {
	ctx := context.Background()
	hv := hypervisortest.New(clock.NewMock(), hypervisor.Machine{ID: "vm1"})
	boom := errors.New("qmp socket gone")
	hv.SetFault(func(op hypervisortest.Op, _ string) error {
		if op == hypervisortest.OpExport {
			return boom
		}
		return nil
	})
	snap, err := hv.Snapshot(ctx, "vm1", hypervisor.SnapshotOptions{})
	require.NoError(t, err)
	_, err = snap.Export(ctx, memory.New(), "rp", nil)
	require.ErrorIs(t, err, boom)
	require.NoError(t, snap.Release(ctx))
	assert.Equal(t, 1, hv.Snapshots())
}
