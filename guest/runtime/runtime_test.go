package runtime

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/internal/testenv"
)

func newRuntime(pg *testenv.Postgres) *Runtime {
	return New(Config{Conn: ConnConfig{Host: pg.Host, Port: pg.Port, User: pg.User, Password: pg.Password}})
}

func TestPrepareArchive(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := context.Background()
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	rt := newRuntime(pg)
	dir := filepath.Join(postgresOwnedDir(t, pg.OSUser), "tmp-wal") // created by PrepareArchive

	require.NoError(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: dir}))
	st, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	data, err := os.Stat(pg.DataDir)
	require.NoError(t, err)
	assert.Equal(t, data.Sys().(*syscall.Stat_t).Uid, st.Sys().(*syscall.Stat_t).Uid, "owned by the server's OS user")

	files, err := Ready(dir)
	require.NoError(t, err)
	require.NotEmpty(t, files, "the verification switch archived a segment into the folder")
	assert.Equal(t, int64(16<<20), files[0].Size)

	cmd := pg.Psql(t, "postgres", "SHOW archive_command")
	assert.True(t, IsOurs(cmd))
	require.NoError(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: dir}), "idempotent")
	assert.Equal(t, "0", pg.Psql(t, "postgres", "SELECT failed_count FROM pg_stat_archiver"))

	other := filepath.Join(filepath.Dir(dir), "other")
	require.ErrorIs(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: other}), guest.ErrArchiveCommandTaken,
		"ours, but pointing elsewhere: refused rather than orphaning waiting files")
	require.ErrorIs(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: "/tmp/has space"}), guest.ErrTempFolder)
	require.ErrorIs(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: dir, MinFreeBytes: 1 << 62}), guest.ErrTempFolder)

	pg.Exec(t, "postgres", "ALTER SYSTEM SET archive_command = 'cp %p /mnt/server/%f'")
	pg.Exec(t, "postgres", "SELECT pg_reload_conf()")
	require.ErrorIs(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: dir}), guest.ErrArchiveCommandTaken)
}

func TestPrepareArchiveRequirements(t *testing.T) {
	testenv.SkipIfShort(t)
	tests := []struct {
		name     string
		settings map[string]string
		want     error
	}{
		{"archive_mode off", map[string]string{"archive_mode": "off"}, guest.ErrArchiveModeOff},
		{"wal_level minimal", map[string]string{"archive_mode": "off", "wal_level": "minimal", "max_wal_senders": "0"}, guest.ErrWALLevel},
		{"archive_library set", map[string]string{"archive_library": "basic_archive"}, guest.ErrArchiveCommandTaken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pg := testenv.StartPostgres(t, testenv.PostgresConfig{Settings: tt.settings})
			dir := filepath.Join(postgresOwnedDir(t, pg.OSUser), "wal")
			err := newRuntime(pg).PrepareArchive(context.Background(), guest.ArchiveConfig{Dir: dir})
			require.ErrorIs(t, err, tt.want)
			auto, err := os.ReadFile(filepath.Join(pg.DataDir, "postgresql.auto.conf"))
			require.NoError(t, err)
			assert.NotContains(t, string(auto), "archive_command", "nothing was changed")
		})
	}
}

func TestReadyOrder(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"000000020000000000000005", "000000010000000000000004.partial", "00000002.history",
		"000000010000000000000004", "000000010000000000000003.00000028.backup", ".tmp.000000010000000000000006.123", "README"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte(n), 0o600))
	}
	files, err := Ready(dir)
	require.NoError(t, err)
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
	}
	assert.Equal(t, []string{"000000010000000000000003.00000028.backup", "000000010000000000000004",
		"000000010000000000000004.partial", "00000002.history", "000000020000000000000005"}, names)
}
