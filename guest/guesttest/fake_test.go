package guesttest_test

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/repository/checksum"
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
		assert.Equal(t, checksum.Of(checksum.XXH3, data), sum)
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

func TestRecover(t *testing.T) {
	ctx := context.Background()
	g := guesttest.NewGuest(pg15)
	rt, err := guesttest.NewDeployer(map[string]*guesttest.Guest{"vm1": g}).Deploy(ctx, guest.Target{Machine: "vm1"})
	require.NoError(t, err)
	rec, ok := rt.(guest.Recoverer)
	require.True(t, ok)
	archive := map[string]string{"000000010000000000000003": "seg3", "000000010000000000000004": "seg4"}
	fetch := func(_ context.Context, name string, w io.Writer) error {
		data, ok := archive[name]
		if !ok {
			return guest.ErrNoSuchWAL
		}
		_, err := io.WriteString(w, data)
		return err
	}
	g.SetRecovery([]string{"00000002.history", "000000010000000000000003", "000000010000000000000004", "000000010000000000000005"},
		guest.RecoveryResult{Promoted: true, Timeline: 2})
	cfg := guest.RecoveryConfig{DataDir: "/restored", Settings: map[string]string{"recovery_target": "immediate"}}
	res, err := rec.Recover(ctx, cfg, fetch)
	require.NoError(t, err)
	assert.Equal(t, guest.RecoveryResult{Promoted: true, Timeline: 2, Requests: 4, Fetched: 2, Waited: 4}, res)
	got := g.Recoveries()
	require.Len(t, got, 1)
	assert.Equal(t, cfg, got[0].Config)
	assert.Equal(t, map[string][]byte{"000000010000000000000003": []byte("seg3"), "000000010000000000000004": []byte("seg4")}, got[0].Files)
	assert.Equal(t, []string{"00000002.history", "000000010000000000000005"}, got[0].Missing)

	_, err = rec.Recover(ctx, cfg, func(context.Context, string, io.Writer) error { return errors.New("repository down") })
	require.ErrorIs(t, err, guest.ErrRecoveryFailed)
	g.SetFault(func(op guesttest.Op, _ string) error {
		if op == guesttest.OpRecover {
			return errors.New("injected")
		}
		return nil
	})
	_, err = rec.Recover(ctx, cfg, fetch)
	require.ErrorContains(t, err, "injected")
	assert.Len(t, g.Recoveries(), 2, "a refused call did nothing")
}
