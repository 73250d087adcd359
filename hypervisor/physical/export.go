package physical

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"strconv"

	"github.com/pglogship/pglogship/guest"
	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/internal/walbundle"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/checksum"
)

// Limits of one ReadDataFiles call during Export: after a failure the rest
// of a call's stream is read and discarded, so a call is kept short.
const (
	readBatchBytes = 256 << 20
	readBatchFiles = 4096
)

// Export implements hypervisor.Snapshot. It lists the cluster's files and
// writes, under prefix, FilesObject (the contents it stores, streamed
// compressed from the guest) and then IndexObject (every file and
// directory). The image is incremental when the snapshot's base is an
// image of this hypervisor for the same machine and dst can also be read
// (hypervisor.ObjectGetter): only files whose size, modification time or
// SHA-256 differ from the base's index are stored. A base whose index
// cannot be read gives a full image (and a warning in the log). Files that
// vanish while being read (dropped relations) are left out of the index.
// Each stored file's SHA-256 from the guest must match what the bundle
// writer computed, or ErrChecksum. progress, if set, gets the bytes of
// stored files read so far and their total, from one goroutine at a time.
//
// Export may be called once. PostgreSQL must be in backup mode until it
// returns. A failed Export leaves no Image (objects already put are
// garbage), and may leave the runtime unusable: Release the snapshot.
func (s *snapshot) Export(ctx context.Context, dst hypervisor.ObjectPutter, prefix string, progress func(hypervisor.Progress)) (hypervisor.Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.released:
		return hypervisor.Image{}, fmt.Errorf("export %s: snapshot released", s.machine)
	case s.exported:
		return hypervisor.Image{}, fmt.Errorf("export %s: already exported", s.machine)
	}
	s.exported = true
	if err := repository.ValidName(prefix + "/" + FilesObject); err != nil {
		return hypervisor.Image{}, fmt.Errorf("export %s: prefix: %w", s.machine, err)
	}
	if progress == nil {
		progress = func(hypervisor.Progress) {}
	}
	base, err := s.readBase(ctx, dst)
	if err != nil {
		return hypervisor.Image{}, err
	}
	e := &export{s: s, prefix: prefix, base: base, progress: progress}
	img, err := e.run(ctx, dst)
	if err != nil {
		return hypervisor.Image{}, fmt.Errorf("export %s to %s: %w", s.machine, prefix, err)
	}
	return img, nil
}

// readBase returns the index of the base image, or nil for a full image.
func (s *snapshot) readBase(ctx context.Context, dst hypervisor.ObjectPutter) (*Index, error) {
	if s.base == nil {
		return nil, nil
	}
	log := s.h.cfg.Logger.With("machine", s.machine, "base", s.base.Prefix)
	getter, ok := dst.(hypervisor.ObjectGetter)
	switch {
	case !ok:
		log.Info("full image: the destination cannot be read for the base's index")
		return nil, nil
	case s.base.Machine != s.machine || !isImage(*s.base):
		log.Info("full image: the base is not a file-level image of this machine")
		return nil, nil
	}
	idx, err := s.h.ReadIndex(ctx, getter, *s.base)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("export %s: %w", s.machine, ctx.Err())
		}
		log.Warn("full image: the base's index cannot be read", "err", err)
		return nil, nil
	}
	return idx, nil
}

type export struct {
	s        *snapshot
	prefix   string
	base     *Index
	progress func(hypervisor.Progress)

	entries []IndexEntry   // what the index will hold, in listing order
	store   map[string]int // path of each file to store -> its entry
	order   []string       // the files to store, in listing order
	total   int64          // their listed size
}

func (e *export) run(ctx context.Context, dst hypervisor.ObjectPutter) (hypervisor.Image, error) {
	files, err := e.s.files.ListDataFiles(ctx, guest.DataListOptions{Checksums: e.base != nil})
	if err != nil {
		return hypervisor.Image{}, fmt.Errorf("list data files: %w", err)
	}
	if err := e.plan(files); err != nil {
		return hypervisor.Image{}, err
	}
	filesObj, vanished, err := e.putFiles(ctx, dst)
	if err != nil {
		return hypervisor.Image{}, err
	}
	idx := &Index{Version: IndexVersion, Machine: e.s.machine, Prefix: e.prefix}
	if e.base != nil {
		idx.Base = e.base.Prefix
	}
	for _, ent := range e.entries {
		if !vanished[ent.Path] {
			idx.Files = append(idx.Files, ent)
		}
	}
	sort.Slice(idx.Files, func(i, j int) bool { return idx.Files[i].Path < idx.Files[j].Path })
	if err := idx.validate(); err != nil {
		return hypervisor.Image{}, err // a bug here, or a listing from a confused guest
	}
	indexObj, err := e.putIndex(ctx, dst, idx)
	if err != nil {
		return hypervisor.Image{}, err
	}
	img := hypervisor.Image{
		Machine: e.s.machine, Taken: e.s.taken, Full: e.base == nil, Base: idx.Base, Prefix: e.prefix,
		Objects: []hypervisor.ImageObject{filesObj, indexObj},
		Meta: map[string]string{
			MetaFormat: Format,
			"files":    strconv.Itoa(len(idx.Files)),
			"stored":   strconv.Itoa(len(e.order) - len(vanished)),
		},
	}
	e.s.h.cfg.Logger.Info("file-level image exported", "machine", e.s.machine, "prefix", e.prefix, "full", img.Full,
		"entries", len(idx.Files), "stored", len(e.order)-len(vanished), "vanished", len(vanished), "bytes", filesObj.Size)
	return img, nil
}

// plan checks the listing and decides which files to store.
func (e *export) plan(files []guest.DataFile) error {
	if len(files) == 0 || files[0].Path != "." || !files[0].Dir {
		return errors.New("the guest's listing does not start with the data directory")
	}
	var inBase map[string]IndexEntry
	if e.base != nil {
		inBase = make(map[string]IndexEntry, len(e.base.Files))
		for _, b := range e.base.Files {
			inBase[b.Path] = b
		}
	}
	seen := make(map[string]bool, len(files))
	e.store = map[string]int{}
	for i, f := range files {
		if i > 0 {
			if err := guest.CheckDataPath(f.Path); err != nil {
				return fmt.Errorf("the guest listed a bad path: %w", err)
			}
		}
		if seen[f.Path] {
			return fmt.Errorf("the guest listed %s twice", f.Path)
		}
		seen[f.Path] = true
		ent := IndexEntry{Path: f.Path, Dir: f.Dir, Size: f.Size, ModTime: f.ModTime, Mode: f.Mode}
		if f.Dir {
			ent.Size = 0
			e.entries = append(e.entries, ent)
			continue
		}
		if b, ok := inBase[f.Path]; ok && !b.Dir && b.Size == f.Size && b.ModTime == f.ModTime && b.SHA256 == f.SHA256 {
			ent.SHA256, ent.Image = b.SHA256, b.Image
		} else {
			e.store[f.Path] = len(e.entries)
			e.order = append(e.order, f.Path)
			e.total += f.Size
		}
		e.entries = append(e.entries, ent)
	}
	return nil
}

// putFiles streams the files to store into FilesObject and fills in their
// entries from what the bundle writer computed. It returns the object and
// the files that vanished before they could be read.
func (e *export) putFiles(ctx context.Context, dst hypervisor.ObjectPutter) (hypervisor.ImageObject, map[string]bool, error) {
	name := e.prefix + "/" + FilesObject
	pr, pw := io.Pipe()
	sum := &hashCounter{h: sha256.New()}
	vanished := map[string]bool{}
	readErr := make(chan error, 1)
	go func() {
		err := e.streamFiles(ctx, io.MultiWriter(pw, sum), vanished)
		pw.CloseWithError(err)
		readErr <- err
	}()
	putErr := dst.Put(ctx, name, pr)
	pr.CloseWithError(putErr) // unblocks the writer if Put gave up
	if err := <-readErr; err != nil {
		return hypervisor.ImageObject{}, nil, err
	}
	if putErr != nil {
		return hypervisor.ImageObject{}, nil, fmt.Errorf("store %s: %w", name, putErr)
	}
	return hypervisor.ImageObject{Name: name, Size: sum.n, SHA256: hex.EncodeToString(sum.h.Sum(nil))}, vanished, nil
}

func (e *export) streamFiles(ctx context.Context, out io.Writer, vanished map[string]bool) error {
	w, err := bundle.NewWriter(out, e.prefix+"/"+FilesObject, e.s.h.cfg.Key)
	if err != nil {
		return err
	}
	got := make(map[string]bool, len(e.order))
	var done int64
	e.progress(hypervisor.Progress{Done: 0, Total: e.total})
	for _, batch := range batches(e.order, e.entries, e.store) {
		gone, err := e.s.files.ReadDataFiles(ctx, batch, func(f guest.Frame) error {
			i, ok := e.store[f.Name]
			if !ok || got[f.Name] {
				return fmt.Errorf("the guest sent %q, which was not asked for or twice", f.Name)
			}
			codec, err := walbundle.FrameCodec(f.Codec)
			if err != nil {
				return err
			}
			be, err := w.Add(f.Name, codec, f.Data)
			if err != nil {
				return err
			}
			size, sha := f.Checksum()
			if size != be.RawSize || sha != be.Sum || be.Sum.Algorithm != checksum.SHA256 {
				return fmt.Errorf("%w: %s: the guest read %d bytes, the bundle got %d", ErrChecksum, f.Name, size, be.RawSize)
			}
			got[f.Name] = true
			ent := &e.entries[i]
			done += ent.Size                                                     // as listed, so that done reaches total
			ent.Size, ent.SHA256, ent.Image = be.RawSize, be.Sum.Hex(), e.prefix // image bundles sum with SHA-256
			e.progress(hypervisor.Progress{Done: done, Total: e.total})
			return nil
		})
		if err != nil {
			return fmt.Errorf("read data files: %w", err)
		}
		for _, p := range gone {
			if _, ok := e.store[p]; !ok || got[p] {
				return fmt.Errorf("the guest says %q vanished, which was not asked for or was sent", p)
			}
			vanished[p] = true
			done += e.entries[e.store[p]].Size
		}
	}
	if len(got)+len(vanished) != len(e.order) {
		return fmt.Errorf("the guest sent %d and lost %d of %d files", len(got), len(vanished), len(e.order))
	}
	if len(vanished) > 0 {
		e.progress(hypervisor.Progress{Done: done, Total: e.total})
	}
	_, err = w.Close()
	return err
}

// batches cuts the files to store into ReadDataFiles calls.
func batches(order []string, entries []IndexEntry, at map[string]int) [][]string {
	var out [][]string
	start, size := 0, int64(0)
	for i, p := range order {
		if i > start && (size >= readBatchBytes || i-start >= readBatchFiles) {
			out = append(out, order[start:i])
			start, size = i, 0
		}
		size += entries[at[p]].Size
	}
	if start < len(order) {
		out = append(out, order[start:])
	}
	return out
}

// putIndex writes the index, as the one file of a bundle, to IndexObject.
func (e *export) putIndex(ctx context.Context, dst hypervisor.ObjectPutter, idx *Index) (hypervisor.ImageObject, error) {
	name := e.prefix + "/" + IndexObject
	data, err := encodeIndex(idx)
	if err != nil {
		return hypervisor.ImageObject{}, err
	}
	if len(data) > MaxIndex {
		return hypervisor.ImageObject{}, fmt.Errorf("index of %d files: %w: %d bytes, at most %d", len(idx.Files), repository.ErrTooLarge, len(data), MaxIndex)
	}
	var buf bytes.Buffer
	w, err := bundle.NewWriter(&buf, name, e.s.h.cfg.Key)
	if err != nil {
		return hypervisor.ImageObject{}, err
	}
	if _, err := w.Add(IndexFile, bundle.Raw, bytes.NewReader(data)); err != nil {
		return hypervisor.ImageObject{}, err
	}
	if _, err := w.Close(); err != nil {
		return hypervisor.ImageObject{}, err
	}
	sum := sha256.Sum256(buf.Bytes())
	obj := hypervisor.ImageObject{Name: name, Size: int64(buf.Len()), SHA256: hex.EncodeToString(sum[:])}
	if err := dst.Put(ctx, name, &buf); err != nil {
		return hypervisor.ImageObject{}, fmt.Errorf("store %s: %w", name, err)
	}
	return obj, nil
}

// hashCounter hashes and counts what is written through it.
type hashCounter struct {
	h hash.Hash
	n int64
}

func (c *hashCounter) Write(p []byte) (int, error) {
	c.h.Write(p)
	c.n += int64(len(p))
	return len(p), nil
}
