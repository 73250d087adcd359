package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
)

func TestMain(m *testing.M) {
	if os.Getenv("PGLOGSHIP_EXAMPLE_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The example protects a real PostgreSQL over a real sshd into an SFTP
// repository on a real sshd, and its own checks pass.
func TestSSHGuestRuns(t *testing.T) {
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	sshd := testenv.StartSSHD(t, testenv.SSHDConfig{User: pg.OSUser})
	home := testenv.UserDir(t, pg.OSUser)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PGLOGSHIP_EXAMPLE_MAIN=1",
		"PGLOGSHIP_GUEST="+sshd.Addr, "PGLOGSHIP_GUEST_USER="+sshd.User, "PGLOGSHIP_KEY="+sshd.ClientKeyFile,
		"PGLOGSHIP_KNOWN_HOSTS="+sshd.KnownHostsFile, "PGLOGSHIP_RUNTIME="+testenv.BuildRuntime(t),
		"PGLOGSHIP_WALDIR="+filepath.Join(home, "wal"), "PGHOST="+pg.SocketDir, "PGPORT="+strconv.Itoa(pg.Port),
		"PGLOGSHIP_SFTP="+sshd.Addr, "PGLOGSHIP_SFTP_USER="+sshd.User, "PGLOGSHIP_SFTP_PATH="+filepath.Join(home, "repository"))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Regexp(t, `verified: 1 restore point, [1-9][0-9]* WAL files`, string(out))
	assert.Contains(t, string(out), "Remote DB Job                            parent success")
}
