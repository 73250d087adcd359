package runtime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sync"
)

// removed is the folder, inside the temporary folder, that shipped files
// are moved into on their way out; its name is no WAL file's, so Ready
// never lists it. A rename takes a file out of the folder at once, while
// unlinking a segment costs milliseconds (the kernel frees its cached
// pages, the file system discards its blocks: about 0.4 s per GiB on a
// virtual disk mounted with discard), so files are unlinked in the
// background, off the host's wait.
//
// The runtime may run as root in a folder the server user owns: every
// path is taken through an os.Root of the folder, and a .removed that is
// not a directory of its own (a symbolic link) is refused, so nothing
// outside the folder is ever moved or unlinked.
const removed = ".removed"

// remove takes shipped files out of the temporary folder: each is moved
// into .removed, the folder is fsynced (the files are gone from it,
// durably), and the purger unlinks them afterwards. Files already gone
// are fine: a retry after a lost response must succeed.
func (s *server) remove(ctx context.Context, names []string) error {
	if err := s.purge.moveInto(s.dir, names); err != nil {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	s.purge.start(ctx, s.dir)
	return nil
}

// purger empties dir/.removed in the background, one pass at a time: a
// pass asked for while one runs follows it. Safe for concurrent use.
type purger struct {
	mu      sync.Mutex
	running bool
	again   bool
	wg      sync.WaitGroup
}

// moveInto moves the files names of dir into dir/.removed, made when
// missing. Under the lock: a pass ending meanwhile removes .removed.
func (p *purger) moveInto(dir string, names []string) error {
	root, err := openDir("remove shipped files from", dir)
	if err != nil {
		return err
	}
	defer root.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := makeBin(root); err != nil {
		return err
	}
	for _, n := range names {
		to := path.Join(removed, n)
		err := root.Rename(n, to)
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := root.Lstat(n); serr != nil {
				continue // gone already
			}
			// .removed went meanwhile (another runtime's purger): again.
			if err = makeBin(root); err == nil {
				err = root.Rename(n, to)
			}
		}
		if err != nil {
			return fmt.Errorf("remove %s: %w", n, err)
		}
	}
	return nil
}

// makeBin makes .removed when missing.
func makeBin(root *os.Root) error {
	if err := root.Mkdir(removed, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("make %s: %w", removed, err)
	}
	return ownBin(root)
}

// ownBin checks that .removed is a directory of its own, not a link.
func ownBin(root *os.Root) error {
	st, err := root.Lstat(removed)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory (%s): refused", removed, st.Mode().Type())
	}
	return nil
}

// start has dir/.removed emptied, then removed, until ctx ends; what is
// left then waits for the next start (a runtime empties it when it
// prepares archiving).
func (p *purger) start(ctx context.Context, dir string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running {
		p.again = true
		return
	}
	p.running = true
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for p.pass(ctx, dir) {
		}
	}()
}

// pass empties .removed once and tells whether another pass is due.
func (p *purger) pass(ctx context.Context, dir string) bool {
	root, err := openDir("purge", dir)
	if err == nil {
		defer root.Close()
		emptyBin(ctx, root)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.again && ctx.Err() == nil {
		p.again = false
		return true
	}
	if err == nil {
		_ = root.Remove(removed) // fails while files are left
	}
	p.running, p.again = false, false
	return false
}

// wait returns once no pass runs.
func (p *purger) wait() { p.wg.Wait() }

// emptyBin unlinks the files in .removed, best effort: one it cannot
// remove stays for the next pass.
func emptyBin(ctx context.Context, root *os.Root) {
	if ownBin(root) != nil {
		return
	}
	entries, err := fs.ReadDir(root.FS(), removed)
	if err != nil {
		return
	}
	for _, e := range entries {
		if ctx.Err() != nil {
			return
		}
		_ = root.Remove(path.Join(removed, e.Name()))
	}
}
