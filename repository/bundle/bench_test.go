package bundle_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/pglogship/pglogship/internal/testenv"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/fs"
)

// corpusSegments is 1 GiB of real WAL.
const corpusSegments = 64

// TestMain doubles as the child process of BenchmarkPeakRSS: with
// PGLOGSHIP_SHIP_CHILD set it ships and reports its own peak RSS, and runs
// no tests.
func TestMain(m *testing.M) {
	if spec := os.Getenv("PGLOGSHIP_SHIP_CHILD"); spec != "" {
		if err := shipChild(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func rawSize(tb testing.TB, paths []string) int64 {
	n, err := testenv.RawSize(paths)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func BenchmarkWriteFS(b *testing.B) {
	paths := testenv.WALCorpus(b, corpusSegments)
	raw := rawSize(b, paths)
	repo, err := fs.New(fs.Config{Root: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.SetBytes(raw)
	b.ResetTimer()
	var stored int64
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("wal/%d.bundle", i)
		if err := testenv.PutBundle(ctx, repo, name, paths, nil); err != nil {
			b.Fatal(err)
		}
		o, err := repo.Stat(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		stored = o.Size
	}
	b.ReportMetric(float64(raw)/float64(stored), "ratio")
}

func BenchmarkReadFS(b *testing.B) {
	paths := testenv.WALCorpus(b, corpusSegments)
	raw := rawSize(b, paths)
	repo, err := fs.New(fs.Config{Root: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := testenv.PutBundle(ctx, repo, "wal/x.bundle", paths, nil); err != nil {
		b.Fatal(err)
	}
	o, err := repo.Stat(ctx, "wal/x.bundle")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(raw)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := bundle.Open(ctx, repo, o.Name, o.Size, nil)
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range r.Entries() {
			if _, err := r.WriteFile(ctx, e.Name, io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkPeakRSS ships 1 GiB and 4 GiB in fresh processes and reports
// each one's peak resident memory: it must not grow with volume.
func BenchmarkPeakRSS(b *testing.B) {
	paths := testenv.WALCorpus(b, corpusSegments)
	for _, gib := range []int{1, 4} {
		root := b.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("PGLOGSHIP_SHIP_CHILD=%d|%s|%s", gib, root, strings.Join(paths, ",")))
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("child: %v\n%s", err, out)
		}
		kib, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
		if err != nil {
			b.Fatalf("child output %q: %v", out, err)
		}
		b.ReportMetric(float64(kib)/1024, fmt.Sprintf("MiB-peak-rss-%dGiB", gib))
	}
}

func shipChild(spec string) error {
	parts := strings.SplitN(spec, "|", 3)
	if len(parts) != 3 {
		return fmt.Errorf("bad child spec")
	}
	gib, _ := strconv.Atoi(parts[0])
	repo, err := fs.New(fs.Config{Root: parts[1]})
	if err != nil {
		return err
	}
	paths := strings.Split(parts[2], ",")
	for i := 0; i < gib; i++ {
		if err := testenv.PutBundle(context.Background(), repo, fmt.Sprintf("wal/%d.bundle", i), paths, nil); err != nil {
			return err
		}
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			fmt.Println(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return nil
		}
	}
	return fmt.Errorf("no VmHWM in /proc/self/status")
}
