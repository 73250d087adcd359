package testenv

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
)

// BuildRuntime compiles the runtime component (cmd/pglogship-runtime),
// static, into a temporary folder and returns its path.
func BuildRuntime(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "pglogship-runtime")
	cmd := exec.Command("go", "build", "-o", out, "github.com/pglogship/pglogship/cmd/pglogship-runtime")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: build runtime: %v\n%s", err, b)
	}
	return out
}

// UserDir makes a fresh directory owned by the OS user osUser (when
// running as root) in a parent that user can enter, unlike t.TempDir's.
// It is removed in t.Cleanup.
func UserDir(t testing.TB, osUser string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pglogship-user-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup(osUser)
		if err != nil {
			t.Fatalf("testenv: user %s: %v", osUser, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	return dir
}
