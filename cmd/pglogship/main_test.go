package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest/local"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/hypervisor/physical"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/session/postgres"
	"github.com/pglogship/pglogship/walbackup"
)

const testJob = "CLI Job"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the command once per test run, as operators get it.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pglogship-cli-")
		if err != nil {
			buildErr = err
			return
		}
		if err := os.Chmod(dir, 0o755); err != nil { // the local runtime may run as another user
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "pglogship")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// fixture is a real PostgreSQL, a file-system repository and a
// configuration file naming them; the store lives in the same server.
// Every output of the command is kept, to be searched for the secret.
type fixture struct {
	pg      *testenv.Postgres
	dir     string
	config  string
	repo    string
	walDir  string
	storeDS string // the store's connection string: holds the password

	mu      sync.Mutex
	out     []string
	secrets []string // none may appear in any output
	env     []string // more environment for the command
	key     []byte   // encrypts the job's bundles and images
}

func newFixture(t *testing.T, interval string) *fixture {
	t.Helper()
	return newFixtureOn(t, interval, "")
}

// newFixtureOn is newFixture with the [repository] section given (empty:
// an fs repository in the fixture's folder).
func newFixtureOn(t *testing.T, interval, repoSection string) *fixture {
	t.Helper()
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{Settings: map[string]string{"track_commit_timestamp": "on"}})
	return newFixtureWith(t, pg, interval, repoSection)
}

// newFixtureWith is newFixtureOn on a server of the caller's.
func newFixtureWith(t *testing.T, pg *testenv.Postgres, interval, repoSection string) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{pg: pg, dir: dir, repo: filepath.Join(dir, "repository"), walDir: filepath.Join(testenv.UserDir(t, pg.OSUser), "wal"),
		storeDS: pg.ConnString("postgres"), config: filepath.Join(dir, "pglogship.toml")}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "store.dsn"), []byte(f.storeDS+"\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pg.password"), []byte(pg.Password+"\n"), 0o600))
	if repoSection == "" {
		repoSection = fmt.Sprintf("[repository]\ntype = \"fs\"\npath = %q\n", f.repo)
	}
	cfg := fmt.Sprintf(`# written by the test
holder = "cli-test"
lease_ttl = "3s"

[store]
dsn_file = %q

%s

[[job]]
name = %q
interval = %q
wal_dir = %q
key_env = "PGLOGSHIP_TEST_KEY"

[job.guest]
type = "local"

[job.guest.postgres]
host = "127.0.0.1"
port = %d
user = %q
password_file = %q

[[job.machine]]
id = "db1"
`, filepath.Join(dir, "store.dsn"), repoSection, testJob, interval, f.walDir, pg.Port, pg.User, filepath.Join(dir, "pg.password"))
	require.NoError(t, os.WriteFile(f.config, []byte(cfg), 0o600))
	f.key = make([]byte, 32)
	_, err := rand.Read(f.key)
	require.NoError(t, err)
	f.env = []string{"PGLOGSHIP_TEST_KEY=" + hex.EncodeToString(f.key)}
	f.secrets = []string{pg.Password, hex.EncodeToString(f.key)}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, o := range f.out {
			for _, secret := range f.secrets {
				assert.NotContains(t, o, secret, "a secret appears in the command's output or logs")
			}
		}
	})
	return f
}

// cli runs the command with the fixture's configuration.
func (f *fixture) cli(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append(os.Environ(), envConfig+"="+f.config)
	cmd.Env = append(cmd.Env, f.env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	var xe *exec.ExitError
	if errors.As(err, &xe) {
		code = xe.ExitCode()
	} else {
		require.NoError(t, err)
	}
	f.keep(o.String(), e.String())
	t.Logf("pglogship %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, o.String(), e.String())
	return o.String(), e.String(), code
}

func (f *fixture) keep(s ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.out = append(f.out, s...)
}

// job is the configured job, made in the test process with the library,
// for what the command does not do (a parent session on demand).
func (f *fixture) job(t *testing.T, store session.Store) *walbackup.Job {
	t.Helper()
	d, err := local.New(local.Config{Binary: binary(t), Args: []string{runtimeArg}, Logger: testenv.Logger(t),
		Conn: runtime.ConnConfig{Host: f.pg.Host, Port: f.pg.Port, User: f.pg.User, Password: f.pg.Password}})
	require.NoError(t, err)
	repo, err := fs.New(fs.Config{Root: f.repo})
	require.NoError(t, err)
	key, err := bundle.NewKey(f.key)
	require.NoError(t, err)
	hv, err := physical.New(physical.Config{Machines: []physical.Machine{{ID: "db1"}}, Guests: d, Key: key, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	j, err := walbackup.NewJob(walbackup.Config{Name: testJob, Machines: []walbackup.Machine{{ID: "db1"}}, LogBackupInterval: time.Hour,
		WALDir: f.walDir, Hypervisor: hv, Guests: d, Repository: repo, Sessions: store, Key: key, Clock: clock.New(), Logger: testenv.Logger(t),
		FullImageEvery: 1}) // full, incremental, full: expiry can free the first two
	require.NoError(t, err)
	return j
}

func (f *fixture) store(t *testing.T) *postgres.Store {
	t.Helper()
	st, err := postgres.Open(context.Background(), postgres.Config{ConnString: f.storeDS, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	return st
}

// A restore point and three batches of rows, all shipped, then the
// command: info --json against the session store, sessions, check,
// verify, expire --dry-run, restore --time row for row, a restore in
// place refused without --force, and a drill.
func TestCommandRestores(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "1h")
	ctx := context.Background()
	pg := f.pg
	store := f.store(t)

	_, _, code := f.cli(t, "check")
	require.Equal(t, exitOK, code, "check passes before anything ran")

	job := f.job(t, store)
	target := threeBatches(t, pg, job)

	t.Run("info", func(t *testing.T) {
		stdout, _, code := f.cli(t, "info", "--json")
		require.Equal(t, exitOK, code)
		var info infoJSON
		require.NoError(t, json.Unmarshal([]byte(stdout), &info))
		require.Len(t, info.Jobs, 1)
		j := info.Jobs[0]
		assert.Equal(t, testJob, j.Name)
		assert.Equal(t, testJob+" PostgreSQL Log Backup", j.Child)
		assert.Contains(t, info.Store, "REDACTED")
		for name, got := range map[string]*sessionJSON{testJob: j.Parent, walbackup.ChildJobName(testJob): j.ChildLast} {
			want, err := session.Latest(ctx, store, name, "")
			require.NoError(t, err)
			require.NotNil(t, got, name)
			assert.Equal(t, want.ID, got.ID, name)
			assert.Equal(t, string(want.State), got.State, name)
			assert.Equal(t, want.Counters.Files, got.Files, name)
			assert.Equal(t, want.Counters.Bytes, got.Bytes, name)
			assert.Equal(t, want.Counters.LastSegment, got.LastSegment, name)
		}
		require.Len(t, j.Machines, 1)
		require.Len(t, j.Machines[0].Instances, 1)
		inst := j.Machines[0].Instances[0]
		assert.Equal(t, pg.Psql(t, "postgres", "SELECT system_identifier FROM pg_control_system()"), inst.SystemID)
		require.Len(t, inst.RestorePoints, 1)
		assert.True(t, inst.Chain.OK)
		require.NotNil(t, inst.Restorable)
		want, err := parseTime(target)
		require.NoError(t, err)
		assert.True(t, inst.Restorable.ToTime.After(want), "the restorable interval reaches past the target")

		human, _, code := f.cli(t, "info")
		require.Equal(t, exitOK, code)
		assert.Contains(t, human, "restorable from")
		assert.Contains(t, human, inst.RestorePoints[0].ID)
	})

	t.Run("sessions", func(t *testing.T) {
		stdout, _, code := f.cli(t, "sessions", "--json")
		require.Equal(t, exitOK, code)
		var got []sessionJSON
		require.NoError(t, json.Unmarshal([]byte(stdout), &got))
		var ids []string
		for _, s := range got {
			ids = append(ids, s.ID)
		}
		for _, name := range []string{testJob, walbackup.ChildJobName(testJob)} {
			p, err := store.List(ctx, session.Query{Job: name})
			require.NoError(t, err)
			for _, s := range p.Sessions {
				assert.Contains(t, ids, s.ID)
			}
		}
	})

	t.Run("check verify expire", func(t *testing.T) {
		f.checkPasses(t)
		stdout, _, code := f.cli(t, "verify", "--json")
		require.Equal(t, exitOK, code)
		var v []verifyJSON
		require.NoError(t, json.Unmarshal([]byte(stdout), &v))
		require.Len(t, v, 1)
		assert.True(t, v[0].OK)
		assert.Equal(t, 1, v[0].RestorePoints)
		kept := f.env
		f.env = []string{"PGLOGSHIP_TEST_KEY=" + strings.Repeat("ab", 32)}
		_, _, code = f.cli(t, "verify")
		f.env = kept
		assert.NotEqual(t, exitOK, code, "the repository is encrypted: another key cannot read it")
		stdout, _, code = f.cli(t, "expire", "--dry-run", "--json")
		require.Equal(t, exitOK, code)
		assert.Contains(t, stdout, `"dry_run": true`)
	})

	t.Run("restore to a time", func(t *testing.T) {
		dir := filepath.Join(testenv.UserDir(t, pg.OSUser), "restored")
		restored := testenv.PostgresFor(t, dir, pg)
		stdout, stderr, code := f.cli(t, "restore", "--time", target, "--to", dir, "--port", strconv.Itoa(restored.Port),
			"--socket-dir", restored.SocketDir, "--os-user", pg.OSUser, "--listen", "127.0.0.1", "--json")
		require.Equal(t, exitOK, code)
		assert.Contains(t, stderr, "image restore: ", "progress in plain lines: stdout is no terminal")
		assert.Contains(t, stderr, "fetched WAL 0000000", "the WAL fetched for the recovery")
		var res restoreJSON
		require.NoError(t, json.Unmarshal([]byte(stdout), &res))
		assert.True(t, res.Promoted)
		assert.Equal(t, "1:100 2:100", restored.Psql(t, "postgres",
			"SELECT string_agg(batch || ':' || c, ' ' ORDER BY batch) FROM (SELECT batch, count(*) c FROM batches GROUP BY batch) x"),
			"exactly the rows committed by %s", target)
		restored.Stop(t)
	})

	t.Run("progress bar on a terminal", func(t *testing.T) {
		script, err := exec.LookPath("script")
		require.NoError(t, err, "script (a terminal for the command) is missing: apt-get install -y bsdutils")
		dir := filepath.Join(t.TempDir(), "image")
		cmd := exec.Command(script, "-qec", strings.Join([]string{binary(t), "restore", "--consistent", "--no-start", "--to", dir}, " "), "/dev/null")
		cmd.Env = append(append(os.Environ(), envConfig+"="+f.config), f.env...)
		out, err := cmd.CombinedOutput()
		f.keep(string(out))
		t.Logf("on a terminal:\n%q", out)
		require.NoError(t, err)
		assert.Contains(t, string(out), "image restore 100%", "a bar, not plain lines")
		assert.Regexp(t, `\([0-9.]+/[0-9.]+ [kMG]?B, [0-9.]+ [kMG]?B/s\) \[[0-9]+s:[0-9]+s\]`, string(out),
			"bytes done of the total, the rate, elapsed time and ETA")
		assert.FileExists(t, filepath.Join(dir, "PG_VERSION"))
	})

	t.Run("in place refused without force", func(t *testing.T) {
		before, err := os.ReadDir(filepath.Dir(pg.DataDir))
		require.NoError(t, err)
		_, stderr, code := f.cli(t, "restore", "--in-place")
		assert.Equal(t, exitRefused, code)
		assert.Contains(t, stderr, "--force")
		assert.Contains(t, stderr, "nothing was changed")
		after, err := os.ReadDir(filepath.Dir(pg.DataDir))
		require.NoError(t, err)
		assert.Equal(t, before, after, "nothing moved aside")
		assert.Equal(t, "300", pg.Psql(t, "postgres", "SELECT count(*) FROM batches"), "the running instance is untouched")
	})

	t.Run("drill", func(t *testing.T) {
		dir := filepath.Join(testenv.UserDir(t, pg.OSUser), "scratch")
		scratch := testenv.PostgresFor(t, dir, pg)
		stdout, _, code := f.cli(t, "drill", "--scratch", dir, "--port", strconv.Itoa(scratch.Port), "--socket-dir", scratch.SocketDir,
			"--os-user", pg.OSUser, "--listen", "127.0.0.1", "--sql", "SELECT count(*) FROM batches")
		require.Equal(t, exitOK, code)
		assert.Contains(t, stdout, "PASSED")
		assert.NoDirExists(t, dir)
	})

	t.Run("export", func(t *testing.T) {
		dir := filepath.Join(testenv.UserDir(t, pg.OSUser), "scratch")
		scratch := testenv.PostgresFor(t, dir, pg)
		out := filepath.Join(testenv.UserDir(t, pg.OSUser), "dumps")
		stdout, stderr, code := f.cli(t, "export", "--time", target, "--database", "postgres", "--out", out, "--scratch", dir,
			"--port", strconv.Itoa(scratch.Port), "--socket-dir", scratch.SocketDir, "--os-user", pg.OSUser, "--listen", "127.0.0.1", "--json")
		require.Equal(t, exitOK, code, "%s", stderr)
		var res exportJSON
		require.NoError(t, json.Unmarshal([]byte(stdout), &res))
		require.Len(t, res.Dumps, 1)
		assert.Equal(t, filepath.Join(out, "postgres"), res.Dumps[0].Dir)
		assert.FileExists(t, filepath.Join(out, "postgres", "toc.dat"))
		assert.NoDirExists(t, dir, "the scratch copy is removed")

		// The restores, the drill and the export are in the store.
		stdout, _, code = f.cli(t, "sessions", "--kind", "restore", "--json")
		require.Equal(t, exitOK, code)
		var sessions []sessionJSON
		require.NoError(t, json.Unmarshal([]byte(stdout), &sessions))
		require.NotEmpty(t, sessions)
		assert.Equal(t, "restore", sessions[0].Kind)
		assert.Equal(t, "success", sessions[0].State)
		assert.Contains(t, sessions[0].Result, "exported [postgres] into "+out)
		_, _, code = f.cli(t, "sessions", "--kind", "cousin")
		assert.Equal(t, exitUsage, code)
	})

	t.Run("publish and unpublish", func(t *testing.T) {
		cache := filepath.Join(testenv.UserDir(t, pg.OSUser), "published")
		published := testenv.PostgresFor(t, filepath.Join(cache, "data"), pg)
		stdout, stderr, code := f.cli(t, "publish", "--time", target, "--cache", cache, "--port", strconv.Itoa(published.Port),
			"--socket-dir", published.SocketDir, "--os-user", pg.OSUser, "--listen", "127.0.0.1")
		require.Equal(t, exitOK, code, "%s", stderr)
		assert.Contains(t, stdout, "unpublish with: pglogship unpublish --cache "+cache)
		assert.Equal(t, "1:100 2:100", published.Psql(t, "postgres",
			"SELECT string_agg(batch || ':' || c, ' ' ORDER BY batch) FROM (SELECT batch, count(*) c FROM batches GROUP BY batch) x"),
			"exactly the rows committed by %s", target)
		stdout, _, code = f.cli(t, "unpublish", "--cache", cache)
		require.Equal(t, exitOK, code)
		assert.Contains(t, stdout, "unpublished "+cache)
		assert.NoDirExists(t, cache)
		_, stderr, code = f.cli(t, "unpublish", "--cache", cache)
		assert.NotEqual(t, exitOK, code)
		assert.Contains(t, stderr, "not a publication")
		_, _, code = f.cli(t, "publish", "--cache", cache)
		assert.Equal(t, exitUsage, code, "no port")
		_, stderr, code = f.cli(t, "restore", "--onto", "nosuch", "--to", cache, "--port", "5999")
		assert.Equal(t, exitUsage, code)
		assert.Contains(t, stderr, `has no machine "nosuch" (machines: db1)`)
		assert.NoDirExists(t, cache)
	})

	// Last: two more restore points (an incremental one, then a full one),
	// and a file (given with --config, over the environment's) that keeps
	// one.
	t.Run("expire", func(t *testing.T) {
		require.NoError(t, job.Enable(ctx))
		require.NoError(t, job.StartParent(ctx))
		require.NoError(t, job.StartParent(ctx))
		require.NoError(t, job.Disable(ctx))
		restorePoints := func() []string {
			stdout, _, code := f.cli(t, "info", "--json")
			require.Equal(t, exitOK, code)
			var info infoJSON
			require.NoError(t, json.Unmarshal([]byte(stdout), &info))
			var ids []string
			for _, rp := range info.Jobs[0].Machines[0].Instances[0].RestorePoints {
				ids = append(ids, rp.ID)
			}
			return ids
		}
		before := restorePoints()
		require.Len(t, before, 3)
		keepOne := filepath.Join(f.dir, "keep-one.toml")
		require.NoError(t, os.WriteFile(keepOne, []byte(mustRead(t, f.config)+"\n[job.retention]\nrestore_points = 1\n"), 0o600))
		stdout, _, code := f.cli(t, "--config", keepOne, "expire", "--dry-run", "--json")
		require.Equal(t, exitOK, code)
		var would []expireJSON
		require.NoError(t, json.Unmarshal([]byte(stdout), &would))
		require.Len(t, would, 1)
		assert.True(t, would[0].DryRun)
		assert.Equal(t, before[:2], would[0].RestorePoints, "the older full one and the incremental one on it")
		assert.NotEmpty(t, would[0].Bundles, "the WAL only they need")
		assert.Equal(t, before, restorePoints(), "a dry run removes nothing")

		stdout, _, code = f.cli(t, "--config", keepOne, "expire", "--json")
		require.Equal(t, exitOK, code)
		var did []expireJSON
		require.NoError(t, json.Unmarshal([]byte(stdout), &did))
		assert.Equal(t, would[0].RestorePoints, did[0].RestorePoints)
		assert.Equal(t, would[0].Bundles, did[0].Bundles)
		assert.Equal(t, before[2:], restorePoints())
	})
}

// run ships WAL in a child process, serves metrics that move as it ships,
// and stops cleanly on SIGTERM.
func TestCommandRunShipsWAL(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "1m")
	pg := f.pg
	store := f.store(t)
	addr := freeAddr(t)
	cmd := exec.Command(binary(t), "run", "--metrics", addr)
	cmd.Env = append(append(os.Environ(), envConfig+"="+f.config), f.env...)
	var o, e syncBuffer
	cmd.Stdout, cmd.Stderr = &o, &e
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		f.keep(o.String(), e.String())
		t.Logf("run's stderr:\n%s", e.String())
	})

	// Before the first interval: the job runs, nothing shipped yet.
	var first map[string]*dto.MetricFamily
	require.Eventually(t, func() bool {
		first = scrape(t, addr)
		return value(first, "pglogship_runner_jobs_running") == 1
	}, 30*time.Second, 200*time.Millisecond, "the Runner started the job")
	assert.Zero(t, value(first, "pglogship_wal_shipped_bytes_total"))
	assert.NotContains(t, first, "pglogship_rpo_seconds", "no RPO before anything shipped")

	pg.Exec(t, "postgres", "CREATE TABLE shipped (n int); INSERT INTO shipped SELECT generate_series(1, 1000)")
	last := pg.SwitchWAL(t, 2)
	var shipped map[string]*dto.MetricFamily
	require.Eventually(t, func() bool {
		shipped = scrape(t, addr)
		return value(shipped, "pglogship_wal_shipped_bytes_total") > 0
	}, 90*time.Second, 500*time.Millisecond, "the first interval ships")
	assert.GreaterOrEqual(t, value(shipped, "pglogship_wal_shipped_bytes_total"), float64(2*16<<20), "two segments at least")
	rpo := value(shipped, "pglogship_rpo_seconds")
	assert.Less(t, rpo, 10.0, "just shipped: the RPO is small")
	time.Sleep(1500 * time.Millisecond)
	later := value(scrape(t, addr), "pglogship_rpo_seconds")
	assert.Greater(t, later, rpo, "the RPO lag grows until the next ship")
	t.Logf("metrics: shipped bytes 0 -> %.0f, RPO absent -> %.3f s -> %.3f s 1.5 s later",
		value(shipped, "pglogship_wal_shipped_bytes_total"), rpo, later)

	child, err := session.Latest(context.Background(), store, walbackup.ChildJobName(testJob), session.KindChild)
	require.NoError(t, err)
	assert.Equal(t, session.StateWorking, child.State)
	assert.GreaterOrEqual(t, child.Counters.LastSegment, last, "the store records the shipped segments")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		require.NoError(t, err, "run exits 0 on SIGTERM")
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop within 30 s of SIGTERM")
	}
	child, err = store.Get(context.Background(), child.ID)
	require.NoError(t, err)
	assert.Equal(t, session.StateStopped, child.State, "the child session ended")
	assert.Contains(t, e.String(), "stopped")
}

// An S3 repository whose secret key comes from the environment: check
// writes its probe into the bucket and leaves nothing; info and check show
// the key redacted, and no output carries it.
func TestCommandS3Repository(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t)
	m := testenv.StartMinIO(t)
	bucket := m.NewBucket(t)
	f := newFixtureOn(t, "1h", fmt.Sprintf(`[repository]
type = "s3"
endpoint = %q
bucket = %q
prefix = "site1"
region = "us-east-1"
insecure = true
access_key = %q
secret_key_env = "PGLOGSHIP_TEST_S3_SECRET"
`, m.Endpoint, bucket, m.AccessKey))
	f.env = append(f.env, "PGLOGSHIP_TEST_S3_SECRET="+m.SecretKey)
	f.secrets = append(f.secrets, m.SecretKey)

	stdout, _, code := f.cli(t, "check", "--json")
	require.Equal(t, exitOK, code)
	var checks []checkJSON
	require.NoError(t, json.Unmarshal([]byte(stdout), &checks))
	require.Len(t, checks, 3)
	for _, c := range checks {
		assert.True(t, c.OK, "%+v", c)
	}
	assert.Contains(t, checks[1].Target, "secret key REDACTED")
	assert.Empty(t, m.Keys(t, bucket), "the probe object is removed")

	human, _, code := f.cli(t, "info")
	require.Equal(t, exitOK, code)
	assert.Contains(t, human, "secret key REDACTED")

	f.env = append(f.env, "PGLOGSHIP_TEST_S3_SECRET=wrong-"+m.SecretKey) // the last one counts
	stdout, _, code = f.cli(t, "check", "--json")
	assert.Equal(t, exitProblems, code, "a wrong key fails the repository check")
	checks = nil
	require.NoError(t, json.Unmarshal([]byte(stdout), &checks))
	assert.False(t, checks[1].OK)
}

// Bad flags and a bad configuration file: the exit code says which, the
// message what to fix.
func TestCommandErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	require.NoError(t, os.WriteFile(good, []byte(`[store]
dsn_env = "NO_SUCH_DSN"
[repository]
type = "fs"
path = "/tmp/x"
[[job]]
name = "j"
[job.guest]
type = "local"
[job.guest.postgres]
user = "postgres"
[[job.machine]]
id = "db1"
`), 0o600))
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	for _, c := range []struct {
		name string
		args []string
		code int
		says []string
	}{
		{"unknown flag", []string{"info", "--bogus"}, exitUsage, []string{"unknown flag: --bogus", "--help"}},
		{"unknown command", []string{"backupp"}, exitUsage, []string{"unknown command", "backupp"}},
		{"bad time", []string{"-c", good, "restore", "--time", "yesterday", "--to", "/tmp/r", "--port", "5999"}, exitUsage,
			[]string{"--time", "RFC 3339"}},
		{"two targets", []string{"-c", good, "restore", "--time", "2026-01-01T00:00:00Z", "--xid", "7", "--to", "/tmp/r"}, exitUsage,
			[]string{"--time and --xid exclude each other"}},
		{"no destination", []string{"-c", good, "restore"}, exitUsage, []string{"--to DIR", "--in-place --force"}},
		{"bad lsn", []string{"-c", good, "restore", "--lsn", "x", "--to", "/tmp/r", "--port", "5999"}, exitUsage, []string{"--lsn", "0/3000060"}},
		{"no config", []string{"info"}, exitConfig, []string{"--config", envConfig}},
		{"syntax", []string{"-c", write("syntax.toml", "holder = \"a\"\nlease_ttl = \n"), "info"}, exitConfig,
			[]string{"syntax.toml:2:"}},
		{"unknown key", []string{"-c", write("key.toml", "[repository]\ntype = \"fs\"\npaht = \"/x\"\n"), "info"}, exitConfig,
			[]string{"unknown key repository.paht"}},
		{"bad duration", []string{"-c", write("dur.toml", "lease_ttl = \"soon\"\n"), "info"}, exitConfig,
			[]string{"dur.toml:1:", "lease_ttl", "15m"}},
		{"no repository", []string{"-c", write("norepo.toml", "[store]\ndsn_env = \"X\"\n"), "info"}, exitConfig,
			[]string{"[repository] needs type"}},
		{"bad schedule", []string{"-c", write("sched.toml", strings.Replace(mustRead(t, good), "name = \"j\"", "name = \"j\"\nschedule = \"hourly\"", 1)),
			"info"}, exitConfig, []string{`job "j": schedule`, "daily HH:MM"}},
		{"secret not set", []string{"-c", good, "info"}, exitConfig, []string{"NO_SUCH_DSN is not set"}},
		{"interval too short", []string{"-c", write("iv.toml", strings.Replace(mustRead(t, good), "name = \"j\"", "name = \"j\"\ninterval = \"30s\"", 1)),
			"info"}, exitConfig, []string{`job "j": interval 30s`, "1m to 8h0m0s"}},
		{"qemu without work_dir", []string{"-c", write("qemu1.toml", mustRead(t, good)+"qmp_socket = \"/run/q.sock\"\n[job.hypervisor]\ntype = \"qemu\"\n"),
			"info"}, exitConfig, []string{`job "j": [job.hypervisor] type qemu needs work_dir`}},
		{"qemu machine without qmp_socket", []string{"-c", write("qemu2.toml", mustRead(t, good)+"[job.hypervisor]\ntype = \"qemu\"\nwork_dir = \"/tmp/w\"\n"),
			"info"}, exitConfig, []string{`machine "db1" needs qmp_socket`, "-qmp unix:PATH"}},
		{"qmp_socket on a physical job", []string{"-c", write("qemu3.toml", mustRead(t, good)+"qmp_socket = \"/run/q.sock\"\n"),
			"info"}, exitConfig, []string{`machine "db1": qmp_socket, guest_agent_socket and node are for QEMU VMs`, `type = "qemu"`}},
		{"unknown hypervisor", []string{"-c", write("qemu4.toml", mustRead(t, good)+"[job.hypervisor]\ntype = \"xen\"\n"),
			"info"}, exitConfig, []string{`[job.hypervisor] type "xen": use physical or qemu`}},
		// The environment overrides the file; the store's password stays out of the error.
		{"store unreachable", []string{"-c", good, "info"}, exitFailed,
			[]string{"session store (host=127.0.0.1 port=1 user=pglogship dbname=db password=REDACTED)", "check [store]"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(binary(t), c.args...)
			cmd.Env = append(os.Environ(), envConfig+"=")
			if c.name == "store unreachable" {
				cmd.Env = append(cmd.Env, envStoreDSN+"=postgres://pglogship:s3cret-in-the-env@127.0.0.1:1/db?connect_timeout=5")
			}
			var o, e bytes.Buffer
			cmd.Stdout, cmd.Stderr = &o, &e
			err := cmd.Run()
			var xe *exec.ExitError
			require.ErrorAs(t, err, &xe)
			assert.Equal(t, c.code, xe.ExitCode(), e.String())
			for _, s := range c.says {
				assert.Contains(t, e.String(), s)
			}
			assert.NotContains(t, o.String()+e.String(), "s3cret")
		})
	}
}

// A QEMU job from the file: its parent session, run by the job the
// command builds from the file, images a VM's disk through the QMP monitor
// named there (a bare QEMU: no guest OS, so PostgreSQL in backup mode
// around the snapshot is the local one). info lists the restore point,
// verify reads the image, and restore --no-start writes the disk exactly
// as it was at the snapshot; what needs a booted VM is refused.
func TestCommandQEMUJob(t *testing.T) {
	// Not parallel: openInProcess sets the environment.
	f := newFixture(t, "1h")
	ctx := context.Background()
	q := testenv.StartBareQEMU(t, testenv.BareQEMUConfig{DiskSize: 64 << 20})
	q.Write(t, 0xa5, 0, 4<<20)
	extra := fmt.Sprintf("qmp_socket = %q\nnode = %q\n\n[job.hypervisor]\ntype = \"qemu\"\nwork_dir = %q\n", q.QMPSocket, q.Node, t.TempDir())
	cfg, err := os.OpenFile(f.config, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = cfg.WriteString(extra)
	require.NoError(t, err)
	require.NoError(t, cfg.Close())
	e := f.openInProcess(t)
	require.Len(t, e.jobs, 1)
	job := e.jobs[0].job
	f.pg.Exec(t, "postgres", "CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 100)")
	require.NoError(t, job.Enable(ctx))
	require.NoError(t, job.StartParent(ctx))
	atSnapshot := filepath.Join(t.TempDir(), "at-snapshot.qcow2")
	q.CopyDisk(t, atSnapshot) // the VM is paused: nothing was written since
	q.Write(t, 0x5a, 1<<20, 1<<20)
	f.pg.SwitchWAL(t, 1)
	require.NoError(t, job.Disable(ctx))
	e.Close()

	stdout, _, code := f.cli(t, "info", "--json")
	require.Equal(t, exitOK, code)
	var info infoJSON
	require.NoError(t, json.Unmarshal([]byte(stdout), &info))
	require.Len(t, info.Jobs, 1)
	require.Len(t, info.Jobs[0].Machines, 1)
	require.Len(t, info.Jobs[0].Machines[0].Instances, 1)
	inst := info.Jobs[0].Machines[0].Instances[0]
	require.Len(t, inst.RestorePoints, 1)
	assert.True(t, inst.Chain.OK)

	_, _, code = f.cli(t, "verify")
	require.Equal(t, exitOK, code, "verify reads the disk image")

	restored := filepath.Join(t.TempDir(), "restored.qcow2")
	_, _, code = f.cli(t, "restore", "--to", restored, "--no-start")
	require.Equal(t, exitOK, code)
	assert.True(t, q.Identical(t, restored, atSnapshot), "the restored disk is the disk at the snapshot")
	assert.False(t, q.Identical(t, restored, q.Disk), "and not the disk as written after it")

	for _, args := range [][]string{
		{"restore", "--to", filepath.Join(t.TempDir(), "x"), "--port", "5999"},
		{"drill", "--scratch", filepath.Join(t.TempDir(), "d")},
		{"publish", "--cache", filepath.Join(t.TempDir(), "p"), "--port", "5999"},
	} {
		_, stderr, code := f.cli(t, args...)
		assert.Equal(t, exitUsage, code, args)
		assert.Contains(t, stderr, "images QEMU VMs", args)
		assert.Contains(t, stderr, "--no-start", args)
	}
}

// An SSH guest and an SFTP repository, both through a real OpenSSH with
// verified host keys: check deploys the runtime (this command, sent over
// SSH) and probes the SFTP store, the job the command builds takes a
// restore point and ships WAL into it over both, and info, verify and a
// restore of the image to a time read it back.
func TestCommandSSHGuestAndSFTPRepository(t *testing.T) {
	// Not parallel: openInProcess sets the environment.
	testenv.SkipIfShort(t)
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{Settings: map[string]string{"track_commit_timestamp": "on"}})
	sshd := testenv.StartSSHD(t, testenv.SSHDConfig{User: pg.OSUser})
	home := testenv.UserDir(t, pg.OSUser)
	repoRoot := filepath.Join(home, "sftp-repo")
	f := newFixtureWith(t, pg, "1h", fmt.Sprintf("[repository]\ntype = \"sftp\"\naddress = %q\nuser = %q\nkey_file = %q\nknown_hosts = %q\npath = %q\n",
		sshd.Addr, sshd.User, sshd.ClientKeyFile, sshd.KnownHostsFile, repoRoot))
	conf := mustRead(t, f.config)
	for old, new := range map[string]string{
		"[job.guest]\ntype = \"local\"\n": "[job.guest]\ntype = \"ssh\"\n",
		"[[job.machine]]\nid = \"db1\"\n": fmt.Sprintf("[job.guest.ssh]\nuser = %q\nkey_file = %q\nknown_hosts = %q\nbase_dir = %q\n\n[[job.machine]]\nid = \"db1\"\naddress = %q\n",
			sshd.User, sshd.ClientKeyFile, sshd.KnownHostsFile, filepath.Join(home, "runtimes"), sshd.Addr),
	} {
		require.Equal(t, 1, strings.Count(conf, old), old)
		conf = strings.Replace(conf, old, new, 1)
	}
	require.NoError(t, os.WriteFile(f.config, []byte(conf), 0o600))

	f.checkPasses(t)

	e := f.openInProcess(t)
	target := threeBatches(t, pg, e.jobs[0].job)
	e.Close()
	var objects []string
	require.NoError(t, filepath.WalkDir(repoRoot, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			objects = append(objects, strings.TrimPrefix(p, repoRoot+"/"))
		}
		return err
	}))
	t.Logf("in the SFTP server's folder: %q", objects)
	var restorePoints, walBundles int
	for _, o := range objects {
		switch {
		case strings.Contains(o, "/restorepoints/") && strings.HasSuffix(o, "/manifest.json"):
			restorePoints++
		case strings.Contains(o, "/wal/") && strings.HasSuffix(o, ".bundle"):
			walBundles++
		}
	}
	assert.Equal(t, 1, restorePoints, "the image went into the SFTP server's folder")
	assert.Positive(t, walBundles, "and WAL shipped over SSH")

	stdout, _, code := f.cli(t, "info", "--json")
	require.Equal(t, exitOK, code)
	var info infoJSON
	require.NoError(t, json.Unmarshal([]byte(stdout), &info))
	inst := info.Jobs[0].Machines[0].Instances[0]
	require.Len(t, inst.RestorePoints, 1)
	require.NotNil(t, inst.Restorable)
	want, err := parseTime(target)
	require.NoError(t, err)
	assert.True(t, inst.Restorable.ToTime.After(want), "the restorable interval reaches past the target")

	_, _, code = f.cli(t, "verify")
	require.Equal(t, exitOK, code, "verify reads everything back over SFTP")
	// A physical image is restored on the host running pglogship
	// (walbackup.RestoreTo.Image), here the guest's own machine.
	dir := filepath.Join(t.TempDir(), "image")
	_, _, code = f.cli(t, "restore", "--time", target, "--to", dir, "--no-start")
	require.Equal(t, exitOK, code)
	assert.Equal(t, pg.Psql(t, "postgres", "SHOW server_version_num")[:2], strings.TrimSpace(mustRead(t, filepath.Join(dir, "PG_VERSION"))))
	assert.FileExists(t, filepath.Join(dir, "global", "pg_control"))
}

// openInProcess opens the configuration's store, repository and jobs in
// this process, as the command does, for what it does not do (a parent
// session on demand). Its guests run the built command as the runtime,
// and the fixture's environment is set for the test (so it cannot be
// parallel). What it logs is kept for the secret search.
func (f *fixture) openInProcess(t *testing.T) *env {
	t.Helper()
	for _, kv := range f.env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	var logs syncBuffer
	t.Cleanup(func() { f.keep(logs.String()) })
	g := &globals{config: f.config, stdout: &logs, stderr: &logs, runtimeBinary: binary(t)}
	e, err := g.open(context.Background(), slog.LevelInfo, nil, nil)
	require.NoError(t, err)
	return e
}

// checkPasses runs check --json: the store, the repository and the one
// guest all pass.
func (f *fixture) checkPasses(t *testing.T) {
	t.Helper()
	stdout, _, code := f.cli(t, "check", "--json")
	require.Equal(t, exitOK, code)
	var checks []checkJSON
	require.NoError(t, json.Unmarshal([]byte(stdout), &checks))
	require.Len(t, checks, 3, "store, repository, one guest")
	for _, c := range checks {
		assert.True(t, c.OK, "%+v", c)
	}
}

// threeBatches enables job and writes three batches of 100 rows into
// table batches: the first before a restore point, the second after it and
// before the returned time, the third after that time; then it disables
// job, whose last ship leaves everything archived in the repository.
func threeBatches(t *testing.T, pg *testenv.Postgres, job *walbackup.Job) (target string) {
	t.Helper()
	ctx := context.Background()
	pg.Exec(t, "postgres", "CREATE TABLE batches (batch int, n int)")
	require.NoError(t, job.Enable(ctx))
	pg.Exec(t, "postgres", "INSERT INTO batches SELECT 1, generate_series(1, 100)")
	require.NoError(t, job.StartParent(ctx))
	pg.Exec(t, "postgres", "INSERT INTO batches SELECT 2, generate_series(1, 100)")
	target = pg.Psql(t, "postgres", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
	time.Sleep(10 * time.Millisecond) // batch 3 commits strictly after the target
	pg.Exec(t, "postgres", "INSERT INTO batches SELECT 3, generate_series(1, 100)")
	pg.SwitchWAL(t, 1)
	require.NoError(t, job.Disable(ctx))
	return target
}

func mustRead(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// scrape reads the metrics endpoint with the Prometheus text parser; nil
// while it does not answer.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return mf
}

// value sums a metric family's samples (0 when absent).
func value(mf map[string]*dto.MetricFamily, name string) float64 {
	f, ok := mf[name]
	if !ok {
		return 0
	}
	var sum float64
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		}
	}
	return sum
}

// syncBuffer collects output from several goroutines.
type syncBuffer = testenv.SyncBuffer
