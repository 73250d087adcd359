package walbackup_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest/local"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/session"
	smem "github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

// realJob is a job on a real PostgreSQL through the local deployer and the
// real runtime, with a file-system repository; hv takes the images.
type realJob struct {
	*harness
	pg     *testenv.Postgres
	repo   *fs.Repo
	walDir string
}

func newRealJob(t *testing.T, hv func(clk *clock.Mock) hypervisor.Hypervisor) *realJob {
	t.Helper()
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	d, err := local.New(local.Config{
		Binary: testenv.BuildRuntime(t),
		Conn:   runtime.ConnConfig{Host: pg.Host, Port: pg.Port, User: pg.User, Password: pg.Password},
		Logger: testenv.Logger(t),
	})
	require.NoError(t, err)
	repo, err := fs.New(fs.Config{Root: t.TempDir()})
	require.NoError(t, err)
	r := &realJob{pg: pg, repo: repo, walDir: filepath.Join(testenv.UserDir(t, pg.OSUser), "wal")}
	r.harness = &harness{clk: clock.NewMock(), store: smem.New(), events: make(chan walbackup.Event, 1024)}
	r.list = r.store
	r.clk.Set(time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC))
	job, err := walbackup.NewJob(walbackup.Config{
		Name: "Daily DB Job", Machines: []walbackup.Machine{{ID: "db1"}}, LogBackupInterval: walbackup.DefaultLogBackupInterval,
		WALDir: r.walDir, Hypervisor: hv(r.clk), Guests: d, Repository: repo, Sessions: r.store, Clock: r.clk,
		Logger: testenv.Logger(t), Observer: func(e walbackup.Event) { r.events <- e },
	})
	require.NoError(t, err)
	r.job = job
	return r
}

func (r *realJob) instance(t *testing.T) repository.Instance {
	t.Helper()
	var sysid uint64
	require.NoError(t, r.pg.Connect(t, "postgres").QueryRow(context.Background(),
		"SELECT system_identifier FROM pg_control_system()").Scan(&sysid))
	return repository.Instance{Job: "Daily DB Job", Machine: "db1", SystemID: sysid}
}

// On real PostgreSQL, a parent session holds the real backup mode: the
// manifest has PostgreSQL's own backup_label, the LSNs it reported, and
// every segment from the backup's start to its stop, plus the .backup
// history file, is in the repository before the manifest commits.
func TestParentOnRealPostgres(t *testing.T) {
	ctx := context.Background()
	r := newRealJob(t, func(clk *clock.Mock) hypervisor.Hypervisor {
		return hypervisortest.New(clk, hypervisor.Machine{ID: "db1"})
	})
	require.NoError(t, r.job.Enable(ctx))
	r.idle(t)
	r.pg.SwitchWAL(t, 2)
	r.step(t, walbackup.DefaultLogBackupInterval)
	r.clk.Add(time.Minute)
	require.NoError(t, r.job.StartParent(ctx))
	r.idle(t)
	r.pg.SwitchWAL(t, 2)
	r.step(t, walbackup.DefaultLogBackupInterval)
	require.NoError(t, r.job.Disable(ctx))

	inst := r.instance(t)
	rps, err := repository.RestorePoints(ctx, r.repo, inst)
	require.NoError(t, err)
	require.Len(t, rps, 1)
	rp := rps[0]
	assert.Contains(t, rp.BackupLabel, "START WAL LOCATION: "+rp.StartLSN.String())
	assert.Contains(t, rp.BackupLabel, "BACKUP METHOD: streamed")
	assert.Contains(t, rp.BackupLabel, "LABEL: pglogship "+rp.ID)
	assert.Less(t, rp.StartLSN, rp.StopLSN)
	assert.Equal(t, uint32(1), rp.Timeline)

	in := stored(t, r.repo, inst, 1)
	first := wal.SegmentAt(1, rp.StartLSN, 16<<20)
	last := wal.SegmentAt(1, rp.StopLSN-1, 16<<20)
	for f := first; f.String() <= last.String(); f = f.Next(16 << 20) {
		assert.Contains(t, in, f.String(), "the backup's WAL is stored")
	}
	var backupFile bool
	for n := range in {
		backupFile = backupFile || strings.HasSuffix(n, ".backup")
	}
	assert.True(t, backupFile, "the .backup history file is stored too")
	left, err := os.ReadDir(r.walDir)
	require.NoError(t, err)
	assert.Empty(t, left, "everything left the guest")

	parent, err := session.Latest(ctx, r.store, "Daily DB Job", session.KindParent)
	require.NoError(t, err)
	assert.Equal(t, session.StateSuccess, parent.State)
	children := r.sessions(t, r.job.ChildName())
	require.Len(t, children, 2)
	assert.Equal(t, session.StateWarning, children[1].State, "child 1 had no restore point before it")
	if !assert.Equal(t, session.StateSuccess, children[0].State, "child 2 follows the restore point") {
		log, _ := r.store.Log(ctx, children[0].ID, 0, 100)
		t.Logf("child 2 log: %+v", log)
		refs, _ := repository.Bundles(ctx, r.repo, inst, 1)
		for _, ref := range refs {
			names, _ := bundleOpen(ctx, r.repo, ref)
			t.Logf("bundle %s: %v", ref.Object.Name[strings.LastIndex(ref.Object.Name, "/")+1:], names)
		}
	}
}
