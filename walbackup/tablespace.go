package walbackup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/pglogship/pglogship/hypervisor"
)

// ErrTablespace: a restore's tablespace mapping names a tablespace the
// restore point does not have, or a directory that cannot hold one.
var ErrTablespace = errors.New("bad tablespace mapping")

// Tablespace is one tablespace of a restore point, as pg_backup_stop's
// tablespace_map lists it.
type Tablespace struct {
	OID  uint32
	Path string // where it was when the restore point was taken
}

// ParseTablespaceMap parses a tablespace_map: one "<oid> <path>" line per
// tablespace, with backslash escaping the newlines, carriage returns and
// backslashes of the path, as PostgreSQL writes it (and reads it: an
// unescaped newline or carriage return ends a line).
func ParseTablespaceMap(s string) ([]Tablespace, error) {
	var out []Tablespace
	seen := map[uint32]bool{}
	for len(s) > 0 {
		var line strings.Builder
		i := 0
		for ; i < len(s) && s[i] != '\n' && s[i] != '\r'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
			}
			line.WriteByte(s[i])
		}
		s = s[min(i+1, len(s)):]
		l := line.String()
		if l == "" {
			continue
		}
		oidText, path, ok := strings.Cut(l, " ")
		oid, err := strconv.ParseUint(oidText, 10, 32)
		switch {
		case !ok || err != nil || oid == 0 || strconv.FormatUint(oid, 10) != oidText:
			return nil, fmt.Errorf("tablespace_map: line %q is not \"<oid> <path>\"", l)
		case path == "":
			return nil, fmt.Errorf("tablespace_map: tablespace %d has no path", oid)
		case seen[uint32(oid)]:
			return nil, fmt.Errorf("tablespace_map: tablespace %d listed twice", oid)
		}
		seen[uint32(oid)] = true
		out = append(out, Tablespace{OID: uint32(oid), Path: path})
	}
	return out, nil
}

// placedTablespace is a tablespace of a restore point and the directory
// a restore puts it in.
type placedTablespace struct {
	Tablespace
	Dir      string
	Original bool // Dir is Path, for a restore in place
}

// tablespaceDirs decides where a restore puts each tablespace of the
// restore point whose map is tsMap: where to.Tablespaces names it (by OID
// or by its original path), at its original path for a forced restore in
// place, and otherwise beside to.Image (hypervisor.DefaultTablespaceDir).
// A key of to.Tablespaces that names no tablespace, a relative directory,
// or two tablespaces in one directory is ErrTablespace.
func tablespaceDirs(to RestoreTo, tsMap string) ([]placedTablespace, error) {
	spaces, err := ParseTablespaceMap(tsMap)
	if err != nil {
		return nil, fmt.Errorf("restore point: %w", err)
	}
	keys := map[string]bool{} // keys of to.Tablespaces that name a tablespace
	dirs := map[string]bool{}
	var out []placedTablespace
	for _, ts := range spaces {
		oid := strconv.FormatUint(uint64(ts.OID), 10)
		dir, byOID := to.Tablespaces[oid]
		original := false
		byPath, ok := to.Tablespaces[ts.Path]
		switch {
		case byOID && ok && byPath != dir:
			return nil, fmt.Errorf("%w: tablespace %d is mapped both by its OID and by its path %s", ErrTablespace, ts.OID, ts.Path)
		case ok:
			dir = byPath
		case !byOID && to.Force:
			dir, original = ts.Path, true
		case !byOID:
			dir = hypervisor.DefaultTablespaceDir(to.Image, ts.OID)
		}
		if !filepath.IsAbs(dir) {
			return nil, fmt.Errorf("%w: tablespace %d: directory %q is not absolute", ErrTablespace, ts.OID, dir)
		}
		dir = filepath.Clean(dir)
		if dirs[dir] {
			return nil, fmt.Errorf("%w: two tablespaces in %s", ErrTablespace, dir)
		}
		dirs[dir] = true
		keys[oid], keys[ts.Path] = true, true
		out = append(out, placedTablespace{Tablespace: ts, Dir: dir, Original: original})
	}
	for key := range to.Tablespaces {
		if keys[key] {
			continue
		}
		known := []string{"none"}
		if len(spaces) > 0 {
			known = known[:0]
			for _, ts := range spaces {
				known = append(known, fmt.Sprintf("%d (%s)", ts.OID, ts.Path))
			}
			slices.Sort(known)
		}
		return nil, fmt.Errorf("%w: %q is neither the OID nor the original path of a tablespace of the restore point; it has %s",
			ErrTablespace, key, strings.Join(known, ", "))
	}
	return out, nil
}

// moveAside renames each path that exists to path + suffix and returns
// what it moved, original to new name. On an error it moves back what it
// moved.
func moveAside(paths []string, suffix string) (map[string]string, error) {
	moved := map[string]string{}
	for _, p := range paths {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, errors.Join(err, moveBack(moved))
		}
		if err := os.Rename(p, p+suffix); err != nil {
			return nil, errors.Join(fmt.Errorf("move %s aside: %w", p, err), moveBack(moved))
		}
		moved[p] = p + suffix
	}
	return moved, nil
}

// moveBack undoes moveAside.
func moveBack(moved map[string]string) error {
	var errs []error
	for orig, aside := range moved {
		if err := os.Rename(aside, orig); err != nil {
			errs = append(errs, fmt.Errorf("move %s back to %s: %w", aside, orig, err))
		}
	}
	return errors.Join(errs...)
}

// checkReplaced refuses to move aside an existing original location that
// the data directory being replaced does not link to: the location comes
// from the restore point's tablespace_map, and only the instance itself
// says that the directory there is its tablespace.
func checkReplaced(image string, ts placedTablespace) error {
	link, err := os.Readlink(filepath.Join(image, "pg_tblspc", strconv.FormatUint(uint64(ts.OID), 10)))
	if err == nil && filepath.Clean(link) == ts.Dir {
		return nil
	}
	return fmt.Errorf("%w: tablespace %d: %s exists and the instance at %s has no tablespace link to it; name a new directory for it in RestoreTo.Tablespaces",
		ErrTablespace, ts.OID, ts.Dir, image)
}
