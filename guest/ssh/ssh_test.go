package ssh_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/runtime"
	gssh "github.com/pglogship/pglogship/guest/ssh"
	"github.com/pglogship/pglogship/internal/testenv"
)

type env struct {
	pg   *testenv.Postgres
	sshd *testenv.SSHD
	base string // runtime folders go here
	bin  string
}

func setup(t *testing.T) env {
	t.Helper()
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	sshd := testenv.StartSSHD(t, testenv.SSHDConfig{User: pg.OSUser})
	return env{pg: pg, sshd: sshd, base: filepath.Join(testenv.UserDir(t, sshd.User), "runtimes"), bin: testenv.BuildRuntime(t)}
}

func (e env) deployer(t *testing.T, mutate func(*gssh.Config)) *gssh.Deployer {
	t.Helper()
	cb, err := knownhosts.New(e.sshd.KnownHostsFile)
	require.NoError(t, err)
	cfg := gssh.Config{
		User: e.sshd.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(e.sshd.ClientSigner)}, HostKeyCallback: cb,
		Binaries: map[string]string{"amd64": e.bin}, BaseDir: e.base,
		// Peer authentication over the socket, as the SSH login user.
		Conn:   runtime.ConnConfig{Host: e.pg.SocketDir, Port: e.pg.Port, User: e.pg.User},
		Logger: testenv.Logger(t),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	d, err := gssh.New(cfg)
	require.NoError(t, err)
	return d
}

func runtimeDirs(t *testing.T, base string) []string {
	t.Helper()
	entries, err := os.ReadDir(base)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		if e.Name() != runtime.InstallLockFile { // the empty lock file stays
			out = append(out, e.Name())
		}
	}
	return out
}

func archived(t *testing.T, pg *testenv.Postgres) (n, failed int) {
	t.Helper()
	_, err := fmt.Sscanf(pg.Psql(t, "postgres", "SELECT archived_count, failed_count FROM pg_stat_archiver"), "%d|%d", &n, &failed)
	require.NoError(t, err)
	return n, failed
}

func TestDeployShipUninstall(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	walDir := filepath.Join(testenv.UserDir(t, e.pg.OSUser), "wal")
	rt, err := e.deployer(t, nil).Deploy(ctx, guest.Target{Machine: "db1", Address: e.sshd.Addr})
	require.NoError(t, err)
	require.Len(t, runtimeDirs(t, e.base), 1, "one runtime folder while deployed")

	inst, err := rt.Scan(ctx)
	require.NoError(t, err, "peer authentication as the login user")
	assert.Equal(t, e.pg.DataDir, inst.DataDir)
	require.NoError(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: walDir}))

	e.pg.Exec(t, "postgres", "CREATE TABLE t (x int)")
	for i := 0; i < 20; i++ {
		e.pg.Exec(t, "postgres", fmt.Sprintf("INSERT INTO t SELECT generate_series(1, %d)", 500*(i+1)))
		e.pg.Exec(t, "postgres", "SELECT pg_switch_wal()")
	}
	var files []guest.File
	require.Eventually(t, func() bool {
		files, err = rt.Ready(ctx)
		return err == nil && len(files) >= 21
	}, time.Minute, 200*time.Millisecond)
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Name
	}
	dec, err := zstd.NewReader(nil)
	require.NoError(t, err)
	n := 0
	require.NoError(t, rt.Read(ctx, names, func(f guest.Frame) error {
		require.NoError(t, dec.Reset(f.Data))
		var raw bytes.Buffer
		_, err := io.Copy(&raw, dec)
		require.NoError(t, err)
		want, err := os.ReadFile(filepath.Join(walDir, f.Name))
		require.NoError(t, err)
		assert.True(t, bytes.Equal(want, raw.Bytes()), "%s byte-identical", f.Name)
		n++
		return nil
	}))
	assert.Equal(t, len(names), n)
	require.NoError(t, rt.Remove(ctx, names))
	require.NoError(t, rt.Close(ctx))

	assert.Empty(t, runtimeDirs(t, e.base), "no runtime file is left in the guest")
	_, err = os.Stat(walDir)
	require.NoError(t, err, "the temporary WAL folder stays")

	// Archiving goes on with no runtime deployed.
	before, _ := archived(t, e.pg)
	for i := 0; i < 3; i++ {
		e.pg.Exec(t, "postgres", "INSERT INTO t VALUES (1)")
		e.pg.Exec(t, "postgres", "SELECT pg_switch_wal()")
	}
	require.Eventually(t, func() bool { a, _ := archived(t, e.pg); return a >= before+3 }, time.Minute, 200*time.Millisecond)
	_, failed := archived(t, e.pg)
	assert.Zero(t, failed, "pg_stat_archiver.failed_count")
	left, err := os.ReadDir(walDir)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, len(left), 3, "new WAL waits in the folder for the next session")
}

func TestHostKeyMismatchRefused(t *testing.T) {
	e := setup(t)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	other, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(kh, []byte(knownhosts.Line([]string{knownhosts.Normalize(e.sshd.Addr)}, other)+"\n"), 0o600))
	cb, err := knownhosts.New(kh)
	require.NoError(t, err)
	d := e.deployer(t, func(c *gssh.Config) { c.HostKeyCallback = cb })
	_, err = d.Deploy(context.Background(), guest.Target{Machine: "db1", Address: e.sshd.Addr})
	var ke *knownhosts.KeyError
	require.ErrorAs(t, err, &ke)
	require.ErrorIs(t, err, guest.ErrHostKey, "callers tell a refused host key from an unreachable guest")
	assert.Empty(t, runtimeDirs(t, e.base), "nothing ran or was uploaded")
}

func TestStaleRuntimeFolderRemoved(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	// A host that crashed left a folder whose runtime is gone: deploy once,
	// then kill the runtime's whole connection without Close.
	rt, err := e.deployer(t, nil).Deploy(ctx, guest.Target{Machine: "db1", Address: e.sshd.Addr})
	require.NoError(t, err)
	stale := runtimeDirs(t, e.base)
	require.Len(t, stale, 1)
	// The bracket keeps pkill from matching the shell that runs it.
	e.sshd.Run(t, "pkill -KILL -f '"+e.base+"/[r]t-' || true")
	require.Eventually(t, func() bool {
		_, err := rt.Scan(ctx)
		return err != nil
	}, 30*time.Second, 100*time.Millisecond)

	rt2, err := e.deployer(t, nil).Deploy(ctx, guest.Target{Machine: "db1", Address: e.sshd.Addr})
	require.NoError(t, err)
	defer rt2.Close(ctx)
	// The new runtime cleans once its deployer has let the install lock go.
	require.Eventually(t, func() bool { return len(runtimeDirs(t, e.base)) == 1 }, 30*time.Second, 50*time.Millisecond)
	_, err = rt2.Scan(ctx)
	require.NoError(t, err)
	now := runtimeDirs(t, e.base)
	require.Len(t, now, 1)
	assert.NotEqual(t, stale[0], now[0], "the stale folder was removed, the live one kept")
}

func TestNoBinaryForArchitecture(t *testing.T) {
	e := setup(t)
	d := e.deployer(t, func(c *gssh.Config) { c.Binaries = map[string]string{"arm64": e.bin} })
	_, err := d.Deploy(context.Background(), guest.Target{Machine: "db1", Address: e.sshd.Addr})
	require.ErrorIs(t, err, guest.ErrNoRuntime)
	assert.Contains(t, err.Error(), "x86_64")
}

func TestNewRefusesBadConfig(t *testing.T) {
	_, err := gssh.New(gssh.Config{User: "u", Auth: []ssh.AuthMethod{ssh.Password("p")}, Binaries: map[string]string{"amd64": "x"}})
	require.ErrorContains(t, err, "HostKeyCallback is required")
	_, err = gssh.New(gssh.Config{User: "u", Auth: []ssh.AuthMethod{ssh.Password("p")}, HostKeyCallback: ssh.FixedHostKey(nil),
		Binaries: map[string]string{"amd64": "x"}, BaseDir: "/tmp/x;rm -rf /"})
	require.ErrorContains(t, err, "only letters")
	assert.False(t, strings.Contains(fmt.Sprint(err), "p\""))
}

// The host side dies in the middle of a stream: every file stays in the
// guest, and the next deployment ships them all.
func TestHostDiesMidStream(t *testing.T) {
	e := setup(t)
	walDir := filepath.Join(testenv.UserDir(t, e.pg.OSUser), "wal")
	ctx := context.Background()
	rt, err := e.deployer(t, nil).Deploy(ctx, guest.Target{Machine: "db1", Address: e.sshd.Addr})
	require.NoError(t, err)
	require.NoError(t, rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: walDir}))
	e.pg.Exec(t, "postgres", "CREATE TABLE t (x int)")
	for i := 0; i < 5; i++ {
		e.pg.Exec(t, "postgres", "INSERT INTO t SELECT generate_series(1, 1000)")
		e.pg.Exec(t, "postgres", "SELECT pg_switch_wal()")
	}
	var files []guest.File
	require.Eventually(t, func() bool {
		files, err = rt.Ready(ctx)
		return err == nil && len(files) >= 6
	}, time.Minute, 200*time.Millisecond)
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Name
	}

	dying, die := context.WithCancel(ctx)
	err = rt.Read(dying, names, func(f guest.Frame) error {
		_, _ = io.CopyN(io.Discard, f.Data, 1000)
		die() // the host goes away with the stream half read
		_, err := io.Copy(io.Discard, f.Data)
		return err
	})
	require.Error(t, err)
	for _, n := range names {
		_, err := os.Stat(filepath.Join(walDir, n))
		require.NoError(t, err, "%s is still in the guest", n)
	}

	rt2, err := e.deployer(t, nil).Deploy(ctx, guest.Target{Machine: "db1", Address: e.sshd.Addr})
	require.NoError(t, err)
	defer rt2.Close(ctx)
	require.NoError(t, rt2.PrepareArchive(ctx, guest.ArchiveConfig{Dir: walDir}))
	shipped := 0
	require.NoError(t, rt2.Read(ctx, names, func(f guest.Frame) error {
		_, err := io.Copy(io.Discard, f.Data)
		shipped++
		return err
	}))
	assert.Equal(t, len(names), shipped, "the next session resumes with every file")
	require.NoError(t, rt2.Remove(ctx, names))
}

func TestTempFolderNotWritable(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	rt, err := e.deployer(t, nil).Deploy(ctx, guest.Target{Machine: "db1", Address: e.sshd.Addr})
	require.NoError(t, err)
	defer rt.Close(ctx)
	locked := t.TempDir() // 0700 and not the login user's
	if os.Geteuid() != 0 {
		require.NoError(t, os.Chmod(locked, 0o500))
		t.Cleanup(func() { os.Chmod(locked, 0o700) })
	}
	err = rt.PrepareArchive(ctx, guest.ArchiveConfig{Dir: filepath.Join(locked, "wal")})
	require.ErrorIs(t, err, guest.ErrTempFolder)
	assert.Empty(t, e.pg.Psql(t, "postgres", "SELECT setting FROM pg_file_settings WHERE name = 'archive_command' AND sourcefile LIKE '%auto.conf'"),
		"archive_command was not changed")
}

// The configured sslmode travels to the runtime in the guest: require is
// refused by the test server, which has no SSL, over TCP and changes
// nothing over the socket; the default (prefer) connects over TCP.
func TestSSLModeReachesGuest(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	tcp := runtime.ConnConfig{Host: e.pg.Host, Port: e.pg.Port, User: e.pg.User, Password: e.pg.Password}
	socket := runtime.ConnConfig{Host: e.pg.SocketDir, Port: e.pg.Port, User: e.pg.User}
	for _, tc := range []struct {
		name    string
		conn    runtime.ConnConfig
		mode    string
		refused bool
	}{
		{"tcp default", tcp, "", false},
		{"tcp require", tcp, "require", true},
		{"socket require", socket, "require", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.conn.SSLMode = tc.mode
			rt, err := e.deployer(t, func(c *gssh.Config) { c.Conn = tc.conn }).Deploy(ctx, guest.Target{Machine: "db1", Address: e.sshd.Addr})
			require.NoError(t, err)
			defer rt.Close(ctx)
			_, err = rt.Scan(ctx)
			if !tc.refused {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, "sslmode=require")
			assert.ErrorContains(t, err, "server refused TLS connection")
			assert.NotContains(t, err.Error(), e.pg.Password)
		})
	}
}
