// The QEMU tests run without the race detector: under it, compressing a
// VM's disk image alone takes minutes. make test runs them in a second,
// plain go test (see the Makefile).

//go:build !race

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
)

func TestMain(m *testing.M) {
	if step := os.Getenv("PGLOGSHIP_EXAMPLE_STEP"); step != "" {
		os.Args = []string{os.Args[0], step}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The example's steps against a real VM: backups, the WAL written after
// them shipped by a later session, the chain restored for a time between
// two tables, and PostgreSQL recovered to that time in a VM booted from the
// restored disk.
func TestQEMUVMRuns(t *testing.T) {
	testenv.SkipIfShort(t)
	vm := testenv.StartVM(t, testenv.VMConfig{})
	dir := t.TempDir()
	knownHosts := filepath.Join(dir, "known_hosts")
	hosts, err := os.ReadFile(vm.KnownHostsFile)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(knownHosts, hosts, 0o600))
	env := []string{
		"PGLOGSHIP_QMP=" + vm.QMPSocket, "PGLOGSHIP_QGA=" + vm.QGASocket, "PGLOGSHIP_NODE=" + vm.DiskNode,
		"PGLOGSHIP_GUEST=" + vm.SSHAddr, "PGLOGSHIP_KEY=" + vm.ClientKeyFile, "PGLOGSHIP_KNOWN_HOSTS=" + knownHosts,
		"PGLOGSHIP_RUNTIME=" + testenv.BuildRuntime(t), "PGLOGSHIP_WORKDIR=" + filepath.Join(dir, "work"),
		"PGLOGSHIP_REPOSITORY=" + filepath.Join(dir, "repository"), "PGLOGSHIP_DISK=" + filepath.Join(dir, "restored.qcow2"),
		"PGLOGSHIP_PG_VERSION=" + testenv.GuestPostgresVersion,
	}
	step := func(name string, more ...string) string {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(append(append(os.Environ(), env...), more...), "PGLOGSHIP_EXAMPLE_STEP="+name)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s: %s", name, out)
		t.Logf("%s:\n%s", name, out)
		return string(out)
	}

	vm.Psql(t, "CREATE TABLE before_images AS SELECT generate_series(1, 1000) AS n")
	out := step("backup")
	assert.Contains(t, out, "backup: 2 restore points")
	vm.Psql(t, "CREATE TABLE before_target AS SELECT 1 AS x")
	time.Sleep(time.Second)
	guestNow, err := time.Parse("2006-01-02 15:04:05.999999-07", vm.Psql(t, "SELECT clock_timestamp()")) // the guest's clock
	require.NoError(t, err)
	at := guestNow.UTC().Format(time.RFC3339Nano)
	time.Sleep(time.Second)
	vm.Psql(t, "CREATE TABLE after_target AS SELECT 1 AS x")
	vm.SwitchWAL(t)
	step("ship")
	out = step("restore", "PGLOGSHIP_TARGET="+at)
	assert.Contains(t, out, "full false", "the incremental restore point is in the chain")

	vm2 := testenv.StartVM(t, testenv.VMConfig{Disk: filepath.Join(dir, "restored.qcow2"), NoPostgres: true})
	more, err := os.ReadFile(vm2.KnownHostsFile)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(knownHosts, append(hosts, more...), 0o600))
	out = step("recover", "PGLOGSHIP_TARGET="+at, "PGLOGSHIP_RECOVER_GUEST="+vm2.SSHAddr)
	assert.Contains(t, out, "promoted true")
	assert.Equal(t, "1000", vm2.Psql(t, "SELECT count(*) FROM before_images"))
	assert.Equal(t, "t", vm2.Psql(t, "SELECT to_regclass('before_target') IS NOT NULL"))
	assert.Equal(t, "f", vm2.Psql(t, "SELECT to_regclass('after_target') IS NOT NULL"))
}
