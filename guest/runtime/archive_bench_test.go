package runtime

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pglogship/pglogship/internal/testenv"
)

// BenchmarkArchiveCommand compares the archive_command's cost per 16 MiB
// segment with plain `cp` plus `sync` of the same file, both run through sh
// as PostgreSQL runs them, alternating on the same real WAL in one run
// (the machine is noisy, so only the ratio means much).
func BenchmarkArchiveCommand(b *testing.B) {
	segs := testenv.WALCorpus(b, 64)
	data := filepath.Dir(segs[0])
	ours := func(dir string) string {
		cmd, err := ArchiveCommand(dir)
		if err != nil {
			b.Fatal(err)
		}
		return cmd
	}
	plain := func(dir string) string { return "cp %p " + dir + "/%f && sync " + dir + "/%f" }
	archiveAll := func(template func(string) string) time.Duration {
		dir := b.TempDir()
		cmd := template(dir)
		start := time.Now()
		for _, s := range segs {
			c := strings.ReplaceAll(strings.ReplaceAll(cmd, "%p", filepath.Base(s)), "%f", filepath.Base(s))
			sh := exec.Command("/bin/sh", "-c", c)
			sh.Dir = data
			if out, err := sh.CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		}
		elapsed := time.Since(start)
		os.RemoveAll(dir)
		return elapsed
	}
	var tOurs, tPlain time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			tOurs += archiveAll(ours)
			tPlain += archiveAll(plain)
		} else {
			tPlain += archiveAll(plain)
			tOurs += archiveAll(ours)
		}
	}
	n := float64(b.N * len(segs))
	b.ReportMetric(float64(tOurs.Milliseconds())/n, "ms/seg-ours")
	b.ReportMetric(float64(tPlain.Milliseconds())/n, "ms/seg-cp+sync")
	b.ReportMetric(float64(tOurs)/float64(tPlain), "ratio")
}
