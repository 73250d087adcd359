package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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

// serverProc is a server process started in its own process group, so
// that stopping it reaches only what we started.
type serverProc struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid once done is closed
}

// startServer starts cmd in a new process group, killed if this process
// dies, and reaps it in the background.
func startServer(cmd *exec.Cmd) (*serverProc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Pdeathsig fires when the thread that started the child exits, so
	// that thread stays locked to the goroutine that waits for the child:
	// a test binary that dies (timeout, panic) takes its servers with it.
	cmd.SysProcAttr.Setpgid, cmd.SysProcAttr.Pdeathsig = true, syscall.SIGKILL
	p := &serverProc{cmd: cmd, done: make(chan struct{})}
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("run %s: %w", cmd.Path, err)
	}
	return p, nil
}

// pid is the server's process id.
func (p *serverProc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the server has exited, and how.
func (p *serverProc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// pause waits d or until the server exits, whichever comes first.
func (p *serverProc) pause(d time.Duration) {
	select {
	case <-p.done:
	case <-time.After(d):
	}
}

// stop sends SIGTERM to the process group, and SIGKILL after 10 s, and
// waits for the server to exit.
func (p *serverProc) stop() {
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}
