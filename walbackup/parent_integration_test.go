package walbackup_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/local"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/hypervisor/physical"
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
	root   string // the repository's folder
	walDir string
	logs   *syncBuffer // everything the job, the deployer and the runtime logged
	// deployer is the local deployer the job was made with (a test may
	// wrap the job's own).
	deployer guest.Deployer
}

func newRealJob(t *testing.T, hv func(clk *clock.Mock, d guest.Deployer) hypervisor.Hypervisor, tweaks ...func(*walbackup.Config)) *realJob {
	t.Helper()
	return newRealJobOn(t, testenv.PostgresConfig{}, hv, tweaks...)
}

// newRealJobOn is newRealJob on a PostgreSQL with settings of the test's.
func newRealJobOn(t *testing.T, pgcfg testenv.PostgresConfig, hv func(clk *clock.Mock, d guest.Deployer) hypervisor.Hypervisor,
	tweaks ...func(*walbackup.Config)) *realJob {
	t.Helper()
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, pgcfg)
	logs := &syncBuffer{}
	d, err := local.New(local.Config{
		Binary: testenv.BuildRuntime(t),
		Conn:   runtime.ConnConfig{Host: pg.Host, Port: pg.Port, User: pg.User, Password: pg.Password},
		Logger: testenv.LoggerTo(t, logs),
	})
	require.NoError(t, err)
	root := filepath.Join(t.TempDir(), "repository") // made by the repository itself
	repo, err := fs.New(fs.Config{Root: root})
	require.NoError(t, err)
	r := &realJob{pg: pg, repo: repo, root: root, walDir: filepath.Join(testenv.UserDir(t, pg.OSUser), "wal"), logs: logs, deployer: d}
	r.harness = &harness{clk: clock.NewMock(), store: smem.New(), events: make(chan walbackup.Event, 1024)}
	r.list = r.store
	r.clk.Set(time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC))
	cfg := walbackup.Config{
		Name: "Daily DB Job", Machines: []walbackup.Machine{{ID: "db1"}}, LogBackupInterval: walbackup.DefaultLogBackupInterval,
		WALDir: r.walDir, Hypervisor: hv(r.clk, d), Guests: d, Repository: repo, Sessions: r.store, Clock: r.clk,
		Logger: testenv.LoggerTo(t, logs), Observer: func(e walbackup.Event) { r.events <- e },
	}
	for _, tweak := range tweaks {
		tweak(&cfg)
	}
	r.walDir = cfg.WALDir
	job, err := walbackup.NewJob(cfg)
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
	t.Parallel()
	ctx := context.Background()
	r := newRealJob(t, func(clk *clock.Mock, _ guest.Deployer) hypervisor.Hypervisor {
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
	rps, err := repository.RestorePoints(ctx, r.repo, inst, nil)
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
	assertShippedAll(t, r.walDir, "everything left the guest")

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

// The physical hypervisor through the job: a full and an incremental
// restore point of a real PostgreSQL, the incremental storing only the
// changed files, each manifest with PostgreSQL's backup_label. The newest
// restore point's files, copied into a new directory with its backup_label
// and the shipped WAL (through FetchWAL), start and reach consistency,
// holding exactly the rows committed before the restore point.
func TestPhysicalRestorePointsRecover(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var phys *physical.Hypervisor
	r := newRealJob(t, physicalImages(t, false, &phys))
	require.NoError(t, r.job.Enable(ctx))
	r.idle(t)
	r.pg.Exec(t, "postgres", "CREATE TABLE batches (batch int, n int)")
	insert := func(batch int) {
		r.pg.Exec(t, "postgres", fmt.Sprintf("INSERT INTO batches SELECT %d, generate_series(1, 1000)", batch))
	}
	parent := func() time.Duration {
		r.clk.Add(time.Minute)
		start := time.Now()
		require.NoError(t, r.job.StartParent(ctx))
		took := time.Since(start)
		r.idle(t)
		return took
	}
	insert(1)
	r.pg.SwitchWAL(t, 1)
	r.step(t, walbackup.DefaultLogBackupInterval)
	fullTook := parent()
	insert(2)
	r.pg.Exec(t, "postgres", "CHECKPOINT")
	r.pg.SwitchWAL(t, 1)
	r.step(t, walbackup.DefaultLogBackupInterval)
	incTook := parent()
	insert(3) // after the second restore point: not in a restore to it
	r.pg.SwitchWAL(t, 1)
	r.step(t, walbackup.DefaultLogBackupInterval)
	require.NoError(t, r.job.Disable(ctx))

	inst := r.instance(t)
	rps, err := repository.RestorePoints(ctx, r.repo, inst, nil)
	require.NoError(t, err)
	require.Len(t, rps, 2)
	full, inc := rps[0], rps[1]
	assert.True(t, full.Full)
	assert.False(t, inc.Full)
	assert.Equal(t, full.ID, inc.Base)
	size := func(m *repository.Manifest) (n int64) {
		for _, o := range m.Objects {
			n += o.Size
		}
		return n
	}
	for _, m := range rps {
		assert.Contains(t, m.BackupLabel, "START WAL LOCATION: "+m.StartLSN.String())
	}
	t.Logf("full restore point: %s files, %s stored, %d bytes in %v", full.Meta["files"], full.Meta["stored"], size(full), fullTook.Round(time.Millisecond))
	t.Logf("incremental restore point: %s files, %s stored, %d bytes in %v", inc.Meta["files"], inc.Meta["stored"], size(inc), incTook.Round(time.Millisecond))
	assert.Less(t, size(inc)*4, size(full), "the incremental stores only what changed")
	incStored, _ := strconv.Atoi(inc.Meta["stored"])
	fullStored, _ := strconv.Atoi(full.Meta["stored"])
	assert.Less(t, incStored*4, fullStored)

	// Restore the incremental restore point's image chain into a new directory.
	ms, chain, err := walbackup.ImageChain(ctx, r.repo, inst, inc.ID, nil)
	require.NoError(t, err)
	require.Len(t, chain, 2)
	assert.Equal(t, full.ID, ms[0].ID)
	target := filepath.Join(testenv.UserDir(t, r.pg.OSUser), "restored") // the server user must reach it
	start := time.Now()
	require.NoError(t, phys.Restore(ctx, chain, r.repo, target, nil))
	t.Logf("restore of the two-image chain took %v", time.Since(start).Round(time.Millisecond))
	require.NoError(t, os.WriteFile(filepath.Join(target, "backup_label"), []byte(inc.BackupLabel), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(target, "recovery.signal"), nil, 0o600))

	// The shipped WAL, fetched as a restore_command would.
	archive := filepath.Join(testenv.UserDir(t, r.pg.OSUser), "archive")
	require.NoError(t, os.Mkdir(archive, 0o755))
	refs, err := repository.Bundles(ctx, r.repo, inst, 1)
	require.NoError(t, err)
	for _, ref := range refs {
		names, err := bundleOpen(ctx, r.repo, ref)
		require.NoError(t, err)
		for _, n := range names {
			f, err := os.Create(filepath.Join(archive, n))
			require.NoError(t, err)
			require.NoError(t, walbackup.FetchWAL(ctx, r.repo, inst, n, nil, f))
			require.NoError(t, f.Close())
		}
	}
	restored := testenv.StartPostgresOn(t, target, r.pg, testenv.PostgresConfig{Settings: map[string]string{
		"restore_command":        "cp " + archive + "/%f %p",
		"recovery_target":        "immediate",
		"recovery_target_action": "promote",
		"archive_mode":           "off", // never archive into the source's folder
		"hot_standby":            "off", // no connections before the end of recovery: StartPostgresOn waits for it
	}})
	logText, err := os.ReadFile(restored.LogFile)
	require.NoError(t, err)
	assert.Contains(t, string(logText), "starting backup recovery", "recovery starts from the backup_label")
	assert.Contains(t, string(logText), "consistent recovery state reached")
	assert.Equal(t, "f", restored.Psql(t, "postgres", "SELECT pg_is_in_recovery()"))
	assert.Equal(t, "1|1000\n2|1000", restored.Psql(t, "postgres", "SELECT batch, count(*) FROM batches GROUP BY batch ORDER BY batch"),
		"exactly the rows committed before the restore point")
}
