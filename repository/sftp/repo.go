// Package sftp is a repository.Repository on an SFTP server (OpenSSH's
// sftp-server or internal-sftp, or any server with the same extensions),
// reached with golang.org/x/crypto/ssh and github.com/pkg/sftp.
//
// Host keys are always verified: Config.HostKeyCallback is required (build
// one from a known_hosts file with golang.org/x/crypto/ssh/knownhosts).
//
// Writes follow the fs backend: a dot-prefixed temporary file next to the
// destination, fsync@openssh.com when the server offers it, then a commit
// that never replaces an existing object (see commit), then an fsync of the
// directory where the server allows opening it. Files are 0600 and
// directories 0700.
package sftp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/pglogship/pglogship/internal/sshutil"
	"github.com/pglogship/pglogship/repository"
)

var _ repository.Repository = (*Repo)(nil)

// DefaultTimeout bounds connecting and the SSH handshake.
const DefaultTimeout = 30 * time.Second

// Config configures New. Auth is never logged nor put into errors.
type Config struct {
	Addr            string              // host:port of the SSH server; required
	User            string              // required
	Auth            []ssh.AuthMethod    // key or password; required
	HostKeyCallback ssh.HostKeyCallback // required: there is no insecure default
	Root            string              // absolute directory on the server; created 0700 when missing
	Timeout         time.Duration       // connect and handshake; 0 means DefaultTimeout
	// Dial opens the connection to Addr; nil: a direct TCP connection.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Repo is a repository on an SFTP server. Safe for concurrent use.
type Repo struct {
	ssh       *ssh.Client
	c         *sftp.Client
	root      string
	fsync     bool
	hardlink  bool
	packet    int // bytes of data per read or write request
	closeOnce sync.Once
	closeErr  error
}

// New connects, opens the SFTP subsystem and creates Root. The host key is
// checked before anything else happens on the connection.
func New(ctx context.Context, cfg Config) (*Repo, error) {
	switch {
	case cfg.Addr == "" || cfg.User == "":
		return nil, errors.New("open sftp repository: address and user are required")
	case len(cfg.Auth) == 0:
		return nil, errors.New("open sftp repository: an authentication method is required")
	case cfg.HostKeyCallback == nil:
		return nil, errors.New("open sftp repository: HostKeyCallback is required (host keys are always verified)")
	case !path.IsAbs(cfg.Root) || path.Clean(cfg.Root) != cfg.Root:
		return nil, fmt.Errorf("open sftp repository: root %q must be a clean absolute path", cfg.Root)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	client, err := sshutil.DialVia(ctx, cfg.Dial, cfg.Addr, &ssh.ClientConfig{User: cfg.User, Auth: cfg.Auth, HostKeyCallback: cfg.HostKeyCallback}, cfg.Timeout)
	if err != nil {
		return nil, fmt.Errorf("open sftp repository %s: %w", cfg.Addr, err)
	}
	c, packet, err := startSFTP(client)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("open sftp repository %s: start sftp: %w", cfg.Addr, err)
	}
	r := &Repo{ssh: client, c: c, root: cfg.Root, packet: packet}
	if v, ok := c.HasExtension("fsync@openssh.com"); ok && v == "1" {
		r.fsync = true
	}
	if _, ok := c.HasExtension("hardlink@openssh.com"); ok {
		r.hardlink = true
	}
	if err := r.mkdirAll(cfg.Root); err != nil {
		r.Close()
		return nil, fmt.Errorf("open sftp repository %s: create %s: %w", cfg.Addr, cfg.Root, err)
	}
	return r, nil
}

// openSSHPacket is the most data OpenSSH's sftp-server takes or gives in
// one read or write (SFTP_MAX_MSG_LENGTH less its 1 KiB of headroom); a
// server announces such limits with limits@openssh.com.
const openSSHPacket = 255 << 10

// writeWindow is how many bytes of a Put are in flight at most: 64
// requests of 32 KiB, or 8 of OpenSSH's 255 KiB (with 4 MiB, the host's
// peak memory shipping into SFTP passed 64 MiB).
const writeWindow = 2 << 20

// startSFTP opens the SFTP subsystem with the protocol's 32 KiB packets
// and, on a server that announces OpenSSH's limits, again with packets of
// openSSHPacket: each packet is a round of the server's loop, and reads
// back run about a quarter faster (BenchmarkStreamSFTP).
func startSFTP(client *ssh.Client) (*sftp.Client, int, error) {
	const small = 32 << 10
	c, err := sftp.NewClient(client, sftp.UseConcurrentWrites(true), sftp.MaxPacket(small))
	if err != nil {
		return nil, 0, err
	}
	if _, ok := c.HasExtension("limits@openssh.com"); !ok {
		return c, small, nil
	}
	big, err := sftp.NewClient(client, sftp.UseConcurrentWrites(true), sftp.MaxPacketUnchecked(openSSHPacket))
	c.Close()
	if err != nil {
		return nil, 0, err
	}
	return big, openSSHPacket, nil
}

// Close ends the SFTP session and the connection. Idempotent.
func (r *Repo) Close() error {
	r.closeOnce.Do(func() {
		err := r.c.Close()
		if cerr := r.ssh.Close(); err == nil && !errors.Is(cerr, net.ErrClosed) {
			err = cerr
		}
		r.closeErr = err
	})
	return r.closeErr
}

func (r *Repo) path(name string) (string, error) {
	if err := repository.ValidName(name); err != nil {
		return "", err
	}
	return path.Join(r.root, name), nil
}

// mkdirAll creates dir and missing parents with mode 0700.
func (r *Repo) mkdirAll(dir string) error {
	st, err := r.c.Stat(dir)
	if err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if !isNotExist(err) {
		return err
	}
	if parent := path.Dir(dir); parent != dir {
		if err := r.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := r.c.Mkdir(dir); err != nil {
		if st, serr := r.c.Stat(dir); serr == nil && st.IsDir() {
			return nil // made concurrently
		}
		return err
	}
	return r.c.Chmod(dir, 0o700)
}

func isNotExist(err error) bool {
	var se *sftp.StatusError
	return errors.Is(err, os.ErrNotExist) || errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxNoSuchFile
}

// Put implements repository.Repository.
func (r *Repo) Put(ctx context.Context, name string, rd io.Reader) error {
	p, err := r.path(name)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dir := path.Dir(p)
	if err := r.mkdirAll(dir); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	tmp, err := r.writeTemp(ctx, dir, rd)
	if err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	defer r.c.Remove(tmp) // after a successful rename the name is gone already
	if err := r.commit(tmp, p); err != nil {
		if _, serr := r.c.Stat(p); serr != nil {
			return fmt.Errorf("put %s: %w", name, err)
		}
		same, cerr := r.sameContent(p, tmp)
		switch {
		case cerr != nil:
			return fmt.Errorf("put %s: compare with existing: %w", name, cerr)
		case !same:
			return fmt.Errorf("put %s: %w", name, repository.ErrConflict)
		}
		return nil
	}
	r.syncDir(dir)
	return nil
}

// commit moves tmp to final unless final exists. posix-rename@openssh.com is
// not used: it has rename(2) semantics and would replace an existing object.
// hardlink@openssh.com (link(2)) and OpenSSH's plain SSH_FXP_RENAME (link(2)
// then unlink(2)) both fail when the target exists.
func (r *Repo) commit(tmp, final string) error {
	if r.hardlink {
		if err := r.c.Link(tmp, final); err != nil {
			return err
		}
		return r.c.Remove(tmp)
	}
	return r.c.Rename(tmp, final)
}

func (r *Repo) writeTemp(ctx context.Context, dir string, rd io.Reader) (tmp string, err error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp = path.Join(dir, ".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := r.c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			r.c.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return "", err
	}
	// Writes in flight at once: File.ReadFrom does so only for a reader
	// whose size it can tell, and waits out each 32 KiB write otherwise.
	// writeWindow bounds the memory they hold.
	_, err = f.ReadFromWithConcurrency(repository.ContextReader(ctx, rd), max(1, min(64, writeWindow/r.packet)))
	if err != nil {
		return "", err
	}
	if r.fsync {
		if err = f.Sync(); err != nil {
			return "", fmt.Errorf("fsync: %w", err)
		}
	}
	if err = f.Close(); err != nil {
		return "", err
	}
	return tmp, nil
}

// syncDir makes the new directory entry durable where the server lets a
// directory be opened and fsynced (OpenSSH does); elsewhere it is best
// effort, as SFTP has no directory sync of its own.
func (r *Repo) syncDir(dir string) {
	if !r.fsync {
		return
	}
	if d, err := r.c.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// sameContent tells whether the files at a and b hold the same bytes.
func (r *Repo) sameContent(a, b string) (bool, error) { return repository.SameFiles(r.c.Open, a, b) }

// Get implements repository.Repository.
func (r *Repo) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	p, err := r.path(name)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := r.c.Open(p)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, mapNotFound(err))
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = repository.ErrNotFound
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	rc, err := repository.Section(f, st.Size(), offset, length)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	return rc, nil
}

func mapNotFound(err error) error {
	if isNotExist(err) {
		return fmt.Errorf("%w: %v", repository.ErrNotFound, err)
	}
	return err
}

// Stat implements repository.Repository.
func (r *Repo) Stat(ctx context.Context, name string) (repository.Object, error) {
	p, err := r.path(name)
	if err != nil {
		return repository.Object{}, err
	}
	if err := ctx.Err(); err != nil {
		return repository.Object{}, err
	}
	st, err := r.c.Stat(p)
	if err == nil && !st.Mode().IsRegular() {
		err = repository.ErrNotFound
	}
	if err != nil {
		return repository.Object{}, fmt.Errorf("stat %s: %w", name, mapNotFound(err))
	}
	return repository.Object{Name: name, Size: st.Size()}, nil
}

// List implements repository.Repository.
func (r *Repo) List(ctx context.Context, prefix string, fn func(repository.Object) error) error {
	return repository.WalkTree(ctx, prefix, func(dir string) ([]repository.TreeEntry, error) {
		infos, err := r.c.ReadDir(path.Join(r.root, dir))
		if isNotExist(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		out := make([]repository.TreeEntry, len(infos))
		for i, fi := range infos {
			out[i] = repository.TreeEntry{Name: fi.Name(), Dir: fi.IsDir(), Regular: fi.Mode().IsRegular(), Size: fi.Size()}
		}
		return out, nil
	}, fn)
}

// Delete implements repository.Repository.
func (r *Repo) Delete(ctx context.Context, name string) error {
	p, err := r.path(name)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.c.Remove(p); err != nil && !isNotExist(err) {
		if _, serr := r.c.Stat(p); isNotExist(serr) {
			return nil // a missing parent directory reports otherwise
		}
		return fmt.Errorf("delete %s: %w", name, err)
	}
	r.syncDir(path.Dir(p))
	return nil
}
