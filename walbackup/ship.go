package walbackup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/pglogship/pglogship/clock"
	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/internal/walbundle"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/wal"
)

// ErrChecksum means a file's content changed between the guest and the
// repository: the guest's checksum and the stored bundle's disagree.
var ErrChecksum = walbundle.ErrChecksum

// ErrSplitBrain means the guest archived a WAL file whose name the
// repository already holds with other content: two instances with one
// history (a failover without fencing, a restored instance promoted twice).
// The repository's copy stays; the guest's is kept aside in the repository
// (Instance.ConflictName) and leaves the guest, so shipping goes on.
var ErrSplitBrain = errors.New("wal file stored with other content: split brain")

// Shipped is what one ShipOnce moved.
type Shipped struct {
	Files       int      // files shipped and removed from the guest
	RawBytes    int64    // their size as PostgreSQL wrote them
	StoredBytes int64    // bundle bytes written
	First, Last string   // first and last file name shipped, in WAL order
	Names       []string // every file shipped, in WAL order
	Objects     []string // repository objects written
	// Direct: the segments went from the guest to the repository
	// without passing through the host.
	Direct bool
	// Unsummarized are the shipped segments whose records could not all
	// be read for their WAL summary (a format the reader does not know,
	// a record it cannot parse). They are stored and restorable like any
	// other; only a restore's checks of time, transaction and name
	// targets cannot see into them.
	Unsummarized []UnknownSummary
}

// UnknownSummary is a shipped segment whose summary covers only its
// records before From, because the reader could not read on from there.
type UnknownSummary = walbundle.Unknown

// ShipOptions tune ShipOnce.
type ShipOptions struct {
	Key *bundle.Key // encrypts the bundles when set
	// Direct, when set, ships the segments through the guest's own
	// connection to the repository instead of through the host.
	Direct *Direct
	// Time is when the batch is shipped, recorded in each bundle for
	// retention by age; the job passes its clock's time.
	Time time.Time
	// BundleBytes caps the raw WAL per bundle shipped through the host
	// (Shipping.HostBundleBytes); 0 means DefaultHostBundleBytes.
	BundleBytes int64
	// Clock bounds the deletion of a bundle that failed its read-back
	// once ctx is done (cleanupTimeout); nil: the deletion ends with ctx.
	Clock clock.Clock

	tap walbundle.Filter // tests: what the summarizer reads
}

// ShipOnce moves the WAL waiting in one guest into the repository: bundles
// per timeline of at most opts.BundleBytes (or Direct.MaxBytes) of raw WAL
// (history files as their own objects), each read back and verified against
// the checksums the guest computed, and only then are its files removed
// from the guest. On an error, the files of the bundles verified before it
// leave the guest and the rest are shipped again next time (a copy kept
// aside after a split brain stays too, so the next ship reports it again);
// a bundle that fails its verification is deleted. Files the repository
// holds already (a bundle stored but never verified: the host stopped) are
// compared with the guest's and read through their checksum before they
// leave the guest; a stored copy that fails is stored again.
func ShipOnce(ctx context.Context, rt guest.Runtime, repo repository.Repository, inst repository.Instance, opts ShipOptions) (Shipped, error) {
	var out Shipped
	files, err := rt.Ready(ctx)
	if err != nil {
		return out, fmt.Errorf("list ready wal: %w", err)
	}
	var histories []string
	sizes := make(map[string]int64, len(files))
	groups := map[uint32][]string{}
	var order []uint32
	for _, f := range files {
		fn, err := wal.ParseFileName(f.Name)
		if err != nil {
			continue // Ready lists only WAL names; be safe anyway
		}
		sizes[f.Name] = f.Size
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
	var conflicts []error
	aside := map[string]bool{} // kept aside after a split brain
	fail := func(err error) (Shipped, error) {
		// What was verified leaves the guest; what was kept aside stays,
		// so the next ship reports its split brain again.
		var gone []string
		for _, n := range shipped {
			if !aside[n] {
				gone = append(gone, n)
			}
		}
		out.Names = slices.Sorted(slices.Values(gone))
		return out, errors.Join(err, removeShipped(ctx, rt, gone))
	}
	for _, name := range histories {
		var n int64
		var err error
		if opts.Direct != nil && opts.Key == nil {
			n, err = shipHistoryDirect(ctx, opts.Direct, repo, inst, name)
		} else {
			n, err = shipHistory(ctx, rt, repo, inst, name, opts.Key)
		}
		if errors.Is(err, repository.ErrConflict) {
			// Another history of the same timeline: keep this one aside.
			_, err = compareStored(ctx, rt, repo, inst, name, checksum.Sum{}, opts)
			if errors.Is(err, ErrSplitBrain) {
				conflicts = append(conflicts, err)
				shipped = append(shipped, name)
				aside[name] = true
				continue
			}
		}
		if err != nil {
			return fail(err)
		}
		out.add(name, n, n)
		out.Objects = append(out.Objects, inst.HistoryName(name))
		shipped = append(shipped, name)
	}
	for _, tli := range order {
		// Names the repository may hold already (shipped before a crash, or
		// a split brain) are compared, not stored again.
		names, known, x, err := storedSums(ctx, repo, inst, tli, groups[tli], opts.Key)
		if err != nil {
			return fail(err)
		}
		var again []string // stored before, but the stored copy is corrupt
		var corrupt time.Time
		for _, name := range slices.Sorted(maps.Keys(known)) {
			same, err := compareStored(ctx, rt, repo, inst, name, known[name], opts)
			if err != nil && !errors.Is(err, ErrSplitBrain) {
				return fail(err)
			}
			if same {
				// Its bundle may never have been read back (the host
				// stopped before): the stored bytes decide.
				created, err := x.check(ctx, tli, name)
				if errors.Is(err, bundle.ErrCorrupt) {
					again = append(again, name)
					if created.After(corrupt) {
						corrupt = created
					}
					continue
				}
				if err != nil {
					return fail(err)
				}
			}
			if err != nil {
				conflicts = append(conflicts, err)
				aside[name] = true
			} else if same {
				out.add(name, 0, 0)
			}
			shipped = append(shipped, name) // stored, or kept aside
		}
		ship := func(batch []string, o ShipOptions) error {
			var sent []shippedBundle
			var err error
			if o.Direct != nil {
				sent, err = shipDirect(ctx, o.Direct, repo, inst, tli, batch, sizes, o)
				out.Direct = true
			} else {
				sent, err = shipBundles(ctx, rt, repo, inst, tli, batch, sizes, o)
			}
			for _, b := range sent {
				// Verified: these leave the guest even if a later bundle failed.
				out.Unsummarized = append(out.Unsummarized, b.unknown...)
				for _, n := range b.names {
					out.add(n, 0, 0)
				}
				out.RawBytes += b.raw
				out.StoredBytes += b.stored
				out.Objects = append(out.Objects, b.object)
				shipped = append(shipped, b.names...)
			}
			return err
		}
		if len(again) > 0 {
			// In bundles of their own, made after the corrupt copy's, which
			// readers then take (the bundle made last wins).
			o := opts
			if !o.Time.After(corrupt) {
				o.Time = corrupt.Add(time.Millisecond)
			}
			if err := ship(again, o); err != nil {
				return fail(err)
			}
		}
		if len(names) > 0 {
			if err := ship(names, opts); err != nil {
				return fail(err)
			}
		}
	}
	if len(shipped) == 0 {
		return out, nil
	}
	if err := removeShipped(ctx, rt, shipped); err != nil {
		return out, err
	}
	out.Names = shipped
	slices.Sort(out.Names)
	return out, errors.Join(conflicts...)
}

// removeShipped removes files the repository holds verified from the
// guest.
func removeShipped(ctx context.Context, rt guest.Runtime, names []string) error {
	if len(names) == 0 {
		return nil
	}
	if err := rt.Remove(ctx, names); err != nil {
		return fmt.Errorf("remove shipped wal from the guest: %w", err)
	}
	return nil
}

// storedSums splits a timeline's batch into the names the repository does
// not hold yet and those it does, with the checksum of the stored copy.
// Only names up to the newest bundle's last one can be stored, so shipping
// new WAL costs one listing.
func storedSums(ctx context.Context, repo repository.Repository, inst repository.Instance, tli uint32, names []string,
	key *bundle.Key) (fresh []string, known map[string]checksum.Sum, x *walIndex, err error) {
	x = newWALIndex(repo, inst, key)
	known = map[string]checksum.Sum{}
	for _, name := range names {
		_, e, ok, _, err := x.find(ctx, tli, name)
		if err != nil {
			return nil, nil, nil, err
		}
		if ok {
			known[name] = e.Sum
		} else {
			fresh = append(fresh, name)
		}
	}
	return fresh, known, x, nil
}

// compareStored reads a guest file whose name the repository holds and
// tells whether the contents agree. When they do not, the guest's copy is
// kept aside in the repository (verified) and the error matches
// ErrSplitBrain; either way the guest's file may then go.
func compareStored(ctx context.Context, rt guest.Runtime, repo repository.Repository, inst repository.Instance, name string,
	stored checksum.Sum, opts ShipOptions) (bool, error) {
	var sum, same checksum.Sum // the guest's, and in the stored copy's algorithm
	err := rt.Read(ctx, []string{name}, func(f guest.Frame) error {
		var err error
		if stored.IsZero() || stored.Algorithm == walbundle.Checksum {
			_, err = io.Copy(io.Discard, f.Data)
		} else { // an older copy's SHA-256: summed here
			h := checksum.New(stored.Algorithm)
			err = decoded(f, func(r io.Reader) error { _, err := io.Copy(h, r); return err })
			same = h.Sum()
		}
		if err != nil {
			return err
		}
		_, sum = f.Checksum()
		switch {
		case !stored.IsZero() && stored.Algorithm == walbundle.Checksum && sum.Algorithm != stored.Algorithm:
			// Not comparable: never taken for other content.
			return fmt.Errorf("the guest summed %s with %v, WAL sums with %v", name, sum.Algorithm, stored.Algorithm)
		case same.IsZero():
			same = sum
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("compare %s with the stored copy: %w", name, err)
	}
	if same == stored {
		return true, nil
	}
	aside := inst.ConflictName(name, sum.Digest)
	if err := keepAside(ctx, rt, repo, aside, name, sum, opts); err != nil {
		return false, fmt.Errorf("keep %s aside: %w", name, err)
	}
	return false, fmt.Errorf("%w: %s: the repository holds %v, the guest archived %v (kept aside as %s)",
		ErrSplitBrain, name, stored, same, aside)
}

// keepAside stores one guest file as a bundle of its own and reads it back;
// the file must still have the checksum it was compared with.
func keepAside(ctx context.Context, rt guest.Runtime, repo repository.Repository, obj, name string, sum checksum.Sum, opts ShipOptions) error {
	w, err := writeBundle(ctx, rt, repo, obj, []string{name}, opts)
	if errors.Is(err, repository.ErrConflict) {
		// Kept aside by an earlier ship (the copy stayed in the guest):
		// the name is the content's, so the stored copy must be this one.
		return keptAside(ctx, repo, obj, name, sum, opts.Key)
	}
	if err == nil && w.want[name] != sum {
		err = fmt.Errorf("%w: %s changed while it was kept aside", ErrChecksum, name)
	}
	return err
}

// keptAside checks that obj holds name with checksum sum, read through it.
func keptAside(ctx context.Context, repo repository.Repository, obj, name string, sum checksum.Sum, key *bundle.Key) error {
	st, err := repo.Stat(ctx, obj)
	if err != nil {
		return err
	}
	r, err := bundle.Open(ctx, repo, obj, st.Size, key)
	if err != nil {
		return err
	}
	if e, ok := r.Entry(name); !ok || e.Sum != sum {
		return fmt.Errorf("%s holds another copy of %s: %w", obj, name, repository.ErrConflict)
	}
	_, err = r.WriteFile(ctx, name, io.Discard)
	return err
}

// merge adds what a second ShipOnce of the same guest moved.
func (s *Shipped) merge(o Shipped) {
	for _, n := range o.Names {
		s.add(n, 0, 0)
	}
	s.Names = slices.Sorted(slices.Values(append(s.Names, o.Names...)))
	s.RawBytes += o.RawBytes
	s.StoredBytes += o.StoredBytes
	s.Objects = append(s.Objects, o.Objects...)
	s.Unsummarized = append(s.Unsummarized, o.Unsummarized...)
	s.Direct = s.Direct && o.Direct
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

// shipBundles ships one timeline's new files through the host in bundles
// of at most opts.BundleBytes of raw WAL, each streamed while the one
// before is read back: the read-back of a bundle (a second trip over the
// network for a remote store) then costs the time of the last one only.
// It returns the bundles stored and verified; on error, those stay
// counted (their WAL is in the repository) and the rest waits in the guest.
func shipBundles(ctx context.Context, rt guest.Runtime, repo repository.Repository, inst repository.Instance, tli uint32,
	names []string, sizes map[string]int64, opts ShipOptions) ([]shippedBundle, error) {
	limit := opts.BundleBytes
	if limit <= 0 {
		limit = DefaultHostBundleBytes
	}
	var out []shippedBundle
	var pending *shippedBundle // stored, being read back
	verified := make(chan error, 1)
	wait := func() error {
		if pending == nil {
			return nil
		}
		err := <-verified
		if err == nil {
			out = append(out, *pending)
		}
		pending = nil
		return err
	}
	for len(names) > 0 {
		n := nextBundle(names, sizes, limit)
		b, verify, err := storeBundle(ctx, rt, repo, inst, tli, names[:n], sizes, opts)
		if werr := wait(); err == nil {
			err = werr
		} else if werr != nil {
			err = errors.Join(err, werr)
		}
		if err != nil {
			return out, err
		}
		pending = &b
		go func() { verified <- deleteUnverified(ctx, opts.Clock, repo, b.object, verify(ctx)) }()
		names = names[n:]
	}
	return out, wait()
}

// nextBundle tells how many of names (at least one) go into the next
// bundle of at most limit bytes of raw WAL.
func nextBundle(names []string, sizes map[string]int64, limit int64) int {
	n, raw := 0, int64(0)
	for n < len(names) && (n == 0 || raw+sizes[names[n]] <= limit) {
		raw += sizes[names[n]]
		n++
	}
	return n
}

// deleteUnverified deletes obj when it failed a check after it was stored
// (err), as direct shipping does: nothing unverified stays for a restore or
// the next ship to trust; its files wait in the guest and ship again.
func deleteUnverified(ctx context.Context, clk clock.Clock, repo repository.Repository, obj string, err error) error {
	if err == nil || errors.Is(err, repository.ErrNotFound) {
		return err
	}
	if clk != nil {
		var cancel context.CancelFunc
		ctx, cancel = clock.WithTimeout(clk, context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
	}
	if derr := repo.Delete(ctx, obj); derr != nil && !errors.Is(derr, repository.ErrNotFound) {
		err = errors.Join(err, fmt.Errorf("delete the unverified %s: %w", obj, derr))
	}
	return err
}

// storeBundle moves the files into one bundle and returns what verifies
// it: built in the guest and streamed through the host when the runtime
// can (the same pipeline as direct shipping), else built here from the
// files the guest streams (a job with a key seals bundles on the host;
// tests that filter what the summarizer reads need it here).
func storeBundle(ctx context.Context, rt guest.Runtime, repo repository.Repository, inst repository.Instance,
	tli uint32, names []string, sizes map[string]int64, opts ShipOptions) (shippedBundle, func(context.Context) error, error) {
	obj := inst.NewBundleName(tli, names[0], names[len(names)-1])
	if bs, ok := streamerOf(rt); ok && opts.Key == nil && opts.tap == nil {
		return streamBundle(ctx, bs, repo, obj, names, sizes, opts)
	}
	w, err := storeWritten(ctx, rt, repo, obj, names, opts)
	return w.shippedBundle, w.verify, err
}

// streamBundle has the guest build the bundle obj of names and stream it
// here and stores it as it comes. The function it returns reads it back:
// the stored bytes against the checksum the guest made of the bundle (so
// they arrived as sent), and its index against the files the guest
// reported.
func streamBundle(ctx context.Context, bs guest.BundleStreamer, repo repository.Repository, obj string, names []string,
	sizes map[string]int64, opts ShipOptions) (shippedBundle, func(context.Context) error, error) {
	var putErr error
	// The guest sums the bundle's bytes with XXH3: only this host checks it.
	req := guest.StageRequest{Object: obj, Names: names, Created: opts.Time, Checksum: checksum.XXH3}
	staged, err := bs.StreamBundle(ctx, req, func(r io.Reader) error {
		putErr = repo.Put(ctx, obj, r)
		return putErr
	})
	switch {
	case putErr != nil:
		return shippedBundle{}, nil, fmt.Errorf("store %s: %w", obj, putErr)
	case err != nil:
		return shippedBundle{}, nil, fmt.Errorf("ship %s..%s: %w", names[0], names[len(names)-1], err)
	}
	want, raw, err := checkStaged(obj, names, sizes, staged)
	if err != nil {
		return shippedBundle{}, nil, deleteUnverified(ctx, opts.Clock, repo, obj, err)
	}
	verify := func(ctx context.Context) error {
		if err := bundle.VerifyStored(ctx, repo, obj, staged.Size, nil, want, staged.Sum); err != nil {
			return fmt.Errorf("read back %s: %w", obj, err)
		}
		return nil
	}
	return shippedBundle{object: obj, names: names, raw: raw, stored: staged.Size, unknown: staged.Unknown}, verify, nil
}

// written is a bundle storeWritten stored, not yet read back.
type written struct {
	shippedBundle
	want   map[string]checksum.Sum     // each file's checksum
	verify func(context.Context) error // reads it back
}

// writeBundle stores the guest files names as the bundle obj and reads it
// back.
func writeBundle(ctx context.Context, rt guest.Runtime, repo repository.Repository, obj string, names []string,
	opts ShipOptions) (written, error) {
	w, err := storeWritten(ctx, rt, repo, obj, names, opts)
	if err == nil {
		err = w.verify(ctx)
	}
	return w, err
}

// storeWritten streams the guest files names into the bundle obj, each
// checked against the guest's checksum.
func storeWritten(ctx context.Context, rt guest.Runtime, repo repository.Repository, obj string, names []string,
	opts ShipOptions) (written, error) {
	var raw int64
	var want map[string]checksum.Sum
	var unknown []UnknownSummary
	pr, pw := io.Pipe()
	readErr := make(chan error, 1)
	sum := checksum.New(checksum.XXH3) // of the object, for the read-back on this host
	go func() {
		err := func() error {
			b, err := walbundle.New(io.MultiWriter(pw, sum), obj, opts.Key, opts.Time, opts.tap)
			if err != nil {
				return err
			}
			err = rt.Read(ctx, names, func(f guest.Frame) error {
				codec, err := walbundle.FrameCodec(f.Codec)
				if err != nil {
					return err
				}
				_, err = b.Add(f.Name, codec, f.Data, f.Checksum)
				return err
			})
			if err != nil {
				return err
			}
			res, err := b.Close()
			if err != nil {
				return err
			}
			if len(res.Files) != len(names) {
				return fmt.Errorf("guest sent %d of %d files", len(res.Files), len(names))
			}
			raw, want, unknown = res.RawBytes, res.Sums(), res.Unknown
			return nil
		}()
		pw.CloseWithError(err)
		readErr <- err
	}()
	putErr := repo.Put(ctx, obj, pr)
	pr.CloseWithError(putErr) // unblocks the reader if Put gave up
	if err := <-readErr; err != nil {
		return written{}, fmt.Errorf("ship %s..%s: %w", names[0], names[len(names)-1], err)
	}
	if putErr != nil {
		return written{}, fmt.Errorf("store %s: %w", obj, putErr)
	}
	st, err := repo.Stat(ctx, obj)
	if err != nil {
		return written{}, deleteUnverified(ctx, opts.Clock, repo, obj, fmt.Errorf("read back %s: %w", obj, err))
	}
	whole := sum.Sum()
	verify := func(ctx context.Context) error {
		if err := bundle.VerifyStored(ctx, repo, obj, st.Size, opts.Key, want, whole); err != nil {
			return fmt.Errorf("read back %s: %w", obj, err)
		}
		return nil
	}
	b := shippedBundle{object: obj, names: names, raw: raw, stored: st.Size, unknown: unknown}
	return written{shippedBundle: b, want: want, verify: verify}, nil
}

// shipHistory stores a timeline history file as its own object (sealed
// with a key) and reads it back. The same name with other content is a
// split brain: ErrConflict.
func shipHistory(ctx context.Context, rt guest.Runtime, repo repository.Repository, inst repository.Instance, name string, key *bundle.Key) (int64, error) {
	var content []byte
	err := rt.Read(ctx, []string{name}, func(f guest.Frame) error {
		b, err := decode(f)
		if err != nil {
			return err
		}
		size, s := f.Checksum()
		if int64(len(b)) != size || checksum.Of(s.Algorithm, b) != s {
			return fmt.Errorf("%w: %s", ErrChecksum, name)
		}
		content = b
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ship %s: %w", name, err)
	}
	obj := inst.HistoryName(name)
	stored, err := encodeHistory(obj, name, content, key)
	if err != nil {
		return 0, fmt.Errorf("ship %s: %w", name, err)
	}
	err = repo.Put(ctx, obj, bytes.NewReader(stored))
	sealedConflict := errors.Is(err, repository.ErrConflict) && key != nil
	if err != nil && !sealedConflict {
		return 0, fmt.Errorf("store %s: %w", obj, err)
	}
	back, rerr := readHistoryObject(ctx, repo, obj, name, key)
	switch {
	case rerr == nil && bytes.Equal(back, content):
		return int64(len(content)), nil
	case sealedConflict:
		// A sealed copy never has the same bytes twice (random nonces):
		// what it holds decided, and it holds other lines.
		return 0, fmt.Errorf("store %s: %w", obj, err)
	}
	return 0, fmt.Errorf("read back %s: %w", obj, errors.Join(rerr, ErrChecksum))
}

// unsummarizedWarning says which shipped segments have no complete
// summary and why ("" when all have one), runs of consecutive segments
// together, each with the first one's reason.
func unsummarizedWarning(machine string, u []UnknownSummary) string {
	if len(u) == 0 {
		return ""
	}
	var runs []string
	for i := 0; i < len(u); {
		j := i + 1
		for j < len(u) && consecutive(u[j-1].Segment, u[j].Segment) {
			j++
		}
		from := "its start"
		if u[i].From != 0 {
			from = "LSN " + u[i].From.String()
		}
		what := "segment " + u[i].Segment
		if j-i > 1 {
			what = fmt.Sprintf("segments %s to %s (%d)", u[i].Segment, u[j-1].Segment, j-i)
		}
		runs = append(runs, fmt.Sprintf("%s from %s: %s", what, from, u[i].Reason))
		i = j
	}
	what := fmt.Sprintf("%d shipped segments", len(u))
	if len(u) == 1 {
		what = "a shipped segment"
	}
	return fmt.Sprintf("machine %s: the WAL summary of %s could not be computed; the WAL is stored and restorable, "+
		"but a restore to a time, transaction or restore point name in it is not checked before it starts (PostgreSQL looks for the target): %s",
		machine, what, strings.Join(runs, "; "))
}

// consecutive tells whether segment b directly follows segment a on one
// timeline, whatever the segment size.
func consecutive(a, b string) bool {
	fa, errA := wal.ParseFileName(a)
	fb, errB := wal.ParseFileName(b)
	if errA != nil || errB != nil || fa.Timeline != fb.Timeline {
		return false
	}
	return fa.Log == fb.Log && fa.Seg+1 == fb.Seg || fa.Log+1 == fb.Log && fb.Seg == 0
}
