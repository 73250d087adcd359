package testenv

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func TestPostgres(t *testing.T) {
	SkipIfShort(t)
	t.Parallel()
	pg := StartPostgres(t, PostgresConfig{Settings: map[string]string{"max_wal_senders": "6"}})

	conn := pg.Connect(t, "postgres")
	ctx := context.Background()
	var walLevel, archiveMode, archiveCommand, listen, senders, user string
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'), current_setting('archive_mode'),
		current_setting('archive_command'), current_setting('listen_addresses'),
		current_setting('max_wal_senders'), current_user`).
		Scan(&walLevel, &archiveMode, &archiveCommand, &listen, &senders, &user)
	require.NoError(t, err)
	assert.Equal(t, "replica", walLevel)
	assert.Equal(t, "on", archiveMode)
	assert.Empty(t, archiveCommand)
	assert.Equal(t, "127.0.0.1", listen)
	assert.Equal(t, "6", senders, "PostgresConfig.Settings overrides the defaults")
	assert.Equal(t, pg.User, user)

	assert.Equal(t, []string{"127.0.0.1"}, listeningAddrs(t, pg.Port), "PostgreSQL listens on loopback only")

	// A name that needs quoting, and Exec with arguments.
	const db = `wal "Test"-1`
	pg.CreateDatabase(t, db)
	pg.Exec(t, db, "CREATE TABLE t (v text)")
	pg.Exec(t, db, "INSERT INTO t VALUES ($1)", "x'y")
	var v string
	require.NoError(t, pg.Connect(t, db).QueryRow(ctx, "SELECT v FROM t").Scan(&v))
	assert.Equal(t, "x'y", v)

	// Peer authentication over the unix socket as the server's OS user.
	assert.Equal(t, pg.User, pg.Psql(t, "postgres", "select current_user"))
}

// The layouts of PostgresConfig: initdb options, pg_wal outside the data
// directory, and a Debian cluster whose configuration lives in /etc, listens
// on loopback and its private socket only, and is dropped afterwards.
func TestPostgresLayouts(t *testing.T) {
	SkipIfShort(t)
	t.Run("initdb options and external WAL", func(t *testing.T) {
		pg := StartPostgres(t, PostgresConfig{InitdbArgs: []string{"--wal-segsize=64", "--data-checksums"}, ExternalWAL: true})
		assert.Equal(t, "64MB|on", pg.Psql(t, "postgres", "SELECT current_setting('wal_segment_size') || '|' || current_setting('data_checksums')"))
		link, err := os.Readlink(filepath.Join(pg.DataDir, "pg_wal"))
		require.NoError(t, err, "pg_wal is a link")
		assert.Equal(t, pg.WALDir, link)
	})
	t.Run("Debian cluster", func(t *testing.T) {
		var confDir string
		t.Run("running", func(t *testing.T) {
			pg := StartPostgres(t, PostgresConfig{Debian: true, Settings: map[string]string{"max_wal_senders": "6"}})
			confDir = filepath.Dir(pg.ConfigFile)
			assert.Equal(t, filepath.Join("/etc/postgresql", pg.Cluster, "postgresql.conf"), pg.ConfigFile)
			assert.Equal(t, pg.ConfigFile+"|"+pg.DataDir+"|127.0.0.1|"+pg.SocketDir+"|6|"+pg.Cluster,
				pg.Psql(t, "postgres", "SELECT concat_ws('|', current_setting('config_file'), current_setting('data_directory'), "+
					"current_setting('listen_addresses'), current_setting('unix_socket_directories'), current_setting('max_wal_senders'), "+
					"current_setting('cluster_name'))"))
			assert.NoFileExists(t, filepath.Join(pg.DataDir, "postgresql.conf"), "the configuration is not in the data directory")
			assert.Equal(t, []string{"127.0.0.1"}, listeningAddrs(t, pg.Port))
			var n int
			require.NoError(t, pg.Connect(t, "postgres").QueryRow(context.Background(), "SELECT 1").Scan(&n), "password over TCP")
		})
		assert.NoDirExists(t, confDir, "pg_dropcluster removed it")
	})
}

func TestSSHDRunsCommandsAndReachesPostgresByPeer(t *testing.T) {
	SkipIfShort(t)
	t.Parallel()
	pg := StartPostgres(t, PostgresConfig{})
	s := StartSSHD(t, SSHDConfig{})
	require.Equal(t, pg.OSUser, s.User, "the default login user is the PostgreSQL OS user")

	_, port, err := net.SplitHostPort(s.Addr)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(s.KnownHostsLine, "[127.0.0.1]:"+port+" ssh-ed25519 "), s.KnownHostsLine)
	p, err := strconv.Atoi(port)
	require.NoError(t, err)
	assert.Equal(t, []string{"127.0.0.1"}, listeningAddrs(t, p), "sshd listens on loopback only")

	assert.Equal(t, s.User, strings.TrimSpace(s.Run(t, "id -un")))

	psql := fmt.Sprintf("%s -X -h %s -p %d -d postgres -Atc 'select current_user'",
		ShellQuote(filepath.Join(pg.BinDir, "psql")), ShellQuote(pg.SocketDir), pg.Port)
	assert.Equal(t, pg.User, strings.TrimSpace(s.Run(t, psql)), "peer authentication through the SSH login")

	// The key file on disk is the key ClientSigner holds.
	fi, err := os.Stat(s.ClientKeyFile)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	pem, err := os.ReadFile(s.ClientKeyFile)
	require.NoError(t, err)
	fromFile, err := ssh.ParsePrivateKey(pem)
	require.NoError(t, err)
	assert.Equal(t, s.ClientSigner.PublicKey().Marshal(), fromFile.PublicKey().Marshal())

	// A long-lived client from Dial runs several sessions.
	client := s.Dial(t)
	for range 2 {
		sess, err := client.NewSession()
		require.NoError(t, err)
		out, err := sess.CombinedOutput("echo ok")
		sess.Close()
		require.NoError(t, err)
		assert.Equal(t, "ok\n", string(out))
	}
}

func TestSSHDRefusesUnknownHostKey(t *testing.T) {
	SkipIfShort(t)
	t.Parallel()
	s := StartSSHD(t, SSHDConfig{})

	cfg := s.ClientConfig(t)
	var authAttempted atomic.Bool
	other := trustOtherHostKey(t, cfg, s.Addr, s.ClientSigner, &authAttempted)

	_, err := ssh.Dial("tcp", s.Addr, cfg)
	var dialKeyErr *knownhosts.KeyError
	require.ErrorAs(t, err, &dialKeyErr)
	require.NotEmpty(t, dialKeyErr.Want)

	// Again by hand, to learn the client port the server log will name.
	conn, err := net.DialTimeout("tcp", s.Addr, 10*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	clientPort := fmt.Sprintf("port %d ", conn.LocalAddr().(*net.TCPAddr).Port)

	client, _, _, err := ssh.NewClientConn(conn, s.Addr, cfg)
	require.Error(t, err)
	assert.Nil(t, client)
	var keyErr *knownhosts.KeyError
	require.ErrorAs(t, err, &keyErr)
	require.NotEmpty(t, keyErr.Want, "a known key for the host that did not match, not an unknown host")
	assert.Equal(t, other.Marshal(), keyErr.Want[0].Key.Marshal())

	// Refused during key exchange: the client never offered its key...
	assert.False(t, authAttempted.Load(), "client authenticated despite the wrong host key")
	// ...and the server saw the connection end before authentication, so
	// no user was logged in and no session could exist.
	var ours []string
	require.Eventually(t, func() bool {
		ours = logLinesWith(t, s.LogFile, clientPort)
		for _, l := range ours {
			if strings.Contains(l, "closed") || strings.Contains(l, "reset") || strings.Contains(l, "Disconnected") {
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "sshd never logged the end of the refused connection")
	for _, l := range ours {
		assert.NotContains(t, l, "publickey", "server got to authentication")
		assert.NotContains(t, l, "session", "server opened a session")
	}
}

func TestCleanupStopsServers(t *testing.T) {
	SkipIfShort(t)
	t.Parallel()
	var pgAddr, stoppedAddr, sshAddr, pgDir, sshDir string
	t.Run("start", func(t *testing.T) {
		pg := StartPostgres(t, PostgresConfig{})
		pgAddr = net.JoinHostPort(pg.Host, strconv.Itoa(pg.Port))
		pgDir = filepath.Dir(pg.DataDir)
		s := StartSSHD(t, SSHDConfig{})
		sshAddr = s.Addr
		sshDir = filepath.Dir(s.KnownHostsFile)
		requireAccepts(t, pgAddr)
		requireAccepts(t, sshAddr)

		// An explicit Stop, repeated, and then the Cleanup's Stop.
		pg2 := StartPostgres(t, PostgresConfig{})
		stoppedAddr = net.JoinHostPort(pg2.Host, strconv.Itoa(pg2.Port))
		pg2.Stop(t)
		pg2.Stop(t)
		requireRefuses(t, stoppedAddr)
	})
	requireRefuses(t, pgAddr)
	requireRefuses(t, sshAddr)
	requireRefuses(t, stoppedAddr)
	assert.NoDirExists(t, pgDir)
	assert.NoDirExists(t, sshDir)
}

// Not parallel: it changes the environment.
func TestFailuresExplainThemselves(t *testing.T) {
	t.Run("missing PostgreSQL binaries", func(t *testing.T) {
		t.Setenv(PGBinDirEnv, filepath.Join(t.TempDir(), "nope"))
		msg := fatalMessage(t, func(tb testing.TB) { PostgresBinDir(tb) })
		assert.Contains(t, msg, "apt-get install -y postgresql")
	})
	t.Run("reserved setting", func(t *testing.T) {
		msg := fatalMessage(t, func(tb testing.TB) {
			StartPostgres(tb, PostgresConfig{Settings: map[string]string{"Listen_Addresses": "*"}})
		})
		assert.Contains(t, msg, "listen_addresses is managed by testenv")
	})
	t.Run("unknown login user", func(t *testing.T) {
		msg := fatalMessage(t, func(tb testing.TB) { StartSSHD(tb, SSHDConfig{User: "no-such-user-pglogship"}) })
		assert.Contains(t, msg, `login user "no-such-user-pglogship" does not exist`)
	})
}

func TestVersionLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		less bool
	}{
		{"9.6", "15", true},
		{"15", "9.6", false},
		{"15", "15.1", true},
		{"16", "16", false},
		{"13", "17", true},
	} {
		assert.Equal(t, tc.less, versionLess(tc.a, tc.b), "%s < %s", tc.a, tc.b)
	}
}

func TestQuoteConfValue(t *testing.T) {
	assert.Equal(t, `'a''b\\c'`, quoteConfValue(`a'b\c`))
	assert.Equal(t, `''`, quoteConfValue(""))
}

// trustOtherHostKey makes cfg trust only a fresh host key for addr, and
// authenticate with signer while recording in offered that it got that
// far. It returns the fresh key.
func trustOtherHostKey(t *testing.T, cfg *ssh.ClientConfig, addr string, signer ssh.Signer, offered *atomic.Bool) ssh.PublicKey {
	t.Helper()
	otherPub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	other, err := ssh.NewPublicKey(otherPub)
	require.NoError(t, err)
	otherFile := filepath.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, other)
	require.NoError(t, os.WriteFile(otherFile, []byte(line+"\n"), 0o600))
	cfg.HostKeyCallback, err = knownhosts.New(otherFile)
	require.NoError(t, err)
	cfg.Auth = []ssh.AuthMethod{ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
		offered.Store(true)
		return []ssh.Signer{signer}, nil
	})}
	return other
}

// fatalTB records the first Fatalf and stops the goroutine like testing does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// fatalMessage runs fn and returns the message it failed with.
func fatalMessage(t *testing.T, fn func(testing.TB)) string {
	t.Helper()
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	require.NotEmpty(t, f.msg, "expected a fatal failure")
	return f.msg
}

func requireAccepts(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	c.Close()
}

func requireRefuses(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.Close()
	}
	require.Error(t, err, "%s still accepts connections", addr)
}

// logLinesWith returns the lines of the log at path that contain s.
func logLinesWith(t *testing.T, path, s string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			lines = append(lines, l)
		}
	}
	return lines
}

// listeningAddrs returns the local addresses of listening TCP sockets on
// port, from /proc/net/tcp and tcp6.
func listeningAddrs(t *testing.T, port int) []string {
	t.Helper()
	var addrs []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		require.NoError(t, err)
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 4 || fields[3] != "0A" { // 0A: LISTEN
				continue
			}
			ipHex, portHex, ok := strings.Cut(fields[1], ":")
			require.True(t, ok, line)
			p, err := strconv.ParseUint(portHex, 16, 16)
			require.NoError(t, err)
			if int(p) != port {
				continue
			}
			ip, err := hex.DecodeString(ipHex)
			require.NoError(t, err)
			// The kernel prints each 32-bit word in host (little-endian) order.
			for i := 0; i+4 <= len(ip); i += 4 {
				ip[i], ip[i+1], ip[i+2], ip[i+3] = ip[i+3], ip[i+2], ip[i+1], ip[i]
			}
			addrs = append(addrs, net.IP(ip).String())
		}
	}
	return addrs
}
