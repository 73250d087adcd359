package testenv

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHDConfig configures StartSSHD.
type SSHDConfig struct {
	// User is the login user. Default: the OS user StartPostgres runs the
	// server as ("postgres" when root), so that commands run over SSH reach
	// the test PostgreSQL by peer authentication on its unix socket.
	User string
}

// SSHD is a running OpenSSH server on loopback that accepts one generated
// client key for one user.
type SSHD struct {
	Addr           string // "127.0.0.1:port"
	User           string
	HostKey        ssh.PublicKey
	KnownHostsLine string // "[127.0.0.1]:port ssh-ed25519 AAAA..."
	KnownHostsFile string // holds KnownHostsLine
	ClientSigner   ssh.Signer
	ClientKeyFile  string // OpenSSH private key of ClientSigner (0600)
	authorizedKeys string
	LogFile        string // sshd's stderr (LogLevel VERBOSE)
	PID            int    // the listening sshd; connections run in its descendants
}

// sshdReadyTimeout bounds how long StartSSHD waits for a successful login.
const sshdReadyTimeout = 20 * time.Second

// StartSSHD generates host and client keys, starts sshd on a free port of
// 127.0.0.1 and returns once a client can log in. The server is killed in
// t.Cleanup.
func StartSSHD(t testing.TB, cfg SSHDConfig) *SSHD {
	t.Helper()
	login := cfg.User
	if login == "" {
		login = serverAccount(t).Name
	}
	if _, err := lookupAccount(login); err != nil {
		t.Fatalf("testenv: sshd login user %q does not exist: %v", login, err)
	}
	if os.Geteuid() != 0 {
		// Without root, sshd cannot switch users.
		if cur, err := user.Current(); err != nil || cur.Username != login {
			t.Fatalf("testenv: sshd runs as the current user and can only log in that user, not %q", login)
		}
	} else {
		// Privilege separation directory; the openssh-server service
		// creates it at boot, which never happened in a container.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("testenv: create sshd privilege separation directory: %v", err)
		}
	}

	sshdPath := SSHDPath(t)
	dir := privateDir(t, "pglogship-sshd-")
	s := &SSHD{
		User:           login,
		KnownHostsFile: filepath.Join(dir, "known_hosts"),
		ClientKeyFile:  filepath.Join(dir, "client_ed25519_key"),
		LogFile:        filepath.Join(dir, "sshd.log"),
	}

	hostSigner := writeEd25519Key(t, filepath.Join(dir, "ssh_host_ed25519_key"))
	s.HostKey = hostSigner.PublicKey()
	s.ClientSigner = writeEd25519Key(t, s.ClientKeyFile)
	authorizedKeys := filepath.Join(dir, "authorized_keys")
	s.authorizedKeys = authorizedKeys
	// sshd reads it as the login user, hence world-readable.
	mustWriteFile(t, authorizedKeys, ssh.MarshalAuthorizedKey(s.ClientSigner.PublicKey()), 0o644)

	logf, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { logf.Close() })

	penalties := sshdHasPerSourcePenalties(sshdPath)
	const attempts = 3
	for i := 1; ; i++ {
		port := freePort(t)
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.KnownHostsLine = knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, s.HostKey)
		mustWriteFile(t, s.KnownHostsFile, []byte(s.KnownHostsLine+"\n"), 0o644)
		config := sshdConfig(dir, port, login, authorizedKeys, penalties)
		configFile := filepath.Join(dir, "sshd_config")
		mustWriteFile(t, configFile, []byte(config), 0o600)

		exited, err := s.start(t, sshdPath, configFile, logf)
		if err == nil {
			return s
		}
		tail := logTail(s.LogFile)
		if exited && i < attempts && strings.Contains(tail, "already in use") {
			t.Logf("testenv: sshd port %d taken, retrying", port)
			continue
		}
		t.Fatalf("testenv: start sshd on %s for user %s: %v\n%s", s.Addr, login, err, tail)
	}
}

// AddClientKey makes another client key, writes its OpenSSH private key to
// path (0600) and lets it log in too: a second party with a credential of
// its own (a guest's own access to an SFTP repository).
func (s *SSHD) AddClientKey(t testing.TB, path string) ssh.Signer {
	t.Helper()
	signer := writeEd25519Key(t, path)
	f, err := os.OpenFile(s.authorizedKeys, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer f.Close()
	if _, err := f.Write(ssh.MarshalAuthorizedKey(signer.PublicKey())); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return signer
}

// start runs sshd in the foreground and waits until a client logs in. On
// failure the process is gone when start returns; exited reports whether
// it died on its own (a bind error is worth a retry).
func (s *SSHD) start(t testing.TB, sshdPath, configFile string, logf *os.File) (exited bool, err error) {
	t.Helper()
	// -D: stay in the foreground as our child; -e: log to stderr (the file).
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", configFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = cleanEnv()
	proc, err := startServer(cmd)
	if err != nil {
		return false, err
	}
	s.PID = proc.pid()

	clientConfig := s.ClientConfig(t)
	clientConfig.Timeout = 2 * time.Second
	deadline := time.Now().Add(sshdReadyTimeout)
	var lastErr error
	for {
		if done, waitErr := proc.exited(); done {
			return true, fmt.Errorf("sshd exited: %v", waitErr)
		}
		client, err := ssh.Dial("tcp", s.Addr, clientConfig)
		if err == nil {
			client.Close()
			t.Cleanup(proc.stop)
			return false, nil
		}
		lastErr = err
		if time.Now().After(deadline) {
			proc.stop()
			return false, fmt.Errorf("no successful login within %v: %w", sshdReadyTimeout, lastErr)
		}
		proc.pause(50 * time.Millisecond)
	}
}

// sshdConfig is a complete configuration: nothing from /etc/ssh applies.
func sshdConfig(dir string, port int, login, authorizedKeys string, perSourcePenalties bool) string {
	lines := []string{
		"# written by internal/testenv",
		"ListenAddress 127.0.0.1:" + strconv.Itoa(port),
		"AddressFamily inet",
		"Port " + strconv.Itoa(port),
		"HostKey " + filepath.Join(dir, "ssh_host_ed25519_key"),
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"AuthorizedKeysFile " + authorizedKeys,
		// The key files live under /tmp, which StrictModes rejects.
		"StrictModes no",
		"AuthenticationMethods publickey",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"HostbasedAuthentication no",
		"PermitRootLogin no",
		"AllowUsers " + login,
		// Debian's postgres account is locked ("!" in /etc/shadow). Without
		// PAM, sshd refuses locked accounts even for key logins; with PAM
		// it leaves that decision to the PAM account stack, which accepts.
		"UsePAM yes",
		"PermitEmptyPasswords no",
		"PermitUserEnvironment no",
		"X11Forwarding no",
		"AllowAgentForwarding no",
		"PrintMotd no",
		"PrintLastLog no",
		"UseDNS no",
		"LogLevel VERBOSE",
		// Parallel tests may open many connections at once.
		"MaxStartups 100",
		"MaxSessions 100",
		"Subsystem sftp internal-sftp",
	}
	if perSourcePenalties {
		// OpenSSH 9.8+ would otherwise lock out 127.0.0.1 after tests
		// that deliberately fail host key checks.
		lines = append(lines, "PerSourcePenalties no")
	}
	return strings.Join(lines, "\n") + "\n"
}

var opensshVersion = regexp.MustCompile(`OpenSSH_(\d+)\.(\d+)`)

// sshdHasPerSourcePenalties reports whether sshd is OpenSSH 9.8 or later,
// the first that knows (and defaults on) PerSourcePenalties; older
// versions reject the option.
func sshdHasPerSourcePenalties(sshdPath string) bool {
	out, _ := exec.Command(sshdPath, "-V").CombinedOutput()
	m := opensshVersion.FindStringSubmatch(string(out))
	if m == nil {
		return false
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return major > 9 || major == 9 && minor >= 8
}

// writeEd25519Key generates a key, writes it in OpenSSH format with mode
// 0600 (sshd refuses readable host keys) and returns its signer.
func writeEd25519Key(t testing.TB, path string) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	mustWriteFile(t, path, pem.EncodeToMemory(block), 0o600)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return signer
}

// ClientConfig returns a client configuration that logs in as User with
// ClientSigner and accepts only the host key in KnownHostsFile.
func (s *SSHD) ClientConfig(t testing.TB) *ssh.ClientConfig {
	t.Helper()
	hostKeyCallback, err := knownhosts.New(s.KnownHostsFile)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return &ssh.ClientConfig{
		User:            s.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(s.ClientSigner)},
		HostKeyCallback: hostKeyCallback,
		Timeout:         10 * time.Second,
	}
}

// Dial opens a client connection, closed in t.Cleanup.
func (s *SSHD) Dial(t testing.TB) *ssh.Client {
	t.Helper()
	client, err := ssh.Dial("tcp", s.Addr, s.ClientConfig(t))
	if err != nil {
		t.Fatalf("testenv: ssh dial %s as %s: %v\n%s", s.Addr, s.User, err, logTail(s.LogFile))
	}
	t.Cleanup(func() { client.Close() })
	return client
}

// Run runs cmd in a new session on a new connection and returns its
// combined output. It fails t when the command fails.
func (s *SSHD) Run(t testing.TB, cmd string) string {
	t.Helper()
	client, err := ssh.Dial("tcp", s.Addr, s.ClientConfig(t))
	if err != nil {
		t.Fatalf("testenv: ssh dial %s as %s: %v\n%s", s.Addr, s.User, err, logTail(s.LogFile))
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		t.Fatalf("testenv: ssh session: %v\n%s", err, logTail(s.LogFile))
	}
	defer session.Close()
	out, err := session.CombinedOutput(cmd)
	if err != nil {
		var exitErr *ssh.ExitError
		if !errors.As(err, &exitErr) {
			err = fmt.Errorf("%w\n%s", err, logTail(s.LogFile))
		}
		t.Fatalf("testenv: ssh run %q as %s: %v\n%s", cmd, s.User, err, out)
	}
	return string(out)
}

// ShellQuote quotes s for a POSIX shell, for building commands for Run.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
