package testenv

// The WAL corpus: real PostgreSQL WAL for benchmarks, produced by pgbench on
// a test server, generated once and cached outside the repository
// (PGLOGSHIP_CACHE, default ~/.cache/pglogship), keyed on the recipe.

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"testing"
	"time"
)

// corpusRecipe names the generation method; change it when the method changes so
// old caches are not reused.
const corpusRecipe = "v2-pgbench-s40-c4-j2-cluster"

// CorpusSegmentSize is the WAL segment size of the corpus (PostgreSQL's default).
const CorpusSegmentSize = 16 << 20

var segmentName = regexp.MustCompile(`^[0-9A-F]{24}$`)

// CacheDir is where cached artifacts live.
func CacheDir() string {
	if d := os.Getenv("PGLOGSHIP_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "pglogship-cache")
	}
	return filepath.Join(home, ".cache", "pglogship")
}

// WALCorpus returns the paths of at least n real 16 MiB WAL segments, in WAL
// order, generating and caching them on first use.
func WALCorpus(tb testing.TB, n int) []string {
	tb.Helper()
	dir := corpusDir(tb, n)
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatalf("walcorpus: %v", err)
	}
	var paths []string
	for _, e := range entries {
		if segmentName.MatchString(e.Name()) {
			paths = append(paths, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(paths)
	if len(paths) < n {
		tb.Fatalf("walcorpus: %s has %d segments, want %d: remove it to regenerate", dir, len(paths), n)
	}
	return paths[:n]
}

// CorpusMajorEnv selects the PostgreSQL release whose WAL the corpus is
// and whose cluster StartCorpusPostgres starts (make bench BENCH_PG=18);
// unset, Debian's.
const CorpusMajorEnv = "PGLOGSHIP_CORPUS_PG"

// CorpusMajor is the release of the corpus: $PGLOGSHIP_CORPUS_PG, or 0 for
// PostgresBinDir's (Debian's newest).
func CorpusMajor(tb testing.TB) int {
	tb.Helper()
	v := os.Getenv(CorpusMajorEnv)
	if v == "" {
		return 0
	}
	major, err := strconv.Atoi(v)
	if _, known := ReleaseOf(major); err != nil || !known {
		tb.Fatalf("walcorpus: $%s=%q: want one of %v", CorpusMajorEnv, v, SupportedMajors)
	}
	return major
}

// corpusDir returns the corpus's folder, generating it first if needed.
func corpusDir(tb testing.TB, n int) string {
	tb.Helper()
	name := fmt.Sprintf("walcorpus-%s-%d", corpusRecipe, n)
	if major := CorpusMajor(tb); major != 0 {
		name += fmt.Sprintf("-pg%d", major)
	}
	dir := filepath.Join(CacheDir(), name)
	if _, err := os.Stat(filepath.Join(dir, "DONE")); err != nil {
		generateCorpus(tb, dir, n)
	}
	return dir
}

func generateCorpus(tb testing.TB, dir string, n int) {
	tb.Helper()
	tb.Logf("walcorpus: generating %d WAL segments with pgbench (once; cached in %s)", n, dir)
	// The server's OS user must write the archive, so it lives in a
	// world-traversable temporary directory and is copied to the cache after.
	archive, err := os.MkdirTemp("", "pglogship-walcorpus-")
	if err != nil {
		tb.Fatalf("walcorpus: %v", err)
	}
	defer os.RemoveAll(archive)
	if err := os.Chmod(archive, 0o777); err != nil {
		tb.Fatalf("walcorpus: %v", err)
	}
	cfg := PostgresConfig{Major: CorpusMajor(tb), Settings: map[string]string{
		"archive_command":    fmt.Sprintf("test ! -f %s/%%f && cp %%p %s/%%f", archive, archive),
		"max_wal_size":       "1GB",
		"shared_buffers":     "256MB",
		"synchronous_commit": "off",
	}}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		tb.Fatalf("walcorpus: %v", err)
	}
	pg := StartPostgres(tb, cfg)
	// The cluster as initdb left it, before the WAL: StartCorpusPostgres
	// runs a copy, whose system identifier the corpus's WAL carries.
	pg.Stop(tb)
	saveCorpusCluster(tb, pg, filepath.Join(tmp, corpusClusterDir))
	pg = StartPostgresOn(tb, pg.DataDir, pg, cfg)
	pgbench := func(args ...string) {
		tb.Helper()
		base := []string{"-h", pg.Host, "-p", strconv.Itoa(pg.Port), "-U", pg.User}
		cmd := exec.Command(ClientTool(tb, pg.BinDir, "pgbench"), append(append(base, args...), "postgres")...)
		cmd.Env = append(os.Environ(), "PGPASSWORD="+pg.Password)
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("walcorpus: pgbench %v: %v\n%s", args, err, out)
		}
	}
	pgbench("-i", "-q", "-s", "40")
	archived := func() int {
		entries, _ := os.ReadDir(archive)
		c := 0
		for _, e := range entries {
			if segmentName.MatchString(e.Name()) {
				c++
			}
		}
		return c
	}
	deadline := time.Now().Add(15 * time.Minute)
	for archived() < n+1 && time.Now().Before(deadline) {
		pgbench("-n", "-c", "4", "-j", "2", "-T", "15")
		pg.Exec(tb, "postgres", "SELECT pg_switch_wal()")
		time.Sleep(2 * time.Second) // let the archiver catch up
	}
	if got := archived(); got < n {
		tb.Fatalf("walcorpus: only %d segments archived in time, want %d", got, n)
	}
	entries, _ := os.ReadDir(archive)
	copied := 0
	for _, e := range entries {
		if copied == n || !segmentName.MatchString(e.Name()) {
			continue
		}
		if err := copyNewFile(filepath.Join(archive, e.Name()), filepath.Join(tmp, e.Name())); err != nil {
			tb.Fatalf("walcorpus: %v", err)
		}
		copied++
	}
	if err := os.WriteFile(filepath.Join(tmp, "DONE"), []byte(corpusRecipe+"\n"), 0o600); err != nil {
		tb.Fatalf("walcorpus: %v", err)
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		tb.Fatalf("walcorpus: %v", err)
	}
}

func copyNewFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
