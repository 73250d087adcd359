package walbackup_test

import (
	"context"
	"fmt"
	"sort"
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
			add := func(n int) {
				for i := 0; i < n; i++ {
					g.SwitchSegment(make([]byte, 1000-64)) // 1000 bytes with the WAL header and record
				}
			}
			add(3)
			h.step(t, 15*time.Minute)
			add(2)
			require.NoError(t, h.job.StartParent(ctx)) // child 1 ships the 2 and ends; the backup archives segment 6
			h.idle(t)
			add(4)
			h.step(t, 15*time.Minute)
			require.NoError(t, h.job.Disable(ctx))

			p, err := store.List(ctx, session.Query{Job: h.job.ChildName(), Kind: session.KindChild})
			require.NoError(t, err)
			require.Len(t, p.Sessions, 2)
			c2, c1 := p.Sessions[0], p.Sessions[1]
			want1 := session.InstanceCounters{Machine: "vm1", SystemID: 42, Files: 5, Bytes: 5000, FirstSegment: "000000010000000000000001",
				LastSegment: "000000010000000000000005", FirstLSN: 0x1000000, LastLSN: 0x6000000}
			want2 := session.InstanceCounters{Machine: "vm1", SystemID: 42, Files: 4, Bytes: 4000, FirstSegment: "000000010000000000000007",
				LastSegment: "00000001000000000000000A", FirstLSN: 0x7000000, LastLSN: 0xB000000}
			assert.Equal(t, session.Counters{Files: 5, Bytes: 5000, FirstSegment: "000000010000000000000001",
				LastSegment: "000000010000000000000005", FirstLSN: 0x1000000, LastLSN: 0x6000000,
				Instances: []session.InstanceCounters{want1}}, c1.Counters, "with the one instance's own")
			assert.Equal(t, session.Counters{Files: 4, Bytes: 4000, FirstSegment: "000000010000000000000007",
				LastSegment: "00000001000000000000000A", FirstLSN: 0x7000000, LastLSN: 0xB000000,
				Instances: []session.InstanceCounters{want2}}, c2.Counters)
			assert.Equal(t, session.StateWarning, c1.State, "no restore point before child 1's WAL")
			assert.Equal(t, session.StateSuccess, c2.State, "child 2 follows a restore point")
			for _, c := range []session.Session{c1, c2} {
				assert.Equal(t, session.KindChild, c.Kind)
				assert.False(t, c.End.IsZero())
			}
			assert.Contains(t, c1.Result, "new parent session")
			assert.Contains(t, c2.Result, "disabled")
			parents, err := store.List(ctx, session.Query{Job: h.job.Name()})
			require.NoError(t, err)
			require.Len(t, parents.Sessions, 1)
			p1 := parents.Sessions[0]
			assert.Equal(t, p1.ID, c2.ParentID)
			assert.Equal(t, session.StateSuccess, p1.State)
			assert.Equal(t, "0/6000028", p1.Counters.FirstLSN.String(), "the backup's start")
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
		name := fmt.Sprintf("00000001%016X", seg)
		vm.AddWAL(name, walSegment(name, make([]byte, 1024-64))) // 1 KiB in all
		if seg%2 == 0 {
			clk.Set(next)
			next = <-idle
		}
	}
	if err := job.Disable(ctx); err != nil {
		panic(err)
	}
	var all []session.Session
	for _, name := range []string{job.Name(), job.ChildName()} {
		p, _ := store.List(ctx, session.Query{Job: name})
		all = append(all, p.Sessions...)
	}
	sort.Slice(all, func(a, b int) bool {
		return all[a].Start.Before(all[b].Start) || all[a].Start.Equal(all[b].Start) && all[a].Kind == session.KindParent
	})
	for _, s := range all {
		c := s.Counters
		fmt.Printf("%-6s %s-%s %-7s files %d, LSN %s to %s\n", s.Kind, s.Start.Format("15:04"), s.End.Format("15:04"), s.State, c.Files, c.FirstLSN, c.LastLSN)
		log, _ := store.Log(ctx, s.ID, 0, 100)
		for _, e := range log {
			if e.Severity != session.SeverityInfo {
				fmt.Printf("  %s: %s\n", e.Severity, e.Message)
			}
		}
	}
	// Output:
	// child  21:00-22:00 warning files 8, LSN 0/1000000 to 0/9000000
	//   warning: machine db1: no restore point in the repository yet: the WAL shipped now can be restored only once the parent job has taken an image
	// parent 22:00-22:00 success files 1, LSN 0/9000028 to 0/9000128
	// child  22:00-22:00 success files 0, LSN 0/0 to 0/0
}
