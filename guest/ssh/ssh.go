// Package ssh is a guest.Deployer for guests reached over OpenSSH. Each
// Deploy uploads the runtime binary for the guest's architecture with SFTP
// into a fresh 0700 folder under a base folder, checks its SHA-256 in the
// guest, and starts it in an SSH session whose stdin and stdout carry the
// protocol. Closing the runtime ends it and removes its folder; folders left
// by a host that crashed are removed by the next runtime that starts.
//
// The base folder must be the login user's and writable by no one else (it
// is created 0700 when missing). While it installs, a Deployer holds the
// base folder's install lock (runtime.InstallLockFile) shared with flock(1),
// which the guest must have (util-linux or busybox), so that no runtime's
// cleaner removes a folder between upload and exec.
//
// Host keys are always verified: Config.HostKeyCallback is required.
package ssh

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/guest/remote"
	"github.com/pglogship/pglogship/guest/runtime"
	"github.com/pglogship/pglogship/internal/sshutil"
)

var _ guest.Deployer = (*Deployer)(nil)

// Defaults for Config.
const (
	DefaultTimeout = 30 * time.Second
	DefaultBaseDir = ".pglogship" // relative to the login user's home
)

// Config configures a Deployer. Auth and Conn.Password are never logged.
type Config struct {
	User            string
	Auth            []ssh.AuthMethod
	HostKeyCallback ssh.HostKeyCallback // required
	// Binaries maps a GOARCH ("amd64", "arm64") to the local path of the
	// runtime built for it (CGO_ENABLED=0 go build ./cmd/pglogship-runtime).
	Binaries map[string]string
	// Args go before the runtime's own flags, for a host program that
	// sends its own executable and selects the runtime with them (the
	// pglogship command's "runtime").
	Args []string
	// BaseDir is the guest folder that holds runtime folders: absolute, or
	// relative to the login user's home; letters, digits and /._- only.
	// It must be the login user's, not a symbolic link, and writable by no
	// one else (runtime.ErrUnsafeBase); a missing one is created 0700.
	BaseDir string
	Conn    runtime.ConnConfig // how the runtime reaches PostgreSQL
	Timeout time.Duration      // connect and handshake; 0 means DefaultTimeout
	Logger  *slog.Logger
}

// Deployer deploys runtimes over SSH.
type Deployer struct{ cfg Config }

// New checks cfg and returns a Deployer.
func New(cfg Config) (*Deployer, error) {
	switch {
	case cfg.User == "" || len(cfg.Auth) == 0:
		return nil, errors.New("ssh deployer: user and an authentication method are required")
	case cfg.HostKeyCallback == nil:
		return nil, errors.New("ssh deployer: HostKeyCallback is required (host keys are always verified)")
	case len(cfg.Binaries) == 0:
		return nil, errors.New("ssh deployer: at least one runtime binary is required")
	}
	if cfg.BaseDir == "" {
		cfg.BaseDir = DefaultBaseDir
	}
	if !safePath(cfg.BaseDir) {
		return nil, fmt.Errorf("ssh deployer: base folder %q: only letters, digits and /._- are allowed", cfg.BaseDir)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Deployer{cfg: cfg}, nil
}

func safePath(p string) bool {
	if p == "" || path.Clean(p) != p || strings.Contains(p, "..") {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/._-", c) >= 0) {
			return false
		}
	}
	return true
}

var unameToGOARCH = map[string]string{"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}

// Deploy implements guest.Deployer.
func (d *Deployer) Deploy(ctx context.Context, t guest.Target) (guest.Runtime, error) {
	var keyErr error
	check := func(host string, remote net.Addr, key ssh.PublicKey) error {
		keyErr = d.cfg.HostKeyCallback(host, remote, key)
		return keyErr
	}
	client, err := sshutil.Dial(ctx, t.Address, &ssh.ClientConfig{User: d.cfg.User, Auth: d.cfg.Auth, HostKeyCallback: check}, d.cfg.Timeout)
	if keyErr != nil {
		return nil, fmt.Errorf("deploy to %s: %w: %w", t.Machine, guest.ErrHostKey, keyErr)
	}
	if err != nil {
		return nil, fmt.Errorf("deploy to %s: %w", t.Machine, err)
	}
	rt, err := d.deploy(ctx, client, t)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("deploy to %s: %w", t.Machine, err)
	}
	return rt, nil
}

func (d *Deployer) deploy(ctx context.Context, client *ssh.Client, t guest.Target) (guest.Runtime, error) {
	id, err := output(client, "uname -m && id -u")
	uname, uidText, _ := strings.Cut(id, "\n")
	uid, uidErr := strconv.Atoi(strings.TrimSpace(uidText))
	if err != nil || uidErr != nil {
		return nil, fmt.Errorf("guest architecture and user id: %q: %w", id, errors.Join(err, uidErr))
	}
	arch := unameToGOARCH[uname]
	binary, ok := d.cfg.Binaries[arch]
	if !ok {
		return nil, fmt.Errorf("%w: guest is %s (GOARCH %q)", guest.ErrNoRuntime, uname, arch)
	}
	sc, err := sftp.NewClient(client)
	if err != nil {
		return nil, fmt.Errorf("start sftp: %w", err)
	}
	defer sc.Close()
	base := d.cfg.BaseDir
	if !path.IsAbs(base) {
		home, err := sc.Getwd()
		if err != nil {
			return nil, err
		}
		base = path.Join(home, base)
	}
	if err := prepareBase(sc, base, uid); err != nil {
		return nil, err
	}
	// Held until the runtime answers the handshake, by when it holds its
	// own folder's lock.
	release, err := claimInstall(ctx, client, base)
	if err != nil {
		return nil, err
	}
	defer release()
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	dir := path.Join(base, runtime.RuntimeDirPrefix+hex.EncodeToString(rnd[:]))
	if err := sc.Mkdir(dir); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	removeDir := func() { _ = run(client, "rm -rf "+sshutil.Quote(dir)) }
	if err := sc.Chmod(dir, 0o700); err != nil {
		removeDir()
		return nil, fmt.Errorf("chmod %s: %w", dir, err)
	}
	exe := path.Join(dir, "pglogship-runtime")
	sum, err := upload(sc, binary, exe)
	if err != nil {
		removeDir()
		return nil, fmt.Errorf("upload runtime: %w", err)
	}
	// Check what landed, in the guest, before running it.
	got, err := output(client, "sha256sum "+sshutil.Quote(exe))
	if err != nil || !strings.HasPrefix(got, sum+" ") {
		removeDir()
		return nil, fmt.Errorf("runtime checksum in the guest is %q, uploaded %s (%v)", got, sum, err)
	}

	sess, err := client.NewSession()
	if err != nil {
		removeDir()
		return nil, err
	}
	stdin, err1 := sess.StdinPipe()
	stdout, err2 := sess.StdoutPipe()
	stderr, err3 := sess.StderrPipe()
	if err := errors.Join(err1, err2, err3); err != nil {
		sess.Close()
		removeDir()
		return nil, err
	}
	cmd := "exec " + sshutil.Quote(exe)
	for _, a := range d.cfg.Args {
		cmd += " " + sshutil.Quote(a)
	}
	cmd += " -lock " + sshutil.Quote(path.Join(dir, runtime.LockFile)) + " -clean " + sshutil.Quote(base)
	if err := sess.Start(cmd); err != nil {
		sess.Close()
		removeDir()
		return nil, fmt.Errorf("start runtime: %w", err)
	}
	logger := d.cfg.Logger.With("machine", t.Machine, "component", "runtime")
	logDone := make(chan struct{})
	go func() { defer close(logDone); remote.LogLines(stderr, logger) }()

	var once sync.Once
	var stopErr error
	stop := func(ctx context.Context) error {
		once.Do(func() {
			stdin.Close() // the runtime ends at EOF
			exited := make(chan error, 1)
			go func() { <-logDone; exited <- sess.Wait() }()
			select {
			case stopErr = <-exited:
			case <-ctx.Done():
				_ = sess.Signal(ssh.SIGKILL)
				sess.Close()
				stopErr = ctx.Err()
			}
			// Uninstall: the folder, binary and lock go; the WAL folder
			// and archive_command stay.
			if err := run(client, "rm -rf "+sshutil.Quote(dir)); err != nil && stopErr == nil {
				stopErr = fmt.Errorf("uninstall runtime from %s: %w", dir, err)
			}
			client.Close()
			var ee *ssh.ExitError
			if errors.As(stopErr, &ee) {
				stopErr = fmt.Errorf("runtime exited with status %d", ee.ExitStatus())
			}
		})
		return stopErr
	}
	return remote.Open(ctx, stdout, stdin, stop, runtime.InitArgs{Conn: d.cfg.Conn, DataDir: t.DataDir})
}

// prepareBase creates base 0700 when it is missing and refuses one that
// another user could change (runtime.CheckBase): they could swap a runtime
// between its checksum and its exec, or plant folders for the cleaner.
func prepareBase(sc *sftp.Client, base string, uid int) error {
	st, err := sc.Lstat(base)
	if errors.Is(err, os.ErrNotExist) {
		if err := sc.MkdirAll(base); err != nil {
			return fmt.Errorf("create %s: %w", base, err)
		}
		// Before the check: a umask of 0 makes it 0777.
		if err := sc.Chmod(base, 0o700); err != nil {
			return fmt.Errorf("chmod %s: %w", base, err)
		}
		st, err = sc.Lstat(base)
	}
	if err != nil {
		return fmt.Errorf("base folder: %w", err)
	}
	owner := -1
	if fs, ok := st.Sys().(*sftp.FileStat); ok {
		owner = int(fs.UID)
	}
	if err := runtime.CheckBase(base, st.Mode(), owner, uid); err != nil {
		return err
	}
	if st.Mode().Perm() != 0o700 {
		if err := sc.Chmod(base, 0o700); err != nil {
			return fmt.Errorf("chmod %s: %w", base, err)
		}
	}
	return nil
}

// claimInstall takes base's install lock shared in a guest process (flock
// running cat on the session's stdin) and returns what releases it.
func claimInstall(ctx context.Context, client *ssh.Client, base string) (release func(), err error) {
	lock := path.Join(base, runtime.InstallLockFile)
	sess, err := client.NewSession()
	if err != nil {
		return nil, fmt.Errorf("install lock: %w", err)
	}
	stdin, err1 := sess.StdinPipe()
	stdout, err2 := sess.StdoutPipe()
	if err := errors.Join(err1, err2); err != nil {
		sess.Close()
		return nil, fmt.Errorf("install lock: %w", err)
	}
	var stderr bytes.Buffer
	sess.Stderr = &stderr
	cmd := "umask 077 && exec flock -s " + sshutil.Quote(lock) + ` sh -c 'echo claimed && exec cat >/dev/null'`
	if err := sess.Start(cmd); err != nil {
		sess.Close()
		return nil, fmt.Errorf("install lock %s: %w", lock, err)
	}
	// A cancelled ctx ends the session, which ends a flock still waiting.
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	line, readErr := bufio.NewReader(stdout).ReadString('\n')
	if line != "claimed\n" {
		waitErr := sess.Wait() // stdout ended: so has the command
		stop()
		sess.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("install lock %s: %w", lock, ctx.Err())
		}
		if waitErr == nil {
			waitErr = fmt.Errorf("flock said %q: %w", line, readErr)
		}
		hint := ""
		if ee := (*ssh.ExitError)(nil); errors.As(waitErr, &ee) && ee.ExitStatus() == 127 {
			hint = "; the guest needs flock(1), from util-linux or busybox"
		}
		return nil, fmt.Errorf("install lock %s: %w (%s%s)", lock, waitErr, strings.TrimSpace(stderr.String()), hint)
	}
	return func() {
		stdin.Close() // cat ends, then flock, which lets the lock go
		_ = sess.Wait()
		stop()
		sess.Close()
	}, nil
}

// upload copies the local file to the guest (0700) and returns its SHA-256.
func upload(sc *sftp.Client, local, remotePath string) (string, error) {
	in, err := os.Open(local)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := sc.OpenFile(remotePath, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return "", err
	}
	if err := out.Chmod(0o700); err != nil {
		out.Close()
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(out, io.TeeReader(in, h)); err != nil {
		out.Close()
		return "", err
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func output(c *ssh.Client, cmd string) (string, error) {
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	out, err := s.Output(cmd)
	return strings.TrimSpace(string(out)), err
}

func run(c *ssh.Client, cmd string) error {
	_, err := output(c, cmd)
	return err
}
