package testenv

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresConfig configures StartPostgres.
type PostgresConfig struct {
	// Settings are extra postgresql.conf settings. They override the
	// defaults (wal_level=replica, archive_mode=on, archive_command='',
	// fsync=off, max_wal_senders=4), except listen_addresses, port and
	// unix_socket_directories, which testenv owns so that the server never
	// listens beyond loopback.
	Settings map[string]string
	// InitdbArgs are more options for initdb, such as --wal-segsize=64 or
	// --data-checksums.
	InitdbArgs []string
	// ExternalWAL makes pg_wal a symbolic link to a directory outside the
	// data directory (initdb -X), Postgres.WALDir.
	ExternalWAL bool
	// Debian makes the cluster as the Debian packaging does: created with
	// pg_createcluster, started with pg_ctlcluster, its configuration
	// files in /etc/postgresql/<major>/<name>/ (Postgres.ConfigFile), not
	// in the data directory, and dropped with pg_dropcluster in t.Cleanup.
	// It needs postgresql-common, a Debian bin directory
	// (/usr/lib/postgresql/<major>/bin) and root.
	Debian bool
	// Major is the PostgreSQL release to start (13 to 18, or 12 to see it
	// refused): Debian's when installed, else the release's server
	// binaries from the npm registry (PostgresBinDirOf). 0 is
	// PostgresBinDir's, Debian's newest.
	Major int
}

// Postgres is a running throw-away PostgreSQL cluster.
type Postgres struct {
	Host      string // always "127.0.0.1"
	Port      int
	SocketDir string // unix socket directory (peer authentication)
	DataDir   string
	BinDir    string
	User      string // superuser role, named after the OS user that ran initdb
	Password  string // superuser password for TCP (scram-sha-256)
	OSUser    string // OS user the server runs as
	LogFile   string // server log
	WALDir    string // where pg_wal leads, with PostgresConfig.ExternalWAL
	// ConfigFile is postgresql.conf when it is not in DataDir (a Debian
	// cluster's); Cluster is then its "<major>/<name>".
	ConfigFile string
	Cluster    string

	account  osAccount
	baseDir  string
	confPath string                 // where testenv's settings go: pglogship_testenv.conf
	launch   func() ([]byte, error) // starts the server once the settings are written

	mu      sync.Mutex
	stopped bool
}

// reservedSettings are set by testenv and cannot be overridden.
var reservedSettings = map[string]bool{
	"listen_addresses":        true,
	"port":                    true,
	"unix_socket_directories": true,
}

var settingName = regexp.MustCompile(`^[a-z_][a-z0-9_.]*$`)

// StartPostgres initialises a cluster in a fresh directory, starts it on a
// free port of 127.0.0.1 and on a private unix socket, and stops and
// removes it in t.Cleanup.
func StartPostgres(t testing.TB, cfg PostgresConfig) *Postgres {
	t.Helper()
	settings := mergeSettings(t, cfg)
	acct := serverAccount(t)
	p := newPostgres(t, acct, "", binDirOf(t, cfg.Major))
	p.Password = randomHex(t, 16)
	args := append([]string(nil), cfg.InitdbArgs...)
	if cfg.ExternalWAL {
		p.WALDir = filepath.Join(p.baseDir, "wal") // made by initdb
		args = append(args, "-X", p.WALDir)
	}
	if cfg.Debian {
		p.createCluster(t, args)
		p.start(t, settings)
		return p
	}
	mustMkdir(t, p.DataDir, 0o700)
	chown(t, acct, p.DataDir)
	p.initdb(t, args)

	p.writeDataFile(t, "pg_hba.conf", testenvHBA)
	f, err := os.OpenFile(filepath.Join(p.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	_, err = f.WriteString("\ninclude 'pglogship_testenv.conf'\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	p.start(t, settings)
	return p
}

// testenvHBA lets in the unix socket (peer) and loopback (password) only.
const testenvHBA = "# testenv: loopback and unix socket only\n" +
	"local all all peer\n" +
	"host  all all 127.0.0.1/32 scram-sha-256\n"

// createCluster makes a Debian cluster with pg_createcluster, its data
// directory and socket in the private folder, its configuration in
// /etc/postgresql/<major>/<name>/ with testenv's settings in its conf.d, and
// sets it up to start with pg_ctlcluster.
func (p *Postgres) createCluster(t testing.TB, initdbArgs []string) {
	t.Helper()
	const installCommon = "apt-get update && apt-get install -y postgresql-common"
	create := requireBinary(t, "pg_createcluster", installCommon)
	ctl := requireBinary(t, "pg_ctlcluster", installCommon)
	drop := requireBinary(t, "pg_dropcluster", installCommon)
	major := filepath.Base(filepath.Dir(p.BinDir))
	if p.BinDir != filepath.Join("/usr/lib/postgresql", major, "bin") {
		t.Fatalf("testenv: a Debian cluster needs a Debian bin directory /usr/lib/postgresql/<major>/bin, not %s: install it with: %s",
			p.BinDir, installPostgres)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("testenv: pg_createcluster writes /etc/postgresql: a Debian cluster needs root")
	}
	name := "pglogship_" + randomHex(t, 4)
	confDir := filepath.Join("/etc/postgresql", major, name)
	p.Cluster, p.ConfigFile = major+"/"+name, filepath.Join(confDir, "postgresql.conf")
	p.confPath = filepath.Join(confDir, "conf.d", "pglogship_testenv.conf")
	pwfile := filepath.Join(p.baseDir, "pwfile")
	mustWriteFile(t, pwfile, []byte(p.Password+"\n"), 0o600)
	chown(t, p.account, pwfile)
	defer os.Remove(pwfile)

	// Registered before it is made, so that half a cluster goes too.
	t.Cleanup(func() {
		out, err := exec.Command(drop, "--stop", major, name).CombinedOutput()
		if err != nil {
			t.Errorf("testenv: pg_dropcluster %s: %v\n%s", p.Cluster, err, out)
		}
		if err := os.RemoveAll(confDir); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	// The port is testenv's (conf.d, written at each start); this one
	// only has to be free of other clusters.
	args := []string{major, name, "--user", p.account.Name, "--datadir", p.DataDir, "--socketdir", p.SocketDir,
		"--logfile", p.LogFile, "--port", strconv.Itoa(freePort(t)), "--locale", "C", "--encoding", "UTF8",
		"--start-conf", "manual", "--",
		"--auth-local=peer", "--auth-host=scram-sha-256", "--pwfile=" + pwfile, "-U", p.User, "--no-sync"}
	cmd := exec.Command(create, append(args, initdbArgs...)...)
	cmd.Env, cmd.Dir = cleanEnv(), p.baseDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: pg_createcluster %s: %v\n%s", p.Cluster, err, out)
	}
	mustWriteFile(t, filepath.Join(confDir, "pg_hba.conf"), []byte(testenvHBA), 0o640)
	chown(t, p.account, filepath.Join(confDir, "pg_hba.conf"))
	p.launch = func() ([]byte, error) {
		cmd := exec.Command(ctl, "--skip-systemctl-redirect", major, name, "start")
		cmd.Env, cmd.Dir = cleanEnv(), p.baseDir
		return cmd.CombinedOutput()
	}
}

// StartPostgresOn starts a server on an existing data directory, such as
// one restored from a backup of from (a server started by StartPostgres,
// whose roles and password it keeps). The directory is handed to the
// server's OS user. Settings work as for StartPostgres; recovery settings
// go here too. It waits until the server accepts connections, so after a
// recovery until recovery has ended.
func StartPostgresOn(t testing.TB, dataDir string, from *Postgres, cfg PostgresConfig) *Postgres {
	t.Helper()
	settings := mergeSettings(t, cfg)
	p := newPostgres(t, from.account, dataDir, from.BinDir)
	p.User, p.Password = from.User, from.Password
	if err := os.Chmod(dataDir, 0o700); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	err := filepath.WalkDir(dataDir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, p.account.UID, p.account.GID)
	})
	if err != nil {
		t.Fatalf("testenv: hand %s to %s: %v", dataDir, p.OSUser, err)
	}
	p.start(t, settings)
	// pg_ctl -w returns once recovery starts when hot_standby is off (the
	// server says "standby" in its pid file so that pg_ctl does not wait
	// for ever); connections wait for its end.
	p.waitAccepting(t, 10*time.Minute)
	return p
}

// waitAccepting polls every 200 ms until the server takes a connection,
// or fails t after timeout with the end of its log.
func (p *Postgres) waitAccepting(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		conn, err := pgx.Connect(ctx, p.ConnString("postgres"))
		if err == nil {
			_ = conn.Close(ctx)
			cancel()
			return
		}
		cancel()
		if time.Now().After(deadline) {
			t.Fatalf("testenv: PostgreSQL on %s takes no connection after %v: %v\n%s", p.DataDir, timeout, err, logTail(p.LogFile))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// PostgresFor returns the handle of a server on dataDir that something
// else is to start, such as the runtime's Recover, configured from the
// handle's Port (free a moment ago), SocketDir and "127.0.0.1": its roles
// and password are from's, Psql and Connect reach it once it runs, and it is
// stopped in t.Cleanup if it runs then. LogFile is unused.
func PostgresFor(t testing.TB, dataDir string, from *Postgres) *Postgres {
	t.Helper()
	p := newPostgres(t, from.account, dataDir, from.BinDir)
	p.User, p.Password = from.User, from.Password
	p.Port = freePort(t)
	t.Cleanup(func() { p.Stop(t) })
	return p
}

// mergeSettings applies the caller's settings over the defaults.
func mergeSettings(t testing.TB, cfg PostgresConfig) map[string]string {
	t.Helper()
	settings := map[string]string{
		"wal_level":       "replica",
		"archive_mode":    "on",
		"archive_command": "",
		"fsync":           "off",
		"max_wal_senders": "4",
	}
	for k, v := range cfg.Settings {
		k = strings.ToLower(k)
		if !settingName.MatchString(k) {
			t.Fatalf("testenv: invalid PostgreSQL setting name %q", k)
		}
		if reservedSettings[k] {
			t.Fatalf("testenv: PostgreSQL setting %s is managed by testenv", k)
		}
		settings[k] = v
	}
	return settings
}

// newPostgres makes the private folder for the socket and the log, and
// the data directory's place in it unless dataDir is given.
func newPostgres(t testing.TB, acct osAccount, dataDir, binDir string) *Postgres {
	t.Helper()
	base := privateDir(t, "pglogship-pg-")
	if dataDir == "" {
		dataDir = filepath.Join(base, "data")
	}
	p := &Postgres{
		Host:      "127.0.0.1",
		SocketDir: filepath.Join(base, "socket"),
		DataDir:   dataDir,
		BinDir:    binDir,
		User:      acct.Name,
		OSUser:    acct.Name,
		LogFile:   filepath.Join(base, "postgres.log"),
		account:   acct,
		baseDir:   base,
	}
	p.confPath = filepath.Join(dataDir, "pglogship_testenv.conf")
	p.launch = func() ([]byte, error) { return p.pgCtl("start", "-w", "-t", "120", "-l", p.LogFile) }
	mustMkdir(t, p.SocketDir, 0o755)
	mustWriteFile(t, p.LogFile, nil, 0o600)
	// The server writes its log into base, so the whole tree is its own.
	chown(t, acct, base, p.SocketDir, p.LogFile)
	return p
}

// start writes testenv's settings and starts the server on a free port.
func (p *Postgres) start(t testing.TB, settings map[string]string) {
	t.Helper()
	// Registered before start so that a server left running by a failed or
	// timed-out start is stopped too.
	t.Cleanup(func() { p.Stop(t) })

	// The free port can be taken between freePort and bind; try a few.
	const attempts = 3
	for i := 1; ; i++ {
		p.Port = freePort(t)
		mustWriteFile(t, p.confPath, []byte(p.confFile(settings)), 0o600)
		chown(t, p.account, p.confPath)
		out, err := p.launch()
		if err == nil {
			return
		}
		tail := logTail(p.LogFile)
		if i < attempts && strings.Contains(tail, "already in use") {
			t.Logf("testenv: PostgreSQL port %d taken, retrying", p.Port)
			continue
		}
		t.Fatalf("testenv: start PostgreSQL: %v\n%s\n%s", err, out, tail)
	}
}

func (p *Postgres) initdb(t testing.TB, args []string) {
	t.Helper()
	pwfile := filepath.Join(p.baseDir, "pwfile")
	mustWriteFile(t, pwfile, []byte(p.Password+"\n"), 0o600)
	chown(t, p.account, pwfile)
	defer os.Remove(pwfile)
	cmd := commandAs(p.account, filepath.Join(p.BinDir, "initdb"), append([]string{
		"-D", p.DataDir,
		"--auth-local=peer", "--auth-host=scram-sha-256",
		"--pwfile=" + pwfile, "-U", p.User,
		"--no-sync", "-E", "UTF8", "--locale=C"}, args...)...)
	cmd.Dir = p.baseDir // the server user may not be able to enter our cwd
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: initdb as %s: %v\n%s", p.OSUser, err, out)
	}
}

// confFile renders the settings testenv owns plus the defaults and the
// caller's settings, sorted so the file is stable.
func (p *Postgres) confFile(settings map[string]string) string {
	all := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(p.Port),
		"unix_socket_directories": p.SocketDir,
		"logging_collector":       "off", // pg_ctl -l writes the log file
	}
	for k, v := range settings {
		all[k] = v
	}
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# written by internal/testenv\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, quoteConfValue(all[k]))
	}
	return b.String()
}

// quoteConfValue quotes a postgresql.conf value; every parameter type
// accepts a quoted value.
func quoteConfValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, "'", "''")
	return "'" + v + "'"
}

func (p *Postgres) writeDataFile(t testing.TB, name, content string) {
	t.Helper()
	path := filepath.Join(p.DataDir, name)
	mustWriteFile(t, path, []byte(content), 0o600)
	chown(t, p.account, path)
}

// PgCtl runs pg_ctl on the cluster as its OS user (-D is given), for
// tests that stop, start or restart the server themselves.
func (p *Postgres) PgCtl(args ...string) ([]byte, error) { return p.pgCtl(args...) }

// Tool runs one of PostgreSQL's programs in BinDir (pg_checksums,
// pg_controldata, ...) as the server's OS user and returns its output.
func (p *Postgres) Tool(name string, args ...string) ([]byte, error) {
	cmd := commandAs(p.account, filepath.Join(p.BinDir, name), args...)
	cmd.Dir = p.baseDir
	return cmd.CombinedOutput()
}

// WriteDataFile writes a file into the data directory, owned by the
// server's OS user.
func (p *Postgres) WriteDataFile(t testing.TB, name, content string) {
	t.Helper()
	p.writeDataFile(t, name, content)
}

func (p *Postgres) pgCtl(args ...string) ([]byte, error) {
	cmd := commandAs(p.account, filepath.Join(p.BinDir, "pg_ctl"), append([]string{"-D", p.DataDir}, args...)...)
	cmd.Dir = p.baseDir
	return cmd.CombinedOutput()
}

// ConnString returns a URL connecting to database over TCP on loopback
// as the superuser.
func (p *Postgres) ConnString(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(p.User, p.Password),
		Host:     net.JoinHostPort(p.Host, strconv.Itoa(p.Port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Connect opens a connection to database, closed in t.Cleanup.
func (p *Postgres) Connect(t testing.TB, database string) *pgx.Conn {
	t.Helper()
	conn := p.connect(t, database)
	t.Cleanup(func() { closeConn(conn) })
	return conn
}

func (p *Postgres) connect(t testing.TB, database string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.ConnString(database))
	if err != nil {
		t.Fatalf("testenv: connect to PostgreSQL database %q: %v\n%s", database, err, logTail(p.LogFile))
	}
	return conn
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// CreateDatabase creates database name.
func (p *Postgres) CreateDatabase(t testing.TB, name string) {
	t.Helper()
	p.Exec(t, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// Exec runs one statement in database on a short-lived connection.
func (p *Postgres) Exec(t testing.TB, database, sql string, args ...any) {
	t.Helper()
	conn := p.connect(t, database)
	defer closeConn(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("testenv: exec %q in %q: %v", sql, database, err)
	}
}

// Psql runs sql with psql as the server's OS user over the unix socket
// (peer authentication) and returns its unaligned, tuples-only output
// without the trailing newline.
func (p *Postgres) Psql(t testing.TB, database, sql string) string {
	t.Helper()
	cmd := commandAs(p.account, ClientTool(t, p.BinDir, "psql"),
		"-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
		"-h", p.SocketDir, "-p", strconv.Itoa(p.Port), "-d", database, "-c", sql)
	cmd.Dir = p.baseDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: psql %q in %q as %s: %v\n%s", sql, database, p.OSUser, err, out)
	}
	return strings.TrimRight(string(out), "\n")
}

// Stop shuts the server down (fast, then immediate). It is idempotent and
// also runs in t.Cleanup.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.stopped = true
	// No pid file: never started, or already shut down.
	if _, err := os.Stat(filepath.Join(p.DataDir, "postmaster.pid")); errors.Is(err, fs.ErrNotExist) {
		return
	}
	out, err := p.pgCtl("stop", "-m", "fast", "-w", "-t", "60")
	if err == nil {
		return
	}
	out2, err2 := p.pgCtl("stop", "-m", "immediate", "-w", "-t", "30")
	if err2 != nil {
		t.Errorf("testenv: stop PostgreSQL: fast: %v\n%s\nimmediate: %v\n%s\n%s", err, out, err2, out2, logTail(p.LogFile))
	}
}

func mustMkdir(t testing.TB, path string, perm os.FileMode) {
	t.Helper()
	if err := os.Mkdir(path, perm); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// Mkdir applies the umask; the servers need exactly perm.
	if err := os.Chmod(path, perm); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

func mustWriteFile(t testing.TB, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// ClientTool returns the client program name (psql, pgbench) of binDir,
// or, for a release tree without one (the npm registry's have none),
// Debian's newest: these talk to servers of other releases.
func ClientTool(t testing.TB, binDir, name string) string {
	t.Helper()
	if missingIn(binDir, []string{name}) == "" {
		return filepath.Join(binDir, name)
	}
	if dir := newestDebianPGBinDir(); dir != "" && missingIn(dir, []string{name}) == "" {
		return filepath.Join(dir, name)
	}
	return requireBinary(t, name, installPostgres)
}

// Major returns the server's major release, read from the server.
func (p *Postgres) Major(t testing.TB) int {
	t.Helper()
	n, err := strconv.Atoi(p.Psql(t, "postgres", "SHOW server_version_num"))
	if err != nil {
		t.Fatalf("testenv: server_version_num: %v", err)
	}
	return n / 10000
}
