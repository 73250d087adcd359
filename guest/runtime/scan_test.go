package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/internal/testenv"
)

func scanWith(t *testing.T, cfg ConnConfig) (*pgx.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := Connect(ctx, cfg)
	if err == nil {
		t.Cleanup(func() { conn.Close(context.Background()) })
	}
	return conn, err
}

func TestScan(t *testing.T) {
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	tsDir := postgresOwnedDir(t, pg.OSUser)
	pg.Exec(t, "postgres", "CREATE TABLESPACE fast LOCATION "+quoteLiteral(tsDir))
	pg.CreateDatabase(t, "app")

	conn, err := scanWith(t, ConnConfig{Host: pg.Host, Port: pg.Port, User: pg.User, Password: pg.Password})
	require.NoError(t, err)
	inst, err := Scan(context.Background(), conn)
	require.NoError(t, err)

	var sysid uint64
	require.NoError(t, conn.QueryRow(context.Background(), "SELECT system_identifier FROM pg_control_system()").Scan(&sysid))
	assert.Equal(t, sysid, inst.SystemID)
	assert.NotZero(t, inst.SystemID)
	assert.GreaterOrEqual(t, inst.Version, 130000)
	assert.Equal(t, pg.DataDir, inst.DataDir)
	assert.True(t, inst.Running)
	assert.False(t, inst.InRecovery)
	assert.Equal(t, uint32(1), inst.Timeline)
	assert.Equal(t, int64(16<<20), inst.WALSegmentSize)
	assert.Equal(t, "replica", inst.WALLevel)
	assert.Equal(t, "on", inst.ArchiveMode)
	assert.Empty(t, inst.ArchiveCommand)
	assert.Equal(t, []string{"app", "postgres", "template1"}, inst.Databases, "template0 does not allow connections")
	require.Len(t, inst.Tablespaces, 1)
	assert.Equal(t, "fast", inst.Tablespaces[0].Name)
	assert.Equal(t, tsDir, inst.Tablespaces[0].Location)
	assert.NotZero(t, inst.Tablespaces[0].OID)
}

func TestConnectWithPassfile(t *testing.T) {
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	passfile := filepath.Join(t.TempDir(), "pgpass")
	line := fmt.Sprintf("%s:%d:*:%s:%s\n", pg.Host, pg.Port, pg.User, pg.Password)
	require.NoError(t, os.WriteFile(passfile, []byte(line), 0o600))
	conn, err := scanWith(t, ConnConfig{Host: pg.Host, Port: pg.Port, User: pg.User, PassFile: passfile})
	require.NoError(t, err)
	_, err = Scan(context.Background(), conn)
	require.NoError(t, err)

	_, err = scanWith(t, ConnConfig{Host: pg.Host, Port: pg.Port, User: pg.User, Password: "wrong-secret"})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "wrong-secret", "passwords never reach errors")
	assert.Contains(t, err.Error(), "auth=password")
}

func TestConnectRefusesIncompleteConfig(t *testing.T) {
	_, err := Connect(context.Background(), ConnConfig{User: "x"})
	require.ErrorContains(t, err, "host and user are required")
	assert.False(t, strings.Contains(ConnConfig{Host: "h", User: "u", Password: "s3cret"}.String(), "s3cret"))
}

func TestConnStringSSLMode(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  ConnConfig
		want string // the sslmode and sslrootcert part
	}{
		{"tcp default", ConnConfig{Host: "db.example", User: "u"}, "sslmode='prefer'"},
		{"tcp configured", ConnConfig{Host: "10.0.0.5", User: "u", SSLMode: "verify-full", SSLRootCert: "/etc/ca.pem"},
			"sslmode='verify-full' sslrootcert='/etc/ca.pem'"},
		{"tcp disable", ConnConfig{Host: "db.example", User: "u", SSLMode: "disable"}, "sslmode='disable'"},
		{"socket default", ConnConfig{Host: "/var/run/postgresql", User: "u"}, "sslmode='disable'"},
		{"socket ignores it", ConnConfig{Host: "/var/run/postgresql", User: "u", SSLMode: "require", SSLRootCert: "/etc/ca.pem"}, "sslmode='disable'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn, err := tc.cfg.connString()
			require.NoError(t, err)
			assert.Contains(t, dsn, " dbname='postgres' "+tc.want+" application_name='pglogship-runtime'")
			assert.Equal(t, 1, strings.Count(dsn, "sslmode="), dsn)
		})
	}
	_, err := ConnConfig{Host: "h", User: "u", SSLMode: "on"}.connString()
	require.ErrorContains(t, err, `sslmode "on"`)
	assert.Contains(t, ConnConfig{Host: "h", User: "u", SSLMode: "require"}.String(), "sslmode=require", "errors name the mode")
	assert.NotContains(t, ConnConfig{Host: "/tmp", User: "u"}.String(), "sslmode")
}

// The test server has no SSL: prefer falls back to plain TCP, require is
// refused with an error that names the mode. (The socket case runs in the
// SSH deployer's tests, where the runtime is the server's OS user.)
func TestConnectSSLModeOnRealServer(t *testing.T) {
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	require.False(t, strings.HasPrefix(pg.Host, "/"), "pg.Host is TCP")
	tcp := ConnConfig{Host: pg.Host, Port: pg.Port, User: pg.User, Password: pg.Password}

	for _, mode := range []string{"", "prefer", "allow", "disable"} {
		c := tcp
		c.SSLMode = mode
		conn, err := scanWith(t, c)
		require.NoError(t, err, "sslmode %q", mode)
		var ssl bool
		require.NoError(t, conn.QueryRow(context.Background(), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl))
		assert.False(t, ssl)
	}
	for _, mode := range []string{"require", "verify-full"} {
		c := tcp
		c.SSLMode = mode
		_, err := scanWith(t, c)
		require.Error(t, err, "sslmode %s on a server without SSL", mode)
		assert.Contains(t, err.Error(), "sslmode="+mode)
		assert.Contains(t, err.Error(), "server refused TLS connection")
		assert.NotContains(t, err.Error(), pg.Password)
	}
}
