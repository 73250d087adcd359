package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/wal"
)

// errSpoolClosed: recovery is over and the spool hands out nothing more.
var errSpoolClosed = errors.New("the recovery's spool is closed")

// spool holds the WAL files recovery asks for, fetched from the host into
// a private folder: the one asked for, and when it is a segment, the next
// ones on its timeline, fetched ahead in parallel so recovery rarely waits.
// It holds at most ahead files beyond those being handed out: whatever
// falls out of the window after the segment asked for last is dropped
// (recovery moved to another timeline). Safe for concurrent use.
type spool struct {
	dir   string
	owner *osUser // chown fetched files to it; nil: leave them ours
	fetch guest.FetchFunc
	ahead int

	mu      sync.Mutex
	segSize int64 // learned from the first segment fetched
	entries map[string]*spoolEntry
	closed  bool
	stats   spoolStats
	wg      sync.WaitGroup
}

// spoolStats counts what the spool did, for guest.RecoveryResult.
type spoolStats struct {
	Fetched   int // files received from the host
	Requests  int // files asked for
	FromSpool int // asked for and already there
	Waited    int // asked for and waited on the host
	InFlight  int // of those, fetched ahead but not there yet
}

// spoolEntry is one file being fetched or fetched.
type spoolEntry struct {
	done    chan struct{} // closed when path, size and err are set
	path    string        // the verified file, when err is nil
	size    int64
	err     error
	cancel  context.CancelFunc
	dropped bool // no longer in the spool: remove the file when it arrives
}

func newSpool(dir string, owner *osUser, fetch guest.FetchFunc, ahead int) *spool {
	return &spool{dir: dir, owner: owner, fetch: fetch, ahead: ahead, entries: map[string]*spoolEntry{}}
}

// Get returns the path of a verified copy of the WAL file name in the
// spool, fetching it from the host unless it is there or on its way; the
// caller takes the file away (renames it). A file the archive does not hold
// gives an error matching guest.ErrNoSuchWAL. Fetches ahead started here
// run under ctx.
func (s *spool) Get(ctx context.Context, name string) (string, error) {
	f, err := wal.ParseFileName(name)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return "", errSpoolClosed
	}
	s.stats.Requests++
	e := s.entries[name]
	switch {
	case e == nil || isDone(e) && e.err != nil:
		// A file fetched ahead that failed, or that the archive did not
		// hold then, is asked for again: the archive may have grown.
		e = s.startLocked(ctx, name)
		s.stats.Waited++
	case isDone(e):
		s.stats.FromSpool++
	default:
		s.stats.Waited++
		s.stats.InFlight++
	}
	s.mu.Unlock()

	select {
	case <-e.done:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entries[name] == e {
		delete(s.entries, name)
	}
	if e.err != nil {
		return "", e.err
	}
	if f.Kind == wal.Segment {
		if s.segSize == 0 {
			s.segSize = e.size
		}
		s.aheadLocked(ctx, f)
	}
	return e.path, nil
}

func isDone(e *spoolEntry) bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// aheadLocked makes the spool hold the ahead segments after f: those
// outside that window go, missing ones start.
func (s *spool) aheadLocked(ctx context.Context, f wal.FileName) {
	if s.ahead <= 0 || s.closed || !wal.ValidSegmentSize(s.segSize) {
		return
	}
	window := make(map[string]bool, s.ahead)
	next := f
	for i := 0; i < s.ahead; i++ {
		next = next.Next(s.segSize)
		window[next.String()] = true
	}
	for name, e := range s.entries {
		if !window[name] {
			s.dropLocked(name, e)
		}
	}
	for name := range window {
		if s.entries[name] == nil {
			s.startLocked(ctx, name)
		}
	}
}

func (s *spool) dropLocked(name string, e *spoolEntry) {
	delete(s.entries, name)
	e.dropped = true
	e.cancel()
	if isDone(e) && e.path != "" {
		os.Remove(e.path)
	}
}

// startLocked starts fetching name in the background.
func (s *spool) startLocked(ctx context.Context, name string) *spoolEntry {
	fctx, cancel := context.WithCancel(ctx)
	e := &spoolEntry{done: make(chan struct{}), cancel: cancel}
	s.entries[name] = e
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		path, size, err := s.download(fctx, name)
		s.mu.Lock()
		defer s.mu.Unlock()
		e.path, e.size, e.err = path, size, err
		if err == nil {
			s.stats.Fetched++
			if e.dropped {
				os.Remove(path)
			}
		}
		close(e.done)
	}()
	return e
}

// download fetches name into a new file of the spool, which it returns
// once the content has been verified (the fetch function checks it).
func (s *spool) download(ctx context.Context, name string) (string, int64, error) {
	f, err := os.CreateTemp(s.dir, name+".")
	if err != nil {
		return "", 0, fmt.Errorf("spool %s: %w", name, err)
	}
	n := &countingWriter{w: f}
	err = s.fetch(ctx, name, n)
	if err == nil && s.owner != nil {
		err = f.Chown(s.owner.uid, s.owner.gid)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", 0, err
	}
	return f.Name(), n.n, nil
}

// Stats returns what the spool did so far.
func (s *spool) Stats() spoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Close stops every fetch, waits for them and removes what was fetched
// and not taken. Get fails afterwards. Idempotent.
func (s *spool) Close() {
	s.mu.Lock()
	s.closed = true
	for name, e := range s.entries {
		s.dropLocked(name, e)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
