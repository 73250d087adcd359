package runtime

import (
	"fmt"
	"path"
	"strings"
)

// archiveMarker starts every archive_command pglogship sets, so a later
// session recognises it as its own (and nothing else as such).
const archiveMarker = "PGLOGSHIP_ARCHIVE=1;"

// ArchiveCommand returns the archive_command that copies each completed WAL
// file durably into dir. It needs only POSIX sh and coreutils (dd, mv,
// cmp, rm, sync), so archiving goes on while no runtime is deployed:
//
//   - a file already in dir with the same content is success (PostgreSQL
//     retries an archive whose success it did not record); with other
//     content it is a failure, and PostgreSQL keeps the WAL;
//   - otherwise it copies to a dot-prefixed temporary name with the data
//     fsynced, moves it to the final name without ever replacing a file,
//     and fsyncs the directory.
//
// dir must be absolute and made only of letters, digits and "/._-": a path
// that would need quoting in a shell is refused rather than quoted.
func ArchiveCommand(dir string) (string, error) {
	if err := checkDir(dir); err != nil {
		return "", err
	}
	// %p and %f are substituted by PostgreSQL; WAL file names are hex plus
	// ".partial", ".backup" or ".history", safe unquoted.
	// cp copies inside the kernel (copy_file_range), cheaper than dd's
	// trip through user space even with a sync more (bench/archive_test.go).
	script := []string{
		archiveMarker,
		"d=" + dir + "; f=%f; p=%p;",
		`if [ -f "$d/$f" ]; then cmp -s "$p" "$d/$f" && exit 0; echo "pglogship: $d/$f exists with different content" >&2; exit 1; fi;`,
		`t="$d/.tmp.$f.$$";`,
		// The data is durable before the name appears.
		`cp "$p" "$t" && sync "$t" || { rm -f "$t"; exit 1; };`,
		// mv -n never replaces; the temporary name left behind means the
		// name appeared meanwhile, which is fine only with equal content.
		`mv -n "$t" "$d/$f";`,
		`if [ -e "$t" ]; then cmp -s "$t" "$d/$f"; r=$?; rm -f "$t"; [ $r -eq 0 ] || exit 1; fi;`,
		`sync "$d"`,
	}
	return strings.Join(script, " "), nil
}

// IsOurs reports whether an archive_command was set by ArchiveCommand (for
// any folder).
func IsOurs(archiveCommand string) bool {
	return strings.HasPrefix(archiveCommand, archiveMarker)
}

// ArchiveDir returns the folder an archive_command of ours copies into.
func ArchiveDir(archiveCommand string) (string, bool) {
	if !IsOurs(archiveCommand) {
		return "", false
	}
	rest := strings.TrimPrefix(archiveCommand, archiveMarker+" d=")
	dir, _, ok := strings.Cut(rest, ";")
	return dir, ok && checkDir(dir) == nil
}

func checkDir(dir string) error {
	if !path.IsAbs(dir) || path.Clean(dir) != dir || dir == "/" {
		return fmt.Errorf("temporary wal folder %q: must be a clean absolute path below /", dir)
	}
	for i := 0; i < len(dir); i++ {
		c := dir[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/._-", c) >= 0) {
			return fmt.Errorf("temporary wal folder %q: character %q is not allowed (letters, digits and /._- only)", dir, c)
		}
	}
	return nil
}
