package guesttest_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
)

var pg15 = guest.Instance{Version: 150018, SystemID: 7, WALLevel: "replica", ArchiveMode: "on", Timeline: 1}

func TestDeployShipRemoveClose(t *testing.T) {
	ctx := context.Background()
	g := guesttest.NewGuest(pg15)
	d := guesttest.NewDeployer(map[string]*guesttest.Guest{"vm1": g})
	g.AddWAL("000000010000000000000002", []byte("seg2"))
	g.AddWAL("000000010000000000000001", []byte("seg1"))

	rt, err := d.Deploy(ctx, guest.Target{Machine: "vm1"})
	require.NoError(t, err)
	assert.Equal(t, 1, g.Installed())
	require.NoError(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: "/var/tmp/wal"}))
	require.NoError(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: "/var/tmp/wal"}), "idempotent")
	assert.Equal(t, guesttest.ArchiveCommand, g.Instance().ArchiveCommand)

	files, err := rt.Ready(ctx)
	require.NoError(t, err)
	require.Len(t, files, 2)
	assert.Equal(t, "000000010000000000000001", files[0].Name, "oldest first")

	var got []string
	err = rt.Read(ctx, []string{files[0].Name, files[1].Name}, func(f guest.Frame) error {
		data, err := io.ReadAll(f.Data)
		require.NoError(t, err)
		size, sum := f.Checksum()
		assert.Equal(t, sha256.Sum256(data), sum)
		assert.Equal(t, int64(len(data)), size)
		got = append(got, string(data))
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"seg1", "seg2"}, got)

	require.NoError(t, rt.Remove(ctx, []string{files[0].Name}))
	assert.Equal(t, []string{"000000010000000000000002"}, g.Waiting())

	require.NoError(t, rt.Close(ctx))
	require.NoError(t, rt.Close(ctx), "close is idempotent")
	assert.Equal(t, 0, g.Installed())
	_, err = rt.Ready(ctx)
	require.ErrorIs(t, err, guest.ErrClosed)
}

func TestRequirementsRefused(t *testing.T) {
	ctx := context.Background()
	inst := pg15
	inst.ArchiveCommand = "cp %p /backup/%f"
	g := guesttest.NewGuest(inst)
	rt, err := guesttest.NewDeployer(map[string]*guesttest.Guest{"vm1": g}).Deploy(ctx, guest.Target{Machine: "vm1"})
	require.NoError(t, err)
	require.ErrorIs(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: "/x"}), guest.ErrArchiveCommandTaken)
	assert.Equal(t, "cp %p /backup/%f", g.Instance().ArchiveCommand, "a refused prepare changes nothing")
}

func TestFault(t *testing.T) {
	ctx := context.Background()
	g := guesttest.NewGuest(pg15)
	d := guesttest.NewDeployer(map[string]*guesttest.Guest{"vm1": g})
	unreachable := errors.New("ssh: connect: connection refused")
	g.SetFault(func(op guesttest.Op, _ string) error {
		if op == guesttest.OpDeploy {
			return unreachable
		}
		return nil
	})
	_, err := d.Deploy(ctx, guest.Target{Machine: "vm1"})
	require.ErrorIs(t, err, unreachable)
	assert.Equal(t, 0, g.Installed(), "a failed deploy leaves nothing installed")
}
