package guest

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode/utf8"
)

// ErrUnsafePath: a data file path is not a clean relative path inside the
// data directory or one of its tablespaces, or it passes through a symbolic
// link other than a tablespace's. Nothing is read for such a request.
var ErrUnsafePath = errors.New("unsafe data file path")

// MaxDataPath bounds the length of a data file path, so every path fits a
// bundle entry name.
const MaxDataPath = 1024

// DataFiles is implemented by runtimes that can stream the cluster's own
// files, for file-level images (check with a type assertion). Like the rest
// of Runtime, its methods are called from one goroutine at a time.
type DataFiles interface {
	// ListDataFiles walks the data directory and, through the
	// pg_tblspc/<oid> symbolic links (and no other), the tablespaces, and
	// returns every directory and regular file a base backup needs, parents
	// before children. The first entry is the data directory itself, with
	// Path ".". Left out, as PostgreSQL's low-level base backup
	// documentation allows: the contents of pg_wal, pg_replslot,
	// pg_dynshmem, pg_notify, pg_serial, pg_snapshots, pg_stat_tmp and
	// pg_subtrans (the directories themselves are listed), anything named
	// pgsql_tmp*, pg_internal.init files, and postmaster.pid,
	// postmaster.opts, backup_label and tablespace_map at the top of the
	// data directory. Other symbolic links, sockets and devices are not
	// listed. A file that disappears during the walk is simply not listed.
	// A name that is not valid UTF-8 is an error. Read-only.
	ListDataFiles(ctx context.Context, opts DataListOptions) ([]DataFile, error)

	// ReadDataFiles streams the regular files at paths (as ListDataFiles
	// names them) to fn, one Frame each, in the given order, compressed in
	// the guest, each with the size and SHA-256 of the bytes as read. Files
	// that no longer exist (a relation dropped meanwhile) are skipped
	// without calling fn and returned in vanished. Before anything is sent
	// the guest checks every path: one that breaks CheckDataPath, leaves the
	// data directory or its tablespace, or passes through another symbolic
	// link gives ErrUnsafePath. An error from fn stops the stream and is
	// returned as is. Read-only.
	ReadDataFiles(ctx context.Context, paths []string, fn func(Frame) error) (vanished []string, err error)
}

// DataListOptions tune ListDataFiles.
type DataListOptions struct {
	// Checksums asks for the SHA-256 of each regular file, computed in the
	// guest (a full read of every file).
	Checksums bool `json:"checksums,omitempty"`
}

// DataFile is one entry of ListDataFiles.
type DataFile struct {
	// Path is slash-separated and relative to the data directory; "." is
	// the data directory itself, and tablespace contents appear under
	// pg_tblspc/<oid>/.
	Path    string `json:"path"`
	Dir     bool   `json:"dir,omitempty"`
	Size    int64  `json:"size"`  // bytes; 0 for directories
	ModTime int64  `json:"mtime"` // Unix nanoseconds
	Mode    uint32 `json:"mode"`  // Unix permission bits (07777)
	// SHA256 is the hex SHA-256 of the content, for regular files when
	// DataListOptions.Checksums was set; empty otherwise.
	SHA256 string `json:"sha256,omitempty"`
}

// CheckDataPath checks the form of a data file path: non-empty, at most
// MaxDataPath bytes of valid UTF-8 without NUL, relative, clean (as
// path.Clean leaves it) and without "..". The data directory itself, ".",
// is not a file path and is refused too. The guest checks in addition where
// the path leads on its file system.
func CheckDataPath(p string) error {
	bad := func(why string) error { return fmt.Errorf("%w: %q: %s", ErrUnsafePath, p, why) }
	switch {
	case p == "" || p == ".":
		return bad("empty")
	case len(p) > MaxDataPath:
		return bad(fmt.Sprintf("longer than %d bytes", MaxDataPath))
	case !utf8.ValidString(p) || strings.ContainsRune(p, 0):
		return bad("not valid UTF-8 or contains NUL")
	case strings.HasPrefix(p, "/"):
		return bad("absolute")
	case path.Clean(p) != p:
		return bad("not clean")
	case p == ".." || strings.HasPrefix(p, "../"):
		return bad("leaves the data directory")
	}
	return nil
}
