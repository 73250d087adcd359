package walbackup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/wal"
)

// FetchWAL writes the WAL file name of inst (a segment, .partial, .backup
// or .history file) from the repository to w, as recovery's
// restore_command asks for it. Its content is checked against the checksum
// stored with it before FetchWAL returns nil; on an error w may hold part
// of it and must be discarded. A file the repository does not hold gives an
// error matching repository.ErrNotFound: recovery asks for files past the
// end of the archive, so that is normal at the end of a restore.
//
// When w is a guest.ZstdReceiver, a file stored compressed with an XXH3
// goes to it as stored, with its size and checksum: not decompressed here,
// the receiver checks it (every chunk is still checked here as it
// streams). A file of a bundle of SHA-256 sums (written before XXH3) is
// decompressed and checked here.
func FetchWAL(ctx context.Context, repo repository.Repository, inst repository.Instance, name string, key *bundle.Key, w io.Writer) error {
	return newWALIndex(repo, inst, key).fetch(ctx, name, w)
}

// walIndex finds WAL files in an instance's bundles, keeping each
// timeline's bundle list and the indexes it opened: a restore asks for
// hundreds of segments out of the same few bundles, and shipping looks up a
// batch's names at once. Safe for concurrent use (bundle readers are
// read-only once open).
type walIndex struct {
	repo repository.Repository
	inst repository.Instance
	key  *bundle.Key

	mu     sync.Mutex
	refs   map[uint32][]repository.BundleRef
	opened map[string]*bundle.Reader
}

func newWALIndex(repo repository.Repository, inst repository.Instance, key *bundle.Key) *walIndex {
	return &walIndex{repo: repo, inst: inst, key: key, refs: map[uint32][]repository.BundleRef{}, opened: map[string]*bundle.Reader{}}
}

// find returns the newest bundle holding name, a WAL file of timeline tli,
// and its entry; ok is false when no bundle does. listed tells whether
// the timeline was listed for this call rather than known already.
func (x *walIndex) find(ctx context.Context, tli uint32, name string) (r *bundle.Reader, e bundle.Entry, ok, listed bool, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	refs, known := x.refs[tli]
	if !known {
		if refs, err = repository.Bundles(ctx, x.repo, x.inst, tli); err != nil {
			return nil, e, false, false, err
		}
		x.refs[tli], listed = refs, true
	}
	// After a crash a file can be in two bundles: the one made last wins
	// (a copy is stored again only when the one before failed its check),
	// and on equal times the last listed.
	// An index that cannot be read is an error only when no other bundle
	// holds the file.
	var best *bundle.Reader
	var openErr error
	for _, ref := range repository.Covering(refs, name) {
		r := x.opened[ref.Object.Name]
		if r == nil {
			o, err := bundle.Open(ctx, x.repo, ref.Object.Name, ref.Object.Size, x.key)
			if err != nil {
				openErr = errors.Join(openErr, fmt.Errorf("read the index of %s: %w", ref.Object.Name, err))
				continue
			}
			r = o
			x.opened[ref.Object.Name] = r
		}
		if _, ok := r.Entry(name); ok && (best == nil || !r.Created().Before(best.Created())) {
			best = r
		}
	}
	if best == nil {
		return nil, e, false, listed, openErr
	}
	e, _ = best.Entry(name)
	return best, e, true, listed, nil
}

// check reads the stored copy of name that readers take, a WAL file of
// timeline tli, through its checksum, and returns when its bundle was made;
// a copy that fails gives an error matching bundle.ErrCorrupt.
func (x *walIndex) check(ctx context.Context, tli uint32, name string) (time.Time, error) {
	r, _, ok, _, err := x.find(ctx, tli, name)
	if err == nil && !ok {
		err = fmt.Errorf("%s: %w", name, repository.ErrNotFound)
	}
	if err == nil {
		_, err = r.WriteFile(ctx, name, io.Discard)
	}
	if err != nil {
		var created time.Time
		if r != nil {
			created = r.Created()
		}
		return created, fmt.Errorf("check the stored copy of %s: %w", name, err)
	}
	return r.Created(), nil
}

// fetch is FetchWAL through the index. A name it does not find in the
// bundles it knew makes it list again: the archive may have grown.
func (x *walIndex) fetch(ctx context.Context, name string, w io.Writer) error {
	f, err := wal.ParseFileName(name)
	if err != nil {
		return fmt.Errorf("fetch wal: %w", err)
	}
	if f.Kind == wal.History {
		return fetchHistory(ctx, x.repo, x.inst, name, x.key, w)
	}
	r, e, ok, listed, err := x.find(ctx, f.Timeline, name)
	if err == nil && !ok && !listed {
		x.mu.Lock()
		delete(x.refs, f.Timeline)
		x.mu.Unlock()
		r, e, ok, _, err = x.find(ctx, f.Timeline, name)
	}
	switch {
	case err != nil:
		return fmt.Errorf("fetch wal %s: %w", name, err)
	case !ok:
		return fmt.Errorf("fetch wal %s: %w", name, repository.ErrNotFound)
	}
	// Receivers check XXH3 only: a file of an older bundle (SHA-256) is
	// checked here as it is decompressed, and summed again on the way.
	if zr, isZ := w.(guest.ZstdReceiver); isZ && e.Codec == bundle.Zstd && e.Sum.Algorithm == checksum.XXH3 {
		_, err = r.WriteCompressed(ctx, name, zr.Zstd(e.RawSize, e.Sum))
	} else {
		_, err = r.WriteFile(ctx, name, w)
	}
	if err != nil {
		return fmt.Errorf("fetch wal %s: %w", name, err)
	}
	return nil
}

// fetchHistory copies a timeline history file, stored as its own small
// object (read back and compared when it was shipped; sealed with a key).
func fetchHistory(ctx context.Context, repo repository.Repository, inst repository.Instance, name string, key *bundle.Key, w io.Writer) error {
	b, err := readHistoryObject(ctx, repo, inst.HistoryName(name), name, key)
	if err != nil {
		return fmt.Errorf("fetch wal %s: %w", name, err)
	}
	_, err = w.Write(b)
	return err
}
