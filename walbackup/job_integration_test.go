package walbackup_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest/runtime"
	gssh "github.com/pglogship/pglogship/guest/ssh"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/hypervisortest"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/session/postgres"
	"github.com/pglogship/pglogship/walbackup"
)

// The child job end to end on real components: PostgreSQL, OpenSSH, the
// runtime deployed over SSH, a file-system repository and the PostgreSQL
// session store; only time is virtual (and the parent's hypervisor fake).
// On the oldest and the newest supported release (Debian's 15 runs it in
// the S3 test), each the guest's server and the configuration database.
func TestJobShipsRealWALOverSSH(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t)
	majors := testenv.SupportedMajors
	for _, major := range []int{majors[0], majors[len(majors)-1]} {
		t.Run(fmt.Sprintf("PostgreSQL %d", major), func(t *testing.T) {
			t.Parallel()
			repo, err := fs.New(fs.Config{Root: t.TempDir()})
			require.NoError(t, err)
			shipRealWALOverSSH(t, repo, major)
		})
	}
}

// shipRealWALOverSSH runs the child job on real PostgreSQL (release
// major; 0: Debian's) and OpenSSH
// into repo for three intervals, then checks that every archived file is
// in repo exactly once, byte-identical, and gone from the guest, and what
// the session recorded. It returns the instance the WAL was shipped under
// and the archived files' contents.
func shipRealWALOverSSH(t *testing.T, repo repository.Repository, major int) (repository.Instance, map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{Major: major})
	if major != 0 {
		require.Equal(t, major, pg.Major(t))
	}
	sshd := testenv.StartSSHD(t, testenv.SSHDConfig{User: pg.OSUser})
	cb, err := knownhosts.New(sshd.KnownHostsFile)
	require.NoError(t, err)
	deployer, err := gssh.New(gssh.Config{
		User: sshd.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(sshd.ClientSigner)}, HostKeyCallback: cb,
		Binaries: map[string]string{"amd64": testenv.BuildRuntime(t)},
		BaseDir:  filepath.Join(testenv.UserDir(t, sshd.User), "runtimes"),
		Conn:     runtime.ConnConfig{Host: pg.SocketDir, Port: pg.Port, User: pg.User},
		Logger:   testenv.Logger(t),
	})
	require.NoError(t, err)
	store, err := postgres.Open(ctx, postgres.Config{ConnString: pg.ConnString("postgres"), Schema: "jobtest"})
	require.NoError(t, err)
	defer store.Close()
	walDir := filepath.Join(testenv.UserDir(t, pg.OSUser), "wal")

	clk := clock.NewMock()
	clk.Set(time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC))
	events := make(chan walbackup.Event, 1024)
	job, err := walbackup.NewJob(walbackup.Config{
		Name: "Daily DB Job", Machines: []walbackup.Machine{{ID: "db1", Address: sshd.Addr}},
		LogBackupInterval: walbackup.DefaultLogBackupInterval, WALDir: walDir,
		Hypervisor: hypervisortest.New(clk, hypervisor.Machine{ID: "db1"}), Guests: deployer,
		Repository: repo, Sessions: store, Clock: clk, Logger: testenv.Logger(t),
		Observer: func(e walbackup.Event) { events <- e },
	})
	require.NoError(t, err)
	h := &harness{clk: clk, events: events}
	require.NoError(t, job.Enable(ctx))
	h.idle(t)

	var sysid uint64
	require.NoError(t, pg.Connect(t, "postgres").QueryRow(ctx, "SELECT system_identifier FROM pg_control_system()").Scan(&sysid))
	inst := repository.Instance{Job: "Daily DB Job", Machine: "db1", SystemID: sysid}
	originals := map[string][]byte{}
	for round := 0; round < 3; round++ {
		pg.SwitchWAL(t, 3)
		entries, err := os.ReadDir(walDir)
		require.NoError(t, err)
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(walDir, e.Name()))
			require.NoError(t, err)
			originals[e.Name()] = b
		}
		h.step(t, walbackup.DefaultLogBackupInterval)
		assertShippedAll(t, walDir, "shipped WAL is gone from the guest")
	}
	require.NoError(t, job.Disable(ctx))

	in := stored(t, repo, inst, 1)
	require.Len(t, in, len(originals))
	for n, b := range originals {
		assert.Equal(t, b, in[n], "%s byte-identical", n)
	}
	count := map[string]int{}
	refs, err := repository.Bundles(ctx, repo, inst, 1)
	require.NoError(t, err)
	for _, ref := range refs {
		names, err := bundleOpen(ctx, repo, ref)
		require.NoError(t, err)
		for _, n := range names {
			count[n]++
		}
	}
	for n, c := range count {
		assert.Equal(t, 1, c, "%s is in the repository exactly once", n)
	}

	p, err := store.List(ctx, session.Query{Job: job.ChildName()})
	require.NoError(t, err)
	require.Len(t, p.Sessions, 1)
	s := p.Sessions[0]
	assert.Equal(t, session.StateWarning, s.State, "no parent ran: the WAL has no restore point before it")
	assert.Equal(t, int64(len(originals)), s.Counters.Files, "the session counts every file")
	assert.NotEmpty(t, s.Counters.FirstSegment)
	assert.Positive(t, s.Counters.Bytes)
	log, err := store.Log(ctx, s.ID, 0, 100)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, len(log), 4)
	var noBase bool
	for _, e := range log {
		assert.NotContains(t, e.Message, pg.Password)
		noBase = noBase || e.Severity == session.SeverityWarning && strings.Contains(e.Message, "no restore point")
	}
	assert.True(t, noBase, "the session says why it warns")
	return inst, originals
}

// assertShippedAll checks that no WAL file waits in the guest folder dir
// once shipping returned, and that the runtime unlinks the shipped files
// (in the background, out of the folder already) soon after.
func assertShippedAll(t *testing.T, dir, msg string) {
	t.Helper()
	left, err := runtime.Ready(dir)
	require.NoError(t, err)
	assert.Empty(t, left, msg)
	assert.Eventually(t, func() bool {
		entries, err := os.ReadDir(dir)
		return err == nil && len(entries) == 0
	}, time.Minute, 10*time.Millisecond, "%s: the files are unlinked", msg)
}
