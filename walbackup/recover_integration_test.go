package walbackup_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/local"
	"github.com/pglogship/pglogship/guest/runtime"
	gssh "github.com/pglogship/pglogship/guest/ssh"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/physical"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/walbackup"
)

// recoverFixture is a real PostgreSQL with one physical restore point taken
// through the job, and the WAL of three batches of rows shipped after it,
// plus a deployer whose runtimes run Recover.
type recoverFixture struct {
	*realJob
	phys    *physical.Hypervisor
	inst    repository.Instance
	rp      *repository.Manifest
	chain   []hypervisor.Image
	between string          // a time after batch 2's commit and before batch 3's
	later   string          // a time after everything in the archive
	deploy  *local.Deployer // runtimes as root, like the test
	bin     string
	logger  *slog.Logger
	logs    *syncBuffer // the recovery runtimes' logs
	fetches atomic.Int64
	sshAddr string
}

func newRecoverFixture(t *testing.T) *recoverFixture {
	ctx := context.Background()
	f := &recoverFixture{logs: &syncBuffer{}}
	f.realJob = newRealJob(t, physicalImages(t, false, &f.phys))
	pg := f.pg
	require.NoError(t, f.job.Enable(ctx))
	f.idle(t)
	pg.Exec(t, "postgres", "CREATE TABLE batches (batch int, n int)")
	insert := func(batch int) {
		pg.Exec(t, "postgres", fmt.Sprintf("INSERT INTO batches SELECT %d, generate_series(1, 1000)", batch))
	}
	insert(1)
	pg.SwitchWAL(t, 1)
	f.step(t, walbackup.DefaultLogBackupInterval)
	f.clk.Add(time.Minute)
	require.NoError(t, f.job.StartParent(ctx))
	f.idle(t)
	insert(2)
	f.between = pg.Psql(t, "postgres", "SELECT clock_timestamp()")
	insert(3)
	pg.SwitchWAL(t, 12) // segments enough for recovery to fetch ahead
	f.later = pg.Psql(t, "postgres", "SELECT clock_timestamp() + interval '1 day'")
	f.step(t, walbackup.DefaultLogBackupInterval)
	require.NoError(t, f.job.Disable(ctx))

	f.inst = f.instance(t)
	rps, err := repository.RestorePoints(ctx, f.repo, f.inst, nil)
	require.NoError(t, err)
	require.Len(t, rps, 1)
	f.rp = rps[0]
	_, f.chain, err = walbackup.ImageChain(ctx, f.repo, f.inst, f.rp.ID, nil)
	require.NoError(t, err)

	f.logger = testenv.LoggerTo(t, f.logs)
	f.bin = testenv.BuildRuntime(t)
	f.deploy, err = local.New(local.Config{
		Binary: f.bin,
		Conn:   runtime.ConnConfig{Host: pg.Host, Port: pg.Port, User: pg.User, Password: pg.Password},
		Logger: f.logger,
	})
	require.NoError(t, err)
	return f
}

// fetchFrom is a restore_command's source: the repository, through
// FetchWAL, its not-found as guest.ErrNoSuchWAL. It counts its calls in
// count, if set.
func fetchFrom(repo repository.Repository, inst repository.Instance, count *atomic.Int64) guest.FetchFunc {
	return func(ctx context.Context, name string, w io.Writer) error {
		if count != nil {
			count.Add(1)
		}
		err := walbackup.FetchWAL(ctx, repo, inst, name, nil, w)
		if errors.Is(err, repository.ErrNotFound) {
			return fmt.Errorf("%w: %w", guest.ErrNoSuchWAL, err)
		}
		return err
	}
}

// restore writes the restore point's image into a new directory the server
// user can reach.
func (f *recoverFixture) restore(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(testenv.UserDir(t, f.pg.OSUser), "restored")
	require.NoError(t, f.phys.Restore(context.Background(), f.chain, f.repo, dir, nil))
	return dir
}

// recover restores the image and recovers it through a fresh runtime of
// the local deployer (as root, starting PostgreSQL as the server user) with
// the given recovery settings, on a port and socket of its own.
func (f *recoverFixture) recover(t *testing.T, settings map[string]string) (*testenv.Postgres, guest.RecoveryResult, error) {
	t.Helper()
	return f.recoverWith(t, f.deploy, f.pg.OSUser, f.restore(t), settings)
}

func (f *recoverFixture) recoverWith(t *testing.T, d guest.Deployer, osUser, dir string, settings map[string]string) (*testenv.Postgres, guest.RecoveryResult, error) {
	t.Helper()
	ctx := context.Background()
	pg := testenv.PostgresFor(t, dir, f.pg)
	all := map[string]string{
		"port": strconv.Itoa(pg.Port), "unix_socket_directories": pg.SocketDir, "listen_addresses": "127.0.0.1",
		"archive_mode": "off", // never archive into the source's folder
	}
	for k, v := range settings {
		all[k] = v
	}
	rt, err := d.Deploy(ctx, guest.Target{Machine: "db1", Address: f.sshAddr})
	require.NoError(t, err)
	defer func() { require.NoError(t, rt.Close(ctx)) }()
	rec, ok := rt.(guest.Recoverer)
	require.True(t, ok, "the runtime recovers")
	start := time.Now()
	res, err := rec.Recover(ctx, guest.RecoveryConfig{DataDir: dir, BackupLabel: f.rp.BackupLabel, Settings: all, OSUser: osUser}, fetchFrom(f.repo, f.inst, &f.fetches))
	t.Logf("recover took %v: promoted %v paused %v, timeline %d, lsn %s, last replayed %v; %d requests, %d from the spool, %d waited on the host (%d of them on a fetch ahead), %d fetched",
		time.Since(start).Round(time.Millisecond), res.Promoted, res.Paused, res.Timeline, res.LSN, res.LastReplayTime,
		res.Requests, res.FromSpool, res.Waited, res.InFlight, res.Fetched)
	return pg, res, err
}

func batches(t *testing.T, pg *testenv.Postgres) string {
	t.Helper()
	return pg.Psql(t, "postgres", "SELECT batch, count(*) FROM batches GROUP BY batch ORDER BY batch")
}

// requireNoRestoreCommand: the recovered instance does not call the runtime
// any more, in its file or in the running server.
func requireNoRestoreCommand(t *testing.T, pg *testenv.Postgres, running bool) {
	t.Helper()
	conf, err := os.ReadFile(filepath.Join(pg.DataDir, "postgresql.auto.conf"))
	require.NoError(t, err)
	assert.NotContains(t, string(conf), "restore_command")
	assert.NotContains(t, string(conf), "recovery_target", "a later image must not carry this recovery's target")
	assert.Contains(t, string(conf), "port = '"+strconv.Itoa(pg.Port)+"'", "the host's settings stay")
	if running {
		require.Eventually(t, func() bool { return pg.Psql(t, "postgres", "SHOW restore_command") == "" },
			10*time.Second, 50*time.Millisecond, "the server reloaded without restore_command")
	}
}

// The runtime's Recover on a restored physical restore point, its WAL
// fetched from the repository by the host as PostgreSQL asks for it: to
// consistency, to the end of the archive, to a time between two batches of
// rows, pausing there, and to a time the archive does not reach; a running
// data directory is refused.
func TestRecoverThroughTheRuntime(t *testing.T) {
	t.Parallel()
	f := newRecoverFixture(t)
	ctx := context.Background()
	var immediate guest.RecoveryResult

	t.Run("immediate", func(t *testing.T) {
		pg, res, err := f.recover(t, map[string]string{"recovery_target": "immediate", "recovery_target_action": "promote"})
		require.NoError(t, err, res.Log)
		immediate = res
		assert.True(t, res.Promoted)
		assert.Equal(t, uint32(2), res.Timeline, "a promotion starts a new timeline")
		assert.GreaterOrEqual(t, res.LSN, f.rp.StopLSN, "replayed up to the end of the backup")
		assert.Contains(t, res.Log, "consistent recovery state reached")
		assert.Equal(t, "f", pg.Psql(t, "postgres", "SELECT pg_is_in_recovery()"))
		assert.Equal(t, "1|1000", batches(t, pg), "exactly the rows committed before the restore point")
		requireNoRestoreCommand(t, pg, true)
		pg.Exec(t, "postgres", "INSERT INTO batches VALUES (9, 9)") // it takes writes
	})

	t.Run("end of the archive", func(t *testing.T) {
		pg, res, err := f.recover(t, nil)
		require.NoError(t, err, res.Log)
		assert.True(t, res.Promoted)
		assert.Equal(t, uint32(2), res.Timeline)
		assert.Greater(t, res.LSN, immediate.LSN)
		between, err := time.Parse("2006-01-02 15:04:05.999999-07", f.between)
		require.NoError(t, err)
		assert.True(t, res.LastReplayTime.After(between), "batch 3's commit was replayed: %v", res.LastReplayTime)
		assert.Equal(t, "1|1000\n2|1000\n3|1000", batches(t, pg))
		requireNoRestoreCommand(t, pg, true)

		// Prefetch: after the first segment (which tells the segment size),
		// every segment recovery asked for had been fetched ahead, most of
		// them already there; history files and the end of the archive
		// are asked for when they are needed.
		assert.GreaterOrEqual(t, res.Fetched, 12, "the switched segments came from the host")
		assert.Equal(t, res.Requests, res.FromSpool+res.Waited)
		assert.Greater(t, res.FromSpool, 0)
		assert.GreaterOrEqual(t, res.FromSpool+res.InFlight, 11, "segments fetched ahead")
	})

	t.Run("time between batches", func(t *testing.T) {
		pg, res, err := f.recover(t, map[string]string{"recovery_target_time": f.between, "recovery_target_action": "promote"})
		require.NoError(t, err, res.Log)
		assert.True(t, res.Promoted)
		assert.Equal(t, "1|1000\n2|1000", batches(t, pg), "batch 2, committed before the target, and not batch 3")
		assert.Contains(t, res.Log, "recovery stopping before commit of transaction")
		requireNoRestoreCommand(t, pg, true)
	})

	t.Run("pause at the target", func(t *testing.T) {
		pg, res, err := f.recover(t, map[string]string{"recovery_target_time": f.between, "recovery_target_action": "pause"})
		require.NoError(t, err, res.Log)
		assert.True(t, res.Paused)
		assert.False(t, res.Promoted)
		assert.Equal(t, "t", pg.Psql(t, "postgres", "SELECT pg_is_in_recovery()"), "read-only, holding at the target")
		assert.Equal(t, "1|1000\n2|1000", batches(t, pg))
		requireNoRestoreCommand(t, pg, true)
	})

	t.Run("target beyond the archive", func(t *testing.T) {
		pg, res, err := f.recover(t, map[string]string{"recovery_target_time": f.later})
		require.ErrorIs(t, err, guest.ErrTargetNotReached)
		assert.Contains(t, res.Log, "redo done at", "the failed recovery still reports the server's log")
		assert.Positive(t, res.Requests)
		assert.ErrorContains(t, err, "FATAL:  recovery ended before configured recovery target was reached",
			"the server's own message")
		assert.NoFileExists(t, filepath.Join(pg.DataDir, "postmaster.pid"), "the server stopped")
		requireNoRestoreCommand(t, pg, false)
	})

	t.Run("refused by PostgreSQL", func(t *testing.T) {
		// A plain directory in pg_tblspc: PostgreSQL 15 and later PANIC
		// once consistent, with a DETAIL and a HINT, which the error
		// carries across the link.
		dir := f.restore(t)
		require.NoError(t, os.Mkdir(filepath.Join(dir, "pg_tblspc", "99999"), 0o700))
		pg, _, err := f.recoverWith(t, f.deploy, f.pg.OSUser, dir, nil)
		require.ErrorIs(t, err, guest.ErrRecoveryFailed)
		t.Logf("the error: %v", err)
		assert.ErrorContains(t, err, `PANIC:  unexpected directory entry "99999" found in pg_tblspc/`)
		assert.ErrorContains(t, err, "\nDETAIL:  All directory entries in pg_tblspc/ should be symbolic links.")
		assert.ErrorContains(t, err, "\nHINT:  Remove those directories, or set allow_in_place_tablespaces to ON transiently to let recovery complete.")
		assert.NotContains(t, err.Error(), "terminated by signal", "the postmaster's lines after it are not the report")
		assert.NoFileExists(t, filepath.Join(pg.DataDir, "postmaster.pid"), "the server stopped")
	})

	t.Run("planted links", func(t *testing.T) {
		// The runtime runs as root on a restored data directory the server
		// user may have planted links in: a tablespace link the restore
		// did not place is refused before anything changes, and a link at
		// the recovery log's folder hands nothing outside over.
		outside := t.TempDir()
		secret := filepath.Join(outside, "secret")
		require.NoError(t, os.WriteFile(secret, []byte("root's"), 0o600))
		untouched := func(t *testing.T) {
			t.Helper()
			for _, p := range []string{outside, secret} {
				st, err := os.Lstat(p)
				require.NoError(t, err)
				assert.Equal(t, uint32(0), st.Sys().(*syscall.Stat_t).Uid, "%s is still root's", p)
			}
			entries, err := os.ReadDir(outside)
			require.NoError(t, err)
			assert.Len(t, entries, 1, "nothing was written beside the secret")
		}

		dir := f.restore(t)
		require.NoError(t, os.Symlink(outside, filepath.Join(dir, "pg_tblspc", "99")))
		_, _, err := f.recoverWith(t, f.deploy, f.pg.OSUser, dir, nil)
		require.ErrorContains(t, err, "tablespace link pg_tblspc/99")
		untouched(t)
		assert.NoFileExists(t, filepath.Join(dir, "recovery.signal"), "nothing was changed")

		dir = f.restore(t)
		require.NoError(t, os.RemoveAll(filepath.Join(dir, "log")))
		require.NoError(t, os.Symlink(outside, filepath.Join(dir, "log")))
		_, _, err = f.recoverWith(t, f.deploy, f.pg.OSUser, dir, nil)
		require.ErrorContains(t, err, "recovery log")
		untouched(t)
	})

	t.Run("over ssh as the server user", func(t *testing.T) {
		// The SSH runtime logs in as the server's OS user: it starts
		// PostgreSQL as itself, on a directory that is already its own.
		sshd := testenv.StartSSHD(t, testenv.SSHDConfig{User: f.pg.OSUser})
		f.sshAddr = sshd.Addr
		defer func() { f.sshAddr = "" }()
		hostKeys, err := knownhosts.New(sshd.KnownHostsFile)
		require.NoError(t, err)
		d, err := gssh.New(gssh.Config{
			User: sshd.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(sshd.ClientSigner)}, HostKeyCallback: hostKeys,
			Binaries: map[string]string{goruntime.GOARCH: f.bin}, BaseDir: filepath.Join(testenv.UserDir(t, sshd.User), "runtimes"),
			Conn:   runtime.ConnConfig{Host: f.pg.SocketDir, Port: f.pg.Port, User: f.pg.User}, // peer, as the login user
			Logger: f.logger,
		})
		require.NoError(t, err)
		dir := f.restore(t)
		giveTo(t, dir, f.pg.OSUser)
		pg, res, err := f.recoverWith(t, d, "", dir, nil)
		require.NoError(t, err, res.Log)
		assert.True(t, res.Promoted)
		assert.Equal(t, "1|1000\n2|1000\n3|1000", batches(t, pg))
		assert.Greater(t, res.FromSpool, 0)
		requireNoRestoreCommand(t, pg, true)
	})

	t.Run("running data directory", func(t *testing.T) {
		rt, err := f.deploy.Deploy(ctx, guest.Target{Machine: "db1"})
		require.NoError(t, err)
		defer rt.Close(ctx)
		_, err = rt.(guest.Recoverer).Recover(ctx, guest.RecoveryConfig{DataDir: f.pg.DataDir, BackupLabel: f.rp.BackupLabel}, fetchFrom(f.repo, f.inst, &f.fetches))
		require.ErrorIs(t, err, guest.ErrServerRunning)
		assert.NoFileExists(t, filepath.Join(f.pg.DataDir, "recovery.signal"), "nothing was changed")
		assert.NoFileExists(t, filepath.Join(f.pg.DataDir, "backup_label"))
	})

	t.Run("no password in logs", func(t *testing.T) {
		require.NotEmpty(t, f.logs.String())
		assert.NotContains(t, f.logs.String(), f.pg.Password)
	})
	t.Logf("the host fetched %d files in all", f.fetches.Load())
}

// giveTo hands dir and everything in it to the OS user name, as whoever
// restored it for that user would.
func giveTo(t *testing.T, dir, name string) {
	t.Helper()
	u, err := user.Lookup(name)
	require.NoError(t, err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	require.NoError(t, filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	}))
}
