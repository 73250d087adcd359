package walbackup_test

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/session/postgres"
	"github.com/pglogship/pglogship/walbackup"
)

// Three processes and 30 jobs on one real PostgreSQL session store (three
// store values on one database, as three processes would open it), fake
// guests and a memory repository shared by all, one virtual clock.
func TestRunnersShareJobsByLeasePostgres(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%t", batch), func(t *testing.T) {
			db := fmt.Sprintf("config_%t", batch)
			pg.CreateDatabase(t, db)
			runnersScenario(t, batch, func(t testing.TB) session.Store {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				st, err := postgres.Open(ctx, postgres.Config{ConnString: pg.ConnString(db)})
				require.NoError(t, err)
				t.Cleanup(st.Close)
				return st
			})
		})
	}
}

// runnersScenario is the must-show: three processes and 30 jobs;
// at every moment each job runs in exactly one process (checked from the
// Runners and from the session records); one process is killed and its
// jobs resume elsewhere within the lease's time to live, with nothing lost;
// a job disabled through one process stops on whichever ran it.
// openStore returns each process's own store value on the shared database;
// with batch, the Runners poll through the store's LeaseBatcher.
func runnersScenario(t *testing.T, batch bool, openStore func(testing.TB) session.Store) {
	const jobs = 30
	ttl := walbackup.DefaultLeaseTTL
	f := newFleet(testenv.LoggerAt(t, slog.LevelWarn))
	w := newWorld(f, jobs)
	w.batch = batch
	var procs []*process
	var stores []session.Store
	for _, holder := range []string{"host-1", "host-2", "host-3"} {
		st := openStore(t)
		stores = append(stores, st)
		procs = append(procs, w.process(t, holder, st, ttl))
	}
	records := stores[0]
	live := func() []*process {
		var out []*process
		for _, p := range procs {
			if !p.dead.Load() {
				out = append(out, p)
			}
		}
		return out
	}
	// exactlyOnce checks, from the Runners, that each enabled job runs in
	// exactly one live process and a disabled one in none.
	exactlyOnce := func(enabled map[string]bool) {
		t.Helper()
		where := map[string][]string{}
		for _, p := range live() {
			for _, name := range p.runner.Running() {
				where[name] = append(where[name], p.holder)
			}
		}
		for _, name := range w.names {
			want := 0
			if enabled[name] {
				want = 1
			}
			require.Len(t, where[name], want, "%s runs in %v at %v", name, where[name], f.clk.Now())
		}
	}

	// Whenever everything waits for the clock, no job runs in two
	// processes.
	f.settled = func() {
		t.Helper()
		where := map[string]string{}
		for _, p := range live() {
			for _, name := range p.runner.Running() {
				require.Empty(t, where[name], "%s runs in %s and %s at %v", name, where[name], p.holder, f.clk.Now())
				where[name] = p.holder
			}
		}
	}

	// Each process enables a third of the jobs; the one it nudges takes
	// them at once.
	enabled := map[string]bool{}
	for i, name := range w.names {
		procs[i%3].set(t, f, name, true)
		enabled[name] = true
	}
	for i, p := range procs {
		assert.Len(t, p.runner.Running(), jobs/3, "process %d", i)
	}
	exactlyOnce(enabled)

	for i := 0; i < 2; i++ {
		w.addWAL(1 + i)
		f.step(t, 15*time.Minute)
		exactlyOnce(enabled)
	}

	// Mid-interval, with WAL waiting in every guest, host-1 dies: its
	// context ends and every call it makes fails.
	w.addWAL(1)
	f.step(t, 5*time.Minute)
	w.addWAL(2)
	victim := procs[0]
	orphans := victim.runner.Running()
	require.Len(t, orphans, jobs/3)
	killedAt := f.clk.Now()
	victim.kill()
	for _, name := range orphans {
		cs := childSessions(t, records, name)
		assert.Equal(t, session.StateWorking, cs[len(cs)-1].State, "%s: the dead process left its session running", name)
	}
	for f.clk.Now().Sub(killedAt) < ttl {
		f.step(t, ttl/6)
	}
	exactlyOnce(enabled)
	for _, name := range orphans {
		cs := childSessions(t, records, name)
		require.GreaterOrEqual(t, len(cs), 2, name)
		old, cur := cs[len(cs)-2], cs[len(cs)-1]
		holder, _ := runBy(t, records, cur.ID)
		assert.Contains(t, []string{"host-2", "host-3"}, holder, "%s resumed on a live process", name)
		assert.LessOrEqual(t, cur.Start.Sub(killedAt), ttl, "%s resumed within the lease TTL of the kill", name)
		assert.Equal(t, session.StateFailed, old.State, "%s: the dead process's session was closed at the new start", name)
		assert.Contains(t, old.Result, "host program stopped")
		oldHolder, _ := runBy(t, records, old.ID)
		assert.Equal(t, "host-1", oldHolder)
	}

	f.step(t, 10*time.Minute) // the interval the waiting WAL ships in
	w.addWAL(1)
	f.step(t, 15*time.Minute)
	exactlyOnce(enabled)

	// A job disabled through one process stops on the one that runs it.
	target := ""
	for _, name := range procs[1].runner.Running() {
		target = name
		break
	}
	require.NotEmpty(t, target)
	w.addWAL(1, target)
	procs[2].set(t, f, target, false)
	enabled[target] = false
	f.step(t, ttl/3)
	exactlyOnce(enabled)
	cs := childSessions(t, records, target)
	last := cs[len(cs)-1]
	assert.Contains(t, []session.State{session.StateSuccess, session.StateWarning}, last.State) // no restore point yet
	assert.Contains(t, last.Result, "disabled", "disabled cleanly on host-2")
	holder, _ := runBy(t, records, last.ID)
	assert.Equal(t, "host-2", holder)
	assert.Empty(t, w.guests[target].Waiting(), "with a last ship")
	f.step(t, ttl)
	exactlyOnce(enabled)
	assert.Len(t, childSessions(t, records, target), len(cs), "nobody starts a disabled job")
	// And enabled through another, it runs again somewhere.
	procs[1].set(t, f, target, true)
	enabled[target] = true
	f.step(t, ttl/3)
	exactlyOnce(enabled)

	// The end: every job disabled through host-3, each stops cleanly where
	// it runs, after a last ship.
	w.addWAL(1)
	for _, name := range w.names {
		procs[2].set(t, f, name, false)
		enabled[name] = false
	}
	f.step(t, ttl/3)
	exactlyOnce(enabled)
	w.requireAllShipped(t)

	// From the session records: no two child sessions of a job ever ran
	// at once, and from its first start to its end some session ran all
	// the time (the next began when the one before ended); each was run
	// by one process under a lease whose token grew with every new holder.
	holders := map[string]int{}
	for _, name := range w.names {
		cs := childSessions(t, records, name)
		requireNoOverlap(t, cs, name)
		var prevHolder string
		var prevToken int64
		for i, s := range cs {
			require.True(t, s.State.Final(), "%s: session %s still %s", name, s.ID, s.State)
			h, token := runBy(t, records, s.ID)
			require.NotEmpty(t, h, "%s: session %s does not say who ran it", name, s.ID)
			holders[h]++
			if i > 0 && h != prevHolder {
				require.Greater(t, token, prevToken, "%s: %s took over from %s", name, h, prevHolder)
			}
			if i > 0 && name != target {
				require.True(t, cs[i-1].End.Equal(s.Start), "%s: a gap from %v to %v", name, cs[i-1].End, s.Start)
			}
			prevHolder, prevToken = h, token
		}
	}
	t.Logf("child sessions per process: %v", holders)
	var names []string
	for h := range holders {
		names = append(names, h)
	}
	sort.Strings(names)
	require.Equal(t, []string{"host-1", "host-2", "host-3"}, names)
	for _, p := range live() {
		p.stop()
	}
}
