package local_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/local"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/wal"
)

// deploy starts the runtime next to pg with the local deployer; it is
// closed in t.Cleanup (closing twice is fine).
func deploy(t *testing.T, pg *testenv.Postgres, password string, logger *slog.Logger) guest.Runtime {
	t.Helper()
	d, err := local.New(local.Config{
		Binary: testenv.BuildRuntime(t),
		Conn:   runtime.ConnConfig{Host: pg.Host, Port: pg.Port, User: pg.User, Password: password},
		Logger: logger,
	})
	require.NoError(t, err)
	rt, err := d.Deploy(context.Background(), guest.Target{Machine: "localhost"})
	require.NoError(t, err)
	t.Cleanup(func() { rt.Close(context.Background()) })
	return rt
}

func TestDeployShipRemoveClose(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	rt := deploy(t, pg, pg.Password, testenv.Logger(t))

	inst, err := rt.Scan(ctx)
	require.NoError(t, err)
	assert.Equal(t, pg.DataDir, inst.DataDir)
	clusters, err := rt.(guest.ClusterLister).Clusters(ctx)
	require.NoError(t, err)
	assert.True(t, slices.ContainsFunc(clusters, func(c guest.Cluster) bool {
		return c.DataDir == inst.DataDir && c.Running && c.Port == pg.Port && c.Major == inst.Version/10000
	}), "the runtime finds its cluster among %+v", clusters)
	dir := filepath.Join(testenv.UserDir(t, pg.OSUser), "wal")
	require.NoError(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: dir}))

	pg.SwitchWAL(t, 20)
	files, err := rt.Ready(ctx)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 21, "20 switches plus the verification one")

	names := make([]string, len(files))
	var waiting int64
	for i, f := range files {
		names[i] = f.Name
		waiting += f.Size
	}
	sp, err := rt.(guest.SpaceReporter).FolderSpace(ctx)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, sp.Waiting, waiting, "the folder's waiting bytes")
	assert.Positive(t, sp.Free)
	dec, err := zstd.NewReader(nil)
	require.NoError(t, err)
	got := 0
	err = rt.Read(ctx, names, func(f guest.Frame) error {
		assert.Equal(t, guest.CodecZstd, f.Codec)
		require.NoError(t, dec.Reset(f.Data))
		var raw bytes.Buffer
		_, err := io.Copy(&raw, dec)
		require.NoError(t, err)
		size, sum := f.Checksum()
		want, err := os.ReadFile(filepath.Join(dir, f.Name))
		require.NoError(t, err)
		assert.True(t, bytes.Equal(want, raw.Bytes()), "%s byte-identical to the archived file", f.Name)
		assert.Equal(t, int64(len(want)), size)
		assert.Equal(t, checksum.Of(checksum.XXH3, want), sum, "WAL sums with XXH3")
		got++
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, len(names), got)

	require.NoError(t, rt.Remove(ctx, names))
	require.NoError(t, rt.Remove(ctx, names), "removing again is fine")
	left, err := rt.Ready(ctx)
	require.NoError(t, err)
	for _, f := range left {
		assert.NotContains(t, names, f.Name)
	}

	require.NoError(t, rt.Close(ctx))
	_, err = os.Stat(filepath.Join(dir, ".removed"))
	assert.ErrorIs(t, err, os.ErrNotExist, "removed files are unlinked, and their folder, before the runtime ends")
	require.NoError(t, rt.Close(ctx), "close is idempotent")
	_, err = rt.Scan(ctx)
	require.ErrorIs(t, err, guest.ErrClosed)
	assert.Equal(t, "0", pg.Psql(t, "postgres", "SELECT failed_count FROM pg_stat_archiver"))
}

func TestRequirementErrorsCrossTheWire(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{Settings: map[string]string{"archive_mode": "off"}})
	rt := deploy(t, pg, pg.Password, testenv.Logger(t))
	err := rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: filepath.Join(testenv.UserDir(t, pg.OSUser), "wal")})
	require.ErrorIs(t, err, guest.ErrArchiveModeOff)
	assert.Contains(t, err.Error(), "restart")
}

// A real PostgreSQL 12 is refused with its named error through the
// runtime, before anything in the guest changes: archive_command stays
// as it was, nothing is written to postgresql.auto.conf, no folder made.
func TestPostgres12Refused(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{Major: 12})
	require.Equal(t, 12, pg.Major(t))
	before := pg.Psql(t, "postgres", "SHOW archive_command")
	rt := deploy(t, pg, pg.Password, testenv.Logger(t))
	defer rt.Close(ctx)
	dir := filepath.Join(testenv.UserDir(t, pg.OSUser), "wal")
	err := rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: dir})
	require.ErrorIs(t, err, guest.ErrPostgresTooOld)
	assert.Contains(t, err.Error(), "13 to 18")
	assert.Contains(t, err.Error(), "120022")
	assert.Equal(t, before, pg.Psql(t, "postgres", "SHOW archive_command"), "archive_command untouched")
	auto, err := os.ReadFile(filepath.Join(pg.DataDir, "postgresql.auto.conf"))
	require.NoError(t, err)
	assert.NotContains(t, string(auto), "archive_command")
	assert.NoDirExists(t, dir)
}

func TestNewRefusesMissingBinary(t *testing.T) {
	_, err := local.New(local.Config{})
	require.ErrorContains(t, err, "binary is required")
	_, err = local.New(local.Config{Binary: "/nonexistent/pglogship-runtime"})
	require.ErrorContains(t, err, "not an executable")
}

func TestBackupMode(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	rt := deploy(t, pg, pg.Password, testenv.Logger(t))
	defer rt.Close(ctx)
	require.NoError(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: filepath.Join(testenv.UserDir(t, pg.OSUser), "wal")}))

	bm, ok := rt.(guest.BackupMode)
	require.True(t, ok, "the runtime offers backup mode")
	start, err := bm.StartBackup(ctx, "pglogship test")
	require.NoError(t, err)
	assert.NotZero(t, start.LSN)
	assert.Equal(t, uint32(1), start.Timeline)
	_, err = bm.StartBackup(ctx, "again")
	require.Error(t, err, "one backup at a time")
	assert.Equal(t, "1", pg.Psql(t, "postgres", "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name = 'pglogship-runtime'"),
		"backup mode is held on one open connection")

	pg.Exec(t, "postgres", "CREATE TABLE during_backup AS SELECT generate_series(1, 10000) x")
	stop, err := bm.StopBackup(ctx)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, stop.LSN, start.LSN)
	assert.Contains(t, stop.BackupLabel, "START WAL LOCATION: "+start.LSN.String())
	assert.Contains(t, stop.BackupLabel, "LABEL: pglogship test")
	_, err = bm.StopBackup(ctx)
	require.Error(t, err, "no backup running any more")
}

// A corrupted segment in the folder is refused over the wire with the named
// error and stays where it is; the runtime's logs never hold the password.
func TestCorruptSegmentAndLogHygiene(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rt := deploy(t, pg, pg.Password, logger)
	dir := filepath.Join(testenv.UserDir(t, pg.OSUser), "wal")
	require.NoError(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: dir}))
	files, err := rt.Ready(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, files)
	victim := filepath.Join(dir, files[0].Name)
	b, err := os.ReadFile(victim)
	require.NoError(t, err)
	b[8] ^= 0x10 // the page address no longer matches the name
	require.NoError(t, os.WriteFile(victim, b, 0o600))

	err = rt.Read(ctx, []string{files[0].Name}, func(guest.Frame) error { return nil })
	require.ErrorIs(t, err, wal.ErrBadSegment)
	assert.Contains(t, err.Error(), files[0].Name)
	_, err = os.Stat(victim)
	require.NoError(t, err, "not deleted")
	_, err = rt.Scan(ctx)
	require.NoError(t, err, "a refused file does not break the session")

	// A wrong password fails, and neither the error nor any log shows it.
	rt2 := deploy(t, pg, "not-"+pg.Password, logger)
	_, err = rt2.Scan(ctx)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), pg.Password)
	require.NoError(t, rt2.Close(ctx))
	require.NoError(t, rt.Close(ctx))
	assert.NotContains(t, logs.String(), pg.Password, "no password in the logs")
}

// The cluster's files over the wire: a listing with checksums, files
// streamed byte-identical, a vanished file reported, and unsafe paths
// refused by the runtime itself, which stays usable.
func TestDataFilesOverTheWire(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	rt := deploy(t, pg, pg.Password, testenv.Logger(t))
	df, ok := rt.(guest.DataFiles)
	require.True(t, ok, "the runtime streams data files")
	require.NoError(t, os.Symlink("/etc", filepath.Join(pg.DataDir, "evil")))

	files, err := df.ListDataFiles(ctx, guest.DataListOptions{Checksums: true})
	require.NoError(t, err)
	require.Greater(t, len(files), 500, "a fresh cluster has hundreds of files: the listing comes in parts")
	byPath := map[string]guest.DataFile{}
	for _, f := range files {
		byPath[f.Path] = f
	}
	assert.Contains(t, byPath, "global/pg_control")
	assert.NotContains(t, byPath, "postmaster.pid")
	assert.NotContains(t, byPath, "evil")
	version, err := os.ReadFile(filepath.Join(pg.DataDir, "PG_VERSION"))
	require.NoError(t, err)
	sum := sha256.Sum256(version)
	assert.Equal(t, hex.EncodeToString(sum[:]), byPath["PG_VERSION"].SHA256)

	dec, err := zstd.NewReader(nil)
	require.NoError(t, err)
	var got []string
	vanished, err := df.ReadDataFiles(ctx, []string{"PG_VERSION", "base/4242/1", "postgresql.conf"}, func(f guest.Frame) error {
		require.NoError(t, dec.Reset(f.Data))
		raw, err := io.ReadAll(dec)
		require.NoError(t, err)
		want, err := os.ReadFile(filepath.Join(pg.DataDir, f.Name))
		require.NoError(t, err)
		assert.Equal(t, want, raw, f.Name)
		size, sum := f.Checksum()
		assert.Equal(t, int64(len(want)), size)
		assert.Equal(t, checksum.Of(checksum.SHA256, want), sum, "data files sum with SHA-256")
		got = append(got, f.Name)
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"PG_VERSION", "postgresql.conf"}, got)
	assert.Equal(t, []string{"base/4242/1"}, vanished)

	for _, p := range []string{"evil/passwd", "../../../etc/passwd", "/etc/passwd", "base/../../x", "pg_tblspc/1/../../x"} {
		called := false
		_, err := df.ReadDataFiles(ctx, []string{"PG_VERSION", p}, func(guest.Frame) error { called = true; return nil })
		require.ErrorIs(t, err, guest.ErrUnsafePath, p)
		assert.False(t, called, "%s: nothing is sent", p)
	}
	_, err = df.ListDataFiles(ctx, guest.DataListOptions{})
	require.NoError(t, err, "a refused path does not break the session")
}

// A Target's DataDir picks one of several instances of the guest, of
// different releases: the runtime reaches each at the port of its
// postmaster.pid with the deployer's credentials and serves that one. A
// directory no server runs on, a stale pid file naming another server's
// port, and a relative path are refused with guest.ErrNoInstance or a
// clear error, before anything is changed.
func TestDeployPicksTheInstanceByDataDirectory(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	a := testenv.StartPostgres(t, testenv.PostgresConfig{})
	b := testenv.StartPostgres(t, testenv.PostgresConfig{Major: 17})
	require.Equal(t, a.User, b.User)
	b.Exec(t, "postgres", fmt.Sprintf("ALTER ROLE %q PASSWORD '%s'", b.User, a.Password)) // one account for both, as a deployer has
	d, err := local.New(local.Config{
		Binary: testenv.BuildRuntime(t),
		Conn:   runtime.ConnConfig{Host: a.Host, Port: a.Port, User: a.User, Password: a.Password},
		Logger: testenv.Logger(t),
	})
	require.NoError(t, err)
	deploy := func(dataDir string) (guest.Runtime, error) {
		rt, err := d.Deploy(ctx, guest.Target{Machine: "localhost", DataDir: dataDir})
		if err == nil {
			t.Cleanup(func() { rt.Close(context.Background()) })
		}
		return rt, err
	}
	for _, pg := range []*testenv.Postgres{b, a} {
		rt, err := deploy(pg.DataDir)
		require.NoError(t, err)
		inst, err := rt.Scan(ctx)
		require.NoError(t, err)
		assert.Equal(t, pg.DataDir, inst.DataDir)
		assert.Equal(t, pg.Major(t), inst.Version/10000)
		assert.Equal(t, pg.Psql(t, "postgres", "SELECT system_identifier FROM pg_control_system()"), strconv.FormatUint(inst.SystemID, 10))
	}

	stopped := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(stopped, "PG_VERSION"), []byte("16\n"), 0o600))
	_, err = deploy(stopped)
	require.ErrorIs(t, err, guest.ErrNoInstance)
	assert.ErrorContains(t, err, "is it running?")

	pid, err := os.ReadFile(filepath.Join(b.DataDir, "postmaster.pid"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(stopped, "postmaster.pid"), pid, 0o600)) // stale: names b's port
	_, err = deploy(stopped)
	require.ErrorIs(t, err, guest.ErrNoInstance)
	assert.ErrorContains(t, err, "serves "+b.DataDir)

	_, err = deploy("relative/data")
	require.ErrorContains(t, err, "absolute path")
}
