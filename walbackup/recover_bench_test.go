package walbackup_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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

// BenchmarkRecover replays the same real pgbench WAL (the image's own
// segments and N more after it; N from $PGLOGSHIP_BENCH_RECOVER_SEGMENTS,
// 32 by default) on the same restored image three ways in each iteration,
// each to the end of the WAL, where the server promotes (hot_standby off):
//
//   - recover: the runtime's Recover through the local deployer, the WAL
//     fetched from a file-system repository (FetchWAL, checksums verified)
//     and fetched ahead;
//   - pgbackrest: PostgreSQL started by hand with restore_command =
//     pgBackRest's archive-get, asynchronous with two processes, from a
//     posix pgBackRest repository holding the same WAL (zst);
//   - cp: PostgreSQL started by hand with restore_command = cp from a
//     local folder that already holds the WAL, the floor.
//
// The order turns from one iteration to the next (the machine is noisy).
// Every run must end at the same replayed LSN, past the start of the last
// segment, so a recovery that stopped early fails the benchmark instead of
// being measured. It reports each one's seconds per run and MB/s of WAL
// (1 MB = 10^6 bytes, as in the peer notes), and recover/pgbackrest and
// recover/cp (below 1: Recover is faster).
func BenchmarkRecover(b *testing.B) {
	testenv.SkipIfShort(b)
	n := 32
	if v := os.Getenv(benchSegmentsEnv); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(b, err, benchSegmentsEnv)
	}
	src := newRecoverBench(b, n)
	variants := []struct {
		name string
		run  func(b *testing.B) (time.Duration, wal.LSN)
	}{
		{"recover", src.runRecover},
		{"cp", src.runCopy},
		{"pgbackrest", src.runPgBackRest},
	}
	if src.pgbr == nil {
		variants = variants[:2]
	}
	totals := make([]time.Duration, len(variants))
	var end wal.LSN // where every run must end
	rounds := 0
	for b.Loop() {
		b.StopTimer()
		for k := range variants {
			i := (rounds + k) % len(variants)
			took, lsn := variants[i].run(b)
			b.Logf("round %d: %s: %v, replayed to %s", rounds+1, variants[i].name, took.Round(time.Millisecond), lsn)
			if end == 0 {
				require.Greater(b, lsn, src.lastSegment, "replayed into the last segment of the WAL")
				end = lsn
			}
			require.Equal(b, end, lsn, "%s replayed to the same end as the first run", variants[i].name)
			totals[i] += took
		}
		rounds++
		b.StartTimer()
	}
	mb := float64(src.walBytes) / 1e6
	for i, v := range variants {
		b.ReportMetric(totals[i].Seconds()/float64(rounds), v.name+"-s/op")
		b.ReportMetric(mb*float64(rounds)/totals[i].Seconds(), v.name+"-MB/s")
	}
	b.ReportMetric(totals[0].Seconds()/totals[1].Seconds(), "recover/cp")
	if len(variants) > 2 {
		b.ReportMetric(totals[0].Seconds()/totals[2].Seconds(), "recover/pgbackrest")
	}

	// A row set for make bench's summary (PGLOGSHIP_BENCH_TABLE).
	var t strings.Builder
	fmt.Fprintf(&t, "\n### point-in-time restore: recovery to the end of %d segments of fresh pgbench WAL after an image, %d rounds, PostgreSQL %d\n\n",
		n, rounds, src.pg.Major(b))
	t.WriteString("| contender | s | MB/s of WAL replayed | pglogship / this |\n| --- | --- | --- | --- |\n")
	labels := []string{"pglogship Recover (restore service, prefetch 8)", "cp from a local folder (WAL already local)", "pgBackRest async archive-get"}
	for i := range variants {
		fmt.Fprintf(&t, "| %s | %.3f | %.0f | %.2f |\n", labels[i], totals[i].Seconds()/float64(rounds),
			mb*float64(rounds)/totals[i].Seconds(), totals[0].Seconds()/totals[i].Seconds())
	}
	if path := os.Getenv("PGLOGSHIP_BENCH_TABLE"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		require.NoError(b, err)
		_, err = f.WriteString(t.String())
		require.NoError(b, errors.Join(err, f.Close()))
	}
	b.Log(t.String())
}

// recoverSettings are the settings of every run of BenchmarkRecover, on
// top of the server's address.
var recoverSettings = map[string]string{"hot_standby": "off", "archive_mode": "off", "recovery_target_action": "promote"}

// runRecover recovers a fresh copy of the image through the runtime and
// returns how long Recover took and where replay ended.
func (rb *recoverBench) runRecover(b *testing.B) (time.Duration, wal.LSN) {
	ctx := context.Background()
	dir := rb.restore(b)
	defer os.RemoveAll(dir)
	pg := testenv.PostgresFor(b, dir, rb.pg)
	defer pg.Stop(b)
	all := map[string]string{"port": strconv.Itoa(pg.Port), "unix_socket_directories": pg.SocketDir, "listen_addresses": "127.0.0.1"}
	for k, v := range recoverSettings {
		all[k] = v
	}
	host0, children0 := cpuTime(syscall.RUSAGE_SELF), cpuTime(syscall.RUSAGE_CHILDREN)
	rt, err := rb.deploy.Deploy(ctx, guest.Target{Machine: "db1"})
	require.NoError(b, err)
	defer rt.Close(ctx)
	b.StartTimer()
	m := machineNow()
	start := time.Now()
	res, err := rt.(guest.Recoverer).Recover(ctx, guest.RecoveryConfig{DataDir: dir, BackupLabel: rb.label, Settings: all, OSUser: rb.pg.OSUser,
		BinDir: rb.pg.BinDir}, fetchFrom(rb.repo, rb.inst, nil))
	took := time.Since(start)
	busy := m.since()
	b.StopTimer()
	require.NoError(b, err, res.Log)
	require.True(b, res.Promoted)
	host := cpuTime(syscall.RUSAGE_SELF) - host0
	require.NoError(b, rt.Close(ctx)) // waits for the runtime, a child
	b.Logf("recover: %s; %s", redoDone(res.Log), busy)
	b.Logf("recover: %d requests, %d from the spool, %d waited (%d on a fetch ahead), %d fetched; CPU: host %v, runtime %v",
		res.Requests, res.FromSpool, res.Waited, res.InFlight, res.Fetched,
		host.Round(time.Millisecond), (cpuTime(syscall.RUSAGE_CHILDREN) - children0).Round(time.Millisecond))
	return took, res.LSN
}

// cpuTime is the user and system CPU time of this process or of its
// children that have been waited for (getrusage's who).
func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runPgBackRest recovers a fresh copy of the image with pgBackRest's
// asynchronous archive-get, its spool and lock folders new for the run.
func (rb *recoverBench) runPgBackRest(b *testing.B) (time.Duration, wal.LSN) {
	run := testenv.UserDir(b, rb.pg.OSUser)
	defer os.RemoveAll(run)
	spool, lock := filepath.Join(run, "spool"), filepath.Join(run, "lock")
	took, lsn := rb.runByHand(b, "pgbackrest", func(dir string) string {
		return rb.pgbr.RestoreCommand("--pg1-path="+dir, "--spool-path="+spool, "--lock-path="+lock)
	})
	// The asynchronous worker outlives recovery; its folders go once it has.
	b.Logf("pgbackrest: %d processes left running after the promotion", rb.pgbr.WaitExited(b, spool))
	return took, lsn
}

// runCopy recovers a fresh copy of the image with cp from the local folder.
func (rb *recoverBench) runCopy(b *testing.B) (time.Duration, wal.LSN) {
	return rb.runByHand(b, "cp", func(string) string { return "cp " + rb.archive + "/%f %p" })
}

// runByHand recovers a fresh copy of the image (for the variant name) with
// PostgreSQL started by hand with the restore_command made for its data
// directory, and returns the time from the start to the promotion and
// where replay ended.
func (rb *recoverBench) runByHand(b *testing.B, name string, restoreCommand func(dataDir string) string) (time.Duration, wal.LSN) {
	dir := rb.restore(b)
	defer os.RemoveAll(dir)
	require.NoError(b, os.WriteFile(filepath.Join(dir, "backup_label"), []byte(rb.label), 0o600))
	require.NoError(b, os.WriteFile(filepath.Join(dir, "recovery.signal"), nil, 0o600))
	settings := map[string]string{"restore_command": restoreCommand(dir)}
	for k, v := range recoverSettings {
		settings[k] = v
	}
	b.StartTimer()
	m := machineNow()
	start := time.Now()
	pg := testenv.StartPostgresOn(b, dir, rb.pg, testenv.PostgresConfig{Settings: settings}) // returns once recovery has ended
	took := time.Since(start)
	busy := m.since()
	b.StopTimer()
	defer pg.Stop(b)
	log, err := os.ReadFile(pg.LogFile)
	require.NoError(b, err)
	b.Logf("%s: %s; %s", name, redoDone(string(log)), busy)
	return took, replayedTo(b, pg)
}

// replayedTo asks a promoted server where its recovery's replay ended.
func replayedTo(b *testing.B, pg *testenv.Postgres) wal.LSN {
	b.Helper()
	at := pg.Psql(b, "postgres", "SELECT pg_last_wal_replay_lsn()")
	lsn, err := wal.ParseLSN(at)
	require.NoError(b, err, "pg_last_wal_replay_lsn() = %q", at)
	return lsn
}

// recoverBench is a source cluster with a physical image taken in backup
// mode, followed by n segments of pgbench WAL, shipped to a repository,
// copied to a local folder and pushed to a pgBackRest repository.
type recoverBench struct {
	pg          *testenv.Postgres
	phys        *physical.Hypervisor
	repo        *fs.Repo
	inst        repository.Instance
	img         hypervisor.Image
	label       string
	archive     string // the same WAL, uncompressed, for cp
	pgbr        *testenv.PgBackRest
	walBytes    int64   // the segments from the image's start to the end
	lastSegment wal.LSN // where the last of them starts
	deploy      *local.Deployer
}

func newRecoverBench(b *testing.B, n int) *recoverBench {
	b.Helper()
	ctx := context.Background()
	pg := testenv.StartPostgres(b, testenv.PostgresConfig{Major: testenv.CorpusMajor(b)})
	b.Logf("PostgreSQL %d: %s", pg.Major(b), pg.Psql(b, "postgres", "SELECT version()"))
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

	// The same files in a pgBackRest repository, pushed one at a time,
	// where pgBackRest supports the release.
	first := regexp.MustCompile(`START WAL LOCATION: .* \(file ([0-9A-F]{24})\)`).FindStringSubmatch(rb.label)
	require.NotNil(b, first, "the backup label names its first segment: %s", rb.label)
	sort.Strings(shipped.Names)
	for _, name := range shipped.Names {
		f, err := wal.ParseFileName(name)
		require.NoError(b, err)
		if f.Kind == wal.Segment && name >= first[1] {
			rb.walBytes += segmentSize
			rb.lastSegment = f.StartLSN(segmentSize)
		}
	}
	if ok, why := testenv.PgBackRestSupports(b, pg.Major(b)); !ok {
		b.Logf("%s: its rows are left out", why)
		return rb
	}
	rb.pgbr = testenv.NewPgBackRest(b, pg, testenv.PgBackRestConfig{Stanza: "bench", Settings: pgBackRestSettings})
	b.Logf("%s, in %s with %v", strings.TrimSpace(rb.pgbr.Run(b, "version")), rb.pgbr.Repo, pgBackRestSettings)
	for _, name := range shipped.Names {
		rb.pgbr.Run(b, "--no-archive-async", "archive-push", filepath.Join(rb.archive, name))
	}
	return rb
}

// pgBackRestSettings are the pgBackRest options of BenchmarkRecover:
// asynchronous archive-get with two processes (the default queue of
// 128 MiB), zst compression at pgBackRest's default level (3), as the
// repository's WAL is zstd too.
var pgBackRestSettings = map[string]string{"archive-async": "y", "process-max": "2", "compress-type": "zst"}

func (rb *recoverBench) restore(b *testing.B) string {
	b.Helper()
	dir := filepath.Join(testenv.UserDir(b, rb.pg.OSUser), "restored")
	require.NoError(b, rb.phys.Restore(context.Background(), []hypervisor.Image{rb.img}, rb.repo, dir, nil))
	return dir
}

// pgbench runs PostgreSQL's pgbench against pg over TCP.
func pgbench(b *testing.B, pg *testenv.Postgres, args ...string) {
	b.Helper()
	args = append([]string{"-h", pg.Host, "-p", strconv.Itoa(pg.Port), "-U", pg.User}, append(args, "postgres")...)
	cmd := exec.Command(testenv.ClientTool(b, pg.BinDir, "pgbench"), args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+pg.Password)
	out, err := cmd.CombinedOutput()
	require.NoError(b, err, "pgbench: %s", out)
}

// redoDone returns the server's "redo done" line from log, which tells how
// much CPU replay took itself, or "" if there is none.
func redoDone(log string) string {
	_, line, ok := strings.Cut(log, "redo done at ")
	if !ok {
		return ""
	}
	line, _, _ = strings.Cut(line, "\n")
	return "redo done at " + line
}

// machineCPU is the machine's CPU time from /proc/stat, in clock ticks:
// busy (user, nice, system, irq, softirq), idle (with iowait) and stolen.
// The machine is shared, so a run's busy time beyond its own shows how
// noisy its figure is.
type machineCPU struct{ busy, idle, steal int64 }

func machineNow() machineCPU {
	var m machineCPU
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return m
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	tick := func(i int) int64 {
		if i >= len(f) {
			return 0
		}
		v, _ := strconv.ParseInt(f[i], 10, 64)
		return v
	}
	m.busy = tick(1) + tick(2) + tick(3) + tick(6) + tick(7)
	m.idle = tick(4) + tick(5)
	m.steal = tick(8)
	return m
}

// since describes the machine's CPU time from m to now (USER_HZ is 100 on
// Linux).
func (m machineCPU) since() string {
	n := machineNow()
	return fmt.Sprintf("machine CPU meanwhile: %.1f s busy, %.1f s idle, %.1f s stolen",
		float64(n.busy-m.busy)/100, float64(n.idle-m.idle)/100, float64(n.steal-m.steal)/100)
}
