package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// PGBinDirEnv names the environment variable that overrides where the
// PostgreSQL server binaries are looked up.
const PGBinDirEnv = "PGLOGSHIP_PG_BINDIR"

const (
	installPostgres = "apt-get update && apt-get install -y postgresql"
	installSSHD     = "apt-get update && apt-get install -y openssh-server"
)

// pgServerBinaries must all be present in a PostgreSQL bin directory.
var pgServerBinaries = []string{"pg_ctl", "initdb", "postgres"}

// PostgresBinDir returns the directory holding pg_ctl, initdb and postgres:
// $PGLOGSHIP_PG_BINDIR if set, else the newest /usr/lib/postgresql/*/bin,
// else the directory of pg_ctl on PATH. It fails t when none is found.
func PostgresBinDir(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv(PGBinDirEnv); dir != "" {
		if missing := missingIn(dir, pgServerBinaries); missing != "" {
			t.Fatalf("testenv: $%s=%s has no %s: point it at a PostgreSQL bin directory or install it with: %s",
				PGBinDirEnv, dir, missing, installPostgres)
		}
		return absPath(t, dir)
	}
	if dir := newestDebianPGBinDir(); dir != "" {
		return dir
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		dir := filepath.Dir(p)
		if missingIn(dir, pgServerBinaries) == "" {
			return absPath(t, dir)
		}
	}
	t.Fatalf("testenv: PostgreSQL server binaries (pg_ctl, initdb, postgres) not found in $%s, /usr/lib/postgresql/*/bin or PATH: install it with: %s",
		PGBinDirEnv, installPostgres)
	return ""
}

// newestDebianPGBinDir returns the complete bin directory with the highest
// version number under /usr/lib/postgresql, or "".
func newestDebianPGBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Numeric, not lexical: "9.6" must sort below "15".
	sort.Slice(dirs, func(i, j int) bool {
		return versionLess(filepath.Base(filepath.Dir(dirs[j])), filepath.Base(filepath.Dir(dirs[i])))
	})
	for _, dir := range dirs {
		if missingIn(dir, pgServerBinaries) == "" {
			return dir
		}
	}
	return ""
}

// versionLess compares dotted numeric versions ("9.6" < "15" < "15.1");
// non-numeric parts count as 0.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// missingIn returns the first of names that is not an executable file in
// dir, or "".
func missingIn(dir string, names []string) string {
	for _, n := range names {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return n
		}
	}
	return ""
}

// SSHDPath returns the absolute path of the OpenSSH server, /usr/sbin/sshd
// or sshd on PATH. It fails t when there is none.
func SSHDPath(t testing.TB) string {
	t.Helper()
	const debianPath = "/usr/sbin/sshd"
	if missingIn(filepath.Dir(debianPath), []string{"sshd"}) == "" {
		return debianPath
	}
	p, err := exec.LookPath("sshd")
	if err != nil {
		t.Fatalf("testenv: OpenSSH server (sshd) not found in /usr/sbin or PATH: install it with: %s", installSSHD)
	}
	// sshd re-executes itself and refuses to run from a relative path.
	return absPath(t, p)
}

func absPath(t testing.TB, p string) string {
	t.Helper()
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return abs
}

const (
	installQemuSystem  = "apt-get update && apt-get install -y qemu-system-x86"
	installQemuUtils   = "apt-get update && apt-get install -y qemu-utils"
	installDebootstrap = "apt-get update && apt-get install -y debootstrap"
	installE2fsprogs   = "apt-get update && apt-get install -y e2fsprogs"
)

// requireBinary returns the absolute path of name on PATH (or in /usr/sbin
// and /sbin, which a non-root PATH often lacks). It fails t with the
// install command when there is none.
func requireBinary(t testing.TB, name, install string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return absPath(t, p)
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if missingIn(dir, []string{name}) == "" {
			return filepath.Join(dir, name)
		}
	}
	t.Fatalf("testenv: %s not found on PATH, /usr/sbin or /sbin: install it with: %s", name, install)
	return ""
}
