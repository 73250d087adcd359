package walbackup_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
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
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/runtime"
	gssh "github.com/pglogship/pglogship/guest/ssh"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/hypervisor/physical"
	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository/bundle"
	repofs "github.com/pglogship/pglogship/repository/fs"
	"github.com/pglogship/pglogship/session"
	smem "github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/walbackup"
)

// syncBuffer collects output from several goroutines.
type syncBuffer = testenv.SyncBuffer

// forms returns the ways a secret could be written out.
func forms(secret []byte) []string {
	return []string{string(secret), hex.EncodeToString(secret), base64.StdEncoding.EncodeToString(secret),
		base64.RawURLEncoding.EncodeToString(secret)}
}

// Secrets stay secret through a whole job (password authentication to
// PostgreSQL, an encrypted repository, a child session and a parent
// session): neither the password nor the encryption key appears in the
// logs, the session records or any file of the repository, and the
// repository's files are 0600 and its folders 0700.
func TestSecretsStaySecret(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	secret := make([]byte, bundle.KeySize)
	_, err := rand.Read(secret)
	require.NoError(t, err)
	key, err := bundle.NewKey(secret)
	require.NoError(t, err)
	hvLogs := &syncBuffer{}
	r := newRealJob(t, func(clk *clock.Mock, d guest.Deployer) hypervisor.Hypervisor {
		h, err := physical.New(physical.Config{Machines: []physical.Machine{{ID: "db1"}}, Guests: d, Key: key, Clock: clk,
			Logger: testenv.LoggerTo(t, hvLogs)})
		require.NoError(t, err)
		return h
	}, func(c *walbackup.Config) { c.Key = key })
	require.NoError(t, r.job.Enable(ctx))
	r.idle(t)
	r.pg.SwitchWAL(t, 2)
	r.step(t, walbackup.DefaultLogBackupInterval)
	require.NoError(t, r.job.StartParent(ctx))
	r.idle(t)
	r.pg.SwitchWAL(t, 1)
	r.step(t, walbackup.DefaultLogBackupInterval)
	require.NoError(t, r.job.Disable(ctx))

	secrets := append(forms([]byte(r.pg.Password)), forms(secret)...)
	var records strings.Builder
	for _, job := range []string{r.job.Name(), r.job.ChildName()} {
		p, err := r.store.List(ctx, session.Query{Job: job})
		require.NoError(t, err)
		require.NotEmpty(t, p.Sessions)
		for _, s := range p.Sessions {
			records.WriteString(s.Result)
			log, err := r.store.Log(ctx, s.ID, 0, 1000)
			require.NoError(t, err)
			for _, e := range log {
				records.WriteString(e.Message + "\n")
			}
		}
	}
	logs := r.logs.String() + hvLogs.String() // the job's, the deployer's and the runtime's, the hypervisor's
	require.NotEmpty(t, logs)
	for _, s := range secrets {
		assert.NotContains(t, logs, s, "a secret in the logs")
		assert.NotContains(t, records.String(), s, "a secret in the session records")
	}
	var files int
	root := r.root
	require.NoError(t, filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		info, err := d.Info()
		require.NoError(t, err)
		if d.IsDir() {
			assert.Equal(t, fs.FileMode(0o700), info.Mode().Perm(), "folder %s", path)
			return nil
		}
		files++
		assert.Equal(t, fs.FileMode(0o600), info.Mode().Perm(), "file %s", path)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		for _, s := range secrets {
			assert.False(t, bytes.Contains(b, []byte(s)), "a secret in %s", path)
		}
		return nil
	}))
	assert.Greater(t, files, 3, "bundles, image objects and a manifest were written")
}

// A temporary folder path with shell metacharacters is refused before
// anything runs in the guest: the session fails and says why.
func TestShellMetacharactersInTheFolderRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(testenv.UserDir(t, "postgres"), "wal; touch pwned")
	r := newRealJob(t, fakeImages, func(c *walbackup.Config) { c.WALDir = dir })
	require.NoError(t, r.job.Enable(ctx))
	evs := r.idle(t)
	require.NoError(t, r.job.Disable(ctx))
	var msg string
	for _, e := range evs {
		if e.Kind == walbackup.EventWarning {
			msg = e.Message
		}
	}
	assert.Contains(t, msg, guest.ErrTempFolder.Error())
	assert.Contains(t, msg, "refused, fix this")
	_, err := os.Stat(filepath.Join(filepath.Dir(dir), "pwned"))
	assert.True(t, os.IsNotExist(err), "nothing ran")
	assert.Equal(t, "", r.pg.Psql(t, "postgres", "SHOW archive_command"), "archive_command untouched")
	c, err := session.Latest(ctx, r.store, r.job.ChildName(), session.KindChild)
	require.NoError(t, err)
	assert.Equal(t, session.StateFailed, c.State)
}

// A guest whose host key changed is refused before anything is uploaded;
// the session fails and names the host key.
func TestChangedHostKeyFailsTheSession(t *testing.T) {
	t.Parallel()
	testenv.SkipIfShort(t)
	ctx := context.Background()
	pg := testenv.StartPostgres(t, testenv.PostgresConfig{})
	sshd := testenv.StartSSHD(t, testenv.SSHDConfig{User: pg.OSUser})
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	other, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(kh, []byte(knownhosts.Line([]string{knownhosts.Normalize(sshd.Addr)}, other)+"\n"), 0o600))
	cb, err := knownhosts.New(kh)
	require.NoError(t, err)
	base := filepath.Join(testenv.UserDir(t, sshd.User), "runtimes")
	deployer, err := gssh.New(gssh.Config{
		User: sshd.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(sshd.ClientSigner)}, HostKeyCallback: cb,
		Binaries: map[string]string{"amd64": testenv.BuildRuntime(t)}, BaseDir: base,
		Conn: runtime.ConnConfig{Host: pg.SocketDir, Port: pg.Port, User: pg.User}, Logger: testenv.Logger(t),
	})
	require.NoError(t, err)
	repo, err := repofs.New(repofs.Config{Root: t.TempDir()})
	require.NoError(t, err)
	clk := clock.NewMock()
	clk.Set(time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC))
	h := &harness{clk: clk, store: smem.New(), events: make(chan walbackup.Event, 100)}
	h.list = h.store
	h.job, err = walbackup.NewJob(walbackup.Config{
		Name: "Daily DB Job", Machines: []walbackup.Machine{{ID: "db1", Address: sshd.Addr}},
		LogBackupInterval: walbackup.DefaultLogBackupInterval, WALDir: filepath.Join(testenv.UserDir(t, pg.OSUser), "wal"),
		Hypervisor: fakeImages(clk, nil), Guests: deployer, Repository: repo, Sessions: h.store, Clock: clk,
		Logger: testenv.Logger(t), Observer: func(e walbackup.Event) { h.events <- e },
	})
	require.NoError(t, err)
	require.NoError(t, h.job.Enable(ctx))
	evs := h.idle(t)
	require.NoError(t, h.job.Disable(ctx))
	require.NotEmpty(t, evs)
	assert.Contains(t, evs[0].Message, "host key")
	assert.Contains(t, evs[0].Message, "refused, fix this")
	_, err = os.Stat(base)
	assert.True(t, os.IsNotExist(err), "nothing was uploaded")
	assert.Equal(t, session.StateFailed, h.sessions(t, h.job.ChildName())[0].State)
}
