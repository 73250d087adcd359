package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// RuntimeDirPrefix starts the name of every folder a deployer makes for a
// runtime under its base folder.
const RuntimeDirPrefix = "rt-"

// LockFile is the file in a runtime folder its runtime holds locked while it
// runs; a folder whose lock can be taken belongs to no live runtime.
const LockFile = "lock"

// InstallLockFile is the file in the base folder that every deployer holds
// with a shared flock while it installs a runtime: from before it makes the
// runtime's folder until that runtime holds its LockFile. CleanStale holds
// it exclusively, so it never sees a folder between upload and exec.
const InstallLockFile = "install.lock"

// ErrUnsafeBase is returned for a base folder that another user could
// change: not owned by this user, or writable by its group or others.
var ErrUnsafeBase = errors.New("runtime base folder is not safe")

// HoldLock creates and locks path for the life of the process. The lock
// goes when the process does, however it ends.
func HoldLock(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) // f stays open on purpose
}

// CheckBase returns an error matching ErrUnsafeBase unless base, whose
// Lstat gave mode and owner, is a folder (not a link to one) owned by uid
// that neither its group nor others can write.
func CheckBase(base string, mode os.FileMode, owner, uid int) error {
	switch {
	case mode&os.ModeSymlink != 0:
		return fmt.Errorf("%w: %s is a symbolic link", ErrUnsafeBase, base)
	case !mode.IsDir():
		return fmt.Errorf("%w: %s is not a folder", ErrUnsafeBase, base)
	case owner != uid:
		return fmt.Errorf("%w: %s is owned by uid %d, not by this user (uid %d)", ErrUnsafeBase, base, owner, uid)
	case mode.Perm()&0o022 != 0:
		return fmt.Errorf("%w: %s is writable by other users (mode %04o)", ErrUnsafeBase, base, mode.Perm())
	}
	return nil
}

// CleanStale removes runtime folders under base whose runtime is gone (a
// host that crashed never uninstalled them), skipping self. It returns the
// folders removed. It blocks while a deployer installs a runtime under
// base (see InstallLockFile), and cleans nothing in a base folder that
// fails CheckBase.
func CleanStale(base, self string) ([]string, error) {
	st, err := os.Lstat(base)
	if err != nil {
		return nil, err
	}
	owner := -1
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		owner = int(sys.Uid)
	}
	if err := CheckBase(base, st.Mode(), owner, os.Geteuid()); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(base, InstallLockFile), os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open install lock: %w", err)
	}
	defer lock.Close() // releases the lock
	if err := flockRetry(lock, syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("take install lock: %w", err)
	}
	entries, err := os.ReadDir(base)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		dir := filepath.Join(base, e.Name())
		if !e.IsDir() || !strings.HasPrefix(e.Name(), RuntimeDirPrefix) || dir == self {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|syscall.O_NOFOLLOW, 0)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			continue
		}
		// No lock file: with no install under way (we hold the install
		// lock), its runtime never started.
		if err == nil {
			locked := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil
			f.Close()
			if locked {
				continue // a live runtime
			}
		}
		if err := os.RemoveAll(dir); err == nil {
			removed = append(removed, dir)
		}
	}
	return removed, nil
}

// flockRetry is a blocking flock that a signal does not end.
func flockRetry(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
