package runtime

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
)

// The restore_command of a RestoreService, run by sh as PostgreSQL runs
// it, with the real runtime binary: segments land at %p, the next ones come
// from the spool, the end of the archive exits 1, and Close removes the
// spool.
func TestRestoreServiceCommand(t *testing.T) {
	testenv.SkipIfShort(t)
	names := segs(1, 1, 6)
	a := newArchive(names...)
	data := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(data, "pg_wal"), 0o700))
	s, err := ServeRestore(RestoreServiceConfig{Dir: filepath.Join(data, "pg_wal"), Fetch: a.fetch, Prefetch: 2,
		Self: []string{testenv.BuildRuntime(t)}, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	defer s.Close()
	restore := func(name string) (int, string) {
		cmd := strings.NewReplacer("%f", name, "%p", "pg_wal/RECOVERYXLOG").Replace(s.Command())
		sh := exec.Command("/bin/sh", "-c", cmd)
		sh.Dir = data
		out, err := sh.CombinedOutput()
		if err != nil {
			return sh.ProcessState.ExitCode(), string(out)
		}
		return 0, string(out)
	}
	for i, n := range names {
		code, out := restore(n)
		require.Equal(t, 0, code, out)
		got, err := os.ReadFile(filepath.Join(data, "pg_wal", "RECOVERYXLOG"))
		require.NoError(t, err)
		require.Equal(t, a.files[n], got, n)
		if i == 0 {
			require.Eventually(t, func() bool { return s.Stats().Fetched == 3 }, 10*time.Second, time.Millisecond,
				"two fetched ahead")
		}
	}
	st := s.Stats()
	assert.Equal(t, len(names), st.Requests)
	assert.GreaterOrEqual(t, st.FromSpool, 2)
	code, _ := restore(segs(1, 7, 1)[0])
	assert.Equal(t, FetchExitNotFound, code, "past the end of the archive")

	spools, err := filepath.Glob(filepath.Join(data, "pg_wal", ".pglogship-spool-*"))
	require.NoError(t, err)
	require.Len(t, spools, 1)
	s.Close()
	_, err = os.Stat(spools[0])
	assert.True(t, os.IsNotExist(err), "Close removed the spool")
}

func TestRestoreServiceRefusesBadConfig(t *testing.T) {
	_, err := ServeRestore(RestoreServiceConfig{Dir: t.TempDir()})
	require.ErrorContains(t, err, "no Fetch")
	_, err = ServeRestore(RestoreServiceConfig{Dir: "relative/dir", Fetch: newArchive().fetch})
	require.ErrorContains(t, err, "absolute path")
}
