package sftp_test

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
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/repositorytest"
	"github.com/pglogship/pglogship/repository/sftp"
)

func config(s *testenv.SSHD, root string) sftp.Config {
	cb, _ := knownhosts.New(s.KnownHostsFile)
	return sftp.Config{Addr: s.Addr, User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(s.ClientSigner)}, HostKeyCallback: cb, Root: root}
}

func open(t testing.TB, cfg sftp.Config) *sftp.Repo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := sftp.New(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r
}

func TestConformance(t *testing.T) {
	testenv.SkipIfShort(t)
	s := testenv.StartSSHD(t, testenv.SSHDConfig{})
	base := testenv.UserDir(t, s.User)
	var n atomic.Int64
	repositorytest.Run(t, func(t testing.TB) repository.Repository {
		return open(t, config(s, fmt.Sprintf("%s/repo-%d", base, n.Add(1))))
	})
}

// OpenSSH announces limits@openssh.com: requests carry 255 KiB, and
// objects of several such packets, with a ragged end, come back exact.
func TestLargePacketsWithOpenSSH(t *testing.T) {
	testenv.SkipIfShort(t)
	s := testenv.StartSSHD(t, testenv.SSHDConfig{})
	r := open(t, config(s, testenv.UserDir(t, s.User)+"/repo"))
	assert.Equal(t, 255<<10, r.PacketSize())
	ctx := context.Background()
	data := make([]byte, 3<<20+12345)
	rand.Read(data)
	require.NoError(t, r.Put(ctx, "job/vm/big", bytes.NewReader(data)))
	rc, err := r.Get(ctx, "job/vm/big", 0, -1)
	require.NoError(t, err)
	got, err := io.ReadAll(rc)
	rc.Close()
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got), "read back %d bytes of %d, not equal", len(got), len(data))
	rc, err = r.Get(ctx, "job/vm/big", 300<<10, 700<<10)
	require.NoError(t, err)
	got, err = io.ReadAll(rc)
	rc.Close()
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data[300<<10:1000<<10], got), "a range of %d bytes", len(got))
}

func TestPermissions(t *testing.T) {
	testenv.SkipIfShort(t)
	s := testenv.StartSSHD(t, testenv.SSHDConfig{})
	root := testenv.UserDir(t, s.User) + "/repo"
	r := open(t, config(s, root))
	require.NoError(t, r.Put(context.Background(), "job/vm/obj", strings.NewReader("wal")))
	st, err := os.Stat(filepath.Join(root, "job", "vm", "obj"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	for _, d := range []string{"", "job", "job/vm"} {
		st, err := os.Stat(filepath.Join(root, d))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o700), st.Mode().Perm(), "dir %q", d)
	}
}

func TestHostKeyRequiredAndVerified(t *testing.T) {
	testenv.SkipIfShort(t)
	s := testenv.StartSSHD(t, testenv.SSHDConfig{})
	root := testenv.UserDir(t, s.User) + "/repo"
	cfg := config(s, root)
	cfg.HostKeyCallback = nil
	_, err := sftp.New(context.Background(), cfg)
	require.ErrorContains(t, err, "HostKeyCallback is required")

	// known_hosts that names another key for this address.
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	other, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	require.NoError(t, os.WriteFile(kh, []byte(knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, other)+"\n"), 0o600))
	cb, err := knownhosts.New(kh)
	require.NoError(t, err)
	cfg = config(s, root)
	cfg.HostKeyCallback = cb
	_, err = sftp.New(context.Background(), cfg)
	var ke *knownhosts.KeyError
	require.ErrorAs(t, err, &ke)
	_, statErr := os.Stat(root)
	assert.True(t, os.IsNotExist(statErr), "nothing was done on the server")
}

func TestDeadConnection(t *testing.T) {
	testenv.SkipIfShort(t)
	s := testenv.StartSSHD(t, testenv.SSHDConfig{})
	r := open(t, config(s, testenv.UserDir(t, s.User)+"/repo"))
	require.NoError(t, r.Close())
	require.NoError(t, r.Close(), "close is idempotent")
	done := make(chan error, 1)
	go func() { done <- r.Put(context.Background(), "x", strings.NewReader("y")) }()
	select {
	case err := <-done:
		require.Error(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("put on a closed connection hangs")
	}
}

func TestBadConfig(t *testing.T) {
	ctx := context.Background()
	_, err := sftp.New(ctx, sftp.Config{})
	require.ErrorContains(t, err, "address and user are required")
	_, err = sftp.New(ctx, sftp.Config{Addr: "127.0.0.1:1", User: "u", Auth: []ssh.AuthMethod{ssh.Password("pw")},
		HostKeyCallback: ssh.FixedHostKey(nil), Root: "relative"})
	require.ErrorContains(t, err, "clean absolute path")
}
