package runtime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// autoConf is the file ALTER SYSTEM writes, read after postgresql.conf.
const autoConf = "postgresql.auto.conf"

var settingName = regexp.MustCompile(`^[a-z_][a-z0-9_.]*$`)

// checkSetting checks a setting's name and value before it is written into
// a configuration file: a lowercase name, and a value without the line
// breaks and NUL that the file format cannot hold.
func checkSetting(name, value string) error {
	if !settingName.MatchString(name) {
		return fmt.Errorf("setting name %q: lowercase letters, digits, _ and . only", name)
	}
	if strings.ContainsAny(value, "\x00\r\n") {
		return fmt.Errorf("setting %s: the value contains a line break or NUL", name)
	}
	return nil
}

// quoteConf quotes a configuration value as ALTER SYSTEM does: in single
// quotes, with quotes and backslashes doubled.
func quoteConf(v string) string {
	return "'" + strings.NewReplacer(`'`, `''`, `\`, `\\`).Replace(v) + "'"
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// confName returns the setting a configuration line sets, lowercased, or
// "" for a blank line or a comment.
func confName(line string) string {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return ""
	}
	end := strings.IndexAny(line, "= \t")
	if end < 0 {
		end = len(line)
	}
	return strings.ToLower(line[:end])
}

// rewriteAutoConf rewrites postgresql.auto.conf in the data directory
// dataDir: lines setting a name in set or drop go, then set is appended
// (sorted by name). The file is replaced atomically, with mode 0600 and
// owned by owner (when not nil); a link there is replaced, and one leading
// out of the data directory is not read.
func rewriteAutoConf(dataDir *os.Root, set map[string]string, drop []string, owner *osUser) error {
	path := filepath.Join(dataDir.Name(), autoConf)
	old, err := dataDir.ReadFile(autoConf)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	gone := map[string]bool{}
	for _, n := range drop {
		gone[n] = true
	}
	for n := range set {
		gone[n] = true
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(old))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if !gone[confName(sc.Text())] {
			out.WriteString(sc.Text() + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&out, "%s = %s\n", n, quoteConf(set[n]))
	}
	return writeFileIn(dataDir, autoConf, out.Bytes(), owner)
}

// replaceFile makes a new file at path: fill writes a temporary file in
// path's folder, which is then renamed over path. On error the temporary
// file goes and path is unchanged.
func replaceFile(path string, fill func(*os.File) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	err = fill(tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
