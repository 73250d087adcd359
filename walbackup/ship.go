package walbackup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/wal"
)

// ErrChecksum means a file's content changed between the guest and the
// repository: the guest's checksum and the stored bundle's disagree.
var ErrChecksum = errors.New("wal file checksum mismatch between guest and repository")

// Shipped is what one ShipOnce moved.
type Shipped struct {
	Files       int      // files shipped and removed from the guest
	RawBytes    int64    // their size as PostgreSQL wrote them
	StoredBytes int64    // bundle bytes written
	First, Last string   // first and last file name shipped, in WAL order
	Names       []string // every file shipped, in WAL order
	Objects     []string // repository objects written
}

// ShipOptions tune ShipOnce.
type ShipOptions struct {
	Key *bundle.Key // encrypts the bundles when set
	// Time is when the batch is shipped, recorded in each bundle for
	// retention by age; the job passes its clock's time.
	Time time.Time
}

// ShipOnce moves the WAL waiting in one guest into the repository: one
// bundle per timeline (history files as their own objects), each read back
// and verified against the checksums the guest computed, and only then are
// the files removed from the guest. On any error nothing is removed, so the
// files are shipped again next time; a bundle already written then simply
// overlaps the next one, which readers accept.
func ShipOnce(ctx context.Context, rt guest.Runtime, repo repository.Repository, inst repository.Instance, opts ShipOptions) (Shipped, error) {
	var out Shipped
	files, err := rt.Ready(ctx)
	if err != nil {
		return out, fmt.Errorf("list ready wal: %w", err)
	}
	var histories []string
	groups := map[uint32][]string{}
	var order []uint32
	for _, f := range files {
		fn, err := wal.ParseFileName(f.Name)
		if err != nil {
			continue // Ready lists only WAL names; be safe anyway
		}
		if fn.Kind == wal.History {
			histories = append(histories, f.Name)
			continue
		}
		if _, ok := groups[fn.Timeline]; !ok {
			order = append(order, fn.Timeline)
		}
		groups[fn.Timeline] = append(groups[fn.Timeline], f.Name)
	}
	var shipped []string
	for _, name := range histories {
		n, err := shipHistory(ctx, rt, repo, inst, name)
		if err != nil {
			return out, err
		}
		out.add(name, n, n)
		out.Objects = append(out.Objects, inst.HistoryName(name))
		shipped = append(shipped, name)
	}
	for _, tli := range order {
		names := groups[tli]
		obj, raw, stored, err := shipBundle(ctx, rt, repo, inst, tli, names, opts)
		if err != nil {
			return out, err
		}
		for _, n := range names {
			out.add(n, 0, 0)
		}
		out.RawBytes += raw
		out.StoredBytes += stored
		out.Objects = append(out.Objects, obj)
		shipped = append(shipped, names...)
	}
	if len(shipped) == 0 {
		return out, nil
	}
	if err := rt.Remove(ctx, shipped); err != nil {
		return out, fmt.Errorf("remove shipped wal from the guest: %w", err)
	}
	out.Names = shipped
	sort.Strings(out.Names)
	return out, nil
}

func (s *Shipped) add(name string, raw, stored int64) {
	s.Files++
	s.RawBytes += raw
	s.StoredBytes += stored
	if s.First == "" || name < s.First {
		s.First = name
	}
	if name > s.Last {
		s.Last = name
	}
}

// shipBundle streams the files into one bundle and verifies it.
func shipBundle(ctx context.Context, rt guest.Runtime, repo repository.Repository, inst repository.Instance,
	tli uint32, names []string, opts ShipOptions) (obj string, raw, stored int64, err error) {
	key := opts.Key
	obj = inst.NewBundleName(tli, names[0], names[len(names)-1])
	want := make(map[string][32]byte, len(names))
	pr, pw := io.Pipe()
	readErr := make(chan error, 1)
	go func() {
		err := func() error {
			w, err := bundle.NewWriter(pw, key)
			if err != nil {
				return err
			}
			w.SetCreated(opts.Time)
			err = rt.Read(ctx, names, func(f guest.Frame) error {
				codec := bundle.Raw
				if f.Codec == guest.CodecZstd {
					codec = bundle.Zstd
				}
				e, err := w.Add(f.Name, codec, f.Data)
				if err != nil {
					return err
				}
				size, sum := f.Checksum()
				if size != e.RawSize || sum != e.SHA256 {
					return fmt.Errorf("%w: %s", ErrChecksum, f.Name)
				}
				want[f.Name] = sum
				raw += size
				return nil
			})
			if err != nil {
				return err
			}
			if len(want) != len(names) {
				return fmt.Errorf("guest sent %d of %d files", len(want), len(names))
			}
			_, err = w.Close()
			return err
		}()
		pw.CloseWithError(err)
		readErr <- err
	}()
	putErr := repo.Put(ctx, obj, pr)
	pr.CloseWithError(putErr) // unblocks the reader if Put gave up
	if err := <-readErr; err != nil {
		return "", 0, 0, fmt.Errorf("ship %s..%s: %w", names[0], names[len(names)-1], err)
	}
	if putErr != nil {
		return "", 0, 0, fmt.Errorf("store %s: %w", obj, putErr)
	}
	st, err := repo.Stat(ctx, obj)
	if err != nil {
		return "", 0, 0, fmt.Errorf("read back %s: %w", obj, err)
	}
	if err := bundle.Verify(ctx, repo, obj, st.Size, key, want); err != nil {
		return "", 0, 0, fmt.Errorf("read back %s: %w", obj, err)
	}
	return obj, raw, st.Size, nil
}

// shipHistory stores a timeline history file as its own object. The same
// name with other content is a split brain: Put refuses it.
func shipHistory(ctx context.Context, rt guest.Runtime, repo repository.Repository, inst repository.Instance, name string) (int64, error) {
	var content []byte
	var sum [32]byte
	err := rt.Read(ctx, []string{name}, func(f guest.Frame) error {
		b, err := decode(f)
		if err != nil {
			return err
		}
		size, s := f.Checksum()
		if int64(len(b)) != size || sha256.Sum256(b) != s {
			return fmt.Errorf("%w: %s", ErrChecksum, name)
		}
		content, sum = b, s
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ship %s: %w", name, err)
	}
	obj := inst.HistoryName(name)
	if err := repo.Put(ctx, obj, bytes.NewReader(content)); err != nil {
		return 0, fmt.Errorf("store %s: %w", obj, err)
	}
	rc, err := repo.Get(ctx, obj, 0, -1)
	if err != nil {
		return 0, fmt.Errorf("read back %s: %w", obj, err)
	}
	defer rc.Close()
	back, err := io.ReadAll(rc)
	if err != nil || sha256.Sum256(back) != sum {
		return 0, fmt.Errorf("read back %s: %w", obj, errors.Join(err, ErrChecksum))
	}
	return int64(len(content)), nil
}
