package testenv

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
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

// TestVM boots two VMs (each costs about a minute under TCG): one on a
// fresh overlay, then one from a copy of its disk.
func TestVM(t *testing.T) {
	SkipIfShort(t)
	t.Parallel()
	vm := StartVM(t, VMConfig{})
	assert.Contains(t, []string{"tcg", "kvm"}, vm.Accel)
	assert.Equal(t, "disk0", vm.DiskNode)
	for _, p := range []string{vm.QMPSocket, vm.QGASocket} {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, os.ModeSocket, fi.Mode().Type(), p)
	}

	t.Run("ssh as root and postgres with the verified host key", func(t *testing.T) {
		assert.Equal(t, "root\n", vm.Run(t, "root", "id -un"))
		assert.Equal(t, "postgres\n", vm.Run(t, "postgres", "id -un"))
		known, err := os.ReadFile(vm.KnownHostsFile)
		require.NoError(t, err)
		assert.Equal(t, knownhosts.Line([]string{knownhosts.Normalize(vm.SSHAddr)}, vm.HostKey)+"\n", string(known))
		// The guest's own copy of its host key is the one we verify.
		assert.Equal(t, string(ssh.MarshalAuthorizedKey(vm.HostKey)),
			vm.Run(t, "root", "cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub"))
	})

	t.Run("wrong host key refused before authentication", func(t *testing.T) {
		cfg := vm.ClientConfig(t, "root")
		var authAttempted atomic.Bool
		other := trustOtherHostKey(t, cfg, vm.SSHAddr, vm.ClientSigner, &authAttempted)
		_, err := ssh.Dial("tcp", vm.SSHAddr, cfg)
		var keyErr *knownhosts.KeyError
		require.ErrorAs(t, err, &keyErr)
		require.NotEmpty(t, keyErr.Want, "a known key that did not match, not an unknown host")
		assert.Equal(t, other.Marshal(), keyErr.Want[0].Key.Marshal())
		assert.False(t, authAttempted.Load(), "client authenticated despite the wrong host key")
	})

	t.Run("PostgreSQL 15 ready for WAL archiving, local only", func(t *testing.T) {
		psql := func(sql string) string {
			return strings.TrimSpace(vm.Run(t, "postgres", "psql -XAtqc "+ShellQuote(sql)))
		}
		assert.Equal(t, "on", psql("SHOW archive_mode"))
		assert.Equal(t, "replica", psql("SHOW wal_level"))
		assert.Empty(t, psql("SHOW archive_command"))
		assert.Equal(t, "localhost", psql("SHOW listen_addresses"))
		assert.Equal(t, "15", psql("SHOW server_version_num")[:2])
		assert.Equal(t, "postgres 700", strings.TrimSpace(vm.Run(t, "root", "stat -c '%U %a' "+GuestTempDir)))
		// The deployer's upload path: SFTP as postgres.
		assert.Contains(t, vm.Run(t, "root", "grep -h '^Subsystem' /etc/ssh/sshd_config"), "sftp-server")
		assert.Equal(t, "/usr/lib/openssh/sftp-server\n", vm.Run(t, "root", "ls /usr/lib/openssh/sftp-server"))
	})

	t.Run("guest cannot reach outside", func(t *testing.T) {
		// Without restrict=on, QEMU maps 10.0.2.2 to the host's loopback:
		// a listener there tells a blocked connection from an absent one,
		// and no packet can leave this machine even if the check fails.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		var accepted atomic.Int32
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				accepted.Add(1)
				c.Close()
			}
		}()
		port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		out := vm.Run(t, "root", "timeout 5 bash -c 'exec 3<>/dev/tcp/10.0.2.2/"+port+"' 2>/dev/null && echo connected || echo blocked")
		assert.Equal(t, "blocked\n", out)
		assert.Zero(t, accepted.Load(), "the guest reached a host listener")
	})

	// A marker, synced to disk, to recognise this disk in the next VM.
	vm.Run(t, "root", "echo pglogship-marker >/root/marker && sync")

	t.Run("stop is idempotent and saves persistent bitmaps", func(t *testing.T) {
		// DiskNode is what QMP addresses; QEMU writes the bitmap into the
		// qcow2 when it closes the image on quit.
		require.NoError(t, qmpExecute(vm.QMPSocket, 10*time.Second,
			`{"execute": "block-dirty-bitmap-add", "arguments": {"node": "`+vm.DiskNode+`", "name": "testenv-bm", "persistent": true}}`))
		vm.Stop(t)
		vm.Stop(t)
		assert.True(t, vm.exited(), "QEMU still running")
		_, err := net.DialTimeout("unix", vm.QMPSocket, time.Second)
		assert.Error(t, err, "QMP still answers")
		out, err := exec.Command("qemu-img", "check", vm.DiskFile).CombinedOutput()
		assert.NoError(t, err, "%s", out)
		out, err = exec.Command("qemu-img", "info", "--output=json", vm.DiskFile).CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.Contains(t, string(out), `"name": "testenv-bm"`)
	})

	t.Run("QEMU failure explains itself", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.qcow2")
		require.NoError(t, os.WriteFile(bad, []byte("not a disk image"), 0o600))
		msg := fatalMessage(t, func(tb testing.TB) { StartVM(tb, VMConfig{Disk: bad}) })
		assert.Contains(t, msg, "qemu exited")
		assert.Contains(t, msg, "qemu.log (tail)")
		assert.Contains(t, msg, "serial.log")
	})

	// The comma: t.TempDir keeps it, and QEMU options must escape it.
	t.Run("boots from a copy of a disk, in a folder with a comma", func(t *testing.T) {
		disk := filepath.Join(t.TempDir(), "copy.qcow2")
		require.NoError(t, copyNewFile(vm.DiskFile, disk))
		vm2 := StartVM(t, VMConfig{Disk: disk, CPUs: 1, Memory: 1024})
		require.Contains(t, disk, ",")
		assert.Equal(t, disk, vm2.DiskFile)
		assert.NotEqual(t, vm.SSHAddr, vm2.SSHAddr)
		assert.Equal(t, "pglogship-marker\n", vm2.Run(t, "root", "cat /root/marker"))
		assert.Equal(t, "1\n", vm2.Run(t, "root", "nproc"))
		assert.Equal(t, "on\n", vm2.Run(t, "postgres", "psql -XAtqc 'SHOW archive_mode'"))
	})
}

func TestVMMissingBinaryExplainsItself(t *testing.T) {
	msg := fatalMessage(t, func(tb testing.TB) { requireBinary(tb, "no-such-binary-pglogship", installQemuSystem) })
	assert.Contains(t, msg, "no-such-binary-pglogship not found")
	assert.Contains(t, msg, "apt-get install -y qemu-system-x86")
}

// A killed debootstrap leaves /proc and friends mounted in its rootfs.
func TestVMImageRemoveBuildUnmounts(t *testing.T) {
	assert.Equal(t, "/a b\\c", unescapeMountinfo(`/a\040b\134c`))
	assert.Equal(t, `/x\04`, unescapeMountinfo(`/x\04`))

	dir := filepath.Join(t.TempDir(), "img.tmp-1 x")
	proc := filepath.Join(dir, "rootfs", "proc")
	require.NoError(t, os.MkdirAll(proc, 0o755))
	if os.Geteuid() == 0 {
		require.NoError(t, exec.Command("mount", "-t", "proc", "proc", proc).Run())
		t.Cleanup(func() { _ = exec.Command("umount", proc).Run() })
	} else {
		t.Log("not root: removal without a mount inside")
	}
	require.NoError(t, removeBuild(dir))
	assert.NoDirExists(t, dir)
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	assert.NotContains(t, string(mounts), "img.tmp-1")
}

// The serial log of the CI guest that hung in boot, and a short lockup
// that a busy host explains.
func TestGuestStuckOnlyForLastingLockups(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
		return p
	}
	hung := write("hung.log", "[  200.500709]  </TASK>\n"+
		"[  228.500697] watchdog: BUG: soft lockup - CPU#0 stuck for 208s! [cryptomgr_test:52]\n")
	brief := write("brief.log", "[   40.1] watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [systemd:1]\n")
	assert.Equal(t, "soft lockup - CPU#0 stuck for 208s", guestStuck(hung))
	assert.Empty(t, guestStuck(brief))
	assert.Empty(t, guestStuck(filepath.Join(dir, "absent.log")))
}
