package walbackup

import (
	"context"
	"fmt"
	"io"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/wal"
)

// FetchWAL writes the WAL file name of inst (a segment, .partial, .backup
// or .history file) from the repository to w, as recovery's
// restore_command asks for it. Its content is checked against the SHA-256
// stored with it before FetchWAL returns nil; on an error w may hold part
// of it and must be discarded. A file the repository does not hold gives an
// error matching repository.ErrNotFound: recovery asks for files past the
// end of the archive, so that is normal at the end of a restore.
//
// When w is a guest.ZstdReceiver, a file stored compressed goes to it as
// stored, with its size and SHA-256: not decompressed here, the receiver
// checks it (every chunk is still checked here as it streams).
func FetchWAL(ctx context.Context, repo repository.Repository, inst repository.Instance, name string, key *bundle.Key, w io.Writer) error {
	f, err := wal.ParseFileName(name)
	if err != nil {
		return fmt.Errorf("fetch wal: %w", err)
	}
	if f.Kind == wal.History {
		return fetchHistory(ctx, repo, inst, name, w)
	}
	refs, err := repository.Bundles(ctx, repo, inst, f.Timeline)
	if err != nil {
		return fmt.Errorf("fetch wal %s: %w", name, err)
	}
	// Newest bundle first: after a crash a file can be in two bundles, and
	// a later copy is as good as an earlier one (both were verified).
	covering := repository.Covering(refs, name)
	for i := len(covering) - 1; i >= 0; i-- {
		ref := covering[i]
		r, err := bundle.Open(ctx, repo, ref.Object.Name, ref.Object.Size, key)
		if err != nil {
			return fmt.Errorf("fetch wal %s: %w", name, err)
		}
		if _, ok := r.Entry(name); !ok {
			continue // the name range covers it, but this batch did not hold it
		}
		if zr, ok := w.(guest.ZstdReceiver); ok {
			e, _ := r.Entry(name)
			_, err = r.WriteCompressed(ctx, name, zr.Zstd(e.RawSize, e.SHA256))
		} else {
			_, err = r.WriteFile(ctx, name, w)
		}
		if err != nil {
			return fmt.Errorf("fetch wal %s: %w", name, err)
		}
		return nil
	}
	return fmt.Errorf("fetch wal %s: %w", name, repository.ErrNotFound)
}

// fetchHistory copies a timeline history file, stored as its own small
// object (read back and compared when it was shipped).
func fetchHistory(ctx context.Context, repo repository.Repository, inst repository.Instance, name string, w io.Writer) error {
	rc, err := repo.Get(ctx, inst.HistoryName(name), 0, -1)
	if err != nil {
		return fmt.Errorf("fetch wal %s: %w", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxHistory+1))
	if err != nil {
		return fmt.Errorf("fetch wal %s: %w", name, err)
	}
	if len(b) > maxHistory {
		return fmt.Errorf("fetch wal %s: over %d bytes", name, maxHistory)
	}
	_, err = w.Write(b)
	return err
}
