package walbackup_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/local"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/physical"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/wal"
	"github.com/pglogship/pglogship/walbackup"
)

// segmentSize is the test servers' WAL segment size, PostgreSQL's default.
const segmentSize = 16 << 20

// benchSegmentsEnv sets how many segments of WAL BenchmarkRecover replays.
const benchSegmentsEnv = "PGLOGSHIP_BENCH_RECOVER_SEGMENTS"

// BenchmarkRecover replays the same N real segments of pgbench WAL on the
// same restored image two ways in each iteration: through the runtime's
// Recover, the WAL fetched from a file-system repository (FetchWAL,
// checksums verified) and fetched ahead; and PostgreSQL started by hand
// with restore_command = cp from a local folder that already holds the
// WAL. Both run with hot_standby off and end when the server has promoted.
// It reports both times and recover/cp, their ratio (below 1: Recover is
// faster).
func BenchmarkRecover(b *testing.B) {
	testenv.SkipIfShort(b)
	n := 32
	if v := os.Getenv(benchSegmentsEnv); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(b, err, benchSegmentsEnv)
	}
	ctx := context.Background()
	src := newRecoverBench(b, n)
	settings := map[string]string{"hot_standby": "off", "archive_mode": "off", "recovery_target_action": "promote"}

	var recoverTotal, cpTotal time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := src.restore(b)
		pg := testenv.PostgresFor(b, dir, src.pg)
		all := map[string]string{"port": strconv.Itoa(pg.Port), "unix_socket_directories": pg.SocketDir, "listen_addresses": "127.0.0.1"}
		for k, v := range settings {
			all[k] = v
		}
		rt, err := src.deploy.Deploy(ctx, guest.Target{Machine: "db1"})
		require.NoError(b, err)
		b.StartTimer()
		start := time.Now()
		res, err := rt.(guest.Recoverer).Recover(ctx, guest.RecoveryConfig{DataDir: dir, BackupLabel: src.label, Settings: all, OSUser: src.pg.OSUser}, fetchFrom(src.repo, src.inst, nil))
		took := time.Since(start)
		b.StopTimer()
		require.NoError(b, err, res.Log)
		require.NoError(b, rt.Close(ctx))
		require.True(b, res.Promoted)
		pg.Stop(b)
		recoverTotal += took
		b.Logf("recover: %v, %d requests, %d from the spool, %d waited (%d on a fetch ahead), %d fetched",
			took.Round(time.Millisecond), res.Requests, res.FromSpool, res.Waited, res.InFlight, res.Fetched)

		dir = src.restore(b)
		require.NoError(b, os.WriteFile(filepath.Join(dir, "backup_label"), []byte(src.label), 0o600))
		require.NoError(b, os.WriteFile(filepath.Join(dir, "recovery.signal"), nil, 0o600))
		cp := map[string]string{"restore_command": "cp " + src.archive + "/%f %p"}
		for k, v := range settings {
			cp[k] = v
		}
		b.StartTimer()
		start = time.Now()
		byHand := testenv.StartPostgresOn(b, dir, src.pg, testenv.PostgresConfig{Settings: cp})
		waitPromoted(b, byHand) // pg_ctl -w returns once recovery has started
		took = time.Since(start)
		b.StopTimer()
		byHand.Stop(b)
		cpTotal += took
		b.Logf("cp: %v", took.Round(time.Millisecond))
		b.StartTimer()
	}
	b.StopTimer()
	mb := float64(n) * float64(segmentSize) / (1 << 20)
	b.ReportMetric(recoverTotal.Seconds()/float64(b.N), "recover-s/op")
	b.ReportMetric(cpTotal.Seconds()/float64(b.N), "cp-s/op")
	b.ReportMetric(mb*float64(b.N)/recoverTotal.Seconds(), "recover-MB/s")
	b.ReportMetric(mb*float64(b.N)/cpTotal.Seconds(), "cp-MB/s")
	b.ReportMetric(recoverTotal.Seconds()/cpTotal.Seconds(), "recover/cp")
}

// recoverBench is a source cluster with a physical image taken in backup
// mode, followed by n segments of pgbench WAL, shipped to a repository and
// also copied to a local folder.
type recoverBench struct {
	pg      *testenv.Postgres
	phys    *physical.Hypervisor
	repo    *fs.Repo
	inst    repository.Instance
	img     hypervisor.Image
	label   string
	archive string // the same WAL, uncompressed, for cp
	deploy  *local.Deployer
}

func newRecoverBench(b *testing.B, n int) *recoverBench {
	b.Helper()
	ctx := context.Background()
	pg := testenv.StartPostgres(b, testenv.PostgresConfig{})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := local.New(local.Config{
		Binary: testenv.BuildRuntime(b),
		Conn:   runtime.ConnConfig{Host: pg.Host, Port: pg.Port, User: pg.User, Password: pg.Password},
		Logger: logger,
	})
	require.NoError(b, err)
	repo, err := fs.New(fs.Config{Root: b.TempDir()})
	require.NoError(b, err)
	phys, err := physical.New(physical.Config{Machines: []physical.Machine{{ID: "db1"}}, Guests: d, Clock: clock.New(), Logger: logger})
	require.NoError(b, err)
	rb := &recoverBench{pg: pg, phys: phys, repo: repo, deploy: d, archive: filepath.Join(testenv.UserDir(b, pg.OSUser), "archive")}
	require.NoError(b, os.Mkdir(rb.archive, 0o755))

	rt, err := d.Deploy(ctx, guest.Target{Machine: "db1"})
	require.NoError(b, err)
	defer rt.Close(ctx)
	inst, err := rt.Scan(ctx)
	require.NoError(b, err)
	rb.inst = repository.Instance{Job: "bench", Machine: "db1", SystemID: inst.SystemID}
	require.NoError(b, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: filepath.Join(testenv.UserDir(b, pg.OSUser), "wal")}))
	pgbench(b, pg, "-i", "-s", "10", "-q")

	// The image, read live in backup mode.
	bm := rt.(guest.BackupMode)
	_, err = bm.StartBackup(ctx, "bench")
	require.NoError(b, err)
	snap, err := phys.Snapshot(ctx, "db1", hypervisor.SnapshotOptions{})
	require.NoError(b, err)
	rb.img, err = snap.Export(ctx, repo, "bench/image", nil)
	require.NoError(b, err)
	require.NoError(b, snap.Release(ctx))
	stop, err := bm.StopBackup(ctx)
	require.NoError(b, err)
	rb.label = stop.BackupLabel

	// n segments of WAL after it.
	conn := pg.Connect(b, "postgres")
	lsn := func() wal.LSN {
		var at string
		require.NoError(b, conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&at))
		l, err := wal.ParseLSN(at)
		require.NoError(b, err)
		return l
	}
	for start := lsn(); int64(lsn()-start) < int64(n)*segmentSize; {
		pgbench(b, pg, "-n", "-c", "4", "-j", "2", "-t", "2000")
	}
	pg.SwitchWAL(b, 1)

	// Shipped, then fetched back into the local folder: the same bytes.
	shipped, err := walbackup.ShipOnce(ctx, rt, repo, rb.inst, walbackup.ShipOptions{})
	require.NoError(b, err)
	for _, name := range shipped.Names {
		out, err := os.Create(filepath.Join(rb.archive, name))
		require.NoError(b, err)
		require.NoError(b, walbackup.FetchWAL(ctx, repo, rb.inst, name, nil, out))
		require.NoError(b, out.Close())
	}
	b.Logf("%d files of WAL after the image (%d bytes), in the repository and in %s", shipped.Files, shipped.RawBytes, rb.archive)
	return rb
}

func (rb *recoverBench) restore(b *testing.B) string {
	b.Helper()
	dir := filepath.Join(testenv.UserDir(b, rb.pg.OSUser), "restored")
	require.NoError(b, rb.phys.Restore(context.Background(), []hypervisor.Image{rb.img}, rb.repo, dir, nil))
	return dir
}

// waitPromoted polls pg every 200 ms, as the runtime does by default, until
// it takes connections (with hot_standby off: once recovery has ended) and
// is out of recovery.
func waitPromoted(b *testing.B, pg *testenv.Postgres) {
	b.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		conn, err := pgx.Connect(ctx, pg.ConnString("postgres"))
		if err == nil {
			var inRecovery bool
			err = conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery)
			conn.Close(ctx)
			if err == nil && !inRecovery {
				return
			}
		}
		require.True(b, time.Now().Before(deadline), "recovery by hand did not end: %v", err)
		time.Sleep(200 * time.Millisecond)
	}
}

// pgbench runs PostgreSQL's pgbench against pg over TCP.
func pgbench(b *testing.B, pg *testenv.Postgres, args ...string) {
	b.Helper()
	args = append([]string{"-h", pg.Host, "-p", strconv.Itoa(pg.Port), "-U", pg.User}, append(args, "postgres")...)
	cmd := exec.Command(filepath.Join(pg.BinDir, "pgbench"), args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+pg.Password)
	out, err := cmd.CombinedOutput()
	require.NoError(b, err, "pgbench: %s", out)
}
