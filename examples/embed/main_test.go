package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/internal/testenv"
)

// TestMain lets the test binary be the example program (and its runtime),
// so the test runs the real main in a process of its own.
func TestMain(m *testing.M) {
	switch {
	case len(os.Args) > 1 && os.Args[1] == "runtime":
		os.Exit(runtime.Main())
	case os.Getenv("PGLOGSHIP_EXAMPLE_MAIN") == "1":
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The example runs against a real PostgreSQL: the child session starts
// (archiving set up in PostgreSQL), and an interrupt stops it cleanly.
func TestEmbedRuns(t *testing.T) {
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	walDir := filepath.Join(testenv.UserDir(t, pg.OSUser), "wal")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PGLOGSHIP_EXAMPLE_MAIN=1", "PGHOST="+pg.Host, "PGPORT="+strconv.Itoa(pg.Port),
		"PGUSER="+pg.User, "PGPASSWORD="+pg.Password, "PGLOGSHIP_REPOSITORY="+t.TempDir(), "PGLOGSHIP_WALDIR="+walDir)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var log []string
	waitFor := func(s string) {
		t.Helper()
		deadline := time.After(2 * time.Minute)
		for {
			select {
			case l, ok := <-lines:
				require.True(t, ok, "the program ended early: %s", strings.Join(log, "\n"))
				log = append(log, l)
				if strings.Contains(l, s) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q in:\n%s", s, strings.Join(log, "\n"))
			}
		}
	}
	waitFor(`session_started "Embedded Job PostgreSQL Log Backup"`)
	assert.Contains(t, pg.Psql(t, "postgres", "SHOW archive_command"), walDir, "archiving goes to the guest's folder")
	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	waitFor(`session_ended "Embedded Job PostgreSQL Log Backup"`)
	require.NoError(t, cmd.Wait(), strings.Join(log, "\n"))
}
