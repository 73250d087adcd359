package runtime

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// The runtime runs as root while the data directory, and what it links
// to, may be the server user's: every path into it is opened through an
// os.Root (links that lead out of it are refused) or with O_NOFOLLOW, and
// ownership and modes are changed on handles, never on a path checked
// earlier.

// openDir opens dir, which must be a directory and not a symbolic link
// itself, as a root. A link that replaces it after the check can lead only
// to another entry of its parent, never elsewhere.
func openDir(what, dir string) (*os.Root, error) {
	parent, err := os.OpenRoot(filepath.Dir(dir))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, dir, err)
	}
	defer parent.Close()
	base := filepath.Base(dir)
	st, err := parent.Lstat(base)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, dir, err)
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		return nil, fmt.Errorf("%s %s: a symbolic link, refused: name the directory itself", what, dir)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s %s: not a directory", what, dir)
	}
	r, err := parent.OpenRoot(base)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, dir, err)
	}
	return r, nil
}

// checkTablespaceLinks refuses a data directory whose pg_tblspc holds a
// link that is not to a directory the restore placed (allowed, by OID):
// handOver gives what they point at to the server user. It returns the
// links' targets by OID.
func checkTablespaceLinks(root *os.Root, allowed map[uint32]string) (map[uint32]string, error) {
	entries, err := fs.ReadDir(root.FS(), "pg_tblspc")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pg_tblspc: %w", err)
	}
	links := map[uint32]string{}
	for _, e := range entries {
		if e.Type()&fs.ModeSymlink == 0 {
			continue // a directory (in place) or file: inside, handed over with the rest
		}
		name := "pg_tblspc/" + e.Name()
		target, err := root.Readlink(name)
		if err != nil {
			return nil, fmt.Errorf("tablespace %s: %w", name, err)
		}
		oid, perr := strconv.ParseUint(e.Name(), 10, 32)
		want, ok := allowed[uint32(oid)]
		if perr != nil || !ok || !filepath.IsAbs(target) || filepath.Clean(target) != filepath.Clean(want) {
			return nil, fmt.Errorf("tablespace link %s points to %s, not to a tablespace directory this restore placed (RecoveryConfig.Tablespaces): refused, nothing was changed",
				name, strconv.Quote(target))
		}
		links[uint32(oid)] = filepath.Clean(target)
	}
	return links, nil
}

// chownTree gives root's directory and everything below it to u, not
// following links and never leaving root. A file with several names not
// already u's is refused: another of its names may lie outside.
func chownTree(root *os.Root, u *osUser) error {
	err := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 && int(st.Uid) != u.uid {
				return fmt.Errorf("%s has %d names and is not %s's: refused", p, st.Nlink, u.name)
			}
		}
		return root.Lchown(p, u.uid, u.gid)
	})
	if err != nil {
		return fmt.Errorf("hand %s to %s: %w", root.Name(), u.name, err)
	}
	return nil
}

// makePrivate makes dir 0700 and owner's (nil: the runtime's user),
// through a handle opened without following a link.
func makePrivate(dir string, owner *osUser) error {
	f, err := openNoFollowDir(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return privateHandle(f, owner)
}

// openNoFollowDir opens dir, refusing a symbolic link in its place.
func openNoFollowDir(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// privateHandle makes the open directory f 0700 and owner's.
func privateHandle(f *os.File, owner *osUser) error {
	if owner != nil {
		if err := f.Chown(owner.uid, owner.gid); err != nil {
			return err
		}
	}
	return f.Chmod(0o700)
}

// writeFileIn writes data to name in root through a temporary file renamed
// over it (a link at name is replaced, not followed), mode 0600, owned by
// owner when not nil.
func writeFileIn(root *os.Root, name string, data []byte, owner *osUser) error {
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(name), "."+filepath.Base(name)+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil && owner != nil {
		err = f.Chown(owner.uid, owner.gid)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		root.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
