package walbackup_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/guesttest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository/memory"
	"github.com/pglogship/pglogship/session"
	smem "github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/session/postgres"
	"github.com/pglogship/pglogship/walbackup"
)

// The session list shows every child session with its counters (files,
// bytes, first and last segment, LSN range) and state, the same from the
// memory store and from the PostgreSQL store.
func TestSessionListFromBothStores(t *testing.T) {
	stores := map[string]func(t *testing.T) session.Store{
		"memory": func(*testing.T) session.Store { return smem.New() },
		"postgres": func(t *testing.T) session.Store {
			testenv.SkipIfShort(t)
			pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
			st, err := postgres.Open(context.Background(), postgres.Config{ConnString: pg.ConnString("postgres"), Schema: "sessionlist"})
			require.NoError(t, err)
			t.Cleanup(st.Close)
			return st
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			store := open(t)
			g := guesttest.NewGuest(guest.Instance{Version: 150000, WALLevel: "replica", ArchiveMode: "on", SystemID: 42,
				Timeline: 1, WALSegmentSize: 16 << 20})
			h := newJobHarness(t, g, memory.New(), store)
			require.NoError(t, h.job.Enable(ctx))
			h.idle(t)
			seq := 0
			add := func(n int) {
				for i := 0; i < n; i++ {
					seq++
					g.AddWAL(fmt.Sprintf("00000001%016X", seq), make([]byte, 1000))
				}
			}
			add(3)
			h.step(t, 15*time.Minute)
			add(2)
			require.NoError(t, h.job.StartParent(ctx)) // child 1 ships the 2 and ends
			h.idle(t)
			add(4)
			h.step(t, 15*time.Minute)
			require.NoError(t, h.job.Disable(ctx))

			p, err := store.List(ctx, session.Query{Job: h.job.ChildName(), Kind: session.KindChild})
			require.NoError(t, err)
			require.Len(t, p.Sessions, 2)
			c2, c1 := p.Sessions[0], p.Sessions[1]
			assert.Equal(t, session.Counters{Files: 5, Bytes: 5000, FirstSegment: "000000010000000000000001",
				LastSegment: "000000010000000000000005", FirstLSN: 0x1000000, LastLSN: 0x6000000}, c1.Counters)
			assert.Equal(t, session.Counters{Files: 4, Bytes: 4000, FirstSegment: "000000010000000000000006",
				LastSegment: "000000010000000000000009", FirstLSN: 0x6000000, LastLSN: 0xA000000}, c2.Counters)
			for _, c := range []session.Session{c1, c2} {
				assert.Equal(t, session.StateSuccess, c.State)
				assert.Equal(t, session.KindChild, c.Kind)
				assert.False(t, c.End.IsZero())
			}
			assert.Contains(t, c1.Result, "new parent session")
			assert.Contains(t, c2.Result, "disabled")
			parents, err := store.List(ctx, session.Query{Job: h.job.Name()})
			require.NoError(t, err)
			require.Len(t, parents.Sessions, 1)
			assert.Equal(t, parents.Sessions[0].ID, c2.ParentID)
		})
	}
}

// ExampleJob runs a job in virtual time on in-memory fakes and lists its
// child sessions.
func ExampleJob() {
	ctx := context.Background()
	clk := clock.NewMock()
	clk.Set(time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC))
	vm := guesttest.NewGuest(guest.Instance{Version: 150000, WALLevel: "replica", ArchiveMode: "on", SystemID: 7,
		Timeline: 1, WALSegmentSize: 16 << 20})
	store := smem.New()
	idle := make(chan time.Time, 100)
	job, err := walbackup.NewJob(walbackup.Config{
		Name:              "Daily DB Job",
		Machines:          []walbackup.Machine{{ID: "db1"}},
		Schedule:          walbackup.Daily(22, 0),
		LogBackupInterval: walbackup.DefaultLogBackupInterval,
		Hypervisor:        hypervisortest.New(clk, hypervisor.Machine{ID: "db1"}),
		Guests:            guesttest.NewDeployer(map[string]*guesttest.Guest{"db1": vm}),
		Repository:        memory.New(),
		Sessions:          store,
		Clock:             clk,
		Observer: func(e walbackup.Event) {
			if e.Kind == walbackup.EventIdle {
				idle <- e.Next
			}
		},
	})
	if err != nil {
		panic(err)
	}
	if err := job.Enable(ctx); err != nil {
		panic(err)
	}
	next := <-idle
	for seg := 1; seg <= 8; seg++ { // two segments every 15 minutes until 22:00
		vm.AddWAL(fmt.Sprintf("00000001%016X", seg), make([]byte, 1024))
		if seg%2 == 0 {
			clk.Set(next)
			next = <-idle
		}
	}
	if err := job.Disable(ctx); err != nil {
		panic(err)
	}
	p, _ := store.List(ctx, session.Query{Job: job.ChildName()})
	for i := len(p.Sessions) - 1; i >= 0; i-- {
		s := p.Sessions[i]
		fmt.Printf("%s %s-%s %s %d files %s..%s LSN %s-%s\n", s.Job, s.Start.Format("15:04"), s.End.Format("15:04"), s.State,
			s.Counters.Files, s.Counters.FirstSegment, s.Counters.LastSegment, s.Counters.FirstLSN, s.Counters.LastLSN)
	}
	// Output:
	// Daily DB Job PostgreSQL Log Backup 21:00-22:00 success 8 files 000000010000000000000001..000000010000000000000008 LSN 0/1000000-0/9000000
	// Daily DB Job PostgreSQL Log Backup 22:00-22:00 success 0 files .. LSN 0/0-0/0
}
