package physical

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/checksum"
)

// Restore implements hypervisor.Hypervisor: RestoreTablespaces with every
// tablespace at its default place, beside target.
func (h *Hypervisor) Restore(ctx context.Context, chain []hypervisor.Image, src hypervisor.ObjectGetter, target string, progress func(hypervisor.Progress)) error {
	_, err := h.RestoreTablespaces(ctx, chain, src, target, hypervisor.RestoreOptions{Progress: progress})
	return err
}

// RestoreTablespaces implements hypervisor.TablespaceRestorer. target is
// a directory that must not exist yet (its parent must): an existing one
// gives an error matching fs.ErrExist and is left alone, as is an
// existing tablespace directory. It checks that chain is a full image
// followed by incrementals each built on the one before (ErrBrokenChain
// otherwise), reads the newest image's index (checked against the SHA-256
// the image records for it), and writes every directory and file it
// lists, each file from the image that holds it and checked against the
// index's size and SHA-256, with the index's mode and modification time.
// Each tablespace, pg_tblspc/<oid> in the index, is written into its own
// directory, and pg_tblspc/<oid> becomes a symbolic link to it. On any
// error it removes target, the tablespace directories and the parents it
// created. Safe for concurrent use with other targets.
func (h *Hypervisor) RestoreTablespaces(ctx context.Context, chain []hypervisor.Image, src hypervisor.ObjectGetter, target string, opts hypervisor.RestoreOptions) (_ map[uint32]string, err error) {
	if target == "" {
		return nil, errors.New("restore: no target directory")
	}
	if err := checkChain(chain); err != nil {
		return nil, fmt.Errorf("restore to %s: %w", target, err)
	}
	newest := chain[len(chain)-1]
	idx, err := h.ReadIndex(ctx, src, newest)
	if err != nil {
		return nil, fmt.Errorf("restore to %s: %w", target, err)
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
			return nil, fmt.Errorf("restore to %s: %w: %s is held by image %s, which is not in the chain", target, ErrBrokenChain, e.Path, e.Image)
		}
		total += e.Size
	}
	spaces, err := placeTablespaces(idx, target, opts.Tablespaces)
	if err != nil {
		return nil, fmt.Errorf("restore to %s: %w", target, err)
	}
	if err := os.Mkdir(target, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("restore to %s: %w: never overwritten", target, fs.ErrExist)
		}
		return nil, fmt.Errorf("restore to %s: %w", target, err)
	}
	r := &restorer{h: h, src: src, images: images, readers: map[string]*bundle.Reader{}, spaces: spaces}
	defer func() {
		if err != nil {
			err = errors.Join(err, r.undo(target))
		}
	}()
	if r.root, err = os.OpenRoot(target); err != nil {
		return nil, fmt.Errorf("restore to %s: %w", target, err)
	}
	defer r.close()
	progress := opts.Progress
	if progress == nil {
		progress = func(hypervisor.Progress) {}
	}
	if err := r.write(ctx, idx, total, progress); err != nil {
		return nil, fmt.Errorf("restore to %s: %w", target, err)
	}
	placed := make(map[uint32]string, len(spaces))
	for oid, ts := range spaces {
		placed[oid] = ts.dir
	}
	h.cfg.Logger.Info("file-level image restored", "machine", newest.Machine, "prefix", newest.Prefix,
		"images", len(chain), "entries", len(idx.Files), "bytes", total, "target", target, "tablespaces", placed)
	return placed, nil
}

// tablespace is where one tablespace of a restore goes.
type tablespace struct {
	dir     string   // absolute, clean
	root    *os.Root // open once dir is made
	created string   // the outermost parent of dir the restore made, if any
}

// placeTablespaces decides the directory of every tablespace the index
// holds and checks that none exists yet.
func placeTablespaces(idx *Index, target string, named map[uint32]string) (map[uint32]*tablespace, error) {
	spaces := map[uint32]*tablespace{}
	for _, e := range idx.Files {
		oid, ok := tablespaceOID(e.Path)
		if !ok || !e.Dir {
			continue
		}
		dir, ok := named[oid]
		if !ok {
			dir = hypervisor.DefaultTablespaceDir(target, oid)
		}
		if !filepath.IsAbs(dir) {
			return nil, fmt.Errorf("tablespace %d: directory %q is not absolute", oid, dir)
		}
		spaces[oid] = &tablespace{dir: filepath.Clean(dir)}
	}
	tgt := filepath.Clean(target)
	for oid, ts := range spaces {
		if within(ts.dir, tgt) || within(tgt, ts.dir) {
			return nil, fmt.Errorf("tablespace %d: %s and the data directory %s must not contain each other", oid, ts.dir, tgt)
		}
		for other, o := range spaces {
			if other != oid && (within(ts.dir, o.dir) || within(o.dir, ts.dir)) {
				return nil, fmt.Errorf("tablespaces %d and %d: %s and %s must not contain each other", oid, other, ts.dir, o.dir)
			}
		}
		if _, err := os.Lstat(ts.dir); err == nil {
			return nil, fmt.Errorf("tablespace %d: %s: %w: never overwritten", oid, ts.dir, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("tablespace %d: %w", oid, err)
		}
	}
	return spaces, nil
}

// within tells whether p is dir or lies below it (both clean).
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// tablespaceOID tells whether p is pg_tblspc/<oid>, and which.
func tablespaceOID(p string) (uint32, bool) {
	name, ok := strings.CutPrefix(p, "pg_tblspc/")
	if !ok || name == "" || strings.Contains(name, "/") || name[0] == '0' && len(name) > 1 {
		return 0, false
	}
	oid, err := strconv.ParseUint(name, 10, 32)
	return uint32(oid), err == nil
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
	spaces  map[uint32]*tablespace
}

// close closes the roots opened.
func (r *restorer) close() {
	r.root.Close()
	for _, ts := range r.spaces {
		if ts.root != nil {
			ts.root.Close()
		}
	}
}

// undo removes what a failed restore wrote.
func (r *restorer) undo(target string) error {
	var errs []error
	if err := os.RemoveAll(target); err != nil {
		errs = append(errs, err)
	}
	for _, ts := range r.spaces {
		switch {
		case ts.created != "":
			errs = append(errs, os.RemoveAll(ts.created))
		case ts.root != nil:
			errs = append(errs, os.RemoveAll(ts.dir))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove what was restored: %w", err)
	}
	return nil
}

// place returns the root an index path is written in and its name there:
// a tablespace's files go into the tablespace's own directory.
func (r *restorer) place(p string) (*os.Root, string) {
	head, rest, _ := strings.Cut(strings.TrimPrefix(p, "pg_tblspc/"), "/")
	if !strings.HasPrefix(p, "pg_tblspc/") {
		return r.root, p
	}
	oid, ok := tablespaceOID("pg_tblspc/" + head)
	ts := r.spaces[oid]
	if !ok || ts == nil {
		return r.root, p
	}
	if rest == "" {
		return ts.root, "."
	}
	return ts.root, rest
}

// makeTablespace creates the directory of tablespace oid, and its missing
// parents, and links pg_tblspc/<oid> to it.
func (r *restorer) makeTablespace(oid uint32) error {
	ts := r.spaces[oid]
	parent := filepath.Dir(ts.dir)
	if _, err := os.Stat(parent); errors.Is(err, fs.ErrNotExist) {
		top := parent
		for {
			up := filepath.Dir(top)
			if _, err := os.Stat(up); err == nil || up == top {
				break
			}
			top = up
		}
		// Others must be able to pass through: the server's user opens
		// the tablespace by this path.
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("tablespace %d: %w", oid, err)
		}
		ts.created = top
	}
	if err := os.Mkdir(ts.dir, 0o700); err != nil {
		return fmt.Errorf("tablespace %d: %w", oid, err)
	}
	root, err := os.OpenRoot(ts.dir)
	if err != nil {
		os.Remove(ts.dir)
		return fmt.Errorf("tablespace %d: %w", oid, err)
	}
	ts.root = root
	if err := r.root.Symlink(ts.dir, "pg_tblspc/"+strconv.FormatUint(uint64(oid), 10)); err != nil {
		return fmt.Errorf("tablespace %d: %w", oid, err)
	}
	return nil
}

// write creates the directories, writes the files, and then gives the
// directories their modes and times, deepest first (writing into a
// directory changes its time, and its mode may forbid writing).
func (r *restorer) write(ctx context.Context, idx *Index, total int64, progress func(hypervisor.Progress)) error {
	for _, e := range idx.Files[1:] {
		if !e.Dir {
			continue
		}
		if oid, ok := tablespaceOID(e.Path); ok && r.spaces[oid] != nil {
			if err := r.makeTablespace(oid); err != nil {
				return err
			}
			continue
		}
		root, name := r.place(e.Path)
		if err := root.Mkdir(name, 0o700); err != nil {
			return err
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
	root, name := r.place(e.Path)
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
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
	if be.RawSize != e.Size || be.Sum.Algorithm != checksum.SHA256 || be.Sum.Hex() != e.SHA256 {
		return fmt.Errorf("%w: %s in image %s is not the file the index records", ErrChecksum, e.Path, e.Image)
	}
	return r.setAttrs(e)
}

func (r *restorer) setAttrs(e IndexEntry) error {
	root, name := r.place(e.Path)
	if err := root.Chmod(name, fileMode(e.Mode)); err != nil {
		return err
	}
	t := time.Unix(0, e.ModTime)
	return root.Chtimes(name, t, t)
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

// fileMode turns st_mode into the FileMode a restored file gets: its
// permission bits only. Setuid, setgid and sticky bits are dropped:
// PostgreSQL never needs them, and a file the guest's user made setuid
// must not become a setuid program of the host's.
func fileMode(u uint32) fs.FileMode {
	return fs.FileMode(u & 0o777)
}
