package walbackup_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/memory"
	smem "github.com/pglogship/pglogship/session/memory"
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

// Two host processes share four jobs on one store (memory, polled a job at
// a time or in batches); one dies at a random call of its own (a session
// write, a lease call, a guest or repository call around an interval's
// ship: 50 points by default, half of PGLOGSHIP_CRASH_TRIALS in make
// soak), in the middle of whatever it did;
// the other takes its jobs over. In the end no WAL file is lost or stored
// with two contents, and from the session records no two child sessions
// of a job ever ran at once.
func TestRunnersKilledAtRandomPoints(t *testing.T) {
	t.Parallel()
	ttl := walbackup.DefaultLeaseTTL
	var died atomic.Int64
	trials := crashTrials(t) / 2
	t.Cleanup(func() { t.Logf("the victim died in %d of %d trials", died.Load(), trials) })
	for trial := 0; trial < trials; trial++ {
		t.Run(fmt.Sprint(trial), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(trial), 17))
			f := newFleet(discardLogger())
			w := newWorld(f, 4)
			w.batch = rng.IntN(2) == 0
			store := smem.New()
			p1 := w.process(t, "host-1", store, ttl)
			p2 := w.process(t, "host-2", store, ttl)
			for i, name := range w.names {
				[]*process{p1, p2}[i%2].set(t, f, name, true)
			}
			w.addWAL(1 + rng.IntN(3))
			victim, survivor := p1, p2
			if rng.IntN(2) == 0 {
				victim, survivor = p2, p1
			}
			f.step(t, 15*time.Minute-time.Second)
			victim.trip.Store(int64(1 + rng.IntN(40)))
			f.step(t, time.Second) // the victim ships, and may die doing it
			w.addWAL(1)
			f.step(t, 5*time.Minute)
			if victim.dead.Load() {
				died.Add(1)
				victim.stop() // what was left of it
			}
			victim.trip.Store(0)
			// Whatever happened, nothing is lost so far.
			for i, name := range w.names {
				g := w.guests[name]
				in := stored(t, w.repo, repository.Instance{Job: name, Machine: "vm1", SystemID: uint64(1000 + i)}, 1)
				requireNothingLost(t, g.Archived(), in, g.Waiting(), fmt.Sprintf("trial %d, %s", trial, name))
			}
			// The survivor runs every job once the victim's leases ran out.
			for k := 0; k < 3; k++ {
				f.step(t, ttl)
			}
			if victim.dead.Load() {
				require.Len(t, survivor.runner.Running(), len(w.names), "the survivor runs every job")
			}
			w.addWAL(1)
			f.step(t, 15*time.Minute)
			live := []*process{survivor}
			if !victim.dead.Load() {
				live = append(live, victim)
			}
			for _, name := range w.names {
				live[0].set(t, f, name, false) // a last ship wherever it runs
			}
			f.step(t, ttl)
			w.requireAllShipped(t)
			for _, name := range w.names {
				requireNoOverlap(t, childSessions(t, store, name), name)
			}
			for _, p := range live {
				p.stop()
			}
		})
	}
}
