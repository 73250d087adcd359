package qmp_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/hypervisor/qemu/qmp"
	"github.com/pglogship/pglogship/hypervisor/qemu/qmp/qmptest"
)

func dialAgent(t *testing.T, path string) *qmp.Agent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := qmp.DialAgent(ctx, path)
	require.NoError(t, err)
	t.Cleanup(func() { a.Close() })
	return a
}

func TestQMPAgentSyncsThenFreezesAndThaws(t *testing.T) {
	fake := qmptest.NewAgent(t)
	// Leftovers of an earlier client: a stale sync answer and a half
	// response. The client must skip them.
	fake.SetStale([]byte("\xff{\"return\": 42}\n{\"return\": 1"))
	a := dialAgent(t, fake.Socket)
	ctx := context.Background()

	st, err := a.FreezeStatus(ctx)
	require.NoError(t, err)
	assert.Equal(t, qmp.FreezeStatusThawed, st)

	n, err := a.FreezeFilesystems(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.True(t, fake.Frozen())
	st, err = a.FreezeStatus(ctx)
	require.NoError(t, err)
	assert.Equal(t, qmp.FreezeStatusFrozen, st)

	n, err = a.ThawFilesystems(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.False(t, fake.Frozen())
	assert.Equal(t, []string{"guest-sync-delimited", "guest-fsfreeze-status", "guest-fsfreeze-freeze",
		"guest-fsfreeze-status", "guest-fsfreeze-thaw"}, fake.Calls())
}

func TestQMPAgentErrorsCarryClassAndDesc(t *testing.T) {
	fake := qmptest.NewAgent(t)
	fake.FailFreeze("failed to freeze /srv: Device or resource busy")
	a := dialAgent(t, fake.Socket)
	_, err := a.FreezeFilesystems(context.Background())
	require.Error(t, err)
	assert.True(t, qmp.IsClass(err, qmp.ClassGenericError))
	assert.Contains(t, err.Error(), "guest-fsfreeze-freeze: failed to freeze /srv: Device or resource busy")

	// An error response keeps the stream in step: the thaw goes through.
	_, err = a.ThawFilesystems(context.Background())
	require.NoError(t, err)
	assert.False(t, fake.Frozen())

	err = a.Execute(context.Background(), "guest-shutdown-now-please", nil, nil)
	assert.True(t, qmp.IsClass(err, qmp.ClassCommandNotFound), "%v", err)
}

func TestQMPAgentWithoutAnswersEndsWithContext(t *testing.T) {
	fake := qmptest.NewAgent(t)
	fake.SetSilent(true) // the socket exists, no agent runs in the guest
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := qmp.DialAgent(ctx, fake.Socket)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// A call cut off by its ctx closes the connection.
	fake.SetSilent(false)
	a := dialAgent(t, fake.Socket)
	fake.SetSilent(true)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	_, err = a.FreezeStatus(ctx2)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	_, err = a.FreezeStatus(context.Background())
	require.ErrorIs(t, err, qmp.ErrClosed)
	require.NoError(t, a.Close())
	require.NoError(t, a.Close())
}
