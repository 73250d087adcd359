package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"testing"
)

// SmallFS mounts a tmpfs of size bytes, owned by osUser (0700), so a test can
// fill a file system for real; it is unmounted in t.Cleanup. Mounting
// needs root, as CI runs the tests.
func SmallFS(t testing.TB, osUser string, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("testenv: a small file system is a tmpfs mount, which needs root: run the tests as root, as CI does")
	}
	u, err := user.Lookup(osUser)
	if err != nil {
		t.Fatalf("testenv: user %s: %v", osUser, err)
	}
	dir, err := os.MkdirTemp("", "pglogship-smallfs-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	opts := fmt.Sprintf("size=%d,mode=0700,uid=%s,gid=%s", size, u.Uid, u.Gid)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		os.Remove(dir)
		t.Fatalf("testenv: mount a %d-byte tmpfs: %v\n%s", size, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("testenv: unmount %s: %v\n%s", dir, err, out)
			return
		}
		os.Remove(dir)
	})
	return dir
}
