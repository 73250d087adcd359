// Package fs is a repository.Repository in a directory of the local file
// system (a local disk, or a mounted NAS share that honours fsync).
//
// Each object is a file at its name below the root. A Put writes a
// dot-prefixed temporary file next to its destination (object names never
// start with a dot, so temporary files are never listed or read), fsyncs
// it, moves it into place with renameat2(RENAME_NOREPLACE) so an existing
// object is never replaced (falling back to a hard link where the file
// system lacks it), and fsyncs the directory. A crash at any point leaves
// either no object or the whole object; at worst a stray temporary file.
// Files are created 0600 and directories 0700.
package fs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/pglogship/pglogship/repository"
)

var _ repository.Repository = (*Repo)(nil)

// Config configures New.
type Config struct {
	// Root is the directory that holds the repository; created (0700) if
	// missing. Required.
	Root string
}

// Repo is a repository in a local directory. Safe for concurrent use, also
// by several processes sharing the directory.
type Repo struct {
	root string
}

// New opens (creating if needed) the repository directory.
func New(cfg Config) (*Repo, error) {
	if cfg.Root == "" {
		return nil, errors.New("open fs repository: root directory is required")
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("open fs repository: %w", err)
	}
	if err := mkdirAllSync(root); err != nil {
		return nil, fmt.Errorf("open fs repository %s: %w", root, err)
	}
	return &Repo{root: root}, nil
}

// Root returns the repository's directory.
func (r *Repo) Root() string { return r.root }

func (r *Repo) path(name string) (string, error) {
	if err := repository.ValidName(name); err != nil {
		return "", err
	}
	return filepath.Join(r.root, filepath.FromSlash(name)), nil
}

// Put implements repository.Repository.
func (r *Repo) Put(ctx context.Context, name string, rd io.Reader) error {
	path, err := r.path(name)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := mkdirAllSync(dir); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	tmp, err := writeTemp(ctx, dir, rd)
	if err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	defer os.Remove(tmp) // no-op once renamed
	err = renameNoReplace(tmp, path)
	if errors.Is(err, unix.EEXIST) {
		same, cerr := sameContent(path, tmp)
		if cerr != nil {
			return fmt.Errorf("put %s: compare with existing: %w", name, cerr)
		}
		if !same {
			return fmt.Errorf("put %s: %w", name, repository.ErrConflict)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	return nil
}

// writeTemp streams rd into a new temporary file in dir and fsyncs it.
func writeTemp(ctx context.Context, dir string, rd io.Reader) (path string, err error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	path = filepath.Join(dir, ".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	_, err = io.Copy(f, repository.ContextReader(ctx, rd))
	if err != nil {
		return "", err
	}
	if err = f.Sync(); err != nil {
		return "", err
	}
	if err = f.Close(); err != nil {
		return "", err
	}
	return path, nil
}

func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
		// No RENAME_NOREPLACE here: link(2) also refuses an existing target.
		if err = os.Link(from, to); err == nil {
			return os.Remove(from)
		}
		var le *os.LinkError
		if errors.As(err, &le) {
			err = le.Err
		}
	}
	return err
}

// sameContent tells whether the files at a and b hold the same bytes.
func sameContent(a, b string) (bool, error) { return repository.SameFiles(os.Open, a, b) }

// mkdirAllSync creates dir and its missing parents (0700), fsyncing each
// parent so the new entries survive a crash.
func mkdirAllSync(dir string) error {
	st, err := os.Stat(dir)
	if err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAllSync(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// Get implements repository.Repository.
func (r *Repo) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	path, err := r.path(name)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, mapNotFound(err))
	}
	st, err := f.Stat()
	if err == nil && st.IsDir() {
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
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("%w: %v", repository.ErrNotFound, err)
	}
	return err
}

// Stat implements repository.Repository.
func (r *Repo) Stat(ctx context.Context, name string) (repository.Object, error) {
	path, err := r.path(name)
	if err != nil {
		return repository.Object{}, err
	}
	if err := ctx.Err(); err != nil {
		return repository.Object{}, err
	}
	st, err := os.Stat(path)
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
		entries, err := os.ReadDir(filepath.Join(r.root, filepath.FromSlash(dir)))
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		out := make([]repository.TreeEntry, 0, len(entries))
		for _, e := range entries {
			info, err := e.Info()
			if errors.Is(err, os.ErrNotExist) {
				continue // deleted while listing
			}
			if err != nil {
				return nil, err
			}
			out = append(out, repository.TreeEntry{Name: e.Name(), Dir: e.IsDir(), Regular: info.Mode().IsRegular(), Size: info.Size()})
		}
		return out, nil
	}, fn)
}

// Delete implements repository.Repository.
func (r *Repo) Delete(ctx context.Context, name string) error {
	path, err := r.path(name)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err = os.Remove(path)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return syncDir(filepath.Dir(path))
}
