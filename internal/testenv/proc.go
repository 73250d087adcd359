package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"testing"
)

// osAccount is an OS user the servers run as or log in.
type osAccount struct {
	Name     string
	UID, GID int
}

// serverAccount is the OS user PostgreSQL runs as: "postgres" when root,
// because initdb refuses to run as root, else the current user.
func serverAccount(t testing.TB) osAccount {
	t.Helper()
	if os.Geteuid() == 0 {
		a, err := lookupAccount("postgres")
		if err != nil {
			t.Fatalf("testenv: running as root needs the postgres OS user (created by the postgresql package): %v; install it with: %s",
				err, installPostgres)
		}
		return a
	}
	u, err := user.Current()
	if err != nil {
		t.Fatalf("testenv: current user: %v", err)
	}
	return accountOf(t, u)
}

func lookupAccount(name string) (osAccount, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return osAccount{}, err
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return osAccount{}, err
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return osAccount{}, err
	}
	return osAccount{Name: u.Username, UID: uid, GID: gid}, nil
}

func accountOf(t testing.TB, u *user.User) osAccount {
	t.Helper()
	a, err := lookupAccount(u.Username)
	if err != nil {
		t.Fatalf("testenv: user %s: %v", u.Username, err)
	}
	return a
}

// commandAs builds a command that runs as a. Only root can switch users;
// anyone else runs the command as themselves.
func commandAs(a osAccount, name string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if os.Geteuid() == 0 && a.UID != 0 {
		cmd = exec.Command("runuser", append([]string{"-u", a.Name, "--", name}, args...)...)
	} else {
		cmd = exec.Command(name, args...)
	}
	cmd.Env = cleanEnv()
	return cmd
}

// cleanEnv is the caller's environment without PG* variables, so a
// developer's PGHOST or PGPASSWORD cannot redirect the tools, and with the
// C locale, so messages and psql output are predictable.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// privateDir creates a fresh directory removed in t.Cleanup. It is not
// t.TempDir because t.TempDir's parents are 0700 and another OS user (the
// server) could not traverse them.
func privateDir(t testing.TB, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("testenv: remove %s: %v", dir, err)
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return dir
}

// chown gives paths to a; a no-op unless root, who is the only one that
// can and needs to.
func chown(t testing.TB, a osAccount, paths ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	for _, p := range paths {
		if err := os.Lchown(p, a.UID, a.GID); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process may take it before the server binds; callers retry on
// "address in use".
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: find free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return hex.EncodeToString(b)
}

// logTail returns the last lines of a log file for failure messages.
func logTail(path string) string {
	const maxBytes, maxLines = 16 << 10, 40
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > maxBytes {
		_, _ = f.Seek(-maxBytes, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return "--- " + path + " (tail) ---\n" + strings.Join(lines, "\n")
}
