package runtime

import (
	"errors"
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

// HoldLock creates and locks path for the life of the process. The lock
// goes when the process does, however it ends.
func HoldLock(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) // f stays open on purpose
}

// CleanStale removes runtime folders under base whose runtime is gone (a
// host that crashed never uninstalled them), skipping self. It returns the
// folders removed.
func CleanStale(base, self string) ([]string, error) {
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
		f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR, 0)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			continue
		}
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
