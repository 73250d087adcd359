package walbackup_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/repository/memory"
	"github.com/pglogship/pglogship/walbackup"
)

// Shipping is cut off at random points (50 by default, half the crash
// trials; the context is canceled in the middle of a guest or repository
// operation, as when the host dies); after a restart every segment is in
// the repository or still in the guest, none is lost and none is stored
// with two contents.
func TestShipCutOffAtRandomPoints(t *testing.T) {
	for trial := 0; trial < crashTrials(t)/2; trial++ {
		t.Run(fmt.Sprint(trial), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(trial), 7))
			files := map[string][]byte{}
			for i := 1; i <= 1+rng.IntN(8); i++ {
				files[seg(1, i)] = []byte(fmt.Sprintf("segment %d of trial %d", i, trial))
			}
			g, rt := fakeGuest(t, files)
			repo := memory.New()

			ctx, cancel := context.WithCancel(context.Background())
			var ops atomic.Int64
			cutAt := int64(1 + rng.IntN(3*len(files)+6))
			cut := func() {
				if ops.Add(1) == cutAt {
					cancel()
				}
			}
			g.SetFault(func(guesttest.Op, string) error { cut(); return nil })
			repo.SetFault(func(memory.Op, string) error { cut(); return nil })
			_, _ = walbackup.ShipOnce(ctx, rt, repo, inst, walbackup.ShipOptions{}) // may or may not finish
			cancel()

			// Whatever happened, nothing is lost so far.
			requireNothingLost(t, files, stored(t, repo, inst, 1), g.Waiting(), fmt.Sprintf("cut at op %d", cutAt))

			// The restarted host ships the rest.
			g.SetFault(nil)
			repo.SetFault(nil)
			_, err := walbackup.ShipOnce(context.Background(), rt, repo, inst, walbackup.ShipOptions{})
			require.NoError(t, err)
			require.Empty(t, g.Waiting())
			in := stored(t, repo, inst, 1) // fails on two contents for a name
			for n, want := range files {
				require.Equal(t, want, in[n], "%s after the restart", n)
			}
		})
	}
}

// requireNothingLost checks that every file is stored with its own content
// or still waiting in the guest.
func requireNothingLost(t *testing.T, files, in map[string][]byte, waiting []string, where string) {
	t.Helper()
	left := map[string]bool{}
	for _, n := range waiting {
		left[n] = true
	}
	for n, want := range files {
		got, ok := in[n]
		require.True(t, ok || left[n], "%s is neither stored nor in the guest (%s)", n, where)
		if ok {
			require.Equal(t, want, got, "%s stored with other content", n)
		}
	}
}
