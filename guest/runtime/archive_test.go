package runtime

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/wal"
)

func TestArchiveCommandRefusesUnsafeDirs(t *testing.T) {
	for _, dir := range []string{"", "relative/wal", "/", "/a/../b", "/a/", "/with space", "/x;rm -rf /", "/$(id)", "/`id`", "/a'b", `/a"b`, "/a\nb", "/a*"} {
		_, err := ArchiveCommand(dir)
		require.Error(t, err, "%q", dir)
	}
	cmd, err := ArchiveCommand("/var/lib/pglogship/wal-tmp_1.x")
	require.NoError(t, err)
	assert.True(t, IsOurs(cmd))
	dir, ok := ArchiveDir(cmd)
	assert.True(t, ok)
	assert.Equal(t, "/var/lib/pglogship/wal-tmp_1.x", dir)
	assert.False(t, IsOurs("cp %p /mnt/server/archivedir/%f"))
	assert.False(t, IsOurs(""))
}

// run executes the command the way PostgreSQL's archiver does: %p and %f
// substituted, through sh -c, from the data directory.
func run(t *testing.T, cmd, dataDir, rel string) (int, string) {
	t.Helper()
	c := strings.ReplaceAll(strings.ReplaceAll(cmd, "%p", rel), "%f", filepath.Base(rel))
	sh := exec.Command("/bin/sh", "-c", c)
	sh.Dir = dataDir
	out, err := sh.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	require.NoError(t, err)
	return 0, string(out)
}

func TestArchiveCommandSemantics(t *testing.T) {
	data := t.TempDir()
	archive := filepath.Join(t.TempDir(), "wal")
	require.NoError(t, os.Mkdir(archive, 0o700))
	require.NoError(t, os.MkdirAll(filepath.Join(data, "pg_wal"), 0o700))
	seg := "pg_wal/000000010000000000000003"
	content := bytes.Repeat([]byte("wal!"), 1<<20)
	require.NoError(t, os.WriteFile(filepath.Join(data, seg), content, 0o600))
	cmd, err := ArchiveCommand(archive)
	require.NoError(t, err)

	code, out := run(t, cmd, data, seg)
	require.Equal(t, 0, code, out)
	got, err := os.ReadFile(filepath.Join(archive, "000000010000000000000003"))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(content, got))

	code, out = run(t, cmd, data, seg)
	assert.Equal(t, 0, code, "archiving the same file again succeeds: %s", out)

	require.NoError(t, os.WriteFile(filepath.Join(data, seg), []byte("other content"), 0o600))
	code, out = run(t, cmd, data, seg)
	assert.Equal(t, 1, code, "different content under an archived name fails")
	assert.Contains(t, out, "different content")
	got, err = os.ReadFile(filepath.Join(archive, "000000010000000000000003"))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(content, got), "the archived file is never replaced")

	entries, err := os.ReadDir(archive)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left behind")

	if os.Geteuid() != 0 { // root ignores permissions
		require.NoError(t, os.Chmod(archive, 0o500))
		code, _ = run(t, cmd, data, "pg_wal/000000010000000000000003")
		require.NoError(t, os.Chmod(archive, 0o700))
		assert.Equal(t, 1, code)
	}
	code, _ = run(t, cmd, data, "pg_wal/000000010000000000000009")
	assert.NotEqual(t, 0, code, "a missing source fails")
}

var segmentName = regexp.MustCompile(`^[0-9A-F]{24}$`)

// The archive_command on a real PostgreSQL: 20 switched segments land in the
// folder, each a whole WAL segment of the right timeline and position, and
// the archiver reports no failure.
func TestArchiveCommandOnPostgres(t *testing.T) {
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	archive := postgresOwnedDir(t, pg.OSUser)
	cmd, err := ArchiveCommand(archive)
	require.NoError(t, err)
	pg.Exec(t, "postgres", "ALTER SYSTEM SET archive_command = "+quoteLiteral(cmd))
	pg.Exec(t, "postgres", "SELECT pg_reload_conf()")
	pg.Exec(t, "postgres", "CREATE TABLE t (x int)")
	for i := 0; i < 20; i++ {
		pg.Exec(t, "postgres", fmt.Sprintf("INSERT INTO t SELECT generate_series(1, %d)", 1000*(i+1)))
		pg.Exec(t, "postgres", "SELECT pg_switch_wal()")
	}
	deadline := time.Now().Add(60 * time.Second)
	var archived, failed int
	for time.Now().Before(deadline) {
		out := pg.Psql(t, "postgres", "SELECT archived_count, failed_count FROM pg_stat_archiver")
		_, err := fmt.Sscanf(out, "%d|%d", &archived, &failed)
		require.NoError(t, err, out)
		if archived >= 20 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.GreaterOrEqual(t, archived, 20, "segments archived")
	assert.Zero(t, failed, "pg_stat_archiver.failed_count")

	var sysid uint64
	require.NoError(t, pg.Connect(t, "postgres").QueryRow(context.Background(), "SELECT system_identifier FROM pg_control_system()").Scan(&sysid))
	version, err := strconv.Atoi(pg.Psql(t, "postgres", "SHOW server_version_num"))
	require.NoError(t, err)
	entries, err := os.ReadDir(archive)
	require.NoError(t, err)
	segs := 0
	for _, e := range entries {
		require.False(t, strings.HasPrefix(e.Name(), "."), "temporary file %s left", e.Name())
		if !segmentName.MatchString(e.Name()) {
			continue
		}
		segs++
		b, err := os.ReadFile(filepath.Join(archive, e.Name()))
		require.NoError(t, err)
		require.Len(t, b, 16<<20, e.Name())
		require.NoError(t, wal.CheckSegmentHeader(e.Name(), b[:wal.LongHeaderSize], 16<<20, sysid, version))
	}
	assert.GreaterOrEqual(t, segs, 20)
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// postgresOwnedDir makes a 0700 folder the server's OS user owns, as the
// runtime will.
func postgresOwnedDir(t *testing.T, osUser string) string {
	t.Helper()
	dir := testenv.UserDir(t, osUser)
	require.NoError(t, os.Chmod(dir, 0o700))
	return dir
}
