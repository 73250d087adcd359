package walbackup_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/walbackup"
)

// Image exports, image restores and WAL fetched for a recovery report
// their progress to Config.Progress, in bytes, for a command's progress
// bar, and never to the Observer.
func TestProgressEvents(t *testing.T) {
	ctx := context.Background()
	progress := make(chan walbackup.Event, 1024)
	h := newHarness(t, func(c *walbackup.Config) { c.Progress = func(e walbackup.Event) { progress <- e } })
	require.NoError(t, h.job.Enable(ctx))
	h.idle(t)
	h.addWAL()
	require.NoError(t, h.job.StartParent(ctx))
	observed := h.idle(t)
	require.NoError(t, h.job.Disable(ctx))
	observed = append(observed, drain(h.events)...)
	assert.NotEmpty(t, progressOf(drain(progress), "image export"), "the export reports its bytes")

	_, err := h.job.Restore(ctx, walbackup.RestoreRequest{Machine: "vm1", Target: walbackup.Consistent()},
		walbackup.RestoreTo{Image: filepath.Join(t.TempDir(), "restored")})
	require.NoError(t, err)
	assert.NotEmpty(t, progressOf(drain(progress), "image restore"), "the restore reports its bytes")

	var buf bytes.Buffer
	require.NoError(t, h.job.FetchFunc(inst42)(ctx, "000000010000000000000001", &buf))
	var fetched []walbackup.Event
	for _, e := range drain(progress) {
		if e.Kind == walbackup.EventWALFetched {
			fetched = append(fetched, e)
		}
	}
	require.Len(t, fetched, 1)
	assert.Equal(t, "000000010000000000000001", fetched[0].Message)
	assert.Equal(t, int64(buf.Len()), fetched[0].Bytes)

	observed = append(observed, drain(h.events)...)
	for _, e := range observed {
		assert.NotContains(t, []walbackup.EventKind{walbackup.EventProgress, walbackup.EventWALFetched}, e.Kind, "the Observer hears no progress")
	}
}

func drain(ch chan walbackup.Event) []walbackup.Event {
	var out []walbackup.Event
	for {
		select {
		case e := <-ch:
			out = append(out, e)
		case <-time.After(100 * time.Millisecond):
			return out
		}
	}
}

// progressOf returns the Bytes of the progress events of what.
func progressOf(events []walbackup.Event, what string) []int64 {
	var out []int64
	for _, e := range events {
		if e.Kind == walbackup.EventProgress && e.Message == what {
			out = append(out, e.Bytes)
		}
	}
	return out
}
