package ssh_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/runtime"
	gssh "github.com/pglogship/pglogship/guest/ssh"
	"github.com/pglogship/pglogship/internal/testenv"
)

// Deployer A is stopped in the middle of its upload (its binary is a FIFO
// the test feeds) while deployer B installs and starts a runtime, whose
// cleaner must leave A's folder alone and still remove a stale one.
func TestRacingDeployersKeepEachOthersFolders(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	target := guest.Target{Machine: "db1", Address: e.sshd.Addr}
	stale := runtime.RuntimeDirPrefix + "stale" // a crashed host's: no lock file
	e.sshd.Run(t, "umask 077 && mkdir -p "+e.base+"/"+stale)

	bin, err := os.ReadFile(e.bin)
	require.NoError(t, err)
	fifo := filepath.Join(t.TempDir(), "runtime")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	// O_RDWR: opening does not wait for A, and closing gives A its EOF.
	w, err := os.OpenFile(fifo, os.O_RDWR, 0)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() }) // unblocks the writer if A never reads
	resume := make(chan struct{})
	go func() {
		defer w.Close()
		if _, err := w.Write(bin[:len(bin)/2]); err != nil {
			return
		}
		<-resume
		_, _ = w.Write(bin[len(bin)/2:])
	}()

	type deployed struct {
		rt  guest.Runtime
		err error
	}
	aDone := make(chan deployed, 1)
	a := e.deployer(t, func(c *gssh.Config) { c.Binaries = map[string]string{"amd64": fifo} })
	go func() {
		rt, err := a.Deploy(ctx, target)
		aDone <- deployed{rt, err}
	}()
	// A's folder exists and its runtime does not.
	require.Eventually(t, func() bool { return len(runtimeDirs(t, e.base)) == 2 }, 30*time.Second, 20*time.Millisecond)

	rtB, err := e.deployer(t, nil).Deploy(ctx, target)
	require.NoError(t, err)
	defer rtB.Close(ctx)
	_, err = rtB.Scan(ctx)
	require.NoError(t, err)

	close(resume)
	var rtA guest.Runtime
	select {
	case d := <-aDone:
		require.NoError(t, d.err, "A's folder survived B's cleaner")
		rtA = d.rt
	case <-time.After(time.Minute):
		t.Fatal("deployer A did not finish")
	}
	defer rtA.Close(ctx)
	require.Eventually(t, func() bool { return !contains(runtimeDirs(t, e.base), stale) },
		30*time.Second, 20*time.Millisecond, "the stale folder goes once no deployer installs")
	require.Len(t, runtimeDirs(t, e.base), 2, "A's and B's folders")
	for _, rt := range []guest.Runtime{rtA, rtB} {
		_, err := rt.Scan(ctx)
		require.NoError(t, err)
	}
	require.NoError(t, rtA.Close(ctx))
	require.NoError(t, rtB.Close(ctx))
	assert.Empty(t, runtimeDirs(t, e.base))
}

func contains(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// A base folder another user could change is refused before anything is
// uploaded into it.
func TestUnsafeBaseFolderRefused(t *testing.T) {
	e := setup(t)
	home := testenv.UserDir(t, e.sshd.User)
	for _, tc := range []struct {
		name, base, want string
		prepare          string // run in the guest as the login user
	}{
		{"world-writable", home + "/open", "writable by other users (mode 0777)", "mkdir -m 0777 " + home + "/open"},
		{"group-writable", home + "/group", "writable by other users (mode 0770)", "mkdir -m 0770 " + home + "/group"},
		// Root's, and writable by the login user: the Chmod failed unnoticed.
		{"foreign-owned", "/tmp", "owned by uid 0", ""},
		{"symbolic link", home + "/link", "is a symbolic link", "mkdir -m 0700 " + home + "/real && ln -s real " + home + "/link"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.prepare != "" {
				e.sshd.Run(t, tc.prepare)
			}
			d := e.deployer(t, func(c *gssh.Config) { c.BaseDir = tc.base })
			_, err := d.Deploy(context.Background(), guest.Target{Machine: "db1", Address: e.sshd.Addr})
			require.ErrorIs(t, err, runtime.ErrUnsafeBase)
			assert.ErrorContains(t, err, tc.want)
			if tc.base != "/tmp" {
				assert.Empty(t, runtimeDirs(t, tc.base), "nothing was uploaded")
				st, err := os.Lstat(tc.base)
				require.NoError(t, err)
				assert.NotEqual(t, os.FileMode(0o700), st.Mode().Perm(), "left as it was")
			}
		})
	}
}
