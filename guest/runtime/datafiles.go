package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/pglogship/pglogship/guest"
)

// contentsLeftOut are the directories at the top of the data directory whose
// contents a base backup leaves out: PostgreSQL empties or rebuilds them at
// start. The directories themselves are listed.
var contentsLeftOut = map[string]bool{
	"pg_wal": true, "pg_replslot": true, "pg_dynshmem": true, "pg_notify": true,
	"pg_serial": true, "pg_snapshots": true, "pg_stat_tmp": true, "pg_subtrans": true,
}

// topLeftOut are files at the top of the data directory a base backup
// leaves out: the running server's, and labels of another backup.
var topLeftOut = map[string]bool{
	"postmaster.pid": true, "postmaster.opts": true, "backup_label": true, "tablespace_map": true,
}

// leftOut tells whether the entry name in the directory dir (relative to
// the data directory, "" for its top) is left out of the listing entirely.
func leftOut(dir, name string) bool {
	return strings.HasPrefix(name, "pgsql_tmp") || name == "pg_internal.init" || dir == "" && topLeftOut[name]
}

// isOID tells whether s names a tablespace link in pg_tblspc.
func isOID(s string) bool {
	if s == "" || len(s) > 10 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// unixMode turns a FileMode's permission bits into st_mode's 07777.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// ListDataFiles walks the data directory dataDir as
// guest.DataFiles.ListDataFiles describes and calls fn for each entry,
// parents before children. An error from fn stops the walk and is returned.
func ListDataFiles(ctx context.Context, dataDir string, opts guest.DataListOptions, fn func(guest.DataFile) error) error {
	st, err := os.Stat(dataDir)
	if err != nil {
		return fmt.Errorf("list data files: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("list data files: %s is not a directory", dataDir)
	}
	w := &dataWalker{ctx: ctx, opts: opts, fn: fn, onPath: map[fileID]bool{}}
	if opts.Checksums {
		w.buf = make([]byte, 256<<10)
	}
	if err := fn(entryOf(".", st)); err != nil {
		return err
	}
	return w.walk(dataDir, "", st)
}

type fileID struct{ dev, ino uint64 }

func idOf(st fs.FileInfo) fileID {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return fileID{uint64(s.Dev), uint64(s.Ino)}
	}
	return fileID{}
}

type dataWalker struct {
	ctx    context.Context
	opts   guest.DataListOptions
	fn     func(guest.DataFile) error
	buf    []byte          // for checksums: one fixed buffer
	onPath map[fileID]bool // directories being walked, to stop a tablespace link loop
}

func entryOf(rel string, st fs.FileInfo) guest.DataFile {
	e := guest.DataFile{Path: rel, Dir: st.IsDir(), ModTime: st.ModTime().UnixNano(), Mode: unixMode(st.Mode())}
	if !e.Dir {
		e.Size = st.Size()
	}
	return e
}

// walk lists the directory abs, which is rel ("" for the top) in the
// listing.
func (w *dataWalker) walk(abs, rel string, st fs.FileInfo) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	id := idOf(st)
	if w.onPath[id] {
		return fmt.Errorf("list data files: %s leads back into a directory being listed (a tablespace link loop)", rel)
	}
	w.onPath[id] = true
	defer delete(w.onPath, id)
	entries, err := os.ReadDir(abs)
	if err != nil {
		if rel != "" && errors.Is(err, fs.ErrNotExist) {
			return nil // removed meanwhile (a dropped database)
		}
		return fmt.Errorf("list data files: %w", err)
	}
	for _, d := range entries {
		name := d.Name()
		if leftOut(rel, name) {
			continue
		}
		child, childAbs := name, filepath.Join(abs, name)
		if rel != "" {
			child = rel + "/" + name
		}
		if !utf8.ValidString(child) {
			return fmt.Errorf("list data files: %q: name is not valid UTF-8; rename or remove it", child)
		}
		info, err := os.Lstat(childAbs)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("list data files: %w", err)
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			// Only tablespace links are followed. A link in place of a
			// directory whose contents are left out (pg_wal made with
			// initdb -X) is listed as that directory, empty.
			if !(rel == "pg_tblspc" && isOID(name)) && !(rel == "" && contentsLeftOut[name]) {
				continue
			}
			if info, err = os.Stat(childAbs); errors.Is(err, fs.ErrNotExist) {
				continue
			} else if err != nil {
				return fmt.Errorf("list data files: %w", err)
			}
			if !info.IsDir() {
				continue
			}
		}
		switch {
		case info.IsDir():
			if err := w.fn(entryOf(child, info)); err != nil {
				return err
			}
			if rel == "" && contentsLeftOut[name] {
				continue
			}
			if err := w.walk(childAbs, child, info); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			e := entryOf(child, info)
			if w.opts.Checksums {
				sum, err := w.hash(childAbs)
				if errors.Is(err, fs.ErrNotExist) {
					continue
				} else if err != nil {
					return fmt.Errorf("list data files: %w", err)
				}
				e.SHA256 = sum
			}
			if err := w.fn(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// hash sums the regular file at path; a link put there since it was
// listed is not followed.
func (w *dataWalker) hash(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, w.buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// dataOpener opens data files for reading, each only inside the data
// directory or its tablespace, and never through a symbolic link other than
// pg_tblspc/<oid>. Not safe for concurrent use; Close it.
type dataOpener struct {
	dataDir string
	roots   map[string]*os.Root // "" for the data directory, "pg_tblspc/<oid>" for a tablespace
}

func newDataOpener(dataDir string) *dataOpener {
	return &dataOpener{dataDir: dataDir, roots: map[string]*os.Root{}}
}

func (o *dataOpener) Close() {
	for _, r := range o.roots {
		r.Close()
	}
}

// errVanished marks a path that does not exist (any more).
var errVanished = errors.New("vanished")

func unsafePath(p, why string) error { return fmt.Errorf("%w: %q: %s", guest.ErrUnsafePath, p, why) }

// resolve checks p and returns the root it lies in and its name there. It
// gives an error matching guest.ErrUnsafePath for a path it refuses, and
// errVanished for one whose file is gone.
func (o *dataOpener) resolve(p string) (*os.Root, string, error) {
	if err := guest.CheckDataPath(p); err != nil {
		return nil, "", err
	}
	parts := strings.Split(p, "/")
	key := ""
	if len(parts) >= 2 && parts[0] == "pg_tblspc" && isOID(parts[1]) {
		key, parts = "pg_tblspc/"+parts[1], parts[2:]
		if len(parts) == 0 {
			return nil, "", unsafePath(p, "a tablespace directory, not a file")
		}
	}
	root, err := o.root(key)
	if err != nil {
		return nil, "", err
	}
	for i := range parts {
		name := strings.Join(parts[:i+1], "/")
		st, err := root.Lstat(name)
		switch {
		case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
			return nil, "", errVanished
		case err != nil:
			return nil, "", fmt.Errorf("check %s: %w", p, err)
		case st.Mode()&fs.ModeSymlink != 0:
			return nil, "", unsafePath(p, "passes through a symbolic link")
		case i < len(parts)-1 && !st.IsDir():
			return nil, "", errVanished // a file where a directory was: what was listed is gone
		case i == len(parts)-1 && !st.Mode().IsRegular():
			return nil, "", unsafePath(p, "not a regular file")
		}
	}
	return root, strings.Join(parts, "/"), nil
}

func (o *dataOpener) root(key string) (*os.Root, error) {
	if r, ok := o.roots[key]; ok {
		return r, nil
	}
	if key != "" {
		// The tablespace link is followed, but pg_tblspc itself must be
		// a directory of the data directory.
		top, err := o.root("")
		if err != nil {
			return nil, err
		}
		if st, err := top.Lstat("pg_tblspc"); err != nil || !st.IsDir() {
			return nil, unsafePath(key, "pg_tblspc is not a directory of the data directory")
		}
	}
	r, err := os.OpenRoot(filepath.Join(o.dataDir, filepath.FromSlash(key)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errVanished // a tablespace dropped meanwhile
	} else if err != nil {
		return nil, fmt.Errorf("open data directory %s: %w", key, err)
	}
	o.roots[key] = r
	return r, nil
}

// open opens the regular file at p, or gives errVanished.
func (o *dataOpener) open(p string) (*os.File, error) {
	root, name, err := o.resolve(p)
	if err != nil {
		return nil, err
	}
	// O_NONBLOCK: a FIFO swapped in after the check cannot block the open.
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, errVanished
	} else if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, unsafePath(p, "not a regular file")
	}
	return f, nil
}

// sendDataFiles checks every path, then streams the files with snd and
// returns those that no longer exist.
func sendDataFiles(snd *Sender, dataDir string, paths []string) ([]string, error) {
	o := newDataOpener(dataDir)
	defer o.Close()
	for _, p := range paths {
		if _, _, err := o.resolve(p); err != nil && !errors.Is(err, errVanished) {
			return nil, err
		}
	}
	vanished := []string{}
	for _, p := range paths {
		f, err := o.open(p)
		if errors.Is(err, errVanished) {
			vanished = append(vanished, p)
			continue
		} else if err != nil {
			return nil, err
		}
		err = snd.Stream(p, f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return vanished, nil
}
