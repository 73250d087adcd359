package physical

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/repository/bundle"
)

// Restore implements hypervisor.Hypervisor. target is a directory that
// must not exist yet (its parent must): an existing one gives an error
// matching fs.ErrExist and is left alone. Restore checks that chain is a
// full image followed by incrementals each built on the one before
// (ErrBrokenChain otherwise), reads the newest image's index (checked
// against the SHA-256 the image records for it), and writes every
// directory and file it lists, each file from the image that holds it and
// checked against the index's size and SHA-256, with the index's mode and
// modification time. Tablespaces become directories in pg_tblspc/<oid>.
// On any error it removes target and everything written to it. progress,
// if set, gets the bytes written and their total. Safe for concurrent use
// with other targets.
func (h *Hypervisor) Restore(ctx context.Context, chain []hypervisor.Image, src hypervisor.ObjectGetter, target string, progress func(hypervisor.Progress)) (err error) {
	if err := checkChain(chain); err != nil {
		return fmt.Errorf("restore to %s: %w", target, err)
	}
	newest := chain[len(chain)-1]
	idx, err := h.ReadIndex(ctx, src, newest)
	if err != nil {
		return fmt.Errorf("restore to %s: %w", target, err)
	}
	images := make(map[string]hypervisor.Image, len(chain))
	for _, img := range chain {
		images[img.Prefix] = img
	}
	var total int64
	for _, e := range idx.Files {
		if e.Dir {
			continue
		}
		if _, ok := images[e.Image]; !ok {
			return fmt.Errorf("restore to %s: %w: %s is held by image %s, which is not in the chain", target, ErrBrokenChain, e.Path, e.Image)
		}
		total += e.Size
	}
	if target == "" {
		return errors.New("restore: no target directory")
	}
	if err := os.Mkdir(target, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("restore to %s: %w: never overwritten", target, fs.ErrExist)
		}
		return fmt.Errorf("restore to %s: %w", target, err)
	}
	defer func() {
		if err != nil {
			if rmErr := os.RemoveAll(target); rmErr != nil {
				err = errors.Join(err, fmt.Errorf("remove what was restored: %w", rmErr))
			}
		}
	}()
	root, err := os.OpenRoot(target)
	if err != nil {
		return fmt.Errorf("restore to %s: %w", target, err)
	}
	defer root.Close()
	r := &restorer{h: h, src: src, root: root, images: images, readers: map[string]*bundle.Reader{}}
	if progress == nil {
		progress = func(hypervisor.Progress) {}
	}
	if err := r.write(ctx, idx, total, progress); err != nil {
		return fmt.Errorf("restore to %s: %w", target, err)
	}
	h.cfg.Logger.Info("file-level image restored", "machine", newest.Machine, "prefix", newest.Prefix,
		"images", len(chain), "entries", len(idx.Files), "bytes", total, "target", target)
	return nil
}

// checkChain checks that chain is a full image of this hypervisor followed
// by incrementals of the same machine, each built on the one before.
func checkChain(chain []hypervisor.Image) error {
	if len(chain) == 0 {
		return fmt.Errorf("%w: no image", ErrBrokenChain)
	}
	seen := map[string]bool{}
	for i, img := range chain {
		switch {
		case !isImage(img):
			return fmt.Errorf("image %s is not a file-level image: %w", img.Prefix, hypervisor.ErrUnsupported)
		case seen[img.Prefix]:
			return fmt.Errorf("%w: image %s appears twice", ErrBrokenChain, img.Prefix)
		case i == 0 && (!img.Full || img.Base != ""):
			return fmt.Errorf("%w: the chain starts with incremental image %s", ErrBrokenChain, img.Prefix)
		case i > 0 && img.Full:
			return fmt.Errorf("%w: full image %s after %s", ErrBrokenChain, img.Prefix, chain[i-1].Prefix)
		case i > 0 && img.Base != chain[i-1].Prefix:
			return fmt.Errorf("%w: image %s builds on %q, not on the image before it, %s", ErrBrokenChain, img.Prefix, img.Base, chain[i-1].Prefix)
		case img.Machine != chain[0].Machine:
			return fmt.Errorf("%w: image %s is of machine %s, not %s", ErrBrokenChain, img.Prefix, img.Machine, chain[0].Machine)
		}
		seen[img.Prefix] = true
	}
	return nil
}

type restorer struct {
	h       *Hypervisor
	src     hypervisor.ObjectGetter
	root    *os.Root
	images  map[string]hypervisor.Image
	readers map[string]*bundle.Reader
}

// write creates the directories, writes the files, and then gives the
// directories their modes and times, deepest first (writing into a
// directory changes its time, and its mode may forbid writing).
func (r *restorer) write(ctx context.Context, idx *Index, total int64, progress func(hypervisor.Progress)) error {
	for _, e := range idx.Files[1:] {
		if e.Dir {
			if err := r.root.Mkdir(e.Path, 0o700); err != nil {
				return err
			}
		}
	}
	var done int64
	progress(hypervisor.Progress{Done: 0, Total: total})
	for _, e := range idx.Files {
		if e.Dir {
			continue
		}
		if err := r.file(ctx, e); err != nil {
			return err
		}
		done += e.Size
		progress(hypervisor.Progress{Done: done, Total: total})
	}
	for i := len(idx.Files) - 1; i >= 0; i-- {
		if e := idx.Files[i]; e.Dir {
			if err := r.setAttrs(e); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *restorer) file(ctx context.Context, e IndexEntry) error {
	br, err := r.reader(ctx, e.Image)
	if err != nil {
		return err
	}
	f, err := r.root.OpenFile(e.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	be, err := br.WriteFile(ctx, e.Path, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if be.RawSize != e.Size || hex.EncodeToString(be.SHA256[:]) != e.SHA256 {
		return fmt.Errorf("%w: %s in image %s is not the file the index records", ErrChecksum, e.Path, e.Image)
	}
	return r.setAttrs(e)
}

func (r *restorer) setAttrs(e IndexEntry) error {
	if err := r.root.Chmod(e.Path, fileMode(e.Mode)); err != nil {
		return err
	}
	t := time.Unix(0, e.ModTime)
	return r.root.Chtimes(e.Path, t, t)
}

// reader opens, once, the files bundle of the image at prefix.
func (r *restorer) reader(ctx context.Context, prefix string) (*bundle.Reader, error) {
	if br, ok := r.readers[prefix]; ok {
		return br, nil
	}
	obj, _ := objectOf(r.images[prefix], FilesObject)
	br, err := bundle.Open(ctx, r.src, prefix+"/"+FilesObject, obj.Size, r.h.cfg.Key)
	if err != nil {
		return nil, err
	}
	r.readers[prefix] = br
	return br, nil
}

// fileMode turns st_mode's 07777 into a FileMode.
func fileMode(u uint32) fs.FileMode {
	m := fs.FileMode(u & 0o777)
	if u&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if u&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if u&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}
