package walbackup_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest/local"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/hypervisor/physical"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/session"
	smem "github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/walbackup"
)

// instanceRun is one instance of the two-instance machine: its server and
// the rows committed, with each commit's time.
type instanceRun struct {
	pg      *testenv.Postgres
	sysID   uint64
	commits []time.Time // of rows 1..n, in order
}

// rowsUpTo is the items table after the first n commits, as psql prints it.
func (r *instanceRun) rowsUpTo(n int) string {
	var out string
	for i := 1; i <= n; i++ {
		if out != "" {
			out += "\n"
		}
		out += fmt.Sprintf("%d|%d", i, i*int(r.sysID%7+1))
	}
	return out
}

// Two PostgreSQL instances of different releases on one machine
// (Machine.Instances): each is shipped into a WAL chain of its own (its
// system identifier), imaged with its own restore point, counted apart in
// the child session, and restored independently by its data directory,
// row for row, to the latest state and to a time, with its own release's
// binaries.
func TestTwoInstancesOnOneMachine(t *testing.T) {
	testenv.SkipIfShort(t)
	t.Parallel()
	ctx := context.Background()
	settings := map[string]string{"track_commit_timestamp": "on"}
	a := &instanceRun{pg: testenv.StartPostgres(t, testenv.PostgresConfig{Settings: settings})}
	b := &instanceRun{pg: testenv.StartPostgres(t, testenv.PostgresConfig{Major: 17, Settings: settings})}
	require.Equal(t, a.pg.User, b.pg.User)
	b.pg.Exec(t, "postgres", fmt.Sprintf("ALTER ROLE %q PASSWORD '%s'", b.pg.User, a.pg.Password)) // one account, as a deployer has
	b.pg.Password = a.pg.Password
	for _, in := range []*instanceRun{a, b} {
		id, err := strconv.ParseUint(in.pg.Psql(t, "postgres", "SELECT system_identifier FROM pg_control_system()"), 10, 64)
		require.NoError(t, err)
		in.sysID = id
		in.pg.Exec(t, "postgres", "CREATE TABLE items (id int PRIMARY KEY, val int)")
	}
	require.NotEqual(t, a.sysID, b.sysID)

	d, err := local.New(local.Config{
		Binary: testenv.BuildRuntime(t),
		Conn:   runtime.ConnConfig{Host: a.pg.Host, Port: a.pg.Port, User: a.pg.User, Password: a.pg.Password},
		Logger: testenv.Logger(t),
	})
	require.NoError(t, err)
	hv, err := physical.New(physical.Config{Machines: []physical.Machine{{ID: "db1"}}, Guests: d, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	repo, err := fs.New(fs.Config{Root: filepath.Join(t.TempDir(), "repository")})
	require.NoError(t, err)
	store := smem.New()
	h := &harness{clk: clock.NewMock(), store: store, list: store, events: make(chan walbackup.Event, 1024)}
	walDir := filepath.Join(testenv.UserDir(t, a.pg.OSUser), "wal")
	job, err := walbackup.NewJob(walbackup.Config{
		Name: "Daily DB Job", LogBackupInterval: walbackup.DefaultLogBackupInterval, WALDir: walDir,
		Machines:   []walbackup.Machine{{ID: "db1", Instances: []string{a.pg.DataDir, b.pg.DataDir}}},
		Hypervisor: hv, Guests: d, Repository: repo, Sessions: store, Clock: clock.New(), Logger: testenv.Logger(t),
		Observer: func(e walbackup.Event) { h.events <- e },
	})
	require.NoError(t, err)
	h.job = job

	require.NoError(t, job.Enable(ctx))
	h.idle(t)
	require.NoError(t, job.StartParent(ctx))
	h.idle(t)
	for _, in := range []*instanceRun{a, b} {
		assert.DirExists(t, walbackup.InstanceWALDir(walDir, in.pg.DataDir), "a WAL folder of its own")
	}

	// Rows committed in turns on both, apart in time.
	for i := 1; i <= 12; i++ {
		for _, in := range []*instanceRun{a, b} {
			conn := in.pg.Connect(t, "postgres")
			var at time.Time
			_, err := conn.Exec(ctx, "INSERT INTO items VALUES ($1, $2)", i, i*int(in.sysID%7+1))
			require.NoError(t, err)
			require.NoError(t, conn.QueryRow(ctx, "SELECT pg_xact_commit_timestamp(xmin) FROM items WHERE id = $1", i).Scan(&at))
			in.commits = append(in.commits, at)
			require.NoError(t, conn.Close(ctx))
		}
		if i%5 == 0 {
			a.pg.SwitchWAL(t, 1)
			b.pg.SwitchWAL(t, 1)
		}
		time.Sleep(5 * time.Millisecond)
	}
	a.pg.SwitchWAL(t, 1)
	b.pg.SwitchWAL(t, 1)
	require.NoError(t, job.Disable(ctx)) // the last ship

	// The child sessions count each instance apart, under its system
	// identifier.
	children := h.sessions(t, job.ChildName())
	require.NotEmpty(t, children)
	shipped := map[string]int64{}
	for _, s := range children {
		require.Len(t, s.Counters.Instances, 2, "one entry per instance")
		for i, in := range []*instanceRun{a, b} {
			ic := s.Counters.Instances[i]
			assert.Equal(t, session.InstanceCounters{Machine: "db1", DataDir: in.pg.DataDir, SystemID: in.sysID},
				session.InstanceCounters{Machine: ic.Machine, DataDir: ic.DataDir, SystemID: ic.SystemID})
			shipped[ic.DataDir] += ic.Files
		}
	}
	assert.Positive(t, shipped[a.pg.DataDir])
	assert.Positive(t, shipped[b.pg.DataDir])

	// Two chains, each with a restore point of its own instance.
	insts, err := repository.Instances(ctx, repo, "Daily DB Job", "db1")
	require.NoError(t, err)
	var ids []uint64
	for _, inst := range insts {
		ids = append(ids, inst.SystemID)
	}
	assert.ElementsMatch(t, []uint64{a.sysID, b.sysID}, ids)
	for _, in := range []*instanceRun{a, b} {
		id, err := job.SystemIDOf(ctx, "db1", in.pg.DataDir)
		require.NoError(t, err)
		assert.Equal(t, in.sysID, id)
	}

	restore := func(t *testing.T, in *instanceRun, target walbackup.Target, n int) {
		dir := filepath.Join(testenv.UserDir(t, in.pg.OSUser), "restored")
		pg := testenv.PostgresFor(t, dir, in.pg)
		res, err := job.Restore(ctx, walbackup.RestoreRequest{Machine: "db1", DataDir: in.pg.DataDir, Target: target},
			walbackup.RestoreTo{Image: dir, Guest: walbackup.Machine{ID: "db1"}, Recovery: walbackup.RecoveryOptions{
				Port: pg.Port, SocketDir: pg.SocketDir, OSUser: in.pg.OSUser, BinDir: in.pg.BinDir,
				Settings: map[string]string{"listen_addresses": "127.0.0.1"}}})
		require.NoError(t, err, "%s", res.Recovery.Log)
		assert.Equal(t, in.sysID, res.Plan.Instance.SystemID, "the instance asked for")
		assert.Equal(t, in.pg.Major(t), pg.Major(t))
		assert.Equal(t, in.rowsUpTo(n), items(t, pg), "row for row")
		pg.Stop(t)
	}
	for name, in := range map[string]*instanceRun{"15": a, "17": b} {
		t.Run("instance on "+name+", latest", func(t *testing.T) { restore(t, in, walbackup.Latest(), 12) })
		t.Run("instance on "+name+", a time", func(t *testing.T) { restore(t, in, walbackup.ToTime(in.commits[6]), 7) })
	}

	_, err = job.Plan(ctx, walbackup.RestoreRequest{Machine: "db1", DataDir: "/no/such/instance", Target: walbackup.Latest()})
	require.ErrorIs(t, err, walbackup.ErrNoRestorePoint)
	assert.ErrorContains(t, err, "instance /no/such/instance")
}
