package runtime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
)

// removed is the folder, inside the temporary folder, that shipped files
// are moved into on their way out; its name is no WAL file's, so Ready
// never lists it. A rename takes a file out of the folder at once, while
// unlinking a segment costs milliseconds (the kernel frees its cached
// pages, the file system discards its blocks: about 0.4 s per GiB on a
// virtual disk mounted with discard), so files are unlinked in the
// background, off the host's wait.
const removed = ".removed"

// remove takes shipped files out of dir: each is moved into dir/.removed,
// dir is fsynced (the files are gone from the folder, durably), and the
// purger unlinks them afterwards. Files already gone are fine: a retry
// after a lost response must succeed.
func (s *server) remove(ctx context.Context, names []string) error {
	bin := filepath.Join(s.dir, removed)
	if err := s.purge.moveInto(s.dir, bin, names); err != nil {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	s.purge.start(ctx, bin)
	return nil
}

// purger empties a folder in the background, one pass at a time: a pass
// asked for while one runs follows it. Safe for concurrent use.
type purger struct {
	mu      sync.Mutex
	running bool
	again   bool
	wg      sync.WaitGroup
}

// moveInto moves the files names of dir into bin, made when missing.
// Under the lock: a pass ending meanwhile removes bin.
func (p *purger) moveInto(dir, bin string, names []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range names {
		src := filepath.Join(dir, n)
		err := os.Rename(src, filepath.Join(bin, n))
		if errors.Is(err, os.ErrNotExist) {
			if _, serr := os.Lstat(src); serr != nil {
				continue // gone already
			}
			// bin is missing (never made, or removed by another runtime's
			// purger): make it and move again.
			if err = os.Mkdir(bin, 0o700); err == nil || errors.Is(err, os.ErrExist) {
				err = os.Rename(src, filepath.Join(bin, n))
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// start has dir emptied, then removed, until ctx ends; what is left then
// waits for the next start (a runtime empties dir when it prepares
// archiving).
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
		for {
			emptyDir(ctx, dir)
			p.mu.Lock()
			if !p.again || ctx.Err() != nil {
				_ = os.Remove(dir) // fails while files are left
				p.running, p.again = false, false
				p.mu.Unlock()
				return
			}
			p.again = false
			p.mu.Unlock()
		}
	}()
}

// wait returns once no pass runs.
func (p *purger) wait() { p.wg.Wait() }

// emptyDir unlinks the files in dir, best effort: one it cannot remove
// stays for the next pass.
func emptyDir(ctx context.Context, dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if ctx.Err() != nil {
			return
		}
		_ = os.Remove(filepath.Join(dir, e.Name()))
	}
}
